"""`verify`, `lock` and `snapshot --lock` end to end: each kind of damage is found, named, and exits 1."""

from __future__ import annotations

import json
import os
import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hfcache.cache.layout import HubCache, RepoRef
from hfcache.cache.meta import FileMeta
from hfcache.server.catalog import ServedFile
from hfcache.verify import lockfile
from tests.conftest import MODEL_MAIN, build_hub, det_bytes, run_cli

TINY = RepoRef("org/tiny")
OFFLINE = {"HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def template(hub, tmp_path_factory) -> Path:
    """A cache holding org/tiny main, v1 and refs/pr/1 (which shares blobs with main) and the dataset."""
    root = tmp_path_factory.mktemp("verify-template") / "cache"
    for args in (["org/tiny"], ["org/tiny", "--revision", "v1"], ["org/tiny", "--revision", "refs/pr/1"],
                 ["org/ds", "--repo-type", "dataset"]):
        r = run_cli("snapshot", *args, "--cache-dir", str(root), endpoint=hub.url)
        assert r.returncode == 0, r.stderr
    return root


@pytest.fixture
def cache(template, tmp_path) -> Path:
    root = tmp_path / "cache"
    shutil.copytree(template, root, symlinks=True)
    return root


def verify(cache: Path, *args: str, hub=None, env: dict | None = None):
    return run_cli("verify", "--cache-dir", str(cache), *args, endpoint=hub.url if hub else "http://127.0.0.1:9",
                   env=env)


def verify_json(cache: Path, *args: str, hub=None, env: dict | None = None, code: int = 1) -> dict:
    r = verify(cache, "--json", *args, hub=hub, env=env)
    assert r.returncode == code, r.stdout + r.stderr
    return json.loads(r.stdout)


def errors(report: dict) -> list[dict]:
    return [p for p in report["problems"] if p["severity"] == "error"]


def snap(hub, revision: str = "main") -> str:
    return f"models--org--tiny/snapshots/{hub.commit('org/tiny', revision)}"


def blob_of(cache: Path, hub, path: str, revision: str = "main") -> Path:
    link = cache / snap(hub, revision) / path
    return (link.parent / os.readlink(link)).resolve()


def flip_byte(path: Path, at: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(data)


# -- intact ----------------------------------------------------------------------------------------------------------
def test_untouched_cache_is_intact_offline_without_a_request(hub, cache):
    before = len(hub.app.log)
    r = verify(cache, hub=hub, env=OFFLINE)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("intact: 17 files in 2 repos (4 snapshots)")
    assert "GiB/s" in r.stdout
    assert len(hub.app.log) == before
    report = verify_json(cache, "--online", hub=hub, code=0)
    assert report["ok"] and report["online"] and report["problems"] == []


def test_a_blob_shared_by_snapshots_is_hashed_once(hub, cache, monkeypatch):
    from hfcache.verify import check as v
    from hfcache.verify import content

    seen: list[str] = []
    real = content.hash_file_kinds

    def counting(path, kinds, *a, **kw):
        seen.append(os.path.realpath(path))
        return real(path, kinds, *a, **kw)

    monkeypatch.setattr(content, "hash_file_kinds", counting)
    report = v.verify(HubCache(cache), [(TINY, None)], jobs=3)
    blobs = {str(p.resolve()) for p in (cache / "models--org--tiny" / "blobs").iterdir()}
    assert sorted(seen) == sorted(blobs)  # every blob once, though main and refs/pr/1 share five of them
    assert report.ok and report.files == 6 + 2 + 6 and report.blobs == len(blobs) == 9


def test_early_hashing_reads_each_blob_once_finds_damage_and_reports_all_progress(hub, cache, monkeypatch):
    """Every blob started before the plan is done (EARLY_BYTES 1): still read once, a flipped byte still found
    and named, and the progress held back until the totals are known adds up to them."""
    from hfcache.progress import Progress
    from hfcache.verify import check as v
    from hfcache.verify import content

    class Counting(Progress):
        def __init__(self):
            self.totals, self.bytes, self.files, self.early = None, 0, 0, 0

        def start(self, files, total_bytes):
            self.totals = (files, total_bytes)

        def advance(self, n):
            assert self.totals is not None, "advance before start"
            self.bytes += n

        def file_done(self, path, size, fetched):
            assert self.totals is not None, "file_done before start"
            self.files += 1

    seen: list[str] = []
    real = content.hash_file_kinds

    def counting(path, kinds, *a, **kw):
        seen.append(os.path.realpath(path))
        return real(path, kinds, *a, **kw)

    monkeypatch.setattr(content, "hash_file_kinds", counting)
    monkeypatch.setattr(content, "EARLY_BYTES", 1)
    blob = blob_of(cache, hub, "big.bin")
    flip_byte(blob, 5)
    progress = Counting()
    report = v.verify(HubCache(cache), jobs=2, progress=progress)
    blobs = [str(p.resolve()) for p in cache.glob("*/blobs/*")]
    assert sorted(seen) == sorted(blobs)
    assert progress.totals == (len(blobs), sum(os.path.getsize(p) for p in blobs))
    assert (progress.files, progress.bytes) == progress.totals
    [p] = [p for p in report.problems if p.severity == "error"]
    assert p.kind == "hash-mismatch" and p.blob == f"models--org--tiny/blobs/{blob.name}"


# -- damage --------------------------------------------------------------------------------------------------------
def test_flipped_byte_names_the_blob_and_every_snapshot_path(hub, cache):
    blob = blob_of(cache, hub, "model.safetensors")
    flip_byte(blob, 1000)
    report = verify_json(cache, hub=hub)
    [p] = errors(report)
    assert p["kind"] == "hash-mismatch" and p["repo"] == "org/tiny"
    assert p["blob"] == f"models--org--tiny/blobs/{blob.name}"
    assert p["expected"] == f"sha256:{blob.name}" and p["actual"] != p["expected"]
    assert p["paths"] == sorted([f"{snap(hub)}/model.safetensors", f"{snap(hub, 'refs/pr/1')}/model.safetensors"])
    assert p["sources"] == ["name", "tree"] and p["bytes"] == 300_000
    r = verify(cache, hub=hub)
    assert r.returncode == 1 and blob.name in r.stdout and "model.safetensors" in r.stdout


def test_truncated_blob_is_a_size_mismatch(hub, cache):
    blob = blob_of(cache, hub, "big.bin")
    with open(blob, "r+b") as f:
        f.truncate(1_000_000)
    [p] = errors(verify_json(cache, hub=hub))
    assert (p["kind"], p["expected"], p["actual"]) == ("size-mismatch", "2000000", "1000000")
    assert p["blob"].endswith(blob.name) and len(p["paths"]) == 2


def test_deleted_blob_and_deleted_snapshot_file(hub, cache):
    blob = blob_of(cache, hub, "config.json", "v1")
    blob.unlink()
    (cache / snap(hub) / "nested" / "deep" / "dir" / "notes.txt").unlink()
    found = {(p["kind"], tuple(p["paths"])) for p in errors(verify_json(cache, hub=hub))}
    assert found == {
        ("broken-link", (f"{snap(hub, 'v1')}/config.json",)),
        ("missing-file", (f"{snap(hub)}/nested/deep/dir/notes.txt",)),  # per trees/<commit>.json
    }
    report = verify_json(cache, "--allow-partial", hub=hub)  # the missing file is then only a warning
    assert [p["kind"] for p in errors(report)] == ["broken-link"]


def test_broken_links_out_of_the_repo_and_blobs_out_of_the_cache(hub, cache, tmp_path):
    link = cache / snap(hub) / "config.json"
    link.unlink()
    (tmp_path / "elsewhere").write_text('{"model_type": "bert", "hidden_size": 32}\n')
    link.symlink_to(tmp_path / "elsewhere")  # same bytes, but not a blob of this repo
    blob = blob_of(cache, hub, "model.safetensors", "v1")
    outside = tmp_path / "outside.bin"
    shutil.move(blob, outside)
    blob.symlink_to(outside)
    found = {p["kind"]: p for p in errors(verify_json(cache, hub=hub))}
    assert set(found) == {"bad-link", "blob-outside-cache"}
    assert found["bad-link"]["paths"] == [f"{snap(hub)}/config.json"]
    assert found["blob-outside-cache"]["paths"] == [f"{snap(hub, 'v1')}/model.safetensors"]
    assert found["blob-outside-cache"]["actual"] == str(outside.resolve())


def test_ref_pointing_at_nothing(hub, cache):
    ref = cache / "models--org--tiny" / "refs" / "v1"
    ref.write_text("0" * 40)
    (cache / "models--org--tiny" / "refs" / "broken").write_text("not a commit")
    found = sorted((p["kind"], p["paths"][0]) for p in errors(verify_json(cache, hub=hub)))
    assert found == [("dangling-ref", "models--org--tiny/refs/broken"), ("dangling-ref", "models--org--tiny/refs/v1")]
    r = verify(cache, "org/tiny@v1", hub=hub)  # named explicitly: the same finding
    assert r.returncode == 1 and "dangling-ref" in r.stdout


def test_extra_file_offline_against_trees_and_online_against_the_hub(hub, cache):
    (cache / snap(hub) / "extra.txt").write_text("not in the repo\n")
    [p] = errors(verify_json(cache, hub=hub, env=OFFLINE))
    assert (p["kind"], p["paths"], p["sources"]) == ("extra-file", [f"{snap(hub)}/extra.txt"], ["tree"])
    shutil.rmtree(cache / "models--org--tiny" / "trees")  # now only the Hub can tell
    assert verify(cache, "org/tiny", hub=hub, env=OFFLINE).returncode == 0
    [p] = errors(verify_json(cache, "org/tiny", "--online", hub=hub))
    assert (p["kind"], p["paths"], p["sources"]) == ("extra-file", [f"{snap(hub)}/extra.txt"], ["hub"])


def test_changed_metadata_on_the_hub_is_found_online(tmp_path):
    h = build_hub(tmp_path / "hub", repos={("org/m", "model", "main"): {"a.txt": "aaa\n", "w.bin": det_bytes(4096, 7),
                                                                       "b.txt": "bbb\n"}})
    try:
        c = tmp_path / "c"
        assert run_cli("snapshot", "org/m", "--cache-dir", str(c), endpoint=h.url).returncode == 0
        assert verify(c, "--online", hub=h).returncode == 0
        commit = h.commit("org/m")
        files = h.app.catalog.get(RepoRef("org/m")).commits[commit]
        w = files["w.bin"]
        files["w.bin"] = ServedFile(FileMeta(4096, w.meta.blob_id, "ab" * 32, 4096), w.local)  # another sha256
        files["c.txt"] = ServedFile(FileMeta(4, "cd" * 20), files["b.txt"].local)  # a file the cache lacks
        del files["a.txt"]  # and one the Hub no longer lists
        report = verify_json(c, "--online", hub=h)
        found = {(p["kind"], p["paths"][0].split("/")[-1], tuple(p["sources"])) for p in errors(report)}
        assert found == {("hash-mismatch", "w.bin", ("hub",)), ("missing-file", "c.txt", ("hub",)),
                         ("extra-file", "a.txt", ("hub",))}
        [mismatch] = [p for p in errors(report) if p["kind"] == "hash-mismatch"]
        assert mismatch["expected"] == "sha256:" + "ab" * 32 and mismatch["actual"] == f"sha256:{w.meta.etag}"
        assert verify(c, hub=h, env=OFFLINE).returncode == 0  # offline, the cache agrees with itself
    finally:
        h.server.stop()


def test_a_ref_the_hub_moved_is_a_warning_online(tmp_path):
    h = build_hub(tmp_path / "hub", repos={("org/m", "model", "main"): {"a.txt": "one\n"}})
    try:
        c = tmp_path / "c"
        assert run_cli("snapshot", "org/m", "--cache-dir", str(c), endpoint=h.url).returncode == 0
        (tmp_path / "next").mkdir()
        (tmp_path / "next" / "a.txt").write_text("two\n")
        moved = h.app.catalog.add_folder(RepoRef("org/m"), tmp_path / "next", "main")
        report = verify_json(c, "--online", hub=h, code=0)
        [p] = report["problems"]
        assert (p["kind"], p["severity"], p["paths"]) == ("ref-moved", "warning", ["models--org--m/refs/main"])
        assert (p["expected"], p["actual"]) == (moved, h.commit("org/m"))
    finally:
        h.server.stop()


def test_orphan_blob_copy_layout_leftovers(hub, tmp_path):
    c = tmp_path / "c"
    env = {"HF_HUB_DISABLE_SYMLINKS": "1", "HF_HUB_DISABLE_SYMLINKS_WARNING": "1"}
    assert run_cli("snapshot", "org/tiny", "--cache-dir", str(c), endpoint=hub.url, env=env).returncode == 0
    snapshot = c / snap(hub)
    assert not (snapshot / "big.bin").is_symlink()
    assert verify(c, hub=hub, env=OFFLINE).returncode == 0
    flip_byte(snapshot / "big.bin")  # the copy layout: only trees/<commit>.json knows the hash
    orphan = c / "models--org--tiny" / "blobs" / ("ef" * 32)
    orphan.write_bytes(b"unlinked and wrong")
    (c / "models--org--tiny" / "blobs" / f"{'12' * 32}.incomplete").write_bytes(b"partial")
    (c / "models--org--tiny" / "blobs" / f"{'12' * 32}.incomplete.parts.tmp").write_bytes(b"{}")
    (c / ".locks" / "models--org--tiny" / f"{'12' * 32}.lock").touch()
    report = verify_json(c, hub=hub)
    found = {(p["severity"], p["kind"], p["blob"] or p["paths"][0]) for p in report["problems"]}
    assert found == {
        ("error", "hash-mismatch", f"{snap(hub)}/big.bin"),
        ("error", "hash-mismatch", f"models--org--tiny/blobs/{orphan.name}"),
        ("warning", "incomplete-download", f"models--org--tiny/blobs/{'12' * 32}.incomplete"),
        ("warning", "stale-lock", f".locks/models--org--tiny/{'12' * 32}.lock"),
    }


# -- repair ----------------------------------------------------------------------------------------------------------
def test_repair_restores_a_flipped_blob_and_the_recheck_passes(hub, cache):
    blob = blob_of(cache, hub, "model.safetensors")
    good = blob.read_bytes()
    flip_byte(blob, 5)
    (cache / snap(hub, "v1") / "config.json").unlink()
    report = verify_json(cache, "--repair", hub=hub, code=0)
    assert report["ok"] and report["problems"] == []
    # One fetch for the shared blob; its other snapshot path and the deleted entry only need linking again.
    assert sorted((r["action"], r["path"].split("/")[-1]) for r in report["repaired"]) == [
        ("refetched", "model.safetensors"), ("relinked", "config.json"), ("relinked", "model.safetensors")]
    assert {r["path"] for r in report["repaired"]} == {
        f"{snap(hub)}/model.safetensors", f"{snap(hub, 'refs/pr/1')}/model.safetensors",
        f"{snap(hub, 'v1')}/config.json"}
    assert blob.read_bytes() == good
    assert (cache / snap(hub, "refs/pr/1") / "model.safetensors").read_bytes() == good
    assert verify(cache, hub=hub, env=OFFLINE).returncode == 0


def test_repair_without_the_endpoint_still_reports_the_damage_at_once(hub, cache):
    blob = blob_of(cache, hub, "model.safetensors")
    flip_byte(blob, 5)
    started = time.monotonic()
    r = verify(cache, "--json", "--repair")  # endpoint: a closed port
    # no library retry loop: its backoff sleeps alone take ~25 s, whatever the load; a loaded box may take 10 s
    # to start the CLI and hash the cache, so the bound sits between the two
    assert time.monotonic() - started < 20
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert any(p["kind"] == "hash-mismatch" for p in errors(report))
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hfcache: error: --repair: cannot reach"), r.stderr


def test_online_without_the_endpoint_still_reports_what_the_cache_shows(hub, cache):
    intact = verify(cache, "--online")  # endpoint: a closed port
    assert intact.returncode == 1  # an operation failed (issue 12: it was 2, as for bad usage)
    assert intact.stderr.strip().splitlines()[-1].startswith("hfcache: error: --online: cannot reach")
    flip_byte(blob_of(cache, hub, "model.safetensors"), 5)
    r = verify(cache, "--json", "--online", "--repair")
    assert r.returncode == 1
    assert any(p["kind"] == "hash-mismatch" for p in errors(json.loads(r.stdout)))
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--online: cannot reach" in lines[0], r.stderr


@pytest.mark.parametrize("where", ["no/such/dir/r.xml", "."])
def test_junit_path_is_checked_before_hashing(cache, tmp_path, where):
    r = verify(cache, "--junit", str(tmp_path / where))
    assert r.returncode == 2 and "--junit" in r.stderr and "intact" not in r.stdout + r.stderr


def test_a_mistyped_repo_type_is_an_error_not_an_empty_pass(cache):
    r = verify(cache, "--repo-type", "datasets")
    assert r.returncode == 2 and "unknown repo type 'datasets'" in r.stderr


def test_repair_in_the_copy_layout_and_of_an_orphan(hub, tmp_path):
    c = tmp_path / "c"
    env = {"HF_HUB_DISABLE_SYMLINKS": "1", "HF_HUB_DISABLE_SYMLINKS_WARNING": "1"}
    assert run_cli("snapshot", "org/tiny", "--cache-dir", str(c), endpoint=hub.url, env=env).returncode == 0
    flip_byte(c / snap(hub) / "config.json")
    orphan = c / "models--org--tiny" / "blobs" / ("ef" * 32)
    orphan.write_bytes(b"unlinked and wrong")
    r = verify(c, "--repair", hub=hub, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "repaired: refetched" in r.stdout and "repaired: removed" in r.stdout
    assert (c / snap(hub) / "config.json").read_text() == MODEL_MAIN["config.json"]
    assert not (c / snap(hub) / "config.json").is_symlink() and not orphan.exists()


# -- lock files ------------------------------------------------------------------------------------------------------
def test_lock_then_verify_against_it_and_change_an_entry(hub, cache, tmp_path):
    lock = tmp_path / "hfcache.lock"
    r = run_cli("lock", "org/tiny", "org/tiny@v1", "dataset:org/ds", "-o", str(lock), "--cache-dir", str(cache),
                endpoint=hub.url)
    assert r.returncode == 0, r.stderr
    text = lock.read_text()
    assert f'"commit": "{hub.commit("org/tiny")}"' in text
    line = next(x for x in text.splitlines() if '"config.json"' in x and "42" in x)
    assert json.loads("{" + line.rstrip(",") + "}")["config.json"]["size"] == 42  # one file, one line
    assert lockfile.loads(text) == lockfile.read(lock)
    assert verify(cache, "--lock", str(lock), hub=hub, env=OFFLINE).returncode == 0
    # A teammate bumps a pin by hand: the cache no longer matches it.
    entry = json.loads(text)
    main = next(e for e in entry["repos"] if e["id"] == "org/tiny" and e["revision"] == "main")
    main["files"]["config.json"] = {"git-sha1": "ff" * 20, "size": 42}
    lock.write_text(json.dumps(entry))
    [p] = errors(verify_json(cache, "--lock", str(lock), hub=hub, env=OFFLINE))
    assert (p["kind"], p["paths"], p["sources"]) == ("hash-mismatch", [f"{snap(hub)}/config.json"], ["lock"])
    assert p["expected"] == "git-sha1:" + "ff" * 20
    main["files"]["README.md"]["size"] = 8
    main["files"]["new.txt"] = {"git-sha1": "ee" * 20, "size": 1}
    lock.write_text(json.dumps(entry))
    kinds = sorted(p["kind"] for p in errors(verify_json(cache, "--lock", str(lock), hub=hub, env=OFFLINE)))
    assert kinds == ["hash-mismatch", "missing-file", "size-mismatch"]


def test_lock_offline_reads_refs_and_trees_and_round_trips(hub, cache, tmp_path):
    online, offline = tmp_path / "on.lock", tmp_path / "off.lock"
    args = ("lock", "org/tiny", "org/tiny@refs/pr/1", "--exclude", "*.bin", "--cache-dir", str(cache))
    assert run_cli(*args, "-o", str(online), endpoint=hub.url).returncode == 0
    r = run_cli(*args, "-o", str(offline), "--json", env=OFFLINE)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["repos"][0]["files"] == 5
    assert online.read_text() == offline.read_text()
    pins = lockfile.read(online)
    assert lockfile.dumps(pins) == online.read_text() and "big.bin" not in online.read_text()
    assert [e.revision for e in pins.repos] == ["main", "refs/pr/1"]
    r = run_cli("lock", "org/ds", "--cache-dir", str(cache), env=OFFLINE)  # never fetched: nothing to pin
    assert r.returncode == 1 and "cannot pin" in r.stderr


def test_lock_pins_a_commit_missing_from_the_cache(hub, cache, tmp_path):
    lock = tmp_path / "l.lock"
    pins = lockfile.pin(HubCache(cache), [(TINY, "v1")])
    moved = lockfile.Lock((lockfile.LockedRepo(TINY, "v1", "2" * 40, pins.repos[0].files),))
    lockfile.write(lock, moved)
    [p] = errors(verify_json(cache, "--lock", str(lock), hub=hub, env=OFFLINE))
    assert p["kind"] == "missing-snapshot" and p["expected"] == "2" * 40


def test_snapshot_lock_fetches_exactly_what_it_pins(hub, tmp_path):
    lock = tmp_path / "hfcache.lock"
    r = run_cli("lock", "org/tiny", "--include", "*.json", "--include", "tokenizer/*", "-o", str(lock),
                "--cache-dir", str(tmp_path / "scratch"), endpoint=hub.url)
    assert r.returncode == 0, r.stderr
    c = tmp_path / "fresh"
    r = run_cli("snapshot", "--lock", str(lock), "--cache-dir", str(c), "--json", endpoint=hub.url)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["verify"]["ok"] and out["snapshots"][0]["files_fetched"] == 2
    folder = c / snap(hub)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()) == [
        "config.json", "tokenizer/vocab.txt"]
    assert (c / "models--org--tiny" / "refs" / "main").read_text() == hub.commit("org/tiny")
    assert verify(c, "--lock", str(lock), hub=hub, env=OFFLINE).returncode == 0
    assert verify(c, "--allow-partial", hub=hub, env=OFFLINE).returncode == 0  # partial on purpose


def test_snapshot_lock_refuses_pins_the_hub_contradicts_before_fetching(tmp_path):
    h = build_hub(tmp_path / "hub", repos={("org/m", "model", "main"): {"a.txt": "aaa\n", "b.txt": "bbb\n"}})
    try:
        lock = tmp_path / "l.lock"
        assert run_cli("lock", "org/m", "-o", str(lock), "--cache-dir", str(tmp_path / "x"),
                       endpoint=h.url).returncode == 0
        data = json.loads(lock.read_text())
        files = data["repos"][0]["files"]
        files["a.txt"]["git-sha1"] = "aa" * 20  # another hash than the Hub lists
        files["c.txt"] = {"git-sha1": "cc" * 20, "size": 4}  # a file the Hub does not list
        lock.write_text(json.dumps(data))
        c = tmp_path / "c"
        for args in ([], ["--json"]):
            r = run_cli("snapshot", "--lock", str(lock), "--cache-dir", str(c), *args, endpoint=h.url)
            assert r.returncode == 1 and r.stdout == "", r.stdout + r.stderr
            [line] = r.stderr.strip().splitlines()
            assert line.startswith(f"hfcache: error: {lock} contradicts {h.url} for org/m@")
            assert "a.txt is pinned as git-sha1 " + "aa" * 20 in line and "2 of 3 pinned files disagree" in line
        assert h.requests("/resolve/") == []
        assert not [p for p in c.rglob("*") if {"blobs", "snapshots"} & set(p.relative_to(c).parts)]
        files["a.txt"]["git-sha1"] = json.loads(lock.read_text())["repos"][0]["files"]["b.txt"]["git-sha1"]
        del files["c.txt"]
        lock.write_text(json.dumps(data))
        r = run_cli("snapshot", "--lock", str(lock), "--cache-dir", str(c), endpoint=h.url)
        assert r.returncode == 1 and "a.txt is pinned" in r.stderr and "1 of 2 pinned files disagrees" in r.stderr
    finally:
        h.server.stop()


# -- output and usage ------------------------------------------------------------------------------------------------
def test_junit_has_one_testcase_per_repo(hub, cache, tmp_path):
    flip_byte(blob_of(cache, hub, "README.md"))
    out = tmp_path / "verify.xml"
    assert verify(cache, "--junit", str(out), hub=hub).returncode == 1
    suite = ET.parse(out).getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == {"org/tiny", "dataset:org/ds"} and suite.get("failures") == "1"
    assert cases["dataset:org/ds"].find("failure") is None
    failure = cases["org/tiny"].find("failure")
    assert failure.get("type") == "hash-mismatch" and "README.md" in failure.text


def test_selection_by_repo_revision_and_type(hub, cache):
    flip_byte(blob_of(cache, hub, "config.json", "refs/pr/1"))
    assert verify(cache, "org/tiny@v1", "dataset:org/ds", hub=hub).returncode == 0
    assert verify(cache, "--repo-type", "dataset", hub=hub).returncode == 0
    assert verify(cache, "org/tiny@refs/pr/1", hub=hub).returncode == 1
    report = verify_json(cache, "org/tiny@" + hub.commit("org/tiny", "refs/pr/1"), "--jobs", "1", hub=hub)
    assert [r["snapshots"] for r in report["repos"]] == [[hub.commit("org/tiny", "refs/pr/1")]]
    found = errors(verify_json(cache, "org/nope", "org/tiny@v9", hub=hub))  # not cached: missing, not a crash
    assert sorted((p["kind"], p["repo"]) for p in found) == [("missing-repo", "org/nope"),
                                                              ("missing-snapshot", "org/tiny")]


@pytest.mark.parametrize(("args", "env", "needle"), [
    (["--cache-dir", "/nonexistent/cache"], {}, "no hub cache at"),
    (["--lock", "/nonexistent/hfcache.lock"], {}, "cannot read lock file"),
    (["--online"], OFFLINE, "HF_HUB_OFFLINE"),
    (["bad--id"], {}, "invalid repo id"),
    (["org/tiny@"], {}, "nothing after '@'"),
])
def test_usage_and_environment_errors_exit_2_in_one_line(cache, args, env, needle):
    r = run_cli("verify", "--cache-dir", str(cache), *args, endpoint="http://127.0.0.1:9", env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr


def test_bad_lock_file_is_a_usage_error(cache, tmp_path):
    bad = tmp_path / "bad.lock"
    files = {"../etc/passwd": {"sha256": "b" * 64, "size": 1}}
    bad.write_text(json.dumps({"version": 1, "repos": [{"type": "model", "id": "org/x", "revision": "main",
                                                        "commit": "a" * 40, "files": files}]}))
    r = run_cli("verify", "--cache-dir", str(cache), "--lock", str(bad))
    assert r.returncode == 2 and "unsafe file name" in r.stderr and "Traceback" not in r.stderr
