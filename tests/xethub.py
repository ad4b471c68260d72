"""A Xet Hub + CAS emulator for tests: real fixtures (uploaded by hf_xet itself), served back as the Hub does.

    hub = XetHub(tmp_path / "hub", token=TOKEN)
    commit = hub.add_repo("org/name", {"model.safetensors": data, "config.json": "{}"})
    endpoint = hub.start()          # Hub API, resolve, bridge (on http://localhost:PORT) and CAS (PORT/cas)
    hub.stats.xorb_bytes, hub.faults.reconstruction_401 = 1, ...
    hub.stop()

Files for which `xet_rule(path, size)` holds (default: `.bin`/`.safetensors` or over 1 MiB) are uploaded with
`hf_xet.XetSession().new_upload_commit(...)` into this CAS (`POST /cas/v1/xorbs/default/{h}`, `POST
/cas/v1/shards`); hf_xet's own shard cache (under `root/xet-uploader`) dedups a later revision's chunks against
earlier uploads, so a changed file reuses the old xorbs. Other files are plain git blobs.

Wire (what huggingface_hub 2.4 + hf_xet 1.8 use; see tests/test_xet_emulator.py):
- `GET /api/{type}s/{repo}[/revision/{rev}]`, `GET /api/{type}s/{repo}/tree/{rev}[/{path}]?recursive=true`
  (entries carry `xetHash` for Xet files, `lfs: {oid, size, pointerSize}`; 1000 per page, `Link: rel="next"`).
- `HEAD|GET /[{type}s/]{repo}/resolve/{rev}/{path}`: plain files 200 (ETag = git sha1, Range). Xet files: 302 to
  the bridge (origin `http://localhost:PORT`, so clients treat it as a CDN) with `X-Repo-Commit`, `ETag`,
  `X-Linked-Etag` (sha256), `X-Linked-Size`, `X-Xet-Hash`, `Link: <.../api/{type}s/{repo}/xet-read-token/{commit}>;
  rel="xet-auth"`. `/bridge/{sha256}?exp=&sig=` serves the whole file with Range (HF_HUB_DISABLE_XET path).
- `GET /api/{type}s/{repo}/xet-read-token/{rev}` (and `xet-write-token`): headers `X-Xet-Cas-Url`,
  `X-Xet-Access-Token`, `X-Xet-Token-Expiration` and JSON `{casUrl, accessToken, exp}`.
- CAS (`casUrl` = `{endpoint}/cas`, Bearer token): `GET /v1/reconstructions/{file}` with `Range: bytes=a-b`
  (terms, `fetch_info` with signed URLs `/cas/xorb/{h}?exp=&sig=` and inclusive `url_range`; 416 past the end),
  `GET /cas/xorb/{h}` with Range (no auth; 403 once `exp` has passed), `GET /v1/chunks/{prefix}/{chunk}` (global
  dedup: the shard holding that chunk, else 404), `HEAD|POST /v1/xorbs/...`, `POST /v1/shards`. Answered 404:
  `/v2/reconstructions`, `/v2/shards` (hf_xet falls back to v1), batch reconstructions; `/v1/telemetry` 200.

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
  ordinary blobs `blobs/<git sha1>` (0644). `.locks/models--org--name/<sha256|sha1>.lock` as for HTTP downloads.
- `models--org--name/trees/<commit>.json`: mode 0600 (mkstemp + os.replace), text = `json.dumps(obj, indent=1)`
  of `{"format_version": 1, "files": {path: {"size", "blob_id", ["lfs_sha256", "lfs_size", "xet_hash"]}}}`,
  paths sorted; `xet_hash` only when the tree listing had `xetHash`.
- `HF_HUB_DISABLE_XET=1`, or a Hub offering no Xet: no `blobs/` store at all, ordinary `blobs/<sha256>` from the
  bridge; `trees/` still written (with `xet_hash` when the listing has it, i.e. under HF_HUB_DISABLE_XET).
- hf_xet (not huggingface_hub) refreshes the CAS token only by its expiry (30 s ahead), through the xet-auth
  route's JSON; a 401 from the CAS fails the download. It re-asks the reconstruction when a xorb URL answers
  403, retries a reset range, and checks no chunk hash: a flipped byte in an uncompressed chunk lands in the
  store (see test_corrupt_xorb_fault). Its downloads use no chunk cache: a new revision is fetched whole.
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
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.xetcas_format import Chunk, FormatError, parse_shard, xorb_chunks
from tests.xethub_server import Handler, XetRoutes

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
    bridge_bytes: int = 0  # bytes served by the plain-HTTP bridge
    git_bytes: int = 0  # bytes of plain (non-LFS) files served by resolve
    reconstructions: int = 0  # v1 reconstructions answered (the v2 probe, a 404, is only in `requests`)
    token_calls: int = 0  # xet-read-token / xet-write-token
    xorb_bytes_uploaded: int = 0
    shards_uploaded: int = 0
    dedup_queries: int = 0
    errors: list[str] = field(default_factory=list)  # malformed uploads refused (400), with the reason

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
        self.__init__()


_FAULT_LOCK = threading.Lock()


class XetHub:
    """A Hub with Xet storage on one port. State (xorbs, shards, LFS bytes, git blobs, refs) lives in `root`,
    so a second `XetHub(root)` serves the same repos (benchmarks upload once)."""

    def __init__(self, root: Path, token: str | None = None,
                 xet_rule: Callable[[str, int], bool] = default_xet_rule) -> None:
        self.root = Path(root)
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
        self._server: ThreadingHTTPServer | None = None
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
            server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            server.daemon_threads = True
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


def write_random(path: Path, size: int, seed: int) -> Path:
    """`size` incompressible deterministic bytes, written in 1 MiB blocks (a 1 GiB benchmark file never sits in
    memory). Block i is `random.Random(seed * 1_000_003 + i).randbytes(MiB)`, so `changed_copy` can rebuild it."""
    import random

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for i, off in enumerate(range(0, size, MiB)):
            f.write(random.Random(seed * 1_000_003 + i).randbytes(min(MiB, size - off)))
    return path


def changed_copy(src: Path, dst: Path, fraction: float = 0.1, seed: int = 99) -> Path:
    """`src` with one contiguous run of `fraction` of its bytes, starting in the middle, replaced by new random
    bytes (same size): the "fine-tune changed 10%" revision, deduplicable against `src` but for that run."""
    import random

    size = src.stat().st_size
    start, n = size // 2, int(size * fraction)
    rng = random.Random(seed)
    with open(src, "rb") as f, open(dst, "wb") as out:
        off = 0
        while off < size:
            block = f.read(min(MiB, size - off))
            lo, hi = max(start, off), min(start + n, off + len(block))
            if lo < hi:
                block = block[:lo - off] + rng.randbytes(hi - lo) + block[hi - off:]
            out.write(block)
            off += len(block)
    return dst


def hf_download(endpoint: str, cache_dir: Path, repo_id: str, filename: str | None = None, *,
                revision: str = "main", repo_type: str = "model", token: str | None = None,
                env: dict[str, str] | None = None, timeout: float = 180) -> Path:
    """The oracle: huggingface_hub's `snapshot_download` (no filename) or `hf_hub_download` in a fresh process
    (so HF_HUB_DISABLE_XET & co, read at import, and hf_xet's per-process session start clean). Returns the path
    it printed; fails the test with its stderr when it fails. hf_xet retries after 100 ms here, not 3 s."""
    import subprocess
    import sys

    call = (f"hf_hub_download({repo_id!r}, {filename!r}, " if filename else f"snapshot_download({repo_id!r}, ")
    code = ("import sys\nfrom huggingface_hub import hf_hub_download, snapshot_download\n"
            f"print({call}revision={revision!r}, repo_type={repo_type!r}, cache_dir={str(cache_dir)!r}, "
            f"endpoint={endpoint!r}, token={token!r}))\n")
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_XET", "HF_TOKEN"))}
    full_env.update({"HF_XET_CLIENT_RETRY_BASE_DELAY": "100ms", "HF_XET_TELEMETRY_ENABLED": "false",
                     "HF_HUB_DISABLE_PROGRESS_BARS": "1", **(env or {})})
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"huggingface_hub failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return Path(p.stdout.strip().splitlines()[-1])


@pytest.fixture
def xet_hub(tmp_path) -> Iterator[XetHub]:
    """A started, empty XetHub (token "hf_xet_test_token"); add repos with `xet_hub.add_repo`."""
    hub = XetHub(tmp_path / "xethub", token="hf_xet_test_token")
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()
