"""Download benchmark: `hfcache snapshot` against aria2c (as `hfd.sh` runs it, and tuned), `huggingface_hub`
and curl, all in the same run, from the same servers.

    .venv/bin/python scripts/bench_download.py [--runs 5] [--big-mb 1024] [--small 2000] [--wan-ms 20] [--netns]

Servers: the project's Hub (`hfcache serve`) answers the API and small files; LFS files are redirected, as by
the Hub to its CDN, to nginx, which serves the blobs (nginx also fronts the Hub, so the redirect goes to another
host name, `localhost`, on the same port). Scenarios:

- (a) one large file through the CDN redirect: hfcache, huggingface_hub, aria2c `-x 4` and `-x 16`, curl;
- (b) many 16 KiB files from the Hub: hfcache, huggingface_hub, aria2c `-x 4 -j 5` (hfd.sh) and `-j 16`;
  (b') the same with `--wan-ms` added to every answer by the Hub (`hfcache serve --latency-ms`);
- (c) a 5-shard model plus tokenizer and config files: hfcache, huggingface_hub;
- (d) with `--netns` (root): client and servers in two network namespaces joined by a veth pair limited by
  `tc tbf`, every answer delayed at the server by a delaying TCP proxy in front of nginx (this kernel has no
  netem): (a) and (b) at 1 Gbit/s + 30 ms and at 200 Mbit/s + 100 ms.

aria2c gets the resolve URLs in an input file (`dir=`/`out=` per file), as hfd.sh writes it, and checks
nothing; huggingface_hub checks sizes; hfcache hashes every byte. Each tool writes into a fresh folder on the
same file system; folders are deleted only after the scenario (deleting thousands of files just before a timed
run makes this VM's ext4 slower at creating inodes for a while, whichever tool runs next). Runs alternate the
order of the tools; median and best are reported, with peak RSS (GNU time: the largest process of the tool's
tree). Results go to stdout and docs/benchmarks.md (section "download").
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_net  # noqa: E402  (the scripts folder, beside this file)

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "bench-download"
BIN = Path(sys.executable).parent
MiB = 1024 * 1024
BASELINE: Path | None = None  # --baseline: an older hfcache source tree, measured as one more tool
CASES = {"a", "b", "c", "b'"}  # --cases
HFD = ["--console-log-level=error", "--file-allocation=none", "-k", "1M", "-c", "--summary-interval=0", "-q"]


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


def build_sources(big_mb: int, small: int) -> dict[str, Path]:
    one = WORK / "src" / "one"
    write_random(one / "model.safetensors", big_mb * MiB)
    many = WORK / "src" / "many"
    for i in range(small):
        write_random(many / f"shard{i // 100:03d}" / f"f{i:05d}.json", 16 * 1024)
    mix = WORK / "src" / "mix"
    for i in range(5):
        write_random(mix / f"model-{i + 1:05d}-of-00005.safetensors", 100 * MiB)
    for name, size in [("tokenizer.json", 7 * MiB // 2), ("vocab.txt", 230_000), ("config.json", 700),
                       ("tokenizer_config.json", 1_200), ("special_tokens_map.json", 125),
                       ("generation_config.json", 180), ("model.safetensors.index.json", 30_000),
                       ("README.md", 9_000)]:
        write_random(mix / name, size)
    return {"one": one, "many": many, "mix": mix}


def cdn_folder(sources: dict[str, Path]) -> Path:
    """The blobs as nginx serves them: `<sha256>` links to the source files (the sha256 remembered by size and
    mtime, so a rerun does not hash 1.5 GiB again)."""
    cdn = WORK / "cdn"
    cdn.mkdir(parents=True, exist_ok=True)
    for folder in sources.values():
        for f in folder.rglob("*"):
            if not f.is_file() or f.stat().st_size < 10 * MiB:
                continue  # what the Hub serves as LFS (the server's threshold is lower; these are the big ones)
            st = f.stat()
            memo = WORK / "sha" / f"{f.relative_to(WORK)}.{st.st_size}.{st.st_mtime_ns}"
            if not memo.exists():
                h = hashlib.sha256()
                with open(f, "rb") as fh:
                    while b := fh.read(8 * MiB):
                        h.update(b)
                memo.parent.mkdir(parents=True, exist_ok=True)
                memo.write_text(h.hexdigest())
            link = cdn / memo.read_text()
            if not link.is_symlink():
                link.symlink_to(f)
    return cdn


def timed(cmd: list[str], env: dict[str, str], prefix: list[str]) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MB) (GNU time's, else this process's children's maximum) and CPU seconds (user +
    system of the command and every process it waited for: a busy machine stretches wall time far more)."""
    gnu_time = Path("/usr/bin/time")
    report = WORK / "time.txt"
    full = [*prefix, str(gnu_time), "-f", "%M", "-o", str(report), *cmd] if gnu_time.exists() else [*prefix, *cmd]
    t = time.perf_counter()
    proc = subprocess.Popen(full, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed: {proc.stderr.read().decode()[-500:]}")
    rss_kb = int(report.read_text().split()[-1]) if gnu_time.exists() else usage.ru_maxrss
    return wall, rss_kb / 1024, usage.ru_utime + usage.ru_stime


def aria_input(url: str, repo: str, files: list[str], dest: Path) -> Path:
    """hfd.sh's input file: one resolve URL per file, with its folder and name."""
    lines = []
    for f in files:
        folder, _, name = f.rpartition("/")
        lines += [f"{url}/{repo}/resolve/main/{f}", f"  dir={dest / folder}", f"  out={name}"]
    path = WORK / f"aria-{repo.replace('/', '-')}-{dest.name}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def tools(kind: str, repo: str, url: str, dest: Path, files: list[str]) -> dict[str, list[str]]:
    hf = ("import sys; from huggingface_hub import snapshot_download; "
          "snapshot_download(sys.argv[1], cache_dir=sys.argv[2])")
    out = {
        "hfcache": [str(BIN / "hfcache"), "snapshot", repo, "--cache-dir", str(dest)],
        "huggingface_hub": [sys.executable, "-c", hf, repo, str(dest)],
    }
    if BASELINE is not None:  # another hfcache source tree (--baseline), in the same interpreter
        out["hfcache (baseline)"] = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(BASELINE)!r}); "
                                     "from hfcache.cli import main; sys.argv[0] = 'hfcache'; sys.exit(main())",
                                     "snapshot", repo, "--cache-dir", str(dest)]
    aria = shutil.which("aria2c")
    if kind == "big" and aria:
        for x in (4, 16):
            out[f"aria2c -x {x}"] = [aria, *HFD, "-x", str(x), "-s", str(x), "-i", str(aria_input(url, repo, files,
                                                                                                   dest))]
    if kind == "small" and aria:
        out["aria2c -x 4 -j 5 (hfd.sh)"] = [aria, *HFD, "-x", "4", "-s", "4", "-j", "5",
                                           "-i", str(aria_input(url, repo, files, dest))]
        out["aria2c -j 16"] = [aria, *HFD, "-x", "4", "-s", "4", "-j", "16", "-i", str(aria_input(url, repo, files,
                                                                                                  dest))]
    if kind == "big" and shutil.which("curl"):
        out["curl"] = ["curl", "-sfL", "--create-dirs", "-o", str(dest / files[0]),
                       f"{url}/{repo}/resolve/main/{files[0]}"]
    return out


