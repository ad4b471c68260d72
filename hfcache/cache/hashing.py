"""The one hashing path: blob names are content hashes, so every check in hfcache goes through here.

A blob is named by sha256 (64 hex, LFS files) or by git's blob sha1 (40 hex) of `b"blob <size>\\0" + content`.
Files are read in bounded chunks into one reused buffer, so memory stays flat whatever the file size; hashlib
releases the GIL on large updates, so threads hash in parallel.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable
from typing import Literal, Protocol

HashKind = Literal["sha256", "git-sha1"]
CHUNK_SIZE = 4 * 1024 * 1024
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SHA1_RE = re.compile(r"[0-9a-f]{40}")


class _Hash(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...


def kind_of(name: str) -> HashKind | None:
    """The hash kind a blob name encodes, or None when the name is not a content hash."""
    if _SHA256_RE.fullmatch(name):
        return "sha256"
    if _SHA1_RE.fullmatch(name):
        return "git-sha1"
    return None


def new_hasher(kind: HashKind, size: int) -> _Hash:
    """A hasher primed for `kind`; git sha1 needs the size up front for its header."""
    if kind == "sha256":
        return hashlib.sha256()
    h = hashlib.sha1(usedforsecurity=False)
    h.update(b"blob %d\0" % size)
    return h


def hash_file(path: str | os.PathLike[str], kind: HashKind, chunk_size: int = CHUNK_SIZE) -> str:
    """Hash a file by streaming it, with git's header computed from the file's own size."""
    return hash_file_kinds(path, (kind,), chunk_size)[1][kind]


def hash_file_kinds(path: str | os.PathLike[str], kinds: Iterable[HashKind], chunk_size: int = CHUNK_SIZE,
                    on_bytes: Callable[[int], None] | None = None) -> tuple[int, dict[HashKind, str]]:
    """Bytes read and one digest per kind, from one pass over the file (verify may need two kinds of one blob).

    The buffer is never larger than the file, so hashing many small files costs no large allocations.
    """
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)  # a larger read-ahead when cold
        updates = [(k, new_hasher(k, size)) for k in dict.fromkeys(kinds)]
        buf = bytearray(max(1, min(chunk_size, size + 1)))
        view = memoryview(buf)
        read = 0
        while n := f.readinto(buf):
            for _, h in updates:
                h.update(view[:n])
            read += n
            if on_bytes is not None:
                on_bytes(n)
    return read, {k: h.hexdigest() for k, h in updates}


def hash_bytes(data: bytes, kind: HashKind) -> str:
    h = new_hasher(kind, len(data))
    h.update(data)
    return h.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file that stands in git for an LFS file; the Hub's tree `oid` is its git sha1."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class OnBytes(Protocol):
    def __call__(self, n: int, /) -> None: ...


def copy_hashed(src, dst, kind: HashKind, size: int, on_bytes: OnBytes | None = None,
                chunk_size: int = CHUNK_SIZE) -> str:
    """Copy exactly `size` bytes from `src` to `dst` (binary file objects; `dst` None only hashes).

    The digest is of the bytes actually copied, so the caller compares it with the name those bytes must have
    before making them visible. A short source raises `EOFError`.
    """
    h = new_hasher(kind, size)
    buf = bytearray(max(1, min(chunk_size, size)))
    view = memoryview(buf)
    left = size
    while left:
        n = src.readinto(view[:min(left, len(buf))])
        if not n:
            raise EOFError(f"source ended {left} bytes early")
        h.update(view[:n])
        if dst is not None:
            dst.write(view[:n])
        if on_bytes is not None:
            on_bytes(n)
        left -= n
    return h.hexdigest()


class HashingReader:
    """A read-only file wrapper that hashes what passes through it, for writers that pull (like `tarfile`)."""

    def __init__(self, raw, kind: HashKind, size: int, on_bytes: OnBytes | None = None) -> None:
        self._raw, self._on_bytes = raw, on_bytes
        self._hash = new_hasher(kind, size)
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._hash.update(data)
        self.count += len(data)
        if self._on_bytes is not None and data:
            self._on_bytes(len(data))
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
