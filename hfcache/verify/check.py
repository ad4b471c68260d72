"""`verify`: prove a cache intact, from its structure up to every byte, offline or against the Hub or a lock.

The work is planned first, without reading file contents: refs, snapshot links and leftovers are checked, and
every physical file (a blob, or a snapshot file in the copy layout) gathers what it must hash to, from its own
name, `trees/<commit>.json`, the endpoint's listing and the lock file. Then each physical file is read once,
in parallel threads (hashlib releases the GIL), for every hash kind asked of it. So a blob shared by several
snapshots is hashed once, and a failure names the blob and every snapshot path that points to it.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from hfcache.cache.hashing import HashKind, hash_file_kinds, kind_of
from hfcache.cache.layout import COMPANIONS, REPO_TYPES, HubCache, RepoRef, is_commit, lock_held, partial_of
from hfcache.errors import EntryNotFound, HfcacheError, RepoNotFound, RevisionNotFound, UsageError
from hfcache.progress import Progress
from hfcache.verify.lockfile import Lock, LockedRepo

ERROR, WARNING = "error", "warning"
HASH_CHUNK = 1024 * 1024  # buffer and hash state stay in L2: measurably faster here than 4 MiB
BATCH_BYTES, BATCH_FILES = 32 * 1024 * 1024, 256  # small files go to the pool in batches, not one task each

KINDS = {
    "hash-mismatch": "the content does not hash to what is recorded",
    "size-mismatch": "the file size differs from what is recorded",
    "missing-file": "a listed file is not in the snapshot",
    "extra-file": "a snapshot file is not in the listing",
    "broken-link": "a snapshot link points to a blob that does not exist",
    "bad-link": "a snapshot entry does not point to a blob of its own repo",
    "blob-outside-cache": "a blob is a link that leads out of the cache",
    "dangling-ref": "a ref names no snapshot",
    "missing-repo": "the repo is not in the cache",
    "missing-snapshot": "the revision is not in the cache",
    "not-on-hub": "the endpoint does not know this commit",
    "unreadable": "the file cannot be read",
    "incomplete-download": "a partial download was left behind (warning)",
    "stale-lock": "a lock for a blob that never arrived (warning)",
    "download-in-progress": "another process holds a blob's lock (warning)",
    "unreadable-tree": "trees/<commit>.json cannot be read (warning)",
    "unverifiable": "nothing records what this file should hash to (warning)",
    "ref-moved": "the endpoint's ref points to another commit (warning)",
}



class OnlineUnavailable(UsageError):
    """`--online` could not get the endpoint's listing; the caller still runs and reports the offline checks."""

@dataclass(frozen=True)
class Problem:
    """One finding. Paths and blob are relative to the cache root, so they name the place unambiguously."""

    kind: str
    repo: str
    paths: tuple[str, ...] = ()
    blob: str | None = None
    expected: str | None = None
    actual: str | None = None
    bytes: int = 0
    severity: str = ERROR
    sources: tuple[str, ...] = ()  # who recorded the expectation: name, tree, hub, lock

    def describe(self) -> str:
        what = self.blob or (self.paths[0] if self.paths else self.repo)
        parts = [f"{self.kind}: {what}"]
        if self.expected is not None or self.actual is not None:
            parts.append(f"expected {self.expected}, got {self.actual}")
        if self.sources:
            parts.append(f"per {'+'.join(self.sources)}")
        if self.blob and self.paths:
            parts.append("linked from " + ", ".join(self.paths))
        elif self.blob and self.kind in ("hash-mismatch", "size-mismatch", "unreadable"):
            parts.append("no snapshot links to it")
        elif len(self.paths) > 1:
            parts.append("also " + ", ".join(self.paths[1:]))
        return "; ".join(parts)


@dataclass(frozen=True)
class RepoResult:
    repo_id: str
    repo_type: str
    snapshots: tuple[str, ...]
    files: int  # snapshot entries checked
    blobs: int  # physical files hashed
    bytes: int  # bytes hashed
    problems: tuple[Problem, ...]

    @property
    def name(self) -> str:
        return self.repo_id if self.repo_type == "model" else f"{self.repo_type}:{self.repo_id}"

    @property
    def ok(self) -> bool:
        return not any(p.severity == ERROR for p in self.problems)


