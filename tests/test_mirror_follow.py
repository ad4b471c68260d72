"""`follow`: a follower of this process's fetch reads the growing file in few, large pieces (woken once per
`NOTIFY_STEP` written, reading at least `READ_MIN`), and still holds the last byte until the fetch is done."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path

from hfcache.cache.meta import FileMeta
from hfcache.mirror import flight as fl
from hfcache.mirror.follow import READ_MIN, follow
from tests.conftest import det_bytes


class _Writer(fl.Flight):
    """A flight whose "upstream" is a thread writing `data` into the partial in network-sized pieces."""

    def __init__(self, tmp: Path, data: bytes) -> None:
        self.meta = FileMeta(size=len(data), blob_id="0" * 40, lfs_sha256=hashlib.sha256(data).hexdigest())
        self.filename, self.data = "big.bin", data
        self.blob, self.partial = tmp / "blob", tmp / "blob.incomplete"
        self.state, self.error, self.fetching, self.fetched = fl.RUNNING, None, True, True
        self._base = self._advanced = self._told = 0
        self._waiters, self._lock = set(), threading.Lock()
        self.wrote_half = threading.Event()
        self.go_on = threading.Event()

    def source(self) -> Path:
        return self.blob if self.state == fl.DONE else self.partial

    def available(self) -> int:
        return self.meta.size if self.state == fl.DONE else self._advanced

    def run(self) -> None:
        with open(self.partial, "wb", buffering=0) as f:
            for i in range(0, len(self.data), 64 * 1024):
                if i == len(self.data) // 2:
                    self.wrote_half.set()
                    self.go_on.wait(60)
                n = f.write(self.data[i:i + 64 * 1024])
                self._bytes(n)
        self.partial.rename(self.blob)
        self.state = fl.DONE
        self._notify()


def test_a_follower_of_this_process_reads_big_pieces_and_holds_the_last_byte_until_done(tmp_path):
    data = det_bytes(24 * 1024 * 1024 + 12345, 3)
    flight = _Writer(tmp_path, data)
    pieces: list[bytes] = []

    async def main() -> None:
        writer = threading.Thread(target=flight.run, daemon=True)
        writer.start()
        async for piece in follow(flight, stall=60):
            pieces.append(piece)
            if flight.wrote_half.is_set() and not flight.go_on.is_set():
                assert sum(map(len, pieces)) < len(data)  # still running: the end is not sent
                flight.go_on.set()
        writer.join(60)

    asyncio.run(asyncio.wait_for(main(), 120))
    assert b"".join(pieces) == data
    assert pieces[-1] == data[-1:]  # the held last byte, sent once the fetch was done
    # written 64 KiB at a time, read in pieces of at least READ_MIN (but the tail before the held byte)
    assert all(len(p) >= READ_MIN for p in pieces[:-2]), [len(p) for p in pieces]
