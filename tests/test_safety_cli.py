"""`verify --safety`, `inspect`, `snapshot --safety` and `scan` on real cache layouts, through the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hfcache.cache.hashing import hash_bytes, lfs_pointer
from hfcache.cache.layout import FileMeta, HubCache, RepoRef
from hfcache.safety.check import check_cache
from tests.conftest import build_hub, run_cli
from tests.safety_corpus import OS_SYSTEM, P2, STOP, G, corpus, good_safetensors, torch_zip

CORPUS = corpus()


def add_snapshot(cache: HubCache, repo: RepoRef, files: dict[str, bytes], ref: str = "main") -> str:
    """A snapshot as huggingface_hub lays it out: blobs named by sha256, relative links, a ref."""
    commit = hash_bytes(repr(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items())).encode(),
                        "git-sha1")
    tree = {}
    for name, data in files.items():
        etag = hashlib.sha256(data).hexdigest()
        tree[name] = FileMeta(len(data), hash_bytes(lfs_pointer(etag, len(data)), "git-sha1"), etag, len(data))
        blob = cache.blob_path(repo, etag)
        blob.parent.mkdir(parents=True, exist_ok=True)
        new = not blob.exists()
        if new:
            blob.write_bytes(data)
        cache.link(repo, commit, name, etag, new)
    cache.write_ref(repo, ref, commit)
    cache.write_tree(repo, commit, tree)
    return commit


@pytest.fixture
def cache(tmp_path) -> HubCache:
    c = HubCache(tmp_path / "hub")
    c.ensure_tag()
    good = {"config.json": b'{"a": 1}', "model.safetensors": good_safetensors(), "pytorch_model.bin": torch_zip()}
    add_snapshot(c, RepoRef("org/good"), good)
    evil = {"config.json": b'{"a": 1}', "pytorch_model.bin": P2 + OS_SYSTEM + STOP,
            "model.safetensors": CORPUS["st_overlap"].data}
    add_snapshot(c, RepoRef("org/evil"), evil)
    add_snapshot(c, RepoRef("org/evil"), {**evil, "copy.bin": P2 + OS_SYSTEM + STOP}, ref="v2")
    return c


def cli(cache: HubCache, *args: str):
    return run_cli(*args, "--cache-dir", str(cache.root))


def test_verify_safety_exit_codes_and_every_path_named(cache):
    ok = cli(cache, "verify", "--safety", "org/good")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "safe to load" in ok.stdout
    bad = cli(cache, "verify", "--safety", "org/evil", "--json")
    assert bad.returncode == 1, bad.stderr
    report = json.loads(bad.stdout)
    assert report["ok"] is True  # the hashes are fine: the bytes are the Hub's
    safety = report["safety"]
    assert not safety["ok"] and safety["counts"]["critical"] == 1 and safety["counts"]["unsafe"] == 1
    pickle_entry = next(r for r in safety["results"] if r["verdict"] == "critical")
    assert len(pickle_entry["paths"]) == 3  # one blob, named by both snapshots' paths (and copy.bin)
    assert {"name": "os.system", "grade": "critical"} in pickle_entry["imports"]
    assert cli(cache, "verify", "--safety", "--allow", "nodots").returncode == 2


def test_whole_cache_text_output_and_junit(cache, tmp_path):
    junit = tmp_path / "out.xml"
    r = cli(cache, "verify", "--safety", "--junit", str(junit))
    assert r.returncode == 1
    assert "critical: org/evil:" in r.stdout and "os.system" in r.stdout
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == ["hfcache verify", "hfcache verify --safety"]
    cases = {c.get("name"): c for c in suites[1].findall("testcase")}
    assert cases["org/evil"].find("failure") is not None and cases["org/good"].find("failure") is None


def test_a_second_run_reads_nothing(cache, monkeypatch):
    import hfcache.safety.check as check_mod

    first = check_cache(cache)
    assert first.read == len(first.files) > 0
    calls = []
    monkeypatch.setattr(check_mod, "check_file", lambda *a: calls.append(a))
    second = check_cache(cache)
    assert calls == [] and second.read == 0 and second.bytes_read == 0
    assert [f.verdict for f in second.files] == [f.verdict for f in first.files]
    monkeypatch.undo()
    # a changed file, or another policy, is read again
    blob = next(f for f in first.files if f.verdict.format == "safetensors" and f.verdict.safe).blob
    path = cache.root / blob
    path.write_bytes(path.read_bytes() + b"\x00")
    third = check_cache(cache)
    assert third.read == 1
    from hfcache.safety.policy import policy

    assert check_cache(cache, policy=policy(["mylib.Thing"])).read == len(first.files)


def test_the_verdict_store_stays_out_of_the_hub_cache(cache):
    check_cache(cache)
    store = cache.safety_verdicts_path()
    assert store.exists()
    assert cache.root not in store.parents
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(cache.root)
    assert not info.warnings and {r.repo_id for r in info.repos} == {"org/good", "org/evil"}
    r = cli(cache, "scan", "--json")
    assert r.returncode == 0, r.stderr


def test_inspect_a_repo_a_file_and_a_path(cache, tmp_path):
    r = cli(cache, "inspect", "org/good", "model.safetensors")
    assert r.returncode == 0, r.stderr
    assert "safetensors" in r.stdout and "2 tensors, 7 parameters" in r.stdout and "metadata format: pt" in r.stdout
    r = cli(cache, "inspect", "org/evil", "pytorch_model.bin")
    assert r.returncode == 1
    assert "import os.system: critical" in r.stdout
    r = cli(cache, "inspect", "org/good", "nope.bin")
    assert r.returncode == 1 and "not in the selected snapshots" in r.stdout
    loose = tmp_path / "loose.pt"
    loose.write_bytes(torch_zip())
    r = run_cli("inspect", str(loose), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["results"][0]["format"] == "torch-zip"
    assert {i["name"] for i in data["results"][0]["imports"]} >= {"torch._utils._rebuild_tensor_v2"}


def test_allow_a_known_benign_import_kept_in_the_lock_with_its_reason(cache, tmp_path):
    repo = RepoRef("org/custom")
    custom = P2 + G("mylib.layers", "Block") + b")\x81" + STOP
    add_snapshot(cache, repo, {"model.bin": custom})
    assert cli(cache, "verify", "--safety", "org/custom").returncode == 1
    assert cli(cache, "verify", "--safety", "org/custom", "--allow", "mylib.layers.Block").returncode == 0
    lock = tmp_path / "hfcache.lock"
    r = run_cli("lock", "org/custom", "-o", str(lock), "--cache-dir", str(cache.root), env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    r = cli(cache, "verify", "--safety", "--lock", str(lock), "--allow", "mylib.layers.Block")
    assert r.returncode == 2 and "reason" in r.stderr  # with a lock, a reason is required
    r = cli(cache, "verify", "--safety", "--lock", str(lock), "--allow", "mylib.layers.Block=our own layer, reviewed")
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(lock.read_text())
    assert data["safety"]["allow"] == {"mylib.layers.Block": "our own layer, reviewed"}
    r = cli(cache, "verify", "--safety", "--lock", str(lock), "--json")  # the lock alone now allows it
    assert r.returncode == 0 and json.loads(r.stdout)["safety"]["allowed"][0]["reason"].startswith("our own")


def test_snapshot_safety_prints_the_folder_only_when_safe(tmp_path):
    evil = {"config.json": '{"a": 1}', "pytorch_model.bin": P2 + OS_SYSTEM + STOP}
    hub = build_hub(tmp_path / "hubsrc", repos={("org/evil", "model", "main"): evil,
                                                ("org/fine", "model", "main"): {"model.safetensors":
                                                                                good_safetensors()}})
    try:
        cache_dir = tmp_path / "c"
        r = run_cli("snapshot", "org/evil", "--safety", "--cache-dir", str(cache_dir), endpoint=hub.url)
        assert r.returncode == 1
        assert r.stdout.strip() == "" and "os.system" in r.stderr
        r = run_cli("snapshot", "org/fine", "--safety", "--cache-dir", str(cache_dir), endpoint=hub.url)
        assert r.returncode == 0, r.stderr
        assert Path(r.stdout.strip().splitlines()[-1]).is_dir()
    finally:
        hub.server.stop()


def test_copy_layout_files_are_checked_too(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_DISABLE_SYMLINKS", "1")
    c = HubCache(tmp_path / "hub")
    c._symlinks = False
    add_snapshot(c, RepoRef("org/copied"), {"model.bin": P2 + OS_SYSTEM + STOP})
    snap = next((c.snapshots_dir(RepoRef("org/copied"))).iterdir())
    assert not os.path.islink(snap / "model.bin")
    report = check_cache(c)
    assert not report.ok and report.files[0].paths[0].endswith("model.bin")


def test_scan_counts_pickles_and_shows_remembered_verdicts_without_reading(cache, monkeypatch):
    r = cli(cache, "scan", "--hub-only", "--json")
    before = json.loads(r.stdout)["safety"]
    assert before["checked"] == 0 and before["pickle_format_files"] == 4  # by name: the .bin files
    check_cache(cache)
    import builtins

    real_open = builtins.open
    opened = []

    def spy(path, *a, **kw):
        opened.append(str(path))
        return real_open(path, *a, **kw)

    from hfcache.cache.roots import resolve_roots
    from hfcache.cli.safety import scan_tally
    from hfcache.scan import scan as do_scan

    result = do_scan(resolve_roots(hub_cache=cache.root), hub_only=True)
    monkeypatch.setattr(builtins, "open", spy)
    t = scan_tally(result)
    monkeypatch.undo()
    assert not [p for p in opened if "/blobs/" in p]  # no blob opened
    assert t.checked == t.files == 10 and t.verdicts["critical"] == 3 and t.verdicts["unsafe"] == 2
    assert t.unsafe_repos == {"org/evil": "critical"}
    assert t.pickle_format == 4  # by remembered format now: the 3 links to the payload and the torch zip
    assert cli(cache, "verify", "--safety").returncode == 1  # the CLI's own store (its HF_HOME)
    r = cli(cache, "scan", "--hub-only")
    assert r.returncode == 0 and "critical: org/evil" in r.stdout and "pickle-format" in r.stdout


def test_snapshot_safety_refuses_a_malformed_safetensors_before_downloading_it(tmp_path):
    bad = CORPUS["st_overlap"].data + bytes(4 * 1024 * 1024)  # a big body that must not be fetched
    hub = build_hub(tmp_path / "hubsrc", repos={("org/st", "model", "main"): {"model.safetensors": bad,
                                                                             "config.json": "{}"}})
    try:
        cache_dir = tmp_path / "c"
        r = run_cli("snapshot", "org/st", "--safety", "--cache-dir", str(cache_dir), endpoint=hub.url)
        assert r.returncode == 1 and r.stdout.strip() == ""
        assert "overlaps" in r.stderr and "nothing was downloaded" in r.stderr
        ranged = [q for q in hub.requests("model.safetensors") if q.method == "GET"]
        assert ranged and all(q.range for q in ranged)  # only range requests reached the file
        assert sorted(q.range for q in ranged)[:1] == ["bytes=0-7"]
        assert not list(cache_dir.glob("*/blobs/*"))  # nothing in the cache
    finally:
        hub.server.stop()
