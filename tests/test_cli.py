"""`download`, `snapshot` and `serve` end to end, as a user runs them: outputs, errors, safety."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import requests

from hfcache.cache.hashing import hash_bytes
from hfcache.cache.layout import safe_relpath
from hfcache.errors import UnsafePath
from hfcache.units import counted
from tests.conftest import MODEL_MAIN, TOKEN, build_hub, cache_tree, run_cli, write_files


def _one_line_error(r) -> str:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("hfcache: error: ")
    return lines[0]


def test_snapshot_json_then_second_run_reuses_everything(hub, tmp_path):
    r = run_cli("snapshot", "org/tiny", "--cache-dir", str(tmp_path), "--json", endpoint=hub.url)
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert first["files_fetched"] == 6 and first["files_reused"] == 0
    assert first["commit"] == hub.commit("org/tiny")
    assert first["bytes_fetched"] == first["bytes_total"] > 2_000_000
    before = len(hub.requests("/resolve/"))
    again = json.loads(run_cli("snapshot", "org/tiny", "--cache-dir", str(tmp_path), "--json",
                               endpoint=hub.url).stdout)
    assert again["files_fetched"] == 0 and again["files_reused"] == 6
    assert len(hub.requests("/resolve/")) == before  # nothing fetched, not even a HEAD


def test_lfs_redirect_to_cdn_origin_works_and_token_stays_home(tmp_path):
    h = build_hub(tmp_path / "hub", cdn_host="localhost", token=TOKEN)
    try:
        r = run_cli("snapshot", "org/tiny", "--cache-dir", str(tmp_path / "c"), endpoint=h.url,
                    env={"HF_TOKEN": TOKEN})
        assert r.returncode == 0, r.stderr
        cdn = [x for x in h.app.log if x.path.startswith("cdn/")]
        home = [x for x in h.app.log if not x.path.startswith("cdn/")]
        assert len(cdn) == 2  # model.safetensors and big.bin are LFS files (by the default patterns)
        assert all(x.host.startswith("localhost:") and x.authorization is None for x in cdn)
        assert home and all(x.authorization == f"Bearer {TOKEN}" for x in home)
        assert all(TOKEN not in s for s in (r.stdout, r.stderr))
        snap = tmp_path / "c" / "models--org--tiny" / "snapshots" / h.commit("org/tiny")
        assert (snap / "big.bin").read_bytes() == (h.sources[next(iter(h.sources))] / "big.bin").read_bytes()
    finally:
        h.server.stop()


def test_corrupt_bytes_from_server_fail_and_leave_nothing(tmp_path):
    h = build_hub(tmp_path / "hub", repos={("org/bad", "model", "main"): {"a.txt": "good\n",
                                                                         "w.safetensors": b"x" * 5000}})
    try:
        src = h.sources[next(iter(h.sources))]
        (src / "w.safetensors").write_bytes(b"y" * 5000)  # same size, other bytes: the served hash now lies
        cache = tmp_path / "c"
        r = run_cli("snapshot", "org/bad", "--cache-dir", str(cache), endpoint=h.url)
        line = _one_line_error(r)
        assert "corrupt download" in line
        repo = cache / "models--org--bad"
        blobs = list((repo / "blobs").iterdir())
        meta = h.app.catalog.get(next(iter(h.commits))[0]).commits[h.commit("org/bad")]["w.safetensors"].meta
        assert meta.etag not in {b.name for b in blobs}
        assert not any(b.name.endswith(".incomplete") for b in blobs)
        assert not (repo / "snapshots" / h.commit("org/bad") / "w.safetensors").exists()
        assert not (repo / "snapshots" / h.commit("org/bad") / "w.safetensors").is_symlink()
        (src / "w.safetensors").write_bytes(b"y" * 4000)  # now short: the size check catches it
        line = _one_line_error(run_cli("download", "org/bad", "w.safetensors", "--cache-dir", str(cache),
                                       endpoint=h.url))
        assert "w.safetensors" not in {p.name for p in (repo / "snapshots").rglob("*")}
    finally:
        h.server.stop()


@pytest.mark.parametrize(("args", "needle"), [
    (["snapshot", "org/nope"], "not found"),
    (["snapshot", "org/tiny", "--revision", "v9"], "revision 'v9' not found"),
    (["download", "org/tiny", "missing.txt"], "missing.txt: no such file"),
    (["snapshot", "bad--id"], "invalid repo id"),
    (["snapshot", "org/tiny", "--repo-type", "widget"], "unknown repo type"),
    (["snapshot", "org/tiny", "--revision", ""], "invalid revision"),
    (["download", "org/tiny", "config.json", "--revision", "../../x"], "invalid revision"),
    (["snapshot", "org/tiny@v1", "--revision", "v2"], "disagree"),
])
def test_errors_are_one_line(hub, tmp_path, args, needle):
    r = run_cli(*args, "--cache-dir", str(tmp_path), endpoint=hub.url)
    assert needle in _one_line_error(r)


@pytest.mark.parametrize(("args", "needle"), [
    (["download", "org/tiny"], "Missing argument 'filenames"),  # typer < 0.27 says 'FILENAMES...
    (["snapshot", "org/tiny", "--bogus"], "No such option"),  # then --bogus, quoted or not (by typer's version)
    (["nosuch"], "No such command 'nosuch'"),
    (["serve", "--port", "99999"], "'--port'"),
])
def test_usage_errors_are_one_line_with_status_2(args, needle):
    r = run_cli(*args)
    assert r.returncode == 2
    assert needle.lower() in _one_line_error(r).lower() and "--help" in r.stderr
    assert "--bogus" not in args or "--bogus" in r.stderr


def test_no_arguments_shows_the_help():
    r = run_cli()
    assert r.returncode == 0 and "snapshot" in r.stdout and "verify" in r.stdout


def test_a_server_that_never_answers_ends_in_one_line(tmp_path):
    """huggingface_hub's API calls wait forever by default; ours give up after HF_HUB_ETAG_TIMEOUT."""
    import socket
    import time

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # accepts connections (the kernel does), never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        r = run_cli("snapshot", "org/tiny", "--cache-dir", str(tmp_path), endpoint=url,
                    env={"HF_HUB_ETAG_TIMEOUT": "1"}, timeout=60)
        assert time.monotonic() - started < 30
    assert "cannot reach" in _one_line_error(r) and "timed out" in r.stderr


