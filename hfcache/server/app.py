"""The Hub's HTTP surface, as `huggingface_hub` and hfcache use it, without Xet (plain HTTP clients work).

    GET  /api/{type}s/{repo}[/revision/{rev}]          repo info: id, sha, siblings (?blobs=True for sizes)
    GET  /api/{type}s/{repo}/auth-check                200 when the token may read the repo
    GET  /api/{type}s/{repo}/tree/{rev}[/{path}]       listing (?recursive=true), paginated with Link: rel="next"
    POST /api/{type}s/{repo}/paths-info/{rev}          metadata for a few paths
    HEAD|GET /[{type}s/]{repo}/resolve/{rev}/{path}    bytes, with X-Repo-Commit, ETag, X-Linked-*, Range
    GET  /cdn/{sha256}?expires=&sig=                   LFS bytes on the "CDN" origin (when cdn_host is set)

Paths are parsed from the raw path so that `refs%2Fpr%2F1` stays one segment.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from hfcache.cache.hashing import hash_bytes
from hfcache.cache.layout import RepoRef
from hfcache.cache.meta import FileMeta
from hfcache.server.accesslog import AccessLog
from hfcache.server.catalog import Catalog, ServedFile, ServedRepo
from hfcache.server.faults import BODY_FAULTS, Fault, FaultPlan, faulty_body
from hfcache.server.wire import bearer_matches, header_text, parse_cursor, parse_range

PAGE_SIZE = 1000
SMALL_FILE = 1024 * 1024
_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}


# The record of the request being handled: a test that injects faults asks which request one hit (handling awaits
# between logging and taking a fault, so "the last record" may be another request's).
CURRENT_REQUEST: ContextVar = ContextVar("hfcache_current_request", default=None)


@dataclass(frozen=True)
class RequestRecord:
    method: str
    host: str
    path: str
    authorization: str | None
    range: str | None = None


class _BlobResponse(FileResponse):
    """A large file, streamed by Starlette, for the byte span we already decided (None: the whole file)."""

    chunk_size = 1024 * 1024

    def __init__(self, path: str | os.PathLike[str], span: tuple[int, int] | None, headers: dict[str, str]) -> None:
        super().__init__(path, headers=headers, media_type="application/octet-stream")
        self.span = span

    async def __call__(self, scope, receive, send) -> None:
        kept = [(k, v) for k, v in scope["headers"] if k not in (b"range", b"if-range")]
        if self.span is not None:
            kept.append((b"range", f"bytes={self.span[0]}-{self.span[1]}".encode()))
        await super().__call__({**scope, "headers": kept}, receive, send)


class _HeadAwareResponse(Response):
    """A body-less HEAD answer that keeps the GET's Content-Length."""

    def init_headers(self, headers=None) -> None:
        super().init_headers(headers)
        if headers and "Content-Length" in headers:
            self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
            self.raw_headers.append((b"content-length", headers["Content-Length"].encode()))


def _error(status: int, code: str, message: str, commit: str | None = None) -> Response:
    """The Hub's error shape: huggingface_hub maps `X-Error-Code` to its exceptions (EntryNotFound with
    X-Repo-Commit records `.no_exist`). Names echoed in the header are made ASCII; the JSON keeps them whole."""
    headers = {"X-Error-Code": code, "X-Error-Message": header_text(message)}
    if commit:
        headers["X-Repo-Commit"] = commit
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _not_cached(path: str, revision: str) -> Response:
    """A file the served cache lacks but the commit may hold: a 404 that huggingface_hub does not record as
    `.no_exist` (no EntryNotFound code, no X-Repo-Commit)."""
    return _error(404, "EntryNotCached", f"{path} at {revision} is not in the served cache")


def _tree_entry(path: str, meta: FileMeta) -> dict:
    entry: dict = {"type": "file", "oid": meta.blob_id, "size": meta.size, "path": path}
    if meta.lfs_sha256:
        pointer_size = len(f"version https://git-lfs.github.com/spec/v1\noid sha256:{meta.lfs_sha256}\n"
                           f"size {meta.size}\n")
        entry["lfs"] = {"oid": meta.lfs_sha256, "size": meta.size, "pointerSize": pointer_size}
    return entry


