"""Download benchmark: `hfcache snapshot` against `huggingface_hub.snapshot_download`, and `curl` for the
single large file (what the link, the server and the file system allow), all in the same run.

    .venv/bin/python scripts/bench_download.py [--runs 3] [--big-mb 1024] [--small 2000] [--wan-ms 20]

Scenarios: (a) one large file, (b) many 16 KiB files, on loopback and with a WAN-like delay per answer,
(c) a realistic mix (safetensors shards + tokenizer and config files). Each tool writes into a fresh cache on
the same file system; runs alternate between tools and the median and best are reported, with peak RSS.
Results go to stdout and to docs/benchmarks.md (section "download").
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "bench-download"
BIN = Path(sys.executable).parent
MiB = 1024 * 1024


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


def start_server(sources: dict[str, Path], latency_ms: float) -> tuple[subprocess.Popen, str]:
    args = [str(BIN / "hfcache"), "serve", "--port", "0", "--latency-ms", str(latency_ms)]
    for name, folder in sources.items():
        args += ["--repo", f"org/{name}={folder}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = proc.stdout.readline().strip()
    if not url:
        raise SystemExit("bench: the server did not start")
    return proc, url


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one command.

    Peak RSS comes from GNU time when present: a child's ru_maxrss would include whatever it inherited
    from this process before exec.
    """
    gnu_time = Path("/usr/bin/time")
    report = WORK / "time.txt"
    full = [str(gnu_time), "-f", "%M", "-o", str(report), *cmd] if gnu_time.exists() else cmd
    t = time.perf_counter()
    proc = subprocess.Popen(full, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed: {proc.stderr.read().decode()[-500:]}")
    rss_kb = int(report.read_text().split()[-1]) if gnu_time.exists() else usage.ru_maxrss
    return wall, rss_kb / 1024


def tools(repo: str, url: str, dest: Path, curl_file: str | None) -> dict[str, list[str]]:
    hf = ("import sys; from huggingface_hub import snapshot_download; "
          "snapshot_download(sys.argv[1], cache_dir=sys.argv[2])")
    out = {
        "hfcache": [str(BIN / "hfcache"), "snapshot", repo, "--cache-dir", str(dest)],
        "huggingface_hub": [sys.executable, "-c", hf, repo, str(dest)],
    }
    if curl_file and shutil.which("curl"):
        out["curl"] = ["curl", "-sfL", "--create-dirs", "-o", str(dest / curl_file),
                       f"{url}/{repo}/resolve/main/{curl_file}"]
    return out


def measure(name: str, repo: str, url: str, runs: int, nbytes: int, curl_file: str | None = None) -> dict:
    env = {**os.environ, "HF_ENDPOINT": url, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_TOKEN", None)
    results: dict[str, list[tuple[float, float]]] = {}
    dest = WORK / "caches" / "run"
    for run in range(runs):
        order = list(tools(repo, url, dest, curl_file).items())
        if run % 2:
            order.reverse()  # alternate, so neither tool always gets the warmer machine
        for tool, cmd in order:
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            subprocess.run(["sync"], check=False)
            results.setdefault(tool, []).append(timed(cmd, env))
    shutil.rmtree(dest, ignore_errors=True)
    row = {"scenario": name, "bytes": nbytes, "tools": {}}
    for tool, samples in results.items():
        walls = [w for w, _ in samples]
        row["tools"][tool] = {"median": statistics.median(walls), "best": min(walls),
                              "rss": max(r for _, r in samples)}
    return row


def render(rows: list[dict], runs: int) -> str:
    lines = ["| scenario | tool | median s | best s | MB/s (median) | peak RSS MB | vs hfcache (median) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        ours = row["tools"]["hfcache"]["median"]
        for tool, t in row["tools"].items():
            ratio = "1.00" if tool == "hfcache" else f"{t['median'] / ours:.2f}x the time"
            lines.append(f"| {row['scenario']} | {tool} | {t['median']:.2f} | {t['best']:.2f} | "
                         f"{row['bytes'] / t['median'] / 1e6:,.0f} | {t['rss']:.0f} | {ratio} |")
    summary = []
    for row in rows:
        t = row["tools"]
        parts = []
        for stat in ("best", "median"):
            s = f"{t['huggingface_hub'][stat] / t['hfcache'][stat]:.2f}x as fast as huggingface_hub"
            if "curl" in t:
                s += f", at {t['curl'][stat] / t['hfcache'][stat] * 100:.0f}% of curl's speed"
            parts.append(f"{s} ({stat})")
        summary.append(f"- {row['scenario']}: hfcache is " + "; ".join(parts) + ".")
    return "\n".join(lines + [""] + summary)


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?")
    import huggingface_hub

    from hfcache import __version__

    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, hfcache {__version__}, "
            f"huggingface_hub {huggingface_hub.__version__}, {time.strftime('%Y-%m-%d')}")


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--big-mb", type=int, default=1024)
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--wan-ms", type=float, default=20.0, help="delay per answer for the WAN variant of (b)")
    ap.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args()
    sources = build_sources(args.big_mb, args.small)
    rows = []
    server, url = start_server(sources, 0)
    try:
        rows.append(measure(f"(a) 1 file of {args.big_mb} MiB", "org/one", url, args.runs, args.big_mb * MiB,
                            curl_file="model.safetensors"))
        rows.append(measure(f"(b) {args.small} files of 16 KiB, loopback", "org/many", url, args.runs,
                            args.small * 16 * 1024))
        mix_bytes = sum(p.stat().st_size for p in sources["mix"].iterdir())
        rows.append(measure("(c) 5 x 100 MiB shards + tokenizer/config", "org/mix", url, args.runs, mix_bytes))
    finally:
        server.terminate()
        server.wait()
    if args.wan_ms:
        server, url = start_server({"many": sources["many"]}, args.wan_ms)
        try:
            rows.append(measure(f"(b) {args.small} files of 16 KiB, {args.wan_ms:.0f} ms per answer", "org/many",
                                url, args.runs, args.small * 16 * 1024))
        finally:
            server.terminate()
            server.wait()
    text = (f"## download\n\nMeasured by `scripts/bench_download.py --runs {args.runs}` on {machine()}.\n"
            "Every tool writes a fresh cache on the same file system; hfcache also hashes every byte "
            "(huggingface_hub checks sizes only, curl nothing). Both best and median are given: on this VM, "
            "allocating fresh pages for written files sometimes costs 2 s of kernel time per GiB for any tool, "
            "so interference only ever adds time and the best run shows what a tool itself costs.\n\n"
            + render(rows, args.runs))
    print(text)
    if not args.no_doc:
        write_doc(text)


if __name__ == "__main__":
    main()