def test_bad_revision_writes_nothing(hub, tmp_path):
    run_cli("snapshot", "org/tiny", "--revision", "", "--cache-dir", str(tmp_path), endpoint=hub.url)
    assert not (tmp_path / "models--org--tiny").exists()


def test_repo_at_revision_is_the_same_as_revision_option(hub, tmp_path):
    a = run_cli("snapshot", "org/tiny@v1", "--cache-dir", str(tmp_path), endpoint=hub.url)
    b = run_cli("snapshot", "org/tiny", "--revision", "v1", "--cache-dir", str(tmp_path), endpoint=hub.url)
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout
    assert hub.commit("org/tiny", "v1") in a.stdout


def test_a_broken_environment_is_one_line_not_a_traceback(hub, tmp_path):
    r = run_cli("snapshot", "org/tiny", "--cache-dir", str(tmp_path), endpoint=hub.url,
                env={"HF_HUB_DOWNLOAD_TIMEOUT": "abc"})
    assert "invalid literal" in _one_line_error(r)


def test_missing_file_leaves_a_no_exist_marker_like_huggingface_hub(hub, tmp_path):
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.file_download import _CACHED_NO_EXIST

    run_cli("download", "org/tiny", "missing.txt", "--cache-dir", str(tmp_path), endpoint=hub.url)
    marker = tmp_path / "models--org--tiny" / ".no_exist" / hub.commit("org/tiny") / "missing.txt"
    assert marker.is_file()
    assert try_to_load_from_cache("org/tiny", "missing.txt", cache_dir=tmp_path) is _CACHED_NO_EXIST