def measure(name: str, kind: str, repo: str, source: Path, url: str, runs: int, prefix: list[str] | None = None,
            only: set[str] | None = None) -> dict:
    env = {**os.environ, "HF_ENDPOINT": url, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_TOKEN", None)
    files = sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file())
    nbytes = sum((source / f).stat().st_size for f in files)
    results: dict[str, list[tuple[float, float, float]]] = {}
    trash = WORK / "caches" / "trash"
    for run in range(runs):
        dests = {}
        order = []
        for i, tool in enumerate(tools(kind, repo, url, WORK / "caches" / "x", files)):
            if only is None or tool in only:
                dests[tool] = WORK / "caches" / f"r{run}-{i}"
                order.append(tool)
        if run % 2:
            order.reverse()  # alternate, so no tool always gets the warmer machine
        for tool in order:
            dest = dests[tool]
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            cmd = tools(kind, repo, url, dest, files)[tool]
            subprocess.run(["sync"], check=False)
            results.setdefault(tool, []).append(timed(cmd, env, prefix or []))
            if kind == "big":  # large files: few inodes, but the disk space is needed back
                shutil.rmtree(dest, ignore_errors=True)
            else:
                trash.mkdir(parents=True, exist_ok=True)
                dest.rename(trash / f"{time.monotonic_ns()}")
    shutil.rmtree(trash, ignore_errors=True)
    row = {"scenario": name, "bytes": nbytes, "tools": {}, "load": os.getloadavg()[0]}
    for tool, samples in results.items():
        walls = [w for w, _, _ in samples]
        row["tools"][tool] = {"median": statistics.median(walls), "best": min(walls),
                              "rss": max(r for _, r, _ in samples),
                              "cpu": statistics.median(c for _, _, c in samples)}
    print(render([row]), flush=True)
    return row


