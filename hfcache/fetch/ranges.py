"""Byte ranges into memory for the Xet path (a reconstruction's JSON, a xorb's chunk range), through the transfer
engine: its connection pool, its retry and backoff rules, its stall timeout, its stop flag. One fetch path: blobs go
to partial files (`Transfer.fetch_blob`), these to memory, with the same rules.
"""

from __future__ import annotations

from collections.abc import Callable

from hfcache.errors import AuthError, EndpointError, EntryNotFound, IntegrityError
from hfcache.fetch import conn
from hfcache.fetch.transfer import (
    RETRY_STATUS,
    STREAM_CHUNK,
    OnBytes,
    Stopped,
    Transfer,
    _chunks,
    _network_errors,
    _Retryable,
    back_off,
)

Locate = Callable[[bool], tuple[str, dict[str, str]]]  # fresh? -> (url, headers)


def fetch_range(transfer: Transfer, locate: Locate, start: int | None, end: int | None, limit: int,
                on_bytes: OnBytes | None = None, what: str = "", into: bytearray | None = None
                ) -> bytes | bytearray | memoryview:
    """GET bytes [start, end] (inclusive; the whole body when None) into memory, over the same pool with the
    same retries, backoff and stall timeout as blobs; a connection lost midway resumes from the last byte
    received. `locate(fresh)` gives (url, headers); it is asked with `fresh=True` after a 401, 403 or 410
    (an expired token or signed URL) to refresh what expired. `limit` caps what a server may send. A known size
    may be filled `into` a caller's buffer (reused, so no new allocation per range): a view of it is returned."""
    size = None if start is None or end is None else end - start + 1
    if into is not None and size is not None and len(into) >= size:
        buf = into
    else:  # filled in place: no regrowth, no final copy
        buf = bytearray(size) if size is not None else bytearray()
    have = 0
    attempts = refreshes = 0
    fresh = False
    while True:
        if transfer.stopping:
            raise Stopped("download stopped")
        url, headers = locate(fresh)
        fresh = False
        headers = {**headers, "Accept-Encoding": "identity"}
        offset = (start or 0) + have
        if start is not None or have:
            headers["Range"] = f"bytes={offset}-{'' if end is None else end}"
        got = 0
        try:
            try:
                resp = transfer.get(url, headers)
            except _network_errors() as e:
                raise _Retryable(type(e).__name__) from None
            with resp:
                status = resp.status_code
                if status in (401, 403, 410):
                    refreshes += 1
                    if refreshes > 3:
                        raise AuthError(f"{what or url}: access refused (HTTP {status}) after refreshing "
                                        "the token and URL three times")
                    fresh = True
                    continue
                if status in RETRY_STATUS:
                    ra = resp.headers.get("Retry-After", "")
                    raise _Retryable(f"HTTP {status}", wait=min(float(ra), 120.0) if ra.isdigit() else None)
                if status == 404:
                    raise EntryNotFound(f"{what or url} not found (HTTP 404)")
                if status not in (200, 206):
                    raise EndpointError(f"HTTP {status} for {what or url}")
                if "Range" in headers and status == 200 and (offset or end is not None):
                    raise EndpointError(f"{what or url}: the server ignored a Range request")
                elif status == 206 and not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                    raise IntegrityError(f"{what or url}: answered {resp.headers.get('Content-Range')!r} "
                                         f"for bytes={offset}-")
                if buf is into and isinstance(resp, conn.Response) and not getattr(resp.raw, "chunked", False):
                    # straight into the caller's buffer, a slice at a time (a stop or a stall is seen between)
                    while have < size:
                        if transfer.stopping:
                            raise Stopped("download stopped")
                        n = resp.readinto(memoryview(buf)[have:min(size, have + STREAM_CHUNK)])
                        if not n:
                            break
                        have += n
                        got += n
                        if on_bytes is not None:
                            on_bytes(n)
                    if resp.readinto(memoryview(bytearray(1))):
                        raise IntegrityError(f"{what or url}: the server sent more than the bytes asked for")
                for chunk in () if buf is into and isinstance(resp, conn.Response) else _chunks(resp):
                    if transfer.stopping:
                        raise Stopped("download stopped")
                    n = len(chunk)
                    if have + n > (size if size is not None else limit):
                        raise IntegrityError(f"{what or url}: the server sent more than the bytes asked for")
                    if size is not None:
                        buf[have:have + n] = chunk
                    else:
                        buf += chunk
                    have += n
                    got += n
                    if on_bytes is not None:
                        on_bytes(n)
            if size is None:
                return bytes(buf)
            if have == size:
                return memoryview(buf)[:size] if buf is into else buf
            raise _Retryable(f"connection closed after {have} of {size} bytes")
        except (_Retryable, *_network_errors()) as e:
            attempts = back_off(e, attempts, got, transfer.options.retries, what or url, transfer.stop_event)
