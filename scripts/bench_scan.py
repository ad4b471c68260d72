"""Time `hfcache scan --json` against `huggingface_hub.scan_cache_dir()` on one synthetic cache, in one run.

    .venv/bin/python scripts/bench_scan.py                          # generates 5,000 repos / 200,000 files
    .venv/bin/python scripts/bench_scan.py --home /tmp/bigcache      # reuse a cache from make_big_cache.py
    .venv/bin/python scripts/bench_scan.py --repos 500 --files 20000 --runs 5

Both sides run as fresh processes (interpreter start and imports included, as a user meets them), alternated,
after one warm-up each so both read from the page cache; the table gives the median wall time, CPU time
(user+sys) and peak RSS, and the ratio. A second table times the library calls alone (`scan()` vs
`scan_cache_dir()`, imports excluded). Then, unless `--no-memory`, the peak Python allocation of a summary
scan (`tracemalloc`) on small caches with 5x the files and 5x the repos, to show memory follows repos.
The totals of both tools are checked to agree before anything is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_big_cache import make_cache  # noqa: E402

HF_SNIPPET = """
import json, sys
from huggingface_hub import scan_cache_dir
info = scan_cache_dir(sys.argv[1])
print(json.dumps({"repos": len(info.repos), "size_on_disk": info.size_on_disk,
                  "revisions": sum(len(r.revisions) for r in info.repos)}))
"""
LIB_SNIPPET = """
import json, sys, time
from huggingface_hub import scan_cache_dir
from hfcache.cache.roots import resolve_roots
from hfcache.scan import scan
home = sys.argv[1]
out = {}
for name, fn in (("hfcache scan()", lambda: scan(resolve_roots(hf_home=home))),
                 ("scan_cache_dir()", lambda: scan_cache_dir(home + "/hub"))):
    fn()  # warm
    times = []
    for _ in range(int(sys.argv[2])):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    out[name] = sorted(times)[len(times) // 2]
print(json.dumps(out))
"""
MEM_SNIPPET = """
import json, sys, tracemalloc
from hfcache.cache.roots import resolve_roots
from hfcache.scan import scan
roots = resolve_roots(hf_home=sys.argv[1])
scan(roots)  # imports and caches settle first
tracemalloc.start()
s = scan(roots)
print(json.dumps({"peak": tracemalloc.get_traced_memory()[1], "repos": len(s.hub.repos),
                  "files": sum(r.revisions[0].nb_files for r in s.hub.repos if r.revisions)}))
"""


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """Wall seconds, CPU seconds (user+sys) and peak RSS (kB) of one child process, and its stdout."""
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env)
        assert p.stdout is not None
        out = p.stdout.read()
        p.stdout.close()
        _pid, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode:
            err.seek(0)
            sys.exit(f"{' '.join(cmd[:4])} failed: {err.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, out.decode()


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // (1024 * 1024)
    except (OSError, ValueError, IndexError):
        mem = 0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return (f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), {mem} GiB RAM, "
            f"Python {platform.python_version()}, load average {load:.1f} at start")


def bench_cli(home: str, runs: int) -> None:
    env = {**os.environ, "HF_HOME": home}
    env.pop("HF_HUB_CACHE", None)
    ours = [sys.executable, "-m", "hfcache", "scan", "--json"]
    theirs = [sys.executable, "-c", HF_SNIPPET, os.path.join(home, "hub")]
    # warm-up, and the agreement check
    a = json.loads(run(ours, env)[3])
    b = json.loads(run(theirs, env)[3])
    assert a["hub"]["size_on_disk"] == b["size_on_disk"], (a["hub"]["size_on_disk"], b["size_on_disk"])
    assert a["hub"]["repos"] == b["repos"] and a["hub"]["revisions"] == b["revisions"], (a["hub"], b)
    print(f"cache: {b['repos']:,} repos, {b['revisions']:,} revisions, {b['size_on_disk'] / 1e12:.1f} TB apparent "
          f"(sparse); both tools agree on repos, revisions and size_on_disk")
    results: dict[str, list[tuple[float, float, int]]] = {"hfcache scan --json": [], "scan_cache_dir()": []}
    for _ in range(runs):
        for name, cmd in (("hfcache scan --json", ours), ("scan_cache_dir()", theirs)):
            wall, cpu, rss, _ = run(cmd, env)
            results[name].append((wall, cpu, rss))
    rows = {name: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v), max(r[2] for r in v))
            for name, v in results.items()}
    print(f"\nfresh processes, median of {runs} alternated runs:\n")
    print("| command | wall s | CPU s | peak RSS MB |\n| --- | ---: | ---: | ---: |")
    for name, (wall, cpu, rss) in rows.items():
        print(f"| `{name}` | {wall:.2f} | {cpu:.2f} | {rss / 1024:.0f} |")
    (w1, c1, _), (w2, c2, _) = rows["hfcache scan --json"], rows["scan_cache_dir()"]
    print(f"\nratio: hfcache is {w2 / w1:.1f}x faster (wall), {c2 / c1:.1f}x less CPU")


def bench_lib(home: str, runs: int) -> None:
    out = json.loads(subprocess.run([sys.executable, "-c", LIB_SNIPPET, home, str(runs)], check=True,
                                    capture_output=True, text=True).stdout)
    print(f"\nlibrary calls only (one process, imports excluded), median of {runs}:\n")
    print("| call | seconds |\n| --- | ---: |")
    for name, sec in out.items():
        print(f"| `{name}` | {sec:.2f} |")
    print(f"\nratio: {out['scan_cache_dir()'] / out['hfcache scan()']:.1f}x")


def bench_memory(repos: int, files: int) -> None:
    print(f"\npeak Python allocations of a summary scan (tracemalloc), base {repos} repos x {files // repos} files:\n")
    print("| cache | repos | files | peak MB |\n| --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="hfcache-mem-") as tmp:
        for label, r, f in (("base", repos, files), ("5x files", repos, files * 5), ("5x repos", repos * 5, files * 5)):
            home = os.path.join(tmp, label.replace(" ", "_"))
            make_cache(home, r, f, seed=1)
            out = json.loads(subprocess.run([sys.executable, "-c", MEM_SNIPPET, home], check=True,
                                            capture_output=True, text=True).stdout)
            print(f"| {label} | {r:,} | {f:,} | {out['peak'] / 1e6:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", help="an HF_HOME made by make_big_cache.py (default: generate one in a temp folder)")
    ap.add_argument("--repos", type=int, default=5000)
    ap.add_argument("--files", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-memory", action="store_true", help="skip the memory-scaling table")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    tmp = None
    home = args.home
    if home is None:
        tmp = tempfile.TemporaryDirectory(prefix="hfcache-bench-")
        home = tmp.name
        t = time.perf_counter()
        make_cache(home, args.repos, args.files)
        print(f"generated {args.repos:,} repos / {args.files:,} files in {time.perf_counter() - t:.0f} s")
    try:
        bench_cli(home, args.runs)
        bench_lib(home, args.runs)
        if not args.no_memory:
            bench_memory(200, 4000)
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
