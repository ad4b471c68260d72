"""The HTTP side of tests/xethub.py: a threaded http.server handler and the Hub + CAS routes (see there)."""

from __future__ import annotations

import json
import re
import socket
import struct
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.xetcas_format import FormatError, reconstruct

if TYPE_CHECKING:
    from tests.xethub import XetHub

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
MAX_BODY = 256 * 1024 * 1024  # a xorb is at most 64 MiB; a shard far less
PAGE = 1000
BLOCK = 1024 * 1024
HEX64 = re.compile(r"[0-9a-f]{64}")
RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class Reply(Exception):
    """Raised by a route to answer at once."""

    def __init__(self, status: int, body: bytes | dict | list = b"", headers: dict | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """An inclusive (start, end) for one `bytes=` range, None for none; Reply(416) when unsatisfiable."""
    if not header:
        return None
    m = RANGE.fullmatch(header.strip())
    if not m or (not m[1] and not m[2]):
        raise Reply(416, headers={"Content-Range": f"bytes */{size}"})
    if not m[1]:
        start, end = max(0, size - int(m[2])), size - 1
    else:
        start, end = int(m[1]), min(int(m[2]), size - 1) if m[2] else size - 1
    if start >= size or end < start:
        raise Reply(416, headers={"Content-Range": f"bytes */{size}"})
    return start, end


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle keep-alive connection ends its thread
    server_version = "xethub/1"

    def setup(self) -> None:
        super().setup()
        self.server.open_sockets.add(self.connection)

    def finish(self) -> None:
        self.server.open_sockets.discard(self.connection)
        super().finish()

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.server.routes.handle(self)

    do_HEAD = do_POST = do_PUT = do_GET

    def body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            raise Reply(413, b"too large")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline(100).split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline(100)
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(10)
                if len(out) > MAX_BODY:
                    raise Reply(413, b"too large")
        return self.rfile.read(n) if n else b""


class XetRoutes:
    def __init__(self, hub: XetHub) -> None:
        self.hub = hub

    # -- plumbing ----------------------------------------------------------------------------------------------
    def handle(self, h: Handler) -> None:
        url = urlsplit(h.path)
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        status = 500
        try:
            if h.command in ("POST", "PUT"):
                h.request_body = h.body()
            status = self.route(h, parts, query) or 500
        except Reply as r:
            status = r.status
            self.send(h, r.status, r.body, r.headers)
        except (ConnectionError, TimeoutError):
            status = 599
            h.close_connection = True
        except FormatError as e:
            status = 400
            with self.hub.lock:
                self.hub.stats.errors.append(f"{h.command} {url.path}: {e}")
            self.send(h, 400, {"error": str(e)})
        finally:
            with self.hub.lock:
                self.hub.stats.requests.append((h.command, url.path, status))

    def send(self, h: Handler, status: int, body: bytes | dict | list = b"", headers: dict | None = None) -> None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD" and body:
            h.wfile.write(body)

    def user_auth(self, h: Handler) -> None:
        if self.hub.token and h.headers.get("Authorization") != f"Bearer {self.hub.token}":
            raise Reply(401, {"error": "Invalid credentials in Authorization header"},
                        {"X-Error-Message": "Invalid credentials in Authorization header"})

    def cas_auth(self, h: Handler) -> None:
        token = (h.headers.get("Authorization") or "").removeprefix("Bearer ")
        with self.hub.lock:
            exp = self.hub.cas_tokens.get(token)
        if exp is None or exp < time.time():
            raise Reply(401, {"error": "invalid or expired CAS token"})

    def route(self, h: Handler, parts: list[str], query: dict[str, str]) -> int | None:
        if parts[:1] == ["cas"]:
            return self.cas(h, parts[1:], query)
        if parts[:1] == ["bridge"] and len(parts) == 2:
            return self.bridge(h, parts[1], query)
        if parts[:1] == ["api"] and len(parts) >= 3 and parts[1] in REPO_TYPES:
            return self.api(h, REPO_TYPES[parts[1]], parts[2:], query)
        repo_type = "model"
        if parts and parts[0] in REPO_TYPES and parts[0] != "models":
            repo_type, parts = REPO_TYPES[parts[0]], parts[1:]
        if "resolve" in parts and h.command in ("GET", "HEAD"):
            i = parts.index("resolve")
            if i >= 1 and len(parts) >= i + 3:
                return self.resolve(h, repo_type, "/".join(parts[:i]), parts[i + 1], "/".join(parts[i + 2:]))
        raise Reply(404, {"error": "no such route"})

    def find_repo(self, repo_type: str, parts: list[str]):
        """The repo named by the first one or two path segments, and the rest."""
        for n in (2, 1):
            repo = self.hub.repos.get((repo_type, "/".join(parts[:n])))
            if repo is not None:
                return repo, parts[n:]
        raise Reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})

    def commit_of(self, repo, rev: str) -> str:
        commit = repo.resolve(rev)
        if commit is None:
            raise Reply(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"})
        return commit

    # -- Hub ---------------------------------------------------------------------------------------------------
    def api(self, h: Handler, repo_type: str, parts: list[str], query: dict[str, str]) -> None:
        self.user_auth(h)
        repo, rest = self.find_repo(repo_type, parts)
        if not rest or rest[0] == "revision":
            commit = self.commit_of(repo, "/".join(rest[1:]) or "main")
            siblings = []
            for path, e in sorted(repo.commits[commit].items()):
                sib = {"rfilename": path, "size": e.size, "blobId": e.blob_id}
                if e.sha256:
                    sib["lfs"] = {"size": e.size, "sha256": e.sha256, "pointerSize": len(lfs_ptr(e))}
                siblings.append(sib)
            raise Reply(200, {"_id": "0" * 24, "id": repo.repo_id, "sha": commit, "private": bool(self.hub.token),
                              "disabled": False, "gated": False, "tags": [], "downloads": 0, "likes": 0,
                              "siblings": siblings, "lastModified": "2026-01-01T00:00:00.000Z",
                              "createdAt": "2026-01-01T00:00:00.000Z"})
        if rest[0] == "paths-info" and len(rest) >= 2 and h.command == "POST":
            return self.paths_info(h, repo, "/".join(rest[1:]))
        if rest[0] == "tree" and len(rest) >= 2:
            return self.tree(h, repo, rest[1], "/".join(rest[2:]), query)
        if rest[0] in ("xet-read-token", "xet-write-token") and len(rest) >= 2:
            self.commit_of(repo, "/".join(rest[1:]))
            with self.hub.lock:
                self.hub.stats.token_calls += 1
            if rest[0] == "xet-read-token" and self.hub.faults.take("token_401"):
                raise Reply(401, {"error": "token refused (fault)"})
            token, exp = self.hub.issue_cas_token()
            raise Reply(200, {"casUrl": self.hub.cas_url, "accessToken": token, "exp": exp},
                        {"X-Xet-Cas-Url": self.hub.cas_url, "X-Xet-Access-Token": token,
                         "X-Xet-Token-Expiration": str(exp)})
        raise Reply(404, {"error": "no such route"})

    def file_entry(self, path: str, e) -> dict:
        entry = {"type": "file", "oid": e.blob_id, "size": e.size, "path": path}
        if e.sha256:
            entry["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": len(lfs_ptr(e))}
            if e.xet_hash and not self.hub.faults.no_xet:
                entry["xetHash"] = e.xet_hash
        return entry

    def paths_info(self, h: Handler, repo, rev: str) -> None:
        """`POST .../paths-info/{rev}` (form `paths=` repeated): entries for those paths that exist."""
        files = repo.commits[self.commit_of(repo, rev)]
        out = []
        for p in parse_qs(h.request_body.decode("utf-8", "replace")).get("paths", []):
            p = p.strip("/")
            if p in files:
                out.append(self.file_entry(p, files[p]))
            elif any(f.startswith(p + "/") for f in files):
                out.append({"type": "directory", "oid": "0" * 40, "path": p})
        raise Reply(200, out)

    def tree(self, h: Handler, repo, rev: str, prefix: str, query: dict[str, str]) -> None:
        commit = self.commit_of(repo, rev)
        files = repo.commits[commit]
        recursive = query.get("recursive", "").lower() in ("true", "1")
        base = f"{prefix}/" if prefix else ""
        entries, dirs = [], set()
        for path, e in sorted(files.items()):
            if not path.startswith(base):
                continue
            rel = path[len(base):].split("/")
            for i in range(1, len(rel) if recursive else min(2, len(rel))):
                dirs.add(base + "/".join(rel[:i]))
            if recursive or len(rel) == 1:
                entries.append(self.file_entry(path, e))
        if prefix and not entries and not dirs:
            raise Reply(404, {"error": f"{prefix} does not exist"}, {"X-Error-Code": "EntryNotFound"})
        entries += [{"type": "directory", "oid": "0" * 40, "path": d} for d in dirs]
        entries.sort(key=lambda x: x["path"])
        start = int(query.get("cursor", "0") or 0)
        headers = {}
        if start + PAGE < len(entries):
            url = urlsplit(h.path)
            headers["Link"] = f'<{self.hub.endpoint}{url.path}?recursive={str(recursive).lower()}' \
                              f'&cursor={start + PAGE}>; rel="next"'
        raise Reply(200, entries[start:start + PAGE], headers)

    def resolve(self, h: Handler, repo_type: str, repo_id: str, rev: str, path: str) -> None:
        self.user_auth(h)
        repo, rest = self.find_repo(repo_type, repo_id.split("/"))
        if rest:
            raise Reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        commit = self.commit_of(repo, rev)
        e = repo.commits[commit].get(path)
        if e is None:
            raise Reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
        headers = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        if e.sha256 is None:
            headers["ETag"] = f'"{e.blob_id}"'
            return self.serve_file(h, self.hub.root / "git" / e.blob_id, e.size, headers, "git_bytes")
        exp = int(time.time() + 3600)
        headers.update({"ETag": f'"{e.sha256}"', "X-Linked-Etag": f'"{e.sha256}"', "X-Linked-Size": str(e.size),
                        "Location": f"{self.hub.bridge_base}/bridge/{e.sha256}?exp={exp}"
                                    f"&sig={self.hub.sign('bridge', e.sha256, exp)}"})
        if e.xet_hash and not self.hub.faults.no_xet:
            type_part = f"{repo_type}s"
            headers["X-Xet-Hash"] = e.xet_hash
            headers["Link"] = (f'<{self.hub.endpoint}/api/{type_part}/{quote(repo.repo_id)}/xet-read-token/{commit}>;'
                               f' rel="xet-auth", <{self.hub.cas_url}/v1/reconstructions/{e.xet_hash}>;'
                               f' rel="xet-reconstruction-info"')
        raise Reply(302, b"", headers)

    def bridge(self, h: Handler, sha256: str, query: dict[str, str]) -> None:
        self.check_signature("bridge", sha256, query)
        path = self.hub.lfs_path(sha256)
        if not HEX64.fullmatch(sha256) or not path.is_file():
            raise Reply(404, b"not found")
        return self.serve_file(h, path, path.stat().st_size, {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"},
                        "bridge_bytes")

    def check_signature(self, kind: str, name: str, query: dict[str, str]) -> None:
        try:
            exp = int(query.get("exp", "0"))
        except ValueError:
            exp = 0
        good = self.hub.sign(kind, name, exp) == query.get("sig")
        if not good or exp < time.time():
            raise Reply(403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")

    def serve_file(self, h: Handler, path, size: int, headers: dict, counter: str, fault: str | None = None) -> int:
        span = parse_range(h.headers.get("Range"), size)
        start, end = span if span else (0, size - 1)
        status = 206 if span else 200
        length = max(0, end - start + 1)
        headers = {**headers, "Content-Length": str(length), "Content-Type": "application/octet-stream"}
        if span:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if h.command == "HEAD":
            return status
        sent, cut = 0, length // 2 if fault == "reset" else None
        with open(path, "rb") as f:
            f.seek(start)
            while sent < length:
                block = f.read(min(BLOCK, length - sent, (cut - sent) if cut is not None else BLOCK))
                if not block:
                    break
                if fault == "corrupt" and sent <= length // 2 < sent + len(block):
                    i = length // 2 - sent
                    block = block[:i] + bytes([block[i] ^ 0xFF]) + block[i + 1:]
                h.wfile.write(block)
                sent += len(block)
                with self.hub.lock:
                    setattr(self.hub.stats, counter, getattr(self.hub.stats, counter) + len(block))
                if cut is not None and sent >= cut:
                    h.wfile.flush()
                    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    h.connection.close()  # RST: the client sees a reset mid-body
                    raise ConnectionResetError("fault: reset mid-xorb")
        return status

    # -- CAS ---------------------------------------------------------------------------------------------------
    def cas(self, h: Handler, parts: list[str], query: dict[str, str]) -> None:
        hub = self.hub
        if parts[:1] == ["xorb"] and len(parts) == 2 and h.command in ("GET", "HEAD"):
            return self.xorb_get(h, parts[1], query)
        if parts == ["v1", "telemetry"]:
            raise Reply(200, {})
        self.cas_auth(h)
        if parts[:2] == ["v1", "reconstructions"] and len(parts) == 3 and h.command == "GET":
            return self.reconstruction(h, parts[2])
        if parts[:2] == ["v1", "xorbs"] and len(parts) == 4 and HEX64.fullmatch(parts[3]):
            if h.command == "HEAD":
                raise Reply(200 if (hub.root / "xorbs" / parts[3]).is_file() else 404)
            if h.command == "POST":
                inserted = hub.store_xorb(parts[3], h.request_body)
                with hub.lock:
                    hub.stats.xorb_bytes_uploaded += len(h.request_body)
                raise Reply(200, {"was_inserted": inserted})
        if parts == ["v1", "shards"] and h.command == "POST":
            hub.store_shard(h.request_body)
            with hub.lock:
                hub.stats.shards_uploaded += 1
            raise Reply(200, {"result": 1})
        if parts[:2] == ["v1", "chunks"] and len(parts) == 4 and h.command == "GET":
            with hub.lock:
                hub.stats.dedup_queries += 1
                name = hub.chunk_shard.get(parts[3])
            if name is None:
                raise Reply(404, b"Shard not found")
            raise Reply(200, (hub.root / "shards" / name).read_bytes(), {"Content-Type": "application/octet-stream"})
        raise Reply(404, {"error": "not implemented by the emulator"})

    def reconstruction(self, h: Handler, file_hash: str) -> None:
        hub = self.hub
        with hub.lock:
            hub.stats.reconstructions += 1
            segments = hub.files.get(file_hash)
        if hub.faults.take("reconstruction_401"):
            raise Reply(401, {"error": "token expired (fault)"})
        if segments is None:
            raise Reply(404, {"error": "file not found"})
        size = sum(s.unpacked for s in segments)
        if size == 0:
            raise Reply(200, {"offset_into_first_range": 0, "terms": [], "fetch_info": {}})
        start, end = parse_range(h.headers.get("Range"), size) or (0, size - 1)
        offset, terms, fetches = reconstruct(segments, hub.chunks_of, start, end + 1)
        exp = int(time.time() + hub.faults.xorb_url_ttl)
        fetch_info: dict[str, list] = {}
        for f in fetches:
            url = f"{hub.cas_url}/xorb/{f.xorb}?exp={exp}&sig={hub.sign('xorb', f.xorb, exp)}"
            fetch_info.setdefault(f.xorb, []).append({"range": {"start": f.chunk_start, "end": f.chunk_end},
                                                      "url": url,
                                                      "url_range": {"start": f.byte_start, "end": f.byte_end - 1}})
        raise Reply(200, {"offset_into_first_range": offset,
                          "terms": [{"hash": t.xorb, "unpacked_length": t.unpacked,
                                     "range": {"start": t.chunk_start, "end": t.chunk_end}} for t in terms],
                          "fetch_info": fetch_info})

    def xorb_get(self, h: Handler, xorb_hash: str, query: dict[str, str]) -> None:
        hub = self.hub
        with hub.lock:
            hub.stats.xorb_gets += 1
        if hub.faults.take("expire_next_xorb"):
            raise Reply(403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
        self.check_signature("xorb", xorb_hash, query)
        path = hub.root / "xorbs" / xorb_hash
        if not HEX64.fullmatch(xorb_hash) or not path.is_file():
            raise Reply(404, b"not found")
        fault = "reset" if hub.faults.take("reset_next_xorb") else "corrupt" if hub.faults.take(
            "corrupt_next_xorb") else None
        return self.serve_file(h, path, path.stat().st_size, {}, "xorb_bytes", fault)


def lfs_ptr(e) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{e.sha256}\nsize {e.size}\n").encode()
