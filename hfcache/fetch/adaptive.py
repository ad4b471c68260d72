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
from collections.abc import Callable, Sequence
from typing import TypeVar

from hfcache import waits

REFERENCE = 0.005  # seconds: every 5 ms of answer latency adds `lo` more streams
T = TypeVar("T")
R = TypeVar("R")


def streams(latency: float, lo: int, hi: int, grow: int | None = None) -> int:
    """Streams for answers that take `latency` seconds: `lo` on loopback, `grow` (default `lo`) more for every
    `REFERENCE` of latency, at most `hi`."""
    grow = lo if grow is None else grow
    return max(lo, min(hi, int(lo + grow * max(0.0, latency) / REFERENCE)))


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


def taker(items: Sequence[T]) -> Callable[[], T | None]:
    """`items` one at a time, for `run_elastic` (thread-safe; None at the end)."""
    it = iter(items)
    lock = threading.Lock()

    def take() -> T | None:
        with lock:
            return next(it, None)

    return take


def run_elastic(work: Callable[[T], R], take: Callable[[], T | None], start: int, most: int,
                wanted: Callable[[], int]) -> list[tuple[T, R]]:
    """`work` over what `take` hands out (thread-safe, None when there is no more; it may wait for more), on
    threads whose number follows `wanted()`, asked after each item, between 1 and `most`; returns each item with
    its result, in the order they finished. A pool of `most` threads held back by a gate would keep every idle
    thread waking on each hand-off (on loopback ~200 futex calls per small file); here only the threads wanted
    exist: one starts when more are wanted, one leaves when fewer are. On the first error (or Ctrl-C in the
    caller) no new item starts; items in flight finish, and the error is raised at once."""
    return _Elastic(work, take, most, wanted).run(start)


class _Elastic:
    def __init__(self, work, take, most: int, wanted) -> None:
        self.work, self.take, self.most, self.wanted = work, take, max(1, most), wanted
        self.results: list = []
        self.threads = 0
        self.want = 1
        self.drained = False  # `take` said there is no more
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.done = threading.Event()

    def run(self, start: int) -> list:
        with self.lock:
            self.want = min(self.most, max(1, start))
            for _ in range(self.want):
                if not self._spawn():
                    break
        try:
            waits.event(self.done)
        except BaseException as e:  # Ctrl-C: stop handing out items
            with self.lock:
                self.error = self.error or e
            raise
        if self.error is not None:
            raise self.error
        return self.results

    def _spawn(self) -> bool:  # under the lock
        self.threads += 1
        try:
            threading.Thread(target=self._loop, name="hfcache-fetch").start()
        except RuntimeError:  # no more threads to be had (a process limit): go on with those there are
            self.threads -= 1
            if self.threads == 0:
                raise
            self.most = self.threads
            return False
        return True

    def _leave(self) -> None:  # under the lock
        self.threads -= 1
        if self.threads == 0:
            self.done.set()

    def _loop(self) -> None:
        while True:
            with self.lock:
                if self.error is not None or self.drained or self.threads > self.want:
                    self._leave()
                    return
            try:
                item = self.take()
                if item is None or self.error is not None:  # (`take` may have waited while another failed)
                    with self.lock:
                        self.drained = self.drained or item is None
                        self._leave()
                    return
                result = self.work(item)
                want = min(self.most, max(1, self.wanted()))
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                with self.lock:
                    self.error = self.error or e
                    self.done.set()
                    self._leave()
                return
            with self.lock:
                self.results.append((item, result))
                self.want = want
                while self.threads < want and not self.drained and self.error is None:
                    if not self._spawn():
                        break
