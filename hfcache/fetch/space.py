"""A full disk, said in one line: a file that cannot fit is refused before any of it is written (huggingface_hub
only warns, then fails midway), and a full disk met anywhere else (a listing, a ref, a link, a lock file)
becomes the same `DiskFull` line, naming the file, what it needs and what is free where."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from hfcache.cache.partfile import RESUMABLE_MIN_SIZE, is_disk_full
from hfcache.errors import DiskFull


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def space_refusal(folder: Path, needed: int, name: str) -> DiskFull | None:
    """A file that cannot fit is refused before any of it is written (huggingface_hub only warns, then fails
    midway)."""
    if needed < RESUMABLE_MIN_SIZE:
        return None  # not worth a system call: a small file that does not fit fails on its first write instead
    free = _free_bytes(folder)
    return disk_full(folder, needed, name, free) if free is not None and needed > free else None


def disk_full(folder: Path, needed: int | None, name: str, free: int | None = None) -> DiskFull:
    """The one line a full disk gets: which file, how much it needs, how much is free and where."""
    free = _free_bytes(folder) if free is None else free
    have = "unknown" if free is None else f"{free:,}"
    needs = "" if needed is None else f"it needs {needed:,} bytes, "
    return DiskFull(f"no space left for {name}: {needs}{have} bytes free in {folder}")


@contextlib.contextmanager
def no_space(folder: Path, needed: int | None, name: str) -> Iterator[None]:
    """Turn a full disk met anywhere inside (a listing, a ref, a link, a lock file) into `DiskFull`."""
    try:
        yield
    except OSError as e:
        if not is_disk_full(e):
            raise
        raise disk_full(folder, needed, name) from None
