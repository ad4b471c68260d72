"""`scan` against huggingface_hub's `scan_cache_dir` on damaged caches that huggingface_hub itself wrote.

Every cache here is written by huggingface_hub (main moved to a new commit and fetched again; a download killed
mid-file), then damaged by hand as a user would (a snapshot folder deleted, a blob deleted, a stray blob). Where
both tools see the same thing they must report the same numbers; where they differ it is on purpose and asserted:

- orphan blobs and partial downloads are in no revision for either tool (`size_on_disk`), and hfcache reports
  them besides (`orphan_bytes`, `incomplete_bytes`, problems, and the footprint `bytes`);
- a detached revision frees its blobs (as huggingface_hub's `delete_revisions` counts them) and, for hfcache,
  its `trees/` listing too;
- a repo huggingface_hub cannot read (a broken link, a ref to a missing snapshot) is dropped by it with a warning;
  hfcache keeps the repo and names the damage as a problem.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download

from hfcache.cache.layout import RepoRef
from hfcache.cache.roots import resolve_roots
from hfcache.scan import scan
from hfcache.server.faults import Fault
from tests.conftest import MODEL_MAIN, build_hub, det_bytes, wait_for, write_files

TIMEOUT = 60.0
MOVED_MAIN = {**MODEL_MAIN, "config.json": '{"model_type": "bert", "hidden_size": 48}\n',
              "extra.safetensors": det_bytes(120_000, 7)}
CHUNK = 10 * 1024 * 1024  # huggingface_hub writes its partial file in chunks this large
BIG = {"config.json": "{}\n", "weights.bin": det_bytes(CHUNK + 2_000_000, 8)}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = build_hub(tmp_path_factory.mktemp("oraclehub"), cdn_host=None, repos={
        ("org/tiny", "model", "main"): MODEL_MAIN,
        ("org/big", "model", "main"): BIG,
        ("bert-tiny", "model", "main"): {"config.json": "{}\n", "vocab.txt": "a\nb\n"},
    })
    yield h
    h.server.stop()


KILLED_DOWNLOAD = """
import sys
from huggingface_hub import hf_hub_download
hf_hub_download("org/big", "weights.bin", cache_dir=sys.argv[1], endpoint=sys.argv[2])
"""


def _leave_a_partial_download(cache: Path, hub) -> Path:
    """Kill huggingface_hub in the middle of a file: its partial stays as it left it."""
    hub.app.faults.add(Fault("stall", match="weights.bin", after=CHUNK + 1_000_000, seconds=TIMEOUT))
    env = {**os.environ, "HF_HUB_DOWNLOAD_TIMEOUT": str(int(TIMEOUT * 2))}  # it waits: no retry before the kill
    proc = subprocess.Popen([sys.executable, "-c", KILLED_DOWNLOAD, str(cache), hub.url], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    blobs = cache / RepoRef("org/big").folder_name / "blobs"

    def filled() -> list[Path]:  # the partial holding the bytes sent before the stall
        assert proc.poll() is None, "the download ended before its partial appeared"
        partial = [p for p in blobs.glob("*.incomplete")] if blobs.is_dir() else []
        return partial if partial and partial[0].stat().st_size >= CHUNK else []

    try:
        partial = wait_for(filled, "a partial download", TIMEOUT)
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
        hub.app.faults.clear()
    return partial[0]


@pytest.fixture(scope="module")
def base(hub, tmp_path_factory):
    """HF_HOME written by huggingface_hub: org/tiny fetched, main moved to a new commit and fetched again (the old
    commit detached); org/big with one file and a killed download; bert-tiny clean.
    Returns (home, old commit, new commit, partial path relative to home)."""
    home = tmp_path_factory.mktemp("oracle_home")
    cache = home / "hub"
    old = hub.commit("org/tiny")
    snapshot_download("org/tiny", cache_dir=cache, endpoint=hub.url)
    new = hub.app.catalog.add_folder(RepoRef("org/tiny"), write_files(home.parent / "moved", MOVED_MAIN), "main")
    assert new != old
    snapshot_download("org/tiny", cache_dir=cache, endpoint=hub.url)
    snapshot_download("bert-tiny", cache_dir=cache, endpoint=hub.url)
    hf_hub_download("org/big", "config.json", cache_dir=cache, endpoint=hub.url)
    partial = _leave_a_partial_download(cache, hub)
    return home, old, new, partial.relative_to(home)


@pytest.fixture
def home(base, tmp_path):
    src, *_ = base
    dst = tmp_path / "home"
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _scan(home: Path):
    return scan(resolve_roots(hf_home=home), detail=True)


def _kind(result, kind: str) -> list:
    return [p for g in result.problems if g.kind == kind for p in g.examples]


def _assert_agree(ours, theirs, skip: set[str] = frozenset()) -> dict:
    """Every repo huggingface_hub reads (and not in `skip`) is reported alike; returns our repos by folder name."""
    mine = {RepoRef(r.repo_id, r.repo_type).folder_name: r for r in ours.hub.repos}
    theirs_by = {RepoRef(r.repo_id, r.repo_type).folder_name: r for r in theirs.repos}
    assert set(theirs_by) == set(mine) - skip
    for name, other in theirs_by.items():
        repo = mine[name]
        assert (repo.size_on_disk, repo.nb_files, repo.last_accessed, repo.last_modified) == (
            other.size_on_disk, other.nb_files, other.last_accessed, other.last_modified), name
        assert {r.commit: (r.size_on_disk, r.nb_files, set(r.refs), r.last_modified) for r in repo.revisions} == {
            r.commit_hash: (r.size_on_disk, r.nb_files, set(r.refs), r.last_modified) for r in other.revisions}, name
    return mine


def test_detached_revision_after_main_moved(base, home):
    _, old, new, _ = base
    ours, theirs = _scan(home), scan_cache_dir(home / "hub")
    assert not theirs.warnings
    assert ours.hub.size_on_disk == theirs.size_on_disk
    mine = _assert_agree(ours, theirs)
    tiny = mine["models--org--tiny"]
    assert {r.commit: r.refs for r in tiny.revisions} == {old: (), new: ("main",)}
    # What deleting the detached revision frees: the blobs huggingface_hub's own deletion plan counts, plus (a
    # documented difference) the `trees/` listing huggingface_hub 2.x wrote for it, which hfcache removes too.
    blobs_freed = theirs.delete_revisions(old).expected_freed_size
    assert blobs_freed == len(MODEL_MAIN["config.json"])  # the one file main's move changed
    tree = home / "hub" / "models--org--tiny" / "trees" / f"{old}.json"
    assert tiny.detached_bytes == blobs_freed + tree.stat().st_size
    assert ours.reclaimable.detached == tiny.detached_bytes


def test_a_partial_download_left_by_a_kill(base, home):
    _, _, _, partial = base
    ours, theirs = _scan(home), scan_cache_dir(home / "hub")
    assert not theirs.warnings
    mine = _assert_agree(ours, theirs)  # neither counts it in a revision
    size = (home / partial).stat().st_size
    big = mine["models--org--big"]
    assert big.incomplete_bytes == size >= CHUNK
    assert big.bytes - big.size_on_disk >= size  # it is in the footprint
    found = [p for p in _kind(ours, "incomplete") if p.path == str(home / partial)]
    assert found and found[0].bytes == size
    assert found[0].fix is None  # fresh: it could be a download still running, so prune leaves it


def test_orphan_blobs_after_a_snapshot_folder_is_deleted_by_hand(base, home):
    _, old, _, _ = base
    repo_dir = home / "hub" / "models--org--tiny"
    shutil.rmtree(repo_dir / "snapshots" / old)  # what `rm -rf` of an old revision leaves: its blobs
    stray = repo_dir / "blobs" / ("0" * 64)
    stray.write_bytes(b"s" * 777)
    ours, theirs = _scan(home), scan_cache_dir(home / "hub")
    assert not theirs.warnings
    assert ours.hub.size_on_disk == theirs.size_on_disk
    mine = _assert_agree(ours, theirs)
    # The orphans are exactly the blobs no revision huggingface_hub reads points to.
    (their_tiny,) = [r for r in theirs.repos if r.repo_id == "org/tiny"]
    used = {f.blob_path for r in their_tiny.revisions for f in r.files}
    orphans = [p for p in (repo_dir / "blobs").iterdir() if p not in used and not p.name.endswith(".incomplete")]
    assert len(orphans) >= 2 and stray in orphans
    assert mine["models--org--tiny"].orphan_bytes == sum(p.stat().st_size for p in orphans)
    assert {p.path for p in _kind(ours, "orphan_blob")} == {str(p) for p in orphans}
    assert mine["models--org--tiny"].detached_bytes == 0  # nothing detached is left


def test_a_broken_snapshot_link(base, home):
    _, _, new, _ = base
    repo_dir = home / "hub" / "models--org--tiny"
    link = repo_dir / "snapshots" / new / "config.json"
    blob = Path(os.path.abspath(link.parent / os.readlink(link)))
    blob.unlink()
    ours, theirs = _scan(home), scan_cache_dir(home / "hub")
    # huggingface_hub drops the repo with a warning; hfcache keeps it and names the broken link.
    assert len(theirs.warnings) == 1 and "Blob missing" in str(theirs.warnings[0])
    mine = _assert_agree(ours, theirs, skip={"models--org--tiny"})
    assert [p.path for p in _kind(ours, "dangling_link")] == [str(link)]
    tiny = mine["models--org--tiny"]
    assert ours.hub.size_on_disk - tiny.size_on_disk == theirs.size_on_disk
    # hfcache's size for the damaged repo is huggingface_hub's rule applied to what is left: distinct blobs linked.
    targets = {Path(os.path.abspath(p.parent / os.readlink(p))) for p in (repo_dir / "snapshots").rglob("*")
               if p.is_symlink() and p.exists()}
    assert tiny.size_on_disk == sum(t.stat().st_size for t in targets)


def test_a_ref_to_a_missing_snapshot(base, home):
    _, _, new, _ = base
    repo_dir = home / "hub" / "models--org--tiny"
    (repo_dir / "refs" / "gone").write_text("a" * 40)  # as huggingface_hub writes refs: no newline
    ours, theirs = _scan(home), scan_cache_dir(home / "hub")
    assert len(theirs.warnings) == 1 and "missing commit hashes" in str(theirs.warnings[0])
    mine = _assert_agree(ours, theirs, skip={"models--org--tiny"})
    assert [p.path for p in _kind(ours, "missing_snapshot")] == [str(repo_dir / "refs" / "gone")]
    assert {r.commit: r.refs for r in mine["models--org--tiny"].revisions}[new] == ("main",)
