"""Shared by the Xet emulator's tests: the fixture repos (a 10%-changed second revision, a copy, a dataset),
uploaded once per test module by hf_xet into a `XetHub`, and small helpers.

XETHUB_TEST_MIB sets the main file's size (default 4 MiB) for a bigger run by hand."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import pytest
import requests

from tests.xethub import XetHub

TOKEN = "hf_xet_emulator_token"
SIZE = int(os.environ.get("XETHUB_TEST_MIB", "4")) * 1024 * 1024
REPO = "org/xet"


def rnd(n: int, seed: int) -> bytes:
    """Incompressible, deterministic bytes (so xorb bytes fetched measure file bytes)."""
    return random.Random(seed).randbytes(n)


MAIN_V1 = rnd(SIZE, 1)
MAIN_V2 = MAIN_V1[:SIZE // 2] + rnd(SIZE // 10, 2) + MAIN_V1[SIZE // 2 + SIZE // 10:]  # 10% changed
V1 = {"model.safetensors": MAIN_V1, "sub/dir/tok.bin": rnd(300_000, 3), "config.json": '{"a": 1}\n',
      "README.md": "# xet\n"}
V2 = {"model.safetensors": MAIN_V2, "config.json": '{"a": 2}\n'}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = XetHub(tmp_path_factory.mktemp("xethub"), token=TOKEN)
    h.start()
    h.c1 = h.add_repo(REPO, V1)
    h.up1 = h.stats.xorb_bytes_uploaded
    h.c2 = h.add_repo(REPO, V2)
    h.up2 = h.stats.xorb_bytes_uploaded - h.up1
    h.ccopy = h.add_repo("org/xet-copy", {"weights/same.safetensors": MAIN_V1})
    h.cds = h.add_repo("org/xds", {"data/train.bin": rnd(200_000, 4), "README.md": "---\n---\n"},
                       repo_type="dataset")
    yield h
    h.stop()


@pytest.fixture(autouse=True)
def _clean(hub):
    hub.faults.clear()
    hub.stats.reset()
    yield
    hub.faults.clear()
    assert not hub.stats.errors, hub.stats.errors  # the emulator never failed on its own


def expected_tree(files: dict, hub: XetHub, commit: str) -> dict:
    out = {}
    for path in sorted(files):
        e = hub.xet_file(REPO, path, commit)
        entry = {"size": e.size, "blob_id": e.blob_id}
        if e.sha256:
            entry.update(lfs_sha256=e.sha256, lfs_size=e.size, xet_hash=e.xet_hash)
        out[path] = entry
    return {"format_version": 1, "files": out}


def mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


def shared_mode(cache: Path) -> int:
    """huggingface_hub's `_shared_blob_mode`: read-only, readable by whoever can traverse the cache root."""
    root = mode(cache)
    return 0o400 | (0o040 if root & 0o010 else 0) | (0o004 if root & 0o001 else 0)


def hashlib_sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def cas_session(hub) -> tuple[requests.Session, str]:
    s = requests.Session()
    r = s.get(f"{hub.endpoint}/api/models/{REPO}/xet-read-token/main", headers={"Authorization": f"Bearer {TOKEN}"})
    r.raise_for_status()
    assert r.json()["casUrl"] == r.headers["X-Xet-Cas-Url"] == hub.cas_url
    assert int(r.headers["X-Xet-Token-Expiration"]) == r.json()["exp"]
    s.headers["Authorization"] = f"Bearer {r.json()['accessToken']}"
    return s, r.json()["casUrl"]
