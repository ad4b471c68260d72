"""The Xet Hub + CAS emulator (tests/xethub.py) proven against the oracle: fixtures uploaded by hf_xet itself,
downloaded by huggingface_hub 2.4 + hf_xet into the shared blob store it writes, and over the plain-HTTP bridge.
Faults and the CAS wire are in test_xet_emulator_faults.py."""

# ruff: noqa: F811 (test arguments are named after the fixtures imported below)
from __future__ import annotations

import json
import os
import stat

import pytest

from tests.xet_emulator_data import (  # noqa: F401 (fixtures: pytest finds them by name)
    MAIN_V1,
    MAIN_V2,
    REPO,
    SIZE,
    TOKEN,
    V1,
    _clean,
    cas_session,
    expected_tree,
    hashlib_sha256,
    hub,
    mode,
    rnd,
    shared_mode,
    umask,
)
from tests.xetcas_format import parse_shard, xorb_chunks
from tests.xethub import XetHub, git_sha1, hf_download, xet_hub  # noqa: F401 (the fixture, tested below)


def test_fixtures_are_real_hf_xet_uploads(hub, tmp_path):
    """The xet hashes are hf_xet's own; the stored shards and xorbs parse; a revision changing 10% of the file
    uploads about 10% new xorb bytes (hf_xet deduplicated against the first upload)."""
    import hf_xet

    (tmp_path / "v1").write_bytes(MAIN_V1)
    e1 = hub.xet_file(REPO, "model.safetensors", hub.c1)
    assert hf_xet.hash_files([str(tmp_path / "v1")])[0].hash == e1.xet_hash
    assert e1.blob_id == git_sha1(f"version https://git-lfs.github.com/spec/v1\noid sha256:{e1.sha256}\n"
                                  f"size {SIZE}\n".encode())
    assert hub.xet_file(REPO, "config.json", hub.c1).xet_hash is None  # small files are git blobs
    shards = [parse_shard(s.read_bytes()) for s in (hub.root / "shards").glob("*.shard")]
    assert len(shards) >= 2
    assert {s.file_sha256[e1.xet_hash] for s in shards if e1.xet_hash in s.files} == {e1.sha256}
    for xorb in (hub.root / "xorbs").iterdir():
        assert xorb_chunks(xorb.read_bytes())
    assert sum(s.unpacked for s in hub.segments(e1.xet_hash)) == SIZE
    assert hub.up1 > SIZE  # incompressible: every byte went up once
    assert hub.up2 < 0.2 * SIZE, f"second revision uploaded {hub.up2} bytes of {SIZE}"
    e2 = hub.xet_file(REPO, "model.safetensors", hub.c2)
    old_xorbs = {s.xorb for s in hub.segments(e1.xet_hash)}
    reused = sum(s.unpacked for s in hub.segments(e2.xet_hash) if s.xorb in old_xorbs)
    assert reused > 0.8 * SIZE


def test_snapshot_download_writes_the_shared_store(hub, tmp_path):
    """huggingface_hub 2.4 + hf_xet against the emulator: bytes right, and the exact layout it writes."""
    cache = tmp_path / "cache"
    snap = hf_download(hub.endpoint, cache, REPO, revision=hub.c1, token=TOKEN)
    assert snap == cache / "models--org--xet" / "snapshots" / hub.c1
    for path, data in V1.items():
        assert (snap / path).read_bytes() == (data.encode() if isinstance(data, str) else data)
    store = cache / "blobs"
    assert (store / ".huggingface-shared-blobs").read_text() == "1\n"
    assert mode(store / ".huggingface-shared-blobs") == shared_mode(cache) == 0o777 & ~umask() & 0o444
    expected_names = {".huggingface-shared-blobs"}
    for path in V1:
        e = hub.xet_file(REPO, path, hub.c1)
        repo_blob = cache / "models--org--xet" / "blobs" / (e.sha256 or e.blob_id)
        depth = "../" * path.count("/")
        assert os.readlink(snap / path) == f"{depth}../../blobs/{e.sha256 or e.blob_id}"
        if e.xet_hash is None:
            assert stat.S_ISREG(repo_blob.lstat().st_mode) and mode(repo_blob) == 0o666 & ~umask()
            continue
        xh = e.xet_hash
        expected_names.add(xh[:2])
        assert os.readlink(repo_blob) == f"../../blobs/{xh[:2]}/{xh}"
        payload = store / xh[:2] / xh
        assert stat.S_ISREG(payload.lstat().st_mode) and mode(payload) == shared_mode(cache)
        assert mode(store / xh[:2]) == mode(cache)
        assert (store / xh[:2] / f"{xh}.refs").read_text() == f"models--org--xet/blobs/{e.sha256}\n"
        assert mode(store / xh[:2] / f"{xh}.refs") == 0o666
        assert (store / xh[:2] / f"{xh}.lock").read_bytes() == b"" and mode(store / xh[:2] / f"{xh}.lock") == 0o666
        assert sorted(p.name for p in (store / xh[:2]).iterdir()) == sorted([xh, f"{xh}.lock", f"{xh}.refs"])
    assert {p.name for p in store.iterdir()} == expected_names
    tree_file = cache / "models--org--xet" / "trees" / f"{hub.c1}.json"
    expected = expected_tree(V1, hub, hub.c1)
    assert json.loads(tree_file.read_text()) == expected
    assert tree_file.read_text() == json.dumps(expected, indent=1)
    assert mode(tree_file) == 0o600
    # wire: one token for the revision, reconstructions (v2 probed, v1 answered), signed xorb fetches, no bridge
    assert hub.stats.token_calls == 1
    assert hub.stats.reconstructions == 2 and hub.stats.bridge_bytes == 0
    assert ("GET", f"/cas/v2/reconstructions/{hub.xet_file(REPO, 'model.safetensors', hub.c1).xet_hash}", 404) \
        in hub.stats.requests
    assert hub.stats.xorb_bytes >= SIZE


