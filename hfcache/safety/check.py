"""Check a cache (or plain paths) for files that are unsafe to load: a typed `SafetyReport`.

Snapshot files are listed as `verify` lists them (its planner: links resolved, each physical file once), so each
blob is read once and the report names every snapshot path that points at it. Remembered verdicts are used when
the file is unchanged and the policy the same (see `verdicts`), so a second run reads no file.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from hfcache.cache.layout import REPO_TYPES, HubCache, RepoRef
from hfcache.errors import UsageError
from hfcache.safety import sniff
from hfcache.safety.files import check_file
from hfcache.safety.policy import CRITICAL, RANK, SAFE, UNKNOWN, UNSAFE, Policy
from hfcache.safety.result import FileVerdict
from hfcache.safety.verdicts import Memory, identity


@dataclass(frozen=True)
class FileEntry:
    """One physical file: the repo it belongs to, its blob (relative to the cache root), the snapshot paths that
    point at it, and its verdict (`remembered` when it came from an earlier run, unread)."""

    repo: str
    blob: str | None
    paths: tuple[str, ...]
    size: int
    verdict: FileVerdict
    remembered: bool = False

    @property
    def where(self) -> str:
        return self.paths[0] if self.paths else (self.blob or "?")


@dataclass(frozen=True)
class SafetyReport:
    root: Path | None  # the cache checked, or None for plain paths
    policy: str
    files: tuple[FileEntry, ...]
    repos: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()  # asked-for repos or revisions the cache does not hold
    seconds: float = 0.0
    allowed: tuple[tuple[str, str], ...] = ()  # the user's --allow names, with their reasons

    @property
    def ok(self) -> bool:
        return not self.missing and all(f.verdict.safe for f in self.files)

    @property
    def read(self) -> int:
        """Files read in this run (the others' verdicts were remembered)."""
        return sum(1 for f in self.files if not f.remembered)

    @property
    def bytes_read(self) -> int:
        return sum(f.size for f in self.files if not f.remembered)

    def count(self, verdict: str) -> int:
        return sum(1 for f in self.files if f.verdict.verdict == verdict)

    @property
    def worst(self) -> str:
        return max((f.verdict.verdict for f in self.files), key=RANK.__getitem__, default=SAFE)

    def of_repo(self, repo: str) -> tuple[FileEntry, ...]:
        return tuple(f for f in self.files if f.repo == repo)


def check_cache(cache: HubCache, specs: Sequence[tuple[RepoRef, str | None]] = (), *, repo_type: str | None = None,
                policy: Policy | None = None, jobs: int | None = None, remember: bool = True,
                only: Sequence[str] = (), lock=None,
                on_file: Callable[[FileEntry], None] | None = None) -> SafetyReport:
    """Every file a snapshot of the selected repos (the whole cache by default) points at; with `only`, the files
    at those paths in the snapshots (a path no snapshot holds is reported missing); with a `lock`
    (`verify.lockfile.Lock`), the commits it pins, as `verify --lock` selects them."""
    from hfcache.verify.plan import _Planner, _select

    started = time.perf_counter()
    policy = policy or Policy()
    if repo_type is not None and repo_type not in REPO_TYPES:
        raise UsageError(f"unknown repo type {repo_type!r} (expected one of {', '.join(REPO_TYPES)})")
    if not cache.root.is_dir():
        raise UsageError(f"no hub cache at {cache.root}")
    selection = _select(cache, specs, repo_type, lock)
    planner = _Planner(cache, None, True)
    for repo, sel in selection.items():
        planner.repo(repo, sel)
    planner.finish()
    missing = tuple(f"{p.repo}: {p.kind} {p.paths[0] if p.paths else ''}".rstrip() for p in planner.problems
                    if p.kind in ("missing-repo", "missing-snapshot"))
    targets = [(t.path, str(t.repo), t.blob, tuple(sorted(sum(t.referrers.values(), []))), t.size,
                os.path.basename(t.blob) if t.blob else os.path.realpath(t.path))
               for t in planner.targets.values() if t.referrers]
    if only:
        wanted = set(only)
        targets = [t for t in targets if {_in_snapshot(p) for p in t[3]} & wanted]
        found = {_in_snapshot(p) for t in targets for p in t[3]}
        missing += tuple(f"{name}: not in the selected snapshots" for name in only if name not in found)
    files = _judge(targets, policy, jobs, remember, cache, on_file)
    return SafetyReport(cache.root, policy.version, files, tuple(str(r) for r in selection), missing,
                        time.perf_counter() - started, tuple(sorted(policy.reasons.items())))


def _in_snapshot(shown: str) -> str:
    """`<repo folder>/snapshots/<commit>/<path>` -> `<path>`."""
    parts = shown.split("/", 3)
    return parts[3] if len(parts) == 4 else shown


def check_paths(paths: Sequence[str | os.PathLike[str]], *, policy: Policy | None = None, jobs: int | None = None,
                remember: bool = False, cache: HubCache | None = None) -> SafetyReport:
    """Plain files and folders (walked; links followed to files), outside any cache layout."""
    started = time.perf_counter()
    policy = policy or Policy()
    seen: dict[str, tuple] = {}
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise UsageError(f"{p}: no such file or folder")
        found = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
        for q in found:
            real = os.path.realpath(q)
            if real in seen:
                seen[real] = (*seen[real][:3], (*seen[real][3], str(q)), *seen[real][4:])
            else:
                seen[real] = (real, "", None, (str(q),), os.path.getsize(real), real)
    files = _judge(list(seen.values()), policy, jobs, remember, cache, None)
    return SafetyReport(None, policy.version, files, seconds=time.perf_counter() - started,
                        allowed=tuple(sorted(policy.reasons.items())))


def _judge(targets: list[tuple], policy: Policy, jobs: int | None, remember: bool, cache: HubCache | None,
           on_file) -> tuple[FileEntry, ...]:
    keys: dict[str, str] = {}
    for path, *_, name in targets:
        with contextlib.suppress(OSError):
            keys[path] = identity(name, os.stat(path))
    memory = Memory((cache or HubCache()).safety_verdicts_path() if remember else None)
    try:
        known = memory.recall(keys.values(), policy.version)
        todo = [t for t in targets if keys.get(t[0]) not in known]
        with ThreadPoolExecutor(max_workers=max(1, min(jobs or 4, 8))) as pool:
            fresh = dict(zip((t[0] for t in todo), pool.map(lambda t: check_file(t[0], policy), todo), strict=True))
        memory.remember({keys[p]: v for p, v in fresh.items() if p in keys and v.format != "unreadable"},
                        policy.version)
    finally:
        memory.close()
    out = []
    for path, repo, blob, paths, size, _ in targets:
        remembered = path not in fresh
        verdict = with_names(known[keys[path]] if remembered else fresh[path], paths)
        entry = FileEntry(repo, blob, paths, size, verdict, remembered)
        out.append(entry)
        if on_file is not None:
            on_file(entry)
    out.sort(key=lambda f: (-RANK[f.verdict.verdict], f.repo, f.where))
    return tuple(out)


def with_names(v: FileVerdict, names: Sequence[str]) -> FileVerdict:
    """Names add suspicion, never trust: a file named like a format its bytes are not is not safe (a pickle named
    `model.safetensors`). Kept apart from the remembered verdict, which belongs to the bytes, not the names."""
    claim = sniff.claimed(names)
    if claim is None or claim == v.format or (claim == sniff.ZIP and v.format in ("npz", "keras", "zip")):
        return v
    if claim == sniff.HDF5 and v.format == "keras-h5":
        return v
    grade = v.verdict if RANK[v.verdict] >= RANK[UNSAFE] else UNSAFE
    return replace(v, verdict=grade, reasons=(*v.reasons, f"named like {claim} but its bytes are {v.format}"))


__all__ = ["CRITICAL", "SAFE", "UNKNOWN", "UNSAFE", "FileEntry", "SafetyReport", "check_cache", "check_paths"]
