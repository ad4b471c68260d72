"""`MirrorApp`: the Hub's routes answered from the store, with upstream asked for what the store lacks.

    GET  /api/{type}s/{repo}[/revision/{rev}]          repo info (sha, siblings) from the commit's listing
    GET  /api/{type}s/{repo}/tree/{rev}[/{path}]       listing, paginated with Link: rel="next"
    POST /api/{type}s/{repo}/paths-info/{rev}          metadata for a few paths
    GET  /api/{type}s/{repo}/auth-check                200 when the client may read the repo here
    HEAD|GET /[{type}s/]{repo}/resolve/{rev}/{path}    bytes: from the store (or nginx, with X-Accel-Redirect), or
                                                       followed while the one upstream fetch brings them

Every answer is built here from what the store records (never copied from upstream), so no Xet header
(`X-Xet-Hash`, a `Link` with `rel="xet-auth"`) reaches a client: every byte flows through the mirror.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from hfcache.cache.layout import HubCache, RepoRef
from hfcache.cache.meta import FileMeta
from hfcache.cache.names import RefName
from hfcache.errors import DiskFull, HfcacheError, RepoNotFound, RevisionNotFound
from hfcache.mirror.access import Access
from hfcache.mirror.flight import DONE, FAILED, Flights
from hfcache.mirror.follow import Aborted, follow, wait_until
from hfcache.mirror.upstream import Upstream, gateway_status
from hfcache.server.accesslog import AccessLog
from hfcache.server.app import (
    _dir_entry,
    _HeadAwareResponse,
    _tree_entry,
    error_response,
    file_response,
    info_response,
    tree_response,
)

_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
_API_WORDS = ("revision", "tree", "paths-info", "auth-check", "resolve")


class _QuietAborts(logging.Filter):
    """A body cut short on purpose (`Aborted`) is not a server error: uvicorn need not print its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, Aborted)


def quiet_aborts() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietAborts) for f in logger.filters):
        logger.addFilter(_QuietAborts())