@dataclass(frozen=True)
class VerifyReport:
    cache_dir: Path
    repos: tuple[RepoResult, ...]
    problems: tuple[Problem, ...]
    files: int
    blobs: int
    bytes: int
    seconds: float
    jobs: int
    online: bool = False
    lock: bool = False

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == ERROR)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == WARNING)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def gib_per_s(self) -> float:
        return self.bytes / 2**30 / self.seconds if self.seconds > 0 else 0.0


def parse_spec(spec: str, repo_type: str | None = None) -> tuple[RepoRef, str | None]:
    """`REPO_ID[@REV]`, optionally `TYPE:REPO_ID[@REV]` (as repos are shown); a repo id holds no `@` or `:`."""
    name, rtype = spec, repo_type or "model"
    head = name.split("@", 1)[0]
    if ":" in head:
        rtype, name = name.split(":", 1)
    repo_id, sep, rev = name.partition("@")
    if sep and not rev:
        raise UsageError(f"{spec!r}: nothing after '@' (expected REPO_ID@REVISION)")
    return RepoRef(repo_id, rtype), rev or None


def default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


# -- planning ------------------------------------------------------------------------------------------------------
@dataclass
class _Expect:
    sizes: dict[int, set[str]] = field(default_factory=dict)  # expected size -> who says so
    sources: set[str] = field(default_factory=set)
    paths: set[str] = field(default_factory=set)
    whole: bool = False  # every path that links to the file (the blob's own name speaks for all of them)


@dataclass
class _Target:
    """One physical file to hash, and everything it must hash to."""

    path: str
    repo: RepoRef
    blob: str | None
    size: int
    referrers: dict[RepoRef, list[str]] = field(default_factory=dict)
    expects: dict[tuple[RepoRef, HashKind, str], _Expect] = field(default_factory=dict)

    def expect(self, repo: RepoRef, kind: HashKind, digest: str, size: int | None, source: str,
               path: str | None) -> None:
        e = self.expects.setdefault((repo, kind, digest), _Expect())
        e.sources.add(source)
        if size is not None:
            e.sizes.setdefault(size, set()).add(source)
        if path is None:
            e.whole = True
        else:
            e.paths.add(path)


@dataclass
class _Selected:
    whole: bool = False
    commits: set[str] = field(default_factory=set)
    refs: set[str] = field(default_factory=set)
    locked: dict[str, LockedRepo] = field(default_factory=dict)


@dataclass
class _RepoStats:
    snapshots: list[str] = field(default_factory=list)
    files: int = 0