def render(rows: list[dict]) -> str:
    lines = ["| scenario | tool | median s | best s | MB/s (median) | CPU s (median) | peak RSS MB "
             "| its time / ours: best, median | its CPU / ours |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        ours = row["tools"]["hfcache"]
        for tool, t in row["tools"].items():
            ratio = "" if tool == "hfcache" else \
                f"{t['best'] / ours['best']:.2f}x, {t['median'] / ours['median']:.2f}x"
            cpu = "" if tool == "hfcache" else f"{t['cpu'] / max(ours['cpu'], 1e-9):.2f}x"
            lines.append(f"| {row['scenario']} | {tool} | {t['median']:.2f} | {t['best']:.2f} | "
                         f"{row['bytes'] / t['median'] / 1e6:,.0f} | {t['cpu']:.2f} | {t['rss']:.0f} | {ratio} "
                         f"| {cpu} |")
    return "\n".join(lines)


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?")
    import huggingface_hub

    from hfcache import __version__

    aria = subprocess.run(["aria2c", "--version"], capture_output=True, text=True).stdout.split("\n")[0] \
        if shutil.which("aria2c") else "no aria2c"
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip() \
        if shutil.which("nginx") else "no nginx"
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, hfcache {__version__}, "
            f"huggingface_hub {huggingface_hub.__version__}, {aria}, {nginx}, {time.strftime('%Y-%m-%d')}")


def write_doc(text: str) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    doc.parent.mkdir(exist_ok=True)
    old = doc.read_text() if doc.exists() else "# Benchmarks\n"
    start, end = "<!-- bench:download -->", "<!-- /bench:download -->"
    block = f"{start}\n{text}\n{end}"
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    doc.write_text(new)


def loopback(args, sources: dict[str, Path], cdn: Path) -> list[dict]:
    rows = []
    mb = args.big_mb
    with bench_net.Servers(WORK, sources, cdn, latency_ms=0) as srv:
        if "a" in CASES:
            rows.append(measure(f"(a) 1 file of {mb} MiB, CDN redirect to nginx", "big", "org/one", sources["one"],
                                srv.url, args.runs))
        if "b" in CASES:
            rows.append(measure(f"(b) {args.small} files of 16 KiB", "small", "org/many", sources["many"],
                                srv.hub_url, args.runs))
        if "c" in CASES:
            rows.append(measure("(c) 5 x 100 MiB shards + tokenizer/config, CDN redirect to nginx", "big", "org/mix",
                                sources["mix"], srv.url, args.runs,
                                only={"hfcache", "huggingface_hub", "hfcache (baseline)"}))
    if args.wan_ms and "b'" in CASES:
        with bench_net.Servers(WORK, sources, cdn, latency_ms=args.wan_ms) as srv:
            rows.append(measure(f"(b') {args.small} files of 16 KiB, {args.wan_ms:g} ms per answer", "small",
                                "org/many", sources["many"], srv.hub_url, args.runs))
    return rows


def netns(args, sources: dict[str, Path], cdn: Path) -> list[dict]:
    rows = []
    for rate, delay in [tuple(int(x) for x in link.split(":")) for link in args.links.split(",")]:
        with bench_net.Link(rate_mbit=rate) as link, \
                bench_net.Servers(WORK, sources, cdn, latency_ms=0, link=link, delay_ms=delay) as srv:
            label = f"{rate} Mbit/s, {delay} ms per answer"
            runs = args.netns_runs or args.runs
            row = measure(f"(d) 1 file of {args.big_mb} MiB, {label}", "big", "org/one", sources["one"], srv.url,
                          runs, prefix=link.client_prefix)
            row["link_mbit"] = rate
            rows.append(row)
            rows.append(measure(f"(d) {args.small} files of 16 KiB, {label}", "small", "org/many", sources["many"],
                                srv.url, runs, prefix=link.client_prefix))
    return rows


