"""A resumable partial blob plus a record of which byte ranges are really written.

The names come from the layout (`hfcache.cache.paths.partial_paths`): `blobs/<etag>.hfcache.incomplete` and its
record `<etag>.hfcache.incomplete.parts`, names no huggingface_hub version reads or writes (0.x and 1.x append to
`<etag>.incomplete` and publish it unchecked, so a partial under that name would become a corrupt blob).

The file is split into parts; each part has `done` bytes written contiguously from its start. The record (JSON,
replaced atomically) is updated only after the bytes it claims were written, so a process killed at any instant
leaves a record that under-claims, never over-claims: a restart continues each part from its recorded offset and
never trusts bytes that were not fully written. The final hash check still reads every byte. Only the holder of
the blob's lock touches these files.

Where `os.pwrite`/`os.preadv` are missing (Windows), positioned I/O is a seek and a read or write under one lock.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hfcache.cache import durable
from hfcache.cache.paths import PartialPaths, legacy_partial_paths

RESUMABLE_MIN_SIZE = 1024 * 1024  # smaller files restart from zero: a record would cost more than it saves
SAVE_EVERY_BYTES = 64 * 1024 * 1024  # a record rename per 64 MiB: resume loses at most that much
SAVE_EVERY_SECONDS = 0.5
FLUSH_EVERY_BYTES = 32 * 1024 * 1024  # a large file's bytes start for the disk every 32 MiB (see `_Flusher`)
NO_SPACE = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in NO_SPACE


@dataclass
class Part:
    start: int
    end: int  # exclusive
    done: int = 0

    @property
    def offset(self) -> int:
        return self.start + self.done

    @property
    def complete(self) -> bool:
        return self.start + self.done >= self.end


def plan_parts(size: int, part_size: int) -> list[Part]:
    if size <= 0:
        return [Part(0, 0)]
    return [Part(s, min(size, s + part_size)) for s in range(0, size, part_size)]


def pwrite(fd: int, data: bytes | memoryview, offset: int, lock: threading.Lock) -> None:
    """Write all of `data` at `offset`; `lock` serialises the seek fallback (the file position is shared)."""
    view = memoryview(data)
    if hasattr(os, "pwrite"):
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
        return
    with lock:
        os.lseek(fd, offset, os.SEEK_SET)
        while view:
            n = os.write(fd, view)
            view = view[n:]


def pread_into(fd: int, buf: memoryview, offset: int, lock: threading.Lock) -> int:
    """Read up to len(buf) bytes at `offset` into `buf`; returns how many (0 at the end of the file)."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [buf], offset)
    with lock:
        os.lseek(fd, offset, os.SEEK_SET)
        data = os.read(fd, len(buf))
    buf[: len(data)] = data
    return len(data)


_SYNC_FILE_RANGE_WAIT_BEFORE, _SYNC_FILE_RANGE_WRITE = 1, 2
_sync_file_range = None  # libc's, once looked up; False where there is none


def start_writeback(fd: int) -> bool:
    """Start writing a file's dirty pages to the device, first waiting for the writeback started last time (so
    at most one round is in flight), without waiting for the new one and without the file's inode lock:
    `fdatasync` holds that lock (ext4, no journal) while it waits, and every `pwrite` of the download threads
    queued behind it. No durability comes from this (no metadata, no cache flush): the fsync before publishing
    still makes the file durable, and finds little left to write. False where `sync_file_range` is missing."""
    global _sync_file_range
    if _sync_file_range is None:
        _sync_file_range = False
        if sys.platform.startswith("linux"):
            import ctypes

            try:
                fn = ctypes.CDLL(None, use_errno=True).sync_file_range
            except (OSError, AttributeError):
                fn = None
            if fn is not None:
                fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
                fn.restype = ctypes.c_int
                _sync_file_range = fn
    if _sync_file_range is False:
        return False
    return _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WRITE) == 0


