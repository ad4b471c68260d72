"""A hostile Hub: our test server serving listings with bad names and bad etags, end to end through the CLI.

Each case is refused in one line, exit 1, with nothing written under `blobs/` or `snapshots/` (nor a ref, nor a
tree listing that a later run would trust). A planted `trees/*.json` naming such things is never used either.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hfcache.cache.layout import RepoRef
from hfcache.cache.meta import FileMeta
from hfcache.server.catalog import ServedFile
from tests.conftest import build_hub, run_cli

OTHER = "../../models--other--private/blobs/f"
GOOD = {"config.json": '{"ok": true}\n', "weights.bin": b"\x01" * 5000}
PLANTED = b"another repo's private bytes\n"  # 29 bytes


def _meta_of(hub, repo: RepoRef, name: str) -> ServedFile:
    served = hub.app.catalog.get(repo)
    return served.commits[served.refs["main"]][name]


# name -> what the listing's extra entry says: (path, FileMeta fields)
CASES = {
    "path-climbs-out": ("../../escape.txt", {"size": 29, "blob_id": "ab" * 20}),
    "absolute-path": ("/etc/evil", {"size": 29, "blob_id": "ab" * 20}),
    "blob-names-another-repo": ("stolen.txt", {"size": len(PLANTED), "blob_id": OTHER}),
    "blob-is-dot": ("dot.txt", {"size": 0, "blob_id": "."}),
    "blob-is-dotdot": ("dotdot.txt", {"size": 0, "blob_id": ".."}),
    "lfs-oid-climbs-out": ("lfs.bin", {"size": len(PLANTED), "blob_id": "cd" * 20,
                                        "lfs_sha256": "../../models--other--private/blobs/f", "lfs_size": 29}),
    "lfs-oid-uppercase": ("upper.bin", {"size": 29, "blob_id": "cd" * 20, "lfs_sha256": "AB" * 32, "lfs_size": 29}),
    "negative-size": ("neg.txt", {"size": -1, "blob_id": "ef" * 20}),
}


@pytest.fixture(scope="module")
def evil_hub(tmp_path_factory):
    repos = {(f"evil/{case}", "model", "main"): GOOD for case in CASES}
    repos[("evil/wrong-etag", "model", "main")] = {"only.txt": "the real bytes\n"}
    hub = build_hub(tmp_path_factory.mktemp("evil-hub"), repos=repos)
    local = tmp_path_factory.mktemp("evil-bytes") / "planted"
    local.write_bytes(PLANTED)
    for case, (path, fields) in CASES.items():
        served = hub.app.catalog.get(RepoRef(f"evil/{case}"))
        served.commits[served.refs["main"]][path] = ServedFile(FileMeta(**fields), local)
    # A well-formed etag that is not the hash of the bytes served: caught by the download's hash check.
    served = hub.app.catalog.get(RepoRef("evil/wrong-etag"))
    files = served.commits[served.refs["main"]]
    real = files["only.txt"]
    files["only.txt"] = ServedFile(FileMeta(size=real.meta.size, blob_id="0" * 40), real.local)
    yield hub
    hub.server.stop()


def _victim(cache: Path) -> Path:
    """Another repo's blob where the hostile names point: linking it would leak it into evil's snapshot."""
    f = cache / "models--other--private" / "blobs" / "f"
    f.parent.mkdir(parents=True)
    f.write_bytes(PLANTED)
    return f


def _written(cache: Path, repo_folder: str) -> list[str]:
    folder = cache / repo_folder
    return sorted(p.relative_to(cache).as_posix() for sub in ("blobs", "snapshots", "refs", "trees")
                  for p in (folder / sub).rglob("*")) if folder.exists() else []


def _one_line(r) -> str:
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hfcache: error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_snapshot_refuses_a_listing_with_bad_names(evil_hub, tmp_path, case):
    cache = tmp_path / "hub"
    victim = _victim(cache)
    line = _one_line(run_cli("snapshot", f"evil/{case}", "--cache-dir", str(cache), endpoint=evil_hub.url))
    assert "refusing" in line and "nothing was fetched" in line, line
    assert _written(cache, f"models--evil--{case}") == []
    assert victim.read_bytes() == PLANTED
    assert not (tmp_path / "escape.txt").exists() and not (cache / "escape.txt").exists()


@pytest.mark.parametrize("case", ["blob-names-another-repo", "blob-is-dot", "lfs-oid-climbs-out"])
def test_download_refuses_file_info_with_bad_names(evil_hub, tmp_path, case):
    cache = tmp_path / "hub"
    _victim(cache)
    path = CASES[case][0]
    line = _one_line(run_cli("download", f"evil/{case}", path, "--cache-dir", str(cache), endpoint=evil_hub.url))
    assert "refusing" in line, line
    assert _written(cache, f"models--evil--{case}") == []


def test_a_wrong_etag_is_caught_by_the_hash_and_nothing_is_published(evil_hub, tmp_path):
    cache = tmp_path / "hub"
    line = _one_line(run_cli("snapshot", "evil/wrong-etag", "--cache-dir", str(cache), endpoint=evil_hub.url))
    assert "0" * 40 in line, line
    folder = cache / "models--evil--wrong-etag"
    assert not (folder / "blobs" / ("0" * 40)).exists()
    assert not [p for p in (folder / "snapshots").rglob("*") if not p.is_dir()]


def test_a_planted_tree_listing_is_never_a_source_of_paths(evil_hub, tmp_path):
    """A `trees/<commit>.json` naming another repo's blob: ignored (as huggingface_hub ignores an unusable one),
    listed again from the server, and replaced by the true listing."""
    cache = tmp_path / "hub"
    victim = _victim(cache)
    repo = RepoRef("evil/wrong-etag")
    commit = evil_hub.commit("evil/wrong-etag")
    tree = cache / "models--evil--wrong-etag" / "trees" / f"{commit}.json"
    tree.parent.mkdir(parents=True)
    size = _meta_of(evil_hub, repo, "only.txt").meta.size
    tree.write_text(json.dumps({"format_version": 1, "files": {
        "only.txt": {"size": size, "blob_id": "../../models--other--private/blobs/f"},
        "../../x": {"size": 1, "blob_id": "ab" * 20}}}))
    from hfcache.cache.layout import HubCache

    assert HubCache(cache).read_tree(repo, commit) is None
    # offline, the listing is not used to name paths either: nothing of it shows up
    r = run_cli("snapshot", "evil/wrong-etag", "--revision", commit, "--cache-dir", str(cache),
                env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert victim.read_bytes() == PLANTED
    assert not (cache / "models--evil--wrong-etag" / "snapshots").exists()


@pytest.mark.parametrize("name", ["weights.bin", "config.json"])  # an LFS blob (sha256) and a git blob (sha1)
def test_a_planted_blob_of_the_right_size_is_replaced_not_linked(evil_hub, tmp_path, name):
    """A file under a valid blob name with the right size but other bytes (planted, or published unchecked by an
    older client) is hashed before a new snapshot links it, and fetched again."""
    import hashlib

    hub_repo = "evil/negative-size"  # any repo serving GOOD: its config.json and weights.bin are well named
    served = evil_hub.app.catalog.get(RepoRef(hub_repo))
    meta = served.commits[served.refs["main"]][name].meta
    cache = tmp_path / "hub"
    blob = cache / "models--evil--negative-size" / "blobs" / meta.etag
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"\0" * meta.size)  # right size, wrong bytes
    r = run_cli("download", hub_repo, name, "--cache-dir", str(cache), endpoint=evil_hub.url)
    assert r.returncode == 0, r.stderr
    want = GOOD[name].encode() if isinstance(GOOD[name], str) else GOOD[name]
    got = Path(r.stdout.strip().splitlines()[-1]).read_bytes()
    assert got == want and hashlib.sha256(blob.read_bytes()).digest() == hashlib.sha256(want).digest()
