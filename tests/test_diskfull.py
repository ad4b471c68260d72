"""A full disk: one line naming the file, the bytes it needs and those free; its partial removed (nothing left
that claims bytes it does not hold, no temp file); and the cache still takes a small file afterwards.

Runs on a 20 MB tmpfs, so it needs root (or the right to mount); skipped cleanly otherwise.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hfcache.cache.hashing import hash_file, kind_of
from tests.conftest import build_hub, det_bytes, run_cli

DISK = 20 * 1024 * 1024
FAT = {f"model-{i}.safetensors": det_bytes(10_000_000, 300 + i) for i in range(5)}  # a 50 MB snapshot
HUGE = {"huge.bin": det_bytes(30_000_000, 400)}
SMALL = {"config.json": '{"model_type": "bert", "hidden_size": 32, "vocab_size": 30522, "layers": 2}\n' + " " * 18}


@pytest.fixture(scope="module")
def dhub(tmp_path_factory):
    h = build_hub(tmp_path_factory.mktemp("dhub"), cdn_host="localhost",
                  repos={("org/fat", "model", "main"): FAT, ("org/huge", "model", "main"): HUGE,
                         ("org/small", "model", "main"): SMALL})
    yield h
    h.server.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A 20 MB tmpfs of our own."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mnt)], capture_output=True,
                       text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def leftovers(cache: Path) -> list[str]:
    """Anything under the cache that is neither a checked blob, a snapshot entry, a listing, a ref nor a lock."""
    out = []
    for p in cache.rglob("*"):
        rel = p.relative_to(cache).as_posix()
        if p.is_dir() or rel.startswith(".locks/") or rel == "CACHEDIR.TAG":
            continue
        parts = rel.split("/")
        if parts[1:2] == ["blobs"]:
            if kind_of(p.name) is None or hash_file(p, kind_of(p.name)) != p.name:
                out.append(rel)
        elif parts[1:2] not in (["snapshots"], ["refs"], ["trees"]) or p.name.endswith(".tmp"):
            out.append(rel)
    return out


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_snapshot_larger_than_the_disk_fails_in_one_line_and_leaves_the_cache_usable(dhub, small_disk):
    cache = small_disk / "cache"
    r = run_cli("snapshot", "org/fat", "--cache-dir", str(cache), "--part-size", "2", endpoint=dhub.url)
    assert r.returncode == 1
    line = one_line(r.stderr)
    assert "no space left for org/fat/model-" in line and "needs 10,000,000 bytes" in line, line
    assert " free in " in line and str(cache) in line, line
    assert leftovers(cache) == []  # no partial, no record claiming bytes, no temp file
    published = sum(p.stat().st_size for p in cache.glob("*/blobs/*"))
    assert shutil.disk_usage(small_disk).used < published + 1024 * 1024  # only whole blobs hold space

    ok = run_cli("download", "org/small", "config.json", "--cache-dir", str(cache), endpoint=dhub.url)
    assert ok.returncode == 0, ok.stderr
    assert Path(ok.stdout.strip()).read_text() == SMALL["config.json"]


def test_a_file_that_cannot_fit_is_refused_before_any_byte_is_fetched(dhub, small_disk):
    cache = small_disk / "cache"
    before = len(dhub.app.log)
    r = run_cli("download", "org/huge", "huge.bin", "--cache-dir", str(cache), endpoint=dhub.url)
    assert r.returncode == 1
    line = one_line(r.stderr)
    assert "no space left for org/huge/huge.bin: it needs 30,000,000 bytes" in line, line
    assert not [x for x in list(dhub.app.log)[before:] if x.path.startswith("cdn/")]  # no byte asked for
    assert leftovers(cache) == []


def test_a_resumable_partial_whose_rest_cannot_fit_is_kept_for_later(dhub, small_disk):
    """Refused before writing, a partial that earlier runs filled halfway stays, record and all: freeing space
    and running again resumes it."""
    import json

    from hfcache.cache.layout import HubCache, RepoRef

    data = HUGE["huge.bin"]
    sha = hashlib.sha256(data).hexdigest()
    cache = HubCache(small_disk / "cache")
    paths = cache.partial_paths(RepoRef("org/huge"), sha)
    paths.path.parent.mkdir(parents=True)
    with open(paths.path, "wb") as f:
        f.truncate(len(data))
        f.write(data[:15_000_000])
    record = json.dumps({"etag": sha, "size": len(data), "parts": [[0, len(data), 15_000_000]]})
    paths.record.write_text(record)
    r = run_cli("download", "org/huge", "huge.bin", "--cache-dir", str(cache.root), endpoint=dhub.url)
    assert r.returncode == 1
    assert "it needs 15,000,000 bytes" in one_line(r.stderr)
    assert paths.record.read_text() == record and paths.path.read_bytes()[:15_000_000] == data[:15_000_000]
