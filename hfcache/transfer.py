"""The transfer engine: stream one blob from a URL into the cache, checked, atomically.

Bytes go to `blobs/<etag>.<8hex>.incomplete` beside their final place while being hashed on the fly; only when
size and hash match the name the blob will get is the file renamed into `blobs/`. Anything else is deleted, so
no partial or corrupt blob is ever visible. Connections are pooled per thread; transient failures (connection
errors, 429, 5xx) are retried with backoff and jitter, resuming with a `Range` request where the server allows.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urljoin

from hfcache.errors import AuthError, EndpointError, EntryNotFound, IntegrityError
from hfcache.hashing import kind_of, new_hasher
from hfcache.hub import HubClient
from hfcache.layout import FileMeta

STREAM_CHUNK = 1024 * 1024
MAX_REDIRECTS = 10
RETRY_STATUS = {429, 500, 502, 503, 504}


class _Retryable(Exception):
    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


class Transfer:
    """Fetches blobs for one `HubClient`; safe to share between threads."""

    def __init__(self, client: HubClient, retries: int = 5, timeout: float | None = None) -> None:
        from huggingface_hub import constants

        self.client = client
        self.retries = retries
        self.timeout = (10.0, timeout if timeout is not None else float(constants.HF_HUB_DOWNLOAD_TIMEOUT))
        self._local = threading.local()

    def session(self):
        """One keep-alive session per thread: requests sessions are not thread-safe."""
        s = getattr(self._local, "session", None)
        if s is None:
            import requests

            s = requests.Session()
            self._local.session = s
        return s

    def fetch_blob(self, url: str, dest: Path, meta: FileMeta, on_bytes: Callable[[int], None] | None = None) -> int:
        """Download `url` to `dest` (a `blobs/<etag>` path), verified against `meta.etag`; returns bytes read."""
        etag = meta.etag
        kind = kind_of(etag)
        if kind is None:
            raise IntegrityError(f"server named a blob {etag!r}, which is neither a sha256 nor a git sha1")
        tmp = dest.with_name(f"{etag}.{uuid.uuid4().hex[:8]}.incomplete")
        received = 0
        try:
            with open(tmp, "wb") as f:
                hasher = new_hasher(kind, meta.size)
                attempt = 0
                while True:
                    try:
                        written, hasher = self._stream_into(url, f, hasher, kind, meta.size, on_bytes)
                        received += written
                        break
                    except _Retryable as e:
                        attempt += 1
                        if attempt > self.retries:
                            raise EndpointError(f"giving up on {url} after {self.retries} retries: {e}") from None
                        backoff = min(8.0, 0.25 * 2**attempt) * random.uniform(0.5, 1.5)
                        time.sleep(e.wait if e.wait is not None else backoff)
                size = f.tell()
            if size != meta.size:
                raise IntegrityError(f"{dest.name}: expected {meta.size} bytes, received {size}")
            digest = hasher.hexdigest()
            if digest != etag:
                raise IntegrityError(f"corrupt download: {kind} of the bytes received is {digest}, expected {etag}")
            os.replace(tmp, dest)
            return received
        finally:
            tmp.unlink(missing_ok=True)

    def _stream_into(self, url, f, hasher, kind, size, on_bytes) -> tuple[int, object]:
        """One GET from where the file stands now; raises `_Retryable` for what a retry may cure."""
        import requests

        offset = f.tell()
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        resp = self._get(url, headers)
        written = 0
        with resp:
            if resp.status_code == 200 and offset:
                f.seek(0)
                f.truncate()
                hasher = new_hasher(kind, size)
            elif resp.status_code == 206:
                start = resp.headers.get("Content-Range", "").removeprefix("bytes ").split("-")[0]
                if start != str(offset):
                    raise EndpointError(f"server answered range {resp.headers.get('Content-Range')!r} "
                                        f"to a request for bytes={offset}-")
            try:
                for chunk in resp.iter_content(STREAM_CHUNK):
                    f.write(chunk)
                    hasher.update(chunk)
                    written += len(chunk)
                    if f.tell() > size:
                        raise IntegrityError(f"server sent more than the {size} bytes announced for {url}")
                    if on_bytes is not None:
                        on_bytes(len(chunk))
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
                raise _Retryable(f"{type(e).__name__}") from None
        if f.tell() < size:
            raise _Retryable(f"connection closed after {f.tell()} of {size} bytes")
        return written, hasher

    def _get(self, url: str, extra: dict[str, str]):
        """GET following redirects by hand, so the token goes only to the endpoint's own origin."""
        import requests

        for _ in range(MAX_REDIRECTS + 1):
            headers = {**self.client.headers_for(url), **extra}
            try:
                resp = self.session().get(url, headers=headers, stream=True, allow_redirects=False,
                                          timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as e:
                raise _Retryable(f"{type(e).__name__}: {e}") from None
            if resp.is_redirect:
                resp.close()
                url = urljoin(url, resp.headers["Location"])
                continue
            if resp.status_code in (200, 206):
                return resp
            resp.close()
            status = resp.status_code
            if status in RETRY_STATUS:
                retry_after = resp.headers.get("Retry-After")
                wait = float(retry_after) if retry_after and retry_after.isdigit() else None
                raise _Retryable(f"HTTP {status}", wait=min(wait, 60.0) if wait is not None else None)
            if status == 404:
                raise EntryNotFound(f"{url} not found (HTTP 404)")
            if status in (401, 403):
                raise AuthError(f"access refused to {url} (HTTP {status}): check HF_TOKEN")
            raise EndpointError(f"HTTP {status} for {url}")
        raise EndpointError(f"too many redirects for {url}")

