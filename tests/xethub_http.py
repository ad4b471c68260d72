"""HTTP plumbing of tests/xethub.py: a threaded http.server handler, `Reply`, Range parsing, file and multi-range
bodies (with the faults that cut, stall or corrupt them), signatures and the two kinds of auth."""

from __future__ import annotations

import json
import re
import secrets
import socket
import struct
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.xethub import XetHub

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
MAX_BODY = 256 * 1024 * 1024  # a xorb is at most 64 MiB; a shard far less
PAGE = 1000
BLOCK = 1024 * 1024
HEX64 = re.compile(r"[0-9a-f]{64}")
RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class Reply(Exception):
    """Raised by a route to answer at once."""

    def __init__(self, status: int, body: bytes | dict | list = b"", headers: dict | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """An inclusive (start, end) for one `bytes=` range, None for none; Reply(416) when unsatisfiable."""
    if not header:
        return None
    m = RANGE.fullmatch(header.strip())
    if not m or (not m[1] and not m[2]):
        raise Reply(416, headers={"Content-Range": f"bytes */{size}"})
    if not m[1]:
        start, end = max(0, size - int(m[2])), size - 1
    else:
        start, end = int(m[1]), min(int(m[2]), size - 1) if m[2] else size - 1
    if start >= size or end < start:
        raise Reply(416, headers={"Content-Range": f"bytes */{size}"})
    return start, end


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle keep-alive connection ends its thread
    server_version = "xethub/1"

    def setup(self) -> None:
        super().setup()
        self.server.open_sockets.add(self.connection)

    def finish(self) -> None:
        self.server.open_sockets.discard(self.connection)
        super().finish()

    def log_message(self, *args) -> None:  # quiet
        pass

    on_status = None  # set per request by the routes: records the request before its status line goes out

    def send_response(self, code: int, message: str | None = None) -> None:
        # Record first: a client that has read the answer must find the request in the stats already.
        if self.on_status is not None:
            self.on_status(code)
        super().send_response(code, message)

    def do_GET(self) -> None:
        self.server.routes.handle(self)

    do_HEAD = do_POST = do_PUT = do_GET

    def body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            raise Reply(413, b"too large")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline(100).split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline(100)
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(10)
                if len(out) > MAX_BODY:
                    raise Reply(413, b"too large")
        return self.rfile.read(n) if n else b""


class BaseRoutes:
    def __init__(self, hub: XetHub) -> None:
        self.hub = hub

    def send(self, h: Handler, status: int, body: bytes | dict | list = b"", headers: dict | None = None) -> None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD" and body:
            h.wfile.write(body)

    def user_auth(self, h: Handler) -> None:
        if self.hub.token and h.headers.get("Authorization") != f"Bearer {self.hub.token}":
            raise Reply(401, {"error": "Invalid credentials in Authorization header"},
                        {"X-Error-Message": "Invalid credentials in Authorization header"})

    def cas_auth(self, h: Handler) -> None:
        token = (h.headers.get("Authorization") or "").removeprefix("Bearer ")
        with self.hub.lock:
            exp = self.hub.cas_tokens.get(token)
        if exp is None or exp < time.time():
            raise Reply(401, {"error": "invalid or expired CAS token"})

    def count(self, stats, counter: str, n: int) -> None:
        """Add `n` bytes to a counter of `stats` (the request's own: a `stats.reset()` meanwhile leaves the new one
        alone). Bytes are counted before they go (and taken back if they could not): a test reading the counter
        as soon as its client has the bytes must find them counted."""
        with self.hub.lock:
            setattr(stats, counter, getattr(stats, counter) + n)

    def write_counted(self, h: Handler, data: bytes, stats, counter: str, n: int) -> None:
        """Write `data`, counted as `n` bytes (`count`'s rule: before it goes, taken back if it could not)."""
        self.count(stats, counter, n)
        try:
            h.wfile.write(data)
        except BaseException:
            self.count(stats, counter, -n)
            raise

    def check_signature(self, kind: str, name: str, query: dict[str, str]) -> None:
        try:
            exp = int(query.get("exp", "0"))
        except ValueError:
            exp = 0
        good = self.hub.sign(kind, name, exp) == query.get("sig")
        if not good or exp < time.time():
            raise Reply(403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")

    def serve_file(self, h: Handler, path, size: int, headers: dict, counter: str, fault: str | None = None) -> int:
        stats = self.hub.stats
        span = parse_range(h.headers.get("Range"), size)
        start, end = span if span else (0, size - 1)
        status = 206 if span else 200
        length = max(0, end - start + 1)
        headers = {**headers, "Content-Length": str(length), "Content-Type": "application/octet-stream"}
        if span:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if h.command == "HEAD":
            return status
        sent, cut = 0, length // 2 if fault in ("reset", "stall") else None
        with open(path, "rb") as f:
            if fault is None:  # the common case, zero-copy: the emulator must not be what a benchmark measures
                while sent < length:
                    want, n = min(8 * BLOCK, length - sent), 0
                    self.count(stats, counter, want)
                    try:
                        n = h.connection.sendfile(f, start + sent, want)
                    finally:
                        if n < want:
                            self.count(stats, counter, n - want)
                    if n == 0:
                        break
                    sent += n
                return status
            f.seek(start)
            while sent < length:
                block = f.read(min(BLOCK, length - sent, (cut - sent) if cut is not None else BLOCK))
                if not block:
                    break
                if fault == "corrupt" and sent <= length // 2 < sent + len(block):
                    i = length // 2 - sent
                    block = block[:i] + bytes([block[i] ^ 0xFF]) + block[i + 1:]
                self.write_counted(h, block, stats, counter, len(block))
                sent += len(block)
                if fault == "stall" and sent >= cut:
                    h.wfile.flush()
                    faults = self.hub.faults
                    faults.stalled.set()
                    faults.release.wait(120)
                    cut = None
                elif cut is not None and sent >= cut:
                    h.wfile.flush()
                    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    h.connection.close()  # RST: the client sees a reset mid-body
                    raise ConnectionResetError("fault: reset mid-xorb")
        return status

    def serve_ranges(self, h: Handler, path, spec: str, fault: str | None) -> int:
        """A multi-range GET (v2 fetches): a `multipart/byteranges` answer (RFC 7233), at most 256 parts."""
        stats = self.hub.stats
        size = path.stat().st_size
        with self.hub.lock:
            self.hub.stats.multirange_gets += 1
        specs = spec.removeprefix("bytes=").split(",")
        if not spec.startswith("bytes=") or len(specs) > 256:
            raise Reply(416, headers={"Content-Range": f"bytes */{size}"})
        spans = [parse_range(f"bytes={p.strip()}", size) for p in specs]
        boundary = "xethub" + secrets.token_hex(8)
        body, middle = bytearray(), None
        with open(path, "rb") as f:
            for a, b in spans:
                f.seek(a)
                data = f.read(b - a + 1)
                body += (f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                         f"Content-Range: bytes {a}-{b}/{size}\r\n\r\n").encode()
                middle = middle if middle is not None else len(body) + len(data) // 2
                body += data + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        if fault == "corrupt":
            body[middle] ^= 0xFF
        h.send_response(206)
        h.send_header("Content-Type", f"multipart/byteranges; boundary={boundary}")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        out = body[:len(body) // 2] if fault == "reset" else body
        payload = sum(b - a + 1 for a, b in spans) // (2 if fault == "reset" else 1)  # range bytes, not framing
        self.write_counted(h, out, stats, "xorb_bytes", payload)
        if fault == "reset":
            h.wfile.flush()
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
            raise ConnectionResetError("fault: reset mid-xorb")
        return 206
