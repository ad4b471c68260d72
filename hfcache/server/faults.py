"""Misbehaviour on purpose, per request, so tests can prove the client survives a bad network and bad servers.

A `Fault` matches requests by path substring and is used up after `times` requests (-1: forever). Body faults
serve the real bytes (honouring `Range`) until byte `after` of the response, then misbehave.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

FaultKind = Literal["reset", "short", "corrupt", "stall", "slow", "429", "500", "503", "expired"]
BODY_FAULTS = {"reset", "short", "corrupt", "stall", "slow"}
CHUNK = 64 * 1024


@dataclass
class Fault:
    kind: FaultKind
    match: str = ""  # substring of the request path (e.g. a file name, or "cdn/")
    times: int = 1
    after: int | None = None  # body byte where it misbehaves (default: half the response)
    seconds: float = 1.0  # stall length, or Retry-After for 429
    release: threading.Event | None = None  # ends a stall early when set: a test holds a transfer until an event
    rate: int = 1_000_000  # bytes per second, for "slow"


class FaultPlan:
    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, path: str, kinds: set[str] | None = None) -> Fault | None:
        """The first matching fault, with one use consumed."""
        return self._take(path, kinds, api=False)

    def take_api(self, path: str, kinds: set[str] | None = None) -> Fault | None:
        """For an API request: only faults whose `match` names an API path (starts with `api/`), so that a
        file-name match never turns metadata calls faulty."""
        return self._take(path, kinds, api=True)

    def _take(self, path: str, kinds: set[str] | None, api: bool) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if api and not f.match.startswith("api/"):
                    continue
                if f.match in path and (kinds is None or f.kind in kinds) and f.times != 0:
                    if f.times > 0:
                        f.times -= 1
                    return f
        return None


async def faulty_body(local: Path, start: int, length: int, fault: Fault) -> AsyncIterator[bytes]:
    """The bytes [start, start+length) of a file, misbehaving as `fault` says."""
    after = fault.after if fault.after is not None else length // 2
    sent = 0
    with open(local, "rb") as f:
        f.seek(start)
        while sent < length:
            n = min(CHUNK, length - sent)
            if fault.kind != "slow" and sent < after < sent + n:
                n = after - sent  # stop exactly at the fault point
            if sent == after and fault.kind in ("reset", "short"):
                if fault.kind == "reset":
                    raise ConnectionResetError("fault injection: connection reset mid-body")
                return
            if sent == after and fault.kind == "stall":
                if fault.release is not None:
                    await asyncio.to_thread(fault.release.wait, fault.seconds)
                else:
                    await asyncio.sleep(fault.seconds)
            data = f.read(n)
            if fault.kind == "corrupt" and sent <= after < sent + len(data):
                i = after - sent
                data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
            if fault.kind == "slow":
                await asyncio.sleep(len(data) / fault.rate)
            sent += len(data)
            yield data
