"""The mirror as a team would run it: an upstream Hub on one node, nginx in front of two `hfcache serve --upstream`
processes sharing one store on another, eight client nodes fetching at once, half with huggingface_hub and half
with hfcache; then faults. Nodes are network namespaces on one bridge (root only: skipped otherwise); with
HFCACHE_LAB_LOOPBACK=1 the same tests run on 127.0.0.1 as any user, minus the partition. Skipped without nginx,
and until `hfcache serve` has --upstream.

What is proved: the upstream sends each blob's bytes once however many clients and processes ask; every client
cache verifies and equals huggingface_hub's own layout; after a mirror crash, an upstream outage (429, 5xx, gone,
unreachable), a client cut off, a branch moving upstream, or wrong bytes upstream, clients still end up with
whole, correct snapshots and nothing is recorded as missing.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import mirrorkit as mk
from tests import netlab
from tests.conftest import cache_tree, wait_for

LOOPBACK = os.environ.get("HFCACHE_LAB_LOOPBACK") == "1"  # the same tests on 127.0.0.1 (any user; no partition)
NO_LAB = None if LOOPBACK else netlab.available()
pytestmark = [pytest.mark.skipif(mk.nginx_support() is not None, reason=str(mk.nginx_support())),
              pytest.mark.skipif(NO_LAB is not None, reason=f"{NO_LAB} (HFCACHE_LAB_LOOPBACK=1 runs on loopback)"),
              pytest.mark.timeout(300)]
MB = 1_000_000


def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


TINY = {"config.json": '{"model_type": "bert"}\n', "README.md": "# tiny\n", "tokenizer/vocab.txt": "a\nb\n",
        "nested/deep/notes.txt": "deep\n", "model.safetensors": blob(10 * MB, 1), "big.bin": blob(6 * MB, 2),
        "small.bin": blob(300_000, 3)}
REPOS = {
    ("org/tiny", "model", "main"): TINY,
    ("org/kill", "model", "main"): {"config.json": "{}\n", "w.bin": blob(8 * MB, 10)},
    ("org/cut", "model", "main"): {"config.json": "{}\n", "w.bin": blob(8 * MB, 11)},
    ("org/stale", "model", "main"): {"config.json": "{}\n", "w.bin": blob(2 * MB, 12)},
    ("org/move", "model", "main"): {"config.json": '{"v": 1}\n', "w.bin": blob(4 * MB, 13)},
    ("org/move", "model", "next"): {"config.json": '{"v": 2}\n', "w.bin": blob(4 * MB, 14)},
    ("org/bad", "model", "main"): {"config.json": "{}\n", "w.bin": blob(6 * MB, 15)},
}
SLOW = 2 * MB  # bytes per second of a slowed upstream body: a download lasts long enough to be interrupted


class World:
    """The lab, the upstream, the mirror, nginx: built once per module."""

    def __init__(self, work: Path) -> None:
        self.work = work
        netlab.sweep_stale()  # namespaces an earlier run lost when it was killed
        self.commits = mk.build_upstream_cache(work / "upstream", work / "src", REPOS)
        self.lab = netlab.Lab("mirror", loopback=LOOPBACK)
        try:
            self._build()
        except BaseException:
            self.lab.close()
            raise
        self.n = 0

    def _build(self) -> None:
        lab = self.lab
        self.up_node, self.mirror_node = lab.node("up"), lab.node("mirror")
        self.client_nodes = [self.mirror_node] * 8 if LOOPBACK else [lab.node(f"c{i}") for i in range(8)]
        cdn = self.up_node.add_ip()  # LFS bytes come from another origin, as from the Hub's CDN
        self.upstream = mk.Upstream(self.up_node, self.work / "upstream", netlab.free_port() if LOOPBACK else 8000,
                                    self.work / "upstream.log", cdn_host=cdn).start()
        if not LOOPBACK:
            self.up_node.limit("400mbit")  # slower than loopback: concurrent clients really overlap upstream
        self.nginx_port = netlab.free_port() if LOOPBACK else 80
        self.endpoint = f"http://{self.mirror_node.ip}:{self.nginx_port}"

    def start_mirror(self) -> None:
        ports = [netlab.free_port(), netlab.free_port()]
        self.mirror = mk.Mirror(self.mirror_node, self.upstream.url, self.work / "store", ports,
                                self.work, revalidate=1).start()
        conf = mk.mirror_nginx_conf(self.mirror.cache, ports[0], f"{self.mirror_node.ip}:{self.nginx_port}",
                                    [f"127.0.0.1:{p}" for p in ports])
        path = mk.write_nginx(self.work / "nginx", conf)
        mk.start_nginx(self.mirror_node, self.work / "nginx", path, self.nginx_port)

    def clients(self, repo_id: str, kinds: list[str], revision: str = "main") -> list[mk.Client]:
        out = []
        for i, kind in enumerate(kinds):
            self.n += 1
            c = mk.Client(self.client_nodes[i % len(self.client_nodes)], kind, self.work / f"client{self.n}" / "hub")
            out.append(c.start(self.endpoint, repo_id, revision))
        return out

    def fetch(self, repo_id: str, kinds: list[str], revision: str = "main") -> list[mk.Client]:
        clients = self.clients(repo_id, kinds, revision)
        codes = mk.run_all(clients)
        for c, code in zip(clients, codes, strict=True):
            assert code == 0, f"{c.kind} client failed:\n{c.err[-3000:]}\nmirror:\n{self.mirror.logs()[-3000:]}"
        return clients

    def close(self) -> None:
        self.lab.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("mirrorlab"))
    yield w
    w.close()


@pytest.fixture(scope="module")
def mirror(world):
    if (reason := mk.mirror_support()) is not None:
        pytest.skip(reason)
    world.start_mirror()
    return world


def no_exist_markers(*caches: Path) -> list[str]:
    return [str(p) for c in caches if c.exists() for p in c.rglob(".no_exist") if p.is_dir() and any(p.iterdir())]


def assert_verifies(*caches: Path) -> None:
    for cache in caches:
        r = mk.verify(cache)
        assert r.returncode == 0, f"{cache}:\n{r.stdout}{r.stderr}"


def assert_is_commit(world: World, client: mk.Client, repo_id: str, commit: str) -> None:
    """The client's snapshot of `repo_id` is exactly `commit` upstream: same files, same bytes."""
    theirs = mk.snapshot_files(client.cache, repo_id, commit)
    assert theirs == mk.snapshot_files(world.upstream.cache, repo_id, commit)


