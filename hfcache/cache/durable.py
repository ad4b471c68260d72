"""fsync before publishing: a rename is durable only once the bytes it publishes are, and the rename itself only
once its folder is.

Without it a power loss after `os.replace` can leave a blob, ref or imported file under its final name with
zero or stale bytes (ext4 `data=ordered` mostly saves renames over existing files, but not new names; XFS and
btrfs do not). Costs one `fsync` per published file; see docs/benchmarks.md ("durability").
HFCACHE_NO_FSYNC=1 turns it off (tests and benchmarks on throwaway caches).
"""

from __future__ import annotations

import os
from pathlib import Path

ENABLED = os.environ.get("HFCACHE_NO_FSYNC", "") in ("", "0")


def fsync_fd(fd: int) -> None:
    if ENABLED:
        os.fsync(fd)


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a file's bytes to stable storage (before the rename that publishes it)."""
    if not ENABLED:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (after a rename into it). Where folders cannot be opened (Windows), nothing."""
    if not ENABLED:
        return
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder: nothing more can be done there
        pass
    finally:
        os.close(fd)


def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str], synced: bool = False) -> None:
    """`os.replace` that survives a power loss: the source's bytes first (unless `synced`), the folder after."""
    if not synced:
        fsync_file(src)
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)


def sync_tree(root: str | os.PathLike[str]) -> None:
    """Everything under `root` durable, before deleting the only other copy of it (`relocate` across devices).
    One `sync()` flushes a whole copy in a batch, where an fsync per file would cost a disk round trip each."""
    if not ENABLED:
        return
    if hasattr(os, "sync"):
        os.sync()
        return
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                fsync_file(path)
        fsync_dir(dirpath)
    fsync_dir(Path(root).parent)
