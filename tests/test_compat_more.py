"""More of huggingface_hub as the oracle (issue 12): odd file names, empty files, space repos, `main` moving to a
new commit, and huggingface_hub and hfcache writing one cache in turn, each reading what the other wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download

from hfcache.cache.layout import RepoRef
from tests.conftest import MODEL_MAIN, build_hub, cache_tree, det_bytes, run_cli, write_files

ODD = {
    "dir with space/a b.txt": "spaces\n",
    "ünïcødé/日本語.txt": "unicode\n",
    "odd#?%.txt": "hash, question mark, percent\n",
    "100% sure & (maybe).json": '{"ok": true}\n',
    "empty.txt": b"",
    "nested/empty.bin": b"",
    "weights.bin": det_bytes(1_300_000, 7),
}
SPACE = {"app.py": "print('hello')\n", "README.md": "---\nsdk: gradio\n---\n"}


@pytest.fixture(scope="module")
def odd_hub(tmp_path_factory):
    h = build_hub(tmp_path_factory.mktemp("oddhub"), repos={
        ("org/odd", "model", "main"): ODD,
        ("org/myspace", "space", "main"): SPACE,
    })
    yield h
    h.server.stop()


def _bytes(v: bytes | str) -> bytes:
    return v.encode() if isinstance(v, str) else v


OFFLINE_READER = """
import json, sys
from huggingface_hub import hf_hub_download, snapshot_download
repo_id, repo_type, cache, names = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
folder = snapshot_download(repo_id, repo_type=repo_type, cache_dir=cache)
got = {n: open(hf_hub_download(repo_id, n, repo_type=repo_type, cache_dir=cache), "rb").read().hex() for n in names}
print(json.dumps({"folder": folder, "files": got}))
"""


def read_offline(cache: Path, repo_id: str, names: list[str], repo_type: str = "model") -> dict:
    """huggingface_hub, offline, in a fresh process: the snapshot folder and each file's bytes (hex)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    p = subprocess.run([sys.executable, "-c", OFFLINE_READER, repo_id, repo_type, str(cache), json.dumps(names)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def verify_ok(cache: Path) -> None:
    r = run_cli("verify", "--cache-dir", str(cache))
    assert r.returncode == 0, r.stdout + r.stderr
    assert not scan_cache_dir(cache).warnings


# -- names, empty files, space repos -------------------------------------------------------------------------------
def test_odd_names_and_empty_files_write_the_same_cache_as_huggingface_hub(odd_hub, tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    r = run_cli("snapshot", "org/odd", "--cache-dir", str(ours), endpoint=odd_hub.url)
    assert r.returncode == 0, r.stderr
    snapshot_download("org/odd", cache_dir=theirs, endpoint=odd_hub.url)
    assert cache_tree(ours) == cache_tree(theirs)
    folder = Path(r.stdout.strip().splitlines()[-1])
    for name, data in ODD.items():
        assert (folder / name).read_bytes() == _bytes(data), name
    verify_ok(ours)
    seen = read_offline(ours, "org/odd", list(ODD))
    assert seen["folder"] == str(folder)
    assert {n: bytes.fromhex(h) for n, h in seen["files"].items()} == {n: _bytes(v) for n, v in ODD.items()}


@pytest.mark.parametrize("name", ["odd#?%.txt", "ünïcødé/日本語.txt", "dir with space/a b.txt", "empty.txt"])
def test_download_of_one_odd_name_matches_hf_hub_download(odd_hub, tmp_path, name):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    r = run_cli("download", "org/odd", name, "--cache-dir", str(ours), endpoint=odd_hub.url)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).read_bytes() == _bytes(ODD[name])
    hf_hub_download("org/odd", name, cache_dir=theirs, endpoint=odd_hub.url)
    assert cache_tree(ours) == cache_tree(theirs)
    verify_ok(ours)


def test_a_missing_odd_name_is_one_line_and_the_same_marker(odd_hub, tmp_path):
    name = "no such/fïle#1?.txt"
    r = run_cli("download", "org/odd", name, "--cache-dir", str(tmp_path / "ours"), endpoint=odd_hub.url)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    with pytest.raises(Exception, match="404|not found|Entry"):
        hf_hub_download("org/odd", name, cache_dir=tmp_path / "theirs", endpoint=odd_hub.url)
    assert cache_tree(tmp_path / "ours") == cache_tree(tmp_path / "theirs")


@pytest.mark.parametrize("spec", [["space:org/myspace"], ["org/myspace", "--repo-type", "space"]])
def test_space_repos_match_huggingface_hub(odd_hub, tmp_path, spec):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    r = run_cli("snapshot", *spec, "--cache-dir", str(ours), endpoint=odd_hub.url)
    assert r.returncode == 0, r.stderr
    hf_folder = snapshot_download("org/myspace", repo_type="space", cache_dir=theirs, endpoint=odd_hub.url)
    assert r.stdout.strip().splitlines()[-1] == str(ours / Path(hf_folder).relative_to(theirs))
    assert cache_tree(ours) == cache_tree(theirs)
    assert any(k.startswith("spaces--org--myspace/snapshots/") for k in cache_tree(ours))
    verify_ok(ours)
    seen = read_offline(ours, "org/myspace", list(SPACE), "space")
    assert {n: bytes.fromhex(h) for n, h in seen["files"].items()} == {n: _bytes(v) for n, v in SPACE.items()}


