"""One repo folder of the hub cache, walked on its own; `hub.HubWalk` merges the results in order.

Cost per file, measured (see docs/benchmarks.md): one `readlink` per snapshot entry, one `lstat` per blob, and
a `listdir` of the repo's `.locks/` folder (a lock needs a `stat` only when its blob is absent). A snapshot link
normally reads `../../blobs/<etag>` (one more `../` per sub-folder) and is matched as a string against the
`blobs/` listing; only other targets are normalised and `stat`ed. `trees/<commit>.json` is not parsed when its
entry count equals the files found (the common case); it is when they differ, when a copy or a dangling link
needs it, or in detail mode.
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from operator import attrgetter

from hfcache.cache.layout import RepoRef, is_commit
from hfcache.cache.paths import (
    COMPANIONS,
    Folder,
    blob_lock_of,
    is_partial_name,
    lock_held,
    partial_etag,
    partial_of,
    store_dir_of,
)
from hfcache.scan.files import (
    _S_IFLNK,
    _S_IFMT,
    _S_IFREG,
    duplicate,
    parse_tree,
    read_small,
    scandir_fd,
    tree_etag,
    tree_size,
)
from hfcache.scan.model import CachedFile, Repo, Revision
from hfcache.scan.walk import IGNORED_NAMES, Context, du
from hfcache.units import counted

_PREFIXES = ["../" * (d + 2) + Folder.BLOBS + "/" for d in range(16)]
_SIZE, _ATIME, _MTIME = attrgetter("st_size"), attrgetter("st_atime"), attrgetter("st_mtime")
_TREE_SIGNATURE = b'"format_version": 1'  # as json.dump(indent=1) writes it (huggingface_hub and hfcache)


def _prefix(depth: int) -> str:
    return _PREFIXES[depth] if depth < len(_PREFIXES) else "../" * (depth + 2) + Folder.BLOBS + "/"


class RepoWalk:
    """Walks `<type>s--<org>--<name>`; `run()` returns the `Repo`, the rest is read by the merge."""

    def __init__(self, hub_root: str, ref: RepoRef, path: str, ctx: Context, detail: bool) -> None:
        self.hub_root, self.ref, self.path, self.detail = hub_root, ref, path, detail
        self.now, self.stale_after = ctx.now, ctx.stale_after
        self.label = str(ref)
        self.folder = os.path.basename(path)
        self.blobs_dir = f"{path}/blobs"
        self.blobs: dict[str, os.stat_result | None] = {}  # None: a link whose target is gone
        self.linked: set[str] = set()  # blob entries that are links (into the shared store)
        self.dead: set[str] = set()  # blob links whose target is gone
        self.odd: dict[str, os.stat_result] = {}  # snapshot targets that are not this repo's blobs
        # read by the merge:
        self.problems: list[tuple] = []  # (kind, path, bytes, detail, extra kwargs)
        self.files = 0
        self.logical = 0  # bytes of every regular file in the folder
        self.multi: list[os.stat_result] = []  # files with other hard links: counted once by the merge
        self.used_multi: list[os.stat_result] = []  # same, among files the snapshots use
        self.used_single = 0  # bytes of used files with no other link
        self.store_refs: set[str] = set()
        self.hashes: list[str] = []  # sha256 blob names: candidates for cross-repo duplicates
        self.locks = 0
        self.incomplete_bytes = 0
        self.fresh: set[str] = set()  # etags with a recent partial download
        self._single = 0  # bytes of regular blobs with one link
        self._orphan_bytes = 0
        self._multi_names: list[str] = []  # regular blobs with other hard links
        self._tree_bytes: dict[str, int] = {}  # size of each trees/<commit>.json read
        self._last: tuple[int, int, float, float] = (0, 0, 0.0, 0.0)  # sums of the last revision walked

    def outcome(self) -> tuple:
        """`run()`'s result plus what `HubWalk._merge` needs, as one plain tuple: the walk shares no state."""
        repo = self.run()
        return (repo, self.label, self.problems, self.files, self.logical, self.multi, self.used_multi,
                self.used_single, self.store_refs, self.locks, self.folder, self.blobs_dir, self.hashes)

    def problem(self, kind: str, path: str, nbytes: int = 0, detail: str = "", **kw: object) -> None:
        self.problems.append((kind, path, nbytes, detail, kw))

    def _file(self, st: os.stat_result) -> None:
        self.files += 1
        self.logical += st.st_size
        if st.st_nlink > 1:
            self.multi.append(st)

    def run(self) -> Repo:
        self._blobs()
        refs = self._refs()
        trees = self._trees()
        no_exist = self._no_exist()
        revisions, used, kept, detached_meta = self._snapshots(refs, trees, no_exist)
        commits = {r.commit for r in revisions}
        for commit, names in sorted(refs.items()):
            if commit not in commits:
                self.problem("missing_snapshot", f"{self.path}/refs/{names[0]}", 0,
                             f"{', '.join(sorted(names))} -> {commit[:12]}, no snapshots/{commit[:12]}…")
        for commit, tree_path in sorted(trees.items()):
            if commit not in commits:
                try:
                    st = os.lstat(tree_path)
                except OSError:
                    continue
                self._file(st)
                if commit not in refs:
                    self.problem("orphan_metadata", tree_path, st.st_size,
                                 "trees/ listing of a commit with no snapshot", fix="prune")
        for commit, (n, size) in sorted(no_exist.items()):
            if commit not in commits and commit not in refs:
                self.problem("orphan_metadata", f"{self.path}/.no_exist/{commit}", size,
                             f".no_exist markers ({n}) of a commit with no snapshot", fix="prune")
        orphan_single = self._orphans(used)
        self._locks()
        blobs, odd, linked = self.blobs, self.odd, self.linked
        # huggingface_hub's numbers: over the distinct files the snapshots use (one revision: its own sums)
        if len(revisions) == 1 and revisions[0].nb_files:
            size, count, atime, mtime = self._last
        else:
            sts = [st for k in used if (st := blobs.get(k) or odd.get(k)) is not None]
            count = len(sts)
            if sts:
                size, atime, mtime = sum(map(_SIZE, sts)), max(map(_ATIME, sts)), max(map(_MTIME, sts))
            else:
                st = os.stat(self.path)
                size, atime, mtime = 0, st.st_atime, st.st_mtime
        # physical bytes of what the snapshots use: regular blobs minus orphans, plus copies in snapshots
        self.used_single = self._single - orphan_single
        inside = self.hub_root + os.sep
        for k, st in odd.items():
            if k in used and k.startswith(inside):
                if st.st_nlink > 1:
                    self.used_multi.append(st)
                else:
                    self.used_single += st.st_size
        self.used_multi += [blobs[k] for k in self._multi_names if k in used]  # type: ignore[misc]
        detached = detached_meta + sum(
            st.st_size for k in used - kept
            if (st := blobs.get(k) or odd.get(k)) is not None and k not in linked and st.st_nlink == 1)
        return Repo(self.ref.repo_type, self.ref.repo_id, self.path, size, count, self.logical, atime, mtime,
                    tuple(revisions), self._orphan_bytes, self.incomplete_bytes, detached)

    # -- blobs/ ------------------------------------------------------------------------------------------------
    def _blobs(self) -> None:
        blobs = self.blobs
        hashes = self.hashes
        files = logical = single = 0
        listed = scandir_fd(self.blobs_dir)
        if listed is None:
            return
        fd, entries = listed
        assert fd is not None
        try:
            for e in entries:
                st = e.stat(follow_symlinks=False)  # fstatat(fd, name)
                fmt = st.st_mode & _S_IFMT
                if fmt == _S_IFREG:
                    name = e.name
                    files += 1
                    logical += st.st_size
                    if st.st_nlink > 1:
                        self.multi.append(st)
                        self._multi_names.append(name)
                    else:
                        single += st.st_size
                    if "." in name and is_partial_name(name):  # a partial download or its record
                        self._incomplete(f"{self.blobs_dir}/{name}", name, st)
                        if st.st_nlink == 1:
                            single -= st.st_size
                        continue
                    blobs[name] = st
                    if len(name) == 64:  # sha256: a duplicate if another repo has it too (checked by the merge)
                        hashes.append(name)
                elif fmt == _S_IFLNK:
                    blobs[e.name] = self._blob_link(f"{self.blobs_dir}/{e.name}")
                    self.linked.add(e.name)
                    if blobs[e.name] is None:
                        self.dead.add(e.name)
                elif stat.S_ISDIR(st.st_mode):
                    t = du(f"{self.blobs_dir}/{e.name}", Context(self.now, self.stale_after))
                    files += t.files
                    logical += t.logical
                    self.problem("malformed", f"{self.blobs_dir}/{e.name}", detail="folder inside blobs/")
        finally:
            os.close(fd)
        self.files += files
        self.logical += logical
        self._single = single

    def _incomplete(self, path: str, name: str, st: os.stat_result) -> None:
        """A partial download (or its progress record) is in use while its blob's lock is held, and a leftover
        only when that lock is free and it is old."""
        age = self.now - st.st_mtime
        fresh = age < self.stale_after
        held = not fresh and lock_held(blob_lock_of(path))
        if fresh or held:
            self.fresh.add(partial_etag(name))
        self.incomplete_bytes += st.st_size
        what = "partial download's record" if partial_of(name)[1] in COMPANIONS else "partial download"
        self.problem("incomplete", path, st.st_size, what + (" (recent)" if fresh else " (in use)" if held else ""),
                     age=age, fix=None if fresh or held else "prune")

    def _blob_link(self, path: str) -> os.stat_result | None:
        """A blob that is a link: normally into the shared store (`../../blobs/<xx>/<xet hash>`)."""
        target = os.readlink(path)
        full = os.path.normpath(os.path.join(self.blobs_dir, target))
        try:
            st = os.stat(path)
        except OSError:
            self.problem("dangling_link", path, 0, f"-> {target}")
            return None
        if full.startswith(store_dir_of(self.hub_root) + os.sep):
            self.store_refs.add(os.path.basename(full))
        elif not full.startswith(self.hub_root + os.sep):
            self.problem("link_outside_cache", path, st.st_size, f"-> {full}")
        return st

    # -- refs/, trees/, .no_exist/, .locks/ --------------------------------------------------------------------
    def _refs(self) -> dict[str, list[str]]:
        refs: dict[str, list[str]] = defaultdict(list)
        stack = [(f"{self.path}/refs", "")]
        while stack:
            d, prefix = stack.pop()
            try:
                it = os.scandir(d)
            except OSError:
                continue
            with it:
                for e in it:
                    if e.name in IGNORED_NAMES:
                        continue
                    if e.is_dir(follow_symlinks=False):
                        stack.append((e.path, f"{prefix}{e.name}/"))
                        continue
                    data = read_small(e.path)
                    self.files += 1
                    self.logical += len(data)
                    commit = data[:100].decode(errors="replace").strip()
                    if is_commit(commit):
                        refs[commit].append(prefix + e.name)
                    else:
                        self.problem("malformed", e.path, detail="ref that is not a commit sha")
        return refs

    def _trees(self) -> dict[str, str]:
        """`trees/<commit>.json` paths by commit. Not `stat`ed here: a listing is read (and counted) with its
        revision, and one without a revision is `stat`ed when reported."""
        try:
            names = os.listdir(f"{self.path}/trees")
        except OSError:
            return {}
        out = {}
        for name in names:
            path = f"{self.path}/trees/{name}"
            if name.endswith(".json"):
                out[name[:-5]] = path
            else:
                self._file(os.lstat(path))
        return out

    def _no_exist(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        try:
            it = os.scandir(f"{self.path}/.no_exist")
        except OSError:
            return out
        with it:
            for e in it:
                t = du(e.path, Context(self.now, self.stale_after))
                self.files += t.files
                self.logical += t.logical
                out[e.name] = (t.files, t.logical)
        return out

    def _locks(self) -> None:
        """`.locks/<folder>/<etag>.lock`: every download leaves one, and huggingface_hub keeps it while the blob
        exists. A lock is a leftover once its blob is gone (deleted, or never completed) and no process holds it;
        one with a recent partial download of its blob is left alone. One problem per repo; the lock paths are
        listed in detail mode only (prune needs them, a summary does not)."""
        d = f"{self.hub_root}/.locks/{self.folder}"
        try:
            names = os.listdir(d)
        except OSError:
            return
        self.locks += len(names)
        self.files += len(names)  # lock files are empty: their bytes are not read
        # set operations, not a loop: a cache holds as many locks as blobs; only blobless ones are probed
        etags = {n.removesuffix(Folder.LOCK_SUFFIX): n for n in names if n.endswith(Folder.LOCK_SUFFIX)}
        stale: list[str] = []
        oldest = 0.0
        for etag in etags.keys() - (self.blobs.keys() - self.dead) - self.fresh:
            path = f"{d}/{etags[etag]}"
            try:
                age = self.now - os.lstat(path).st_mtime
            except OSError:
                continue
            if not lock_held(path):  # a held lock is a download under way
                stale.append(path)
                oldest = max(oldest, age)
        if stale:
            self.problem("stale_lock", d, 0, f"{counted(len(stale), 'lock')} of blobs no longer in the cache",
                         age=oldest or None, fix="prune", paths=tuple(sorted(stale)) if self.detail else (),
                         count=len(stale))

    # -- snapshots/ --------------------------------------------------------------------------------------------
    def _snapshots(self, refs, trees, no_exist):
        """Every revision; also the blob keys used, those used by revisions with refs, and the bytes of
        `trees/` and `.no_exist` that go with detached revisions."""
        revisions: list[Revision] = []
        used: set[str] = set()
        kept: set[str] = set()
        copies: dict[str, list[tuple[str, os.stat_result]]] = defaultdict(list)
        detached_meta = 0
        try:
            with os.scandir(f"{self.path}/snapshots") as it:
                entries = list(it)
        except OSError:
            self.problem("malformed", self.path, detail="repo folder without snapshots/")
            return revisions, used, kept, 0
        for re_ in entries:
            if re_.name in IGNORED_NAMES:
                continue
            if not re_.is_dir(follow_symlinks=False):
                if re_.is_file(follow_symlinks=False):
                    self._file(re_.stat(follow_symlinks=False))
                self.problem("malformed", re_.path, detail="snapshots/ entry that is not a folder")
                continue
            revisions.append(self._revision(re_, refs, trees, no_exist, copies, used, kept))
            if not revisions[-1].refs:
                detached_meta += self._tree_bytes.get(re_.name, 0) + no_exist.get(re_.name, (0, 0))[1]
        self._copies(copies)
        return sorted(revisions, key=lambda r: r.commit), used, kept, detached_meta

    def _revision(self, entry: os.DirEntry, refs, trees, no_exist, copies, used: set[str],
                  kept: set[str]) -> Revision:
        commit = entry.name
        keys, oddkeys, files, n, own, dangling = self._walk_snapshot(entry.path)
        blobs, odd = self.blobs, self.odd
        sts = [blobs[k] for k in keys]
        sts += [odd[k] for k in oddkeys]
        if sts:
            size, atime, mtime = sum(map(_SIZE, sts)), max(map(_ATIME, sts)), max(map(_MTIME, sts))
        else:
            st = entry.stat()
            size, atime, mtime = 0, st.st_atime, st.st_mtime
        self._last = (size, len(sts), atime, mtime)
        keys |= oddkeys
        used |= keys
        ref_names = tuple(sorted(refs.get(commit, ())))
        if ref_names:
            kept |= keys
        # the tree listing: counted, not parsed, unless something needs its content
        has_tree, lacks, tree = False, 0, None
        if commit in trees:
            data = read_small(trees[commit], 16384)
            self.files += 1
            self.logical += len(data)
            self._tree_bytes[commit] = len(data)
            count = data.count(b'"blob_id"') if _TREE_SIGNATURE in data else -1
            if count != n or own or dangling or self.detail:
                tree = parse_tree(data)
                has_tree = tree is not None
            else:
                has_tree = True
        if tree is not None:
            missing = [p for p in tree if not os.path.lexists(os.path.join(entry.path, p))]
            lacks = len(missing)
            if missing:
                self.problem("snapshot_lacks_files", entry.path, sum(tree_size(tree[p]) for p in missing),
                             f"{lacks} of {len(tree)} listed files absent (first: {missing[0]}); partial download?")
            for rel, path, st in own:
                if etag := tree_etag(tree.get(rel)):
                    copies[etag].append((path, st))
        for path, target, rel in dangling:
            self.problem("dangling_link", path, tree_size(tree.get(rel)) if tree else 0, f"-> {target}")
        return Revision(commit, ref_names, n, size, atime, mtime, has_tree, lacks, no_exist.get(commit, (0, 0))[0],
                        tuple(files) if files is not None else None)

    def _walk_snapshot(self, root: str):
        """Entries of one snapshot folder: blob names its links use, other targets (copies, odd links), its files
        (detail only), its file count, its copies `(rel, path, stat)` and dangling links `(path, target, rel)`."""
        blobs, odd, readlink = self.blobs, self.odd, os.readlink
        keys: set[str] = set()
        oddkeys: set[str] = set()
        own: list[tuple[str, str, os.stat_result]] = []
        dangling: list[tuple[str, str, str]] = []
        files: list[CachedFile] | None = [] if self.detail else None
        n = 0
        stack = [(root, "", 0)]
        while stack:
            d, rel, depth = stack.pop()
            prefix = _prefix(depth)
            plen = len(prefix)
            listed = scandir_fd(d, use_fd=depth == 0)
            if listed is None:
                continue
            fd, entries = listed
            try:
                for e in entries:
                    if e.is_symlink():
                        target = readlink(e.path, dir_fd=fd)  # e.path is the bare name when listed by fd
                        key = target[plen:]
                        if blobs.get(key) is not None and target.startswith(prefix):
                            keys.add(key)
                            n += 1
                            if files is not None:
                                files.append(CachedFile(rel + e.name, f"{self.blobs_dir}/{key}",
                                                        blobs[key].st_size, True))  # type: ignore[union-attr]
                            continue
                        path = f"{d}/{e.name}"
                        resolved = self._odd_link(path, target)
                        if resolved is None:
                            dangling.append((path, target, rel + e.name))
                            continue
                        key, is_link = resolved, True
                    elif e.is_dir(follow_symlinks=False):
                        stack.append((f"{d}/{e.name}", f"{rel}{e.name}/", depth + 1))
                        continue
                    elif e.name in IGNORED_NAMES:
                        continue
                    else:
                        st = e.stat(follow_symlinks=False)
                        self._file(st)
                        key, is_link = f"{d}/{e.name}", False
                        odd[key] = st
                        own.append((rel + e.name, key, st))
                    n += 1
                    if key in blobs:
                        keys.add(key)
                    else:
                        oddkeys.add(key)
                    if files is not None:
                        st_ = blobs.get(key) or odd[key]
                        blob = f"{self.blobs_dir}/{key}" if key[0] != "/" else key
                        files.append(CachedFile(rel + e.name, blob, st_.st_size, is_link))
            finally:
                if fd is not None:
                    os.close(fd)
        return keys, oddkeys, files, n, own, dangling

    def _odd_link(self, path: str, target: str) -> str | None:
        """A snapshot link that is not `../../blobs/<name>` of a present blob: resolve it and say what it is.
        Returns a blob name, or the absolute target, or None when dangling."""
        full = target if os.path.isabs(target) else os.path.normpath(os.path.join(os.path.dirname(path), target))
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not full.startswith(self.hub_root + os.sep):
            self.problem("link_outside_cache", path, st.st_size, f"-> {full}")
        name = full[len(self.blobs_dir) + 1:]
        if full.startswith(self.blobs_dir + "/") and self.blobs.get(name) is not None:
            return name
        self.odd[full] = st
        return full

    # -- what is left over -------------------------------------------------------------------------------------
    def _orphans(self, used: set[str]) -> int:
        """Report blobs no snapshot uses; returns the bytes of those with a single link (for the accounting)."""
        total = single = 0
        for name in sorted(self.blobs.keys() - used):
            st = self.blobs[name]
            if st is None:
                continue
            is_link = name in self.linked
            freed = 0 if is_link or st.st_nlink > 1 else st.st_size
            total += freed
            single += freed
            self.problem("orphan_blob", f"{self.blobs_dir}/{name}", freed,
                         "link into the shared store no snapshot uses" if is_link else "no snapshot points to it",
                         fix="prune")
        self._orphan_bytes = total
        return single

    def _copies(self, copies: dict[str, list[tuple[str, os.stat_result]]]) -> None:
        """Files stored as copies in snapshots (no link): the same content as a blob, or as another copy."""
        for etag, found in sorted(copies.items()):
            members = list(found)
            st = self.blobs.get(etag)
            if st is not None and etag not in self.linked:
                members.insert(0, (f"{self.blobs_dir}/{etag}", st))
            by_dev: dict[int, list[tuple[str, os.stat_result]]] = defaultdict(list)
            for m in members:
                by_dev[m[1].st_dev].append(m)
            for group in by_dev.values():
                dup = duplicate(group, etag, f"copy of blob {etag[:12]} instead of a link")
                if dup is not None:
                    self.problems.append(dup)
