"""Safety checks: their cost next to `verify`, a 10 MB pickle of opcodes, and verdicts against other scanners.

    .venv/bin/python scripts/bench_safety.py [--gib 3] [--large 4] [--small 2000] [--runs 3] [--dir DIR]
                                             [--skip-cost] [--skip-big] [--skip-table]

1. `hfcache verify` vs `hfcache verify --safety` on the verify benchmark's cache (scripts/bench_verify.py
   `build()`), best of `--runs` fresh processes, page cache warm: with an empty verdict store (every file read)
   and with the verdicts of a previous run remembered (no file read).
2. A 10 MB pickle of opcodes (ints, floats and names; one-byte opcodes in lists; and NONE/POP pairs, the worst
   case), decided in a fresh process: wall time and peak RSS (the interpreter and hfcache's imports included).
3. The corpus of tests/safety_corpus.py, each file under the name it would have in a repo, scanned by hfcache,
   picklescan, modelscan and fickling (those installed): caught, missed, false alarms, time.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
BIN = Path(sys.executable).parent


def best(cmd: list[str], runs: int, env: dict, fresh_home: bool) -> tuple[float, float, dict]:
    """Best wall time and best CPU time (user + system) of `runs` runs (exit 0 or 1 both fine: 1 is a finding),
    with the JSON of the fastest run. CPU time is what a loaded machine disturbs least."""
    import resource

    wall_best, cpu_best, report = float("inf"), float("inf"), {}
    for _ in range(runs):
        run_env = dict(env)
        if fresh_home:  # an empty verdict store (removed after the run)
            run_env["HF_HOME"] = tempfile.mkdtemp(prefix="hfcache-bench-home-")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=run_env)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if p.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(cmd[:4])}... failed ({p.returncode}): {p.stderr.strip()[-400:]}")
        if wall < wall_best:
            wall_best, report = wall, json.loads(p.stdout)
        cpu_best = min(cpu_best, cpu)
        if fresh_home:
            shutil.rmtree(run_env["HF_HOME"], ignore_errors=True)
    return wall_best, cpu_best, report


def cost(args) -> None:
    from bench_verify import build

    work = Path(tempfile.mkdtemp(prefix="hfcache-bench-safety-", dir=args.dir))
    root = work / "hub"
    try:
        build(root, args.gib, args.large, args.small)
        subprocess.run(["cat", *map(str, root.glob("*/blobs/*"))], stdout=subprocess.DEVNULL, check=True)
        home = str(work / "home")
        env = {**os.environ, "HF_HOME": home, "HF_HUB_DISABLE_TELEMETRY": "1"}
        base = [str(BIN / "hfcache"), "verify", "--cache-dir", str(root), "--json"]
        plain, plain_cpu, _ = best(base, args.runs, env, False)
        fresh, fresh_cpu, report = best([*base, "--safety"], args.runs, env, True)
        subprocess.run([*base, "--safety"], capture_output=True, env=env)  # fill the store
        remembered, remembered_cpu, report2 = best([*base, "--safety"], args.runs, env, False)
        s, s2 = report["safety"], report2["safety"]
        print(f"cache: {report['bytes'] / 2**30:.2f} GiB, {report['blobs']} blobs, {s['files']} snapshot files; "
              f"best of {args.runs}, load {os.getloadavg()[0]:.1f}")
        print("| command | wall s | vs verify | CPU s | vs verify | files read by the safety check |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        print(f"| `hfcache verify` | {plain:.2f} | | {plain_cpu:.2f} | | |")
        for name, wall, cpu, rep in (("no verdicts remembered", fresh, fresh_cpu, s),
                                     ("verdicts remembered", remembered, remembered_cpu, s2)):
            print(f"| `hfcache verify --safety`, {name} | {wall:.2f} | {100 * (wall / plain - 1):+.1f}% | "
                  f"{cpu:.2f} | {100 * (cpu / plain_cpu - 1):+.1f}% | {rep['read']} |")
        print(f"verdicts: {s['counts']} (the benchmark's random '.safetensors' are not safetensors)")
        in_process(root, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def in_process(root: Path, runs: int) -> None:
    """The library calls alone, best of `runs` (a loaded machine only ever slows a run down): what the safety
    check adds to verify's own work, without interpreter start-up and imports in the way."""
    code = f"""
import os, sys, tempfile, time
os.environ["HF_HOME"] = {str(root.parent / "home-in-process")!r}
t0 = time.perf_counter()
import hfcache.safety.check, hfcache.render.safety, hfcache.cli.safety  # what verify --safety imports
imports = time.perf_counter() - t0
from hfcache.cache.layout import HubCache
from hfcache.safety.check import check_cache
from hfcache.verify.check import verify
c = HubCache({str(root)!r})
def best(f):
    out = float("inf")
    for _ in range({runs}):
        t = time.perf_counter(); f(); out = min(out, time.perf_counter() - t)
    return out
v = best(lambda: verify(c))
fresh = best(lambda: check_cache(c, remember=False))
check_cache(c)
remembered = best(lambda: check_cache(c))
print(v, fresh, remembered, imports)
"""
    v, fresh, remembered, imports = map(float, subprocess.run([sys.executable, "-c", code], capture_output=True,
                                                              text=True, check=True).stdout.split())
    print(f"\nin-process, best of {runs}: verify() {v:.3f} s; check_cache() {fresh:.3f} s with nothing remembered "
          f"({100 * fresh / v:.1f}% of verify), {remembered:.3f} s with verdicts remembered "
          f"({100 * remembered / v:.1f}%); importing the safety modules {imports:.3f} s")