# -- main moving to a new commit -----------------------------------------------------------------------------------
def test_main_moving_to_a_new_commit(tmp_path):
    h = build_hub(tmp_path / "hub", repos={("org/moving", "model", "main"): {"a.txt": "one\n", "b.txt": "same\n"}})
    try:
        ours, theirs = tmp_path / "ours", tmp_path / "theirs"
        first = h.commit("org/moving")
        assert run_cli("snapshot", "org/moving", "--cache-dir", str(ours), endpoint=h.url).returncode == 0
        snapshot_download("org/moving", cache_dir=theirs, endpoint=h.url)
        changed = write_files(tmp_path / "v2", {"a.txt": "two\n", "b.txt": "same\n", "c.txt": "new\n"})
        second = h.app.catalog.add_folder(RepoRef("org/moving"), changed, "main")
        assert second != first
        r = run_cli("snapshot", "org/moving", "--cache-dir", str(ours), endpoint=h.url)
        assert r.returncode == 0 and r.stdout.strip().endswith(second), r.stdout + r.stderr
        snapshot_download("org/moving", cache_dir=theirs, endpoint=h.url)
        assert cache_tree(ours) == cache_tree(theirs)  # the old snapshot stays, detached, in both
        repo = ours / "models--org--moving"
        assert (repo / "refs" / "main").read_text() == second and (repo / "snapshots" / first).is_dir()
        assert os.path.samefile(repo / "snapshots" / first / "b.txt", repo / "snapshots" / second / "b.txt")
        verify_ok(ours)
        seen = read_offline(ours, "org/moving", ["a.txt", "c.txt"])
        assert seen["folder"].endswith(second) and bytes.fromhex(seen["files"]["a.txt"]) == b"two\n"
        done = json.loads(run_cli("prune", "--cache-dir", str(ours), "--yes", "--json").stdout)
        assert not done["errors"] and not (repo / "snapshots" / first).exists()
        assert (repo / "snapshots" / second / "b.txt").read_bytes() == b"same\n"  # the shared blob stays
        verify_ok(ours)
        assert read_offline(ours, "org/moving", ["a.txt", "b.txt", "c.txt"])["folder"].endswith(second)
    finally:
        h.server.stop()


# -- both tools, one cache, in turn --------------------------------------------------------------------------------
def test_huggingface_hub_and_hfcache_write_one_cache_in_turn(hub, tmp_path):
    """Each step by one tool after the other's, on one cache; the same steps by huggingface_hub alone give the
    same cache, and each tool reads all of it offline."""
    mixed, pure = tmp_path / "mixed", tmp_path / "pure"
    pr = hub.commit("org/tiny", "refs/pr/1")

    def ours(*args: str) -> None:
        r = run_cli(*args, "--cache-dir", str(mixed), endpoint=hub.url)
        assert r.returncode == 0, r.stderr

    hf_hub_download("org/tiny", "config.json", cache_dir=mixed, endpoint=hub.url)  # huggingface_hub first
    ours("snapshot", "org/tiny")  # hfcache: the rest of main, reusing the blob huggingface_hub wrote
    snapshot_download("org/tiny", revision="v1", cache_dir=mixed, endpoint=hub.url)
    ours("download", f"org/tiny@{pr}", "README.md", "big.bin")
    snapshot_download("org/ds", repo_type="dataset", cache_dir=mixed, endpoint=hub.url)
    ours("snapshot", "dataset:org/ds")  # nothing left to fetch: all reused

    hf_hub_download("org/tiny", "config.json", cache_dir=pure, endpoint=hub.url)
    snapshot_download("org/tiny", cache_dir=pure, endpoint=hub.url)
    snapshot_download("org/tiny", revision="v1", cache_dir=pure, endpoint=hub.url)
    for name in ("README.md", "big.bin"):
        hf_hub_download("org/tiny", name, revision=pr, cache_dir=pure, endpoint=hub.url)
    snapshot_download("org/ds", repo_type="dataset", cache_dir=pure, endpoint=hub.url)
    snapshot_download("org/ds", repo_type="dataset", cache_dir=pure, endpoint=hub.url)
    assert cache_tree(mixed) == cache_tree(pure)

    verify_ok(mixed)
    seen = read_offline(mixed, "org/tiny", list(MODEL_MAIN))
    assert {n: bytes.fromhex(v) for n, v in seen["files"].items()} == {n: _bytes(v) for n, v in MODEL_MAIN.items()}
    offline = run_cli("snapshot", "org/tiny", "--revision", "v1", "--cache-dir", str(mixed),
                      env={"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0 and offline.stdout.strip().endswith(hub.commit("org/tiny", "v1")), offline.stderr