def test_hf_hub_download_needs_the_token(hub, tmp_path):
    path = hf_download(hub.endpoint, tmp_path / "c", REPO, "model.safetensors", token=TOKEN)
    assert path.read_bytes() == MAIN_V2
    assert ("HEAD", f"/{REPO}/resolve/main/model.safetensors", 302) in hub.stats.requests
    with pytest.raises(AssertionError, match="401"):
        hf_download(hub.endpoint, tmp_path / "d", REPO, "model.safetensors")


def test_dataset_repo(hub, tmp_path):
    snap = hf_download(hub.endpoint, tmp_path / "c", "org/xds", repo_type="dataset", token=TOKEN)
    assert (snap / "data" / "train.bin").read_bytes() == rnd(200_000, 4)
    assert os.readlink(tmp_path / "c" / "datasets--org--xds" / "blobs" / hashlib_sha256(rnd(200_000, 4))
                       ).startswith("../../blobs/")


@pytest.mark.parametrize("how", ["HF_HUB_DISABLE_XET", "no_xet_offered"])
def test_plain_http_bridge(hub, tmp_path, how):
    """HF_HUB_DISABLE_XET=1, or a Hub that offers no Xet: whole files over the bridge, ordinary blobs, no store."""
    env = {"HF_HUB_DISABLE_XET": "1"} if how == "HF_HUB_DISABLE_XET" else {}
    hub.faults.no_xet = how == "no_xet_offered"
    cache = tmp_path / "cache"
    snap = hf_download(hub.endpoint, cache, REPO, revision=hub.c1, token=TOKEN, env=env)
    for path, data in V1.items():
        assert (snap / path).read_bytes() == (data.encode() if isinstance(data, str) else data)
    assert not (cache / "blobs").exists()
    for blob in (cache / "models--org--xet" / "blobs").iterdir():
        assert stat.S_ISREG(blob.lstat().st_mode)
    xet_sizes = sum(len(d) for p, d in V1.items() if p.endswith((".bin", ".safetensors")))
    assert hub.stats.bridge_bytes == xet_sizes
    assert hub.stats.xorb_gets == hub.stats.reconstructions == hub.stats.token_calls == 0
    tree = json.loads((cache / "models--org--xet" / "trees" / f"{hub.c1}.json").read_text())
    assert ("xet_hash" in tree["files"]["model.safetensors"]) == (how == "HF_HUB_DISABLE_XET")


def test_second_revision_needs_only_its_new_xorb_ranges(hub, tmp_path):
    """The reconstruction of revision 2 points at revision 1's xorbs for ~90% of the file: a client that keeps
    the chunks it has fetches well under 20%. (huggingface_hub + hf_xet 1.8 fetch it all again: hf_xet's
    XetSession downloads run without a chunk cache.)"""
    s, cas = cas_session(hub)
    x1 = hub.xet_file(REPO, "model.safetensors", hub.c1).xet_hash
    x2 = hub.xet_file(REPO, "model.safetensors", hub.c2).xet_hash
    had = {}
    for fetch_hash, infos in s.get(f"{cas}/v1/reconstructions/{x1}").json()["fetch_info"].items():
        had[fetch_hash] = [(i["range"]["start"], i["range"]["end"]) for i in infos]
    new_bytes = 0
    for xorb, infos in s.get(f"{cas}/v1/reconstructions/{x2}").json()["fetch_info"].items():
        for i in infos:
            if not any(a <= i["range"]["start"] and i["range"]["end"] <= b for a, b in had.get(xorb, [])):
                new_bytes += i["url_range"]["end"] - i["url_range"]["start"] + 1
    assert 0 < new_bytes < 0.2 * SIZE
    cache = tmp_path / "cache"
    hf_download(hub.endpoint, cache, REPO, "model.safetensors", revision=hub.c1, token=TOKEN)
    before = hub.stats.xorb_bytes
    path = hf_download(hub.endpoint, cache, REPO, "model.safetensors", revision=hub.c2, token=TOKEN)
    assert path.read_bytes() == MAIN_V2
    hf_xet_bytes = hub.stats.xorb_bytes - before
    assert hf_xet_bytes >= new_bytes
    assert sorted(p.name for p in (cache / "blobs").glob("*/*") if len(p.name) == 64) == sorted([x1, x2])


