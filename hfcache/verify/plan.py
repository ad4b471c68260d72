"""Planning a verify run, without reading file contents.

Refs, snapshot links and leftovers are checked, and every physical file (a blob, or a snapshot file in the copy
layout) gathers what it must hash to: its own name, `trees/<commit>.json`, the endpoint's listing, the lock file.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hfcache.cache.hashing import HashKind, kind_of
from hfcache.cache.layout import HubCache, RepoRef, is_commit
from hfcache.cache.paths import COMPANIONS, Folder, lock_held, partial_of
from hfcache.errors import EntryNotFound, HfcacheError, RepoNotFound, RevisionNotFound
from hfcache.verify.report import ERROR, WARNING, OnlineUnavailable, Problem

if TYPE_CHECKING:  # the lock file's module loads only when a lock is given
    from hfcache.verify.lockfile import Lock, LockedRepo


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
        self._prefix = self.root.rstrip(os.sep) + os.sep
        self._blobs_dirs: dict[RepoRef, str] = {}  # per-file work uses strings: Path joins cost more than a read
        self.client = client
        self.allow_partial = allow_partial
        self.targets: dict[str, _Target] = {}
        self.blobs: dict[tuple[RepoRef, str], _Target | None] = {}
        self.broken: dict[tuple[RepoRef, str], Problem] = {}
        self.problems: list[Problem] = []
        self.stats: dict[RepoRef, _RepoStats] = {}
        self.present: set[tuple[RepoRef, str]] = set()  # blobs a snapshot holds (in the copy layout, no blobs/)

    def rel(self, path: str) -> str:
        if path.startswith(self._prefix) and ".." not in path:
            return path[len(self._prefix):].replace(os.sep, "/")
        return os.path.relpath(path, self.root).replace(os.sep, "/")

    def blobs_dir(self, repo: RepoRef) -> str:
        d = self._blobs_dirs.get(repo)
        if d is None:
            d = self._blobs_dirs[repo] = str(self.cache.blobs_dir(repo))
        return d

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
        snaps = self.cache.snapshots_dir(repo)
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
        refs_dir = self.cache.refs_dir(repo)
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
            # a download of a file that does not exist (a typo) leaves a ref and `.no_exist/<commit>` (or a tree
            # listing) and no snapshot, as huggingface_hub does: not damage; `prune` tidies it
            if self.cache.no_exist_dir(repo, text).is_dir() or self.cache.tree_path(repo, text).is_file():
                return None
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
            blobs_dir = self.blobs_dir(repo)
            parent, _, name = dest.rpartition(os.sep)
            if parent != blobs_dir and os.path.realpath(parent) != os.path.realpath(blobs_dir):
                self.problem("bad-link", repo, paths=(shown,), expected=f"{repo.folder_name}/blobs/<hash>",
                             actual=target)
                return None
            return self._blob(repo, name, shown)
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
        path = f"{self.blobs_dir(repo)}{os.sep}{name}"  # a name from a link or a listing of blobs/
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
                self._store_link(repo, blob, real, referrer)
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

    def _store_link(self, repo: RepoRef, blob: str, real: str, referrer: str | None) -> None:
        """A repo blob linking into huggingface_hub's shared store must link a valid entry and be listed in that
        entry's `.refs`: its garbage collector deletes an entry whose listed links are all gone, unlisted ones
        regardless, so an unlisted link may lose its bytes."""
        from hfcache.cache import hfhub
        from hfcache.cache.paths import store_manifest_of

        store = os.path.realpath(self.cache.store_dir())
        if not real.startswith(store + os.sep):
            return
        paths = (referrer,) if referrer else ()
        if hfhub.shared_blob_target(self.cache.root / blob, self.cache.root) is None:
            self.problem("store-link-invalid", repo, paths=paths, blob=blob, severity=WARNING,
                         expected="a link to blobs/<xx>/<xet hash>", actual=self.rel(real))
            return
        try:
            with open(store_manifest_of(real), encoding="utf-8", errors="replace") as f:
                listed = blob in {line.rstrip("\n") for line in f}
        except OSError:
            listed = False
        if not listed:
            self.problem("store-ref-missing", repo, paths=paths, blob=blob, severity=WARNING,
                         expected=f"listed in {self.rel(store_manifest_of(real))}", actual="not listed")

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
        blobs_dir = self.cache.blobs_dir(repo)
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
        locks = self.cache.locks_dir(repo)
        if not locks.is_dir():
            return
        for lock in sorted(locks.glob(f"*{Folder.LOCK_SUFFIX}")):
            etag = lock.name[: -len(Folder.LOCK_SUFFIX)]
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
