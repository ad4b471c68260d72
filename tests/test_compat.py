"""huggingface_hub is the oracle: its own functions against our server, and its caches against ours."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download

from tests.conftest import MODEL_MAIN, cache_tree, run_cli


def test_huggingface_hub_downloads_from_hfcache_serve(hub, tmp_path):
    folder = snapshot_download("org/tiny", cache_dir=tmp_path, endpoint=hub.url)
    for rel, data in MODEL_MAIN.items():
        expected = data.encode() if isinstance(data, str) else data
        assert (tmp_path / folder / rel).read_bytes() == expected
    path = hf_hub_download("org/ds", "data/test.csv", repo_type="dataset", cache_dir=tmp_path / "b",
                           endpoint=hub.url)
    assert Path(path).read_text() == "a,b\n1,2\n"


CASES = {
    "model-main": (["org/tiny"], {}),
    "one-segment-id": (["bert-tiny"], {}),
    "dataset": (["org/ds", "--repo-type", "dataset"], {"repo_type": "dataset"}),
    "tag": (["org/tiny", "--revision", "v1"], {"revision": "v1"}),
    "pr-ref": (["org/tiny", "--revision", "refs/pr/1"], {"revision": "refs/pr/1"}),
    "include": (["org/tiny", "--include", "*.json", "--include", "nested/*"],
                {"allow_patterns": ["*.json", "nested/*"]}),
    "exclude": (["org/tiny", "--exclude", "*.bin", "--exclude", "tokenizer/"],
                {"ignore_patterns": ["*.bin", "tokenizer/"]}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_snapshot_writes_the_same_cache_as_huggingface_hub(hub, tmp_path, case):
    args, kwargs = CASES[case]
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    r = run_cli("snapshot", *args, "--cache-dir", str(ours), endpoint=hub.url)
    assert r.returncode == 0, r.stderr
    hf_path = snapshot_download(args[0], cache_dir=theirs, endpoint=hub.url, **kwargs)
    assert r.stdout.strip().splitlines()[-1] == str(ours / hf_path.split("/theirs/", 1)[1])
    a, b = cache_tree(ours), cache_tree(theirs)
    assert a == b
    assert any(v[0] == "link" for v in a.values())
    assert any(k.startswith(("models--", "datasets--")) and "/trees/" in k for k in a)


def test_snapshot_by_commit_sha_matches_huggingface_hub(hub, tmp_path):
    commit = hub.commit("org/tiny", "v1")
    r = run_cli("snapshot", "org/tiny", "--revision", commit, "--cache-dir", str(tmp_path / "ours"), endpoint=hub.url)
    assert r.returncode == 0, r.stderr
    snapshot_download("org/tiny", revision=commit, cache_dir=tmp_path / "theirs", endpoint=hub.url)
    a = cache_tree(tmp_path / "ours")
    assert a == cache_tree(tmp_path / "theirs")
    assert not any("/refs/" in k for k in a)  # a commit needs no ref


def test_download_matches_hf_hub_download(hub, tmp_path):
    r = run_cli("download", "org/tiny", "config.json", "nested/deep/dir/notes.txt", "--cache-dir",
                str(tmp_path / "ours"), endpoint=hub.url)
    assert r.returncode == 0, r.stderr
    commit = hub.commit("org/tiny")
    snap = tmp_path / "ours" / "models--org--tiny" / "snapshots" / commit
    assert r.stdout.splitlines() == [str(snap / "config.json"), str(snap / "nested/deep/dir/notes.txt")]
    for f in ("config.json", "nested/deep/dir/notes.txt"):
        hf_hub_download("org/tiny", f, cache_dir=tmp_path / "theirs", endpoint=hub.url)
    assert cache_tree(tmp_path / "ours") == cache_tree(tmp_path / "theirs")


def test_scan_cache_dir_reads_an_hfcache_cache_without_warnings(hub, tmp_path):
    for args in (["org/tiny"], ["org/tiny", "--revision", "v1"], ["org/ds", "--repo-type", "dataset"]):
        assert run_cli("snapshot", *args, "--cache-dir", str(tmp_path), endpoint=hub.url).returncode == 0
    info = scan_cache_dir(tmp_path)
    assert info.warnings == []
    repos = {(r.repo_type, r.repo_id): r for r in info.repos}
    assert set(repos) == {("model", "org/tiny"), ("dataset", "org/ds")}
    tiny = repos[("model", "org/tiny")]
    assert {rev.commit_hash for rev in tiny.revisions} == {hub.commit("org/tiny"), hub.commit("org/tiny", "v1")}
    assert {ref for rev in tiny.revisions for ref in rev.refs} == {"main", "v1"}
    assert info.size_on_disk == sum(p.stat().st_size for p in tmp_path.glob("*/blobs/*"))


def test_huggingface_hub_offline_returns_hfcache_files(hub, tmp_path):
    r = run_cli("snapshot", "org/tiny", "--cache-dir", str(tmp_path), endpoint=hub.url)
    assert r.returncode == 0
    ours = r.stdout.strip().splitlines()[-1]
    script = (
        "import json, sys\n"
        "from huggingface_hub import hf_hub_download, snapshot_download, try_to_load_from_cache\n"
        f"c = {str(tmp_path)!r}\n"
        "print(json.dumps([snapshot_download('org/tiny', cache_dir=c),"
        " hf_hub_download('org/tiny', 'tokenizer/vocab.txt', cache_dir=c),"
        " try_to_load_from_cache('org/tiny', 'config.json', cache_dir=c)]))\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**_env(), **env})
    assert p.returncode == 0, p.stderr
    snap, vocab, config = json.loads(p.stdout)
    assert snap == ours
    assert vocab == f"{ours}/tokenizer/vocab.txt"
    assert config == f"{ours}/config.json"


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
