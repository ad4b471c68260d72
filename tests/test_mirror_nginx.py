"""nginx in front of the mirror, configured by `hfcache serve --nginx-conf`, on loopback (skipped without nginx)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import requests

from tests.conftest import MODEL_MAIN, run_cli, wait_for
from tests.mirror_support import BIG, blob_of, mirror_hub, start_mirror, upstream_gets

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def start_nginx(conf_text: str, prefix: Path, port: int) -> subprocess.Popen:
    """nginx in the foreground on `conf_text`, its pid, logs and temp files under `prefix`."""
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(conf_text)
    args = ["nginx", "-p", str(prefix), "-c", str(conf), "-e", "stderr"]
    if os.geteuid() == 0:
        args += ["-g", "user root;"]  # the test's store lies in root's private tmp folder
    with open(prefix / "stderr.log", "wb") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
    wait_for(lambda: _listening(port) or proc.poll() is not None, "nginx to listen")
    if proc.poll() is not None:
        pytest.fail(f"nginx did not start: {(prefix / 'stderr.log').read_text()[-2000:]}")
    return proc


@pytest.fixture
def stack(tmp_path):
    hub = mirror_hub(tmp_path / "hub")
    store = tmp_path / "store"
    mirrors = [start_mirror(store, hub.url, "--accel-redirect", "/_hfcache/") for _ in range(2)]
    port = _free_port()
    servers = ",".join(m.url.removeprefix("http://") for m in mirrors)
    r = run_cli("serve", "--nginx-conf", "--cache-dir", str(store), "--upstream-servers", servers,
                "--listen", f"127.0.0.1:{port}")
    assert r.returncode == 0, r.stderr
    nginx = start_nginx(r.stdout, tmp_path / "nginx", port)
    try:
        yield hub, mirrors, f"http://127.0.0.1:{port}", store
    finally:
        nginx.terminate()
        nginx.wait(timeout=30)
        for m in mirrors:
            m.stop()
        hub.server.stop()


def test_nginx_sends_stored_blobs_and_streams_the_rest(tmp_path, stack):
    from huggingface_hub import hf_hub_download, snapshot_download

    hub, mirrors, front, store = stack
    # uncached: the mirror streams it through nginx (unbuffered)
    path = hf_hub_download("org/tiny", "huge.bin", endpoint=front, cache_dir=str(tmp_path / "c1"))
    assert Path(path).read_bytes() == BIG
    wait_for(blob_of(store, "huge.bin", hub).exists, "the blob in the store")
    # stored: nginx sends the file (the mirror answers X-Accel-Redirect with an empty body)
    commit = hub.commit("org/tiny")
    r = requests.get(f"{front}/org/tiny/resolve/main/huge.bin", timeout=60)
    assert r.status_code == 200 and r.content == BIG
    assert r.headers["X-Repo-Commit"] == commit and r.headers["ETag"] == f'"{blob_of(store, "huge.bin", hub).name}"'
    assert "X-Accel-Redirect" not in r.headers
    r = requests.get(f"{front}/org/tiny/resolve/main/huge.bin", headers={"Range": "bytes=1000-1999"}, timeout=60)
    assert r.status_code == 206 and r.content == BIG[1000:2000]
    # a whole snapshot through nginx and two mirror processes: each file fetched upstream once
    snap = snapshot_download("org/tiny", endpoint=front, cache_dir=str(tmp_path / "c2"))
    assert (Path(snap) / "big.bin").read_bytes() == MODEL_MAIN["big.bin"]
    assert len(upstream_gets(hub, "huge.bin")) == 1 and len(upstream_gets(hub, "big.bin")) == 1
    logs = "".join(m.log.read_text() for m in mirrors)
    assert "GET /org/tiny/resolve/main/huge.bin 200 0" in logs  # nginx, not the mirror, sent those bytes


def _resolve_gets(log: Path, filename: str) -> int:
    return sum(f"GET /org/tiny/resolve/main/{filename} " in line for line in log.read_text().splitlines())


def test_clients_of_one_blob_all_reach_one_mirror_process_which_fetches_it(stack):
    """The conf routes a resolve URL to one mirror process (consistent hash): followers of a blob are in the
    process that fetches it (no second process polling the partial and hashing it again)."""
    from concurrent.futures import ThreadPoolExecutor

    hub, mirrors, front, store = stack
    url = f"{front}/org/tiny/resolve/main/huge.bin"
    with ThreadPoolExecutor(4) as pool:
        bodies = list(pool.map(lambda _: requests.get(url, timeout=120).content, range(4)))
    assert bodies == [BIG] * 4
    assert len(upstream_gets(hub, "huge.bin")) == 1
    wait_for(lambda: sum(_resolve_gets(m.log, "huge.bin") for m in mirrors) == 4, "four access log lines")
    served = sorted(_resolve_gets(m.log, "huge.bin") for m in mirrors)
    assert served == [0, 4], served  # one process answered all four: it fetched, the others followed it
    # failover: that process gone, nginx sends the same URL to another one
    serving = next(m for m in mirrors if _resolve_gets(m.log, "huge.bin"))
    serving.kill()
    r = requests.get(url, timeout=120)
    assert r.status_code == 200 and r.content == BIG
