"""The Hub's API calls on the wire, without `huggingface_hub.HfApi` (0.3 s of imports: httpx2, pydantic, ...).

The requests are those `HfApi` 2.4 sends (tests/test_hubapi.py records both on one server): the same paths,
query (`recursive=true&expand=false`), form body for `paths-info`, redirects followed (the token dropped on
another origin), `Link: rel="next"` pagination. They go over kept-alive `http.client` connections (`conn`)
unless a proxy applies to the URL, which only `requests` handles (the rule `Transfer.get` follows); the CA
bundle and `verify` settings from the environment apply either way. An error answer is named as
`hf_raise_for_status` names it (`status_error`, checked against it in tests/test_hubapi_errors.py).
"""

from __future__ import annotations

import http.client
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from hfcache.errors import AuthError, EndpointError, EntryNotFound, RepoNotFound, RevisionNotFound
from hfcache.fetch import conn

BODY_LIMIT = 64 * 1024 * 1024  # one API answer (a listing page, a repo's info with its siblings), as MAX_TREE_BYTES
MAX_REDIRECTS = 20  # as httpx
RETRY_STATUS = (408, 429, 500, 502, 503, 504)  # huggingface_hub's `http_backoff`, which listing pages go through
PAGE_RETRIES = 5
_REDIRECTS = (301, 302, 303, 307, 308)
# huggingface_hub's REPO_API_REGEX: a 401 on these URLs means "not found, or private" (https only, as there)
_REPO_API = re.compile(r"^https://[^/]+(/api/(models|datasets|spaces)/(.+)|/(.+)/resolve/(.+))")
Timeout = tuple[float | None, float | None]  # (connect, read)
HeadersFor = Callable[[str], dict[str, str]]


@dataclass(frozen=True)
class Answer:
    """An API answer: its status, headers (every value of a repeated header joined by ", ", as httpx gives
    them), the URL it came from after redirects, and its body (read only for a 2xx or 3xx)."""

    status: int
    headers: dict[str, str]
    url: str
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self):
        """The body as JSON (ValueError when it is not, or nests too deep to read)."""
        import json

        try:
            return json.loads(self.body)
        except RecursionError:
            raise ValueError("JSON nested too deep") from None


class Api:
    """One endpoint's API calls; thread-safe (a mirror asks from many threads)."""

    def __init__(self) -> None:
        self._pools: dict[bool | str, conn.Pool] = {}
        self._env: dict[str, dict] = {}
        self._adapter = None
        self._lock = threading.Lock()

    def request(self, method: str, url: str, headers_for: HeadersFor, body: bytes | None = None,
                timeout: Timeout = (None, None), limit: int | None = None) -> Answer:
        """One call, redirects followed as httpx follows them (a 301/302/303 turns a POST into a GET; the
        headers, token included or not, are those `headers_for` gives each URL). Raises OSError,
        http.client.HTTPException or a `requests` error when the endpoint cannot be reached, ValueError for a
        body over `limit` bytes (default `BODY_LIMIT`)."""
        limit = BODY_LIMIT if limit is None else limit
        for _ in range(MAX_REDIRECTS + 1):
            headers = {**headers_for(url), "Accept-Encoding": "gzip",
                       "X-Amzn-Trace-Id": str(uuid.uuid4())}
            if body is not None:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            resp = self._send(method, url, headers, body, timeout)
            try:
                status = resp.status_code
                answer_headers = _headers(resp)
                location = answer_headers.get("location")
                if status in _REDIRECTS and location is not None:
                    url = checked_url(urljoin(url, location), "a redirect")
                    if status in (301, 302, 303) and method == "POST":
                        method, body = "GET", None
                    continue
                data = _read(resp, limit, answer_headers.get("content-encoding")) if status < 400 else b""
                return Answer(status, answer_headers, url, data)
            finally:
                resp.close()
        raise EndpointError(f"more than {MAX_REDIRECTS} redirects from {url}")

    def _send(self, method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: Timeout):
        settings = self._settings(url)
        if not settings["proxies"] and not settings["cert"]:
            verify = settings["verify"]
            with self._lock:
                pool = self._pools.get(verify)
                if pool is None:
                    pool = self._pools[verify] = conn.Pool((10.0, None), verify)
            return pool.request(method, url, headers, body, timeout)
        from requests.models import PreparedRequest

        with self._lock:
            if self._adapter is None:
                from requests.adapters import HTTPAdapter

                self._adapter = HTTPAdapter(pool_connections=2, pool_maxsize=8)
        request = PreparedRequest()
        request.prepare(method=method, url=url, headers=headers, data=body)
        return self._adapter.send(request, stream=True, timeout=timeout, **settings)

    def _settings(self, url: str) -> dict:
        key = url.split("/", 3)[2] if "://" in url else url
        settings = self._env.get(key)
        if settings is None:
            settings = self._env[key] = conn.environment(url)
        return settings

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
            adapter, self._adapter = self._adapter, None
        for pool in pools:
            pool.close()
        if adapter is not None:
            adapter.close()


