"""Mirror benchmark: `hfcache serve --upstream` behind nginx against nginx serving the same file itself, the
mirror alone, and olah, in the same run, on the same file.

    .venv/bin/python scripts/bench_mirror.py [--size-mib 1024] [--clients 8] [--runs 3] [--loopback]
                                             [--olah-venv /tmp/hfcache-bench-olah] [--no-olah] [--no-doc]

(a) Cache hits: `--clients` curl processes at once each download the whole blob (1 GiB by default); aggregate
    MB/s per server, the goal being nginx+mirror >= 0.9 of nginx alone. (b) An uncached blob: the same clients at
    once through nginx+mirror with an empty store, against one curl fetching it from the upstream (goal: close to
    one upstream fetch), and the bytes the upstream sent. (c) Resolve requests per second (wrk): GET of a small
    file, and of the blob's first byte (wrk cannot time HEAD). Runs alternate between servers; best and median
    are reported. As root the nodes are network namespaces (upstream, server, one per client); otherwise, or
    with --loopback, all on 127.0.0.1. olah (PyPI) is installed into its own venv (`python3 -m venv DIR &&
    DIR/bin/pip install olah`) and pointed at the same upstream (a local `tests/hub_node.py`, like the Hub with
    its CDN on another host name).
Results go to stdout and to docs/benchmarks.md (section "mirror").
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import mirrorkit as mk  # noqa: E402
from tests import netlab  # noqa: E402

WORK = ROOT / "build" / "bench-mirror"
MiB = 1024 * 1024
REPO = "org/big"


def write_random(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n


def upstream_cache(size: int) -> tuple[Path, str, str]:
    """The upstream's store (built once per size): (cache, commit, blob sha256)."""
    cache = WORK / f"upstream-{size}"
    marker = cache / "bench-commit"
    if not marker.exists():
        shutil.rmtree(cache, ignore_errors=True)
        src = WORK / "src"
        shutil.rmtree(src, ignore_errors=True)
        write_random(src / "model.safetensors", size)
        (src / "config.json").write_text('{"model_type": "bench"}\n')
        commits = mk.build_upstream_cache(cache, WORK, {(REPO, "model", "main"): src})
        shutil.rmtree(src)
        marker.write_text(commits[(REPO, "main")])
    commit = marker.read_text()
    sha = mk.snapshot_files(cache, REPO, commit)["model.safetensors"][0]
    return cache, commit, sha


