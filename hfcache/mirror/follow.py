"""A client's body streamed from a blob that is still being fetched (by this process or another).

The bytes are read from the growing file as the flight says they are there, hashed on the way, and sent, all but
the last byte: that one is sent only once the hash of the whole is the blob's name. When anything goes wrong (the
fetch fails, the bytes hash wrong, the partial was restarted under the reader, nothing moves for `stall` seconds)
the body is cut short with `Aborted`, so no client ever holds a complete-looking body of wrong bytes: it sees a
short read and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable

from hfcache.cache.hashing import kind_of, new_hasher
from hfcache.mirror.flight import FAILED, RUNNING, Flight

CHUNK = 1024 * 1024
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
    hasher.update(data)
    return data


async def follow(flight: Flight, stall: float = STALL) -> AsyncIterator[bytes]:
    """The blob's bytes as they land, the last one held back until the hash of all is right."""
    meta = flight.meta
    size, etag = meta.size, meta.etag
    kind = kind_of(etag)
    if kind is None:
        raise Aborted(f"blob name {etag!r} is no hash")
    hasher = new_hasher(kind, size)
    event = flight.subscribe()
    fd, pos, sent, held = -1, 0, 0, b""
    moved = time.monotonic()
    try:
        while pos < size:
            event.clear()
            if flight.state == FAILED:
                raise Aborted(f"fetching {flight.filename} failed: {flight.error}")
            avail = flight.available()
            if avail > pos:
                if fd < 0:
                    with contextlib.suppress(FileNotFoundError):
                        fd = os.open(flight.source(), os.O_RDONLY)
                data = b""
                if fd >= 0:
                    data = await asyncio.to_thread(_read, fd, pos, min(CHUNK, avail - pos), hasher)
                if data:
                    pos += len(data)
                    moved = time.monotonic()
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
        if hasher.hexdigest() != etag:
            raise Aborted(f"{flight.filename}: the bytes read hash to {hasher.hexdigest()}, not {etag}")
        if held:
            yield held
    finally:
        flight.unsubscribe(event)
        if fd >= 0:
            os.close(fd)
