"""hfcache against huggingface_hub 2.4 + hf_xet 1.8 on the Xet Hub emulator (tests/xethub.py), in one run.

    .venv/bin/python scripts/bench_xet.py [--mib 1024] [--small 2000] [--small-kib 4] [--dir DIR] [--keep]

1. A `--mib` Xet file, cold cache: wall time, bytes fetched from the CAS, peak RSS of the downloading process.
2. A revision changing 10% of it (one run in the middle, `changed_copy`), into the cache holding the first: bytes
   fetched (the dedup) and time.
3. `--small` small Xet files (`--small-kib` each, `.bin` so the emulator stores them in Xet) in one repo, cold.

Each tool runs in a fresh process (`hfcache snapshot`, huggingface_hub's `snapshot_download`) with its own
HF_HOME, so no chunk cache or index is shared between tools; peak RSS is the process's own, hfcache's
fan-out workers (separate processes, for many small files) not included. Fixtures are uploaded once by hf_xet into
`--dir` and reused by later runs. The machine's load average is printed: absolute figures on a busy machine are
noise, the ratios in one run are the result.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]
MiB = 1024 * 1024
TOKEN = "hf_xet_bench_token"


_RSS = ("import resource, subprocess, sys\n"
        "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(rc)\n")


def run(cmd: list[str], env: dict) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one process. A small wrapper process starts it, so the peak is the
    tool's own, not this process's memory at fork time."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _RSS, *cmd], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed ({p.returncode}): {p.stderr.strip()[-600:]}")
    return wall, int(p.stderr.strip().splitlines()[-1]) * 1024


def hfcache_cmd(endpoint: str, cache: Path, repo: str, rev: str) -> list[str]:
    return [sys.executable, "-m", "hfcache", "snapshot", f"{repo}@{rev}", "--cache-dir", str(cache)]


def hf_cmd(endpoint: str, cache: Path, repo: str, rev: str) -> list[str]:
    code = ("from huggingface_hub import snapshot_download\n"
            f"snapshot_download({repo!r}, revision={rev!r}, cache_dir={str(cache)!r}, endpoint={endpoint!r}, "
            f"token={TOKEN!r})\n")
    return [sys.executable, "-c", code]


def fixtures(hub, work: Path, mib: int, small: int, small_kib: int) -> None:
    from tests.xethub import changed_copy, write_random

    if ("model", "bench/big") not in hub.repos:
        big = write_random(work / "big-v1.bin", mib * MiB, seed=1)
        hub.add_repo("bench/big", {"model.safetensors": big}, revision="main")
        hub.add_repo("bench/big", {"model.safetensors": changed_copy(big, work / "big-v2.bin")}, revision="v2")
    if ("model", "bench/small") not in hub.repos:
        import random

        rng = random.Random(2)
        hub.add_repo("bench/small", {f"shard/{i:05d}.bin": rng.randbytes(small_kib * 1024) for i in range(small)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--small-kib", type=int, default=4)
    ap.add_argument("--dir", type=Path, default=None, help="fixtures kept here (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the caches")
    args = ap.parse_args()

    from tests.xethub import XetHub

    work = args.dir or Path(tempfile.mkdtemp(prefix="hfcache-bench-xet-"))
    hub = XetHub(work / "hub", token=TOKEN)
    t = time.perf_counter()
    fixtures(hub, work, args.mib, args.small, args.small_kib)
    print(f"fixtures ready in {time.perf_counter() - t:.1f} s ({work})")
    endpoint = hub.start()
    rows = []
    try:
        for tool, make in (("hfcache", hfcache_cmd), ("huggingface_hub+hf_xet", hf_cmd)):
            home = Path(tempfile.mkdtemp(prefix="hfcache-bench-home-", dir=work))
            cache = home / "hub"
            env = {**os.environ, "HF_HOME": str(home), "HF_ENDPOINT": endpoint, "HF_TOKEN": TOKEN,
                   "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_XET_TELEMETRY_ENABLED": "false"}
            for step, repo, rev in (("big, cold", "bench/big", "main"), ("big, 10% changed", "bench/big", "v2"),
                                    (f"{args.small} small, cold", "bench/small", "main")):
                hub.stats.reset()
                wall, rss = run(make(endpoint, cache, repo, rev), env)
                rows.append((step, tool, wall, hub.stats.xorb_bytes + hub.stats.bridge_bytes, rss))
            if not args.keep:
                shutil.rmtree(home, ignore_errors=True)
    finally:
        hub.stop()
        if args.dir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores; "
          f"big file {args.mib} MiB")
    print(f"{'step':<22} {'tool':<24} {'seconds':>8} {'MiB fetched':>12} {'peak RSS MiB':>13}")
    for step, tool, wall, fetched, rss in rows:
        print(f"{step:<22} {tool:<24} {wall:>8.2f} {fetched / MiB:>12.1f} {rss / MiB:>13.0f}")


if __name__ == "__main__":
    main()
