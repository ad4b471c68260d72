"""Check a cache (or plain paths) for files that are unsafe to load: a typed `SafetyReport`.

Snapshot files are listed as `verify` lists them (links resolved, each physical file once), so each blob is read
once and the report names every snapshot path that points at it. Remembered verdicts are used when the file is
unchanged and the policy the same (see `verdicts`), so a second run reads no file.
"""

from __future__ import annotations

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
    from hfcache.verify.plan import _select

    started = time.perf_counter()
    policy = policy or Policy()
    if repo_type is not None and repo_type not in REPO_TYPES:
        raise UsageError(f"unknown repo type {repo_type!r} (expected one of {', '.join(REPO_TYPES)})")
    if not cache.root.is_dir():
        raise UsageError(f"no hub cache at {cache.root}")
    selection = _select(cache, specs, repo_type, lock)
    found: dict[str, list] = {}
    missing: tuple[str, ...] = ()
    for repo, sel in selection.items():
        missing += _snapshot_files(cache, repo, sel, found)
    targets = [(path, repo, blob, tuple(sorted(paths)), size, name)
               for path, (repo, blob, paths, size, name) in found.items()]
    if only:
        wanted = set(only)
        targets = [t for t in targets if {_in_snapshot(p) for p in t[3]} & wanted]
        present = {_in_snapshot(p) for t in targets for p in t[3]}
        missing += tuple(f"{name}: not in the selected snapshots" for name in only if name not in present)
    files = _judge(targets, policy, jobs, remember, cache, on_file)
    return SafetyReport(cache.root, policy.version, files, tuple(str(r) for r in selection), missing,
                        time.perf_counter() - started, tuple(sorted(policy.reasons.items())))


def _snapshot_files(cache: HubCache, repo: RepoRef, sel, found: dict[str, list]) -> tuple[str, ...]:
    """Each file the selected snapshots hold, keyed by the physical file (a blob, or a copy): its repo, blob (as
    `<repo folder>/blobs/<name>`), the snapshot paths pointing at it, size and memory key. Plain string paths and
    one `readlink` per link, as `verify`'s planner reads them, without its hash bookkeeping."""
    folder = repo.folder_name
    repo_dir = str(cache.repo_dir(repo))
    snaps = os.path.join(repo_dir, "snapshots")
    blobs = os.path.join(repo_dir, "blobs")
    if not os.path.isdir(repo_dir):
        return (f"{repo}: not in the cache",)
    commits = set(sel.commits)
    missing = []
    for ref in sorted(sel.refs):
        commit = cache.read_ref(repo, ref)
        if commit is None:
            missing.append(f"{repo}@{ref}: no such ref in the cache")
        else:
            commits.add(commit)
    if sel.whole and os.path.isdir(snaps):
        commits.update(e.name for e in os.scandir(snaps) if e.is_dir(follow_symlinks=False))
    for commit in sorted(commits):
        top = os.path.join(snaps, commit)
        if not os.path.isdir(top):
            missing.append(f"{repo}@{commit[:12]}: no such snapshot in the cache")
            continue
        stack = [("", top)]
        while stack:
            prefix, d = stack.pop()
            with os.scandir(d) as it:
                entries = list(it)
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    stack.append((f"{prefix}{e.name}/", e.path))
                    continue
                shown = f"{folder}/snapshots/{commit}/{prefix}{e.name}"
                blob = None
                if e.is_symlink():
                    dest = os.path.normpath(os.path.join(d, os.readlink(e.path)))
                    if os.path.dirname(dest) == blobs:
                        blob = f"{folder}/blobs/{os.path.basename(dest)}"
                    else:
                        dest = os.path.realpath(e.path)  # a link elsewhere: what a loader opens is checked
                else:
                    dest = e.path
                entry = found.get(dest)
                if entry is None:
                    try:
                        st = os.stat(dest)
                    except OSError:
                        continue  # a broken link: `verify` reports it; nothing here can be loaded
                    name = os.path.basename(blob) if blob else os.path.realpath(dest)
                    entry = found[dest] = [str(repo), blob, [], st.st_size, identity(name, st)]
                entry[2].append(shown)
    return tuple(missing)


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
                st = os.stat(real)
                seen[real] = (real, "", None, (str(q),), st.st_size, identity(real, st))
    files = _judge(list(seen.values()), policy, jobs, remember, cache, None)
    return SafetyReport(None, policy.version, files, seconds=time.perf_counter() - started,
                        allowed=tuple(sorted(policy.reasons.items())))


def _judge(targets: list[tuple], policy: Policy, jobs: int | None, remember: bool, cache: HubCache | None,
           on_file) -> tuple[FileEntry, ...]:
    keys = {t[0]: t[5] for t in targets}  # path -> memory key (identity of the bytes)
    memory = Memory((cache or HubCache()).safety_verdicts_path() if remember else None)
    try:
        known = memory.recall(keys.values(), policy.version)
        todo = [t for t in targets if keys.get(t[0]) not in known]
        # a few threads, each with its share (largest first, dealt round-robin): reads overlap, and the
        # per-file work is small, so one task per file would cost more in hand-offs than it saves
        n = max(1, min(jobs or 4, 8, len(todo)))
        shares = [sorted(todo, key=lambda t: -t[4])[i::n] for i in range(n)]
        with ThreadPoolExecutor(max_workers=n) as pool:
            done = pool.map(lambda share: [(t[0], check_file(t[0], policy)) for t in share], shares)
            fresh = dict(pair for share in done for pair in share)
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
