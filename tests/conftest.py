"""Fixtures that build real state: repos on disk, a Hub server on an ephemeral port, fresh caches."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hfcache.cache.layout import RepoRef
from hfcache.server.app import HubApp
from hfcache.server.catalog import Catalog
from hfcache.server.run import RunningServer, start_in_thread

# Before anything imports huggingface_hub (which reads the environment once): never the real home or token.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hfcache-test-home-")
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HF_ENDPOINT", None)
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

TOKEN = "hf_test_token_0123456789"


def write_files(folder: Path, files: dict[str, bytes | str]) -> Path:
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return folder


def det_bytes(n: int, seed: int) -> bytes:
    """Deterministic incompressible-looking bytes."""
    import hashlib

    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


MODEL_MAIN = {
    "config.json": '{"model_type": "bert", "hidden_size": 32}\n',
    "README.md": "# tiny\n",
    "model.safetensors": det_bytes(300_000, 1),
    "tokenizer/vocab.txt": "[PAD]\n[UNK]\nhello\n",
    "nested/deep/dir/notes.txt": "deep\n",
    "big.bin": det_bytes(2_000_000, 2),
}
MODEL_V1 = {"config.json": '{"model_type": "bert", "hidden_size": 16}\n', "model.safetensors": det_bytes(1000, 3)}
MODEL_PR = {**MODEL_MAIN, "config.json": '{"model_type": "bert", "hidden_size": 64}\n'}
DATASET = {"README.md": "---\nlicense: mit\n---\n", "data/train-00000-of-00001.parquet": det_bytes(50_000, 4),
           "data/test.csv": "a,b\n1,2\n"}


@dataclass
class Hub:
    url: str
    app: HubApp
    server: RunningServer
    commits: dict[tuple[RepoRef, str], str]
    sources: dict[tuple[RepoRef, str], Path]

    def commit(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        return self.commits[(RepoRef(repo_id, repo_type), revision)]

    def requests(self, path_part: str = "") -> list:
        return [r for r in self.app.log if path_part in r.path]


def build_hub(root: Path, cdn_host: str | None = "localhost", token: str | None = None,
              repos: dict | None = None) -> Hub:
    catalog = Catalog()
    commits, sources = {}, {}
    repos = repos or {
        ("org/tiny", "model", "main"): MODEL_MAIN,
        ("org/tiny", "model", "v1"): MODEL_V1,
        ("org/tiny", "model", "refs/pr/1"): MODEL_PR,
        ("bert-tiny", "model", "main"): {"config.json": "{}\n", "vocab.txt": "a\nb\n"},
        ("org/ds", "dataset", "main"): DATASET,
    }
    for i, ((repo_id, repo_type, rev), files) in enumerate(repos.items()):
        folder = write_files(root / f"src{i}", files)
        ref = RepoRef(repo_id, repo_type)
        commits[(ref, rev)] = catalog.add_folder(ref, folder, rev)
        sources[(ref, rev)] = folder
    app = HubApp(catalog, cdn_host=cdn_host, token=token)
    server = start_in_thread(app)
    return Hub(server.url, app, server, commits, sources)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch) -> None:
    """Never read or write the real ~/.cache/huggingface or token."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Iterator[Hub]:
    h = build_hub(tmp_path_factory.mktemp("hub"))
    yield h
    h.server.stop()


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, endpoint: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> Result:
    """Run `python -m hfcache` as a user would, in a fresh process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_ENDPOINT", "HF_HUB_OFFLINE"))}
    if endpoint:
        full_env["HF_ENDPOINT"] = endpoint
    full_env.update(env or {})
    p = subprocess.run([sys.executable, "-m", "hfcache", *args], capture_output=True, text=True,
                       env=full_env, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)


def cache_tree(root: Path) -> dict[str, tuple]:
    """Every path under a cache (locks aside) with what it is: link target, file bytes, or folder."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        rel_dir = d.relative_to(root)
        if rel_dir.parts[:1] == (".locks",):
            continue
        for name in dirnames + filenames:
            p = d / name
            rel = (rel_dir / name).as_posix()
            if rel.startswith(".locks"):
                continue
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", p.read_bytes())
    return out


def wait_for(predicate, what: str, timeout: float = 60.0):
    """Until `predicate()` returns something true (bytes on disk, a process in /proc, a request in the server's
    log), which is returned; a test fails after `timeout`. What is waited on is an observable state, never a
    span of time: the short pause between looks only spares the CPU that the awaited work needs."""
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def _closed_by_clients_only(host: str, port: int) -> int:
    """Connections to `host:port` that their client has closed (or never saw accepted) and the server has not
    yet finished: in CLOSE_WAIT, or waiting in the listener's accept queue (Linux /proc/net/tcp, IPv4). A live
    client's idle keep-alive connection is not counted, nor one the server has closed already."""
    import socket
    import struct

    want = f"{struct.unpack('=I', socket.inet_aton(host))[0]:08X}:{port:04X}"
    n = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] != want:
            continue
        if fields[3] == "0A":  # the listener: its rx_queue is the accept queue
            n += int(fields[4].split(":")[1], 16)
        elif fields[3] == "08":  # CLOSE_WAIT: the client is gone, the server has not read to the end and closed
            n += 1
    return n


def wait_until_served(hub: Hub, what: str = "the server to be done with the requests of gone clients") -> None:
    """Until the server has read everything that clients now gone sent, and finished every request. A killed
    client may have sent a request that the server reads only later: its record would join `hub.app.log` among
    the requests of whatever runs next. The dead client's connections stay in the accept queue or in CLOSE_WAIT
    until the server has read them to their end (every request in them started, its task logging it in its first
    step) and closed them; so once none is left and no request task runs, every request of a dead client is in
    the log. Live clients' idle keep-alive connections are no obstacle."""
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc/net/tcp to see the server's connections")
    host, port = hub.url.removeprefix("http://").rsplit(":", 1)
    state = hub.server._server.server_state
    # the kernel's view first: a connection closed before it was read had its request task created before the
    # close, so that task is then still in `tasks` or has logged its request
    wait_for(lambda: not _closed_by_clients_only(host, int(port)) and not state.tasks, what)
