"""Start-up time of `hfcache --help` / `--version` against `hf --help`, measured in the same run.

    .venv/bin/python scripts/bench_startup.py [--runs 15]

Prints the median and best wall time of each, and the ratio. Target: hfcache well under 0.2 s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(cmd: list[str], runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    bindir = Path(sys.executable).parent
    hfcache = shutil.which("hfcache", path=str(bindir))
    hf = shutil.which("hf", path=str(bindir))
    rows = [("hfcache --help", [hfcache, "--help"]), ("hfcache --version", [hfcache, "--version"])]
    if hf:
        rows.append(("hf --help", [hf, "--help"]))
    results = {name: timed(cmd, args.runs) for name, cmd in rows}
    for name, (med, best) in results.items():
        print(f"{name:20} median {med * 1000:6.0f} ms   best {best * 1000:6.0f} ms")
    if hf:
        ratio = results["hf --help"][0] / results["hfcache --help"][0]
        print(f"hfcache --help is {ratio:.1f}x faster than hf --help (median)")


if __name__ == "__main__":
    main()