def _dir_entry(path: str, children: list[str]) -> dict:
    oid = hash_bytes("\n".join(sorted(children)).encode(), "git-sha1")
    return {"type": "directory", "oid": oid, "path": path}


def error_response(status: int, code: str, message: str, commit: str | None = None) -> Response:
    """The Hub's error shape (see `_error`), for other apps answering like the Hub (the mirror)."""
    return _error(status, code, message, commit)


def _metas(files: Mapping[str, ServedFile]) -> dict[str, FileMeta]:
    return {p: f.meta for p, f in files.items()}


def info_response(request: Request, repo: RepoRef, commit: str, files: Mapping[str, FileMeta]) -> Response:
    """`/api/{type}s/{repo}/revision/{rev}`: the repo info `snapshot_download` reads (sha, siblings)."""
    blobs = request.query_params.get("blobs", "").lower() == "true"
    siblings = []
    for path in sorted(files):
        sib: dict = {"rfilename": path}
        if blobs:
            meta = files[path]
            sib.update(size=meta.size, blobId=meta.blob_id)
            if meta.lfs_sha256:
                sib["lfs"] = {k if k != "oid" else "sha256": v for k, v in _tree_entry(path, meta)["lfs"].items()}
        siblings.append(sib)
    return JSONResponse({
        "_id": hashlib.sha1(str(repo).encode(), usedforsecurity=False).hexdigest()[:24],
        "id": repo.repo_id, "sha": commit, "private": False, "disabled": False, "gated": False,
        "tags": [], "downloads": 0, "likes": 0, "siblings": siblings,
        "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
    })


def tree_response(request: Request, commit: str, revision: str, files: Mapping[str, FileMeta],
                  path: str) -> Response:
    """`/api/{type}s/{repo}/tree/{rev}[/{path}]`: one page of the listing, `Link: rel="next"` to the next."""
    recursive = request.query_params.get("recursive", "").lower() in ("true", "1")
    prefix = f"{path}/" if path else ""
    if path and path in files:
        entries = [_tree_entry(path, files[path])]
    else:
        below = [p for p in sorted(files) if p.startswith(prefix)]
        if path and not below:
            return _error(404, "EntryNotFound", f"{path} does not exist at {revision}", commit)
        dirs: dict[str, list[str]] = {}
        entries = []
        for p in below:
            parts = p[len(prefix):].split("/")
            for i in range(1, len(parts)):
                d = prefix + "/".join(parts[:i])
                dirs.setdefault(d, []).append(files[p].blob_id)
            if recursive or len(parts) == 1:
                entries.append(_tree_entry(p, files[p]))
        shown = [d for d in dirs if recursive or "/" not in d[len(prefix):]]
        entries = [_dir_entry(d, dirs[d]) for d in shown] + entries
        entries.sort(key=lambda e: e["path"])
    cursor = parse_cursor(request.query_params.get("cursor"))
    if cursor is None:
        return _error(400, "BadRequest", "Invalid cursor")
    page = entries[cursor:cursor + PAGE_SIZE]
    headers = {}
    if cursor + PAGE_SIZE < len(entries):
        raw = (request.scope.get("raw_path") or b"").decode("latin-1").split("?")[0]
        path = "/".join(quote(unquote(seg), safe="") for seg in raw.split("/"))  # ASCII, as a header must be
        nxt = request.url.replace(path=path).include_query_params(cursor=cursor + PAGE_SIZE)
        headers["Link"] = f'<{nxt}>; rel="next"'
    return JSONResponse(page, headers=headers)


