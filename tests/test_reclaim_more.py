"""Issue 12: reclaim keeps downloads in progress and re-checks its plan when acting; a typo does not fail CI;
what a new user hit (repo specs, wording, exit codes, help, completion, waiting for a lock, `python -m`)."""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from filelock import FileLock
from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download

from hfcache.cache.paths import is_partial_name
from hfcache.cache.roots import resolve_roots
from hfcache.scan import scan
from hfcache.scan.prune import plan_prune
from hfcache.scan.reclaim_run import execute
from tests.conftest import MODEL_MAIN, det_bytes, run_cli

DAY = 86400
TINY = "models--org--tiny"


@pytest.fixture(scope="module")
def base_home(hub, tmp_path_factory) -> Path:
    """An HF_HOME whose hub cache huggingface_hub wrote: org/tiny main and v1, and refs/pr/1's commit (detached)."""
    home = tmp_path_factory.mktemp("reclaim_home")
    cache = home / "hub"
    snapshot_download("org/tiny", cache_dir=cache, endpoint=hub.url)
    snapshot_download("org/tiny", revision="v1", cache_dir=cache, endpoint=hub.url)
    snapshot_download("org/tiny", revision=hub.commit("org/tiny", "refs/pr/1"), cache_dir=cache, endpoint=hub.url)
    return home


@pytest.fixture
def home(base_home, tmp_path) -> Path:
    dst = tmp_path / "home"
    shutil.copytree(base_home, dst, symlinks=True)
    return dst


def cli(home: Path, *args: str, endpoint: str | None = None):
    return run_cli(*args, env={"HF_HOME": str(home)}, endpoint=endpoint)


