"""The Xet emulator's faults, as hf_xet meets them, and its CAS wire: reconstructions (ranged, v2), signed xorb
URLs, multi-range answers, pages, refused uploads."""

# ruff: noqa: F811 (test arguments are named after the fixtures imported below)
from __future__ import annotations

import random

import pytest
import requests

from tests.xet_emulator_data import (  # noqa: F401 (fixtures: pytest finds them by name)
    MAIN_V1,
    MAIN_V2,
    REPO,
    SIZE,
    TOKEN,
    V1,
    _clean,
    cas_session,
    hub,
    rnd,
)
from tests.xethub import XetHub, hf_download


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
        codes = [r[2] for r in hub.stats.paths("/cas/xorb/")]
        # the expired URL is refused (hf_xet may try it twice, from two tasks, on a loaded machine), then the
        # new one is served
        assert codes[-1] == 206 and codes[:-1] and set(codes[:-1]) == {403}, codes
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


@pytest.mark.parametrize("multirange", [False, True])
def test_reconstruction_v2(hub, tmp_path, multirange):
    """With `reconstruction_v2`, hf_xet takes the v2 answer (one URL per xorb, several ranges). By default it
    fetches each range apart; with HF_XET_CLIENT_ENABLE_MULTIRANGE_FETCHING it asks them in one multi-range GET,
    answered as multipart/byteranges (here after a reset of the first xorb GET)."""
    hub.reconstruction_v2 = True
    env = {"HF_XET_CLIENT_ENABLE_MULTIRANGE_FETCHING": "true"} if multirange else {}
    hub.faults.reset_next_xorb = int(multirange)
    try:
        path = hf_download(hub.endpoint, tmp_path / "c", REPO, "model.safetensors", revision=hub.c2, token=TOKEN,
                           env=env)
        assert path.read_bytes() == MAIN_V2
    finally:
        hub.reconstruction_v2 = False
    x2 = hub.xet_file(REPO, "model.safetensors", hub.c2).xet_hash
    assert ("GET", f"/cas/v2/reconstructions/{x2}", 200) in hub.stats.requests
    assert not hub.stats.paths("/cas/v1/reconstructions")
    assert hub.stats.xorb_bytes >= SIZE
    assert (hub.stats.multirange_gets >= 1) if multirange else (hub.stats.multirange_gets == 0)


def test_multirange_xorb_get(hub):
    s, cas = cas_session(hub)
    x2 = hub.xet_file(REPO, "model.safetensors", hub.c2).xet_hash
    hub.reconstruction_v2 = True
    try:
        body = s.get(f"{cas}/v2/reconstructions/{x2}").json()
    finally:
        hub.reconstruction_v2 = False
    multi = [(x, e) for x, entries in body["xorbs"].items() for e in entries if len(e["ranges"]) > 1]
    assert multi, "the changed revision reuses two separate runs of the first xorb"
    xorb, entry = multi[0]
    spans = [(r["bytes"]["start"], r["bytes"]["end"]) for r in entry["ranges"]]
    r = requests.get(entry["url"], headers={"Range": "bytes=" + ",".join(f"{a}-{b}" for a, b in spans)})
    assert r.status_code == 206 and r.headers["Content-Type"].startswith("multipart/byteranges; boundary=")
    raw = (hub.root / "xorbs" / xorb).read_bytes()
    for a, b in spans:
        assert f"Content-Range: bytes {a}-{b}/{len(raw)}\r\n\r\n".encode() + raw[a:b + 1] + b"\r\n" in r.content


