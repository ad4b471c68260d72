"""Low-level reads the scan is built on, each chosen for its cost per file: listings by file descriptor,
small reads without `open()` overhead, `trees/*.json` parsed only when needed, duplicate groups."""

from __future__ import annotations

import json
import os
from collections import defaultdict

_S_IFMT, _S_IFREG, _S_IFLNK = 0o170000, 0o100000, 0o120000
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)


def scandir_fd(path: str, use_fd: bool = True) -> tuple[int | None, list[os.DirEntry]] | None:
    """A folder's entries; None if it cannot be listed. With `use_fd`, listed through an open descriptor (the
    caller closes it), so `stat`/`readlink` of each entry (`entry.path` is then the bare name, used with
    `dir_fd`) resolve one name instead of the whole path. That costs 5 more system calls per folder, so it pays
    only for folders with many entries (`blobs/`, a snapshot's top folder)."""
    if not use_fd:
        try:
            with os.scandir(path) as it:
                return None, list(it)
        except OSError:
            return None
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError:
        return None
    try:
        with os.scandir(fd) as it:
            return fd, list(it)
    except OSError:
        os.close(fd)
        return None


def read_small(path: str, hint: int = 4096) -> bytes:
    """A small file's bytes in as few system calls as possible (no buffered file object); b"" if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return b""
    try:
        chunks = []
        size = hint + 1
        while chunk := os.read(fd, size):  # a short read is the end of a regular file
            chunks.append(chunk)
            if len(chunk) < size:
                break
            size = 1 << 16  # os.read allocates what it is asked for: keep follow-up buffers small
        return b"".join(chunks)
    except OSError:
        return b""
    finally:
        os.close(fd)


def parse_tree(data: bytes) -> dict | None:
    """`trees/<commit>.json` files (path -> info dict), or None when unreadable or of another format."""
    try:
        parsed = json.loads(data)
        files = parsed["files"] if parsed.get("format_version") == 1 else None
        return files if isinstance(files, dict) else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def tree_etag(info: object) -> str | None:
    return (info.get("lfs_sha256") or info.get("blob_id")) if isinstance(info, dict) else None


def tree_size(info: object) -> int:
    try:
        return int(info["size"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return 0


def duplicate(members: list[tuple[str, os.stat_result]], digest: str, detail: str) -> tuple | None:
    """Identical files on one device that are separate inodes, as a problem record; the most-linked inode
    (then the first path) is the one kept."""
    inodes: dict[int, list[tuple[str, os.stat_result]]] = defaultdict(list)
    for p, st in members:
        inodes[st.st_ino].append((p, st))
    if len(inodes) < 2:
        return None
    groups = sorted(inodes.values(), key=lambda g: -g[0][1].st_nlink)
    saving = sum(g[0][1].st_size for g in groups[1:] if g[0][1].st_nlink == len(g))
    paths = tuple(p for g in groups for p, _ in g)
    return ("duplicate", groups[1][0][0], saving, detail, {"fix": "dedup", "paths": paths, "digest": digest})