class MirrorApp:
    """A pull-through mirror of `upstream` whose store is the hub cache at `cache_dir`.

    `revalidate`: seconds a branch or tag is trusted before asking upstream again. `token`: clients must send it
    (see `access`). `accel_redirect`: a URL prefix nginx maps to `cache_dir` (`location PREFIX { internal;
    alias DIR/; }`): a GET of a stored blob is answered with `X-Accel-Redirect` and nginx sends the bytes.
    """

    def __init__(self, cache_dir: Path, upstream: str, revalidate: float = 60.0, token: str | None = None,
                 accel_redirect: str | None = None, access_log: Callable[[str], None] | None = None,
                 offline: bool | None = None) -> None:
        if offline is None:
            from huggingface_hub import constants

            offline = constants.is_offline_mode()
        self.cache = HubCache(cache_dir)
        self.upstream = Upstream(self.cache, upstream, revalidate, offline=offline)
        self.access = Access(self.upstream, token)
        self.flights = Flights(self.cache, self.upstream)
        self.accel_redirect = None if accel_redirect is None else "/" + accel_redirect.strip("/") + "/"
        routes = Starlette()
        routes.router.default = self._endpoint
        self.asgi = AccessLog(routes, access_log) if access_log is not None else routes
        quiet_aborts()

    async def _endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1000})
            return
        if scope["method"] in ("GET", "HEAD", "POST"):
            request = Request(scope, receive)
            try:
                response = await self.dispatch(request)
            except HfcacheError as e:
                response = _failure(e)
            except OSError as e:  # the store cannot be written (a full disk, say): the client tries again later
                response = error_response(503, "StoreUnavailable", f"the mirror's store: {e.strerror or e}")
        else:
            response = Response("Method Not Allowed", status_code=405, headers={"Allow": "GET, HEAD, POST"})
        await response(scope, receive, send)

    async def dispatch(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        segs = [unquote(s) for s in raw.decode("latin-1").split("?")[0].split("/")[1:]]
        if segs and segs[-1] == "":
            segs = segs[:-1]
        if len(segs) >= 3 and segs[0] == "api" and segs[1] in _TYPES:
            return await self._api(request, _TYPES[segs[1]], segs[2:])
        repo_type = "model"
        if segs and segs[0] in _TYPES and segs[0] != "models":
            repo_type, segs = _TYPES[segs[0]], segs[1:]
        for n in (1, 2):
            if len(segs) > n + 2 and segs[n] == "resolve":
                return await self._resolve(request, _repo(segs[:n], repo_type), segs[n + 1], "/".join(segs[n + 2:]))
        if not self.access.admitted(request.headers.get("authorization")):
            return error_response(401, "Unauthorized", "this mirror wants a token")
        return error_response(404, "NotFound", "no such route")

    # -- the steps every repo route takes ----------------------------------------------------------------------
    async def _open(self, request: Request, repo: RepoRef,
                    revision: str) -> tuple[str, dict[str, FileMeta], str | None]:
        """(commit, its listing, the token to act with upstream) once the client may read the repo."""
        if not RefName.check(revision):
            raise _Refused(400, "BadRequest", f"invalid revision {revision!r}")
        authorization = request.headers.get("authorization")
        # what memory holds answers in the event loop; a question for upstream or the disk goes to a thread
        known = self.access.known(repo, authorization)
        denial, public = known if known is not None else \
            await run_in_threadpool(self.access.check, repo, authorization)
        if denial is not None:
            raise _Refused(denial.status, denial.code, denial.message)
        token = None if public else self.access.upstream_token(authorization)
        commit = self.upstream.known_commit(repo, revision) or \
            await run_in_threadpool(self.upstream.commit, repo, revision, token)
        files = self.upstream.known_listing(repo, commit)
        if files is None:
            files = await run_in_threadpool(self.upstream.listing, repo, commit, token)
        return commit, files, token

    # -- API ---------------------------------------------------------------------------------------------------
    async def _api(self, request: Request, repo_type: str, rest: list[str]) -> Response:
        n = 2 if len(rest) >= 2 and rest[1] not in _API_WORDS else 1
        repo, rest = _repo(rest[:n], repo_type), rest[n:]
        if rest == ["auth-check"]:
            denial, _ = await run_in_threadpool(self.access.check, repo, request.headers.get("authorization"))
            if denial is not None:
                raise _Refused(denial.status, denial.code, denial.message)
            return JSONResponse({})
        if not rest or rest[0] == "revision":
            revision = "/".join(rest[1:]) or "main"
            commit, files, _ = await self._open(request, repo, revision)
            return info_response(request, repo, commit, files)
        if rest[0] == "tree" and len(rest) >= 2:
            k = 3 if rest[1] == "refs" and len(rest) >= 4 else 1  # refs/pr/1 sent unencoded
            revision, path = "/".join(rest[1:1 + k]), "/".join(rest[1 + k:])
            commit, files, _ = await self._open(request, repo, revision)
            return tree_response(request, commit, revision, files, path)
        if rest[0] == "paths-info" and len(rest) >= 2 and request.method == "POST":
            form = await request.form()
            commit, files, _ = await self._open(request, repo, "/".join(rest[1:]))
            out = []
            for p in (str(p).strip("/") for p in form.getlist("paths")):
                if p in files:
                    out.append(_tree_entry(p, files[p]))
                elif p and any(f.startswith(p + "/") for f in files):
                    out.append(_dir_entry(p, [m.blob_id for f, m in files.items() if f.startswith(p + "/")]))
            return JSONResponse(out)
        return error_response(404, "NotFound", "no such route")

    # -- bytes -------------------------------------------------------------------------------------------------
    async def _resolve(self, request: Request, repo: RepoRef, revision: str, path: str) -> Response:
        commit, files, token = await self._open(request, repo, revision)
        meta = files.get(path)
        if meta is None:  # the commit's listing is upstream's own word: the file is not there
            return error_response(404, "EntryNotFound", f"{path} does not exist at {revision}", commit)
        headers = {"X-Repo-Commit": commit, "ETag": f'"{meta.etag}"', "Accept-Ranges": "bytes"}
        if meta.lfs_sha256:
            headers.update({"X-Linked-Etag": f'"{meta.lfs_sha256}"', "X-Linked-Size": str(meta.size)})
        blob = self.cache.blob_path(repo, meta.etag)
        if request.method == "HEAD":
            return _HeadAwareResponse(b"", headers={**headers, "Content-Length": str(meta.size)},
                                      media_type="application/octet-stream")
        if os.path.isfile(blob):
            if not os.path.lexists(self.cache.pointer_path(repo, commit, path)):
                self.flights.get(repo, commit, path, meta, token)  # links it into this commit's snapshot
            return self._stored(request, repo, blob, headers)
        if self.upstream.offline:
            return error_response(503, "OfflineCacheMiss", f"{path} at {revision} is not in the mirror's store "
                                                           "(offline mode is on)")
        flight = self.flights.get(repo, commit, path, meta, token)
        try:  # headers wait for the first bytes: an upstream failure can still be a 502, not a cut body
            await wait_until(flight, lambda: flight.available() > 0)
        except Aborted as e:
            return error_response(504, "UpstreamTimeout", str(e))
        if flight.state == FAILED:
            return _failure(flight.error)
        if flight.state == DONE:
            return self._stored(request, repo, blob, headers)
        # A Range is ignored while the blob is on its way (a server may): the whole body follows the fetch from
        # its start, hash-checked, where a far range would wait, silent, until the fetch reached it (clients time
        # out). huggingface_hub and hfcache both take a 200 to a ranged request and start over.
        return StreamingResponse(follow(flight), headers={**headers, "Content-Length": str(meta.size)},
                                 media_type="application/octet-stream")

    def _stored(self, request: Request, repo: RepoRef, blob: Path, headers: dict[str, str]) -> Response:
        if self.accel_redirect is not None:
            rel = blob.relative_to(self.cache.root).as_posix()
            kept = {k: v for k, v in headers.items() if k != "Accept-Ranges"}  # nginx says it for the file it sends
            return Response(b"", headers={**kept, "X-Accel-Redirect": self.accel_redirect + quote(rel)},
                            media_type="application/octet-stream")
        try:
            return file_response(request, blob, headers)
        except OSError:  # removed since (rm, reclaim): the client tries again
            return error_response(503, "NotInStore", "the blob left the mirror's store: try again")


class _Refused(HfcacheError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def _repo(parts: list[str], repo_type: str) -> RepoRef:
    try:
        return RepoRef("/".join(parts), repo_type)
    except HfcacheError:
        raise _Refused(400, "BadRequest", f"invalid repo id {'/'.join(parts)!r}") from None


def _failure(error: BaseException | None) -> Response:
    """A refusal or a genuine absence as upstream said it; any other trouble as 502/503/504, never 404/401."""
    if isinstance(error, _Refused):
        return error_response(error.status, error.code, str(error))
    if isinstance(error, RepoNotFound):
        return error_response(404, "RepoNotFound", str(error))
    if isinstance(error, RevisionNotFound):
        return error_response(404, "RevisionNotFound", str(error))
    if isinstance(error, DiskFull):  # the mirror's trouble, not upstream's: the client may try again later
        return error_response(503, "StoreFull", str(error))
    status = gateway_status(error) if error is not None else 502
    return error_response(status, "UpstreamUnavailable", f"upstream: {error}")
