"""One line per request: client, method, path, status, body bytes sent. A user counting fetches reads these.

The path is logged as the client sent it (percent-encoded, so a hostile name cannot forge lines), without the
query string: CDN links carry a signature there, and nothing that grants access is ever logged (nor headers).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LINE_PATH_MAX = 1000
QUEUE_LINES = 10_000


def _printable(raw: bytes) -> str:
    text = raw.decode("latin-1")
    text = "".join(c if "!" <= c <= "~" else f"%{ord(c):02X}" for c in text)
    return text if len(text) <= LINE_PATH_MAX else text[:LINE_PATH_MAX] + "..."


def format_line(client: str, method: str, path: str, status: int, sent: int, note: str = "") -> str:
    return f"{client} {method} {path} {status} {sent}" + (f" {note}" if note else "")


class AccessLog:
    """ASGI middleware: counts the body bytes handed to the server and writes one line when the answer ends."""

    def __init__(self, app: ASGIApp, sink: Callable[[str], None]) -> None:
        self.app = app
        self.sink = sink

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status, sent, logged = 0, 0, False

        def log(note: str = "") -> None:
            nonlocal logged
            logged = True
            client = scope.get("client")
            raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
            self.sink(format_line(client[0] if client else "-", scope["method"], _printable(raw.split(b"?")[0]),
                                  status or 500, sent, note))

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
                if not message.get("more_body", False):
                    log()  # before the last bytes leave: a client holding the answer can already read the line
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if not logged:
                log("aborted")


class LineWriter:
    """A sink that writes lines to `stream` from a thread: a reader that stalls (a pipe nobody reads, a paused
    terminal) never blocks the server. Past `limit` waiting lines, lines are dropped and the drop is reported."""

    def __init__(self, stream: TextIO, prefix: str = "", limit: int = QUEUE_LINES) -> None:
        self.stream = stream
        self.prefix = prefix
        self.dropped = 0
        self._lock = threading.Lock()  # `dropped` is counted by the server's threads and reset by the writer's
        self._queue: queue.Queue[str] = queue.Queue(limit)
        threading.Thread(target=self._run, daemon=True, name="hfcache-access-log").start()

    def __call__(self, line: str) -> None:
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            with self._lock:
                self.dropped += 1

    def wait_drained(self, timeout: float) -> bool:
        """Whether every line queued so far has been handed to the stream within `timeout` (for shutdown, tests)."""
        q = self._queue
        with q.all_tasks_done:
            return q.all_tasks_done.wait_for(lambda: not q.unfinished_tasks, timeout)

    def _run(self) -> None:
        while True:
            line = self._queue.get()
            with self._lock:
                dropped, self.dropped = self.dropped, 0
            text = f"{self.prefix}{line}\n"
            if dropped:
                text = f"{self.prefix}{dropped} log lines dropped (the reader was too slow)\n" + text
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):
                pass  # stream closed: serving goes on
            finally:
                self._queue.task_done()
