"""`hfcache serve --upstream` on loopback: clients through the mirror, one upstream fetch per blob, faults."""

from __future__ import annotations

import hashlib
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from hfcache.cache.layout import HubCache
from hfcache.mirror.app import MirrorApp
from hfcache.server.faults import Fault
from hfcache.server.run import start_in_thread
from tests.conftest import MODEL_MAIN, TOKEN, cache_tree, run_cli, wait_for
from tests.mirror_support import BIG, REPO, blob_of, mirror_hub, start_mirror, upstream_gets


@pytest.fixture
def upstream(tmp_path):
    hub = mirror_hub(tmp_path / "hub")
    yield hub
    hub.server.stop()


def _mirror(store: Path, url: str, **kw):
    lines: list[str] = []
    app = MirrorApp(store, url, access_log=lines.append, offline=kw.pop("offline", False), **kw)
    server = start_in_thread(app)
    server.lines = lines
    return server


@pytest.fixture
def mirror(tmp_path, upstream):
    server = _mirror(tmp_path / "store", upstream.url)
    yield server
    server.stop()


def _no_exist(root: Path) -> list[Path]:
    return [p for p in root.rglob(".no_exist") if any(p.rglob("*"))] if root.exists() else []


def _get(url: str, **kw) -> requests.Response:
    return requests.get(url, timeout=60, **kw)


def test_huggingface_hub_and_hfcache_through_the_mirror_build_the_hubs_own_layout(tmp_path, upstream, mirror):
    from huggingface_hub import hf_hub_download, snapshot_download

    direct, via = tmp_path / "direct", tmp_path / "via"
    for endpoint, cache in ((upstream.url, direct), (mirror.url, via)):
        upstream.app.log.clear()  # what the mirror asks is counted below, not the direct client's requests
        snapshot_download("org/tiny", endpoint=endpoint, cache_dir=str(cache))
        snapshot_download("org/tiny", revision="v1", endpoint=endpoint, cache_dir=str(cache))
        snapshot_download("org/ds", repo_type="dataset", endpoint=endpoint, cache_dir=str(cache))
        hf_hub_download("org/tiny", "config.json", revision="refs/pr/1", endpoint=endpoint, cache_dir=str(cache))
    assert cache_tree(via) == cache_tree(direct)  # same commits, files, refs and links as from upstream itself

    ours = tmp_path / "ours"
    r = run_cli("snapshot", "org/tiny", "--cache-dir", str(ours), endpoint=mirror.url)
    assert r.returncode == 0, r.stderr
    snap = Path(r.stdout.strip().splitlines()[-1])
    assert (snap / "huge.bin").read_bytes() == BIG and (snap / "big.bin").read_bytes() == MODEL_MAIN["big.bin"]

    # the store is a hub cache like any other: verify proves it intact, blob by blob (it holds the files clients
    # asked for, so a listing's other files are not problems)
    r = run_cli("verify", "--allow-partial", "--cache-dir", str(tmp_path / "store"))
    assert r.returncode == 0, r.stdout + r.stderr
    # every file came from upstream once, whatever the number of clients
    assert len(upstream_gets(upstream, "huge.bin")) == 1
    assert len(upstream_gets(upstream, "config.json")) == 3  # main, v1 and refs/pr/1 differ


def test_concurrent_clients_cause_one_upstream_fetch_and_all_get_the_bytes(upstream, mirror, tmp_path):
    upstream.app.faults.add(Fault("slow", "huge.bin", times=-1, rate=3_000_000))  # ~1 s: the clients overlap
    commit = upstream.commit("org/tiny")
    url = f"{mirror.url}/org/tiny/resolve/{commit}/huge.bin"
    with ThreadPoolExecutor(6) as pool:
        bodies = list(pool.map(lambda _: _get(url).content, range(6)))
    assert all(b == BIG for b in bodies)
    assert len(upstream_gets(upstream, "huge.bin")) == 1
    blob = blob_of(tmp_path / "store", "huge.bin", upstream)
    pointer = HubCache(tmp_path / "store").pointer_path(REPO, commit, "huge.bin")
    wait_for(pointer.exists, "the blob to be published and linked")  # clients may finish first: their own hash
    assert blob.read_bytes() == BIG
    assert (HubCache(tmp_path / "store").pointer_path(REPO, commit, "huge.bin")).resolve() == blob