def file_response(request: Request, local: str | os.PathLike[str], headers: dict[str, str],
                  fault: Fault | None = None) -> Response:
    """The bytes of a file with `headers` (Range and If-Range honoured; a body fault, for tests, if given).

    Small files are answered from memory in the event loop: for them a thread hop per request costs more
    than the read.
    """
    size = os.stat(local).st_size
    if_range = request.headers.get("if-range")
    span = None if if_range is not None and if_range != headers.get("ETag") else \
        parse_range(request.headers.get("range"), size)
    if span == "unsatisfiable":
        return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
    if fault is None and size > SMALL_FILE:
        return _BlobResponse(local, span, headers)
    start, end, status = 0, size - 1, 200
    if span is not None:
        (start, end), status = span, 206
        headers = {**headers, "Content-Range": f"bytes {start}-{end}/{size}"}
    length = max(0, end - start + 1)
    headers = {**headers, "Content-Length": str(length)}
    if fault is not None:
        return StreamingResponse(faulty_body(Path(local), start, length, fault), status_code=status,
                                 headers=headers, media_type="application/octet-stream")
    body = b""
    if request.method != "HEAD":
        with open(local, "rb") as f:
            f.seek(start)
            body = f.read(length)
    return _HeadAwareResponse(body, status_code=status, headers=headers, media_type="application/octet-stream")