def test_state_survives_a_new_hub(hub, tmp_path):
    """A second XetHub over the same folder serves the same repos (benchmarks upload once)."""
    again = XetHub(hub.root, token=TOKEN)
    try:
        again.start()
        path = hf_download(again.endpoint, tmp_path / "c", REPO, "model.safetensors", token=TOKEN)
        assert path.read_bytes() == MAIN_V2
    finally:
        again.stop()


def test_api_listings_through_huggingface_hub(hub):
    """What hfcache's HubClient reads: repo_info, the recursive tree (xet_hash, lfs) and paths-info."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    assert api.repo_info(REPO).sha == hub.c2
    assert api.repo_info(REPO, revision=hub.c1, files_metadata=True).sha == hub.c1
    tree = {f.path: f for f in api.list_repo_tree(REPO, revision=hub.c1, recursive=True) if isinstance(f, RepoFile)}
    assert set(tree) == set(V1)
    e = hub.xet_file(REPO, "model.safetensors", hub.c1)
    assert (tree["model.safetensors"].xet_hash, tree["model.safetensors"].lfs.sha256) == (e.xet_hash, e.sha256)
    assert tree["config.json"].xet_hash is None and tree["config.json"].lfs is None
    info = api.get_paths_info(REPO, ["model.safetensors", "sub", "missing.txt"], revision=hub.c1)
    assert [(type(i).__name__, i.path) for i in info] == [("RepoFile", "model.safetensors"), ("RepoFolder", "sub")]
    assert info[0].xet_hash == e.xet_hash


def test_shared_store_links_a_second_repo_without_fetching(hub, tmp_path):
    """Same bytes in another repo: huggingface_hub links the store entry it has (no HEAD-time fetch, no xorb),
    appending a second line to `.refs`; with the tree cached, a download by commit sends no HEAD at all."""
    cache = tmp_path / "c"
    hf_download(hub.endpoint, cache, REPO, revision=hub.c1, token=TOKEN)
    hub.stats.reset()
    hf_download(hub.endpoint, cache, "org/xet-copy", "weights/same.safetensors", token=TOKEN)
    assert hub.stats.xorb_gets == hub.stats.reconstructions == 0
    e = hub.xet_file(REPO, "model.safetensors", hub.c1)
    refs = cache / "blobs" / e.xet_hash[:2] / f"{e.xet_hash}.refs"
    assert refs.read_text() == f"models--org--xet/blobs/{e.sha256}\nmodels--org--xet-copy/blobs/{e.sha256}\n"
    hub.stats.reset()
    hf_download(hub.endpoint, cache, REPO, "sub/dir/tok.bin", revision=hub.c1, token=TOKEN)
    assert not [r for r in hub.stats.requests if r[0] == "HEAD"]  # trees/<commit>.json said all


def test_disable_shared_blobs(hub, tmp_path):
    """HF_HUB_DISABLE_SHARED_BLOBS=1: still fetched through hf_xet, but into an ordinary repo blob."""
    cache = tmp_path / "c"
    path = hf_download(hub.endpoint, cache, REPO, "model.safetensors", revision=hub.c1, token=TOKEN,
                       env={"HF_HUB_DISABLE_SHARED_BLOBS": "1"})
    assert path.read_bytes() == MAIN_V1
    assert hub.stats.xorb_bytes >= SIZE and hub.stats.bridge_bytes == 0
    assert not (cache / "blobs").exists()
    e = hub.xet_file(REPO, "model.safetensors", hub.c1)
    blob = cache / "models--org--xet" / "blobs" / e.sha256
    assert stat.S_ISREG(blob.lstat().st_mode) and mode(blob) == 0o666 & ~umask()


def test_the_xet_hub_fixture(xet_hub, tmp_path):  # noqa: F811 (pytest passes the imported fixture)
    commit = xet_hub.add_repo("a/b", {"w.bin": b"x" * 5000})
    path = hf_download(xet_hub.endpoint, tmp_path / "c", "a/b", "w.bin", revision=commit, token=xet_hub.token)
    assert path.read_bytes() == b"x" * 5000


def test_every_compression_scheme(tmp_path):
    """`sample_files` gives chunks in all three schemes (none, LZ4, byte-grouping-4 + LZ4); hf_xet reads each
    back through the emulator (and a client's decoder has a fixture for each)."""
    from collections import Counter

    from tests.xethub import sample_files

    hub = XetHub(tmp_path / "h", token=TOKEN)
    try:
        files = sample_files(seed=1)
        commit = hub.add_repo("org/schemes", files)
        schemes = Counter(c.scheme for x in (hub.root / "xorbs").iterdir() for c in xorb_chunks(x.read_bytes()))
        assert set(schemes) == {0, 1, 2}, schemes
        snap = hf_download(hub.start(), tmp_path / "c", "org/schemes", revision=commit, token=TOKEN)
        for path, data in files.items():
            assert (snap / path).read_bytes() == data
    finally:
        hub.stop()
