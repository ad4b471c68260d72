"""The CAS side of a Xet download: the read token and the requests it authorises, through the transfer engine.

The token comes from the Hub (`GET {endpoint}/api/{type}s/{repo}/xet-read-token/{rev}`, with the user's token),
which also names the CAS: headers `X-Xet-Cas-Url`, `X-Xet-Access-Token`, `X-Xet-Token-Expiration` (hf_xet's
refresh reads the same from a JSON body: `casUrl`, `accessToken`, `exp`). It is renewed a minute before it expires
(huggingface_hub's margin) and whenever the CAS answers 401. Xorb URLs are signed and carry no token; one that has
expired (401/403/410) is asked for again through a fresh reconstruction.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

from hfcache.errors import EndpointError, EntryNotFound, IntegrityError
from hfcache.fetch.ranges import fetch_range
from hfcache.fetch.transfer import Transfer
from hfcache.xet import recon
from hfcache.xet.recon import FetchEntry, Reconstruction

TOKEN_MARGIN = 60  # seconds: huggingface_hub's XET_CONNECTION_INFO_SAFETY_PERIOD
NO_XET_STATUS = {404, 405, 501}
TOKEN_TRIES = 4


class NoXet(Exception):
    """The endpoint offers no Xet for this repo (no token route): the plain HTTP path stays."""


@dataclass
class Token:
    cas_url: str
    access_token: str
    expires: int


class CasSession:
    """One repo revision's CAS access: its token, refreshed once for all threads, and its requests."""

    def __init__(self, transfer: Transfer, token_url: str) -> None:
        self.transfer = transfer
        self.token_url = token_url
        self._token: Token | None = None
        self._lock = threading.Lock()
        self.token_requests = 0

    # -- token -------------------------------------------------------------------------------------------------
    def token(self, fresh: bool = False, stale: Token | None = None) -> Token:
        """The current token; a new one when it is about to expire, or when `fresh` and the one that failed
        (`stale`) is still the current one (so eight threads meeting one 401 ask for one token, not eight)."""
        with self._lock:
            t = self._token
            if t is not None and not (fresh and t is stale) and t.expires > time.time() + TOKEN_MARGIN:
                return t
            self._token = self._request_token()
            return self._token

    def _request_token(self) -> Token:
        from hfcache.fetch.transfer import RETRY_STATUS, _network_errors

        client = self.transfer.client
        for attempt in range(TOKEN_TRIES):  # huggingface_hub's http_backoff retries these too
            self.token_requests += 1
            try:
                resp = self.transfer.get(self.token_url, client.headers_for(self.token_url))
            except _network_errors() as e:
                if attempt + 1 == TOKEN_TRIES:
                    raise EndpointError(f"cannot reach {self.token_url}: {type(e).__name__}") from None
                time.sleep(0.5 * 2 ** attempt)
                continue
            if resp.status_code in RETRY_STATUS and attempt + 1 < TOKEN_TRIES:
                resp.close()
                time.sleep(0.5 * 2 ** attempt)
                continue
            return self._read_token(resp)
        raise AssertionError("unreachable")

    def _read_token(self, resp) -> Token:
        client = self.transfer.client
        with resp:
            status = resp.status_code
            if status in NO_XET_STATUS:
                raise NoXet(f"{self.token_url}: HTTP {status}")
            if status in (401, 403):
                from hfcache.errors import AuthError

                raise AuthError(f"{client.endpoint} refused a Xet read token (HTTP {status}): check HF_TOKEN")
            if status != 200:
                raise EndpointError(f"HTTP {status} for {self.token_url}")
            h = resp.headers
            cas, tok, exp = h.get("X-Xet-Cas-Url"), h.get("X-Xet-Access-Token"), h.get("X-Xet-Token-Expiration")
            if not (cas and tok and exp):
                try:
                    body = json.loads(_read(resp, 64 * 1024) or b"{}")
                    cas, tok, exp = body.get("casUrl"), body.get("accessToken"), body.get("exp")
                except (ValueError, AttributeError):
                    cas = None
        try:
            expires = int(exp)
        except (TypeError, ValueError):
            raise NoXet(f"{self.token_url} gave no usable Xet token") from None
        if not (isinstance(cas, str) and cas.startswith(("http://", "https://")) and isinstance(tok, str) and tok):
            raise NoXet(f"{self.token_url} gave no usable Xet token")
        return Token(cas.rstrip("/"), tok, expires)

    # -- requests ----------------------------------------------------------------------------------------------
    def reconstruction(self, file_hash: str) -> Reconstruction:
        """The file's terms and where their xorbs are; the token is renewed on a 401."""
        current: list[Token] = []

        def locate(fresh: bool) -> tuple[str, dict[str, str]]:
            t = self.token(fresh, current[-1] if current else None)
            current.append(t)
            return f"{t.cas_url}/v1/reconstructions/{file_hash}", {"Authorization": f"Bearer {t.access_token}"}

        try:
            data = fetch_range(self.transfer, locate, None, None, recon.MAX_RECON_BYTES,
                               what=f"the reconstruction of {file_hash[:12]}")
        except EntryNotFound:
            raise EntryNotFound(f"the CAS does not know the Xet file {file_hash}") from None
        result = recon.parse(data, f"the CAS ({current[-1].cas_url})")
        return result

    def fetch_xorb(self, file_hash: str, entry: FetchEntry, on_bytes=None) -> bytes | bytearray:
        """A fetch entry's bytes. Its URL is signed: when it has expired, a new reconstruction gives a fresh one
        for the same chunks."""
        url = [entry.url]

        def locate(fresh: bool) -> tuple[str, dict[str, str]]:
            if fresh:
                again = self.reconstruction(file_hash)
                match = [e for e in again.fetch.get(entry.xorb, ())
                         if e.start <= entry.start and entry.end <= e.end and e.url_end == entry.url_end]
                if not match:
                    raise IntegrityError(f"the CAS no longer serves chunks {entry.start}-{entry.end} of xorb "
                                         f"{entry.xorb[:12]} at the same bytes")
                url[0] = match[0].url
            return url[0], {}

        return fetch_range(self.transfer, locate, entry.url_start, entry.url_end,
                           entry.url_end - entry.url_start + 1, on_bytes, what=f"xorb {entry.xorb[:12]}")


def _read(resp, n: int) -> bytes:
    """Up to `n` bytes of a small body, from a lean `conn.Response` or a streamed `requests` one."""
    read = getattr(resp, "read", None)
    return read(n) if read is not None else resp.raw.read(n, decode_content=True)
