"""Kept-alive HTTP/1.1 connections for transfers, straight on `http.client`.

A 16 KiB file costs one request; through `requests` (adapter, pool manager, urllib3's retries and timeouts)
that request cost ~0.4 ms of Python under the GIL, about what the server spends answering it. Here it is a
`request` and a `getresponse` on a connection taken from a per-origin stack. Used only where nothing of
`requests` is needed: no proxy and no client certificate for the URL (the caller checks; otherwise it goes
through `requests` as before). Certificates are checked as `requests` checks them (its CA bundle, or the
`verify` setting from the environment).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import ssl
import threading
import time
from urllib.parse import quote, urlsplit

from hfcache.fetch.adaptive import LatencyMeter

STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, http.client.RemoteDisconnected,
         http.client.BadStatusLine)
_URI_SAFE = "!#$%&'()*+,/:;=?@[]~"
DRAIN_MAX = 64 * 1024  # a redirect's or an error's body is read out (keeping the connection) up to this size


class _HTTP(http.client.HTTPConnection):
    """Connects within the connect timeout, then waits for bytes up to the read timeout."""

    read_timeout: float | None = None

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self.read_timeout)


class _HTTPS(http.client.HTTPSConnection):
    read_timeout: float | None = None

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self.read_timeout)


class Response:
    """The little of `requests.Response` the transfer engine uses, over an `http.client` response."""

    def __init__(self, pool: Pool, key: tuple, conn: http.client.HTTPConnection,
                 raw: http.client.HTTPResponse) -> None:
        self._pool, self._key, self._conn, self.raw = pool, key, conn, raw
        self.status_code = raw.status
        self.headers = raw.headers  # an email.message.Message: case-insensitive `get`

    @property
    def is_redirect(self) -> bool:
        return self.status_code in (301, 302, 303, 307, 308) and "location" in self.headers

    def json(self, limit: int = 16 * 1024 * 1024):
        """The body as JSON, as `requests.Response.json` gives it (a small API answer; at most `limit` bytes)."""
        return read_json(self, limit)

    def read(self, n: int) -> bytes:
        """Up to `n` bytes of the body (as `raw.read(n, decode_content=True)` does over `requests`: this
        connection asks for no content coding, so there is none to decode)."""
        return self.raw.read(n)

    def read1(self, n: int) -> bytes:
        raw = self.raw
        if raw.length == 0:  # all of a sized body is in: http.client would only see that on one more call
            raw.close()
            return b""
        return raw.read1(n)

    def readinto(self, b: memoryview) -> int:
        """Up to len(b) bytes straight into `b` (no bytes object per read); 0 at the end of the body."""
        raw = self.raw
        if raw.length == 0:
            raw.close()
            return 0
        return raw.readinto(b)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        raw = self.raw
        if not raw.isclosed() and raw.length == 0:
            raw.close()  # the body was read to its end: the socket stays open, for the next request
        if not raw.isclosed() and self.status_code != 200 and self.status_code != 206:
            length = raw.length
            if length is not None and length <= DRAIN_MAX:
                with contextlib.suppress(OSError, http.client.HTTPException):
                    raw.read()
        if raw.isclosed() and not raw.will_close:
            self._pool.put(self._key, conn)  # body read to its end: the connection is ready for the next request
        else:
            conn.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_json(resp, limit: int = 16 << 20):
    """A small JSON body (an API answer, a token) from either kind of response `Transfer.get` returns, read up to
    `limit` bytes: a hostile server cannot make the client hold more. ValueError when too long or not JSON."""
    import json

    # A `requests` response (proxy or client certificate) reads through urllib3, which decodes a compressed body.
    raw = resp.raw
    data = raw.read(limit + 1) if isinstance(resp, Response) else raw.read(limit + 1, decode_content=True)
    if len(data) > limit:
        raise ValueError(f"a JSON answer over {limit} bytes")
    return json.loads(data or b"null")


class Pool:
    """Idle connections per origin (scheme, host, port), shared by all threads of one `Transfer`."""

    def __init__(self, timeout: tuple[float, float], verify: bool | str = True,
                 meter: LatencyMeter | None = None) -> None:
        self.timeout = timeout  # (connect, read): a read waits at most this long for the next bytes
        self.meter = meter or LatencyMeter()  # how long answers take (to their headers), for `adaptive`
        self._verify = verify
        self._idle: dict[tuple, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._ssl: ssl.SSLContext | None = None

    def get(self, url: str, headers: dict[str, str]) -> Response:
        """One GET for a transfer; any other OS error on the way (no such host, a certificate refused) is a
        network error like any other (a `ConnectionError`), never taken for a local one (a full disk)."""
        try:
            return self.request("GET", url, headers)
        except (ConnectionError, TimeoutError):
            raise
        except OSError as e:
            raise ConnectionError(f"{type(e).__name__}: {e}") from None

    def request(self, method: str, url: str, headers: dict[str, str], body: bytes | None = None,
                timeout: tuple[float | None, float | None] | None = None) -> Response:
        """One request (`timeout`: this call's own (connect, read), else the pool's); a kept-alive connection
        the server closed meanwhile is replaced once, at once. Failures raise as they come (OSError,
        `http.client.HTTPException`)."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname, parts.port)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        # As `requests` sends it (`requote_uri`): a space or a non-ASCII letter in a redirect's Location is
        # percent-encoded, an escape already there is left alone; http.client would refuse the raw string.
        target = quote(target, safe=_URI_SAFE)
        for fresh in (False, True):
            conn = None if fresh else self._take(key)
            reused = conn is not None
            if conn is None:
                conn = self._new(key)
            if timeout is not None:
                conn.timeout, conn.read_timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout[1])
            try:
                sent = time.monotonic()
                conn.request(method, target, body=body, headers=headers)
                raw = conn.getresponse()
                self.meter.add(time.monotonic() - sent)
            except STALE:
                conn.close()
                if reused:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            return Response(self, key, conn, raw)
        raise AssertionError("unreachable")

    def _take(self, key: tuple) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def put(self, key: tuple, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append(conn)

    def _new(self, key: tuple) -> http.client.HTTPConnection:
        scheme, host, port = key
        connect, read = self.timeout
        if scheme == "https":
            conn = _HTTPS(host, port, timeout=connect, context=self._context())
        else:
            conn = _HTTP(host, port, timeout=connect)
        conn.read_timeout = read
        return conn

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            verify = self._verify
            if verify is False:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            elif isinstance(verify, str):
                ctx = ssl.create_default_context(**({"capath": verify} if os.path.isdir(verify)
                                                    else {"cafile": verify}))
            else:
                import certifi  # the bundle requests uses by default

                ctx = ssl.create_default_context(cafile=certifi.where())
            self._ssl = ctx
        return self._ssl

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for c in conns:
                c.close()


def environment(url: str) -> dict:
    """`requests.Session.merge_environment_settings` for a request with no settings of its own: the proxies
    from `*_proxy` unless `no_proxy` exempts the host, and `REQUESTS_CA_BUNDLE`/`CURL_CA_BUNDLE`; no client
    certificate (a session would need one set)."""
    import urllib.request

    proxies = urllib.request.getproxies()
    if proxies:
        import requests.utils

        proxies = requests.utils.get_environ_proxies(url, no_proxy=None)
    verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return {"proxies": proxies, "verify": verify, "cert": None}
