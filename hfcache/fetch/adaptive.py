"""How many requests to keep in flight, from how long the server takes to answer.

A request in flight costs CPU (a thread's Python work, a socket); it pays only while waiting for an answer.
On loopback answers take well under a millisecond, and more streams only fight over the GIL and the cores the
server needs too; over a link where each answer takes 20-100 ms, the streams needed to keep it busy grow with
that wait (Little's law: in flight = rate x latency). The wait measured is the shortest of the recent answers
(time to the response headers): queueing at a busy server lengthens the others, and must not make us add
streams that would queue more.
"""

from __future__ import annotations

import threading
from collections import deque

REFERENCE = 0.005  # seconds: every 5 ms of answer latency adds `lo` more streams


def streams(latency: float, lo: int, hi: int) -> int:
    """Streams for answers that take `latency` seconds: `lo` on loopback, growing with the latency, at most `hi`."""
    return max(lo, min(hi, int(lo * (1 + max(0.0, latency) / REFERENCE))))


class LatencyMeter:
    """The shortest of the last `window` answer latencies (thread-safe; None before the first answer)."""

    def __init__(self, window: int = 32) -> None:
        self._recent: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._recent.append(seconds)

    def latency(self) -> float | None:
        with self._lock:
            return min(self._recent) if self._recent else None


class Gate:
    """At most `limit` holders at once; the limit may change at any time (holders above a lowered limit finish,
    newcomers wait)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.active = 0
        self._cond = threading.Condition()

    def set_limit(self, limit: int) -> None:
        with self._cond:
            if limit != self.limit:
                self.limit = max(1, limit)
                self._cond.notify_all()

    def try_enter(self) -> bool:
        with self._cond:
            if self.active >= self.limit:
                return False
            self.active += 1
            return True

    def enter(self, timeout: float = 1.0) -> None:
        """Wait for a place (re-checking every `timeout` s: a bounded wait, never a lost wake-up)."""
        with self._cond:
            while self.active >= self.limit:
                self._cond.wait(timeout)
            self.active += 1

    def leave(self) -> None:
        with self._cond:
            self.active = max(0, self.active - 1)
            self._cond.notify()