class HubApp:
    """Routes requests over a `Catalog`.

    `cdn_host` sends LFS downloads to another origin, as the Hub sends them to its CDN: the same server under
    another host name (`localhost` for `127.0.0.1`), so clients must treat it as a foreign origin. `token`
    makes every repo private: requests must carry `Authorization: Bearer <token>` (the CDN needs none).
    `latency` delays every answer, to measure clients as over a real network rather than loopback.
    `access_log` receives one line per request (see `hfcache.server.accesslog`).
    """

    def __init__(self, catalog: Catalog, cdn_host: str | None = None, cdn_ttl: float = 3600.0,
                 token: str | None = None, latency: float = 0.0,
                 access_log: Callable[[str], None] | None = None) -> None:
        self.catalog = catalog
        self.token = token
        self.latency = latency  # seconds added to every answer: a WAN round trip, for benchmarks
        self.cdn_host = cdn_host
        self.cdn_ttl = cdn_ttl
        self.log: deque[RequestRecord] = deque(maxlen=100_000)
        self.faults = FaultPlan()
        self._key = os.urandom(16)
        routes = Starlette()
        routes.router.default = self._endpoint  # every path, even one with a CR or LF a route pattern misses
        routes.state.hub = self
        self.asgi = AccessLog(routes, access_log) if access_log is not None else routes

    async def _endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # a websocket upgrade: no such route
            await send({"type": "websocket.close", "code": 1000})
            return
        if scope["method"] in ("GET", "HEAD", "POST"):
            response = await self.dispatch(Request(scope, receive))
        else:
            response = Response("Method Not Allowed", status_code=405, headers={"Allow": "GET, HEAD, POST"})
        await response(scope, receive, send)

    async def dispatch(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        segs = [unquote(s) for s in raw.decode("latin-1").split("?")[0].split("/")[1:]]
        path = "/".join(segs)
        if self.latency:
            await asyncio.sleep(self.latency)
        record = RequestRecord(request.method, request.headers.get("host", ""), path,
                               request.headers.get("authorization"), request.headers.get("range"))
        self.log.append(record)
        CURRENT_REQUEST.set(record)  # this request's record, wherever its handling goes (awaits, threads)
        statuses = {"429", "500", "503"}
        if fault := (self.faults.take_api if segs[:1] == ["api"] else self.faults.take)(path, statuses):
            headers = {"Retry-After": str(int(fault.seconds))} if fault.kind == "429" else {}
            return Response(f"fault injection: HTTP {fault.kind}", status_code=int(fault.kind), headers=headers)
        if segs and segs[-1] == "":
            segs = segs[:-1]
        if self.token and not (len(segs) == 2 and segs[0] == "cdn"):
            auth = request.headers.get("authorization")
            if auth is None:
                return _error(401, "RepoNotFound", "Repository not found (or private and no token sent)")
            if not bearer_matches(auth, self.token):
                return _error(401, "Unauthorized", "Invalid credentials in Authorization header")
        if len(segs) >= 2 and segs[0] == "api" and segs[1] in _TYPES:
            return await self._api(request, _TYPES[segs[1]], segs[2:])
        if len(segs) == 2 and segs[0] == "cdn":
            return await self._cdn(request, segs[1])
        repo_type = "model"
        if segs and segs[0] in _TYPES and segs[0] != "models":
            repo_type, segs = _TYPES[segs[0]], segs[1:]
        for n in (1, 2):
            if len(segs) > n + 1 and segs[n] == "resolve":
                served = await self._find(repo_type, segs[:n])
                if served is not None or n == 2:
                    return await self._resolve(request, served, "/".join(segs[:n]), repo_type, segs[n + 1],
                                         "/".join(segs[n + 2:]))
        return _error(404, "NotFound", "no such route")

    # -- lookup ------------------------------------------------------------------------------------------------
    async def _find(self, repo_type: str, parts: list[str]) -> ServedRepo | None:
        """A served repo; (re)indexing one may hash files, so it runs in a thread, never in the event loop."""
        try:
            repo = RepoRef("/".join(parts), repo_type)
            ready, served = self.catalog.cached(repo)
            return served if ready else await run_in_threadpool(self.catalog.get, repo)
        except Exception:
            return None

    async def _split_repo(self, repo_type: str, rest: list[str]) -> tuple[ServedRepo | None, str, list[str]]:
        """Repo ids are `name` or `ns/name`: prefer whichever exists."""
        if len(rest) >= 2 and (served := await self._find(repo_type, rest[:2])) is not None:
            return served, "/".join(rest[:2]), rest[2:]
        if rest and (served := await self._find(repo_type, rest[:1])) is not None:
            return served, rest[0], rest[1:]
        n = 2 if len(rest) >= 2 and rest[1] not in ("revision", "tree", "paths-info", "resolve") else 1
        return None, "/".join(rest[:n]), rest[n:]

    # -- API ---------------------------------------------------------------------------------------------------
    async def _api(self, request: Request, repo_type: str, rest: list[str]) -> Response:
        served, repo_id, rest = await self._split_repo(repo_type, rest)
        if served is None:
            return _error(404, "RepoNotFound", f"Repository {repo_id} not found")
        if not rest or rest[0] == "revision":
            revision = "/".join(rest[1:]) or "main"
            return self._info(request, served, revision)
        if rest == ["auth-check"]:  # the token (if this server wants one) was checked above
            return JSONResponse({})
        if rest[0] == "tree" and len(rest) >= 2:
            revision, path = self._split_rev(served, rest[1:])
            return self._tree(request, served, revision, path)
        if rest[0] == "paths-info" and len(rest) >= 2 and request.method == "POST":
            form = await request.form()
            return await self._paths_info(served, "/".join(rest[1:]), [str(p) for p in form.getlist("paths")])
        return _error(404, "NotFound", "no such route")

    @staticmethod
    def _split_rev(served: ServedRepo, parts: list[str]) -> tuple[str, str]:
        """`tree/refs/pr/1/sub` when a client did not encode the slashes: longest known ref wins."""
        for n in range(len(parts), 1, -1):
            if "/".join(parts[:n]) in served.refs:
                return "/".join(parts[:n]), "/".join(parts[n:])
        return parts[0], "/".join(parts[1:])

    def _info(self, request: Request, served: ServedRepo, revision: str) -> Response:
        commit = served.resolve(revision)
        if commit is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return info_response(request, served.repo, commit, _metas(served.commits[commit]))

    def _tree(self, request: Request, served: ServedRepo, revision: str, path: str) -> Response:
        commit = served.resolve(revision)
        if commit is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return tree_response(request, commit, revision, _metas(served.commits[commit]), path)

    async def _paths_info(self, served: ServedRepo, revision: str, paths: list[str]) -> Response:
        commit = served.resolve(revision)
        if commit is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        out = []
        for p in paths:
            p = p.strip("/")
            files = served.commits[commit]
            if p not in files and (added := await self._added(served, commit, p)) is not None:
                files = {p: added}
            if p in files:
                out.append(_tree_entry(p, files[p].meta))
            elif any(f.startswith(p + "/") for f in files):
                out.append(_dir_entry(p, [files[f].meta.blob_id for f in files if f.startswith(p + "/")]))
            elif not self.catalog.absent(served, commit, p):
                return _not_cached(p, revision)  # leaving it out would tell the client it does not exist
        return JSONResponse(out)

    async def _added(self, served: ServedRepo, commit: str, path: str):
        """A file put in the snapshot folder after the repo was indexed (hashing it, if need be, in a thread)."""
        if self.catalog.cache is None or not path:
            return None
        return await run_in_threadpool(self.catalog.find_added, served, commit, path)

    # -- bytes -------------------------------------------------------------------------------------------------
    async def _resolve(self, request: Request, served: ServedRepo | None, repo_id: str, repo_type: str,
                       revision: str, path: str) -> Response:
        if served is None:
            return _error(404, "RepoNotFound", f"Repository {repo_id} not found")
        commit = served.resolve(revision)
        if commit is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        entry = served.commits[commit].get(path)
        if entry is None:  # perhaps added to the snapshot folder since it was indexed
            entry = await self._added(served, commit, path)
        if entry is None and not self.catalog.absent(served, commit, path):
            return _not_cached(path, revision)
        if entry is None:
            return _error(404, "EntryNotFound", f"{path} does not exist at {revision}", commit)
        meta = entry.meta
        headers = {"X-Repo-Commit": commit, "ETag": f'"{meta.etag}"', "Accept-Ranges": "bytes"}
        if meta.lfs_sha256:
            headers.update({"X-Linked-Etag": f'"{meta.lfs_sha256}"', "X-Linked-Size": str(meta.size)})
            if self.cdn_host:
                base = f"{request.url.scheme}://{self.cdn_host}:{request.url.port}"
                expired = self.faults.take(f"{repo_id}/resolve/{revision}/{path}", {"expired"})
                url = self.cdn_url(base, meta.lfs_sha256, path, expires=time.time() - 60 if expired else None)
                return RedirectResponse(url, status_code=302, headers=headers)
        try:
            return self._file(request, entry.local, headers, path)
        except OSError:  # removed from the cache since it was indexed
            return _not_cached(path, revision)

    def _file(self, request: Request, local, headers: dict[str, str], path: str) -> Response:
        """The bytes of a file (Range honoured), unless a body fault says otherwise.

        Small files are answered from memory in the event loop: for them a thread hop per request costs more
        than the read.
        """
        fault = self.faults.take(path, BODY_FAULTS) if request.method == "GET" else None
        return file_response(request, local, headers, fault)

    def cdn_url(self, base: str, sha256: str, name: str, expires: float | None = None) -> str:
        expires = int(expires if expires is not None else time.time() + self.cdn_ttl)
        sig = hmac.new(self._key, f"{sha256}:{expires}".encode(), "sha256").hexdigest()[:32]
        return f"{base}/cdn/{quote(sha256)}?expires={expires}&sig={sig}&name={quote(name)}"

    async def _cdn(self, request: Request, sha256: str) -> Response:
        try:
            expires = int(request.query_params.get("expires", "0"))
        except ValueError:
            expires = 0
        sig = hmac.new(self._key, f"{sha256}:{expires}".encode(), "sha256").hexdigest()[:32]
        if not hmac.compare_digest(sig, request.query_params.get("sig", "")) or expires < time.time():
            return Response("Request has expired or its signature is invalid", status_code=403)
        local = await run_in_threadpool(self.catalog.find_sha256, sha256)
        if local is None:
            return Response("Not found", status_code=404)
        label = f"cdn/{sha256}/{request.query_params.get('name', '')}"  # fault rules can match the file name
        try:
            return self._file(request, local, {"ETag": f'"{sha256}"'}, label)
        except OSError:  # removed from the cache since it was indexed
            return Response("Not found", status_code=404)
