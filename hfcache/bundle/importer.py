"""`import`: a bundle into a hub cache, with the exact layout `huggingface_hub` writes, checked before it shows.

Two phases, so a tampered bundle writes nothing and an interrupted import leaves a valid cache:

1. Stage: every payload is read once, hashed while it streams to `blobs/<etag>.import-<8hex>.incomplete` beside
   its final place (or only hashed, when the cache already has it). Any mismatch deletes what was staged, and the
   folders staging made, before the error is raised.
2. Publish, each step one atomic rename or link, in the order readers depend on: blobs, snapshot files, tree
   listings, `.no_exist` markers, refs last. Until a ref moves, nobody asking for a branch sees the new commit,
   and a tree listing appears only once every file it promises is there (`snapshot_download`'s offline rule).

Re-running finishes an interrupted import: what is there is reused, stale staging files are removed under the
blob's lock. Content already in the cache that differs from the bundle is never overwritten; it is reported.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from hfcache.bundle.crash import crash_point
from hfcache.bundle.manifest import Entry, Manifest, Revision
from hfcache.bundle.trees import check_trees
from hfcache.cache import durable
from hfcache.cache.hashing import copy_hashed, hash_file, kind_of
from hfcache.cache.layout import HubCache, RepoRef
from hfcache.cache.meta import MAX_TREE_BYTES
from hfcache.cache.names import BlobName
from hfcache.cache.paths import staging_etag, staging_path
from hfcache.errors import BundleError, IntegrityError, UsageError
from hfcache.progress import Progress
from hfcache.units import counted

STAGE_PURPOSE = "import"


@dataclass(frozen=True)
class ImportResult:
    cache: Path
    layout: str  # "symlinks" or "copies"
    revisions: tuple[Revision, ...]
    files_linked: int
    files_present: int
    blobs_written: int
    blobs_reused: int
    bytes_written: int
    shared: int  # blobs published into huggingface_hub's shared store
    trees: int
    refs_moved: tuple[str, ...]
    conflicts: tuple[str, ...]
    area_files: int = 0  # files of the offline caches (prepared datasets, modules, mapped URLs) placed
    area_present: int = 0  # ... already there with the same bytes


@dataclass
class _Blob:
    """One `blobs/<etag>` of one repo, and where its staged bytes wait."""

    entry: Entry
    pointers: list[Entry]  # the snapshot files that use it (paths made when needed: less memory)
    temp: Path | None = None
    xet_ok: bool = False  # the staged bytes have the xet hash the manifest gives
    kept: bool = False  # the cache has other bytes under this name: they stay, and this blob is not imported

    @property
    def repo(self) -> RepoRef:
        return self.entry.repo

    @property
    def etag(self) -> str:
        return self.entry.path


@dataclass
class _Stage:
    """What phase 1 made: temp files and folders to remove again if the bundle turns out bad."""

    created: list[Path] = field(default_factory=list)
    temps: list[Path] = field(default_factory=list)
    trees: dict[str, BinaryIO] = field(default_factory=dict)  # payload -> its checked bytes, in an unnamed file

    def mkdirs(self, folder: Path) -> None:
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for d in reversed(missing):
            d.mkdir(exist_ok=True)
            self.created.append(d)

    def close_trees(self) -> None:
        for f in self.trees.values():
            f.close()
        self.trees = {}

    def undo(self) -> None:
        self.close_trees()
        for t in self.temps:
            t.unlink(missing_ok=True)
        for d in reversed(self.created):
            with contextlib.suppress(OSError):  # not empty: something else put files there meanwhile
                d.rmdir()


def import_bundle(bundle: Path, cache: HubCache, symlinks: bool | None = None,
                  progress: Progress | None = None, area_roots=None, areas_refused: str | None = None,
                  move_refs: bool = False) -> ImportResult:
    """Import `bundle` into `cache`; `symlinks=False` writes the copied layout (as `--no-symlinks`).

    Offline-cache files go under `area_roots` (`hfcache.offline.env.OfflineRoots`; default: the environment's),
    unless `areas_refused` says why they have no place (then a bundle carrying any is refused, unread).
    A ref the cache has at another commit is kept, and reported as a conflict, unless `move_refs`.
    """
    from hfcache.bundle.container import open_reader

    progress = progress or Progress()
    with open_reader(Path(bundle)) as reader:
        with reader.manifest() as stream:
            manifest = Manifest.from_stream(stream)
        if manifest.areas and areas_refused:
            raise UsageError(areas_refused)
        blobs = _plan(cache, manifest)
        stage = _Stage()
        areas = None
        if manifest.areas:
            from hfcache.offline.bundle_roles import AreaImport
            from hfcache.offline.env import offline_roots

            areas = AreaImport(manifest.areas, area_roots or offline_roots(hub_cache=cache.root))
        try:
            _stage(cache, manifest, reader, blobs, stage, progress, areas)
            check_trees(manifest, stage.trees)
        except BaseException:
            stage.undo()
            if areas is not None:
                areas.undo()
            raise
    try:
        result = _publish(cache, manifest, blobs, stage, symlinks, move_refs)
    finally:
        stage.close_trees()
    if areas is None:
        return result
    placed = areas.publish()
    return replace(result, area_files=placed, area_present=areas.present,
                   conflicts=result.conflicts + tuple(areas.conflicts))


# -- phase 1 ---------------------------------------------------------------------------------------------------
def _plan(cache: HubCache, manifest: Manifest) -> dict[tuple[RepoRef, str], _Blob]:
    """Every blob of the bundle, with the snapshot files that use it; a blob the cache holds otherwise is `kept`."""
    blobs = {(e.repo, e.path): _Blob(e, []) for e in manifest.of_role("blob")}
    for f in manifest.of_role("file"):
        blobs[(f.repo, f.blob)].pointers.append(f)
    for b in blobs.values():
        path = cache.blob_path(b.repo, b.etag)
        if not path.exists():
            continue
        b.kept = not path.is_file() or path.stat().st_size != b.entry.size
        if not b.kept and _links_missing(cache, b):
            # About to be linked into a snapshot: its bytes are checked first, as the bundle's are. A blob of
            # the right size may have been planted or damaged; the bundle's bytes never replace it (a conflict).
            b.kept = hash_file(path, kind_of(b.etag)) != b.etag
    return blobs


def _links_missing(cache: HubCache, b: _Blob) -> bool:
    return any(not cache.pointer_path(f.repo, f.commit, f.path).exists() for f in b.pointers)


def _needed(cache: HubCache, b: _Blob) -> bool:
    """Bytes are needed when some snapshot file is missing and the blob is not already there."""
    return not b.kept and not cache.blob_path(b.repo, b.etag).exists() and _links_missing(cache, b)


def _stage(cache: HubCache, manifest: Manifest, reader, blobs: dict, stage: _Stage, progress: Progress,
           areas=None) -> None:
    by_payload: dict[str, list[_Blob]] = {}
    for b in blobs.values():
        if _needed(cache, b):
            by_payload.setdefault(b.entry.payload, []).append(b)
    tree_payloads = {e.payload for e in manifest.of_role("tree")}
    payloads = manifest.payloads()
    progress.start(len(payloads), sum(size for _, _, size in payloads.values()))
    for name, stream, size in reader.payloads(list(payloads)):
        kind, digest, want = payloads[name]
        if size != want:
            raise IntegrityError(f"bundle payload {name} has {counted(size, 'byte')}, its manifest says {want}: "
                                 "the bundle is damaged or tampered with; nothing was imported")
        targets = by_payload.get(name, [])
        try:
            if name in tree_payloads:
                if size > MAX_TREE_BYTES:
                    raise BundleError(f"bundle payload {name} is too large for a tree listing ({counted(size, 'byte')}"
                                      f", at most {MAX_TREE_BYTES}); nothing was imported")
                stage.trees[name] = f = tempfile.TemporaryFile()  # noqa: SIM115 (closed by the stage)
                got = copy_hashed(stream, f, kind, size, progress.advance)
            elif targets:
                got = _stage_blob(cache, stream, targets[0], kind, size, stage, progress.advance)
            elif areas is not None and areas.wants(name):
                got = areas.stage(name, stream, kind, size, progress.advance)
            else:
                got = copy_hashed(stream, None, kind, size, progress.advance)  # checked all the same
        except EOFError:
            raise IntegrityError(f"bundle payload {name} is truncated; nothing was imported") from None
        if got != digest:
            raise IntegrityError(f"bundle payload {name}: its {kind} is {got}, not {digest}: the bundle is damaged "
                                 "or tampered with; nothing was imported")
        for b in targets[1:]:  # the same bytes in another repo's blobs/
            _new_temp(cache, b, stage)
            shutil.copyfile(targets[0].temp, b.temp)
        if targets and areas is not None and areas.wants(name):  # ... or in an offline cache
            areas.stage_copy(name, targets[0].temp)
        if any(b.entry.xet_hash for b in targets):
            _check_xet(name, targets)
        progress.file_done(name, size, True)
        crash_point()


def _new_temp(cache: HubCache, b: _Blob, stage: _Stage) -> Path:
    blobs_dir = cache.blob_path(b.repo, b.etag).parent
    stage.mkdirs(blobs_dir)
    stage.mkdirs(cache.snapshots_dir(b.repo))  # a repo folder without it reads as corrupt
    b.temp = staging_path(cache.blob_path(b.repo, b.etag), STAGE_PURPOSE)
    stage.temps.append(b.temp)
    return b.temp


def _stage_blob(cache: HubCache, stream, b: _Blob, kind, size: int, stage: _Stage, on_bytes) -> str:
    """Stream one payload into a temp file beside the blob it will become, hashing on the way."""
    with open(_new_temp(cache, b, stage), "xb") as f:
        digest = copy_hashed(stream, f, kind, size, on_bytes)
        f.flush()
        durable.fsync_fd(f.fileno())  # durable before the rename that publishes it
        return digest


def _check_xet(name: str, targets: list[_Blob]) -> None:
    """A shared-store name is a claim like any other: checked (when `hf_xet` can hash) before the store gets it."""
    actual = _xet_hash(targets[0].temp)
    for b in targets:
        if b.entry.xet_hash is None or actual is None:
            continue
        if actual != b.entry.xet_hash:
            raise IntegrityError(f"bundle payload {name} does not have the xet hash its manifest gives: the bundle "
                                 "is damaged or tampered with; nothing was imported")
        b.xet_ok = True


def _xet_hash(path: Path) -> str | None:
    """The Xet file hash, when `hf_xet` is installed to compute it (None otherwise: the store is not used)."""
    try:
        import hf_xet
    except ImportError:
        return None
    return hf_xet.hash_files([str(path)])[0].hash


# -- phase 2 ---------------------------------------------------------------------------------------------------
@dataclass
class _Counts:
    linked: int = 0
    present: int = 0
    written: int = 0
    reused: int = 0
    bytes: int = 0
    shared: int = 0
    trees: int = 0


def _publish(cache: HubCache, manifest: Manifest, blobs: dict[tuple[RepoRef, str], _Blob], stage: _Stage,
             symlinks: bool | None, move_refs: bool = False) -> ImportResult:
    cache.ensure_tag()
    links = cache.symlinks_supported() if symlinks is None else (symlinks and cache.symlinks_supported())
    share = _share_function() if links else None
    n = _Counts()
    conflicts = [f"{b.repo}: blobs/{b.etag} exists with other content (kept)" for b in blobs.values() if b.kept]
    _drop_stale_stages(cache, blobs, stage)
    if links:
        for b in blobs.values():
            if not b.kept:
                _publish_blob(cache, b, share, n)
    incomplete: set[tuple[RepoRef, str]] = set()
    uses = {key: len(b.pointers) for key, b in blobs.items()}
    for f in manifest.of_role("file"):
        b = blobs[(f.repo, f.blob)]
        uses[(f.repo, f.blob)] -= 1
        problem = "kept" if b.kept else _place_file(cache, f, b, links, uses[(f.repo, f.blob)] == 0, n)
        if problem:
            if problem != "kept":
                conflicts.append(problem)
            incomplete.add((f.repo, f.commit))
        crash_point()
    for b in blobs.values():  # copies layout: staged bytes that no missing file needed after all
        if b.temp is not None:
            b.temp.unlink(missing_ok=True)
    for folder in sorted({cache.pointer_path(f.repo, f.commit, f.path).parent for f in manifest.of_role("file")}
                         | {cache.blobs_dir(b.repo) for b in blobs.values()}):
        durable.fsync_dir(folder)  # the renames and links above, durable before a ref names their commit
    for t in manifest.of_role("tree"):
        path = cache.tree_path(t.repo, t.commit)
        if path.exists():
            if not path.is_file() or hash_file(path, "sha256") != t.sha256:
                conflicts.append(f"{t.repo}: trees/{t.commit}.json exists with other content (kept)")
            continue
        if (t.repo, t.commit) not in incomplete:  # a listing promises every file it names
            _write_atomic(path, stage.trees[t.payload])
            n.trees += 1
            crash_point()
    for m in manifest.of_role("no_exist"):
        cache.mark_no_exist(m.repo, m.commit, m.path)
    moved = []
    for r in manifest.of_role("ref"):
        if (r.repo, r.commit) in incomplete:
            conflicts.append(f"{r.repo}: ref {r.path} left as it was: the snapshot {r.commit[:12]} is incomplete")
            continue
        old = cache.read_ref(r.repo, r.path)
        if old is not None and old != r.commit and not move_refs:
            # a checked bundle proves its bytes match its manifest, not that this commit is the Hub's `main`
            conflicts.append(f"{r.repo}: ref {r.path} is at {old[:12]} in the cache, the bundle says "
                             f"{r.commit[:12]} (kept; --move-refs moves it)")
            continue
        if old != r.commit:
            cache.write_ref(r.repo, r.path, r.commit)
            if old is not None:
                moved.append(f"{r.repo}: {r.path} {old[:12]} -> {r.commit[:12]}")
            crash_point()
    return ImportResult(
        cache=cache.root, layout="symlinks" if links else "copies", revisions=_revisions(manifest),
        files_linked=n.linked, files_present=n.present, blobs_written=n.written, blobs_reused=n.reused,
        bytes_written=n.bytes, shared=n.shared, trees=n.trees, refs_moved=tuple(moved), conflicts=tuple(conflicts))


def _drop_stale_stages(cache: HubCache, blobs: dict[tuple[RepoRef, str], _Blob], stage: _Stage) -> None:
    """Staging files an interrupted import left behind (this run's are kept); each under its blob's lock."""
    ours = set(stage.temps)
    for repo in {b.repo for b in blobs.values()}:
        folder = cache.blobs_dir(repo)
        for p in folder.iterdir() if folder.is_dir() else ():
            etag = staging_etag(p.name, STAGE_PURPOSE)
            if etag is not None and p not in ours and BlobName.check(etag):
                with cache.lock(repo, etag):
                    p.unlink(missing_ok=True)


def _publish_blob(cache: HubCache, b: _Blob, share: Callable | None, n: _Counts) -> None:
    """Rename the staged bytes to `blobs/<etag>` under the lock `huggingface_hub` takes, or reuse what is there."""
    blob = cache.blob_path(b.repo, b.etag)
    with cache.lock(b.repo, b.etag):
        if blob.exists():
            n.reused += 1
            if b.temp is not None:
                b.temp.unlink(missing_ok=True)
                b.temp = None
            # An interrupted import may have renamed it without sharing it: share it if its bytes check out.
            b.xet_ok = bool(share and b.entry.xet_hash and not blob.is_symlink()
                            and _xet_hash(blob) == b.entry.xet_hash)
        elif b.temp is not None:
            if not b.temp.exists():
                raise BundleError(f"{b.temp} vanished during the import (another process removed it); run again")
            os.replace(b.temp, blob)
            b.temp = None
            n.written += 1
            n.bytes += b.entry.size
            crash_point()
        else:
            return  # every snapshot file that uses it is there already
        if share is not None and b.xet_ok and not blob.is_symlink():
            if share(blob_path=str(blob), xet_hash=b.entry.xet_hash, cache_dir=cache.root,
                     expected_size=b.entry.size):
                n.shared += 1
            crash_point()


def _share_function() -> Callable | None:
    """huggingface_hub's own store publisher when its shared store is on, so both tools write the same layout."""
    from hfcache.cache.hfhub import publisher

    return publisher()


def _place_file(cache: HubCache, f: Entry, b: _Blob, links: bool, last_use: bool, n: _Counts) -> str | None:
    """Make one snapshot file appear: a relative link, or (copies layout) the bytes themselves, atomically."""
    pointer = cache.pointer_path(f.repo, f.commit, f.path)
    blob = cache.blob_path(f.repo, f.blob)
    if pointer.exists():
        if pointer.is_symlink():
            same = os.path.realpath(pointer) == os.path.realpath(blob)
        else:
            same = pointer.is_file() and pointer.stat().st_size == b.entry.size
        if not same:
            return f"{f.repo}: snapshots/{f.commit[:12]}/{f.path} exists with other content (kept)"
        n.present += 1
        return None
    if links:
        if not blob.exists():
            return f"{f.repo}: blobs/{f.blob} is missing, so {f.path} could not be linked"
        cache.link(f.repo, f.commit, f.path, f.blob, new_blob=False)
    else:
        pointer.parent.mkdir(parents=True, exist_ok=True)
        if last_use and b.temp is not None:
            os.replace(b.temp, pointer)  # the last user takes the staged file, as huggingface_hub moves a new blob
            b.temp = None
        else:
            tmp = pointer.with_name(f".{pointer.name}.{uuid.uuid4().hex[:8]}.tmp")
            shutil.copyfile(b.temp if b.temp is not None else blob, tmp)
            durable.fsync_file(tmp)
            os.replace(tmp, pointer)
    n.linked += 1
    return None


def _write_atomic(path: Path, source: BinaryIO) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    source.seek(0)
    with open(tmp, "xb") as f:
        shutil.copyfileobj(source, f)
    durable.replace(tmp, path)  # a tree listing is published as durably as the blobs it names


def _revisions(manifest: Manifest) -> tuple[Revision, ...]:
    """Each commit the bundle carries, by its ref where it has one."""
    named = {(r.repo, r.commit): r.path for r in manifest.of_role("ref")}
    commits = sorted({(e.repo, e.commit) for e in manifest.entries if e.role in ("file", "tree")},
                     key=lambda rc: (rc[0].repo_type, rc[0].repo_id, rc[1]))
    return tuple(Revision(repo, named.get((repo, c), c), c) for repo, c in commits)
