"""Helpers beside tests/xethub.py (re-exported there): benchmark-sized fixture files written in blocks, files for
every compression scheme, and the oracle, huggingface_hub in a fresh process."""

from __future__ import annotations

import os
from pathlib import Path

MiB = 1024 * 1024


def write_random(path: Path, size: int, seed: int) -> Path:
    """`size` incompressible deterministic bytes, written in 1 MiB blocks (a 1 GiB benchmark file never sits in
    memory). Block i is `random.Random(seed * 1_000_003 + i).randbytes(MiB)`, so `changed_copy` can rebuild it."""
    import random

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for i, off in enumerate(range(0, size, MiB)):
            f.write(random.Random(seed * 1_000_003 + i).randbytes(min(MiB, size - off)))
    return path


def changed_copy(src: Path, dst: Path, fraction: float = 0.1, seed: int = 99) -> Path:
    """`src` with one contiguous run of `fraction` of its bytes, starting in the middle, replaced by new random
    bytes (same size): the "fine-tune changed 10%" revision, deduplicable against `src` but for that run."""
    import random

    size = src.stat().st_size
    start, n = size // 2, int(size * fraction)
    rng = random.Random(seed)
    with open(src, "rb") as f, open(dst, "wb") as out:
        off = 0
        while off < size:
            block = f.read(min(MiB, size - off))
            lo, hi = max(start, off), min(start + n, off + len(block))
            if lo < hi:
                block = block[:lo - off] + rng.randbytes(hi - lo) + block[hi - off:]
            out.write(block)
            off += len(block)
    return dst


def sample_files(seed: int = 0, scale: int = 1) -> dict[str, bytes]:
    """Files whose xorb chunks come out in each compression scheme hf_xet picks (compression_policy auto):
    float32 weights -> 2 (byte-grouping-4 + LZ4), repetitive text -> 1 (LZ4), random -> 0 (none). ~3 MB each
    `scale`."""
    import random
    import struct

    rng = random.Random(seed)
    n = 300_000 * scale
    words = ["hello ", "world ", "tensor ", "weight ", "\n"]
    return {"weights_f32.safetensors": struct.pack(f"<{n}f", *(rng.gauss(0, 0.02) for _ in range(n))),
            "text.bin": "".join(rng.choice(words) for _ in range(200_000 * scale)).encode(),
            "random.bin": rng.randbytes(1_000_000 * scale)}


def hf_download_command(endpoint: str, cache_dir: Path, repo_id: str, filename: str | None = None, *,
                        revision: str = "main", repo_type: str = "model", token: str | None = None,
                        env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """argv and environment of a fresh process running huggingface_hub's `snapshot_download` (no filename) or
    `hf_hub_download`, printing the path it returns (for `subprocess.Popen` when a test kills it midway)."""
    import sys

    call = (f"hf_hub_download({repo_id!r}, {filename!r}, " if filename else f"snapshot_download({repo_id!r}, ")
    code = ("from huggingface_hub import hf_hub_download, snapshot_download\n"
            f"print({call}revision={revision!r}, repo_type={repo_type!r}, cache_dir={str(cache_dir)!r}, "
            f"endpoint={endpoint!r}, token={token!r}))\n")
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_XET", "HF_TOKEN"))}
    full_env.update({"HF_XET_CLIENT_RETRY_BASE_DELAY": "100ms", "HF_XET_TELEMETRY_ENABLED": "false",
                     "HF_HUB_DISABLE_PROGRESS_BARS": "1", **(env or {})})
    return [sys.executable, "-c", code], full_env


def hf_download(endpoint: str, cache_dir: Path, repo_id: str, filename: str | None = None, *,
                revision: str = "main", repo_type: str = "model", token: str | None = None,
                env: dict[str, str] | None = None, timeout: float = 180) -> Path:
    """The oracle: huggingface_hub's `snapshot_download` (no filename) or `hf_hub_download` in a fresh process
    (so HF_HUB_DISABLE_XET & co, read at import, and hf_xet's per-process session start clean). Returns the path
    it printed; fails the test with its stderr when it fails. hf_xet retries after 100 ms here, not 3 s."""
    import subprocess

    argv, full_env = hf_download_command(endpoint, cache_dir, repo_id, filename, revision=revision,
                                         repo_type=repo_type, token=token, env=env)
    p = subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"huggingface_hub failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return Path(p.stdout.strip().splitlines()[-1])