class _Flusher:
    """Starts a large partial's bytes for the device while the download runs (a thread; `start_writeback`, or
    `fdatasync` where that is missing), so the fsync before publishing finds only the tail left: without it,
    publishing a 1 GiB file waited ~1.5 s for the whole file to reach the disk."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="hfcache-flush")
        self._thread.start()

    def poke(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        sync = getattr(os, "fdatasync", os.fsync)
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                if not start_writeback(self.fd):
                    sync(self.fd)
            except OSError:
                return  # the final fsync reports what matters

    def stop(self) -> None:
        """Before the descriptor is closed (it could be reused for another file)."""
        self._stopping = True
        self._wake.set()
        self._thread.join()


class PartFile:
    """The partial file of one blob and its progress record."""

    def __init__(self, paths: PartialPaths, etag: str, size: int) -> None:
        self.resumable = size >= RESUMABLE_MIN_SIZE
        # A small file gets a process-unique name, as huggingface_hub 2.x does. (Plain strings: this runs once per
        # file, and for small files path objects cost more than the file's transfer.)
        self.path = str(paths.path if self.resumable else paths.private())
        self.record = paths.record
        self._record_tmp = paths.record_tmp
        self._blob = paths.blob
        self.etag, self.size = etag, size
        self.parts: list[Part] = []
        self.fd = -1
        self._lock = threading.Lock()  # the parts' counters and the record; the file position in the fallback
        self._unsaved = 0
        self._saved_at = 0.0
        self._flusher: _Flusher | None = None
        self._unflushed = 0

    def open(self, part_size: int) -> int:
        """Open for writing; returns the bytes a previous run left that can be trusted (0 when starting over)."""
        parts = None
        if self.resumable:
            self._drop_orphans()
            parts = self._load()
            if parts is None:
                self.discard()
        if parts is None:
            parts = plan_parts(self.size, part_size)
        self.parts = parts
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _O_BINARY, 0o666)
        if self.resumable:
            os.ftruncate(self.fd, self.size)
        if durable.ENABLED and self.size >= 2 * FLUSH_EVERY_BYTES:
            self._flusher = _Flusher(self.fd)
        self._save()
        return sum(p.done for p in parts)

    def trusted(self) -> int:
        return sum(p.done for p in self.parts)

    def _drop_orphans(self) -> None:
        """A record write that a kill interrupted; and the partial an older hfcache left under the name
        huggingface_hub 0.x/1.x resume from, taken over (with its record) so they never see it. The caller holds
        the blob's lock."""
        self._record_tmp.unlink(missing_ok=True)
        self.adopt_legacy()

    def adopt_legacy(self) -> None:
        """Rename an older hfcache's `<etag>.incomplete` (known by its `.parts` record) to our names, so resuming
        still works and huggingface_hub 0.x/1.x never append to it. The caller holds the blob's lock."""
        legacy, legacy_record = legacy_partial_paths(self._blob)
        if legacy_record.exists():
            with contextlib.suppress(FileNotFoundError):
                os.replace(legacy, self.path)
                os.replace(legacy_record, self.record)
            legacy_record.unlink(missing_ok=True)

    def _load(self) -> list[Part] | None:
        try:
            data = json.loads(self.record.read_text())
            if data["etag"] != self.etag or data["size"] != self.size or os.stat(self.path).st_size != self.size:
                return None
            parts = [Part(int(s), int(e), int(d)) for s, e, d in data["parts"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        expected = 0
        for p in parts:  # the parts must tile [0, size) exactly
            if p.start != expected or not 0 <= p.done <= p.end - p.start:
                return None
            expected = p.end
        return parts if expected == self.size or (self.size == 0 and parts) else None

    def write(self, part: Part, data: bytes | memoryview) -> None:
        """Write at the part's offset, then count it (so the record never runs ahead of the data)."""
        if part.offset + len(data) > part.end:
            raise ValueError("write past the end of a part")
        pwrite(self.fd, data, part.offset, self._lock)
        with self._lock:
            part.done += len(data)
            self._unsaved += len(data)
            self._unflushed += len(data)
            if self._flusher is not None and self._unflushed >= FLUSH_EVERY_BYTES:
                self._unflushed = 0
                self._flusher.poke()
            if self._unsaved >= SAVE_EVERY_BYTES or time.monotonic() - self._saved_at > SAVE_EVERY_SECONDS:
                self._save()

    def read_into(self, buf: memoryview, offset: int) -> int:
        return pread_into(self.fd, buf, offset, self._lock)

    def checkpoint(self) -> None:
        with self._lock:
            self._save()

    def _save(self) -> None:
        """Replace the record. Written bytes are not fsynced first: after a power loss (not a kill) the
        record may claim bytes the file lost, which the final hash check catches (then the blob is fetched again)."""
        if not self.resumable:
            return
        data = {"etag": self.etag, "size": self.size, "parts": [[p.start, p.end, p.done] for p in self.parts]}
        try:
            self._record_tmp.write_text(json.dumps(data))
            os.replace(self._record_tmp, self.record)
        except OSError:
            self._record_tmp.unlink(missing_ok=True)  # a full disk leaves no empty temp file
            raise
        self._unsaved = 0
        self._saved_at = time.monotonic()

    def frontier(self) -> int:
        """End of the contiguous prefix of written bytes: what can be hashed now."""
        with self._lock:
            end = 0
            for p in self.parts:
                end = p.start + p.done
                if not p.complete:
                    break
            return end

    def close(self) -> None:
        """Close, recording progress first so that an orderly failure loses nothing."""
        if self.fd >= 0:
            try:
                self.checkpoint()
            finally:
                self._close_fd()

    def _close_fd(self) -> None:
        if self._flusher is not None:
            self._flusher.stop()
            self._flusher = None
        os.close(self.fd)
        self.fd = -1

    def discard(self) -> None:
        """Remove the partial, its record and any temp record (a failed or corrupt download, or a full disk)."""
        if self.fd >= 0:
            self._close_fd()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if self.resumable:
            self.record.unlink(missing_ok=True)
            self._record_tmp.unlink(missing_ok=True)

    def publish(self, dest: Path) -> None:
        """Make the finished file's bytes durable, rename it to its blob name, then drop the record. (The
        folder's own fsync is the caller's, once per run: see `Fetcher`.)"""
        if self.fd >= 0:
            try:
                durable.fsync_fd(self.fd)
            finally:
                self._close_fd()
        else:
            durable.fsync_file(self.path)
        os.replace(self.path, dest)
        if self.resumable:
            self.record.unlink(missing_ok=True)


# -- followers (mirror) --------------------------------------------------------------------------------------------
def written_prefix(paths: PartialPaths, etag: str, size: int) -> int:
    """How many bytes from the start of a partial its record vouches for (0 when there is none, or it is unusable):
    a reader may stream them while the writer, another process perhaps, goes on, since the record never runs ahead
    of the data. (Only resumable partials have a shared name and a record; a small file's partial is private.)"""
    pf = PartFile(paths, etag, size)
    parts = pf._load() if pf.resumable else None
    end = 0
    for p in parts or ():
        end = p.start + p.done
        if not p.complete:
            break
    return end