def test_unreachable_endpoint_and_refused_token_are_one_line(tmp_path):
    r = run_cli("snapshot", "org/tiny", "--cache-dir", str(tmp_path), endpoint="http://127.0.0.1:9")
    assert "cannot reach http://127.0.0.1:9" in _one_line_error(r)
    h = build_hub(tmp_path / "hub", token=TOKEN)
    try:
        r = run_cli("snapshot", "org/tiny", "--cache-dir", str(tmp_path), endpoint=h.url, env={"HF_TOKEN": "hf_bad"})
        line = _one_line_error(r)
        assert "401" in line and "hf_bad" not in line
        r = run_cli("snapshot", "org/tiny", "--cache-dir", str(tmp_path), endpoint=h.url, env={"HF_TOKEN": TOKEN})
        assert r.returncode == 0, r.stderr
    finally:
        h.server.stop()


def test_offline_mode_answers_from_the_cache_or_says_why_not(hub, tmp_path):
    online = run_cli("snapshot", "org/tiny", "--include", "*.json", "--cache-dir", str(tmp_path), endpoint=hub.url)
    assert online.returncode == 0
    before = len(hub.app.log)
    offline = {"HF_HUB_OFFLINE": "1"}
    r = run_cli("snapshot", "org/tiny", "--include", "*.json", "--cache-dir", str(tmp_path), endpoint=hub.url,
                env=offline)
    assert r.returncode == 0 and r.stdout == online.stdout
    r = run_cli("download", "org/tiny", "config.json", "--cache-dir", str(tmp_path), endpoint=hub.url, env=offline)
    assert r.returncode == 0 and r.stdout.strip().endswith("/config.json")
    assert "lacks 5 of 6 files" in _one_line_error(
        run_cli("snapshot", "org/tiny", "--cache-dir", str(tmp_path), endpoint=hub.url, env=offline))
    assert "not in the cache" in _one_line_error(
        run_cli("snapshot", "org/ds", "--repo-type", "dataset", "--cache-dir", str(tmp_path), env=offline))
    assert len(hub.app.log) == before  # offline means no request at all


def test_offline_snapshot_reports_its_size_and_download_says_offline(hub, tmp_path):
    args = ("snapshot", "org/tiny", "--include", "*.json", "--include", "tokenizer/*", "--cache-dir", str(tmp_path),
            "--json")
    online = json.loads(run_cli(*args, endpoint=hub.url).stdout)
    offline = {"HF_HUB_OFFLINE": "1"}
    got = json.loads(run_cli(*args, env=offline).stdout)
    assert got["offline"] and got["files"] == 2 and got["bytes_total"] == online["bytes_total"] > 0
    shutil.rmtree(tmp_path / "models--org--tiny" / "trees")  # no listing: the files' own sizes
    assert json.loads(run_cli(*args, env=offline).stdout)["bytes_total"] == online["bytes_total"]
    line = _one_line_error(run_cli("download", "org/tiny", "README.md", "--cache-dir", str(tmp_path), env=offline))
    assert "README.md of org/tiny@main is not in the cache" in line and line.endswith(" (offline mode is on)")


