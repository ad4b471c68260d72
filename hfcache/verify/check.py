"""`verify`: prove a cache intact, from its structure up to every byte, offline or against the Hub or a lock.

The work is planned first, without reading file contents: refs, snapshot links and leftovers are checked, and
every physical file (a blob, or a snapshot file in the copy layout) gathers what it must hash to, from its own
name, `trees/<commit>.json`, the endpoint's listing and the lock file. Then each physical file is read once,
in parallel threads (hashlib releases the GIL), for every hash kind asked of it. So a blob shared by several
snapshots is hashed once, and a failure names the blob and every snapshot path that points to it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hfcache.cache.layout import REPO_TYPES, HubCache, RepoRef, parse_repo_spec
from hfcache.errors import UsageError
from hfcache.progress import Progress
from hfcache.verify.content import Hasher, _judge
from hfcache.verify.plan import _Planner, _select
from hfcache.verify.report import ERROR, WARNING, Problem, RepoResult, VerifyReport

if TYPE_CHECKING:  # the lock file's module loads only when a lock is given
    from hfcache.verify.lockfile import Lock


def parse_spec(spec: str, repo_type: str | None = None) -> tuple[RepoRef, str | None]:
    """`REPO_ID[@REV]`, optionally `TYPE:REPO_ID[@REV]` (see `layout.parse_repo_spec`)."""
    return parse_repo_spec(spec, repo_type)


def default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


# -- the entry point -----------------------------------------------------------------------------------------------
def verify(cache: HubCache, specs: Sequence[tuple[RepoRef, str | None]] = (), *, repo_type: str | None = None,
           lock: Lock | None = None, client=None, jobs: int | None = None, allow_partial: bool = False,
           progress: Progress | None = None) -> VerifyReport:
    """Check the selected repos (all of the cache by default; the lock's pins when a lock is given).

    `client` (a `HubClient`) turns on the checks against the endpoint; without it nothing touches the network.
    """
    started = time.perf_counter()
    jobs = jobs or default_jobs()
    if repo_type is not None and repo_type not in REPO_TYPES:  # a typo must not check nothing and pass
        raise UsageError(f"unknown repo type {repo_type!r} (expected one of {', '.join(REPO_TYPES)})")
    if not cache.root.is_dir():
        raise UsageError(f"no hub cache at {cache.root}")
    selection = _select(cache, specs, repo_type, lock)
    with Hasher(jobs, progress or Progress()) as hasher:
        hasher.early([str(cache.blobs_dir(repo)) for repo, sel in selection.items() if sel.whole])
        planner = _Planner(cache, client, allow_partial)
        with hasher.sharing_the_gil():
            for repo, sel in selection.items():
                planner.repo(repo, sel)
        planner.finish()
        hashable = sorted((t for t in planner.targets.values() if t.expects), key=lambda t: -t.size)
        for t in planner.targets.values():
            if not t.expects:
                planner.problems.append(Problem("unverifiable", str(t.repo), tuple(sum(t.referrers.values(), [])),
                                                t.blob, bytes=t.size, severity=WARNING))
        results = hasher.hash_all(hashable)
    for t, result in zip(hashable, results, strict=True):
        planner.problems.extend(_judge(t, result))
    return _report(cache, selection, planner, hashable, results, time.perf_counter() - started, jobs,
                   online=client is not None, locked=lock is not None)


def _report(cache, selection, planner: _Planner, hashed, results, seconds, jobs, online, locked) -> VerifyReport:
    problems = sorted(planner.problems, key=lambda p: (p.repo, p.severity != ERROR, p.kind, p.paths, p.blob or ""))
    hashed_per_repo: dict[RepoRef, list[int]] = {}
    for t, r in zip(hashed, results, strict=True):
        hashed_per_repo.setdefault(t.repo, []).append(0 if isinstance(r, OSError) else r[0])
    by_repo: dict[str, list[Problem]] = {}
    for p in problems:
        by_repo.setdefault(p.repo, []).append(p)
    repos = []
    for repo in selection:
        st, sizes = planner.stats[repo], hashed_per_repo.get(repo, [])
        repos.append(RepoResult(repo.repo_id, repo.repo_type, tuple(st.snapshots), st.files, len(sizes), sum(sizes),
                                tuple(by_repo.get(str(repo), ()))))
    total = sum(r[0] for r in results if not isinstance(r, OSError))
    return VerifyReport(cache.root, tuple(repos), tuple(problems), sum(r.files for r in repos), len(hashed), total,
                        seconds, jobs, online, locked)
