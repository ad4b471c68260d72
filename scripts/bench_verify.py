"""Verify throughput: `hfcache verify` against `hf cache verify` and `sha256sum`, on the same cache, in one run.

    .venv/bin/python scripts/bench_verify.py [--gib 3] [--large 4] [--small 2000] [--small-repos 1] [--runs 3]
                                             [--dir DIR]

Builds a cache of `--gib` GiB (a handful of large LFS files in two model repos, many small files in one dataset,
or spread over `--small-repos` datasets: the CI case of a cache of many repos, which `hf` checks one per call)
directly with the layout helpers, then times, from the page cache (the files were just written; a read pass
warms them anyway):
  - `hfcache verify` with --jobs 1 and with --jobs <nproc>, on the whole cache and on the large files alone;
  - `hf cache verify` on each repo (it needs the network: it runs against `hfcache serve --cache-dir` of the
    same cache, through HF_ENDPOINT);
  - `sha256sum` over the same blobs, in one process and in <nproc> processes.
Each figure is the best of `--runs` runs of the whole command (start-up included; best, because other work on
a shared machine only ever slows a run down), in GiB/s of blob bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hfcache.cache.hashing import hash_bytes, lfs_pointer, new_hasher
from hfcache.cache.layout import HubCache, RepoRef
from hfcache.cache.meta import FileMeta

MiB = 1024 * 1024
BIN = Path(sys.executable).parent


def _commit(repo: RepoRef) -> str:
    return hash_bytes(f"bench commit of {repo}".encode(), "git-sha1")


def _write(cache: HubCache, repo: RepoRef, path: str, size: int, seed: int, pool: bytes, lfs: bool) -> FileMeta:
    """Stream `size` pseudo-random bytes into a blob, hashed on the way, and name it by its hash."""
    kind = "sha256" if lfs else "git-sha1"
    h = new_hasher(kind, size)
    blobs = cache.repo_dir(repo) / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    tmp = blobs / f"tmp-{seed}"
    with open(tmp, "wb") as f:
        left, i = size, 0
        while left:
            n = min(left, MiB)
            start = (seed * 7919 + i * 4099) % (len(pool) - MiB)
            chunk = seed.to_bytes(8, "little") + i.to_bytes(8, "little") + pool[start:start + n - 16]
            chunk = chunk[:n]
            f.write(chunk)
            h.update(chunk)
            left -= n
            i += 1
    digest = h.hexdigest()
    meta = (FileMeta(size, hash_bytes(lfs_pointer(digest, size), "git-sha1"), digest, size) if lfs
            else FileMeta(size, digest))
    os.replace(tmp, blobs / meta.etag)
    cache.link(repo, _commit(repo), path, meta.etag, new_blob=False)
    return meta


def build(root: Path, gib: float, n_large: int, n_small: int, n_small_repos: int = 1) -> dict[RepoRef, int]:
    """Two model repos share the large files; datasets hold the small ones (4 KiB to 124 KiB)."""
    cache = HubCache(root)
    pool = os.urandom(64 * MiB)
    small_sizes = [4096 * (1 + (i * 37) % 31) for i in range(n_small)]
    large_total = int(gib * 2**30) - sum(small_sizes)
    models = [RepoRef("bench/large-a"), RepoRef("bench/large-b")]
    shards = ([RepoRef("bench/shards", "dataset")] if n_small_repos == 1
              else [RepoRef(f"bench/shards-{k:03d}", "dataset") for k in range(n_small_repos)])
    listings: dict[RepoRef, dict[str, FileMeta]] = {r: {} for r in (*models, *shards)}
    seed = 0
    for i in range(n_large):
        repo = models[i % 2]
        seed += 1
        name = f"model-{i // 2 + 1:05d}.safetensors"
        listings[repo][name] = _write(cache, repo, name, large_total // n_large, seed, pool, lfs=True)
    for repo in models:
        for name in ("config.json", "tokenizer.json"):
            seed += 1
            listings[repo][name] = _write(cache, repo, name, 8192, seed, pool, lfs=False)
    for i, size in enumerate(small_sizes):
        seed += 1
        name = f"data/part-{i:05d}.parquet" if i % 2 else f"meta/part-{i:05d}.json"
        repo = shards[i % len(shards)]
        listings[repo][name] = _write(cache, repo, name, size, seed, pool, lfs=name.endswith(".parquet"))
    for repo, files in listings.items():
        cache.write_tree(repo, _commit(repo), files)
        cache.write_ref(repo, "main", _commit(repo))
    cache.ensure_tag()
    return {repo: sum(m.size for m in files.values()) for repo, files in listings.items()}


def timed(cmd: list[str], runs: int, env: dict | None = None) -> tuple[float, str]:
    """Best wall time of `runs` runs, and that run's stdout."""
    best = (float("inf"), "")
    for _ in range(runs):
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, env=env, text=True)
        best = min(best, (time.perf_counter() - t, p.stdout))
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[:4])}... failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    return best


