"""Run a `HubApp` on uvicorn: in the foreground for the CLI, or in a thread for tests and the demo."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hfcache.errors import UsageError
from hfcache.server.app import HubApp


def exposure_warning(host: str, token: str | None) -> str | None:
    """The one-line warning for a server others can reach with no token, or None (loopback, or a token set)."""
    if token:
        return None
    if host.lower() == "localhost":
        return None
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return None
    except ValueError:
        pass  # a host name: it may resolve to any interface
    return (f"serving on {host} without --token: anyone who can reach this address can read every served file "
            "(use --token, or --host 127.0.0.1)")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(512)
    sock.setblocking(False)
    return sock


def _server(app: HubApp, log_level: str):
    import uvicorn

    config = uvicorn.Config(app.asgi, log_level=log_level, access_log=False, lifespan="off",
                            timeout_keep_alive=30)
    return uvicorn.Server(config)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve_forever(app: HubApp, host: str, port: int, on_ready: Callable[[str], None],
                  log_level: str = "warning") -> None:
    sock = _bind(host, port)
    on_ready(url_of(sock))
    _server(app, log_level).run(sockets=[sock])


@dataclass
class RunningServer:
    url: str
    app: HubApp
    _server: object
    _thread: threading.Thread

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(app: HubApp, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Start on an ephemeral port and return once the server accepts connections."""
    sock = _bind(host, port)
    server = _server(app, "error")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="hfcache-serve")
    thread.start()
    deadline = time.monotonic() + 60  # a bound for a server that cannot start: a loaded machine takes seconds
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("hfcache server did not start")
        time.sleep(0.01)
    return RunningServer(url_of(sock), app, server, thread)