def test_two_mirror_processes_sharing_a_store_fetch_once(tmp_path, upstream):
    upstream.app.faults.add(Fault("slow", "huge.bin", times=-1, rate=3_000_000))
    store = tmp_path / "store"
    a, b = start_mirror(store, upstream.url), start_mirror(store, upstream.url)
    try:
        commit = upstream.commit("org/tiny")
        urls = [f"{m.url}/org/tiny/resolve/{commit}/huge.bin" for m in (a, b, a, b, a, b)]
        with ThreadPoolExecutor(6) as pool:
            bodies = list(pool.map(lambda u: _get(u).content, urls))
        assert all(body == BIG for body in bodies)
        assert len(upstream_gets(upstream, "huge.bin")) == 1
    finally:
        a.stop()
        b.stop()


def test_a_mirror_killed_mid_fetch_is_taken_over_by_another_resuming_its_partial(tmp_path, upstream):
    from hfcache.cache.partfile import written_prefix

    upstream.app.faults.add(Fault("slow", "huge.bin", times=-1, rate=1_000_000))
    store = tmp_path / "store"
    a, b = start_mirror(store, upstream.url), start_mirror(store, upstream.url)
    try:
        commit = upstream.commit("org/tiny")
        blob = blob_of(store, "huge.bin", upstream)
        partial = HubCache(store).partial_paths(REPO, blob.name)
        first = requests.get(f"{a.url}/org/tiny/resolve/{commit}/huge.bin", stream=True, timeout=60)
        wait_for(lambda: written_prefix(partial, blob.name, len(BIG)) > 0, "mirror A's partial to hold bytes")
        # B's client gets its headers once B follows A's partial (B's own flight waits on the blob's lock)
        second = requests.get(f"{b.url}/org/tiny/resolve/{commit}/huge.bin", stream=True, timeout=60)
        assert second.status_code == 200
        a.kill()
        first.close()
        assert second.content == BIG
        wait_for(blob.exists, "B to publish the blob")
        assert blob.read_bytes() == BIG
        gets = upstream_gets(upstream, "huge.bin")
        assert len(gets) == 2  # A's, then B's resuming where A's record said
        cdn = [r for r in upstream.app.log if r.path.startswith("cdn/") and r.range]
        assert cdn and cdn[-1].range.startswith("bytes=") and not cdn[-1].range.startswith("bytes=0-")
    finally:
        a.kill()
        b.stop()


def test_a_restarted_mirror_resumes_the_partial_a_killed_one_left(tmp_path, upstream):
    from hfcache.cache.partfile import written_prefix

    upstream.app.faults.add(Fault("slow", "huge.bin", times=1, rate=1_000_000))
    store = tmp_path / "store"
    a = start_mirror(store, upstream.url)
    commit = upstream.commit("org/tiny")
    blob = blob_of(store, "huge.bin", upstream)
    partial = HubCache(store).partial_paths(REPO, blob.name)
    try:  # the first mirror never outlives the test, even when the wait fails
        first = requests.get(f"{a.url}/org/tiny/resolve/{commit}/huge.bin", stream=True, timeout=60)
        done = wait_for(lambda: written_prefix(partial, blob.name, len(BIG)), "the partial to hold bytes")
    finally:
        a.kill()
    first.close()
    again = start_mirror(store, upstream.url)
    try:
        assert _get(f"{again.url}/org/tiny/resolve/{commit}/huge.bin").content == BIG
        ranged = [r for r in upstream.app.log if r.path.startswith("cdn/") and r.range]
        assert ranged and int(ranged[-1].range.split("=")[1].split("-")[0]) >= done
    finally:
        again.stop()