def ensure_olah(venv: Path) -> Path | None:
    olah = venv / "bin" / "olah-cli"
    if not olah.exists():
        print(f"bench: installing olah into {venv} (python3 -m venv; pip install olah)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        p = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "olah"], capture_output=True, text=True)
        if p.returncode != 0:
            print(f"bench: olah could not be installed: {p.stderr.strip()[-500:]}", flush=True)
            return None
    return olah


def olah_version(venv: Path) -> str:
    p = subprocess.run([str(venv / "bin" / "pip"), "show", "olah"], capture_output=True, text=True)
    return next((line.split()[-1] for line in p.stdout.splitlines() if line.startswith("Version:")), "?")


class Bench:
    def __init__(self, args: argparse.Namespace, lab: netlab.Lab) -> None:
        self.args, self.lab = args, lab
        self.size = args.size_mib * MiB
        self.cache, self.commit, self.sha = upstream_cache(self.size)
        loop = lab.loopback
        self.up_node, self.srv = lab.node("up"), lab.node("srv")
        self.clients = [self.srv] * args.clients if loop else [lab.node(f"c{i}") for i in range(args.clients)]
        cdn = self.up_node.add_ip()
        self.upstream = mk.Upstream(self.up_node, self.cache, netlab.free_port() if loop else 8000,
                                    WORK / "upstream.log", cdn_host=cdn).start()
        self.ports = {name: netlab.free_port() for name in ("nginx", "direct", "olah", "m1", "m2", "m3")}
        self.host = self.srv.ip

    # -- servers ------------------------------------------------------------------------------------------------
    def start_mirror(self, fresh: bool) -> None:
        store = WORK / "store"
        if fresh:
            shutil.rmtree(store, ignore_errors=True)
        for old in (getattr(self, "mirror", None), getattr(self, "alone", None)):
            if old is not None:
                old.kill()
        self.mirror = mk.Mirror(self.srv, self.upstream.url, store, [self.ports["m1"], self.ports["m2"]], WORK,
                                revalidate=3600).start()
        # the mirror without nginx: no X-Accel-Redirect, it sends the bytes itself, on an address clients reach
        self.alone = mk.Mirror(self.srv, self.upstream.url, store, [self.ports["m3"]], WORK, revalidate=3600,
                               accel=False, host=self.host).start()

    def start_nginx(self, with_mirror: bool) -> None:
        if with_mirror:
            conf = mk.mirror_nginx_conf(WORK / "store", self.ports["m1"], f"{self.host}:{self.ports['nginx']}",
                                        [f"127.0.0.1:{self.ports['m1']}", f"127.0.0.1:{self.ports['m2']}"])
            mk.start_nginx(self.srv, WORK / "nginx", mk.write_nginx(WORK / "nginx", conf), self.ports["nginx"])
        # the same blob file the mirror serves (without a mirror: the upstream's own copy)
        direct = mk.direct_nginx_conf(f"{self.host}:{self.ports['direct']}", WORK / "store" if with_mirror
                                      else self.cache)
        mk.start_nginx(self.srv, WORK / "nginx-direct", mk.write_nginx(WORK / "nginx-direct", direct),
                       self.ports["direct"])

    def start_olah(self, olah: Path, fresh: bool) -> None:
        repos = WORK / "olah-repos"
        if fresh:
            shutil.rmtree(repos, ignore_errors=True)
        if getattr(self, "olah", None):
            self.lab.kill(self.olah)
        up = self.upstream
        port = self.ports["olah"]
        self.olah = self.srv.popen(
            [str(olah), "--host", self.host, "--port", str(port), "--hf-scheme", "http",
             "--hf-netloc", f"{up.node.ip}:{up.port}", "--hf-lfs-netloc", f"{up.cdn_host}:{up.port}",
             "--mirror-scheme", "http", "--mirror-netloc", f"{self.host}:{port}",
             "--mirror-lfs-netloc", f"{self.host}:{port}", "--repos-path", str(repos), "--log-path",
             str(WORK / "olah-logs")],
            stdout=subprocess.DEVNULL, stderr=(WORK / "olah.log").open("ab"), cwd=WORK)
        self.lab.wait_port(self.srv, self.host, port, proc=self.olah)

    # -- measures -----------------------------------------------------------------------------------------------
    def urls(self) -> dict[str, str]:
        resolve = f"/{REPO}/resolve/main/model.safetensors"
        blob = f"/{mk.snapshot_files(self.cache, REPO, self.commit)['model.safetensors'][0]}"
        return {"nginx alone (static file)": f"http://{self.host}:{self.ports['direct']}/models--org--big/blobs{blob}",
                "nginx + hfcache mirror": f"http://{self.host}:{self.ports['nginx']}{resolve}",
                "hfcache mirror alone": f"http://{self.host}:{self.ports['m3']}{resolve}",
                "olah": f"http://{self.host}:{self.ports['olah']}{resolve}"}

    def curl_all(self, url: str, nodes: list[netlab.Node]) -> float:
        """Wall seconds for every node's curl to download `url` in full, all at once."""
        procs = [n.popen(["curl", "-sfL", "-o", "/dev/null", "-w", "%{size_download}", url], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True) for n in nodes]
        t = time.perf_counter()
        outs: list[tuple[str, str]] = [("", "")] * len(procs)

        def wait(i: int) -> None:
            outs[i] = procs[i].communicate(timeout=900)

        threads = [threading.Thread(target=wait, args=(i,)) for i in range(len(procs))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t
        for p, (out, err) in zip(procs, outs, strict=True):
            if p.returncode != 0 or out.strip() != str(self.size):
                raise RuntimeError(f"curl {url}: exit {p.returncode}, {out.strip()} bytes: {err.strip()}")
        return wall

    def curl_to_disk(self, url: str) -> float:
        """Wall seconds for one curl to write `url` to a file on the store's disk and fsync it: what the mirror's
        fetch must do at least (its store is durable), where `curl -o /dev/null` measures the network alone."""
        out = WORK / "one-fetch.bin"
        t = time.perf_counter()
        p = self.clients[0].run(["sh", "-c", 'curl -sfL -o "$1" "$2" && sync "$1"', "sh", str(out), url],
                                timeout=900, capture_output=True, text=True)
        wall = time.perf_counter() - t
        size = out.stat().st_size if out.exists() else -1
        out.unlink(missing_ok=True)
        if p.returncode != 0 or size != self.size:
            raise RuntimeError(f"curl {url} to disk: exit {p.returncode}, {size} bytes: {p.stderr.strip()}")
        return wall

    def wrk(self, url: str, header: str | None = None) -> str:
        """Requests per second, as shown in the table (with failed answers, if any). GET only: this wrk never
        finishes a HEAD answer (it waits for the body its Content-Length announces)."""
        cmd = ["wrk", "-t2", "-c16", "--timeout", "10s", f"-d{self.args.wrk_seconds}s", url]
        if header:
            cmd[1:1] = ["-H", header]
        p = self.clients[0].run(cmd, capture_output=True, text=True, timeout=self.args.wrk_seconds + 60)
        (WORK / f"wrk-{url.split('/')[2]}-{url.rsplit('/', 1)[1]}.txt").write_text(p.stdout + p.stderr)
        out = p.stdout.splitlines()
        rps = next((float(line.split()[1]) for line in out if line.startswith("Requests/sec")), 0.0)
        bad = [line.strip() for line in out if "Non-2xx" in line or "Socket errors" in line]
        return f"{rps:,.0f}" + (f" ({'; '.join(bad)})" if bad else "")


def stats(xs: list[float]) -> tuple[float, float]:
    return statistics.median(xs), min(xs)


def machine(mode: str, load: tuple[float, float, float]) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    from hfcache import __version__

    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, hfcache {__version__}, "
            f"nginx {nginx}, {mode}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start, "
            f"{time.strftime('%Y-%m-%d')}")


def write_doc(text: str) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    old = doc.read_text() if doc.exists() else "# Benchmarks\n"
    start, end = "<!-- bench:mirror -->", "<!-- /bench:mirror -->"
    block = f"{start}\n{text}\n{end}"
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    doc.write_text(new)


def run(args: argparse.Namespace, lab: netlab.Lab) -> str:
    b = Bench(args, lab)
    if args.upstream_mbit:
        b.up_node.limit(f"{args.upstream_mbit}mbit", burst="1mb")  # the mirror's LAN stays unshaped
    olah = None if args.no_olah else ensure_olah(args.olah_venv)
    mirror = not args.peers_only
    if mirror:
        b.start_mirror(fresh=True)
    b.start_nginx(mirror)
    if olah:
        b.start_olah(olah, fresh=True)
    urls = b.urls()
    if not olah:
        urls.pop("olah")
    if not mirror:
        urls.pop("nginx + hfcache mirror")
        urls.pop("hfcache mirror alone")
    gib = args.clients * b.size / 1e6
    lines = []
    # (b) uncached first: the store is empty anyway
    direct8 = f"{args.clients} clients straight from upstream"
    to_disk = "one upstream fetch to disk (curl -o FILE; sync FILE)"
    cold: dict[str, list[float]] = {"one upstream fetch (curl)": [], to_disk: [], direct8: []}
    if mirror:
        cold["1 client, nginx + mirror"] = []
        cold[f"{args.clients} clients, nginx + mirror"] = []
    if olah:
        cold[f"{args.clients} clients, olah"] = []
    sent = []
    blob_url = f"{b.upstream.url}/{REPO}/resolve/main/model.safetensors"
    for r in range(args.runs):
        for name in list(cold)[r % len(cold):] + list(cold)[:r % len(cold)]:
            if name == to_disk:
                cold[name].append(b.curl_to_disk(blob_url))
            elif name.startswith("one"):
                cold[name].append(b.curl_all(blob_url, b.clients[:1]))
            elif name == direct8:
                cold[name].append(b.curl_all(blob_url, b.clients))
            elif name.endswith("olah"):
                b.start_olah(olah, fresh=True)
                cold[name].append(b.curl_all(urls["olah"], b.clients))
            else:
                b.start_mirror(fresh=True)
                seen = b.upstream.sent(REPO, "model.safetensors", b.sha)[1]
                nodes = b.clients[:1] if name.startswith("1 ") else b.clients
                cold[name].append(b.curl_all(urls["nginx + hfcache mirror"], nodes))
                sent.append(b.upstream.sent(REPO, "model.safetensors", b.sha)[1] - seen)
        print(f"bench: uncached run {r + 1}/{args.runs} done", flush=True)
    # (a) cache hits: every server has the blob now (the last cold runs filled the store and olah's cache)
    hot: dict[str, list[float]] = {name: [] for name in urls}
    for url in urls.values():
        b.curl_all(url, b.clients[:1])  # warm (olah: its cache; all: the page cache)
    for r in range(args.runs):
        names = list(urls)[r % len(urls):] + list(urls)[:r % len(urls)]
        for name in names:
            hot[name].append(gib / b.curl_all(urls[name], b.clients))
        print(f"bench: cache-hit run {r + 1}/{args.runs} done", flush=True)
    # (c) resolve requests per second
    small = {name: url.replace("model.safetensors", "config.json") for name, url in urls.items() if "resolve" in url}
    rps = {name: (b.wrk(small[name]), b.wrk(urls[name], "Range: bytes=0-0")) for name in small}

    base = statistics.median(hot["nginx alone (static file)"])
    base_best = max(hot["nginx alone (static file)"])
    if args.upstream_mbit:
        lines.append(f"The upstream's egress shaped to {args.upstream_mbit} Mbit/s with tbf (a WAN link to the Hub); "
                     "the mirror and its clients share an unshaped bridge.\n")
    lines.append(f"### (a) cache hits: {args.clients} clients x {args.size_mib} MiB at once\n")
    lines.append("| server | median MB/s | best MB/s | vs nginx alone (median) | vs nginx alone (best) |")
    lines.append("| --- | ---: | ---: | ---: | ---: |")
    for name, xs in hot.items():
        lines.append(f"| {name} | {statistics.median(xs):,.0f} | {max(xs):,.0f} | "
                     f"{statistics.median(xs) / base:.2f} | {max(xs) / base_best:.2f} |")
    one = stats(cold["one upstream fetch (curl)"])
    lines.append(f"\n### (b) an uncached {args.size_mib} MiB blob\n")
    lines.append("| fetch | median s | best s | vs one upstream fetch (median) |")
    lines.append("| --- | ---: | ---: | ---: |")
    for name, xs in cold.items():
        med, best = stats(xs)
        lines.append(f"| {name} | {med:.2f} | {best:.2f} | {med / one[0]:.2f}x |")
    if sent:
        lines.append(f"\nUpstream bytes sent per uncached mirror run (1 and N clients alike): "
                     f"{', '.join(f'{s / b.size:.2f}x' for s in sent)} the blob's size.")
    lines.append(f"\n### (c) resolve requests per second (wrk -t2 -c16, {args.wrk_seconds} s)\n")
    lines.append("wrk cannot time HEAD (it waits for the body a HEAD answer's Content-Length announces), so the blob's "
                 "resolve is timed as a one-byte range GET.\n")
    lines.append("| server | GET resolve, small file | GET resolve, blob, first byte (Range: bytes=0-0) |")
    lines.append("| --- | ---: | ---: |")
    for name, (get, head) in rps.items():
        lines.append(f"| {name} | {get} | {head} |")
    if olah:
        lines.append(f"\nolah {olah_version(args.olah_venv)} from PyPI, one worker, its own block cache "
                     f"(`--repos-path`), pointed at the same upstream.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--wrk-seconds", type=int, default=10)
    ap.add_argument("--loopback", action="store_true", help="no network namespaces, even as root")
    ap.add_argument("--olah-venv", type=Path, default=Path("/tmp/hfcache-bench-olah"))
    ap.add_argument("--no-olah", action="store_true")
    ap.add_argument("--peers-only", action="store_true", help="only nginx alone and olah (no hfcache mirror)")
    ap.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    ap.add_argument("--upstream-mbit", type=int, default=0,
                    help="shape the upstream's egress with tbf to this rate (a WAN link to the Hub; namespaces only)")
    args = ap.parse_args()
    for need in ("curl", "wrk", "nginx"):
        if shutil.which(need) is None:
            raise SystemExit(f"bench: {need} is not installed")
    if not args.peers_only and (reason := mk.mirror_support()) is not None:
        raise SystemExit(f"bench: {reason} (--peers-only measures nginx and olah alone)")
    WORK.mkdir(parents=True, exist_ok=True)
    loopback = args.loopback or netlab.available() is not None
    mode = "loopback" if loopback else "network namespaces (veth, one bridge)"
    load = os.getloadavg()
    netlab.sweep_stale()
    with netlab.Lab("bench", loopback=loopback) as lab:
        body = run(args, lab)
    text = (f"## mirror\n\nMeasured by `scripts/bench_mirror.py --size-mib {args.size_mib} --clients {args.clients} "
            f"--runs {args.runs}` on {machine(mode, load)}; load average {os.getloadavg()[0]:.2f} at the end.\n\n"
            + body)
    print(text)
    if not args.no_doc:
        write_doc(text)


if __name__ == "__main__":
    main()
