"""In-order hashing of a file whose parts arrive out of order (see `OrderedHash`)."""

from __future__ import annotations

import threading

from hfcache.cache.hashing import CHUNK_SIZE
from hfcache.cache.partfile import PartFile
from hfcache.errors import HfcacheError


class OrderedHash:
    """One hash over a file whose parts arrive out of order, fed strictly in order: a chunk that starts exactly
    where the hash stands is hashed at once, from memory (`offer`, by the thread that received it); a chunk
    that arrives ahead is left to `catch_up`, which hashes the written prefix from the file (the page cache)
    once the front reaches it. Each byte is hashed exactly once, in order, whichever thread gets there first."""

    def __init__(self, hasher) -> None:
        self.hasher = hasher
        self.pos = 0  # bytes hashed so far
        self.inline = 0  # of which hashed from memory, as received
        self._lock = threading.Lock()

    def offer(self, offset: int, data: bytes | memoryview) -> None:
        """Bytes just written at `offset`: hashed now if they continue the hash, else left for `catch_up`."""
        if offset != self.pos:
            return  # ahead of the front (or already read back): not ours to hash now
        with self._lock:
            if offset == self.pos:
                self.hasher.update(data)
                self.pos += len(data)
                self.inline += len(data)

    def catch_up(self, pf: PartFile, front: int) -> bool:
        """Hash one bounded chunk of [pos, front) from the file; False when there is nothing to hash."""
        with self._lock:
            start = self.pos
            if front <= start:
                return False
            end = min(front, start + CHUNK_SIZE)
            hash_range(pf, self.hasher, start, end)
            self.pos = end
            return True


def hash_range(pf: PartFile, hasher, start: int, end: int) -> None:
    """Hash bytes [start, end) of a file being written, in bounded chunks."""
    if end <= start:
        return
    buf = bytearray(min(CHUNK_SIZE, end - start))
    view = memoryview(buf)
    pos = start
    while pos < end:
        n = pf.read_into(view[: min(len(buf), end - pos)], pos)
        if n <= 0:
            raise HfcacheError(f"short read while hashing at byte {pos}")
        hasher.update(view[:n])
        pos += n
