"""A resumable partial blob: `blobs/<etag>.incomplete` plus a record of which byte ranges are really written.

The file is split into parts; each part has `done` bytes written contiguously from its start. The record
(`<etag>.incomplete.parts`, JSON, replaced atomically) is updated only after the bytes it claims were written,
so a process killed at any instant leaves a record that under-claims, never over-claims: a restart continues
each part from its recorded offset and never trusts bytes that were not fully written. The final hash check
still reads every byte. Only the holder of the blob's lock touches these files.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

RECORD_SUFFIX = ".incomplete.parts"
RESUMABLE_MIN_SIZE = 1024 * 1024  # smaller files restart from zero: a record would cost more than it saves
SAVE_EVERY_BYTES = 64 * 1024 * 1024  # a record rename per 64 MiB: resume loses at most that much
SAVE_EVERY_SECONDS = 0.5


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


class PartFile:
    """The `.incomplete` file of one blob and its progress record."""

    def __init__(self, blob: Path, etag: str, size: int) -> None:
        self.resumable = size >= RESUMABLE_MIN_SIZE
        # A small file gets a private name, as huggingface_hub's `<etag>.<8hex>.incomplete`. (Plain strings:
        # this runs once per file, and for small files path objects cost more than the file's transfer.)
        suffix = ".incomplete" if self.resumable else f".{os.urandom(4).hex()}.incomplete"
        self.path = f"{blob}{suffix}"
        self.record = Path(f"{blob}{RECORD_SUFFIX}")
        # ends in `.incomplete`, so a kill mid-write leaves what every cache tool knows as a leftover
        self._record_tmp = Path(f"{blob}.parts-tmp.incomplete")
        self.etag, self.size = etag, size
        self.parts: list[Part] = []
        self.fd = -1
        self._lock = threading.Lock()
        self._unsaved = 0
        self._saved_at = 0.0

    def open(self, part_size: int) -> int:
        """Open for writing; returns the bytes a previous run left that can be trusted (0 when starting over)."""
        self._drop_orphans()
        parts = self._load() if self.resumable else None
        if parts is None:
            if self.resumable:
                self.discard()
            parts = plan_parts(self.size, part_size)
        self.parts = parts
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        if self.resumable:
            os.ftruncate(self.fd, self.size)
        self._save()
        return sum(p.done for p in parts)

    def _drop_orphans(self) -> None:
        """A record write that a kill interrupted; the caller holds the blob's lock."""
        if self.resumable:
            self._record_tmp.unlink(missing_ok=True)

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
        os.pwrite(self.fd, data, part.offset)
        with self._lock:
            part.done += len(data)
            self._unsaved += len(data)
            if self._unsaved >= SAVE_EVERY_BYTES or time.monotonic() - self._saved_at > SAVE_EVERY_SECONDS:
                self._save()

    def checkpoint(self) -> None:
        with self._lock:
            self._save()

    def _save(self) -> None:
        if not self.resumable:
            return
        data = {"etag": self.etag, "size": self.size, "parts": [[p.start, p.end, p.done] for p in self.parts]}
        self._record_tmp.write_text(json.dumps(data))
        os.replace(self._record_tmp, self.record)
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
            self.checkpoint()
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if self.resumable:
            self.record.unlink(missing_ok=True)

    def publish(self, dest: Path) -> None:
        """Rename the finished file to its blob name, then drop the record."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        os.replace(self.path, dest)
        if self.resumable:
            self.record.unlink(missing_ok=True)