def hfcache_verify(cmd: list[str], runs: int) -> tuple[float, float]:
    """Wall time, and the time hfcache itself reports (interpreter start-up excluded)."""
    secs, out = timed([*cmd, "--json"], runs)
    return secs, json.loads(out)["seconds"]


def sha256sum(blobs: list[str], parallel: int, runs: int) -> float:
    """`sha256sum` over the blobs, split into `parallel` processes of equal bytes (largest files first)."""
    groups: list[list[str]] = [[] for _ in range(parallel)]
    loads = [0] * parallel
    for path in sorted(blobs, key=os.path.getsize, reverse=True):
        i = loads.index(min(loads))
        groups[i].append(path)
        loads[i] += os.path.getsize(path)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        procs = [subprocess.Popen(["sha256sum", *g], stdout=subprocess.DEVNULL) for g in groups if g]
        if any(p.wait() for p in procs):
            raise SystemExit("sha256sum failed")
        times.append(time.perf_counter() - t)
    return min(times)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def serve(root: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([str(BIN / "hfcache"), "serve", "--cache-dir", str(root), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc, proc.stdout.readline().strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=3.0, help="cache size in GiB")
    ap.add_argument("--large", type=int, default=4, help="number of large files")
    ap.add_argument("--small", type=int, default=2000, help="number of small files")
    ap.add_argument("--small-repos", type=int, default=1, help="datasets the small files are spread over")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where to build the cache (default: a temp dir)")
    args = ap.parse_args()
    nproc = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="hfcache-bench-verify-", dir=args.dir))
    root = work / "hub"
    try:
        t = time.perf_counter()
        sizes = build(root, args.gib, args.large, args.small, args.small_repos)
        total = sum(sizes.values())
        blobs = sorted(str(p) for p in root.glob("*/blobs/*"))
        large = sorted(str(p) for p in root.glob("models--*/blobs/*"))
        large_bytes = sum(os.path.getsize(p) for p in large)
        subprocess.run(["cat", *large], stdout=subprocess.DEVNULL, check=True)  # page cache, for everyone
        print(f"cache: {total / 2**30:.2f} GiB in {len(blobs)} blobs ({args.large} large, {len(blobs) - args.large} "
              f"small), built in {time.perf_counter() - t:.1f} s at {root}")
        print(f"machine: nproc={nproc}, CPU: {cpu_model()}, Python {sys.version.split()[0]}, best of {args.runs}")

        hfc = [str(BIN / "hfcache"), "verify", "--cache-dir", str(root)]
        rows: list[tuple[str, float, int, float | None]] = []
        for jobs in sorted({1, nproc}):
            rows.append((f"hfcache verify --jobs {jobs}", *hfcache_verify([*hfc, "--jobs", str(jobs)], args.runs),
                         total))
        for jobs in sorted({1, nproc}):
            cmd = [*hfc, "bench/large-a", "bench/large-b", "--jobs", str(jobs)]
            rows.append((f"hfcache verify --jobs {jobs} (large files only)", *hfcache_verify(cmd, args.runs),
                         large_bytes))
        rows = [(name, wall, nbytes, inner) for name, wall, inner, nbytes in rows]
        proc, url = serve(root)
        try:
            env = {**os.environ, "HF_ENDPOINT": url, "HF_HUB_DISABLE_TELEMETRY": "1"}
            hf_total = 0.0
            for repo in sizes:
                hf_total += timed([str(BIN / "hf"), "cache", "verify", repo.repo_id, "--repo-type", repo.repo_type,
                                   "--cache-dir", str(root)], args.runs, env)[0]
            rows.append((f"hf cache verify (x{len(sizes)} repos)", hf_total, total, None))
        finally:
            proc.terminate()
            proc.wait(10)
        for parallel in sorted({1, nproc}):
            name = f"sha256sum ({parallel} process{'es' * (parallel > 1)})"
            rows.append((name, sha256sum(blobs, parallel, args.runs), total, None))

        best = {r[0]: r for r in rows}[f"hfcache verify --jobs {nproc}"]
        print(f"\n{'command':46} {'seconds':>8} {'GiB/s':>7} {'time / hfcache -j' + str(nproc):>19} "
              f"{'in-process GiB/s':>17}")
        for name, secs, nbytes, inner in rows:
            ratio = f"{secs / best[1]:.2f}x" if nbytes == total else ""
            own = f"{nbytes / 2**30 / inner:.2f}" if inner else ""
            print(f"{name:46} {secs:8.2f} {nbytes / 2**30 / secs:7.2f} {ratio:>19} {own:>17}")
        one, many = (next(r for r in rows if r[0] == f"hfcache verify --jobs {j} (large files only)")
                     for j in (1, nproc))
        print(f"\nlarge files, in-process: {large_bytes / 2**30 / one[3]:.2f} GiB/s on one core"
              + (f", x{one[3] / many[3]:.2f} with {nproc} jobs" if nproc > 1 else ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