def test_one_of_a_thing_is_singular(hub, tmp_path):
    lock = tmp_path / "one.lock"
    r = run_cli("lock", "org/tiny", "--include", "config.json", "-o", str(lock), "--cache-dir", str(tmp_path),
                endpoint=hub.url)
    assert r.returncode == 0 and f": 1 file, {len(MODEL_MAIN['config.json'])} B" in r.stdout, r.stdout + r.stderr
    r = run_cli("snapshot", "--lock", str(lock), "--cache-dir", str(tmp_path), endpoint=hub.url)
    assert r.returncode == 0 and "intact: 1 file in 1 repo (1 snapshot), 1 blob," in r.stderr, r.stderr
    r = run_cli("verify", "--jobs", "1", "--allow-partial", "--cache-dir", str(tmp_path), env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0 and ": 1 file in 1 repo (1 snapshot), 1 blob," in r.stdout, r.stdout
    assert r.stdout.rstrip().endswith("1 job)")
    r = run_cli("rm", "org/tiny", "--dry-run", "--cache-dir", str(tmp_path))
    assert r.returncode == 0 and "delete 1 item," in r.stdout, r.stdout
    assert [counted(n, "repo") for n in (0, 1, 2)] == ["0 repos", "1 repo", "2 repos"]


def test_unreachable_endpoint_falls_back_to_a_complete_cached_snapshot(hub, tmp_path):
    online = run_cli("snapshot", "org/tiny", "--cache-dir", str(tmp_path), endpoint=hub.url)
    r = run_cli("snapshot", "org/tiny", "--cache-dir", str(tmp_path), endpoint="http://127.0.0.1:9")
    assert r.returncode == 0, r.stderr
    assert r.stdout == online.stdout


def test_without_symlinks_the_layout_matches_huggingface_hub(hub, tmp_path):
    env = {"HF_HUB_DISABLE_SYMLINKS": "1", "HF_HUB_DISABLE_SYMLINKS_WARNING": "1"}
    r = run_cli("snapshot", "org/tiny", "--cache-dir", str(tmp_path / "ours"), endpoint=hub.url, env=env)
    assert r.returncode == 0, r.stderr
    theirs = str(tmp_path / "theirs")
    script = f"from huggingface_hub import snapshot_download; snapshot_download('org/tiny', cache_dir={theirs!r})"
    import os

    p = subprocess.run([sys.executable, "-c", script], env={**os.environ, **env, "HF_ENDPOINT": hub.url},
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    ours = cache_tree(tmp_path / "ours")
    assert ours == cache_tree(tmp_path / "theirs")
    assert not any(v[0] == "link" for v in ours.values())


@pytest.mark.parametrize("path", [
    "/org/tiny/resolve/main/../../../../etc/passwd",
    "/org/tiny/resolve/main/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/org/tiny/resolve/main/..%2f..%2f..%2fetc%2fpasswd",
    "/org/tiny/resolve/main//etc/passwd",
    "/api/models/org/tiny/tree/main/..%2f..",
])
def test_serve_refuses_path_traversal(hub, path):
    r = requests.get(hub.url + path, timeout=60)
    assert r.status_code == 404
    assert "root:" not in r.text


def test_server_names_from_a_hostile_listing_are_refused():
    for bad in ("../x", "/etc/passwd", "a/../../b", "a\\b", "a\0b", "", "a//b", "./a", "C:/x"):
        with pytest.raises(UnsafePath):
            safe_relpath(bad)
    assert safe_relpath("a/b.c/d") == "a/b.c/d"


def test_hashes_match_git_and_sha256():
    assert hash_bytes(b"hello\n", "git-sha1") == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert hash_bytes(b"", "sha256") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_serve_command_serves_folders_and_caches(tmp_path):
    write_files(tmp_path / "src", {"config.json": "{}\n", "w.safetensors": b"\0" * 100})
    proc = subprocess.Popen([sys.executable, "-m", "hfcache", "serve", "--port", "0",
                             "--repo", f"org/x={tmp_path / 'src'}", "--repo", f"dataset:org/y@v2={tmp_path / 'src'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        info = requests.get(f"{url}/api/models/org/x/revision/main", timeout=60).json()  # a bound: it starts now
        assert info["id"] == "org/x" and len(info["sha"]) == 40
        head = requests.head(f"{url}/datasets/org/y/resolve/v2/w.safetensors", timeout=60)
        assert head.headers["X-Repo-Commit"] == info["sha"]  # same content, same commit
        assert head.headers["X-Linked-Size"] == "100"
        r = run_cli("snapshot", "org/x", "--cache-dir", str(tmp_path / "c"), endpoint=url)
        assert r.returncode == 0, r.stderr
        # ...and a cache can be served in turn.
        proc2 = subprocess.Popen([sys.executable, "-m", "hfcache", "serve", "--port", "0", "--cache-dir",
                                  str(tmp_path / "c")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            url2 = proc2.stdout.readline().strip()
            r2 = run_cli("snapshot", "org/x", "--cache-dir", str(tmp_path / "c2"), endpoint=url2)
            assert r2.returncode == 0, r2.stderr
            assert cache_tree(tmp_path / "c") == cache_tree(tmp_path / "c2")
        finally:
            proc2.terminate()
            proc2.wait(60)
    finally:
        proc.terminate()
        proc.wait(60)
