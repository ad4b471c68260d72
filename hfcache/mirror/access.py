"""Who may read a repo through the mirror.

- `--token`: a client must send `Authorization: Bearer <token>`, except for a gated or private repo, where a
  token upstream accepts for that repo admits it (a client has one token; for such a repo it is its own).
- A repo upstream serves anonymously is public: any admitted client reads it, from the store or upstream.
- A gated or private repo is served (from the store too) only to a client whose own token upstream accepts for it.
  Upstream is asked (the repo's info anonymously: public, gated or private; `/api/{type}s/{repo}/auth-check` with
  the client's token) and the answer remembered for
  `remember` seconds per repo and token (keyed by the token's hash; tokens are never logged nor kept).
  While upstream is in trouble, the last decision stands, however old; with none, the answer is 502/503/504.
- Offline (`HF_HUB_OFFLINE=1`) nothing can be asked: only `--token` applies.
"""

from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass

from hfcache.cache.layout import RepoRef
from hfcache.errors import EndpointError
from hfcache.fetch.conn import read_json
from hfcache.mirror.upstream import RETRY_AFTER_FAILURE, STALE_WAIT, Upstream, gateway_status, token_key


@dataclass(frozen=True)
class Denial:
    """The answer a refused request gets: the Hub's error shape (`X-Error-Code` drives huggingface_hub)."""

    status: int
    code: str
    message: str


