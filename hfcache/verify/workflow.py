"""The runs built from verify's parts: check, repair, check again; and `snapshot --lock` (fetch, then check).

They return results; the CLI renders them and picks the exit status.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hfcache.cache.layout import HubCache, RepoRef
from hfcache.errors import HfcacheError
from hfcache.progress import Progress
from hfcache.verify.check import verify
from hfcache.verify.report import OnlineUnavailable, VerifyReport

if TYPE_CHECKING:  # the lock file's module loads only when a lock is given
    from hfcache.verify import lockfile


@dataclass(frozen=True)
class VerifyOutcome:
    report: VerifyReport
    repaired: tuple = ()
    failure: str | None = None  # why the online check or the repair did not happen; the report still stands


def verify_and_repair(cache: HubCache, specs: Sequence[tuple[RepoRef, str | None]] = (), *,
                      repo_type: str | None = None, lock: lockfile.Lock | None = None, client=None,
                      online: bool = False, repair: bool = False, jobs: int | None = None,
                      allow_partial: bool = False,
                      progress: Callable[[], Progress] = Progress) -> VerifyOutcome:
    """Check; with `repair`, fetch what is damaged or missing through `client`, then check again.

    When the endpoint cannot answer, the damage the cache itself shows is still found and reported, with the
    reason in `failure`. `progress` makes a fresh progress reporter per pass.
    """

    def check(hub) -> VerifyReport:
        p = progress()
        try:
            return verify(cache, specs, repo_type=None if specs else repo_type, lock=lock, client=hub, jobs=jobs,
                          allow_partial=allow_partial, progress=p)
        finally:
            getattr(p, "stop", lambda: None)()

    failure = None
    try:
        report = check(client if online else None)
    except OnlineUnavailable as e:
        report = check(None)
        failure = f"{e} (only the offline checks ran)"
    repaired: tuple = ()
    if repair and failure is None and not report.ok:
        from hfcache.verify.repair import repair as fix

        try:
            repaired = tuple(fix(report, cache, client))
        except HfcacheError as e:  # the damage found is still reported, then why it stays
            failure = f"--repair: {e}"
        else:
            report = check(client if online else None)
    return VerifyOutcome(report, repaired, failure)


@dataclass(frozen=True)
class LockedSnapshot:
    snapshots: tuple  # fetcher.SnapshotResult, one per pinned revision
    report: VerifyReport


def snapshot_locked(lock_path, specs: Sequence[tuple[RepoRef, str | None]], fetcher) -> LockedSnapshot:
    """`snapshot --lock`: fetch what the lock pins (all of it, or the given repos' entries), then check it offline.

    Pins the endpoint contradicts are refused before anything is fetched (see `lockfile.fetch`).
    """
    from hfcache.verify import lockfile

    pins = lockfile.read(lock_path).select(specs)
    try:
        results = lockfile.fetch(pins, fetcher, source=str(lock_path))
    finally:
        getattr(fetcher.progress, "stop", lambda: None)()
    return LockedSnapshot(tuple(results), verify(fetcher.cache, specs, lock=pins))