def summary(rows: list[dict]) -> str:
    out = []
    for row in rows:
        t = row["tools"]
        ours = t["hfcache"]
        parts = [f"{name}: {t[name]['best'] / ours['best']:.2f}x / {t[name]['median'] / ours['median']:.2f}x"
                 for name in t if name != "hfcache"]
        link = ""
        if "link_mbit" in row:
            best = row["bytes"] * 8 / ours["best"] / 1e6 / row["link_mbit"]
            link = f"; hfcache at {best:.2f} of the link rate (best)"
        out.append(f"- {row['scenario']} (load {row['load']:.1f}): hfcache's speed against "
                   + ", ".join(parts) + f" (best / median){link}; hfcache peak RSS {ours['rss']:.0f} MB.")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--big-mb", type=int, default=1024)
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--wan-ms", type=float, default=20.0, help="delay per answer for (b'); 0: skip it")
    ap.add_argument("--netns", action="store_true", help="also (d), on a tbf-limited veth link (root only)")
    ap.add_argument("--netns-runs", type=int, help="runs for (d) (default: --runs; at 200 Mbit/s a run is minutes)")
    ap.add_argument("--only", choices=["loopback", "netns"], help="run one half")
    ap.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    ap.add_argument("--baseline", type=Path, help="also time this hfcache source tree (e.g. a `git archive` of "
                    "an older commit), as 'hfcache (baseline)'")
    ap.add_argument("--links", default="1000:30,200:100", help="(d)'s links, as MBIT:DELAY_MS,...")
    ap.add_argument("--cases", default="a,b,c,b'", help="loopback cases to run, of a,b,c,b' (default: all)")
    args = ap.parse_args()
    global BASELINE, CASES
    BASELINE = args.baseline.resolve() if args.baseline else None
    CASES = set(args.cases.split(","))
    if not shutil.which("nginx"):
        raise SystemExit("bench: nginx is needed (apt-get install nginx-light)")
    # An installed hfcache has its bytecode compiled (pip does it, as for huggingface_hub); a checkout run with
    # PYTHONDONTWRITEBYTECODE=1 would compile every module in every process of every run instead
    for tree in filter(None, [ROOT / "hfcache", BASELINE and BASELINE / "hfcache"]):
        compileall.compile_dir(tree, quiet=1)
    sources = build_sources(args.big_mb, args.small)
    cdn = cdn_folder(sources)
    rows = [] if args.only == "netns" else loopback(args, sources, cdn)
    if args.netns or args.only == "netns":
        if os.geteuid() != 0:
            raise SystemExit("bench: --netns needs root (network namespaces, tc)")
        rows += netns(args, sources, cdn)
    load = os.getloadavg()
    flags = (" --netns" if args.netns else "") + (f" --netns-runs {args.netns_runs}" if args.netns_runs else "")
    flags += (f" --cases {args.cases}" if args.cases != "a,b,c,b'" else "") + \
        (" --baseline DIR" if BASELINE else "") + (f" --only {args.only}" if args.only else "") + \
        (f" --links {args.links}" if args.links != "1000:30,200:100" else "")
    text = (f"## download\n\nMeasured by `scripts/bench_download.py --runs {args.runs}{flags}` on {machine()}; "
            "load average at the end "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min).\n"
            "Ratios are the other tool's time over hfcache's (above 1: hfcache is faster). Every tool writes a fresh "
            "folder on the same file system; hfcache hashes every byte (huggingface_hub checks sizes, aria2c and "
            "curl nothing) and fsyncs each blob before publishing it.\n\n"
            "Set-up: the project's Hub (`hfcache serve`) behind nginx; LFS downloads are redirected (302, another host "
            "name) to nginx, which serves the blob files. (b) talks to the Hub directly; in (b') the Hub delays every "
            "answer (`--latency-ms`). In (d) client and servers sit in two network namespaces joined by a veth pair "
            "with `tc tbf` on both ends, and a TCP proxy in the server namespace delays every request (so every "
            "answer, redirects and CDN ranges included) before nginx. aria2c gets the resolve URLs in an input file "
            "as hfd.sh writes it (`-k 1M -c --file-allocation=none`). Peak RSS: GNU time's maximum resident size "
            "(the largest process of the tool).\n\n" + render(rows) + "\n\n" + summary(rows))
    print(text)
    if not args.no_doc:
        write_doc(text)


if __name__ == "__main__":
    main()
