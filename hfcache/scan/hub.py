"""The hub cache walk: repos (each walked on its own by `repo.RepoWalk`, then merged here in folder-name
order), the 2.x shared store, orphan `.locks/` folders, and cross-repo duplicates.

One thread, one process: on the 2-vCPU machine of docs/benchmarks.md, threads were slower (GIL hand-offs on
every system call) and forked workers no faster, so the speed comes from making fewer calls.
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from dataclasses import dataclass

from hfcache.cache.hashing import kind_of
from hfcache.cache.hfhub import SHARED_MARKER
from hfcache.cache.layout import RepoRef
from hfcache.cache.paths import Folder, store_manifest_of
from hfcache.scan.files import duplicate
from hfcache.scan.model import HubScan, Repo
from hfcache.scan.repo import RepoWalk
from hfcache.scan.walk import IGNORED_NAMES, Context, InodeCounter, Tally, du
from hfcache.units import counted


def is_shared_store(path: str) -> bool:
    """The 2.x cache-wide store is `<cache>/blobs/` with its marker file, as huggingface_hub checks it."""
    try:
        with open(os.path.join(path, SHARED_MARKER), "rb") as f:
            return f.read() == b"1\n"
    except OSError:
        return False


@dataclass
class HubWalk:
    root: str
    ctx: Context
    detail: bool

    def __post_init__(self) -> None:
        self.tally = Tally()
        self.ref_bytes = 0  # huggingface_hub's size_on_disk, hard links counted once
        self.ref_inodes = InodeCounter()
        self.store_refs: set[str] = set()
        self.blob_dirs: list[tuple[str, int]] = []  # (blobs/ folder, signature of its sha256 names)
        self.repos: list[Repo] = []
        self.folders: set[str] = set()
        self.store_files = self.store_bytes = self.locks = 0

    def run(self) -> HubScan:
        if not os.path.isdir(self.root):
            return HubScan(self.root, False)
        store = locks = None
        P = self.ctx.problems
        todo: list[tuple[RepoRef, str]] = []
        with os.scandir(self.root) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            name = e.name
            if name in IGNORED_NAMES or e.path in self.ctx.skip:
                continue
            if e.is_dir(follow_symlinks=False):
                if name == Folder.LOCKS:
                    locks = e.path
                elif name == Folder.BLOBS and is_shared_store(e.path):
                    store = e.path
                elif (ref := RepoRef.from_folder_name(name, validate=False)) is not None:
                    todo.append((ref, e.path))
                else:
                    du(e.path, self.ctx, self.tally)
                    P.add("malformed", e.path, detail="not a repo folder")
            elif e.is_symlink():
                if (ref := self._top_link(e)) is not None:
                    todo.append((ref, e.path))
            elif e.is_file(follow_symlinks=False):
                self.tally.add(e.stat(follow_symlinks=False), self.ctx.inodes)
        self._repos(todo)
        if store is not None:
            self._walk_store(store)
        if locks is not None:
            self._orphan_locks(locks)
        self._confirm_duplicates()
        return HubScan(self.root, True, tuple(self.repos), self.ref_bytes, self.tally.bytes, self.tally.files,
                       self.store_files, self.store_bytes, self.locks)

    def _repos(self, todo: list[tuple[RepoRef, str]]) -> None:
        for ref, path in todo:
            self._merge(RepoWalk(self.root, ref, path, self.ctx, self.detail).outcome())

    def _merge(self, outcome: tuple) -> None:
        (repo, label, problems, files, logical, multi, used_multi, used_single, store_refs, locks, folder,
         blobs_dir, hashes) = outcome
        ctx, P = self.ctx, self.ctx.problems
        for kind, path, nbytes, detail, kw in problems:
            P.add(kind, path, nbytes, detail, repo=label, **kw)
        t = self.tally
        t.files += files
        t.logical += logical
        t.bytes += logical - sum(st.st_size for st in multi)
        for st in multi:
            if ctx.inodes.first(st):
                t.bytes += st.st_size
        self.ref_bytes += used_single
        for st in used_multi:
            if self.ref_inodes.first(st):
                self.ref_bytes += st.st_size
        dups = ctx.dups
        bitmap, mask, candidates = dups.bitmap, dups.mask, dups.candidates
        signature = 0
        for h, name in zip(map(hash, hashes), hashes, strict=True):  # DupFinder.add, inlined: once per blob
            signature |= 1 << (h & 1023)
            i, j = h & mask, (h >> 25) & mask
            bi, bj = 1 << (i & 7), 1 << (j & 7)
            if bitmap[i >> 3] & bi and bitmap[j >> 3] & bj:
                candidates.add(name)
            else:
                bitmap[i >> 3] |= bi
                bitmap[j >> 3] |= bj
        if signature:
            self.blob_dirs.append((blobs_dir, signature))
        self.store_refs |= store_refs
        self.locks += locks
        self.folders.add(folder)
        self.repos.append(repo)

    def _top_link(self, e: os.DirEntry) -> RepoRef | None:
        """A repo folder that is a link: followed as huggingface_hub follows it, and reported if it leaves."""
        target = os.path.realpath(e.path)
        if not os.path.exists(target):
            self.ctx.problems.add("dangling_link", e.path, detail=f"-> {os.readlink(e.path)}")
            return None
        if not target.startswith(self.root + os.sep):
            self.ctx.problems.add("link_outside_cache", e.path, detail=f"-> {target}")
        ref = RepoRef.from_folder_name(e.name, validate=False)
        return ref if ref is not None and os.path.isdir(target) else None

    def _walk_store(self, store: str) -> None:
        ctx, P = self.ctx, self.ctx.problems
        with os.scandir(store) as it:
            prefixes = list(it)
        for pe in prefixes:
            if not pe.is_dir(follow_symlinks=False):
                if pe.is_file(follow_symlinks=False):
                    self.tally.add(pe.stat(follow_symlinks=False), ctx.inodes)
                continue
            with os.scandir(pe.path) as it:
                for e in it:
                    if not e.is_file(follow_symlinks=False):
                        continue
                    st = e.stat(follow_symlinks=False)
                    self.tally.add(st, ctx.inodes)
                    if kind_of(e.name) != "sha256":  # `.refs` manifests, `.lock` files
                        continue
                    self.store_files += 1
                    self.store_bytes += st.st_size
                    if self.ref_inodes.first(st):
                        self.ref_bytes += st.st_size
                    if e.name not in self.store_refs:
                        # prune removes it through huggingface_hub's sweep, which reads its `.refs` manifest and
                        # keeps an entry without one (missing metadata is never grounds for deletion)
                        swept = os.path.isfile(store_manifest_of(e.path))
                        P.add("orphan_blob", e.path, st.st_size if st.st_nlink == 1 else 0,
                              "shared-store blob no repo links to" + ("" if swept else " (no .refs manifest: kept)"),
                              fix="prune" if swept else None)

    def _orphan_locks(self, locks: str) -> None:
        """Lock folders of repos no longer in the cache (repos' own locks were checked with their blobs)."""
        with os.scandir(locks) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.name in self.folders:
                continue
            if e.is_dir(follow_symlinks=False):
                t = du(e.path, self.ctx, self.tally)
                self.locks += t.files
                self.ctx.problems.add("stale_lock", e.path, 0, f"{counted(t.files, 'lock')} of a repo no longer cached",
                                      fix="prune")
            elif e.is_file(follow_symlinks=False):
                self.tally.add(e.stat(follow_symlinks=False), self.ctx.inodes)

    def _confirm_duplicates(self) -> None:
        """Same blob name in several repos' `blobs/`, not hard links of one file: `dedup` can merge them."""
        for name, paths in sorted(self.ctx.dups.confirm(self.blob_dirs).items()):
            by_dev: dict[int, list[tuple[str, os.stat_result]]] = defaultdict(list)
            for p in paths:
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_size > 0:
                    by_dev[st.st_dev].append((p, st))
            for members in by_dev.values():
                dup = duplicate(members, name, f"same blob {name[:12]} in {len(members)} repos")
                if dup is not None:
                    kind, path, nbytes, detail, kw = dup
                    self.ctx.problems.add(kind, path, nbytes, detail, **kw)