def _headers(resp) -> dict[str, str]:
    """Lower-cased names; a repeated header's values joined by ", " (as httpx's `Headers.get`)."""
    if isinstance(resp, conn.Response):
        out: dict[str, str] = {}
        for name, value in resp.headers.items():
            name = name.lower()
            out[name] = f"{out[name]}, {value}" if name in out else value
        return out
    return {name.lower(): value for name, value in resp.headers.items()}


def _read(resp, limit: int, encoding: str | None) -> bytes:
    """The body, at most `limit` bytes once decoded: a hostile server cannot make the client hold more (a
    gzip bomb included)."""
    if not isinstance(resp, conn.Response):  # through `requests`: urllib3 decodes
        data = resp.raw.read(limit + 1, decode_content=True)
    else:
        data = resp.raw.read(limit + 1)
        if len(data) > limit:
            raise ValueError(f"an answer over {limit} bytes")
        if encoding is not None and encoding.strip().lower() == "gzip":
            import zlib

            try:
                data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, limit + 1)
            except zlib.error as e:
                raise ValueError(f"a gzip body that does not decompress: {e}") from None
    if len(data) > limit:
        raise ValueError(f"an answer over {limit} bytes")
    return data


def next_page(answer: Answer) -> str | None:
    """The `Link: <url>; rel="next"` target (httpx's `Response.links["next"]["url"]`), made absolute."""
    value = answer.header("link")
    if value is None:
        return None
    strip = " '\""
    links: dict[str, str] = {}
    value = value.strip(strip)
    for val in re.split(", *<", value) if value else []:
        url, _, params = val.partition(";")
        link = {"url": url.strip("<> '\"")}
        for param in params.split(";") if params else []:
            key, eq, v = param.partition("=")
            if not eq or "=" in v:
                break
            link[key.strip(strip)] = v.strip(strip)
        links[link.get("rel") or link["url"]] = link["url"]
    nxt = links.get("next")
    return checked_url(urljoin(answer.url, nxt), "a next page") if nxt else None


def checked_url(url: str, what: str) -> str:
    """`url` when it is an http(s) URL with a host (and a valid port); else ValueError: a redirect or a `Link` to
    `file:///etc/passwd` or `http://[::1` is a bad answer, not a crash in the client."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError as e:
        raise ValueError(f"{what} to an unreadable URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} to {url[:100]!r}, not an http(s) URL")
    return url


def status_error(answer: Answer, endpoint: str, what: str, revision: str) -> Exception | None:
    """The hfcache error for an error answer, chosen as `hf_raise_for_status` chooses its exception (what
    `HubClient` mapped to these one-line errors when it went through `HfApi`); None for a 2xx or 3xx."""
    status = answer.status
    if status < 400:
        return None
    code, message = answer.header("x-error-code"), answer.header("x-error-message")
    if code == "RevisionNotFound":
        return RevisionNotFound(f"revision {revision!r} not found in {what}")
    if code == "EntryNotFound":
        return EntryNotFound(f"entry not found in {what} at {revision!r}")
    if code == "GatedRepo":
        return AuthError(f"{what} is gated on {endpoint}: accept its terms and set HF_TOKEN")
    if message != "Access to this resource is disabled." and (code == "RepoNotFound" or (
            status == 401 and message != "Invalid credentials in Authorization header"
            and _REPO_API.search(answer.url))):
        if status == 401:
            return AuthError(f"{what} not found on {endpoint}, or it is private and the token was refused "
                             "(HTTP 401)")
        return RepoNotFound(f"repository {what} not found on {endpoint}")
    if status in (401, 403):
        return AuthError(f"{endpoint} refused access to {what} (HTTP {status}): check HF_TOKEN")
    return EndpointError(f"{endpoint} answered HTTP {status} for {what}")


def retry_wait(answer: Answer | None, attempt: int) -> float:
    """How long `http_backoff` waits before retrying a listing page: the server's `Retry-After`, else 1, 2, 4,
    8, 8 s."""
    if answer is not None:
        ra = (answer.header("retry-after") or "").strip()
        if ra.isdigit():
            return min(float(ra), 120.0)
    return float(min(8, 2 ** (attempt - 1)))


def network_errors() -> tuple[type[BaseException], ...]:
    """What `Api.request` raises when the endpoint cannot be reached (`requests`' own errors are OSErrors;
    urllib3's, met reading a body through `requests`, are not)."""
    urllib3 = sys.modules.get("urllib3.exceptions")
    return (OSError, http.client.HTTPException, *((urllib3.HTTPError,) if urllib3 is not None else ()))


def sleep(seconds: float) -> None:
    time.sleep(seconds)
