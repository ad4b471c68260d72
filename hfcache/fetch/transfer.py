"""The transfer engine: fetch one blob into the cache, fast, resumable, checked, atomically.

- Large files are fetched as parallel `Range` parts, small files in one stream each, over kept-alive
  connections (`conn`, straight on http.client; a `requests` transport adapter where a proxy or client
  certificate applies). How many parts are in flight follows the answer latency (`adaptive`): 4 on loopback,
  up to 16 when answers are slow.
- Bytes land in a partial file named by the layout (see `partfile.py`), whose progress record lets a later run
  resume where a killed one stopped, and are hashed in order as they arrive (`OrderedHash`: the part at the
  front from memory, parts written ahead of it from the page cache once the front reaches them, never in a
  pass after the download); the blob is renamed into
  `blobs/` only when size and hash match its name. A hash mismatch is retried once from scratch (corruption in
  transit may be transient), then reported; the partial file is deleted.
- Connection errors, timeouts, stalls (no byte for `read_timeout` s), 429 (`Retry-After` honoured) and 5xx are
  retried with exponential backoff and jitter, resuming each part from its offset. A redirect target that has
  expired (403/410 from another origin, like a signed CDN URL) is resolved again from the endpoint.
- The token goes only to the endpoint's own origin (`HubClient.headers_for`), never to a redirect target.
- A full disk (ENOSPC, EDQUOT) ends the file in one line naming it, the bytes it needs and the bytes free, with
  its partial removed (so the space is free again); a file that cannot fit is refused before any byte is written
  (keeping the part earlier runs fetched, if any).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

from hfcache.cache.hashing import kind_of, new_hasher
from hfcache.cache.meta import FileMeta
from hfcache.cache.partfile import Part, PartFile, is_disk_full
from hfcache.cache.paths import partial_paths
from hfcache.errors import AuthError, DiskFull, EndpointError, EntryNotFound, HfcacheError, IntegrityError
from hfcache.fetch import adaptive, conn, hubapi
from hfcache.fetch.hub import HubClient, same_origin
from hfcache.fetch.inorder import OrderedHash, hash_range
from hfcache.fetch.space import disk_full, space_refusal
from hfcache.units import counted

MiB = 1024 * 1024
STREAM_CHUNK = 1 * MiB
MAX_REDIRECTS = 10
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
PROGRESS_RESET = 1 * MiB  # an attempt that brought this much starts the retry count afresh
POOL_SIZE = 64  # kept-alive connections per host: enough for every thread of a snapshot
LARGE_STREAMS = (4, 16)  # range requests in flight when answers are instant (loopback) / slow (see adaptive)

OnBytes = Callable[[int], None]


@dataclass(frozen=True)
class TransferOptions:
    connections: int | None = None  # parallel range requests for one large file; None: by answer latency
    part_size: int = 32 * MiB
    split_threshold: int = 64 * MiB  # files at least this large are fetched in parts
    retries: int = 8  # per part, counted since the last byte received
    read_timeout: float | None = None  # a stall: no byte for this long (default HF_HUB_DOWNLOAD_TIMEOUT)


class _Retryable(Exception):
    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


class Stopped(HfcacheError):
    """The transfer was told to stop (Ctrl-C, or a sibling part failed); what was written stays resumable."""


class _NoRanges(Exception):
    """The server ignored a Range request: fall back to one stream."""


class _Source:
    """Where a file's bytes are: the resolve URL, and the redirect target it led to, remembered until expired."""

    def __init__(self, transfer: Transfer, url: str) -> None:
        self.transfer, self.origin, self.final = transfer, url, None

    def open(self, start: int, end: int | None):
        t = self.transfer
        url = self.final or self.origin
        for _ in range(MAX_REDIRECTS + 1):
            headers = {**t.client.headers_for(url), "Accept-Encoding": "identity"}
            if end is not None:
                headers["Range"] = f"bytes={start}-{end}"
            try:
                resp = t.get(url, headers)
            except _network_errors() as e:
                raise _Retryable(f"{type(e).__name__}") from None
            if resp.is_redirect:
                resp.close()
                try:
                    url = hubapi.checked_url(urljoin(url, resp.headers["Location"]), "a redirect")
                except ValueError as e:  # `file:///etc/passwd`, a port out of range: a bad answer, not a crash
                    raise EndpointError(f"{self.origin}: {e}") from None
                continue
            status = resp.status_code
            if status in (200, 206):
                if url != self.origin:
                    self.final = url
                return resp
            resp.close()
            if status in (403, 410) and not same_origin(url, self.origin):
                self.final = None
                raise _Retryable(f"HTTP {status} from a redirect target (expired URL): resolving again", wait=0.0)
            if status in RETRY_STATUS:
                ra = resp.headers.get("Retry-After", "")
                raise _Retryable(f"HTTP {status}", wait=min(float(ra), 120.0) if ra.isdigit() else None)
            if status == 404:
                raise EntryNotFound(f"{self.origin} not found (HTTP 404)")
            if status in (401, 403):
                raise AuthError(f"access refused to {self.origin} (HTTP {status}): check HF_TOKEN")
            raise EndpointError(f"HTTP {status} for {self.origin}")
        raise EndpointError(f"too many redirects for {self.origin}")


