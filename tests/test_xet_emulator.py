"""The Xet Hub + CAS emulator (tests/xethub.py) proven against the oracle: fixtures uploaded by hf_xet itself,
downloaded by huggingface_hub 2.4 + hf_xet into the shared blob store it writes, and over the plain-HTTP bridge.

XETHUB_TEST_MIB sets the main file's size (default 4 MiB) for a bigger run by hand."""

from __future__ import annotations

import json
import os
import random
import stat
from pathlib import Path

import pytest
import requests

from tests.xetcas_format import parse_shard, xorb_chunks
from tests.xethub import XetHub, git_sha1, hf_download

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
    shards = list((hub.root / "shards").glob("*.shard"))
    assert len(shards) >= 2
    assert e1.xet_hash in parse_shard(shards[0].read_bytes()).files or any(
        e1.xet_hash in parse_shard(s.read_bytes()).files for s in shards)
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
    assert mode(store / ".huggingface-shared-blobs") == 0o444
    expected_names = {".huggingface-shared-blobs"}
    for path in V1:
        e = hub.xet_file(REPO, path, hub.c1)
        repo_blob = cache / "models--org--xet" / "blobs" / (e.sha256 or e.blob_id)
        depth = "../" * path.count("/")
        assert os.readlink(snap / path) == f"{depth}../../blobs/{e.sha256 or e.blob_id}"
        if e.xet_hash is None:
            assert stat.S_ISREG(repo_blob.lstat().st_mode) and mode(repo_blob) == 0o644
            continue
        xh = e.xet_hash
        expected_names.add(xh[:2])
        assert os.readlink(repo_blob) == f"../../blobs/{xh[:2]}/{xh}"
        payload = store / xh[:2] / xh
        assert stat.S_ISREG(payload.lstat().st_mode) and mode(payload) == 0o444
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


def hashlib_sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


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


def cas_session(hub) -> tuple[requests.Session, str]:
    s = requests.Session()
    r = s.get(f"{hub.endpoint}/api/models/{REPO}/xet-read-token/main", headers={"Authorization": f"Bearer {TOKEN}"})
    r.raise_for_status()
    assert r.json()["casUrl"] == r.headers["X-Xet-Cas-Url"] == hub.cas_url
    assert int(r.headers["X-Xet-Token-Expiration"]) == r.json()["exp"]
    s.headers["Authorization"] = f"Bearer {r.json()['accessToken']}"
    return s, r.json()["casUrl"]


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


def test_reconstruction_api_and_signed_urls(hub):
    s, cas = cas_session(hub)
    xh = hub.xet_file(REPO, "model.safetensors", hub.c1).xet_hash
    r = s.get(f"{cas}/v1/reconstructions/{xh}", headers={"Range": "bytes=1000000-1000999"})
    assert r.status_code == 200
    body = r.json()
    chunks_len = sum(t["unpacked_length"] for t in body["terms"])
    assert body["offset_into_first_range"] + 1000 <= chunks_len
    assert body["offset_into_first_range"] < body["terms"][0]["unpacked_length"]
    (xorb, [info]), = body["fetch_info"].items()
    a, b = info["url_range"]["start"], info["url_range"]["end"]
    got = requests.get(info["url"], headers={"Range": f"bytes={a}-{b}"})  # no auth: the URL is signed
    assert got.status_code == 206 and got.content == (hub.root / "xorbs" / xorb).read_bytes()[a:b + 1]
    assert requests.get(info["url"].replace("sig=", "sig=0")).status_code == 403
    assert s.get(f"{cas}/v1/reconstructions/{xh}", headers={"Range": f"bytes={SIZE}-{SIZE + 10}"}).status_code == 416
    assert requests.get(f"{cas}/v1/reconstructions/{xh}").status_code == 401
    assert s.get(f"{cas}/v1/reconstructions/{'0' * 64}").status_code == 404
    hub.faults.xorb_url_ttl = -1
    expired = s.get(f"{cas}/v1/reconstructions/{xh}").json()["fetch_info"]
    assert requests.get(next(iter(expired.values()))[0]["url"]).status_code == 403


