"""A Xet Hub + CAS emulator for tests: real fixtures (uploaded by hf_xet itself), served back as the Hub does.

    hub = XetHub(tmp_path / "hub", token=TOKEN)      # or the `xet_hub` fixture (import it into the test module)
    commit = hub.add_repo("org/name", {"model.safetensors": data, "config.json": "{}"})  # again: a new commit
    endpoint = hub.start()   # Hub API + resolve + CAS (`{endpoint}/cas`) on 127.0.0.1:PORT, bridge on localhost:PORT
    hub.stats.xorb_bytes; hub.faults.expire_next_xorb = 1; hub.xet_file("org/name", "model.safetensors")
    hf_download(endpoint, cache, "org/name", token=TOKEN)   # the oracle, huggingface_hub in a fresh process
    hub.stop()

Files for which `xet_rule(path, size)` holds (default: `.bin`/`.safetensors` or over 1 MiB) are uploaded with
`hf_xet.XetSession().new_upload_commit(...)` into this CAS; hf_xet's own shard cache (under `root/xet-uploader`)
dedups a later revision's chunks against earlier uploads, so a changed file reuses the old xorbs (the CAS also
answers global-dedup queries). Other files are plain git blobs. The bridge serves the uploaded bytes (kept under
`root/lfs/<sha256>`), not a decoding of the xorbs: hf_xet's downloads prove the xorbs.

Wire (what huggingface_hub 2.4 + hf_xet 1.8 use; see tests/test_xet_emulator.py):
- `GET /api/{type}s/{repo}[/revision/{rev}]`, `GET /api/{type}s/{repo}/tree/{rev}[/{path}]?recursive=true`
  (entries carry `xetHash` for Xet files, `lfs: {oid, size, pointerSize}`; 1000 per page, `Link: rel="next"`),
  `POST /api/{type}s/{repo}/paths-info/{rev}` (form `paths=`).
- `HEAD|GET /[{type}s/]{repo}/resolve/{rev}/{path}`: plain files 200 (ETag = git sha1, Range). Xet files: 302 to
  the bridge (origin `http://localhost:PORT`, so clients treat it as a CDN) with `X-Repo-Commit`, `ETag`,
  `X-Linked-Etag` (sha256), `X-Linked-Size`, `X-Xet-Hash`, `Link: <{endpoint}/api/{type}s/{repo}/xet-read-token/
  {commit}>; rel="xet-auth", <{cas}/v1/reconstructions/{xet_hash}>; rel="xet-reconstruction-info"`.
  `/bridge/{sha256}?exp=&sig=` serves the whole file with Range (the HF_HUB_DISABLE_XET path).
- `GET /api/{type}s/{repo}/xet-read-token/{rev}` (and `xet-write-token`): headers `X-Xet-Cas-Url`,
  `X-Xet-Access-Token`, `X-Xet-Token-Expiration` and JSON `{casUrl, accessToken, exp}`.
- CAS (Bearer token): `GET /v1/reconstructions/{file}` with `Range: bytes=a-b` (inclusive; 416 past the end):
  `offset_into_first_range`, `terms` [{hash, unpacked_length, range {start, end excl.}}], `fetch_info` {xorb:
  [{range, url, url_range {start, end incl.}}]}, URLs `/cas/xorb/{h}?exp=&sig=` signed, no auth, 403 once `exp`
  passed (`faults.xorb_url_ttl`). With `reconstruction_v2=True` also `/v2/reconstructions` (`xorbs` {xorb: [{url,
  ranges: [{chunks, bytes}]}]}; a multi-range GET is answered multipart/byteranges), else 404 and hf_xet falls
  back to v1 for the rest of its session. Uploads: `GET /v1/chunks/default/{chunk}` (global dedup: the shard
  holding that chunk, else 404), `POST /v1/xorb-grants/...` 404 (hf_xet then POSTs directly), `HEAD|POST
  /v1/xorbs/default/{h}` -> `{"was_inserted"}`, `POST /v2/shards` 404 then `POST /v1/shards` -> `{"result": 1}`
  (an uploaded shard has no footer: header `footer_size` 0); `POST /v1/telemetry` 200.

Modules: this one (state, uploads, server life), xethub_server (Hub routes, dispatch), xethub_cas (CAS routes),
xethub_http (handler, bodies, faults on the wire), xethub_tools (data helpers, the oracle), xetcas_format (xorb and
shard parsing, reconstruction terms).

What huggingface_hub 2.4 + hf_xet 1.8 wrote for `snapshot_download` of a Xet repo (cache root 0755, umask 022;
test_xet_emulator.py::test_snapshot_download_writes_the_shared_store asserts every line):
- `blobs/.huggingface-shared-blobs`: regular file, content `1\n`, mode 0444 (`_shared_blob_mode`: 0o400, plus
  0o040/0o004 when the cache root has g+x/o+x).
- `blobs/<xh[:2]>/`: directory with the cache root's mode (0755 here). In it exactly three entries per file:
  `<xet_hash>` (regular file, the bytes, 0444), `<xet_hash>.refs` (0666, one line per repo blob linking to it:
  `models--org--name/blobs/<sha256>\n`, appended, fsynced before the link appears), `<xet_hash>.lock` (0666,
  empty, left behind). Nothing else under `blobs/` (no temp files left).
- `models--org--name/blobs/<sha256>`: symlink to `../../blobs/<xx>/<xet_hash>`; `snapshots/<commit>/<path>` a
  symlink to `../../blobs/<sha256>` with one more `../` per sub-folder, as for any blob. Plain (git) files stay
  ordinary blobs `blobs/<git sha1>` (0666 & ~umask). `.locks/models--org--name/<sha256|sha1>.lock` as for HTTP.
- `models--org--name/trees/<commit>.json`: mode 0600 (mkstemp + os.replace), text = `json.dumps(obj, indent=1)`
  of `{"format_version": 1, "files": {path: {"size", "blob_id", ["lfs_sha256", "lfs_size", "xet_hash"]}}}`,
  paths sorted; `xet_hash` only when the tree listing had `xetHash`.
- `HF_HUB_DISABLE_XET=1`, or a Hub offering no Xet: no `blobs/` store at all, ordinary `blobs/<sha256>` from the
  bridge; `trees/` still written (with `xet_hash` when the listing has it, i.e. under HF_HUB_DISABLE_XET).
- Same bytes in a second repo: linked from the store without a fetch, a second `.refs` line appended. With
  `trees/<commit>.json` cached, a download by commit sends no HEAD for Xet files.
- `HF_HUB_DISABLE_SHARED_BLOBS=1`: fetched through hf_xet, into an ordinary `blobs/<sha256>` (0666 & ~umask), no
  store.
- hf_xet (not huggingface_hub) refreshes the CAS token only by its expiry (30 s ahead), through the xet-auth
  route's JSON; a 401 from the CAS fails the download. It re-asks the reconstruction when a xorb URL answers
  403, retries a reset range, and checks no chunk hash: a flipped byte in an uncompressed chunk lands in the
  store (see test_corrupt_xorb_fault). Its downloads use no chunk cache: a new revision is fetched whole.
  Files over 256 MB are reconstructed in ranged requests (`bytes=0-255999999`, ...).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.stubhub import BurstServer
from tests.xetcas_format import Chunk, FormatError, parse_shard, xorb_chunks
from tests.xethub_server import Handler, XetRoutes
from tests.xethub_tools import (  # noqa: F401 (re-exported: tests import them from here)
    changed_copy,
    hf_download,
    hf_download_command,
    sample_files,
    write_random,
)

MiB = 1024 * 1024
_UPLOAD_LOCK = threading.Lock()  # hf_xet reads HF_XET_CACHE from the environment: one upload at a time


def default_xet_rule(path: str, size: int) -> bool:
    return path.endswith((".bin", ".safetensors")) or size > MiB


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class FileEntry:
    size: int
    blob_id: str  # git sha1 of the content (plain) or of the LFS pointer (Xet)
    sha256: str | None = None  # Xet files only
    xet_hash: str | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    refs: dict[str, str] = field(default_factory=dict)  # branch -> commit
    commits: dict[str, dict[str, FileEntry]] = field(default_factory=dict)

    def resolve(self, rev: str) -> str | None:
        return self.refs.get(rev) or (rev if rev in self.commits else None)


@dataclass
class Stats:
    """Counters since the last `reset()`. `requests`: (method, path without query, status)."""
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    xorb_bytes: int = 0  # xorb bytes served by signed-URL GETs (ranges summed)
    xorb_gets: int = 0
    xorb_requests: list[tuple[str, str | None]] = field(default_factory=list)  # (xorb hash, Range header) per GET
    multirange_gets: int = 0  # xorb GETs asking several ranges at once (v2), answered multipart/byteranges
    bridge_bytes: int = 0  # bytes served by the plain-HTTP bridge
    git_bytes: int = 0  # bytes of plain (non-LFS) files served by resolve
    reconstructions: int = 0  # reconstructions answered (a v2 probe answered 404 is only in `requests`)
    reconstruction_ranges: list[str | None] = field(default_factory=list)  # their Range headers, in order
    token_calls: int = 0  # xet-read-token / xet-write-token
    xorb_bytes_uploaded: int = 0
    shards_uploaded: int = 0
    dedup_queries: int = 0
    errors: list[str] = field(default_factory=list)  # malformed uploads refused (400) and emulator errors (500)

    def reset(self) -> None:
        self.__init__()

    def paths(self, part: str = "") -> list[tuple[str, str, int]]:
        return [r for r in list(self.requests) if part in r[1]]


@dataclass
class Faults:
    """Switches read by the server. Counters are consumed one per matching request."""
    reconstruction_401: int = 0  # next N reconstructions answer 401 (hf_xet refreshes its token)
    token_401: int = 0  # next N xet-read-token calls answer 401
    expire_next_xorb: int = 0  # next N xorb GETs answer 403 as an expired signed URL would
    xorb_url_ttl: float = 3600.0  # signed xorb URLs issued from now on expire after this many seconds
    reset_next_xorb: int = 0  # next N xorb GETs send half the body, then reset the connection
    corrupt_next_xorb: int = 0  # next N xorb GETs flip one byte in the middle of the body
    stall_next_xorb: int = 0  # next N xorb GETs send half the body, set `stalled`, wait for `release` (<= 120 s)
    stalled: threading.Event = field(default_factory=threading.Event)  # a test kills its client on this
    release: threading.Event = field(default_factory=threading.Event)
    no_xet: bool = False  # offer no Xet: no X-Xet-Hash / xet-auth Link / xetHash (plain HTTP bridge only)
    token_ttl: float = 3600.0  # lifetime of issued CAS tokens

    def take(self, name: str) -> bool:
        with _FAULT_LOCK:
            n = getattr(self, name)
            if n > 0:
                setattr(self, name, n - 1)
                return True
            return False

    def clear(self) -> None:
        self.release.set()  # a stalled response ends (its client is gone or gets the rest)
        self.__init__()


_FAULT_LOCK = threading.Lock()


class XetHub:
    """A Hub with Xet storage on one port. State (xorbs, shards, LFS bytes, git blobs, refs) lives in `root`,
    so a second `XetHub(root)` serves the same repos (benchmarks upload once)."""

    def __init__(self, root: Path, token: str | None = None,
                 xet_rule: Callable[[str, int], bool] = default_xet_rule, reconstruction_v2: bool = False) -> None:
        self.root = Path(root)
        self.reconstruction_v2 = reconstruction_v2  # answer /v2/reconstructions (multi-range xorb URLs) too
        self.token = token
        self.xet_rule = xet_rule
        self.stats = Stats()
        self.faults = Faults()
        self.key = secrets.token_bytes(16)
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.files: dict[str, list] = {}  # xet file hash -> segments
        self.chunk_shard: dict[str, str] = {}  # chunk hash -> shard name (global dedup)
        self._chunks: dict[str, list[Chunk]] = {}
        self.cas_tokens: dict[str, float] = {}  # token -> expiry
        self.sha256_of_xet: dict[str, str] = {}
        for d in ("xorbs", "shards", "lfs", "git", "xet-uploader"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self._server: BurstServer | None = None
        self._thread: threading.Thread | None = None
        self._load()

    # -- state -------------------------------------------------------------------------------------------------
    def _load(self) -> None:
        for shard in sorted((self.root / "shards").glob("*.shard")):
            self._index_shard(shard.name, shard.read_bytes())
        state = self.root / "state.json"
        if state.is_file():
            for r in json.loads(state.read_text()):
                repo = Repo(r["repo_id"], r["repo_type"], r["refs"])
                repo.commits = {c: {p: FileEntry(**e) for p, e in files.items()} for c, files in r["commits"].items()}
                self.repos[(repo.repo_type, repo.repo_id)] = repo

    def _save(self) -> None:
        data = [{"repo_id": r.repo_id, "repo_type": r.repo_type, "refs": r.refs,
                 "commits": {c: {p: e.to_json() for p, e in fs.items()} for c, fs in r.commits.items()}}
                for r in self.repos.values()]
        tmp = self.root / "state.json.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.root / "state.json")

    def _index_shard(self, name: str, data: bytes) -> None:
        info = parse_shard(data)
        with self.lock:
            self.files.update(info.files)
            for chunk in info.chunks:
                self.chunk_shard.setdefault(chunk, name)

    def store_shard(self, data: bytes) -> None:
        name = hashlib.sha256(data).hexdigest() + ".shard"
        self._index_shard(name, data)  # refuse what does not parse before it is kept
        (self.root / "shards" / name).write_bytes(data)

    def store_xorb(self, xorb_hash: str, data: bytes) -> bool:
        xorb_chunks(data)  # refuse what does not parse
        path = self.root / "xorbs" / xorb_hash
        if path.exists():
            return False
        tmp = path.with_suffix(".tmp" + secrets.token_hex(4))
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return True

    def chunks_of(self, xorb_hash: str) -> list[Chunk]:
        with self.lock:
            found = self._chunks.get(xorb_hash)
        if found is None:
            path = self.root / "xorbs" / xorb_hash
            if not path.is_file():
                raise FormatError(f"xorb {xorb_hash} not stored")
            found = xorb_chunks(path.read_bytes())
            with self.lock:
                self._chunks[xorb_hash] = found
        return found

    def issue_cas_token(self) -> tuple[str, int]:
        token = "xet_" + secrets.token_hex(12)
        exp = int(time.time() + self.faults.token_ttl)
        with self.lock:
            self.cas_tokens[token] = exp
        return token, exp

    def sign(self, kind: str, name: str, exp: int) -> str:
        return hmac.new(self.key, f"{kind}:{name}:{exp}".encode(), "sha256").hexdigest()[:32]

    # -- repos -------------------------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes | str | Path | None], repo_type: str = "model",
                 revision: str = "main") -> str:
        """Commit `files` on top of `revision`'s head (None deletes a path); returns the new commit id."""
        with self.lock:
            repo = self.repos.setdefault((repo_type, repo_id), Repo(repo_id, repo_type))
            head = repo.refs.get(revision)
            tree = dict(repo.commits[head]) if head else {}
        uploads: dict[str, Path] = {}
        for path, value in files.items():
            if value is None:
                tree.pop(path, None)
                continue
            src = Path(value) if isinstance(value, Path) else None
            size = src.stat().st_size if src else len(value.encode() if isinstance(value, str) else value)
            if self.xet_rule(path, size):
                uploads[path] = self._keep_lfs(value)
                continue
            data = src.read_bytes() if src else (value.encode() if isinstance(value, str) else value)
            blob_id = git_sha1(data)
            (self.root / "git" / blob_id).write_bytes(data)
            tree[path] = FileEntry(len(data), blob_id)
        if uploads:
            for path, (sha, xet_hash, size) in self._upload(uploads).items():
                tree[path] = FileEntry(size, git_sha1(lfs_pointer(sha, size)), sha, xet_hash)
        body = json.dumps([head, {p: e.to_json() for p, e in sorted(tree.items())}], sort_keys=True)
        commit = hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest()
        with self.lock:
            repo.commits[commit] = tree
            repo.refs[revision] = commit
            self._save()
        return commit

    def _keep_lfs(self, value: bytes | str | Path) -> Path:
        """The bytes under `lfs/<sha256>` (what the bridge serves)."""
        tmp = self.root / "lfs" / ("incoming." + secrets.token_hex(6))
        h = hashlib.sha256()
        with open(tmp, "wb") as out:
            if isinstance(value, Path):
                with open(value, "rb") as f:
                    while block := f.read(MiB):
                        h.update(block)
                        out.write(block)
            else:
                data = value.encode() if isinstance(value, str) else value
                h.update(data)
                out.write(data)
        final = self.root / "lfs" / h.hexdigest()
        os.replace(tmp, final)
        return final

    def _upload(self, uploads: dict[str, Path]) -> dict[str, tuple[str, str, int]]:
        """Upload through hf_xet into our CAS: path -> (sha256, xet hash, size)."""
        from hf_xet import XetSession

        self.start()
        token, exp = self.issue_cas_token()
        with _UPLOAD_LOCK:
            saved = {k: os.environ.get(k) for k in ("HF_XET_CACHE", "HF_XET_TELEMETRY_ENABLED")}
            os.environ["HF_XET_CACHE"] = str(self.root / "xet-uploader")
            os.environ["HF_XET_TELEMETRY_ENABLED"] = "false"
            try:
                session = XetSession()
                with session.new_upload_commit(endpoint=self.cas_url, token=token,
                                               token_expiry_unix_secs=exp) as commit:
                    handles = {p: commit.start_upload_file(str(f), sha256=f.name) for p, f in uploads.items()}
                results = {p: h.result().xet_info for p, h in handles.items()}
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        out = {}
        for p, info in results.items():
            sha = uploads[p].name
            if info.hash not in self.files:
                raise RuntimeError(f"hf_xet uploaded {p} but no shard describes {info.hash}")
            with self.lock:
                self.sha256_of_xet[info.hash] = sha
            out[p] = (sha, info.hash, uploads[p].stat().st_size)
        return out

    def xet_file(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> FileEntry:
        repo = self.repos[(repo_type, repo_id)]
        return repo.commits[repo.resolve(revision)][path]

    def segments(self, xet_hash: str) -> list:
        """The file's segments (xorb, chunk range, bytes) as its shard describes them."""
        with self.lock:
            return list(self.files[xet_hash])

    def lfs_path(self, sha256: str) -> Path:
        return self.root / "lfs" / sha256

    # -- server ------------------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def cas_url(self) -> str:
        return self.endpoint + "/cas"

    @property
    def bridge_base(self) -> str:
        """Another origin (host name instead of address), as the Hub's CDN is: auth is not sent there and
        huggingface_hub does not follow the HEAD's redirect to it."""
        return f"http://localhost:{self._server.server_address[1]}"

    def start(self) -> str:
        if self._server is None:
            server = BurstServer(("127.0.0.1", 0), Handler)
            server.routes = XetRoutes(self)
            server.open_sockets = set()
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="xethub", daemon=True)
            self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self.faults.release.set()
        server.shutdown()
        for sock in list(server.open_sockets):  # keep-alive connections: wake their threads
            with contextlib.suppress(OSError):
                sock.shutdown(2)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> XetHub:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def xet_hub(tmp_path) -> Iterator[XetHub]:
    """A started, empty XetHub (token "hf_xet_test_token"); add repos with `xet_hub.add_repo`."""
    hub = XetHub(tmp_path / "xethub", token="hf_xet_test_token")
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()