def _network_errors() -> tuple[type[BaseException], ...]:
    import http.client

    import requests
    import urllib3

    return (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError, TimeoutError)


class Transfer:
    """Fetches blobs for one `HubClient`; thread-safe, with one pool of keep-alive connections."""

    def __init__(self, client: HubClient, options: TransferOptions | None = None) -> None:
        from huggingface_hub import constants

        self.client = client
        self.options = options or TransferOptions()
        read = self.options.read_timeout or float(constants.HF_HUB_DOWNLOAD_TIMEOUT)
        self.timeout = (10.0, read)
        self._adapter = None
        self._lean: dict[bool | str, conn.Pool] = {}
        self.meter = adaptive.LatencyMeter()  # answer latency seen by every lean connection of this transfer
        fixed = self.options.connections
        self._streams = adaptive.Gate(fixed or LARGE_STREAMS[0])  # range requests in flight, over all files
        self._adapt = fixed is None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._stop = threading.Event()
        self._env: dict[str, dict] = {}

    def env_settings(self, url: str) -> dict:
        """Proxies and CA bundle from the environment, as `requests` works them out (`trust_env`), once per
        origin and without importing `requests` (0.3 s) when no proxy applies."""
        key = url.split("/", 3)[2] if "://" in url else url
        settings = self._env.get(key)
        if settings is None:
            settings = conn.environment(url)
            self._env[key] = settings
        return settings

    def get(self, url: str, headers: dict[str, str]):
        """One GET, streamed, redirects not followed, over kept-alive connections: `conn.Pool` (lean) unless a
        proxy or a client certificate applies to the URL, which only `requests` handles."""
        settings = self.env_settings(url)
        if not settings["proxies"] and not settings["cert"]:
            verify = settings["verify"]
            pool = self._lean.get(verify)
            if pool is None:
                with self._pool_lock:
                    pool = self._lean.setdefault(verify, conn.Pool(self.timeout, verify, self.meter))
            return pool.get(url, headers)
        from requests.models import PreparedRequest

        if self._adapter is None:
            with self._pool_lock:
                if self._adapter is None:
                    from requests.adapters import HTTPAdapter

                    self._adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
        request = PreparedRequest()
        request.prepare(method="GET", url=url, headers=headers)
        return self._adapter.send(request, stream=True, timeout=self.timeout, **settings)

    def _parts_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                n = self.options.connections or LARGE_STREAMS[1]
                self._pool = ThreadPoolExecutor(n, thread_name_prefix="hfcache-part")
            return self._pool

    def stop(self) -> None:
        """Make every transfer in flight end at its next chunk (a Ctrl-C must not wait for whole files)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """`stop()` was called: work in flight ends at its next chunk."""
        return self._stop.is_set()

    @property
    def stop_event(self) -> threading.Event:
        """Set by `stop()`: what a retry's wait listens to."""
        return self._stop

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._adapter is not None:
            self._adapter.close()
        for pool in self._lean.values():
            pool.close()

    # -- one blob ----------------------------------------------------------------------------------------------
    def fetch_blob(self, url: str, dest: Path, meta: FileMeta, on_bytes: OnBytes | None = None,
                   name: str | None = None) -> int:
        """Fetch `url` into `dest` (a `blobs/<etag>` path), checked against `meta.etag`; returns bytes received.

        The caller holds the blob's lock. On a network failure the partial file stays for the next run. `name`
        (the file's name in its repo) is what a full-disk error names.
        """
        kind = kind_of(meta.etag)
        if kind is None:
            raise IntegrityError(f"server named a blob {meta.etag!r}, which is neither a sha256 nor a git sha1")
        source = _Source(self, url)
        pf = PartFile(partial_paths(dest), meta.etag, meta.size)
        split = meta.size >= self.options.split_threshold and (self.options.connections or 2) > 1
        received = 0
        for attempt in range(2):
            try:
                trusted = pf.open(self.options.part_size if split else max(meta.size, 1))
                refusal = space_refusal(dest.parent, meta.size - trusted, name or dest.name)
                if refusal is not None and trusted:  # what earlier runs fetched stays, for when there is room
                    pf.close()
                    refusal.kept = True
                if refusal is not None:
                    raise refusal
                try:
                    digest, n = self._download(source, pf, kind, on_bytes)
                except BaseException:
                    pf.close()
                    raise
            except BaseException as e:
                if getattr(e, "kept", False):
                    raise
                if isinstance(e, (IntegrityError, DiskFull)) or is_disk_full(e) or not pf.resumable:
                    pf.discard()
                if is_disk_full(e):
                    raise disk_full(dest.parent, meta.size, name or dest.name) from None
                raise
            received += n
            if digest == meta.etag:
                try:
                    pf.publish(dest)
                except OSError as e:
                    pf.discard()
                    if is_disk_full(e):
                        raise disk_full(dest.parent, meta.size, name or dest.name) from None
                    raise
                return received
            pf.discard()
            if attempt:
                raise IntegrityError(f"corrupt download: {kind} of the bytes received is {digest}, "
                                     f"expected {meta.etag} (tried twice)")
        raise AssertionError("unreachable")

    def _download(self, source: _Source, pf: PartFile, kind, on_bytes: OnBytes | None) -> tuple[str, int]:
        if len(pf.parts) == 1:
            return self._single(source, pf, kind, on_bytes)
        try:
            return self._parallel(source, pf, kind, on_bytes)
        except _NoRanges:
            pf.discard()
            pf.open(max(pf.size, 1))
            return self._single(source, pf, kind, on_bytes)

    def _single(self, source: _Source, pf: PartFile, kind, on_bytes: OnBytes | None) -> tuple[str, int]:
        """One stream, hashed inline; a resumed prefix is hashed from disk first."""
        part = pf.parts[0]
        hasher = new_hasher(kind, pf.size)
        hash_range(pf, hasher, 0, part.done)

        def restart() -> None:
            nonlocal hasher
            part.done = 0
            hasher = new_hasher(kind, pf.size)

        received = self._run_part(source, pf, part, on_bytes, lambda _, b: hasher.update(b), restart)
        return hasher.hexdigest(), received

    def _parallel(self, source: _Source, pf: PartFile, kind, on_bytes: OnBytes | None) -> tuple[str, int]:
        """Parts in parallel, hashed in order as the contiguous prefix grows (`OrderedHash`): the part at the
        front is hashed by its own thread from the bytes in hand; what other parts wrote ahead of the front is
        hashed by this thread from the page cache as soon as the front reaches it. No pass reads the file back
        after the download."""
        pool = self._parts_pool()
        stop = threading.Event()
        ordered = OrderedHash(new_hasher(kind, pf.size))
        futures: list[Future] = [pool.submit(self._gated_part, source, pf, p, on_bytes, ordered.offer, stop)
                                 for p in pf.parts if not p.complete]
        try:
            while ordered.pos < pf.size:
                if ordered.catch_up(pf, pf.frontier()):
                    continue
                done, _ = wait(futures, timeout=0.01, return_when=FIRST_EXCEPTION)
                for f in done:
                    if f.exception() is not None:
                        raise f.exception()
        except BaseException:
            stop.set()  # the running parts end at their next chunk, their progress recorded
            for f in futures:
                f.cancel()
            wait(futures)
            pf.checkpoint()
            raise
        return ordered.hasher.hexdigest(), sum(f.result() for f in futures)

    def _gated_part(self, source: _Source, pf: PartFile, part: Part, on_bytes: OnBytes | None,
                    on_data: Callable[[int, bytes], None], stop: threading.Event) -> int:
        """One part of a split file, once the stream gate admits it (see `adaptive`)."""
        gate = self._streams
        gate.enter()
        try:
            if stop.is_set() or self._stop.is_set():
                raise Stopped("download stopped")
            return self._run_part(source, pf, part, on_bytes, on_data, None, stop)
        finally:
            gate.leave()

    def tune(self) -> None:
        """Set the range requests in flight from the answer latency seen so far (unless fixed by the user)."""
        latency = self.meter.latency()
        if self._adapt and latency is not None:
            self._streams.set_limit(adaptive.streams(latency, *LARGE_STREAMS))

    def _run_part(self, source: _Source, pf: PartFile, part: Part, on_bytes: OnBytes | None,
                  on_data: Callable[[int, bytes], None] | None, restart: Callable[[], None] | None,
                  stop: threading.Event | None = None) -> int:
        """Fill one part, retrying from its offset; returns bytes received."""
        received = attempts = 0
        while not part.complete:
            got = 0
            try:
                ranged = part.start > 0 or part.done > 0 or len(pf.parts) > 1
                resp = source.open(part.offset, part.end - 1 if ranged else None)
                if ranged:
                    self.tune()
                with resp:
                    self._check_response(resp, pf, part, restart)
                    for chunk in _chunks(resp):
                        if self._stop.is_set() or (stop is not None and stop.is_set()):
                            raise Stopped("download stopped")
                        if len(chunk) > part.end - part.offset:
                            raise IntegrityError(f"server sent more than the {pf.size} bytes announced")
                        at = part.offset
                        pf.write(part, chunk)
                        if on_data is not None:
                            on_data(at, chunk)
                        got += len(chunk)
                        if on_bytes is not None:
                            on_bytes(len(chunk))
                if not part.complete:
                    raise _Retryable(f"connection closed after {part.offset} of {pf.size} bytes")
            except (_Retryable, *_network_errors()) as e:
                attempts = back_off(e, attempts, got, self.options.retries, source.origin, self._stop)
            finally:
                received += got
        pf.checkpoint()
        return received

    @staticmethod
    def _check_response(resp, pf: PartFile, part: Part, restart: Callable[[], None] | None) -> None:
        """A 206 must start where asked and agree on the total; a 200 means the server ignored the range."""
        if resp.status_code == 206:
            cr = resp.headers.get("Content-Range", "")
            try:
                span, total = cr.removeprefix("bytes ").split("/")
                start = int(span.split("-")[0])
            except ValueError:
                raise EndpointError(f"unreadable Content-Range {cr!r}") from None
            if start != part.offset or (total != "*" and int(total) != pf.size):
                raise IntegrityError(f"server answered range {cr!r} for bytes={part.offset}- of {pf.size}")
            return
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) != pf.size:
            raise IntegrityError(f"server announced {length} bytes, the Hub's metadata says {pf.size}")
        if part.start > 0 or len(pf.parts) > 1:
            raise _NoRanges()
        if part.done and restart is not None:
            restart()