def test_upstream_trouble_serves_cached_commits_and_never_a_404(tmp_path, upstream):
    from huggingface_hub import hf_hub_download, snapshot_download

    store = tmp_path / "store"
    mirror = _mirror(store, upstream.url, revalidate=0)  # every request revalidates `main`
    try:
        client = tmp_path / "client"
        snapshot_download("org/tiny", endpoint=mirror.url, cache_dir=str(client), allow_patterns=["*.json", "*.md"])
        commit = upstream.commit("org/tiny")
        fresh = tmp_path / "fresh"
        for kind in ("500", "429", "503"):
            upstream.app.faults.clear()
            upstream.app.faults.add(Fault(kind, "api/", times=-1, seconds=0), Fault(kind, "big.bin", times=-1,
                                                                                    seconds=0))
            # a cached commit still answers through `main`, which upstream cannot resolve now (stale on error)
            path = hf_hub_download("org/tiny", "config.json", endpoint=mirror.url, cache_dir=str(fresh))
            assert Path(path).read_text() == MODEL_MAIN["config.json"]
            r = _get(f"{mirror.url}/api/models/org/tiny/revision/main")
            assert r.status_code == 200 and r.json()["sha"] == commit
            # an uncached blob is a gateway error, never a 404 (no .no_exist in any client)
            r = _get(f"{mirror.url}/org/tiny/resolve/main/big.bin")
            assert r.status_code in (502, 503, 504), r.status_code
            assert "X-Repo-Commit" not in r.headers or r.status_code != 404
        upstream.server.stop()  # upstream gone
        path = hf_hub_download("org/tiny", "README.md", endpoint=mirror.url, cache_dir=str(tmp_path / "gone"))
        assert Path(path).read_text() == MODEL_MAIN["README.md"]
        r = _get(f"{mirror.url}/org/tiny/resolve/main/big.bin")
        assert r.status_code in (502, 503, 504)
        r = _get(f"{mirror.url}/api/models/org/tiny/revision/v1")  # never resolved: nothing known to serve
        assert r.status_code in (502, 503, 504)
        with pytest.raises(Exception):  # noqa: B017 - huggingface_hub's own error for an unreachable file
            hf_hub_download("org/tiny", "big.bin", endpoint=mirror.url, cache_dir=str(tmp_path / "gone"))
        for root in (client, fresh, tmp_path / "gone", store):
            assert _no_exist(root) == [], root
        assert not blob_of(store, "big.bin", upstream).exists()
    finally:
        mirror.stop()


def test_wrong_bytes_upstream_never_reach_a_client_whole_and_nothing_is_published(tmp_path, upstream, mirror):
    upstream.app.faults.add(Fault("corrupt", "huge.bin", times=-1, after=2_500_000))
    commit = upstream.commit("org/tiny")
    url = f"{mirror.url}/org/tiny/resolve/{commit}/huge.bin"

    def fetch() -> bytes | None:
        try:
            r = _get(url)
        except requests.RequestException:
            return None  # the body was cut short
        return r.content if r.status_code == 200 else None

    with ThreadPoolExecutor(3) as pool:
        bodies = list(pool.map(lambda _: fetch(), range(3)))
    assert all(b is None or len(b) < len(BIG) for b in bodies), [len(b or b"") for b in bodies]
    blob = blob_of(tmp_path / "store", "huge.bin", upstream)
    wait_for(lambda: mirror.app.flights.running() == 0, "the fetch to give up")  # it tries twice
    assert len(upstream_gets(upstream, "huge.bin")) == 1  # its retry goes to the same CDN link
    assert not blob.exists()
    assert not any(p.name.startswith(blob.name) for p in blob.parent.iterdir())  # the partial is gone too
    assert _get(url).status_code == 502  # retried at once: the failure is remembered, upstream not asked again
    assert len(upstream_gets(upstream, "huge.bin")) == 1
    upstream.app.faults.clear()
    mirror.app.flights.failure_kept = 0
    assert _get(url).content == BIG  # once upstream behaves, the blob comes