# -- the harness alone (no mirror needed) -----------------------------------------------------------------------
def test_lab_is_removed_even_when_the_body_fails():
    if LOOPBACK:
        pytest.skip("a loopback lab has no namespaces to remove")
    with pytest.raises(RuntimeError), netlab.Lab("teardown") as lab:
        node = lab.node("a")
        proc = node.popen(["sleep", "300"])
        raise RuntimeError("the test body fails")
    assert proc.poll() is not None
    assert not [p for p in netlab.NETNS_DIR.iterdir() if p.name.startswith(lab.tag)]


def test_clients_through_nginx_in_front_of_a_plain_server(world):
    """The harness itself: nginx proxying `hfcache serve --cache-dir` over a copy of the upstream store, four
    clients in their own nodes at once; huggingface_hub's and hfcache's caches are the same."""
    store = world.work / "plain-store"
    if not store.exists():
        shutil.copytree(world.upstream.cache, store, symlinks=True)
    port, front = netlab.free_port(), netlab.free_port()
    node = world.mirror_node
    server = node.popen([*mk.HFCACHE, "serve", "--cache-dir", str(store), "--port", str(port), "--quiet"],
                        stdout=subprocess.DEVNULL, stderr=(world.work / "plain.log").open("ab"))
    world.lab.wait_port(node, "127.0.0.1", port, proc=server)
    conf = f"""server {{
    listen {node.ip}:{front};
    location / {{ proxy_pass http://127.0.0.1:{port}; proxy_http_version 1.1; proxy_set_header Host $http_host;
                 proxy_buffering off; }}
}}"""
    nginx = mk.start_nginx(node, world.work / "nginx-plain", mk.write_nginx(world.work / "nginx-plain", conf), front)
    try:
        clients = [mk.Client(world.client_nodes[i], kind, world.work / f"plain{i}" / "hub")
                   for i, kind in enumerate(["hf", "hfcache"] * 2)]
        for c in clients:
            c.start(f"http://{node.ip}:{front}", "org/tiny")
        codes = mk.run_all(clients)
        assert codes == [0] * 4, [c.err[-2000:] for c in clients]
        oracle = cache_tree(clients[0].cache)
        assert all(cache_tree(c.cache) == oracle for c in clients[1:])
        assert_verifies(*(c.cache for c in clients))
    finally:
        world.lab.kill(nginx)
        world.lab.kill(server)