def _chunks(resp) -> Iterator[bytes]:
    """The body as it arrives: `read1` hands over whatever came in, so a broken connection loses no byte
    already received (a fixed-size read would drop a partly filled buffer)."""
    if isinstance(resp, conn.Response):
        while chunk := resp.read1(STREAM_CHUNK):
            yield chunk
        return
    raw = resp.raw
    if getattr(raw, "chunked", False) or not hasattr(raw, "read1"):
        yield from resp.iter_content(STREAM_CHUNK)
        return
    while chunk := raw.read1(STREAM_CHUNK, decode_content=False):
        yield chunk


def back_off(e: BaseException, attempts: int, got: int, retries: int, what: str, stop: threading.Event) -> int:
    """One more failed attempt at `what` (a part, a range): wait before the next (the server's Retry-After, else
    exponential backoff with jitter) and return the new count, or give up in one line once `retries` are spent.
    An attempt that moved PROGRESS_RESET bytes starts the count again. `stop` set (a Ctrl-C) ends the wait and
    the attempts: a Ctrl-C while the server is down must not sit out every retry."""
    attempts = 1 if got >= PROGRESS_RESET else attempts + 1
    reason = str(e) if isinstance(e, _Retryable) else type(e).__name__
    if attempts > retries:
        tries = counted(retries, "retry", many="retries")
        raise EndpointError(f"giving up on {what} after {tries}: {reason}") from None
    wait = getattr(e, "wait", None)
    delay = wait if wait is not None else min(10.0, 0.25 * 2 ** (attempts - 1)) * random.uniform(0.5, 1.5)
    if stop.wait(delay):
        raise Stopped("download stopped")
    return attempts
