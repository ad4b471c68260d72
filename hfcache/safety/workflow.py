"""The runs the commands make of the safety checks: `inspect`, the safety half of `verify --safety`, and
`snapshot --safety` (headers before the download, the whole snapshot after). They return reports; the CLI renders.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hfcache.cache.layout import HubCache, RepoRef
from hfcache.errors import UsageError
from hfcache.safety.allowlist import build_policy
from hfcache.safety.check import SafetyReport, check_cache, check_paths


def inspect_target(cache: HubCache, target: str, files: Sequence[str] = (), repo_type: str | None = None,
                   allow: Sequence[str] = ()) -> SafetyReport:
    """`inspect`: a path on disk (file or folder), or `REPO[@REV]` in the cache and, optionally, some of its files."""
    pol = build_policy(list(allow))
    if os.path.exists(target) or os.sep in target and not files and target.startswith((".", os.sep, "~")):
        if files:
            raise UsageError("FILE arguments go with a REPO; give paths as the first argument alone")
        return check_paths([target], policy=pol, cache=cache)
    from hfcache.verify.check import parse_spec

    return check_cache(cache, [parse_spec(target, repo_type)], policy=pol, only=list(files))


class SafetyRun:
    """`verify --safety`'s check over the selection verify checks, run in a thread so it overlaps verify's hashing
    (which runs outside the GIL). The policy is built first: a bad `--allow` fails before any work."""

    def __init__(self, cache: HubCache, specs, repo_type: str | None, allow: Sequence[str], lock: Path | None,
                 jobs: int | None) -> None:
        from hfcache.verify import lockfile

        pol = build_policy(list(allow), lock)
        pins = lockfile.read(lock) if lock is not None else None
        self._run = lambda: check_cache(cache, specs, repo_type=None if specs else repo_type, policy=pol,
                                        jobs=jobs, lock=pins)
        pool = ThreadPoolExecutor(1, thread_name_prefix="hfcache-safety")
        self._future: Future = pool.submit(self._run)
        pool.shutdown(wait=False)

    def report(self, repaired: bool = False) -> SafetyReport:
        """The report; checked again after a repair (the repaired files are new bytes; the rest is remembered)."""
        report = self._future.result()
        return self._run() if repaired else report


def check_snapshot(cache: HubCache, repo: RepoRef, commit: str, allow: Sequence[str] = ()) -> SafetyReport:
    """`snapshot --safety`, after the fetch: the snapshot's files, before its folder is printed."""
    return check_cache(cache, [(repo, commit)], policy=build_policy(list(allow)))


@dataclass(frozen=True)
class HeaderPrecheck:
    commit: str
    bad: tuple  # remote.RemoteHeader of each malformed safetensors header


def precheck_headers(repo: RepoRef, revision: str, include, exclude, allow: Sequence[str] = (),
                     client=None) -> HeaderPrecheck | None:
    """`snapshot --safety`, before the download: each safetensors header over two range requests. None when the
    endpoint cannot answer (offline, unreachable): the check after the fetch still runs."""
    from huggingface_hub import constants

    from hfcache.errors import EndpointError
    from hfcache.fetch.fetcher import select_files
    from hfcache.fetch.hub import HubClient
    from hfcache.safety.remote import check_remote_headers

    if constants.is_offline_mode():
        return None
    client = client or HubClient()
    try:
        commit = client.resolve_revision(repo, revision)
        files = select_files(client.list_files(repo, commit), include, exclude)
        headers = check_remote_headers(client, repo, commit, files, build_policy(list(allow)))
    except EndpointError:
        return None
    return HeaderPrecheck(commit, tuple(h for h in headers if not h.verdict.safe))