# -- the mirror -------------------------------------------------------------------------------------------------
def test_eight_clients_at_once_cost_one_upstream_fetch_per_blob(mirror):
    commit = mirror.commits[("org/tiny", "main")]
    clients = mirror.fetch("org/tiny", ["hf", "hfcache"] * 4)
    for name, (blob_name, size) in mk.snapshot_files(mirror.upstream.cache, "org/tiny", commit).items():
        sha = blob_name if len(blob_name) == 64 else None
        requests, sent = mirror.upstream.sent("org/tiny", name, sha)
        assert sent == size, f"{name}: the upstream sent {sent} bytes in {requests} GETs for a {size}-byte file"
    oracle = cache_tree(clients[0].cache)  # written by huggingface_hub
    for c in clients[1:]:
        assert cache_tree(c.cache) == oracle, f"{c.kind} client's cache differs from huggingface_hub's"
    assert_verifies(*(c.cache for c in clients), mirror.mirror.cache)
    assert_is_commit(mirror, clients[1], "org/tiny", commit)


def test_mirror_killed_mid_download_and_restarted(mirror):
    commit = mirror.commits[("org/kill", "main")]
    sha, size = mk.snapshot_files(mirror.upstream.cache, "org/kill", commit)["w.bin"]
    mirror.upstream.control("body", kind="slow", match=sha, times=-1, rate=SLOW)
    try:
        early = mirror.clients("org/kill", ["hfcache", "hfcache"])
        wait_for(lambda: all(mk.partial_bytes(c.cache) > MB for c in early), "clients receiving bytes", 60)
        mirror.mirror.kill()
        mirror.mirror.start()
        codes = mk.run_all(early)
        assert codes == [0, 0], [c.err[-2000:] for c in early]
        late = mirror.fetch("org/kill", ["hf", "hfcache"])
    finally:
        mirror.upstream.control("clear")
    for c in early + late:
        assert_is_commit(mirror, c, "org/kill", commit)
    assert_verifies(*(c.cache for c in early + late), mirror.mirror.cache)


def test_client_cut_off_mid_stream_harms_nobody(mirror):
    commit = mirror.commits[("org/cut", "main")]
    sha, size = mk.snapshot_files(mirror.upstream.cache, "org/cut", commit)["w.bin"]
    mirror.upstream.control("body", kind="slow", match=sha, times=-1, rate=SLOW)
    try:
        cut, stays = mirror.clients("org/cut", ["hfcache", "hf"])
        wait_for(lambda: mk.partial_bytes(cut.cache) > MB, "the client receiving bytes", 60)
        mirror.lab.kill(cut.proc)
        assert mk.run_all([stays]) == [0], stays.err[-2000:]
    finally:
        mirror.upstream.control("clear")
    late = mirror.fetch("org/cut", ["hfcache"])
    assert mirror.upstream.sent("org/cut", "w.bin", sha)[1] == size  # the cut did not cost a second fetch
    for c in [stays, *late]:
        assert_is_commit(mirror, c, "org/cut", commit)
    assert_verifies(stays.cache, *(c.cache for c in late), mirror.mirror.cache)


