"""`export` and `import` end to end: round trips to "another machine", the shared store, hostile bundles, kills."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from hfcache.cache.hashing import hash_file, kind_of
from hfcache.errors import HfcacheError
from tests.conftest import DATASET, MODEL_MAIN, MODEL_V1, cache_tree, run_cli

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}  # no network, and nothing to reach anyway
SPECS = ("org/tiny", "model:org/tiny@v1", "dataset:org/ds@main")


@functools.cache
def has_command(name: str) -> bool:
    """Commands other modules add (`verify`, `lock`) are used when this checkout has them."""
    return run_cli(name, "--help").returncode == 0


def _ok(r):
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r


def _one_line_error(r) -> str:
    assert r.returncode not in (0, None), r.stdout
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hfcache: error: "), r.stderr
    return lines[0]


FILL_SCRIPT = """
import json, sys
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError
cache, revisions = sys.argv[1], json.loads(sys.argv[2])
for repo, repo_type, revision in revisions:
    snapshot_download(repo, repo_type=repo_type, revision=revision, cache_dir=cache)
try:
    hf_hub_download("org/tiny", "missing.txt", cache_dir=cache)
except EntryNotFoundError:
    pass
"""
FILL_REVISIONS = [("org/tiny", "model", "main"), ("org/tiny", "model", "v1"), ("org/ds", "dataset", "main")]


def _fill(cache: Path, endpoint: str, env: dict | None = None, extra: tuple = ()) -> Path:
    """org/tiny main and v1, a dataset, and a `.no_exist` marker: every kind of thing a cache holds, written by
    huggingface_hub itself (the oracle), in a process of its own so that `env` (say HF_HUB_DISABLE_SYMLINKS) holds.
    `extra`: more (repo, repo_type, revision) to fetch."""
    full_env = {**os.environ, "HF_ENDPOINT": endpoint, **(env or {})}
    full_env.pop("HF_HUB_OFFLINE", None)
    p = subprocess.run([sys.executable, "-c", FILL_SCRIPT, str(cache), json.dumps([*FILL_REVISIONS, *extra])],
                       capture_output=True, text=True, env=full_env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert any((cache / "models--org--tiny" / ".no_exist").rglob("missing.txt"))
    return cache


@pytest.fixture(scope="module")
def source(hub, tmp_path_factory) -> Path:
    return _fill(tmp_path_factory.mktemp("machine-a") / "hub", hub.url)


def _export(cache: Path, out: Path | str, *extra: str, specs=SPECS) -> Path:
    """`out` ending in `/` (a str: Path drops it) asks for a folder bundle."""
    r = _ok(run_cli("export", *specs, "--cache-dir", str(cache), "-o", str(out), *extra, env=OFFLINE))
    bundle = Path(str(out).rstrip("/"))
    assert r.stdout.strip() == str(bundle)
    assert bundle.is_dir() == str(out).endswith("/")
    return bundle


def _import(bundle: Path, home: Path, *extra: str, env: dict | None = None):
    return run_cli("import", str(bundle), "--hf-home", str(home), "--json", *extra, env={**OFFLINE, **(env or {})})


def _expected(data) -> bytes:
    return data.encode() if isinstance(data, str) else data


LOAD_SCRIPT = """
import json, sys
from huggingface_hub import hf_hub_download, snapshot_download
out = {}
for repo, repo_type, revision, files in json.loads(sys.argv[1]):
    snapshot_download(repo, repo_type=repo_type, revision=revision)
    for f in files:
        out[f"{repo}@{revision}/{f}"] = open(hf_hub_download(repo, f, repo_type=repo_type, revision=revision),
                                             "rb").read().hex()
