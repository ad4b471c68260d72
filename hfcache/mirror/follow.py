"""A client's body streamed from a blob that is still being fetched (by this process or another).

The bytes are read from the growing file as the flight says they are there, in pieces of `READ_MIN` to `CHUNK`
(each piece is a thread hop, a copy and a send through uvicorn and nginx: few, big ones), and sent, all but the
last byte: that one is sent only once the bytes are proven right, by the follower's own hash of what it read
(another process fetches), or by this process's fetch having checked and published the very file read, each byte
written once.
When anything goes wrong (the fetch fails, the bytes hash wrong, the partial was restarted under the reader,
nothing moves for `stall` seconds) the body is cut short with `Aborted`, so no client ever holds a
complete-looking body of wrong bytes: it sees a short read and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable

from hfcache.cache.hashing import kind_of, new_hasher
from hfcache.mirror.flight import DONE, FAILED, RUNNING, Flight

CHUNK = 8 * 1024 * 1024  # the most read (and sent) at once
READ_MIN = 2 * 1024 * 1024  # while the fetch runs, a follower waits for this much before it reads: few, big sends
POLL = 0.05  # another process's progress is read from its record this often (no event crosses processes)
STALL = 300.0


class Aborted(Exception):
    """A body cut short on purpose; the server closes the connection without completing the answer."""


async def wait_until(flight: Flight, ready: Callable[[], bool], stall: float = STALL) -> None:
    """Until `ready()` or the flight ends; `Aborted` when nothing moves for `stall` seconds."""
    event = flight.subscribe()
    try:
        last, moved = flight.available(), time.monotonic()
        while flight.state == RUNNING and not ready():
            event.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), POLL)
            now_at = flight.available()
            if now_at != last:
                last, moved = now_at, time.monotonic()
            elif time.monotonic() - moved > stall:
                raise Aborted(f"no progress on {flight.filename} for {stall:.0f} s")
    finally:
        flight.unsubscribe(event)


def _read(fd: int, pos: int, n: int, hasher) -> bytes:
    data = os.pread(fd, n, pos)
    if hasher is not None:
        hasher.update(data)
    return data


def _same_file(fd: int, path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


async def follow(flight: Flight, stall: float = STALL) -> AsyncIterator[bytes]:
    """The blob's bytes as they land, the last one held back until the hash of all is right."""
    meta = flight.meta
    size, etag = meta.size, meta.etag
    kind = kind_of(etag)
    if kind is None:
        raise Aborted(f"blob name {etag!r} is no hash")
    # When this process writes the blob, its own check covers what followers read, provided every byte was
    # written once, into the file that was published (`Flight.clean`, same inode): no second hash. Following
    # another process, the follower hashes what it reads.
    hasher = None if flight.fetching else new_hasher(kind, size)
    event = flight.subscribe()
    fd, pos, sent, held = -1, 0, 0, b""
    last, moved = -1, time.monotonic()
    try:
        while pos < size:
            event.clear()
            if flight.state == FAILED:
                raise Aborted(f"fetching {flight.filename} failed: {flight.error}")
            avail = flight.available()
            if avail != last:
                last, moved = avail, time.monotonic()
            if avail - pos >= min(READ_MIN, size - pos) or (avail > pos and flight.state != RUNNING):
                if fd < 0:
                    with contextlib.suppress(FileNotFoundError):
                        fd = os.open(flight.source(), os.O_RDONLY)
                data = b""
                if fd >= 0:
                    data = await asyncio.to_thread(_read, fd, pos, min(CHUNK, avail - pos), hasher)
                if data:
                    pos += len(data)
                    cut = max(0, min(len(data), size - 1 - sent))  # the last byte waits for the hash
                    held += data[cut:]
                    if cut:
                        sent += cut
                        yield data[:cut]
                    continue
            if time.monotonic() - moved > stall:
                raise Aborted(f"no progress on {flight.filename} for {stall:.0f} s")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), POLL)
        if hasher is None:
            await wait_until(flight, lambda: False, stall)  # until the blob is checked and published, or not
            if flight.state != DONE or not flight.clean or fd < 0 or not _same_file(fd, flight.blob):
                raise Aborted(f"{flight.filename}: the fetch failed or started over under the reader")
        elif hasher.hexdigest() != etag:
            raise Aborted(f"{flight.filename}: the bytes read hash to {hasher.hexdigest()}, not {etag}")
        if held:
            yield held
    finally:
        flight.unsubscribe(event)
        if fd >= 0:
            os.close(fd)