def test_a_fetch_that_starts_over_never_hands_its_followers_mixed_bytes(tmp_path, upstream, mirror):
    """The first upstream body is wrong, the retry right: the blob is published, and a client that followed the
    first attempt gets a cut body (it read bytes that are not the blob's), never a whole wrong one."""
    upstream.app.faults.add(Fault("corrupt", "huge.bin", times=1, after=2_500_000),
                            Fault("slow", "huge.bin", times=-1, rate=3_000_000))
    commit = upstream.commit("org/tiny")
    url = f"{mirror.url}/org/tiny/resolve/{commit}/huge.bin"

    def fetch() -> bytes | None:
        try:
            r = _get(url)
        except requests.RequestException:
            return None
        return r.content if r.status_code == 200 else None

    with ThreadPoolExecutor(3) as pool:
        bodies = list(pool.map(lambda _: fetch(), range(3)))
    assert all(b is None or len(b) < len(BIG) or b == BIG for b in bodies)
    blob = blob_of(tmp_path / "store", "huge.bin", upstream)
    wait_for(blob.exists, "the second attempt to publish the blob")
    assert blob.read_bytes() == BIG
    assert _get(url).content == BIG


def test_main_moving_upstream_is_seen_once_its_time_to_live_is_over(tmp_path, upstream):
    from hfcache.cache.layout import RepoRef
    from tests.conftest import write_files

    store = tmp_path / "store"
    old = upstream.commit("org/tiny")
    trusting = _mirror(store, upstream.url, revalidate=3600)
    try:
        assert _get(f"{trusting.url}/api/models/org/tiny/revision/main").json()["sha"] == old
        moved = upstream.app.catalog.add_folder(RepoRef("org/tiny"), write_files(tmp_path / "v2", {
            "config.json": '{"moved": true}\n'}), "main")
        assert moved != old
        assert _get(f"{trusting.url}/api/models/org/tiny/revision/main").json()["sha"] == old  # still trusted
        assert _get(f"{trusting.url}/org/tiny/resolve/main/config.json").headers["X-Repo-Commit"] == old
    finally:
        trusting.stop()
    eager = _mirror(store, upstream.url, revalidate=0)
    try:
        r = _get(f"{eager.url}/org/tiny/resolve/main/config.json")
        assert r.headers["X-Repo-Commit"] == moved and r.content == b'{"moved": true}\n'
        assert HubCache(store).read_ref(REPO, "main") == moved
    finally:
        eager.stop()