print(json.dumps(out))
"""


def _load_offline(home: Path, extra_env: dict | None = None) -> None:
    """huggingface_hub itself, in a fresh process with the network off, must find every file."""
    wanted = [("org/tiny", "model", "main", list(MODEL_MAIN)), ("org/tiny", "model", "v1", list(MODEL_V1)),
              ("org/ds", "dataset", "main", list(DATASET))]
    env = {**os.environ, **OFFLINE, "HF_HOME": str(home), **(extra_env or {})}
    env.pop("HF_HUB_CACHE", None)
    p = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, json.dumps(wanted)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    for repo, _, rev, files in wanted:
        src = MODEL_MAIN if rev == "main" and repo == "org/tiny" else MODEL_V1 if rev == "v1" else DATASET
        for f in files:
            assert bytes.fromhex(got[f"{repo}@{rev}/{f}"]) == _expected(src[f]), f


def _verify_passes(cache: Path) -> None:
    if has_command("verify"):  # `hfcache verify` (another module) is there: it must agree the cache is intact
        _ok(run_cli("verify", "--cache-dir", str(cache), env=OFFLINE))


def assert_valid(cache: Path) -> None:
    """What any reader may rely on at any moment: no broken link, no visible blob with wrong bytes, every ref
    leads to a snapshot, and a snapshot whose tree listing is there holds every file it lists."""
    from huggingface_hub import scan_cache_dir

    from hfcache.cache.layout import HubCache, RepoRef

    if not cache.exists():
        return
    assert scan_cache_dir(cache).warnings == []
    hc = HubCache(cache)
    for repo_dir in cache.iterdir():
        repo = RepoRef.from_folder_name(repo_dir.name)
        if repo is None:
            continue
        for p in (repo_dir / "snapshots").rglob("*"):
            assert p.is_dir() or p.exists(), f"broken {p}"
        for blob in (repo_dir / "blobs").iterdir() if (repo_dir / "blobs").is_dir() else ():
            kind = kind_of(blob.name)
            if kind is not None:
                assert hash_file(blob, kind) == blob.name, f"visible blob with wrong bytes: {blob}"
        for ref in (repo_dir / "refs").rglob("*") if (repo_dir / "refs").is_dir() else ():
            if ref.is_file():
                commit = ref.read_text()
                assert hc.snapshot_dir(repo, commit).is_dir()
                tree = hc.read_tree(repo, commit) or {}
                assert all(hc.pointer_path(repo, commit, f).exists() for f in tree), f"ref {ref} to a partial snapshot"


# -- round trips -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["tar", "dir", "zstd"])
def test_round_trip_to_another_machine_offline(source, tmp_path, form):
    if form == "zstd":
        pytest.importorskip("zstandard")
    out = {"tar": tmp_path / "cache.tar", "dir": f"{tmp_path / 'bundle'}/",
           "zstd": tmp_path / "cache.tar.zst"}[form]
    bundle = _export(source, out, *(["--zstd"] if form == "zstd" else []))
    if form == "zstd":
        assert bundle.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    home = tmp_path / "machine-b"  # a fresh HF_HOME, network off
    r = _ok(_import(bundle, home))
    result = json.loads(r.stdout)
    assert result["blobs_written"] == len(list((source / "models--org--tiny" / "blobs").iterdir())) + 3
    assert result["conflicts"] == [] and result["layout"] == "symlinks"
    assert cache_tree(home / "hub") == cache_tree(source)  # the same layout, byte for byte, link for link
    _load_offline(home)
    _verify_passes(home / "hub")


def test_import_is_idempotent_and_merges_reusing_blobs(source, hub, tmp_path):
    bundle = _export(source, tmp_path / "b.tar")
    target = tmp_path / "home" / "hub"
    _ok(run_cli("snapshot", "org/tiny", "--cache-dir", str(target), endpoint=hub.url))  # main is there already
    first = json.loads(_ok(_import(bundle, tmp_path / "home")).stdout)
    assert first["blobs_reused"] == 6 and first["files_present"] == 6
    again = json.loads(_ok(_import(bundle, tmp_path / "home")).stdout)
    assert again["blobs_written"] == 0 and again["files_linked"] == 0 and again["trees"] == 0
    assert cache_tree(target) == cache_tree(source)


def test_the_same_bytes_in_two_repos_travel_once(source, tmp_path):
    two = tmp_path / "two"
    shutil.copytree(source, two, symlinks=True)
    shutil.copytree(two / "models--org--tiny", two / "models--org--twin", symlinks=True)
    bundle = _export(two, f"{tmp_path / 'b'}/", specs=("org/tiny", "org/twin"))
    m = json.loads((bundle / "manifest.json").read_text())
    blobs = [e for e in m["entries"] if e["role"] == "blob"]
    assert len(blobs) == 12 and len(list((bundle / "payload").iterdir())) == 6 + 1  # and one listing: same bytes
    _ok(_import(bundle, tmp_path / "home"))
    tree = cache_tree(tmp_path / "home" / "hub")
    for repo in ("models--org--tiny", "models--org--twin"):
        mine = {k.split("/", 1)[1]: v for k, v in tree.items() if k.startswith(repo + "/")}
        assert {k: v for k, v in mine.items() if k.startswith("blobs/")} == {
            k.split("/", 1)[1]: v for k, v in cache_tree(source).items()
            if k.startswith("models--org--tiny/blobs/") and k.split("/")[-1] in {e["path"] for e in blobs}}
        snap = next((tmp_path / "home" / "hub" / repo / "snapshots").iterdir())
        assert {f: (snap / f).read_bytes() for f in MODEL_MAIN} == {f: _expected(d) for f, d in MODEL_MAIN.items()}


def test_differing_content_in_the_target_is_never_overwritten(source, tmp_path):
    bundle = _export(source, tmp_path / "b.tar", specs=("org/tiny",))
    target = tmp_path / "home" / "hub"
    shutil.copytree(source / "models--org--tiny", target / "models--org--tiny", symlinks=True)
    shutil.rmtree(target / "models--org--tiny" / "snapshots")
    (target / "models--org--tiny" / "snapshots").mkdir()
    (target / "models--org--tiny" / "refs" / "main").write_text("0" * 40)
    config = next(b for b in (target / "models--org--tiny" / "blobs").iterdir()
                  if b.read_bytes() == _expected(MODEL_MAIN["config.json"]))
    config.write_bytes(b"other and longer content than the real config.json\n")
    r = _import(bundle, tmp_path / "home")
    assert r.returncode == 1 and "conflict" in r.stderr and "Traceback" not in r.stderr
    result = json.loads(r.stdout)
    assert any(config.name in c for c in result["conflicts"])
    assert config.read_bytes() == b"other and longer content than the real config.json\n"  # kept
    assert (target / "models--org--tiny" / "refs" / "main").read_text() == "0" * 40  # not moved to a partial snapshot
    snap = target / "models--org--tiny" / "snapshots" / next(iter((source / "models--org--tiny" / "snapshots")
                                                                  .iterdir())).name
    assert (snap / "big.bin").read_bytes() == MODEL_MAIN["big.bin"]  # the rest is imported


def test_no_symlinks_import_is_the_layout_huggingface_hub_makes_without_symlinks(source, hub, tmp_path):
    copies = {"HF_HUB_DISABLE_SYMLINKS": "1", "HF_HUB_DISABLE_SYMLINKS_WARNING": "1"}
    oracle = _fill(tmp_path / "oracle", hub.url, env=copies)
    bundle = _export(source, tmp_path / "b.tar")
    _ok(_import(bundle, tmp_path / "home", "--no-symlinks"))
    tree = cache_tree(tmp_path / "home" / "hub")
    assert not any(v[0] == "link" for v in tree.values())
    assert tree == cache_tree(oracle)
    _load_offline(tmp_path / "home")


def test_export_from_a_copies_layout_cache_names_blobs_from_trees(hub, source, tmp_path):
    copies = _fill(tmp_path / "copies", hub.url, env={"HF_HUB_DISABLE_SYMLINKS": "1",
                                                      "HF_HUB_DISABLE_SYMLINKS_WARNING": "1"})
    bundle = _export(copies, tmp_path / "b.tar")
    _ok(_import(bundle, tmp_path / "home"))
    assert cache_tree(tmp_path / "home" / "hub") == cache_tree(source)


# -- the shared store --------------------------------------------------------------------------------------------
def _share(cache: Path) -> int:
    """Move every LFS blob of org/tiny into huggingface_hub 2.x's shared store, with its own function."""
    import hf_xet
    from huggingface_hub.utils._shared_blobs import publish_blob_to_shared_store

    shared = 0
    for blob in sorted((cache / "models--org--tiny" / "blobs").iterdir()):
        if kind_of(blob.name) == "sha256":
            xet = hf_xet.hash_files([str(blob)])[0].hash
            assert publish_blob_to_shared_store(blob_path=str(blob), xet_hash=xet, cache_dir=cache,
                                                expected_size=blob.stat().st_size)
            shared += 1
    return shared