_ALLOWED = "allowed"


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class Access:
    def __init__(self, upstream: Upstream, mirror_token: str | None = None, remember: float = 60.0) -> None:
        self.upstream = upstream
        self.mirror_token = mirror_token
        self.remember = remember
        self._decisions: dict[tuple[RepoRef, str], tuple[str | Denial, float]] = {}
        self._lock = threading.Lock()

    def upstream_token(self, authorization: str | None) -> str | None:
        """The client's token as upstream should see it: none when it is the mirror's own `--token`."""
        token = bearer_token(authorization)
        if token is not None and self.mirror_token is not None and hmac.compare_digest(
                token.encode("utf-8", "surrogateescape"), self.mirror_token.encode()):
            return None
        return token

    def admitted(self, authorization: str | None) -> bool:
        """Whether the request carries the mirror's `--token` (always true without one)."""
        if self.mirror_token is None:
            return True
        token = bearer_token(authorization)
        return token is not None and self.upstream_token(authorization) is None

    def known(self, repo: RepoRef, authorization: str | None) -> tuple[Denial | None, bool] | None:
        """`check`'s answer when it needs no upstream question (decisions fresh in memory), else None."""
        if self.upstream.offline:
            return self.check(repo, authorization)
        public = self._fresh(repo, None)
        if public is None:
            return None
        if public == _ALLOWED or self.upstream_token(authorization) is None:
            return self.check(repo, authorization)
        mine = self._fresh(repo, self.upstream_token(authorization))
        return None if mine is None else self.check(repo, authorization)

    def _fresh(self, repo: RepoRef, token: str | None) -> str | Denial | None:
        hit = self._decisions.get((repo, token_key(token)))
        return hit[0] if hit is not None and time.monotonic() - hit[1] < self.remember else None

    def check(self, repo: RepoRef, authorization: str | None) -> tuple[Denial | None, bool]:
        """(refusal or None, whether the repo is public). Blocking (it may ask upstream): run in a thread."""
        admitted = self.admitted(authorization)
        if self.upstream.offline:
            return (None if admitted else _unauthorized()), True
        public = self._decide(repo, None)
        if public == _ALLOWED:
            return (None if admitted else _unauthorized()), True
        token = self.upstream_token(authorization)
        if token is None:
            return (public if isinstance(public, Denial) else _unauthorized()), False
        mine = self._decide(repo, token)
        return (None if mine == _ALLOWED else mine), False

    def _decide(self, repo: RepoRef, token: str | None) -> str | Denial:
        key = (repo, token_key(token))
        hit = self._decisions.get(key)
        if hit is not None and time.monotonic() - hit[1] < self.remember:
            return hit[0]
        # anonymous: the repo's info says public, gated or private; a token: auth-check says yes or no. With a
        # last decision to stand on, a silent upstream gets STALE_WAIT seconds, not the clients' whole patience
        # (its answer, when it comes, is kept for the next request).
        def ask() -> str | Denial:
            decision = self._ask_info(repo, None) if token is None else self._ask(repo, token)
            self._keep(key, decision, time.monotonic())
            return decision

        done, decision = self.upstream.ask_once(("access", *key), ask, STALE_WAIT if hit is not None else None)
        if not done or isinstance(decision, EndpointError):
            if hit is None:
                return Denial(gateway_status(decision), "UpstreamUnavailable",
                              f"cannot check access to {repo} upstream: {decision}")
            # upstream in trouble: the last decision stands, and is not asked again for a while
            self._keep(key, hit[0], time.monotonic() - self.remember + min(RETRY_AFTER_FAILURE, self.remember))
            return hit[0]
        if isinstance(decision, BaseException):
            raise decision
        return decision

    def _keep(self, key: tuple[RepoRef, str], decision: str | Denial, at: float) -> None:
        with self._lock:
            if len(self._decisions) > 100_000:
                self._decisions.clear()
            self._decisions[key] = (decision, at)

    def _ask(self, repo: RepoRef, token: str | None) -> str | Denial:
        client, transfer = self.upstream.client(token, anonymous=token is None)
        url = f"{client.endpoint}/api/{repo.repo_type}s/{repo.repo_id}/auth-check"
        try:
            resp = transfer.get(url, client.headers_for(url))
        except Exception as e:  # any transport failure is upstream trouble, never a refusal
            raise EndpointError(f"cannot reach {client.endpoint}: {type(e).__name__}") from e
        with resp:
            status, code = resp.status_code, resp.headers.get("X-Error-Code", "")
        if status == 200:
            return _ALLOWED
        if code == "GatedRepo" or (status == 403 and not code):
            return Denial(403, "GatedRepo", f"Access to {repo} is restricted upstream: your token was refused")
        if status in (401, 403) or (status == 404 and code == "RepoNotFound"):
            return Denial(401 if status != 404 else 404, "RepoNotFound",
                          f"Repository {repo} not found, or private and your token was refused")
        if status == 404:  # an upstream without the route (an old server): the repo's info says as much
            return self._ask_info(repo, token)
        raise EndpointError(f"{client.endpoint} answered HTTP {status} checking access to {repo}")

    def _ask_info(self, repo: RepoRef, token: str | None) -> str | Denial:
        client, transfer = self.upstream.client(token, anonymous=token is None)
        url = f"{client.endpoint}/api/{repo.repo_type}s/{repo.repo_id}"
        try:
            resp = transfer.get(url, client.headers_for(url))
        except Exception as e:
            raise EndpointError(f"cannot reach {client.endpoint}: {type(e).__name__}") from e
        with resp:
            status = resp.status_code
            gated = False
            if status == 200:
                try:
                    info = read_json(resp)
                    gated = bool(info.get("gated"))  # a gated repo's info is public; its files are not
                except (ValueError, AttributeError):
                    raise EndpointError(f"{client.endpoint} sent unreadable info for {repo}") from None
        if status == 200 and not gated:
            return _ALLOWED
        if status == 200:
            return Denial(403, "GatedRepo", f"Access to {repo} is restricted: send a token upstream accepts for it")
        if status in (401, 403, 404):
            return Denial(404 if status == 404 else 401, "RepoNotFound",
                          f"Repository {repo} not found, or private and your token was refused")
        raise EndpointError(f"{client.endpoint} answered HTTP {status} for {repo}")


def _unauthorized() -> Denial:
    return Denial(401, "Unauthorized", "this mirror wants a token: set HF_TOKEN to the mirror's token")
