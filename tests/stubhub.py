"""A scriptable HTTP server for API tests: each request is recorded, then answered by a function of it.

`StubHub(answer)` serves on 127.0.0.1 (HTTP/1.1, kept alive); `answer(req)` returns (status, headers, body);
`hub.log` holds every `Req` in arrival order. Used to compare the requests huggingface_hub and hfcache send
and to make a server answer what a test needs (an error code, a broken body, an endless listing).
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Req:
    method: str
    target: str  # path and query, as sent
    headers: dict[str, str]  # lower-cased names
    body: bytes
    host: str  # the Host header: which name the client used (127.0.0.1 or localhost)


Reply = tuple[int, dict[str, str], bytes | str | object]
Answer = Callable[[Req], Reply]


def json_reply(obj: object, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode()


class BurstServer(http.server.ThreadingHTTPServer):
    """A threaded test server for clients that connect in a burst (hf_xet opens dozens at once): socketserver's
    listen backlog of 5 overflows while a loaded machine's accept thread lags, and each handshake dropped then
    costs its client a retransmission (1 s, 3 s...)."""

    request_queue_size = 512
    daemon_threads = True


class StubHub:
    def __init__(self, answer: Answer, tls: tuple[str, str] | None = None) -> None:
        """`tls`: (certificate file, key file) to serve https."""
        self.answer = answer
        self.log: list[Req] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                req = Req(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                          self.headers.get("Host", ""))
                outer.log.append(req)
                status, headers, data = outer.answer(req)
                if not isinstance(data, bytes):
                    data = data.encode() if isinstance(data, str) else json.dumps(data).encode()
                self.send_response(status)
                for k, v in headers.items():
                    for one in v if isinstance(v, list) else [v]:
                        self.send_header(k, one)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_HEAD = _handle

        self.server = BurstServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        if tls is not None:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> StubHub:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