def test_shared_store_round_trip(source, tmp_path):
    pytest.importorskip("hf_xet")
    shared = tmp_path / "a" / "hub"
    shutil.copytree(source, shared, symlinks=True)
    assert _share(shared) == 3
    store = shared / "blobs"
    assert (store / ".huggingface-shared-blobs").read_text() == "1\n"
    links = [b for b in (shared / "models--org--tiny" / "blobs").iterdir() if b.is_symlink()]
    assert links and all(os.readlink(b).startswith("../../blobs/") for b in links)

    bundle = _export(shared, tmp_path / "b.tar")
    with tarfile.open(bundle) as tar:
        assert all(m.isreg() for m in tar.getmembers())  # a bundle never carries a link
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert sum(1 for e in manifest["entries"] if e.get("xet_hash")) == 3

    r = _ok(_import(bundle, tmp_path / "b"))
    assert json.loads(r.stdout)["shared"] == 3
    assert cache_tree(tmp_path / "b" / "hub") == cache_tree(shared)  # store, `.refs` manifests and links alike
    _load_offline(tmp_path / "b")
    _verify_passes(tmp_path / "b" / "hub")

    # Where the store is off, the same bundle gives plain blobs, and everything still loads.
    _ok(_import(bundle, tmp_path / "c", env={"HF_HUB_DISABLE_SHARED_BLOBS": "1"}))
    assert not (tmp_path / "c" / "hub" / "blobs").exists()
    assert cache_tree(tmp_path / "c" / "hub") == cache_tree(source)
    _load_offline(tmp_path / "c")