def test_ranged_reconstructions_through_hf_xet(hub):
    """hf_xet's own range streams (it asks `Range` reconstructions, as it does in 256 MB segments for big files)
    give the right bytes for ranges cut anywhere: first/last byte, chunk and xorb-run boundaries, across the
    changed run of revision 2 (old xorb, new xorb, old xorb again)."""
    from hf_xet import XetFileInfo, XetSession

    x2 = hub.xet_file(REPO, "model.safetensors", hub.c2).xet_hash
    token, exp = hub.issue_cas_token()
    cuts = [0, 1, SIZE // 2 - 1, SIZE // 2, SIZE // 2 + 1, SIZE // 2 + SIZE // 10, SIZE - 1, SIZE]
    bounds, at = [], 0  # file offsets where a segment (a run of one xorb) starts or ends
    for seg in hub.segments(x2):
        bounds += [at, at + seg.unpacked]
        at += seg.unpacked
    cuts += [b + d for b in bounds for d in (-1, 0, 1) if 0 <= b + d <= SIZE]
    rng = random.Random(5)
    spans = {(0, SIZE), (0, 1), (SIZE - 1, SIZE)} | {tuple(sorted(rng.sample(cuts, 2))) for _ in range(12)}
    group = XetSession().new_download_stream_group(endpoint=hub.cas_url, token=token, token_expiry_unix_secs=exp)
    with group:
        for a, b in sorted(s for s in spans if s[0] < s[1]):
            got = b"".join(group.download_stream(XetFileInfo(x2, SIZE), start=a, end=b))
            assert got == MAIN_V2[a:b], (a, b)
    asked = set(hub.stats.reconstruction_ranges)
    assert {f"bytes={a}-{b - 1}" for a, b in spans if a < b} <= asked, asked


def test_stall_then_kill_then_download_again(hub, tmp_path):
    """`stall_next_xorb` holds a xorb response at half its body until released: the moment a test kills its
    client mid-file. Nothing of the file is visible after the kill; the next run completes it."""
    import subprocess

    from tests.xethub import hf_download_command

    hub.faults.stall_next_xorb = 1
    cache = tmp_path / "c"
    argv, env = hf_download_command(hub.endpoint, cache, REPO, "model.safetensors", revision=hub.c1, token=TOKEN)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert hub.faults.stalled.wait(120), "the download never reached the stalled xorb"
        # the emulator records a request when its status line goes out, so no test races its own client
        assert [r for r in hub.stats.paths("/cas/xorb/") if r[2] in (200, 206)], hub.stats.paths("/cas/")
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        hub.faults.release.set()
    x1 = hub.xet_file(REPO, "model.safetensors", hub.c1).xet_hash
    assert not (cache / "blobs" / x1[:2] / x1).exists()
    assert not (cache / "models--org--xet" / "snapshots" / hub.c1 / "model.safetensors").exists()
    path = hf_download(hub.endpoint, cache, REPO, "model.safetensors", revision=hub.c1, token=TOKEN)
    assert path.read_bytes() == MAIN_V1


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
        # two pages (the server gives 1,000 entries a page; huggingface_hub may retry one on a loaded machine)
        assert len(hub.stats.paths("/tree/")) >= 2
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


def test_malformed_uploads_are_refused(hub):
    """Bounded parsers: a truncated or foreign shard or xorb is a 400 (reason in stats.errors), nothing kept."""
    from tests.xetcas_format import SHARD_TAG

    s, cas = cas_session(hub)
    shards_before = sorted((hub.root / "shards").iterdir())
    good = next(iter((hub.root / "shards").iterdir())).read_bytes()
    for body in (b"", b"junk" * 100, SHARD_TAG + b"\0" * 16, good[:len(good) // 2], good[:48] + b"\xff" * 40):
        assert s.post(f"{cas}/v1/shards", data=body).status_code == 400
    xh = "ab" * 32
    for body in (b"", b"\x00\xff\xff\xff\x00\x01\x00\x00" + b"x" * 10, b"\x07" + b"\0" * 7):
        assert s.post(f"{cas}/v1/xorbs/default/{xh}", data=body).status_code == 400
    assert not (hub.root / "xorbs" / xh).exists()
    assert sorted((hub.root / "shards").iterdir()) == shards_before
    assert len(hub.stats.errors) == 8
    assert requests.post(f"{cas}/v1/shards", data=good).status_code == 401  # no CAS token
    hub.stats.errors.clear()
