"""The pieces of a mirror lab, shared by tests/test_mirror_netns.py and scripts/bench_mirror.py: an upstream cache
built by huggingface_hub, the upstream Hub node (tests/hub_node.py) and what its access log says was fetched,
mirror processes (`hfcache serve --upstream`), nginx in front of them (or serving files itself), and clients.

Nodes come from tests/netlab.py, so everything runs in network namespaces (root) or on loopback alike.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.netlab import LabError, Node

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
HFCACHE = [PY, "-m", "hfcache"]
_LINE = re.compile(r"^hfcache: (\S+) (GET|HEAD|POST) (\S+) (\d{3}) (\d+)")


def mirror_support() -> str | None:
    """None when this checkout's `hfcache serve` can be a mirror and print an nginx config, else why not."""
    p = subprocess.run([*HFCACHE, "serve", "--help"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    text = p.stdout + p.stderr
    missing = [f for f in ("--upstream", "--nginx-conf", "--accel-redirect") if f not in text]
    return f"`hfcache serve` has no {', '.join(missing)} yet (the mirror is not merged)" if missing else None


def nginx_support() -> str | None:
    return None if shutil.which("nginx") else "nginx is not installed"


# -- upstream ---------------------------------------------------------------------------------------------------
RepoFiles = dict[str, bytes | str] | Path


def build_upstream_cache(cache: Path, work: Path, repos: dict[tuple[str, str, str], RepoFiles]
                         ) -> dict[tuple[str, str], str]:
    """A hub cache holding `repos` ({(repo_id, repo_type, revision): files}), written by huggingface_hub's own
    snapshot_download from a Hub serving the folders: {(repo_id, revision): commit}."""
    from huggingface_hub import snapshot_download

    from hfcache.cache.layout import RepoRef
    from hfcache.server.app import HubApp
    from hfcache.server.catalog import Catalog
    from hfcache.server.run import start_in_thread

    catalog = Catalog()
    for i, ((repo_id, repo_type, rev), files) in enumerate(repos.items()):
        folder = files if isinstance(files, Path) else work / f"src{i}"  # a folder of files, or the files
        for rel, data in ({} if isinstance(files, Path) else files).items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data.encode() if isinstance(data, str) else data)
        catalog.add_folder(RepoRef(repo_id, repo_type), folder, rev)
    commits = {}
    with start_in_thread(HubApp(catalog)) as server:
        for repo_id, repo_type, rev in repos:
            snap = snapshot_download(repo_id, repo_type=repo_type, revision=rev, cache_dir=cache,
                                     endpoint=server.url)
            commits[(repo_id, rev)] = Path(snap).name
    return commits


def move_ref(cache: Path, repo_id: str, ref: str, commit: str, repo_type: str = "model") -> None:
    """Point a branch of the upstream cache at another commit it holds, as a push upstream would."""
    from hfcache.cache.layout import HubCache, RepoRef

    path = HubCache(cache).refs_dir(RepoRef(repo_id, repo_type)) / ref
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(commit)
    os.replace(tmp, path)


@dataclass
class Upstream:
    node: Node
    cache: Path
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None
    cdn_host: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.node.ip}:{self.port}"

    def start(self) -> Upstream:
        args = [PY, str(ROOT / "tests" / "hub_node.py"), "--cache-dir", str(self.cache), "--host",
                "0.0.0.0" if self.node.ns else "127.0.0.1", "--port", str(self.port)]
        if self.cdn_host:
            args += ["--cdn-host", self.cdn_host]
        self.proc = self.node.popen(args, stdout=subprocess.DEVNULL, stderr=self.log_path.open("ab"))
        self.node.lab.wait_port(self.node, self.node.ip, self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.node.lab.kill(self.proc)
            self.proc = None

    def control(self, what: str, **query: object) -> None:
        """A fault on cue (see tests/hub_node.py): control("status", code=503, match="org/x")."""
        from urllib.parse import urlencode

        url = f"{self.url}/_lab/{what}?{urlencode(query)}"

        def post() -> None:
            with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10) as r:
                r.read()

        self.node.call(post, timeout=20)

    def lines(self) -> list[tuple[str, str, int, int]]:
        """(method, path, status, body bytes) per request the upstream answered so far."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if m := _LINE.match(line):
                out.append((m.group(2), m.group(3), int(m.group(4)), int(m.group(5))))
        return out

    def sent(self, repo_id: str, path: str, sha256: str | None) -> tuple[int, int]:
        """(GET requests, body bytes) the upstream sent for one file of a repo: its resolve answers with a body,
        and for an LFS file its CDN answers."""
        n = total = 0
        for method, p, status, size in self.lines():
            if method != "GET" or status not in (200, 206):
                continue
            if (sha256 and p == f"/cdn/{sha256}") or (p.startswith(f"/{repo_id}/resolve/") and
                                                      p.split("/resolve/", 1)[1].split("/", 1)[-1] == path):
                n, total = n + 1, total + size
        return n, total


# -- mirror and nginx -------------------------------------------------------------------------------------------
@dataclass
class Mirror:
    """`hfcache serve --upstream` processes sharing one store, each on its own loopback port of `node`."""

    node: Node
    upstream: str
    cache: Path
    ports: list[int]
    work: Path
    revalidate: float = 1.0
    accel: bool = True
    host: str = "127.0.0.1"
    procs: list[subprocess.Popen] = field(default_factory=list)

    def command(self, port: int) -> list[str]:
        args = [*HFCACHE, "serve", "--upstream", self.upstream, "--cache-dir", str(self.cache), "--host",
                self.host, "--port", str(port), "--revalidate", str(self.revalidate)]
        return args + (["--accel-redirect", "/_hfcache/"] if self.accel else [])

    def start(self) -> Mirror:
        self.cache.mkdir(parents=True, exist_ok=True)
        self.procs = []
        for port in self.ports:
            log = (self.work / f"mirror-{port}.log").open("ab")
            self.procs.append(self.node.popen(self.command(port), stdout=subprocess.DEVNULL, stderr=log))
        for port, proc in zip(self.ports, self.procs, strict=True):
            self.node.lab.wait_port(self.node, self.host, port, proc=proc)
        return self

    def kill(self) -> None:
        for p in self.procs:
            self.node.lab.kill(p)
        self.procs = []

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.work.glob("mirror-*.log")))


def mirror_nginx_conf(cache: Path, port: int, listen: str, servers: Sequence[str]) -> str:
    """The configuration `hfcache serve --nginx-conf` prints for this store and these mirror processes."""
    p = subprocess.run([*HFCACHE, "serve", "--nginx-conf", "--cache-dir", str(cache), "--port", str(port),
                        "--listen", listen, "--upstream-servers", ",".join(servers)],
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise LabError(f"hfcache serve --nginx-conf failed: {p.stderr.strip()}")
    return p.stdout


def direct_nginx_conf(listen: str, root: Path) -> str:
    """nginx serving the files under `root` itself: the ceiling the mirror behind nginx is measured against."""
    return f"""server {{
    listen {listen};
    location / {{ root {root}; }}
}}
"""


_TEMPS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def write_nginx(work: Path, conf: str, workers: int = 2) -> Path:
    """A whole nginx configuration around `conf` (a server block, or a whole configuration) that runs in the
    foreground with every file it writes under `work`."""
    work.mkdir(parents=True, exist_ok=True)
    temps = "\n".join(f"    {t}_temp_path {work}/{t};" for t in _TEMPS)
    if re.search(r"^\s*http\s*\{", conf, re.M):
        text = conf  # a whole configuration: only where nginx writes is ours
        head = ""
    else:
        head = f"worker_processes {workers};\nevents {{ worker_connections 4096; }}\n"
        text = (f"http {{\n    access_log off;\n    sendfile on;\n    tcp_nopush on;\n"
                f"    default_type application/octet-stream;\n{temps}\n{conf}\n}}\n")
    path = work / "nginx.conf"
    path.write_text(head + text)
    return path


def start_nginx(node: Node, work: Path, conf: Path, port: int) -> subprocess.Popen:
    directives = [f"pid {work}/nginx.pid;", f"error_log {work}/error.log warn;", "daemon off;"]
    text = conf.read_text()
    directives = [d for d in directives if d.split()[0] + " " not in text]
    if os.geteuid() == 0 and not re.search(r"^\s*user\s", text, re.M):
        directives.append("user root;")  # workers read files under private temporary folders
    proc = node.popen(["nginx", "-p", str(work), "-c", str(conf), "-g", " ".join(directives)],
                      stdout=subprocess.DEVNULL, stderr=(work / "nginx.stderr").open("ab"))
    node.lab.wait_port(node, node.ip, port, proc=proc)
    return proc


# -- clients ----------------------------------------------------------------------------------------------------
def client_env(endpoint: str, home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HFCACHE_")) and "proxy" not in k.lower()}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", PYTHONPATH=str(ROOT))
    env.update(extra or {})
    return env


def hf_snapshot_cmd(repo_id: str, cache: Path, revision: str = "main") -> list[str]:
    script = (f"from huggingface_hub import snapshot_download; "
              f"print(snapshot_download({repo_id!r}, revision={revision!r}, cache_dir={str(cache)!r}))")
    return [PY, "-c", script]


def hfcache_snapshot_cmd(repo_id: str, cache: Path, revision: str = "main") -> list[str]:
    return [*HFCACHE, "snapshot", repo_id, "--revision", revision, "--cache-dir", str(cache)]


@dataclass
class Client:
    node: Node
    kind: str  # "hf" or "hfcache"
    cache: Path
    proc: subprocess.Popen | None = None
    out: str = ""
    err: str = ""

    def start(self, endpoint: str, repo_id: str, revision: str = "main", env: dict | None = None) -> Client:
        cmd = (hf_snapshot_cmd if self.kind == "hf" else hfcache_snapshot_cmd)(repo_id, self.cache, revision)
        self.proc = self.node.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=client_env(endpoint, self.cache.parent / "home", env))
        return self

    def wait(self, timeout: float = 120) -> int:
        assert self.proc is not None
        try:
            self.out, self.err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.node.lab.kill(self.proc)
            self.out, self.err = self.proc.communicate()
            self.err += f"\n(killed after {timeout:.0f} s)"
        return self.proc.returncode


def run_all(clients: Sequence[Client], timeout: float = 120) -> list[int]:
    """Wait for every client at once (their pipes drained in threads, so none blocks on a full pipe)."""
    codes: list[int] = [0] * len(clients)

    def one(i: int) -> None:
        codes[i] = clients[i].wait(timeout)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 30)
    return codes


def verify(cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*HFCACHE, "verify", "--cache-dir", str(cache)], capture_output=True, text=True,
                          timeout=300)


def partial_bytes(cache: Path) -> int:
    """Bytes written under a cache so far (partial downloads included): the observable 'mid-download'."""
    total = 0
    for dirpath, _, files in os.walk(cache):
        for f in files:
            p = Path(dirpath) / f
            if not p.is_symlink():
                with contextlib.suppress(OSError):
                    total += p.stat().st_size
    return total




def snapshot_files(cache: Path, repo_id: str, commit: str, repo_type: str = "model") -> dict[str, tuple[str, int]]:
    """{path: (blob name, size)} of a snapshot in a cache; a 64-hex blob name is the LFS sha256."""
    from hfcache.cache.layout import HubCache, RepoRef

    snap = HubCache(cache).snapshots_dir(RepoRef(repo_id, repo_type)) / commit
    out = {}
    for p in sorted(snap.rglob("*")):
        if p.is_file():
            out[p.relative_to(snap).as_posix()] = (p.resolve().name, p.stat().st_size)
    return out