# -- hostile and damaged bundles ---------------------------------------------------------------------------------
def _dir_bundle(source: Path, tmp_path: Path) -> Path:
    return _export(source, f"{tmp_path / 'bundle'}/")


def _flip_payload(bundle: Path) -> None:
    victim = max((bundle / "payload").iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1
    victim.write_bytes(bytes(data))


def _edit_manifest(bundle: Path, edit) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    edit(m["entries"])
    (bundle / "manifest.json").write_text(json.dumps(m))


def _first(entries, role):
    return next(e for e in entries if e["role"] == role)


TAMPERINGS = {
    "flipped-byte": _flip_payload,
    "payload-swapped-for-a-link": lambda b: (
        (p := max((b / "payload").iterdir(), key=lambda p: p.stat().st_size)).unlink(), p.symlink_to("/etc/passwd")),
    "payload-missing": lambda b: next((b / "payload").iterdir()).unlink(),
    "path-escapes": lambda b: _edit_manifest(b, lambda es: _first(es, "file").update(path="../../../../evil")),
    "absolute-path": lambda b: _edit_manifest(b, lambda es: _first(es, "no_exist").update(path="/etc/evil")),
    "blob-name-escapes": lambda b: _edit_manifest(b, lambda es: _first(es, "blob").update(path="../../x")),
    "name-is-not-hash": lambda b: _edit_manifest(b, lambda es: _first(es, "blob").update(
        path="0" * 64, sha256="0" * 64, payload="0" * 64)),
    "size-lies": lambda b: _edit_manifest(b, lambda es: _first(es, "blob").update(size=_first(es, "blob")["size"] + 1)),
    "not-json": lambda b: (b / "manifest.json").write_text("{"),
    "newer-schema": lambda b: (b / "manifest.json").write_text(json.dumps({"schema": "hfcache-bundle",
                                                                            "schema_version": 99, "entries": []})),
    "tree-disagrees": lambda b: _tamper_tree(b),
}


def _tamper_tree(bundle: Path) -> None:
    """A listing that names another blob for a file, with a manifest hash made to match: caught by consistency."""
    import hashlib

    m = json.loads((bundle / "manifest.json").read_text())
    t = next(e for e in m["entries"] if e["role"] == "tree" and e["repo_id"] == "org/tiny")
    tree = json.loads((bundle / "payload" / t["payload"]).read_bytes())
    tree["files"]["config.json"]["blob_id"] = "1" * 40
    data = json.dumps(tree, indent=1).encode()
    digest = hashlib.sha256(data).hexdigest()
    (bundle / "payload" / t["payload"]).unlink()
    (bundle / "payload" / digest).write_bytes(data)
    t.update(sha256=digest, payload=digest, size=len(data))
    (bundle / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("how", list(TAMPERINGS))
def test_tampered_bundle_is_refused_with_nothing_written(source, tmp_path, how):
    bundle = _dir_bundle(source, tmp_path)
    TAMPERINGS[how](bundle)
    home = tmp_path / "home"
    line = _one_line_error(_import(bundle, home))
    assert "nothing was imported" in line or "unsafe" in line or "manifest" in line or "bundle" in line, line
    assert not home.exists() or not any(home.rglob("*")), sorted(home.rglob("*"))


def test_tampered_bundle_leaves_an_existing_cache_untouched(source, hub, tmp_path):
    bundle = _dir_bundle(source, tmp_path)
    _flip_payload(bundle)
    target = tmp_path / "home" / "hub"
    _ok(run_cli("snapshot", "org/ds", "--repo-type", "dataset", "--cache-dir", str(target), endpoint=hub.url))
    before = cache_tree(target)
    _one_line_error(_import(bundle, tmp_path / "home"))
    assert cache_tree(target) == before
    assert not list(target.rglob("*.incomplete"))


def test_tampered_tar_is_refused(source, tmp_path):
    bundle = _export(source, tmp_path / "b.tar")
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 1  # inside big.bin's bytes
    bundle.write_bytes(bytes(data))
    _one_line_error(_import(bundle, tmp_path / "home"))
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*"))
    (tmp_path / "t.tar").write_bytes(bytes(data[: len(data) // 3]))  # truncated
    _one_line_error(_import(tmp_path / "t.tar", tmp_path / "home"))
    with tarfile.open(tmp_path / "evil.tar", "w") as tar:  # a link member
        info = tarfile.TarInfo("manifest.json")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    _one_line_error(_import(tmp_path / "evil.tar", tmp_path / "home"))
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*"))


# -- interrupted imports -----------------------------------------------------------------------------------------
def test_import_killed_midway_then_rerun_ends_valid(source, tmp_path):
    """SIGKILL at many points (staging, each rename, each link, tree, ref); each time the cache is valid, and
    running the import again completes it to the exact source layout."""
    bundle = _export(source, tmp_path / "b.tar", specs=("org/tiny",))
    reference = tmp_path / "ref"
    _ok(_import(bundle, reference))
    killed = 0
    for n in range(1, 24, 2):
        home = tmp_path / f"home{n}"
        r = _import(bundle, home, env={"HFCACHE_CRASH_AFTER": str(n)})
        if r.returncode == -9:
            killed += 1
        else:
            assert r.returncode == 0, r.stderr
        assert_valid(home / "hub")
        _ok(_import(bundle, home))
        assert cache_tree(home / "hub") == cache_tree(reference / "hub")
        assert_valid(home / "hub")
    assert killed >= 8


# -- export details and errors -----------------------------------------------------------------------------------
def test_manifest_says_what_and_by_whom(source, tmp_path):
    bundle = _dir_bundle(source, tmp_path)
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["schema"] == "hfcache-bundle" and m["schema_version"] == 1
    assert {"hfcache", "huggingface_hub"} <= set(m["created_by"])
    assert {e["role"] for e in m["entries"]} == {"blob", "file", "tree", "no_exist", "ref"}
    refs = {(e["repo_id"], e["path"]) for e in m["entries"] if e["role"] == "ref"}
    assert refs == {("org/tiny", "main"), ("org/tiny", "v1"), ("org/ds", "main")}
    for e in m["entries"]:
        if e["role"] == "blob":
            assert e.get("sha256", e.get("git_sha1")) == e["path"] == e["payload"]
            assert (bundle / "payload" / e["payload"]).stat().st_size == e["size"]


def test_export_include_exclude(source, tmp_path):
    r = _ok(run_cli("export", "org/tiny", "--include", "*.json", "--include", "tokenizer/", "--cache-dir",
                    str(source), "-o", str(tmp_path / "b/"), "--format", "dir", env=OFFLINE))
    assert "not exported" not in r.stderr  # what the patterns leave out is not missing
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert sorted(e["path"] for e in m["entries"] if e["role"] == "file") == ["config.json", "tokenizer/vocab.txt"]
    _ok(run_cli("import", str(tmp_path / "b"), "--cache-dir", str(tmp_path / "c"), env=OFFLINE))
    snaps = list((tmp_path / "c" / "models--org--tiny" / "snapshots").iterdir())
    assert sorted(p.relative_to(snaps[0]).as_posix() for p in snaps[0].rglob("*") if not p.is_dir()) == [
        "config.json", "tokenizer/vocab.txt"]


def test_export_of_a_partial_snapshot_says_what_is_missing(source, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(source, partial, symlinks=True)
    next((partial / "models--org--tiny" / "snapshots").glob("*/big.bin")).unlink()
    r = _ok(run_cli("export", "org/tiny", "--cache-dir", str(partial), "-o", str(tmp_path / "b.tar"), env=OFFLINE))
    assert "warning: 1 file the tree listings name is not" in r.stderr and "big.bin" in r.stderr


def test_export_refuses_a_damaged_source_and_leaves_no_bundle(source, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(source, damaged, symlinks=True)
    blob = next(b for b in (damaged / "models--org--tiny" / "blobs").iterdir() if b.stat().st_size == 2_000_000)
    blob.write_bytes(b"\0" * 2_000_000)
    line = _one_line_error(run_cli("export", "org/tiny", "--cache-dir", str(damaged), "-o", str(tmp_path / "x.tar"),
                                   env=OFFLINE))
    assert "damaged" in line
    assert list(tmp_path.glob("*x.tar*")) == []


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["org/absent"], 1, "not in the cache"),
    (["org/tiny@v9"], 1, "not in the cache"),
    (["widget:org/tiny"], 2, "unknown repo type"),
    (["bad--id"], 2, "invalid repo id"),
    ([], 2, "nothing to export"),
    (["org/tiny", "--format", "zip"], 2, "--format"),
    (["org/tiny", "--format", "dir", "--zstd"], 2, "--zstd"),
])
def test_export_errors_are_one_line(source, tmp_path, args, code, needle):
    r = run_cli("export", *args, "--cache-dir", str(source), "-o", str(tmp_path / "x"), env=OFFLINE)
    assert r.returncode == code
    assert needle in _one_line_error(r)


def test_import_errors_are_one_line(tmp_path):
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    assert "not a bundle" in _one_line_error(run_cli("import", str(tmp_path / "junk.tar"), "--cache-dir",
                                                     str(tmp_path / "c")))
    assert "no such bundle" in _one_line_error(run_cli("import", str(tmp_path / "nope"), "--cache-dir",
                                                       str(tmp_path / "c")))
    r = run_cli("import", str(tmp_path / "junk.tar"), "--cache-dir", "x", "--hf-home", "y")
    assert r.returncode == 2 and "not both" in _one_line_error(r)
    assert not (tmp_path / "c").exists()


def test_export_lock_exports_exactly_what_the_lock_pins(source, tmp_path):
    if not has_command("lock"):
        pytest.skip("`hfcache lock` (issue 3) is not in this checkout")
    lock = tmp_path / "hfcache.lock"
    _ok(run_cli("lock", "org/tiny@v1", "--include", "*.json", "-o", str(lock), "--cache-dir", str(source),
                env=OFFLINE))
    _ok(run_cli("export", "--lock", str(lock), "--cache-dir", str(source), "-o", f"{tmp_path / 'b'}/", env=OFFLINE))
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [e["path"] for e in m["entries"] if e["role"] == "file"] == ["config.json"]
    assert [(e["path"], e["commit"]) for e in m["entries"] if e["role"] == "ref"] == [
        ("v1", json.loads(lock.read_text())["repos"][0]["commit"])]
    r = run_cli("export", "--lock", str(lock), "--include", "x", "--cache-dir", str(source), "-o",
                str(tmp_path / "c"), env=OFFLINE)
    assert r.returncode == 2


def test_manifest_parser_turns_any_garbage_into_one_error(source, tmp_path):
    """Every field of every role, set to values of every wrong type or shape: a bundle error, never a crash."""
    from hfcache.bundle.manifest import Manifest
    from hfcache.errors import HfcacheError

    bundle = _dir_bundle(source, tmp_path)
    raw = json.loads((bundle / "manifest.json").read_text())
    bad_values = [None, 1, -1, True, 1.5, [], {}, "", "../x", "/abs", "a/../b", "x" * 300, "0" * 40, "0" * 64]
    samples = {e["role"]: e for e in raw["entries"]}
    checked = 0
    for entry in samples.values():
        for key in [*entry, "extra"]:
            for value in bad_values:
                mutated = {**raw, "entries": [{**entry, key: value} if e is entry else e for e in raw["entries"]]}
                with contextlib.suppress(HfcacheError):
                    Manifest.from_bytes(json.dumps(mutated).encode())
                checked += 1
    assert checked > 300
    for top in ([], "x", {"schema": "hfcache-bundle", "schema_version": 1, "entries": {}}, {"entries": [1]}):
        with pytest.raises(HfcacheError):
            Manifest.from_bytes(json.dumps(top).encode())


def test_an_existing_blob_of_the_right_size_is_hashed_before_it_is_linked(source, tmp_path):
    """A blob planted (or damaged) with the right size is never linked into a snapshot: it is a conflict."""
    bundle = _export(source, tmp_path / "b.tar", specs=("org/tiny",))
    target = tmp_path / "home" / "hub"
    blob = next(b for b in (source / "models--org--tiny" / "blobs").iterdir()
                if b.read_bytes() == _expected(MODEL_MAIN["config.json"]))
    planted = target / "models--org--tiny" / "blobs" / blob.name
    planted.parent.mkdir(parents=True)
    (target / "models--org--tiny" / "snapshots").mkdir()
    fake = bytearray(blob.read_bytes())
    fake[5] ^= 1
    planted.write_bytes(bytes(fake))  # same size, other bytes
    r = _import(bundle, tmp_path / "home")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert any(blob.name in c and "other content" in c for c in json.loads(r.stdout)["conflicts"])
    assert planted.read_bytes() == bytes(fake)
    assert not list((target / "models--org--tiny" / "snapshots").glob("*/config.json"))
    assert not (target / "models--org--tiny" / "refs" / "main").exists()  # not to a snapshot lacking a file


def test_export_refuses_a_bundle_import_would_refuse_as_too_large(source, tmp_path, monkeypatch):
    from hfcache.bundle import manifest
    from hfcache.bundle.export import export_bundle, parse_spec, plan_export
    from hfcache.cache.layout import HubCache
    from hfcache.errors import UsageError

    plan = plan_export(HubCache(source), [parse_spec("org/tiny")])
    monkeypatch.setattr(manifest, "MAX_ENTRIES", len(plan.manifest.entries) - 1)
    with pytest.raises(UsageError, match="split it into several bundles"):
        export_bundle(plan, tmp_path / "b.tar")
    assert not list(tmp_path.iterdir())
    monkeypatch.setattr(manifest, "MAX_ENTRIES", len(plan.manifest.entries))
    export_bundle(plan, tmp_path / "b.tar")
    with pytest.raises(HfcacheError, match="more than"):  # and import holds the same line
        monkeypatch.setattr(manifest, "MAX_ENTRIES", len(plan.manifest.entries) - 1)
        manifest.Manifest.from_bytes(plan.manifest.to_bytes())