class _Planner:
    def __init__(self, cache: HubCache, client, allow_partial: bool) -> None:
        self.cache = cache
        self.root = str(cache.root)
        self.real_root = os.path.realpath(self.root)
        self.client = client
        self.allow_partial = allow_partial
        self.targets: dict[str, _Target] = {}
        self.blobs: dict[tuple[RepoRef, str], _Target | None] = {}
        self.broken: dict[tuple[RepoRef, str], Problem] = {}
        self.problems: list[Problem] = []
        self.stats: dict[RepoRef, _RepoStats] = {}
        self.present: set[tuple[RepoRef, str]] = set()  # blobs a snapshot holds (in the copy layout, no blobs/)

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.root).replace(os.sep, "/")

    def problem(self, kind: str, repo: RepoRef, **kw) -> None:
        self.problems.append(Problem(kind, str(repo), **kw))

    # -- one repo ----------------------------------------------------------------------------------------------
    def repo(self, repo: RepoRef, sel: _Selected) -> None:
        self.stats[repo] = _RepoStats()
        repo_dir = self.cache.repo_dir(repo)
        if not repo_dir.is_dir():
            self.problem("missing-repo", repo, paths=(self.rel(str(repo_dir)),))
            return
        refs = self._all_refs(repo) if sel.whole else sorted(sel.refs)
        commits = set(sel.commits)
        for ref in refs:
            commit = self._check_ref(repo, ref)
            if commit:
                commits.add(commit)
        snaps = repo_dir / "snapshots"
        if sel.whole and snaps.is_dir():
            commits.update(d.name for d in snaps.iterdir() if d.is_dir())
        for commit in sorted(commits):
            locked = sel.locked.get(commit)
            if self.cache.snapshot_dir(repo, commit).is_dir():
                self.snapshot(repo, commit, locked)
            elif commit in sel.commits:
                self.problem("missing-snapshot", repo, paths=(self.rel(str(self.cache.snapshot_dir(repo, commit))),),
                             expected=commit, actual="missing", sources=("lock",) if locked else (),
                             bytes=sum(f.size for f in locked.files.values()) if locked else 0)
        if sel.whole:
            self._blobs_dir(repo)
            self._locks(repo)

    def _all_refs(self, repo: RepoRef) -> list[str]:
        refs_dir = self.cache.repo_dir(repo) / "refs"
        if not refs_dir.is_dir():
            return []
        return sorted(p.relative_to(refs_dir).as_posix() for p in refs_dir.rglob("*") if not p.is_dir())

    def _check_ref(self, repo: RepoRef, ref: str) -> str | None:
        path = self.cache.ref_path(repo, ref)
        try:
            text = path.read_text().strip()
        except OSError:
            self.problem("missing-snapshot", repo, paths=(self.rel(str(path)),), expected=ref, actual="no such ref")
            return None
        if not is_commit(text):
            self.problem("dangling-ref", repo, paths=(self.rel(str(path)),), expected="a commit sha",
                         actual=repr(text[:60]))
            return None
        snap = self.cache.snapshot_dir(repo, text)
        if not snap.is_dir():
            self.problem("dangling-ref", repo, paths=(self.rel(str(path)),), expected=self.rel(str(snap)),
                         actual="missing")
            return None
        if self.client is not None:
            self._ref_on_hub(repo, ref, text)
        return text

    def _ref_on_hub(self, repo: RepoRef, ref: str, commit: str) -> None:
        try:
            hub_commit = self.client.resolve_revision(repo, ref)
        except (RepoNotFound, RevisionNotFound):
            hub_commit = "absent"
        except HfcacheError as e:
            raise OnlineUnavailable(f"--online: {e}") from None
        if hub_commit != commit:
            self.problem("ref-moved", repo, paths=(self.rel(str(self.cache.ref_path(repo, ref))),),
                         expected=hub_commit, actual=commit, severity=WARNING, sources=("hub",))

    # -- one snapshot ------------------------------------------------------------------------------------------
    def snapshot(self, repo: RepoRef, commit: str, locked: LockedRepo | None) -> None:
        self.stats[repo].snapshots.append(commit)
        snap = str(self.cache.snapshot_dir(repo, commit))
        shown = f"{self.rel(snap)}/"
        files = {rel: self._entry(repo, entry, shown + rel) for rel, entry in _walk(snap)}
        self.stats[repo].files += len(files)
        missing_severity = WARNING if self.allow_partial else ERROR
        tree = self.cache.read_tree(repo, commit)
        if tree is None and self.cache.tree_path(repo, commit).exists():
            self.problem("unreadable-tree", repo, paths=(self.rel(str(self.cache.tree_path(repo, commit))),),
                         severity=WARNING)
        if tree is not None:
            listing = {p: (kind_of(m.etag), m.etag, m.size) for p, m in tree.items()}
            self._compare(repo, shown, files, listing, "tree", missing_severity if locked is None else None)
        if self.client is not None:
            hub = self._hub_listing(repo, commit)
            if hub is not None:
                listing = {p: (kind_of(m.etag), m.etag, m.size) for p, m in hub.items()}
                self._compare(repo, shown, files, listing, "hub", missing_severity if locked is None else None)
        if locked is not None:
            listing = {p: (f.kind, f.digest, f.size) for p, f in locked.files.items()}
            self._compare(repo, shown, files, listing, "lock", ERROR, extras=False)

    def _hub_listing(self, repo: RepoRef, commit: str):
        try:
            return self.client.list_files(repo, commit)
        except (RepoNotFound, RevisionNotFound, EntryNotFound) as e:
            self.problem("not-on-hub", repo, paths=(self.rel(str(self.cache.snapshot_dir(repo, commit))),),
                         expected=commit, actual=str(e), sources=("hub",))
            return None
        except HfcacheError as e:
            raise OnlineUnavailable(f"--online: {e}") from None

    def _compare(self, repo: RepoRef, shown: str, files: dict[str, _Target | None], listing: dict,
                 source: str, missing_severity: str | None, extras: bool = True) -> None:
        for rel, (kind, digest, size) in sorted(listing.items()):
            if rel in files:
                t = files[rel]
                if t is not None and kind is not None:
                    t.expect(repo, kind, digest, size, source, shown + rel)
                    self.present.add((repo, digest))
            elif missing_severity is not None:
                self.problem("missing-file", repo, paths=(shown + rel,), expected=f"{kind}:{digest}",
                             actual="missing", bytes=size, severity=missing_severity, sources=(source,))
        if extras:
            for rel in sorted(set(files) - set(listing)):
                t = files[rel]
                self.problem("extra-file", repo, paths=(shown + rel,), blob=t.blob if t else None,
                             bytes=t.size if t else 0, sources=(source,),
                             expected="absent", actual="present")

    def _entry(self, repo: RepoRef, entry: os.DirEntry, shown: str) -> _Target | None:
        """A snapshot entry: a link to a blob of its repo, or a file (the copy layout)."""
        if entry.is_symlink():
            target = os.readlink(entry.path)
            dest = os.path.normpath(os.path.join(os.path.dirname(entry.path), target))
            blobs_dir = str(self.cache.repo_dir(repo) / "blobs")
            parent = os.path.dirname(dest)
            if parent != blobs_dir and os.path.realpath(parent) != os.path.realpath(blobs_dir):
                self.problem("bad-link", repo, paths=(shown,), expected=f"{repo.folder_name}/blobs/<hash>",
                             actual=target)
                return None
            return self._blob(repo, os.path.basename(dest), shown)
        if entry.is_file(follow_symlinks=False):
            return self._target(repo, entry.path, None, entry.stat(follow_symlinks=False).st_size, shown)
        self.problem("bad-link", repo, paths=(shown,), expected="a file or a link to a blob", actual="special file")
        return None

    def _blob(self, repo: RepoRef, name: str, referrer: str | None) -> _Target | None:
        key = (repo, name)
        if key in self.broken:
            if referrer:
                p = self.broken[key]
                self.broken[key] = dataclasses.replace(p, paths=(*p.paths, referrer))
            return None
        if key in self.blobs:
            t = self.blobs[key]
            if t is not None and referrer:
                t.referrers.setdefault(repo, []).append(referrer)
            return t
        path = str(self.cache.repo_dir(repo) / "blobs" / name)
        blob = self.rel(path)
        t = None
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):  # the shared blob store: allowed, but only inside the cache
                real = os.path.realpath(path)
                if real != self.real_root and not real.startswith(self.real_root + os.sep):
                    self.broken[key] = Problem("blob-outside-cache", str(repo), (referrer,) if referrer else (),
                                               blob, "a file inside the cache", real)
                    return None
                st = os.stat(real)
                path = real
            if not stat.S_ISREG(st.st_mode):
                raise IsADirectoryError(path)
            t = self._target(repo, path, blob, st.st_size, referrer)
            kind = kind_of(name)
            if kind is not None:
                t.expect(repo, kind, name, None, "name", None)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            self.broken[key] = Problem("broken-link", str(repo), (referrer,) if referrer else (), blob,
                                       "a blob", "missing")
        self.blobs[key] = t
        return t

    def _target(self, repo: RepoRef, path: str, blob: str | None, size: int, referrer: str | None) -> _Target:
        """Keyed by path: blobs are real files in a known folder, and links into the shared store arrive
        resolved, so a file reached twice is one target (and no realpath per file is needed)."""
        t = self.targets.get(path)
        if t is None:
            t = self.targets[path] = _Target(path, repo, blob, size)
        if referrer:
            t.referrers.setdefault(repo, []).append(referrer)
        return t

    # -- repo-wide leftovers -----------------------------------------------------------------------------------
    def _blobs_dir(self, repo: RepoRef) -> None:
        """Every blob, linked or not: an unlinked corrupt blob would be relinked by a later download."""
        blobs_dir = self.cache.repo_dir(repo) / "blobs"
        if not blobs_dir.is_dir():
            return
        for entry in sorted(os.scandir(blobs_dir), key=lambda e: e.name):
            partial = partial_of(entry.name)
            if partial is None:
                self._blob(repo, entry.name, None)
            elif partial[1] not in COMPANIONS:  # a partial's progress record goes with it
                self.problem("incomplete-download", repo, paths=(self.rel(entry.path),), severity=WARNING,
                             bytes=entry.stat(follow_symlinks=False).st_size)

    def _locks(self, repo: RepoRef) -> None:
        """Locks for blobs the repo does not hold: held ones are downloads under way, the rest are stale."""
        locks = self.cache.root / ".locks" / repo.folder_name
        if not locks.is_dir():
            return
        for lock in sorted(locks.glob("*.lock")):
            etag = lock.name[: -len(".lock")]
            if (repo, etag) in self.present or self.cache.blob_path(repo, etag).exists():
                continue
            held = lock_held(lock)
            self.problem("download-in-progress" if held else "stale-lock", repo, paths=(self.rel(str(lock)),),
                         severity=WARNING)

    def finish(self) -> None:
        self.problems.extend(self.broken.values())


