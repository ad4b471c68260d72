"""The Hub client: which commit a revision names, which files a commit holds, and where their bytes live.

Metadata calls are made here on the wire (`hubapi`: the requests `HfApi` sends, over kept-alive connections,
without importing `huggingface_hub.HfApi` or `huggingface_hub.utils`, 0.3 s of CPU); the Hub headers are
`hubheaders`' port of `build_hf_headers`. Every answer is read as hostile: its shapes checked, every name it
gives checked before a path is made from it, error answers turned into hfcache's one-line errors here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from urllib.parse import quote, urlencode, urlsplit

from hfcache.cache.layout import RepoRef, is_commit, safe_relpath
from hfcache.cache.meta import FileMeta
from hfcache.errors import AuthError, EndpointError, OfflineCacheMiss, UnsafePath
from hfcache.fetch import hubapi

MAX_PAGES = 10_000  # of a listing (1,000 files a page on the Hub): a server cannot keep a client paging forever


class _Unreachable(EndpointError):
    """No answer at all (refused, reset, timed out): what a listing page is retried on."""


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def same_origin(a: str, b: str) -> bool:
    """Scheme, host and port all equal: the only case where a token may follow a URL."""
    return _origin(a) == _origin(b)


class HubClient:
    """Talks to one endpoint (`HF_ENDPOINT` by default) with one token (`HF_TOKEN` or the stored one)."""

    def __init__(self, endpoint: str | None = None, token: str | bool | None = None,
                 headers: dict[str, str] | None = None) -> None:
        from huggingface_hub import constants  # light (0.02 s), unlike HfApi or huggingface_hub.utils

        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        self.token = token
        self._api: hubapi.Api | None = None
        # `headers`: the Hub headers another HubClient built for the same endpoint and token (a fan-out worker
        # gets its parent's, so it never resolves the token and user agent again)
        self._headers: dict[str, str] | None = dict(headers) if headers is not None else None
        self._reached = False
        # The first call (which every listing follows) waits this long, as for a HEAD: a server that accepts
        # and never answers must not hang the command (huggingface_hub's API calls wait forever by default).
        self.timeout = float(constants.HF_HUB_ETAG_TIMEOUT)

    @property
    def api(self) -> hubapi.Api:
        """The API connections, made on first use: transfers alone (a fan-out worker) never need them."""
        if self._api is None:
            self._api = hubapi.Api()
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()

    # -- metadata ----------------------------------------------------------------------------------------------
    def resolve_revision(self, repo: RepoRef, revision: str) -> str:
        """The commit a branch, tag or `refs/pr/N` points to; a full commit sha is returned as is."""
        if is_commit(revision):
            return revision
        sha = self._info(repo, revision).get("sha")
        if not isinstance(sha, str) or not is_commit(sha):
            raise EndpointError(f"{self.endpoint} did not say which commit {revision!r} of {repo} is")
        return sha

    def _api_url(self, repo: RepoRef, *rest: str) -> str:
        return "/".join((f"{self.endpoint}/api/{repo.repo_type}s/{repo.repo_id}", *rest))

    def _info(self, repo: RepoRef, revision: str) -> dict:
        """`repo_info(revision=...)` (`GET /api/{type}s/{id}/revision/{rev}`), bounded by `self.timeout`; a
        success shows the endpoint answers."""
        url = self._api_url(repo, "revision", quote(revision, safe=""))
        info = self._call("GET", url, repo, revision, (self.timeout, self.timeout))
        if not isinstance(info, dict):
            raise self._unreadable(f"the info of {repo} is a {type(info).__name__}, not an object")
        self._reached = True
        return info

    def _reach(self, repo: RepoRef, revision: str) -> None:
        """One plain call before the first listing, so a dead endpoint is one line at once (listing pages are
        retried, as huggingface_hub retries them)."""
        if not self._reached:
            self._info(repo, revision)

    def list_files(self, repo: RepoRef, commit: str) -> dict[str, FileMeta]:
        """Every file at a commit (`list_repo_tree(recursive=True)`: the tree, page after page)."""
        self._reach(repo, commit)
        url: str | None = self._api_url(repo, "tree", quote(commit, safe="")) + "?" + urlencode(
            {"recursive": "true", "expand": "false"})
        source = f"{self.endpoint}'s listing of {repo}@{commit[:12]}"
        files: dict[str, FileMeta] = {}
        seen: set[str] = set()
        while url is not None:
            if url in seen or len(seen) >= MAX_PAGES:
                raise EndpointError(f"{source} kept paging ({len(seen)} pages; a page named twice, or more than "
                                    f"{MAX_PAGES:,}): nothing was fetched")
            seen.add(url)
            page, url = self._page(url, repo, commit)
            if not isinstance(page, list):
                raise self._unreadable(f"a listing page is a {type(page).__name__}, not a list")
            self._to_meta(page, source, files)  # page by page: a listing is held as FileMeta, not as JSON
        return files

    def _page(self, url: str, repo: RepoRef, commit: str) -> tuple[object, str | None]:
        """One listing page and the next page's URL; retried on 408/429/5xx and network errors, 5 times with
        backoff, as `http_backoff` retries it."""
        for attempt in range(1, hubapi.PAGE_RETRIES + 2):
            try:
                answer = self._answer("GET", url, repo, commit, (self.timeout, None))
            except _Unreachable:
                if attempt > hubapi.PAGE_RETRIES:
                    raise
                hubapi.sleep(hubapi.retry_wait(None, attempt))
                continue
            if answer.status in hubapi.RETRY_STATUS and attempt <= hubapi.PAGE_RETRIES:
                hubapi.sleep(hubapi.retry_wait(answer, attempt))
                continue
            page = self._decode(answer, repo, commit)
            try:
                return page, hubapi.next_page(answer)
            except ValueError as e:  # a `Link` to `file:///...`, say
                raise self._unreadable(str(e)) from None
        raise AssertionError("unreachable")

    def paths_info(self, repo: RepoRef, commit: str, paths: Iterable[str]) -> dict[str, FileMeta]:
        """Metadata for a few files without listing the whole repo (`get_paths_info`: a form POST); missing
        paths are simply absent."""
        self._reach(repo, commit)
        body = urlencode([*(("paths", p) for p in paths), ("expand", "false")]).encode()
        url = self._api_url(repo, "paths-info", quote(commit, safe=""))
        entries = self._call("POST", url, repo, commit, (self.timeout, None), body)
        if not isinstance(entries, list):
            raise self._unreadable(f"the file info is a {type(entries).__name__}, not a list")
        return self._to_meta(entries, f"{self.endpoint}'s file info for {repo}@{commit[:12]}")

    # -- the wire ----------------------------------------------------------------------------------------------
    def _call(self, method: str, url: str, repo: RepoRef, revision: str, timeout: hubapi.Timeout,
              body: bytes | None = None) -> object:
        return self._decode(self._answer(method, url, repo, revision, timeout, body), repo, revision)

    def _answer(self, method: str, url: str, repo: RepoRef, revision: str, timeout: hubapi.Timeout,
                body: bytes | None = None) -> hubapi.Answer:
        """One call (redirects followed), its transport failures as hfcache errors; offline, none is made."""
        from huggingface_hub import constants

        if constants.is_offline_mode():
            raise OfflineCacheMiss("offline mode is on (HF_HUB_OFFLINE=1)")
        with self._wire_errors():
            return self.api.request(method, url, self.headers_for, body, timeout)

    def _decode(self, answer: hubapi.Answer, repo: RepoRef, revision: str) -> object:
        error = hubapi.status_error(answer, self.endpoint, str(repo), revision)
        if error is not None:
            raise error
        try:
            return answer.json()
        except ValueError as e:
            raise self._unreadable(str(e)) from None

    def _unreadable(self, why: str) -> EndpointError:
        return EndpointError(f"{self.endpoint} sent an answer hfcache cannot read: {why}")

    @contextlib.contextmanager
    def _wire_errors(self) -> Iterator[None]:
        try:
            yield
        except hubapi.network_errors() as e:
            raise _Unreachable(f"cannot reach {self.endpoint}: {type(e).__name__}: {e}") from None
        except ValueError as e:  # a body over the bound, a gzip body that is not
            raise self._unreadable(str(e)) from None

    def _to_meta(self, entries: list, source: str, files: dict[str, FileMeta] | None = None) -> dict[str, FileMeta]:
        """Each entry as huggingface_hub's `RepoFile` reads it (`path`, `size`, `oid`, `lfs` {`oid`, `size`},
        `xetHash`; an entry whose `type` is not "file" is a folder), its shape checked (a wrong one is an
        EndpointError), then every name checked before any path is made from it: a listing naming
        `../../models--other--private/blobs/f` or `.` as a blob, or `../x` as a file, is refused whole. Adds
        to `files` (the pages before) when given."""
        files = {} if files is None else files
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or "type" not in e:
                raise self._unreadable(f"{source}: entry {i} is not a file or folder entry")
            if e["type"] != "file":
                continue
            lfs = e.get("lfs")
            fields = {"path": (e.get("path"), str), "size": (e.get("size"), int), "oid": (e.get("oid"), str),
                      "xetHash": (e.get("xetHash"), (str, type(None))), "lfs": (lfs, (dict, type(None)))}
            if isinstance(lfs, dict):
                fields.update({"lfs.oid": (lfs.get("oid"), str), "lfs.size": (lfs.get("size"), int)})
            for name, (value, kind) in fields.items():
                if not isinstance(value, kind) or isinstance(value, bool):
                    raise self._unreadable(f"{source}: entry {i} has {name} {type(value).__name__} "
                                           f"{str(value)[:40]!r}")
            try:
                path = safe_relpath(e["path"])
                if path in files:
                    raise UnsafePath(f"{path!r} is named twice")
                files[path] = FileMeta.checked(
                    size=e["size"],
                    blob_id=e["oid"],
                    lfs_sha256=lfs["oid"] if lfs is not None else None,
                    lfs_size=lfs["size"] if lfs is not None else None,
                    xet_hash=e.get("xetHash"),
                )
            except UnsafePath as err:
                raise UnsafePath(f"{source}: {err}; nothing was fetched") from None
        return files

    # -- transfers ---------------------------------------------------------------------------------------------
    def resolve_url(self, repo: RepoRef, commit: str, filename: str) -> str:
        """`hf_hub_url(...)` with this endpoint, built here: importing `huggingface_hub.file_download` for it
        costs 0.15 s of CPU per process (tests/test_compat* compare the two)."""
        from huggingface_hub import constants

        prefix = constants.REPO_TYPES_URL_PREFIXES.get(repo.repo_type, "")
        return f"{self.endpoint}/{prefix}{repo.repo_id}/resolve/{quote(commit, safe='')}/{quote(filename)}"

    def hub_headers(self) -> dict[str, str]:
        """Hub headers (user agent, token) for the endpoint's own origin, built once, as huggingface_hub's
        `build_hf_headers(token=..., library_name="hfcache", library_version=...)` builds them (`hubheaders`)."""
        if self._headers is None:
            from hfcache import __version__
            from hfcache.fetch import hubheaders

            try:
                self._headers = hubheaders.build_hf_headers(token=self.token, library_name="hfcache",
                                                            library_version=__version__, fetch=self._fetch_json)
            except hubheaders.NoToken as e:
                raise AuthError(str(e)) from None
        return dict(self._headers)

    def _fetch_json(self, url: str, timeout: float) -> object:
        """A plain GET's JSON (no Hub headers), or None unless it answers 2xx: the agent harness registry."""
        answer = self.api.request("GET", url, lambda _: {}, None, (timeout, timeout), 1 << 20)
        return answer.json() if 200 <= answer.status < 300 else None

    def headers_for(self, url: str) -> dict[str, str]:
        """Hub headers (user agent, token); the token only for the endpoint's own origin, never a CDN."""
        headers = self.hub_headers()
        if not url.startswith(self.endpoint + "/") and not same_origin(url, self.endpoint):
            headers.pop("authorization", None)
            headers.pop("Authorization", None)
        return headers
