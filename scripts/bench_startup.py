"""Start-up of each offline command: wall time, import time and the heavy modules it loads; `hf --help` beside.

    .venv/bin/python scripts/bench_startup.py [--runs 9] [--only verify,scan]

On a small cache (two repos and a dataset built with the layout helpers, so the commands do real work), each
command runs `--runs` times in a fresh interpreter, alternated with the others (`python -m hfcache`, as a user or
a script runs it). Printed per command: best and median wall time, the best CPU time (user + system, steadier
than wall on a shared machine), the import time `python -X importtime` reports (the sum of the top-level
imports, best run), and the heavy modules found in it: an HTTP client, pydantic, the server, or hfcache's own
network code (tests/test_startup.py fails on any of them). The interpreter alone (`python -c pass`) is the
floor. To measure another checkout with the same interpreter, put it first on PYTHONPATH: the commands run
with this environment.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_verify import build  # noqa: E402

HEAVY = ("requests", "httpx", "httpx2", "urllib3", "aiohttp", "pydantic", "pydantic_core", "starlette", "uvicorn",
         "http.client", "huggingface_hub.file_download", "huggingface_hub.hf_api", "hfcache.fetch.hub",
         "hfcache.server")
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)")


def cases(root: Path, work: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    c = ["--cache-dir", str(root)]
    snap = next((root / "models--bench--large-a" / "snapshots").iterdir())
    return {
        "--help": (["--help"], {}),
        "--version": (["--version"], {}),
        "verify --help": (["verify", "--help"], {}),
        "verify": (["verify", *c], {}),
        "verify --json": (["verify", *c, "--json"], {}),
        "scan": (["scan", *c], {}),
        "scan --json": (["scan", *c, "--json"], {}),
        "rm --dry-run": (["rm", "bench/large-a", *c, "--dry-run"], {}),
        "prune --dry-run": (["prune", *c, "--dry-run"], {}),
        "dedup --dry-run": (["dedup", *c, "--dry-run"], {}),
        "export": (["export", "bench/large-a", "-o", str(work / "out.tar"), *c], {}),
        "import": (["import", str(work / "b.tar"), "--cache-dir", str(work / "imported")], {}),
        "inspect FILE": (["inspect", str(snap / "config.json")], {}),
        "convert --help": (["convert", "--help"], {}),
        "relocate --help": (["relocate", "--help"], {}),
        "lock (offline)": (["lock", "bench/large-a", *c, "-o", "-"], {"HF_HUB_OFFLINE": "1"}),
        "map-url --help": (["map-url", "--help"], {}),
        "doctor": (["doctor"], {}),
    }


def fresh(work: Path) -> None:
    """What `export` and `import` write must not be there before they run."""
    shutil.rmtree(work / "imported", ignore_errors=True)
    (work / "out.tar").unlink(missing_ok=True)


def run(args: list[str], env: dict[str, str], cwd: Path, importtime: bool = False) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system: what a busy machine disturbs least) and stderr of one run."""
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "hfcache", *args]
    with tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True, env={**os.environ, **env},
                             cwd=cwd)
        _, status, usage = os.wait4(p.pid, 0)
        secs = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    if p.returncode not in (0, 1):
        raise SystemExit(f"hfcache {' '.join(args)} failed ({p.returncode}): {stderr.strip()[-500:]}")
    return secs, usage.ru_utime + usage.ru_stime, stderr


def imports(stderr: str) -> tuple[float, list[str]]:
    """Total import seconds (top-level entries' cumulative times) and the heavy modules among them."""
    total, names = 0, set()
    for line in stderr.splitlines():
        m = _LINE.match(line)
        if m:
            names.add(m[4])
            if len(m[3]) == 1:
                total += int(m[2])
    heavy = sorted({h for h in HEAVY for n in names if n == h or n.startswith(h + ".")})
    return total / 1e6, heavy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--only", default="", help="comma-separated case names (default: all)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hfcache-bench-startup-"))
    try:
        root = work / "home" / "hub"
        build(root, 0.002, 2, 20)
        base_env = {"HF_HOME": str(work / "home"), "HF_HUB_DISABLE_TELEMETRY": "1"}
        todo = cases(root, work)
        if args.only:
            todo = {k: v for k, v in todo.items() if k in args.only.split(",")}
        run(["export", "bench/large-a", "-o", str(work / "b.tar"), "--cache-dir", str(root)], base_env, work)
        walls: dict[str, list[float]] = {name: [] for name in ["python -c pass", *todo]}
        cpus: dict[str, list[float]] = {name: [] for name in todo}
        imp: dict[str, list[float]] = {name: [] for name in todo}
        heavy: dict[str, list[str]] = {}
        print(f"Python {sys.version.split()[0]}, nproc={os.cpu_count()}, {args.runs} alternated runs, "
              f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for i in range(args.runs + 1):  # the first round warms the .pyc files and the page cache, uncounted
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            if i:
                walls["python -c pass"].append(time.perf_counter() - t)
            for name, (cmd, env) in todo.items():
                fresh(work)
                secs, cpu, _ = run(cmd, {**base_env, **env}, work)
                fresh(work)
                _, _, stderr = run(cmd, {**base_env, **env}, work, importtime=True)
                seconds, found = imports(stderr)
                if i:
                    walls[name].append(secs)
                    cpus[name].append(cpu)
                    imp[name].append(seconds)
                heavy[name] = sorted(set(heavy.get(name, [])) | set(found))
        hf = shutil.which("hf", path=str(Path(sys.executable).parent))
        if hf:
            walls["hf --help (huggingface_hub)"] = []
            for _ in range(args.runs):
                t = time.perf_counter()
                subprocess.run([hf, "--help"], stdout=subprocess.DEVNULL, check=True)
                walls["hf --help (huggingface_hub)"].append(time.perf_counter() - t)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
        print(f"{'command':28} {'best ms':>8} {'median ms':>10} {'CPU ms':>7} {'imports ms':>11}  heavy modules loaded")
        for name, times in walls.items():
            im = f"{min(imp[name]) * 1000:11.0f}" if name in imp else f"{'':11}"
            cpu = f"{min(cpus[name]) * 1000:7.0f}" if name in cpus else f"{'':7}"
            hv = ", ".join(heavy.get(name, [])) or ("none" if name in heavy else "")
            print(f"{name:28} {min(times) * 1000:8.0f} {statistics.median(times) * 1000:10.0f} {cpu} {im}  {hv}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