def _big(kind: str) -> bytes:
    if kind == "mixed":
        items: list = []
        for i in range(400_000):
            items.extend((i * 7919, float(i), f"n{i % 1000}"))
        return pickle.dumps(items, 4)
    n = 10 * 2**20
    if kind == "one-byte opcodes":  # MARK, then NONE x 999, APPENDS: the most opcodes per byte, as lists hold them
        return b"\x80\x04]" + (b"(" + b"N" * 999 + b"e") * (n // 1001) + b"."
    return b"\x80\x04" + b"N0" * (n // 2) + b"N."  # NONE, POP: no run to take in bulk, every opcode alone


def big(args) -> None:
    print("| 10 MB pickle | opcodes | wall s (decide) | peak RSS MB (process) | verdict |")
    print("| --- | ---: | ---: | ---: | --- |")
    for kind in ("mixed", "one-byte opcodes", "NONE POP pairs (worst case)"):
        data = _big(kind)
        with tempfile.NamedTemporaryFile(delete=False, dir=args.dir) as f:
            f.write(data)
        # VmHWM, not ru_maxrss: the latter keeps the parent's size across fork and exec
        code = ("import time\n"
                "from hfcache.safety.files import check_file\nfrom hfcache.safety.policy import Policy\n"
                f"t = time.perf_counter(); v = check_file({f.name!r}, Policy()); t = time.perf_counter() - t\n"
                "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0].split()[1]\n"
                "print(t, int(hwm) / 1024, v.verdict)\n")
        t, rss, verdict = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                         check=True).stdout.split()
        from hfcache.safety import pickles

        ops = pickles.scan(data).opcodes
        print(f"| {kind}, {len(data) / 2**20:.1f} MiB | {ops:,} | {float(t):.2f} | {float(rss):.0f} | {verdict} |")
        os.unlink(f.name)


def _hfcache(path: Path, name: str) -> bool:
    from hfcache.safety.check import with_names
    from hfcache.safety.files import check_file
    from hfcache.safety.policy import Policy

    return not with_names(check_file(str(path), Policy()), [name]).safe


def _picklescan(path: Path, name: str) -> bool:
    from picklescan.scanner import scan_file_path

    r = scan_file_path(str(path))
    return bool(r.issues_count or r.infected_files or r.scan_err)


def _fickling(path: Path, name: str) -> bool:
    import fickling

    try:
        return not fickling.is_likely_safe(str(path))
    except Exception:
        return True  # it could not read it: counted as a (cautious) alarm


def _modelscan(path: Path, name: str) -> bool:
    out = path.parent / "modelscan.json"
    subprocess.run([str(BIN / "modelscan"), "-p", str(path), "-r", "json", "-o", str(out)], capture_output=True)
    try:
        data = json.loads(out.read_text())
    except (OSError, ValueError):
        return False
    summary = data.get("summary", {})
    return bool(summary.get("total_issues") or data.get("issues") or data.get("errors"))


def table(args) -> None:
    from tests.safety_corpus import corpus

    tools = {"hfcache": _hfcache}
    for name, fn, module in (("picklescan", _picklescan, "picklescan"), ("modelscan", _modelscan, "modelscan"),
                             ("fickling", _fickling, "fickling")):
        try:
            __import__(module)
            tools[name] = fn
        except ImportError:
            print(f"({name} is not installed: left out)")
    work = Path(tempfile.mkdtemp(prefix="hfcache-bench-corpus-", dir=args.dir))
    cases = corpus()
    paths = {}
    for case, s in cases.items():
        d = work / case
        d.mkdir()
        p = d / s.filename  # the repo's name: extension-driven scanners get their best chance
        with open(p, "wb") as f:
            f.write(s.data)
            if s.sparse_size:
                f.truncate(s.sparse_size)
        paths[case] = p
    results = {}
    for tool, fn in tools.items():
        t = time.perf_counter()
        results[tool] = {case: fn(paths[case], cases[case].filename) for case in cases}
        results[tool]["_seconds"] = time.perf_counter() - t
    bad = [c for c in cases if cases[c].malicious]
    good = [c for c in cases if not cases[c].malicious]
    print(f"corpus: {len(bad)} malicious, {len(good)} benign files")
    print("| tool | caught | missed | false alarms | time s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for tool in tools:
        r = results[tool]
        print(f"| {tool} | {sum(r[c] for c in bad)}/{len(bad)} | {sum(not r[c] for c in bad)} | "
              f"{sum(r[c] for c in good)}/{len(good)} | {r['_seconds']:.2f} |")
    print("\nper case (x = flagged):")
    print("| case | malicious | " + " | ".join(tools) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in tools) + " |")
    for case in cases:
        print(f"| {case} | {'yes' if cases[case].malicious else 'no'} | "
              + " | ".join("x" if results[t][case] else "" for t in tools) + " |")
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=3.0)
    ap.add_argument("--large", type=int, default=4)
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--skip-table", action="store_true")
    args = ap.parse_args()
    print(f"Python {sys.version.split()[0]}, nproc={os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    if not args.skip_big:
        big(args)
    if not args.skip_table:
        table(args)
    if not args.skip_cost:
        cost(args)


if __name__ == "__main__":
    main()
