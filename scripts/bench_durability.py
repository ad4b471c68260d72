"""What fsync-before-publish costs: `hfcache snapshot` with it (the default) and without (HFCACHE_NO_FSYNC=1),
on the download benchmark's data and server, alternating runs.

    .venv/bin/python scripts/bench_durability.py [--runs 5] [--big-mb 1024] [--small 2000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_download import BIN, WORK, build_sources, start_server, timed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--big-mb", type=int, default=1024)
    ap.add_argument("--small", type=int, default=2000)
    args = ap.parse_args()
    sources = build_sources(args.big_mb, args.small)
    server, url = start_server(sources, 0)
    dest = WORK / "caches" / "durability"
    rows = []
    try:
        for name, repo in [(f"(a) 1 file of {args.big_mb} MiB", "org/one"),
                           (f"(b) {args.small} files of 16 KiB", "org/many"),
                           ("(c) 5 x 100 MiB shards + tokenizer/config", "org/mix")]:
            walls: dict[str, list[float]] = {"fsync": [], "no fsync": []}
            for run in range(args.runs):
                order = ["fsync", "no fsync"] if run % 2 == 0 else ["no fsync", "fsync"]
                for mode in order:
                    env = {**os.environ, "HF_ENDPOINT": url, "HF_HUB_DISABLE_TELEMETRY": "1"}
                    env.pop("HFCACHE_NO_FSYNC", None)
                    if mode == "no fsync":
                        env["HFCACHE_NO_FSYNC"] = "1"
                    shutil.rmtree(dest, ignore_errors=True)
                    dest.mkdir(parents=True)
                    subprocess.run(["sync"], check=False)
                    wall, _ = timed([str(BIN / "hfcache"), "snapshot", repo, "--cache-dir", str(dest)], env)
                    walls[mode].append(wall)
            rows.append((name, walls))
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(dest, ignore_errors=True)
    print("| scenario | fsync: median s | best s | no fsync: median s | best s | cost (median) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, w in rows:
        on, off = statistics.median(w["fsync"]), statistics.median(w["no fsync"])
        print(f"| {name} | {on:.2f} | {min(w['fsync']):.2f} | {off:.2f} | {min(w['no fsync']):.2f} | "
              f"{(on - off) / off * 100:+.0f}% |")
    print(f"\n{args.runs} alternating runs each.")


if __name__ == "__main__":
    main()