def prune(home: Path) -> dict:
    r = cli(home, "prune", "--yes", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def age(*paths: Path, days: float = 2) -> None:
    t = time.time() - days * DAY
    for p in paths:
        os.utime(p, (t, t))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


# -- partial downloads ---------------------------------------------------------------------------------------------
def test_one_predicate_names_every_partial_file():
    for name in (f"{'a' * 64}.incomplete", f"{'a' * 64}.0123abcd.incomplete", f"{'a' * 64}.incomplete.parts",
                 f"{'a' * 64}.parts-tmp.incomplete", f"{'a' * 40}.incomplete.parts.tmp"):
        assert is_partial_name(name), name
    for name in ("a" * 64, "a" * 40, "incomplete", "x.incompleted", f"{'a' * 64}.lock"):
        assert not is_partial_name(name), name


def _plant_resumable(home: Path, hub) -> tuple[Path, Path, int]:
    """big.bin half-fetched by hfcache: the full-size partial and its progress record, as `partfile` writes them."""
    data = det_bytes(2_000_000, 2)  # MODEL_MAIN's big.bin
    assert data == MODEL_MAIN["big.bin"]
    etag = sha256(data)
    blobs = home / "hub" / TINY / "blobs"
    snap = home / "hub" / TINY / "snapshots" / hub.commit("org/tiny")
    (snap / "big.bin").unlink()
    (blobs / etag).unlink()
    half = 1_000_000
    partial, record = blobs / f"{etag}.incomplete", blobs / f"{etag}.incomplete.parts"
    partial.write_bytes(data[:half] + b"\0" * (len(data) - half))
    record.write_text(json.dumps({"etag": etag, "size": len(data), "parts": [[0, len(data), half]]}))
    return partial, record, half


def test_prune_keeps_a_download_in_progress_and_its_record(home, hub):
    """The record `<etag>.incomplete.parts` was listed as an orphan blob and deleted: the next run started from 0."""
    partial, record, half = _plant_resumable(home, hub)
    found = scan(resolve_roots(hf_home=home), detail=True)
    orphans = [p.path for g in found.problems if g.kind == "orphan_blob" for p in g.examples]
    assert str(record) not in orphans and str(partial) not in orphans
    incomplete = {p.path: p for g in found.problems if g.kind == "incomplete" for p in g.examples}
    assert set(incomplete) == {str(partial), str(record)} and all(p.fix is None for p in incomplete.values())

    done = prune(home)  # recent: a download under way
    assert partial.exists() and record.exists(), done["actions"]
    lock = home / "hub" / ".locks" / TINY / f"{partial.name.split('.')[0]}.lock"
    age(partial, record)
    held = FileLock(lock, timeout=0)  # old, but another process holds its lock: still in use
    held.acquire()
    try:
        listed = scan(resolve_roots(hf_home=home), detail=True)
        details = {p.path: p for g in listed.problems if g.kind == "incomplete" for p in g.examples}
        assert all(p.fix is None and "in use" in p.detail for p in details.values())
        done = prune(home)
    finally:
        held.release()
    assert partial.exists() and record.exists(), done["actions"]

    hub.app.log.clear()  # the next run resumes from the record: it asks only for the missing bytes
    r = cli(home, "download", "org/tiny", "big.bin", endpoint=hub.url)
    assert r.returncode == 0, r.stderr
    ranges = [q.range for q in hub.requests("big.bin") if q.method == "GET"]
    assert ranges and all(x and x.startswith(f"bytes={half}-") for x in ranges), ranges
    assert not partial.exists() and not record.exists()


def test_prune_removes_an_old_partial_and_its_record_once_no_one_holds_the_lock(home, hub):
    partial, record, _ = _plant_resumable(home, hub)
    age(partial, record)
    done = prune(home)
    kinds = {a["paths"][0]: a["kind"] for a in done["actions"]}
    assert kinds[str(partial)] == kinds[str(record)] == "leftover"  # not "blob"
    assert not partial.exists() and not record.exists() and not done["errors"]


# -- a plan acted on later -----------------------------------------------------------------------------------------
def test_what_changed_since_the_plan_is_left_alone_and_reported(home, hub):
    cache = home / "hub" / TINY
    blobs, main = cache / "blobs", cache / "snapshots" / hub.commit("org/tiny")
    relinked, busy, gone = (blobs / sha256(b"%d" % i * 100) for i in range(3))
    for i, p in enumerate((relinked, busy, gone)):
        p.write_bytes(b"%d" % i * 100)  # orphan blobs
    partial = blobs / f"{'c' * 64}.0123abcd.incomplete"
    partial.write_bytes(b"x" * 500)
    age(partial)
    detached = hub.commit("org/tiny", "refs/pr/1")
    plan = plan_prune(scan(resolve_roots(hf_home=home), detail=True))
    planned = {p for a in plan.actions for p in a.paths}
    assert {str(relinked), str(busy), str(gone), str(partial), str(cache / "snapshots" / detached)} <= planned

    # since the plan: a snapshot links one orphan, another's lock is held, the partial grew, a ref names
    # the detached revision again
    (main / "new.txt").symlink_to(f"../../blobs/{relinked.name}")
    with open(partial, "ab") as f:
        f.write(b"more")
    (cache / "refs" / "refs" / "pr").mkdir(parents=True)
    (cache / "refs" / "refs" / "pr" / "1").write_text(detached)
    lock_dir = home / "hub" / ".locks" / TINY
    lock_dir.mkdir(parents=True, exist_ok=True)
    held = FileLock(lock_dir / f"{busy.name}.lock", timeout=0)
    held.acquire()
    try:
        outcome = execute(plan, dry_run=False)
    finally:
        held.release()
    assert not outcome.errors, outcome.errors
    assert relinked.exists() and busy.exists() and partial.exists() and (cache / "snapshots" / detached).is_dir()
    assert not gone.exists()  # what did not change went
    skipped = "\n".join(outcome.skipped)
    for needle in ("a snapshot links to it now", "another process holds its lock", "changed since the plan",
                   "ref refs/pr/1 names it now"):
        assert needle in skipped, skipped
    assert (main / "new.txt").read_bytes() == b"0" * 100


# -- a typo must not fail CI ---------------------------------------------------------------------------------------
def _only_traces(cache: Path, commit: str) -> None:
    repo = cache / TINY
    assert (repo / "refs" / "main").read_text() == commit
    assert not (repo / "snapshots" / commit).exists()


def test_a_typo_leaves_what_huggingface_hub_leaves_verify_passes_and_prune_tidies(hub, tmp_path):
    commit = hub.commit("org/tiny")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    r = run_cli("download", "org/tiny", "confg.json", "--cache-dir", str(ours), endpoint=hub.url)
    assert r.returncode == 1 and "confg.json" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(Exception, match="confg"):
        hf_hub_download("org/tiny", "confg.json", cache_dir=theirs, endpoint=hub.url)
    for cache in (ours, theirs):
        _only_traces(cache, commit)
        assert (cache / TINY / ".no_exist" / commit / "confg.json").exists()
        v = run_cli("verify", "--cache-dir", str(cache))
        assert v.returncode == 0, v.stdout + v.stderr
        done = json.loads(run_cli("prune", "--cache-dir", str(cache), "--yes", "--json").stdout)
        assert not done["errors"] and [a["kind"] for a in done["actions"]] == ["repo"]  # nothing else in it
        assert not (cache / TINY).exists() and not (cache / ".locks" / TINY).exists()
        assert run_cli("verify", "--cache-dir", str(cache)).returncode == 0
        assert not scan_cache_dir(cache).warnings


def test_a_typo_beside_a_snapshot_loses_only_its_ref_and_markers(hub, tmp_path):
    ours = tmp_path / "ours"
    v1 = hub.commit("org/tiny", "v1")
    assert run_cli("download", "org/tiny@v1", "config.json", "--cache-dir", str(ours), endpoint=hub.url).returncode == 0
    assert run_cli("download", "org/tiny", "confg.json", "--cache-dir", str(ours), endpoint=hub.url).returncode == 1
    _only_traces(ours, hub.commit("org/tiny"))
    assert run_cli("verify", "--cache-dir", str(ours)).returncode == 0
    done = json.loads(run_cli("prune", "--cache-dir", str(ours), "--yes", "--json").stdout)
    assert [a["kind"] for a in done["actions"]] == ["leftover"] and not done["errors"]
    assert sorted(p.name for p in (ours / TINY / "refs").iterdir()) == ["v1"]
    assert not any((ours / TINY / ".no_exist").iterdir()) and (ours / TINY / "snapshots" / v1 / "config.json").exists()
    assert run_cli("verify", "--cache-dir", str(ours)).returncode == 0 and not scan_cache_dir(ours).warnings


def test_a_ref_to_nothing_at_all_is_still_damage(hub, tmp_path):
    refs = tmp_path / TINY / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("a" * 40)
    (tmp_path / TINY / "snapshots").mkdir()
    r = run_cli("verify", "--cache-dir", str(tmp_path))
    assert r.returncode == 1 and "dangling-ref" in r.stdout + r.stderr


def test_snapshot_include_matching_nothing_fails_and_prints_no_folder(hub, tmp_path):
    r = run_cli("snapshot", "org/tiny", "--include", "*.nothing", "--cache-dir", str(tmp_path), endpoint=hub.url)
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr.strip() == (f"hfcache: error: no files matched --include '*.nothing' in org/tiny@main "
                                f"({hub.commit('org/tiny')[:12]}): nothing fetched")
    assert run_cli("verify", "--cache-dir", str(tmp_path)).returncode == 0  # a ref and a listing: not damage
    ok = run_cli("snapshot", "org/tiny", "--include", "*.json", "--cache-dir", str(tmp_path), endpoint=hub.url)
    assert ok.returncode == 0 and Path(ok.stdout.strip().splitlines()[-1]).is_dir()


# -- what a new user hit -------------------------------------------------------------------------------------------
def test_type_colon_repo_works_everywhere_a_repo_is_given(hub, tmp_path):
    a = run_cli("snapshot", "dataset:org/ds", "--cache-dir", str(tmp_path), endpoint=hub.url)
    b = run_cli("snapshot", "org/ds", "--repo-type", "dataset", "--cache-dir", str(tmp_path), endpoint=hub.url)
    assert a.returncode == b.returncode == 0, a.stderr
    assert a.stdout.splitlines()[-1] == b.stdout.splitlines()[-1]
    assert "datasets--org--ds" in a.stdout
    d = run_cli("download", "dataset:org/ds@main", "data/test.csv", "--cache-dir", str(tmp_path), endpoint=hub.url)
    assert d.returncode == 0 and Path(d.stdout.strip()).read_text() == "a,b\n1,2\n"
    assert run_cli("verify", "dataset:org/ds", "--cache-dir", str(tmp_path)).returncode == 0
    clash = run_cli("snapshot", "dataset:org/ds", "--repo-type", "space", "--cache-dir", str(tmp_path),
                    endpoint=hub.url)
    assert clash.returncode == 2 and "disagree" in clash.stderr


def test_errors_name_the_cli_option_not_the_python_argument(tmp_path):
    r = run_cli("snapshot", "datasets/org/ds", "--cache-dir", str(tmp_path), endpoint="http://127.0.0.1:9")
    assert r.returncode == 2 and "--repo-type" in r.stderr and "`repo_type`" not in r.stderr, r.stderr


def test_relocate_hints_at_transformers_cache_only_when_it_is_set(hub, tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    assert run_cli("download", "org/tiny", "config.json", "--cache-dir", str(old / "hub"),
                   endpoint=hub.url).returncode == 0
    env = {k: "" for k in ("TRANSFORMERS_CACHE",)}
    r = run_cli("relocate", str(old), str(new), env=env)
    assert r.returncode == 0, r.stderr
    assert "TRANSFORMERS_CACHE" not in r.stdout + r.stderr


def test_verify_online_without_an_endpoint_is_a_failure_not_a_usage_error(hub, tmp_path):
    c = tmp_path / "c"
    assert run_cli("download", "org/tiny", "config.json", "--cache-dir", str(c), endpoint=hub.url).returncode == 0
    r = run_cli("verify", "--online", "--cache-dir", str(c), endpoint="http://127.0.0.1:9")
    assert r.returncode == 1 and "cannot reach" in r.stderr, r.stderr


def _run_in_a_terminal(args: list[str], answer: bytes, env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal (stdin, stdout, stderr: the prompt goes to one or the other, by click's
    version); send `answer` once it asks."""
    import pty

    leader, follower = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "hfcache", *args], stdin=follower, stdout=follower,
                         stderr=follower, env=env)
    os.close(follower)
    out, sent, deadline = b"", False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            if not sent and b"Proceed?" in out:
                os.write(leader, answer)
                sent = True
            if p.poll() is not None and not ready:
                break
        code = p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(leader)
        if p.poll() is None:
            p.kill()
    assert sent, out
    return code, out.decode(errors="replace")


def test_declining_at_the_prompt_is_not_a_failure(home):
    before = sorted(p.name for p in (home / "hub").iterdir())
    env = {**os.environ, "HF_HOME": str(home)}
    code, out = _run_in_a_terminal(["rm", "org/tiny"], b"n\n", env)
    assert code == 0 and "nothing changed" in out, out
    assert sorted(p.name for p in (home / "hub").iterdir()) == before


@pytest.mark.parametrize("command", ["scan", "rm", "prune", "dedup", "verify", "download", "snapshot", "lock"])
def test_flags_show_no_value_in_the_help(command):
    r = run_cli(command, "--help", env={"COLUMNS": "200"})
    assert r.returncode == 0
    lines = [ln for ln in r.stdout.splitlines() if any(f in ln for f in ("--json", "--yes", "--dry-run", "--online"))]
    assert lines and not [ln for ln in lines if "<bool>" in ln], lines


def test_shell_completion_is_offered():
    r = run_cli("--help", env={"COLUMNS": "200"})
    assert "--install-completion" in r.stdout and "--show-completion" in r.stdout
    shown = run_cli("--show-completion", "bash")
    assert shown.returncode == 0 and "_HFCACHE_COMPLETE=complete_bash" in shown.stdout, shown.stdout
    assert "complete -o default -F _hfcache_completion hfcache" in shown.stdout


def test_waiting_for_another_process_says_so(hub, tmp_path):
    data = MODEL_MAIN["config.json"].encode()
    lock = tmp_path / ".locks" / TINY / f"{git_sha1(data)}.lock"
    lock.parent.mkdir(parents=True)
    held = FileLock(lock, timeout=0)
    held.acquire()
    env = {**os.environ, "HF_ENDPOINT": hub.url}
    p = subprocess.Popen([sys.executable, "-m", "hfcache", "download", "org/tiny", "config.json", "--cache-dir",
                          str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    said = threading.Event()

    def read() -> None:
        for line in p.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if "waiting for config.json: another process is downloading it" in line:
                said.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert said.wait(60), lines
        assert p.poll() is None  # still waiting: the lock is ours
    finally:
        held.release()
    out, _ = p.communicate(timeout=60)
    reader.join(10)
    assert p.returncode == 0 and out.strip().endswith("config.json"), lines


def test_python_m_hfcache_works_from_the_clones_parent_folder(tmp_path):
    """A clone named `hfcache/` in the current folder is an importable namespace; it must not shadow the package."""
    (tmp_path / "hfcache" / "hfcache").mkdir(parents=True)
    (tmp_path / "hfcache" / "README.md").write_text("a checkout\n")
    p = subprocess.run([sys.executable, "-m", "hfcache", "--version"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("hfcache "), p.stderr