def test_a_private_repo_is_served_only_to_clients_whose_token_upstream_accepts(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    hub = mirror_hub(tmp_path / "hub", token=TOKEN)
    mirror = _mirror(tmp_path / "store", hub.url)
    try:
        url = f"{mirror.url}/org/tiny/resolve/main/config.json"
        assert _get(url).status_code == 401
        assert _get(url, headers={"Authorization": "Bearer hf_wrong"}).status_code == 401
        ok = _get(url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.content == MODEL_MAIN["config.json"].encode()
        # now in the store: still only for the right token
        assert _get(url).status_code == 401
        assert _get(url, headers={"Authorization": "Bearer hf_wrong"}).status_code == 401
        assert _get(f"{mirror.url}/api/models/org/tiny/revision/main").status_code == 401
        # upstream gone: the decisions made stand (the right token is served from the store, no token is refused);
        # a token never checked cannot be, so it is a gateway error, not a refusal
        hub.server.stop()
        mirror.app.access.remember = 0  # decisions are old now: only upstream could renew them
        assert _get(url, headers={"Authorization": f"Bearer {TOKEN}"}).content == MODEL_MAIN["config.json"].encode()
        assert _get(url).status_code == 401
        assert _get(url, headers={"Authorization": "Bearer hf_never_seen"}).status_code in (502, 503, 504)
        assert TOKEN not in "\n".join(mirror.lines)
    finally:
        mirror.stop()
        hub.server.stop()


def test_mirror_token_limits_who_may_use_it(tmp_path, upstream):
    mirror = _mirror(tmp_path / "store", upstream.url, token="mirror-secret")
    try:
        url = f"{mirror.url}/org/tiny/resolve/main/config.json"
        assert _get(url).status_code == 401
        assert _get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert _get(url, headers={"Authorization": "Bearer mirror-secret"}).status_code == 200
    finally:
        mirror.stop()


def test_a_client_cut_off_mid_stream_does_not_stop_the_fetch(tmp_path, upstream, mirror):
    upstream.app.faults.add(Fault("slow", "huge.bin", times=-1, rate=2_000_000))
    commit = upstream.commit("org/tiny")
    host, port = mirror.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(f"GET /org/tiny/resolve/{commit}/huge.bin HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert sock.recv(65536)  # headers (and perhaps some bytes) arrived: the fetch is under way
    sock.close()
    blob = blob_of(tmp_path / "store", "huge.bin", upstream)
    wait_for(blob.exists, "the blob to be published")
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    assert len(upstream_gets(upstream, "huge.bin")) == 1


def test_offline_mirror_serves_the_store_only(tmp_path, upstream, mirror):
    commit = upstream.commit("org/tiny")
    assert _get(f"{mirror.url}/org/tiny/resolve/main/config.json").status_code == 200
    offline = _mirror(tmp_path / "store", "http://127.0.0.1:9", offline=True)
    try:
        r = _get(f"{offline.url}/org/tiny/resolve/main/config.json")
        assert r.status_code == 200 and r.headers["X-Repo-Commit"] == commit
        assert _get(f"{offline.url}/org/tiny/resolve/main/big.bin").status_code == 503
        assert _get(f"{offline.url}/org/tiny/resolve/v1/config.json").status_code == 503
    finally:
        offline.stop()


def test_genuine_absences_stay_404(upstream, mirror):
    r = _get(f"{mirror.url}/org/tiny/resolve/main/no-such-file.txt")
    assert r.status_code == 404 and r.headers["X-Error-Code"] == "EntryNotFound"
    assert r.headers["X-Repo-Commit"] == upstream.commit("org/tiny")
    r = _get(f"{mirror.url}/org/nothing/resolve/main/config.json")
    assert r.status_code in (401, 404) and r.headers["X-Error-Code"] == "RepoNotFound"
    r = _get(f"{mirror.url}/org/tiny/resolve/no-such-branch/config.json")
    assert r.status_code == 404 and r.headers["X-Error-Code"] == "RevisionNotFound"


def test_tree_listing_pages_and_paths_info(upstream, mirror, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.setattr("hfcache.server.app.PAGE_SIZE", 2)  # upstream and mirror both answer in pages of 2
    api = HfApi(endpoint=mirror.url)
    files = {f.path for f in api.list_repo_tree("org/tiny", recursive=True) if hasattr(f, "size")}
    assert files == set(MODEL_MAIN) | {"huge.bin"}
    r = _get(f"{mirror.url}/api/models/org/tiny/tree/main?recursive=true")
    assert len(r.json()) == 2 and 'rel="next"' in r.headers["Link"] and mirror.url in r.headers["Link"]
    info = api.get_paths_info("org/tiny", ["config.json", "tokenizer", "missing"])
    assert {i.path for i in info} == {"config.json", "tokenizer"}
    assert api.model_info("org/tiny", revision="refs/pr/1").sha == upstream.commit("org/tiny", "refs/pr/1")


def test_accel_redirect_answers_stored_blobs_with_the_path_in_the_store(tmp_path, upstream):
    store = tmp_path / "store"
    mirror = _mirror(store, upstream.url, accel_redirect="/_hfcache/")
    try:
        commit = upstream.commit("org/tiny")
        url = f"{mirror.url}/org/tiny/resolve/{commit}/big.bin"
        assert _get(url).content == MODEL_MAIN["big.bin"]  # not stored yet: streamed by the mirror
        blob = blob_of(store, "big.bin", upstream)
        wait_for(blob.exists, "the blob in the store")
        r = _get(url)
        assert r.content == b"" and r.headers["X-Accel-Redirect"] == "/_hfcache/" + blob.relative_to(store).as_posix()
        assert r.headers["X-Repo-Commit"] == commit and r.headers["ETag"] == f'"{blob.name}"'
        head = requests.head(url, timeout=60)
        assert head.headers["Content-Length"] == str(len(MODEL_MAIN["big.bin"]))
        assert not [h for h in (*r.headers, *head.headers) if h.lower().startswith("x-xet") or h.lower() == "link"]
    finally:
        mirror.stop()


def test_cli_prints_a_complete_nginx_conf(tmp_path):
    r = run_cli("serve", "--nginx-conf", "--cache-dir", str(tmp_path), "--port", "8123", "--listen", "9000")
    assert r.returncode == 0, r.stderr
    conf = r.stdout
    assert f"alias {tmp_path}/;" in conf and "server 127.0.0.1:8123;" in conf and "listen 0.0.0.0:9000;" in conf
    assert "internal;" in conf and "proxy_buffering off;" in conf
    r = run_cli("serve", "--nginx-conf", "--cache-dir", str(tmp_path), "--upstream-servers", "127.0.0.1:1,h;x:2")
    assert r.returncode == 2 and "--upstream-servers" in r.stderr
    r = run_cli("serve", "--upstream", "ftp://x", "--cache-dir", str(tmp_path))
    assert r.returncode == 2


def test_hfcache_itself_fetches_through_the_mirror(tmp_path, upstream, mirror):
    ours = tmp_path / "ours"
    r = run_cli("download", "org/tiny", "huge.bin", "--cache-dir", str(ours), endpoint=mirror.url)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip().splitlines()[-1]).read_bytes() == BIG
    assert os.path.isfile(blob_of(tmp_path / "store", "huge.bin", upstream))


def test_clients_of_both_kinds_snapshot_at_once_and_each_blob_comes_once(tmp_path, upstream):
    """The loopback variant of the cluster case: huggingface_hub and hfcache processes snapshot the same repo at
    once through a mirror process; each blob is fetched upstream once and every client cache is the Hub's layout."""
    import subprocess
    import sys

    upstream.app.faults.add(Fault("slow", "huge.bin", times=-1, rate=3_000_000))
    mirror = start_mirror(tmp_path / "store", upstream.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_ENDPOINT", "HF_HUB_OFFLINE"))}
    env.update(HF_ENDPOINT=mirror.url, HFCACHE_NO_FSYNC="1")
    hf = "import sys; from huggingface_hub import snapshot_download; print(snapshot_download('org/tiny', " \
         "cache_dir=sys.argv[1]))"
    try:
        procs = []
        for i in range(4):
            cache = tmp_path / f"client{i}"
            args = [sys.executable, "-c", hf, str(cache)] if i % 2 == 0 else \
                [sys.executable, "-m", "hfcache", "snapshot", "org/tiny", "--cache-dir", str(cache)]
            procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-2000:]
    finally:
        mirror.stop()
    for name in {*MODEL_MAIN, "huge.bin"}:
        assert len(upstream_gets(upstream, name.rsplit("/", 1)[-1])) == 1, name
    layouts = [cache_tree(tmp_path / f"client{i}") for i in range(4)]
    assert layouts[0] == layouts[2]
    for i in range(4):
        r = run_cli("verify", "--cache-dir", str(tmp_path / f"client{i}"))
        assert r.returncode == 0, r.stdout + r.stderr
    hub_files = {k for k in layouts[0] if "/snapshots/" in k or "/blobs/" in k or "/refs/" in k}
    assert {k for k in layouts[1] if k in hub_files or "/snapshots/" in k or "/blobs/" in k or "/refs/" in k} \
        == hub_files
    assert all(layouts[1][k] == layouts[0][k] for k in hub_files)


def test_a_ranged_request_for_a_blob_on_its_way_gets_the_whole_checked_body(tmp_path, upstream, mirror):
    """A far range of an uncached blob would wait, silent, for the fetch to reach it (clients time out): the mirror
    answers 200 with the whole body instead, and hfcache's own parallel ranged download copes with that."""

    upstream.app.faults.add(Fault("slow", "huge.bin", times=-1, rate=3_000_000))
    commit = upstream.commit("org/tiny")
    url = f"{mirror.url}/org/tiny/resolve/{commit}/huge.bin"
    first = requests.get(url, stream=True, timeout=60)  # the fetch is under way
    r = _get(url, headers={"Range": "bytes=2000000-2999999"})
    assert r.status_code == 200 and r.content == BIG
    assert first.content == BIG
    wait_for(blob_of(tmp_path / "store", "huge.bin", upstream).exists, "the blob in the store")
    r = _get(url, headers={"Range": "bytes=2000000-2999999"})  # stored: ranges are honoured
    assert r.status_code == 206 and r.content == BIG[2_000_000:]
    assert len(upstream_gets(upstream, "huge.bin")) == 1


def test_datasets_loads_through_the_mirror(tmp_path, upstream, mirror):
    import subprocess
    import sys

    from hfcache.cache.layout import RepoRef
    from tests.conftest import write_files

    upstream.app.catalog.add_folder(RepoRef("org/csvds", "dataset"), write_files(tmp_path / "csv", {
        "data/train.csv": "a,b\n1,2\n3,4\n", "README.md": "# csv\n"}), "main")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_ENDPOINT", "HF_HUB_OFFLINE"))}
    env.update(HF_ENDPOINT=mirror.url, HF_HOME=str(tmp_path / "home"), HF_DATASETS_OFFLINE="0")
    code = "import datasets; print(datasets.load_dataset('org/csvds')['train'].num_rows)"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "2", r.stderr[-2000:]


def test_a_silent_upstream_does_not_hold_clients_when_a_last_answer_exists(tmp_path, upstream):
    """A partition (upstream accepts, then says nothing) must not cost clients their own timeout: after a short
    wait the mirror serves the last known commit and access decision."""
    mirror = _mirror(tmp_path / "store", upstream.url, revalidate=0)
    try:
        mirror.app.access.remember = 0  # the access decision must be renewed too
        commit = upstream.commit("org/tiny")
        assert _get(f"{mirror.url}/org/tiny/resolve/main/config.json").status_code == 200
        upstream.app.latency = 30.0  # every upstream answer now takes longer than any client waits
        for _ in range(3):
            r = requests.get(f"{mirror.url}/org/tiny/resolve/main/config.json", timeout=8)
            assert r.status_code == 200 and r.headers["X-Repo-Commit"] == commit
    finally:
        upstream.app.latency = 0.0
        mirror.stop()


def test_a_name_no_file_system_takes_is_a_bad_request_not_a_retry(mirror):
    """A revision component over 255 bytes can never be stored: 400 at once (a 503 would make clients retry)."""
    r = _get(f"{mirror.url}/api/models/org/tiny/revision/{'a' * 300}")
    assert r.status_code == 400, (r.status_code, r.text)
    r = _get(f"{mirror.url}/org/tiny/resolve/main/{'b' * 300}.txt")
    assert r.status_code in (400, 404) and r.status_code != 503, (r.status_code, r.text)
