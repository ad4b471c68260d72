"""`convert`: switch a cache between the symlinked layout and the copied one `huggingface_hub` falls back to
without symlinks, one atomic rename per file, so a cache interrupted midway is a valid mix of both."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from hfcache.bundle.crash import crash_point
from hfcache.cache.layout import HubCache, RepoRef
from hfcache.cache.names import BlobName
from hfcache.cache.paths import staging_etag, staging_path
from hfcache.errors import UsageError


@dataclass(frozen=True)
class ConvertResult:
    cache: Path
    layout: str  # what the cache is now: "copies" or "symlinks"
    files: int
    blobs_created: int
    blobs_removed: int
    bytes_saved: int
    skipped: tuple[str, ...]


def _repos(cache: HubCache) -> list[RepoRef]:
    if not cache.root.is_dir():
        raise UsageError(f"{cache.root} is not a folder")
    found = [RepoRef.from_folder_name(p.name) for p in sorted(cache.root.iterdir())]
    return [r for r in found if r is not None and cache.snapshots_dir(r).is_dir()]


def _snapshot_entries(cache: HubCache, repo: RepoRef) -> list[tuple[str, str, Path]]:
    """(commit, repo path, snapshot path) for every file or link under `snapshots/`."""
    out = []
    snaps = cache.snapshots_dir(repo)
    for snap in sorted(snaps.iterdir()):
        for dirpath, dirnames, filenames in os.walk(snap):
            dirnames.sort()
            for name in sorted(filenames):
                p = Path(dirpath) / name
                out.append((snap.name, p.relative_to(snap).as_posix(), p))
    return out


def convert_to_copies(cache: HubCache) -> ConvertResult:
    """Replace every snapshot link by the bytes it points to; a blob's last user takes the blob itself."""
    files = removed = 0
    skipped: list[str] = []
    for repo in _repos(cache):
        blobs_dir = cache.blobs_dir(repo)
        users: dict[Path, list[Path]] = {}
        for _, _, p in _snapshot_entries(cache, repo):
            if p.is_symlink():
                if not p.exists():
                    skipped.append(f"{repo}: {p} is a broken link (left as is)")
                    continue
                users.setdefault(Path(os.path.normpath(p.parent / os.readlink(p))), []).append(p)
        for blob, pointers in users.items():
            own = blob.parent == blobs_dir
            with cache.lock(repo, blob.name) if own else contextlib.nullcontext():
                for i, p in enumerate(pointers):
                    if own and i == len(pointers) - 1 and not blob.is_symlink():
                        os.replace(blob, p)  # as huggingface_hub moves a new blob into place
                        removed += 1
                    else:
                        _copy_over(p.resolve(), p)
                    files += 1
                    crash_point()
        removed += _drop_unused_store_links(cache, repo)
    return ConvertResult(cache.root, "copies", files, 0, removed, 0, tuple(skipped))


def _copy_over(source: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, dest)


def _drop_unused_store_links(cache: HubCache, repo: RepoRef) -> int:
    """Repo blobs that are only links into the shared store and that no snapshot uses any more; the store entry
    goes too when nothing else refers to it (huggingface_hub's own sweep decides)."""
    from hfcache.cache.hfhub import shared_blob_target, sweep_shared_blob

    blobs_dir = cache.blobs_dir(repo)
    used = {os.path.normpath(p.parent / os.readlink(p)) for _, _, p in _snapshot_entries(cache, repo)
            if p.is_symlink()}
    removed = 0
    for blob in sorted(blobs_dir.iterdir()) if blobs_dir.is_dir() else ():
        target = shared_blob_target(blob, cache.root) if blob.is_symlink() else None
        if target is None or str(blob) in used:
            continue
        with cache.lock(repo, blob.name):
            blob.unlink()
        sweep_shared_blob(target, cache.root)
        removed += 1
        crash_point()
    return removed


def convert_to_symlinks(cache: HubCache) -> ConvertResult:
    """Name every real snapshot file's bytes by their hash in `blobs/`, link to it, store identical bytes once."""
    from hfcache.cache.hashing import hash_file, kind_of
    from hfcache.cache.lfs import file_meta

    if not cache.symlinks_supported():
        raise UsageError(f"symlinks are not available in {cache.root} (or HF_HUB_DISABLE_SYMLINKS is set)")
    files = created = saved = 0
    skipped: list[str] = []
    for repo in _repos(cache):
        _drop_stale_temps(cache, repo)
        trees: dict[str, dict] = {}
        for commit, rel, p in _snapshot_entries(cache, repo):
            if p.is_symlink() or not p.is_file():
                continue
            size = p.stat().st_size
            tree = trees.setdefault(commit, cache.read_tree(repo, commit) or {})
            meta = tree.get(rel)
            if meta is not None and meta.size == size and kind_of(meta.etag):
                etag = meta.etag
                if hash_file(p, kind_of(etag)) != etag:
                    skipped.append(f"{repo}: {p} does not match its tree listing ({etag}); left as is")
                    continue
            else:  # no listing: the Hub's own rules (LFS by pattern or size), as `serve` names folder files
                etag = file_meta(p, rel).etag
            blob = cache.blob_path(repo, etag)
            blob.parent.mkdir(parents=True, exist_ok=True)
            with cache.lock(repo, etag):
                if blob.exists():
                    if blob.stat().st_size != size:
                        skipped.append(f"{repo}: blobs/{etag} exists with another size; {p} left as is")
                        continue
                    saved += size
                else:
                    _materialize_blob(p, blob)
                    created += 1
                    crash_point()
                cache.link(repo, commit, rel, etag, new_blob=False)
            files += 1
            crash_point()
    return ConvertResult(cache.root, "symlinks", files, created, 0, saved, tuple(skipped))


def _materialize_blob(source: Path, blob: Path) -> None:
    """Give `blob` the bytes of `source` (a hard link when the file system allows: no copy, no extra space)."""
    tmp = staging_path(blob, "convert")
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, blob)
    finally:
        tmp.unlink(missing_ok=True)


def _drop_stale_temps(cache: HubCache, repo: RepoRef) -> None:
    blobs = cache.blobs_dir(repo)
    for p in blobs.iterdir() if blobs.is_dir() else ():
        etag = staging_etag(p.name, "convert")
        if etag is not None and BlobName.check(etag):
            with cache.lock(repo, etag):
                p.unlink(missing_ok=True)