@pytest.mark.parametrize("outage", ["429", "500", "503", "gone", "unreachable"])
def test_upstream_trouble_serves_cached_commits(mirror, outage):
    commit = mirror.commits[("org/stale", "main")]
    mirror.fetch("org/stale", ["hfcache"])  # cached (a no-op after the first case)
    up = mirror.upstream
    seen = len(up.lines())
    if outage.isdigit():
        up.control("status", code=int(outage), match="", times=-1)
    elif outage == "gone":
        up.stop()
    else:
        if LOOPBACK:
            pytest.skip("a partition needs network namespaces (root)")
        up.node.link(False)
    try:
        for _ in range(20):  # until the mirror asked upstream again (its --revalidate 1 has passed) and failed
            clients = mirror.fetch("org/stale", ["hf", "hfcache"])
            for c in clients:
                assert_is_commit(mirror, c, "org/stale", commit)
            if not outage.isdigit() and _ >= 1:
                break  # two rounds: the second comes after the revalidation time, so the mirror tried upstream
            if outage.isdigit() and any(s == int(outage) for *_, s, _ in up.lines()[seen:]):
                break
        else:
            pytest.fail(f"the mirror never asked the upstream after the {outage} fault was set")
    finally:
        if outage.isdigit():
            up.control("clear")
        elif outage == "gone":
            up.start()
        elif outage == "unreachable":
            up.node.link(True)
    assert no_exist_markers(*(c.cache for c in clients), mirror.mirror.cache) == []
    assert_verifies(*(c.cache for c in clients), mirror.mirror.cache)


def test_main_moving_upstream_while_clients_fetch(mirror):
    old, new = mirror.commits[("org/move", "main")], mirror.commits[("org/move", "next")]
    sha, _ = mk.snapshot_files(mirror.upstream.cache, "org/move", old)["w.bin"]
    mirror.upstream.control("body", kind="slow", match=sha, times=-1, rate=SLOW)
    try:
        clients = mirror.clients("org/move", ["hf", "hfcache"] * 2)
        wait_for(lambda: any(p == f"/cdn/{sha}" for _, p, *_ in mirror.upstream.lines()), "the mirror fetching", 60)
        mk.move_ref(mirror.upstream.cache, "org/move", "main", new)
        codes = mk.run_all(clients)
        assert codes == [0] * 4, [c.err[-2000:] for c in clients]
    finally:
        mirror.upstream.control("clear")
    for c in clients:  # each client holds one whole commit, and its main names it
        snaps = [p.name for p in (c.cache / "models--org--move" / "snapshots").iterdir()]
        assert len(snaps) == 1 and snaps[0] in (old, new)
        assert (c.cache / "models--org--move" / "refs" / "main").read_text() == snaps[0]
        assert_is_commit(mirror, c, "org/move", snaps[0])
    for _ in range(30):  # the move shows once the mirror's --revalidate 1 has passed
        (late,) = mirror.fetch("org/move", ["hfcache"])
        if (late.cache / "models--org--move" / "refs" / "main").read_text() == new:
            break
    else:
        pytest.fail("the mirror never saw main move")
    assert_is_commit(mirror, late, "org/move", new)
    assert_verifies(*(c.cache for c in [*clients, late]), mirror.mirror.cache)


def test_wrong_bytes_upstream_never_reach_a_cache(mirror):
    commit = mirror.commits[("org/bad", "main")]
    sha, size = mk.snapshot_files(mirror.upstream.cache, "org/bad", commit)["w.bin"]
    mirror.upstream.control("body", kind="corrupt", match=sha, times=1)
    try:
        first = mirror.clients("org/bad", ["hf", "hfcache"])
        mk.run_all(first)
    finally:
        mirror.upstream.control("clear")
    assert any(s == 200 and p == f"/cdn/{sha}" for _, p, s, _ in mirror.upstream.lines())
    done = [c for c in first if c.proc.returncode == 0]
    for c in done:  # a client that finished holds the right bytes (one that failed holds no snapshot file)
        assert_is_commit(mirror, c, "org/bad", commit)
    later = mirror.fetch("org/bad", ["hf", "hfcache"])  # the upstream is honest again: the mirror fetches anew
    for c in later:
        assert_is_commit(mirror, c, "org/bad", commit)
    assert_verifies(*(c.cache for c in done + later), mirror.mirror.cache)
