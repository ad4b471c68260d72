"""The Hub side of tests/xethub.py (API, tree, paths-info, resolve, bridge) and the dispatch of every request;
the CAS routes are in tests/xethub_cas.py, the HTTP plumbing in tests/xethub_http.py."""

from __future__ import annotations

import contextlib
import time
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.xetcas_format import FormatError
from tests.xethub_cas import CasRoutes
from tests.xethub_http import HEX64, PAGE, REPO_TYPES, Handler, Reply

__all__ = ["Handler", "XetRoutes"]


class XetRoutes(CasRoutes):
    def handle(self, h: Handler) -> None:
        url = urlsplit(h.path)
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        status = 500
        slot: list = []  # (the list, the index) of this request's record, once its status line was sent

        def record(code: int) -> None:
            with self.hub.lock:
                if slot:  # the list may be an old one, replaced by stats.reset(): then the update is moot
                    slot[0][slot[1]] = (h.command, url.path, code)
                else:
                    slot.extend((self.hub.stats.requests, len(self.hub.stats.requests)))
                    self.hub.stats.requests.append((h.command, url.path, code))

        h.on_status = record
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
        except Exception as e:  # an emulator bug: say so in the stats (a test can assert none), answer 500
            with self.hub.lock:
                self.hub.stats.errors.append(f"{h.command} {url.path}: {type(e).__name__}: {e}")
            h.close_connection = True
            with contextlib.suppress(OSError):
                self.send(h, 500, {"error": f"{type(e).__name__}: {e}"})
        finally:
            h.on_status = None
            if not slot or slot[0][slot[1]][2] != status:
                record(status)  # never answered, or its outcome (599: the connection broke) differs

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


def lfs_ptr(e) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{e.sha256}\nsize {e.size}\n").encode()