@pytest.mark.parametrize("fault", ["expire_next_xorb", "reset_next_xorb"])
def test_hf_xet_recovers_from_faults(hub, tmp_path, fault):
    """Each fault is seen by hf_xet and recovered from: an expired URL makes it ask for the reconstruction again,
    a reset makes it retry the range."""
    setattr(hub.faults, fault, 1)
    path = hf_download(hub.endpoint, tmp_path / "c", REPO, "sub/dir/tok.bin", revision=hub.c1, token=TOKEN)
    assert path.read_bytes() == V1["sub/dir/tok.bin"]
    assert getattr(hub.faults, fault) == 0  # the fault fired
    if fault == "expire_next_xorb":
        assert hub.stats.reconstructions == 2  # asked again (v1 at once: hf_xet remembers v2 is absent)
        assert [r[2] for r in hub.stats.paths("/cas/xorb/")] == [403, 206]
    if fault == "reset_next_xorb":
        assert hub.stats.xorb_gets >= 2


def test_hf_xet_token_refresh(hub, tmp_path):
    """hf_xet refreshes its CAS token by its expiry (30 s ahead), through the `xet-auth` route's JSON body; it
    does NOT refresh on a 401 from the CAS: the download fails (hfcache may do better)."""
    hub.faults.token_ttl = 20
    path = hf_download(hub.endpoint, tmp_path / "c", REPO, "sub/dir/tok.bin", revision=hub.c1, token=TOKEN)
    assert path.read_bytes() == V1["sub/dir/tok.bin"]
    assert hub.stats.token_calls >= 2  # huggingface_hub's header read, then hf_xet's JSON refresh(es)
    hub.faults.clear()
    hub.faults.reconstruction_401 = 1
    with pytest.raises(AssertionError, match="401 Unauthorized"):
        hf_download(hub.endpoint, tmp_path / "d", REPO, "sub/dir/tok.bin", revision=hub.c1, token=TOKEN)
    assert not list((tmp_path / "d").glob("blobs/*/*"))


def test_corrupt_xorb_fault(hub, tmp_path):
    """The fault flips one byte in the middle of the next xorb response. Fact: hf_xet 1.8 checks no chunk hash
    and huggingface_hub 2.4 no sha256 on a Xet download, so for an uncompressed chunk the flipped byte lands
    in the shared store unnoticed (a compressed one would fail to decode). hfcache must check both."""
    hub.faults.corrupt_next_xorb = 1
    path = hf_download(hub.endpoint, tmp_path / "c", REPO, "sub/dir/tok.bin", revision=hub.c1, token=TOKEN)
    got, want = path.read_bytes(), V1["sub/dir/tok.bin"]
    assert hub.faults.corrupt_next_xorb == 0
    assert len(got) == len(want) and sum(a != b for a, b in zip(got, want, strict=True)) == 1


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


def test_tree_pages_and_many_files(tmp_path):
    """1,200 files: the tree comes in pages (Link rel="next"), which huggingface_hub follows; many small Xet
    files go up in one hf_xet commit."""
    from huggingface_hub import HfApi

    hub = XetHub(tmp_path / "h", token=TOKEN, xet_rule=lambda path, size: path.startswith("x/"))
    try:
        hub.start()
        files = {f"f/{i:04d}.txt": f"{i}\n" for i in range(1100)} | {f"x/{i:03d}.bin": rnd(2000, i) for i in range(100)}
        commit = hub.add_repo("org/many", files)
        listed = list(HfApi(endpoint=hub.endpoint, token=TOKEN).list_repo_tree("org/many", recursive=True))
        assert {f.path for f in listed} == set(files) | {"f", "x"}
        assert len(hub.stats.paths("/tree/")) == 2
        assert all(hub.xet_file("org/many", p, commit).xet_hash for p in files if p.startswith("x/"))
    finally:
        hub.stop()


def test_big_file_helpers(tmp_path):
    from tests.xethub import changed_copy, write_random

    a = write_random(tmp_path / "a", 3 * 1024 * 1024 + 5, seed=7)
    b = changed_copy(a, tmp_path / "b", 0.1)
    da, db = a.read_bytes(), b.read_bytes()
    diff = [i for i in range(len(da)) if da[i] != db[i]]
    assert len(da) == len(db) and diff[0] >= len(da) // 2 and diff[-1] < len(da) // 2 + len(da) // 10
    assert len(diff) > 0.099 * len(da)