def _walk(folder: str):
    """(path relative to `folder`, entry) for every non-folder entry; links to folders are not followed."""
    stack = [("", folder)]
    while stack:
        prefix, d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append((f"{prefix}{e.name}/", e.path))
                else:
                    yield prefix + e.name, e


# -- hashing and judging -------------------------------------------------------------------------------------------
def _hash_all(targets: list[_Target], jobs: int, progress: Progress) -> list[tuple[int, dict] | OSError]:
    progress.start(len(targets), sum(t.size for t in targets))

    def work(t: _Target) -> tuple[int, dict] | OSError:
        try:
            result = hash_file_kinds(t.path, {k for _, k, _ in t.expects}, HASH_CHUNK, progress.advance)
        except OSError as e:
            return e
        progress.file_done(t.path, t.size, True)
        return result

    if jobs <= 1 or len(targets) <= 1:
        return [work(t) for t in targets]
    with ThreadPoolExecutor(jobs, thread_name_prefix="hfcache-verify") as pool:
        done = pool.map(lambda batch: [work(t) for t in batch], _batches(targets))
        return [r for batch in done for r in batch]


def _batches(targets: list[_Target]):
    """Large files one per task (largest first, so they start early); small ones grouped, to spare the pool
    a future per file."""
    batch, size = [], 0
    for t in targets:
        if t.size >= BATCH_BYTES:
            yield [t]
            continue
        batch.append(t)
        size += t.size
        if size >= BATCH_BYTES or len(batch) >= BATCH_FILES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _judge(t: _Target, result: tuple[int, dict] | OSError) -> list[Problem]:
    if isinstance(result, OSError):
        return [Problem("unreadable", str(t.repo), tuple(sum(t.referrers.values(), [])), t.blob,
                        "readable", f"{type(result).__name__}: {result.strerror or result}", t.size)]
    size, digests = result
    out = []
    for (repo, kind, digest), e in sorted(t.expects.items(), key=lambda kv: (str(kv[0][0]), kv[0][1], kv[0][2])):
        paths = set(e.paths) | (set(t.referrers.get(repo, [])) if e.whole else set())
        common = dict(paths=tuple(sorted(paths)), blob=t.blob, bytes=size)
        wrong = {s: src for s, src in e.sizes.items() if s != size}
        if wrong:
            out.append(Problem("size-mismatch", str(repo), expected=" or ".join(map(str, sorted(wrong))),
                               actual=str(size), sources=tuple(sorted(set().union(*wrong.values()))), **common))
        elif digests[kind] != digest:
            out.append(Problem("hash-mismatch", str(repo), expected=f"{kind}:{digest}",
                               actual=f"{kind}:{digests[kind]}", sources=tuple(sorted(e.sources)), **common))
    return out


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
    planner = _Planner(cache, client, allow_partial)
    for repo, sel in selection.items():
        planner.repo(repo, sel)
    planner.finish()
    hashable = sorted((t for t in planner.targets.values() if t.expects), key=lambda t: -t.size)
    for t in planner.targets.values():
        if not t.expects:
            planner.problems.append(Problem("unverifiable", str(t.repo), tuple(sum(t.referrers.values(), [])),
                                            t.blob, bytes=t.size, severity=WARNING))
    results = _hash_all(hashable, jobs, progress or Progress())
    for t, result in zip(hashable, results, strict=True):
        planner.problems.extend(_judge(t, result))
    return _report(cache, selection, planner, hashable, results, time.perf_counter() - started, jobs,
                   online=client is not None, locked=lock is not None)


def _select(cache: HubCache, specs, repo_type: str | None, lock: Lock | None) -> dict[RepoRef, _Selected]:
    selection: dict[RepoRef, _Selected] = {}
    if lock is not None:
        for e in lock.select(specs).repos:
            s = selection.setdefault(e.repo, _Selected())
            s.commits.add(e.commit)
            s.locked[e.commit] = e
    elif specs:
        for repo, rev in specs:
            s = selection.setdefault(repo, _Selected())
            if rev is None:
                s.whole = True
            elif is_commit(rev):
                s.commits.add(rev)
            else:
                s.refs.add(rev)
    else:
        for d in sorted(cache.root.iterdir()):
            repo = RepoRef.from_folder_name(d.name) if d.is_dir() else None
            if repo is not None and repo_type in (None, repo.repo_type):
                selection[repo] = _Selected(whole=True)
    return selection


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
