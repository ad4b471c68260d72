"""What the server serves: repos read from a hub cache, or built from plain folders.

A served repo is refs (branch or tag -> commit) and, per commit, its files with the metadata the Hub gives
(size, git blob id, LFS sha256) and the local file holding the bytes. Nothing outside the cache root or the
given folders is ever indexed, so no request can reach it.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hfcache.cache.hashing import hash_bytes, kind_of, lfs_pointer
from hfcache.cache.layout import REPO_TYPES, HubCache, RepoRef, is_commit
from hfcache.cache.lfs import file_meta
from hfcache.cache.meta import FileMeta
from hfcache.cache.paths import Folder
from hfcache.errors import HfcacheError


@dataclass(frozen=True)
class ServedFile:
    meta: FileMeta
    local: Path


@dataclass
class ServedRepo:
    repo: RepoRef
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, ServedFile]] = field(default_factory=dict)
    listed: dict[str, frozenset[str]] = field(default_factory=dict)  # commit -> every file its trees/ names

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        if is_commit(revision) and revision in self.commits:
            return revision
        return None


def folder_commit(files: dict[str, ServedFile], parent: str | None = None) -> str:
    """A commit id derived from content alone: same files, same commit, on any machine."""
    h = hashlib.sha1(b"hfcache-folder-commit\n", usedforsecurity=False)
    if parent:
        h.update(f"parent {parent}\n".encode())
    for path in sorted(files):
        h.update(f"{path}\0{files[path].meta.blob_id}\n".encode())
    return h.hexdigest()


def scan_folder(folder: Path) -> dict[str, ServedFile]:
    """The files of a folder as a repo would hold them (`.git` skipped, links leaving the folder ignored)."""
    root = folder.resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    files: dict[str, ServedFile] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            local = Path(dirpath) / name
            real = local.resolve()
            if not real.is_file() or not real.is_relative_to(root):
                continue
            rel = local.relative_to(root).as_posix()
            files[rel] = ServedFile(file_meta(real, rel), real)
    return files


_STAMP_DEPTH = {Folder.REFS: 3, Folder.SNAPSHOTS: 1}  # refs/main, refs/pr/1; snapshots/<commit>
_STAMP_MAX_ENTRIES = 1000


class Catalog:
    """All served repos: folder repos given up front, cache repos read lazily (and re-read when they change)."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache = HubCache(cache_dir) if cache_dir is not None else None
        self._folders: dict[RepoRef, ServedRepo] = {}
        self._cached: dict[RepoRef, tuple[float, ServedRepo]] = {}
        self._lock = threading.Lock()

    def add_folder(self, repo: RepoRef, folder: Path, revision: str = "main") -> str:
        """Serve `folder` as `revision` of `repo`; returns the commit id it gets."""
        served = self._folders.setdefault(repo, ServedRepo(repo))
        files = scan_folder(folder)
        commit = folder_commit(files)
        served.commits[commit] = files
        served.refs[revision] = commit
        return commit

    def get(self, repo: RepoRef) -> ServedRepo | None:
        """The repo as served now; indexing a cache repo may hash files, so async callers use `cached` first."""
        ready, served = self.cached(repo)
        if ready:
            return served
        stamp = self._stamp(repo)
        if stamp is None:
            return None
        with self._lock:
            hit = self._cached.get(repo)
            if hit is None or hit[0] != stamp:
                hit = (stamp, self._read_cached(repo))
                self._cached[repo] = hit
            return hit[1]

    def cached(self, repo: RepoRef) -> tuple[bool, ServedRepo | None]:
        """(True, repo or None) when known without indexing (a few `stat` calls); (False, None) when `get` must
        read the repo again."""
        if repo in self._folders:
            return True, self._folders[repo]
        if self.cache is None:
            return True, None
        stamp = self._stamp(repo)
        if stamp is None:
            return True, None
        hit = self._cached.get(repo)
        if hit is not None and hit[0] == stamp:
            return True, hit[1]
        return False, None

    def _stamp(self, repo: RepoRef) -> tuple | None:
        """What changes when a ref moves (even rewritten in place, as huggingface_hub does) or a snapshot folder
        gains or loses an entry. A file added deeper is found by `find_added` on the miss."""
        assert self.cache is not None
        repo_dir = self.cache.repo_dir(repo)
        parts: list = []
        try:
            for name in (Folder.REFS, Folder.SNAPSHOTS):
                top = repo_dir / name
                if not top.is_dir():
                    continue
                parts.append((name, top.stat().st_mtime_ns))
                level = [top]
                for _ in range(_STAMP_DEPTH[name]):  # entries this deep are stat'ed, nothing below is listed
                    below = []
                    for d in level:
                        with os.scandir(d) as it:
                            entries = sorted(it, key=lambda e: e.name)[:_STAMP_MAX_ENTRIES]
                        for entry in entries:
                            st = entry.stat(follow_symlinks=False)
                            parts.append((entry.path, st.st_mtime_ns, st.st_size))
                            if entry.is_dir(follow_symlinks=False):
                                below.append(entry.path)
                    level = below
        except OSError:
            return ("unreadable", time.monotonic())  # read again next time, and let get() fail or not
        return tuple(parts) if parts else None

    def find_added(self, served: ServedRepo, commit: str, path: str) -> ServedFile | None:
        """A file missing from the index but present in the snapshot folder now (added since it was read).

        Bounded: only a path that names a servable file on disk is indexed, once; a miss costs a few `stat`s."""
        if self.cache is None or served.repo in self._folders or commit not in served.commits:
            return None
        root = self.cache.root.resolve()
        try:
            local = self.cache.pointer_path(served.repo, commit, path)
            real = local.resolve()
            if not real.is_file() or not real.is_relative_to(root):
                return None
            tree = self.cache.read_tree(served.repo, commit) or {}
            added = ServedFile(tree.get(path) or _meta_from_blob(local, real, path), real)
        except (OSError, ValueError, HfcacheError):
            return None
        with self._lock:
            served.commits[commit] = {**served.commits[commit], path: added}
        return added

    def absent(self, served: ServedRepo, commit: str, path: str) -> bool:
        """Whether `path` is known not to exist at `commit`, so that a 404 EntryNotFound tells the truth.

        A folder repo holds every file; a cache holds only what was fetched: there a file is absent only when the
        commit's full listing (`trees/`) lacks it or a `.no_exist` marker says so. huggingface_hub records an
        EntryNotFound as `.no_exist` in its own cache, so a guess here would poison the client's cache."""
        if self.cache is None or served.repo in self._folders:
            return True
        if commit in served.listed:
            return path not in served.listed[commit]
        try:
            return self.cache.no_exist_path(served.repo, commit, path).is_file()
        except HfcacheError:
            return True  # not a file name at all (`..`, empty part): no commit holds it
        except OSError:
            return False

    def repos(self) -> list[RepoRef]:
        found = set(self._folders)
        if self.cache is not None and self.cache.root.is_dir():
            for d in self.cache.root.iterdir():
                ref = RepoRef.from_folder_name(d.name)
                if ref is not None and ref.repo_type in REPO_TYPES:
                    found.add(ref)
        return sorted(found, key=lambda r: (r.repo_type, r.repo_id))

    def find_sha256(self, sha256: str) -> Path | None:
        """The local bytes of an LFS object, for the CDN route."""
        for repo in self.repos():
            served = self.get(repo)
            for files in (served.commits.values() if served else ()):
                for f in files.values():
                    if f.meta.lfs_sha256 == sha256:
                        return f.local
        return None

    def _read_cached(self, repo: RepoRef) -> ServedRepo:
        """Index one cache repo; metadata from `trees/` where recorded, from blob names otherwise."""
        cache = self.cache
        assert cache is not None
        root = cache.root.resolve()
        served = ServedRepo(repo)
        refs_dir = cache.refs_dir(repo)
        if refs_dir.is_dir():
            for ref in refs_dir.rglob("*"):
                if ref.is_file():
                    commit = ref.read_text().strip()
                    if is_commit(commit):
                        served.refs[ref.relative_to(refs_dir).as_posix()] = commit
        snaps = cache.snapshots_dir(repo)
        for snap in sorted(snaps.iterdir()) if snaps.is_dir() else ():
            if not is_commit(snap.name):
                continue
            tree = cache.read_tree(repo, snap.name) or {}
            if tree:
                served.listed[snap.name] = frozenset(tree)
            files: dict[str, ServedFile] = {}
            for local in snap.rglob("*"):
                real = local.resolve()
                if not real.is_file() or not real.is_relative_to(root):
                    continue
                rel = local.relative_to(snap).as_posix()
                meta = tree.get(rel) or _meta_from_blob(local, real, rel)
                files[rel] = ServedFile(meta, real)
            served.commits[snap.name] = files
        return served


def _meta_from_blob(link: Path, real: Path, rel: str) -> FileMeta:
    size = real.stat().st_size
    name = os.readlink(link).rsplit("/", 1)[-1] if link.is_symlink() else ""
    kind = kind_of(name)
    if kind == "sha256":
        return FileMeta(size=size, blob_id=hash_bytes(lfs_pointer(name, size), "git-sha1"),
                        lfs_sha256=name, lfs_size=size)
    if kind == "git-sha1":
        return FileMeta(size=size, blob_id=name)
    return file_meta(real, rel)
