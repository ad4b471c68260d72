"""Waits a Ctrl-C can always end.

CPython runs a signal's Python handler (KeyboardInterrupt) in the main thread only, but the kernel may deliver
SIGINT to any thread: to another one whenever the main thread has the signal blocked for a moment (glibc blocks
every signal in a thread while it creates another) or has one pending already. The C-level handler then only
flags the signal, and a main thread blocked in an untimed lock wait (`Event.wait()`, `Thread.join()`,
`Future.result()`) is never woken to see the flag: the Ctrl-C is lost, and a fan-out snapshot whose large file
never ends sat there for ever (8 of 86 tries, interrupting as its workers started). Waiting in slices lets the main
thread notice the flag within `SLICE` seconds; a ready result costs nothing extra.
"""

from __future__ import annotations

import subprocess
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

SLICE = 0.25  # seconds: how late a Ctrl-C delivered to another thread may be seen

T = TypeVar("T")

__all__ = ["SLICE", "event", "join", "process", "result"]


def event(ev: threading.Event) -> None:
    while not ev.wait(SLICE):
        pass


def join(thread: threading.Thread) -> None:
    while thread.is_alive():
        thread.join(SLICE)


def result(future: Future[T]) -> T:
    while True:
        try:
            return future.result(SLICE)
        except FutureTimeout:  # the slice ran out, or the work raised a TimeoutError of its own (3.11: one class)
            if future.done():
                return future.result()


def process(proc: subprocess.Popen) -> int:
    while True:
        try:
            return proc.wait(SLICE)
        except subprocess.TimeoutExpired:
            continue
