"""`scan`, `rm`, `prune`, `dedup`: checked against huggingface_hub (its scan, its offline loader) and the real
`datasets` library, on caches huggingface_hub itself wrote."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from filelock import FileLock
from huggingface_hub import scan_cache_dir, snapshot_download

from hfcache.cache.layout import RepoRef
from hfcache.cache.roots import resolve_roots
from hfcache.scan import scan
from tests.conftest import build_hub, run_cli

DAY = 86400


# -- fixtures and helpers ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = build_hub(tmp_path_factory.mktemp("scanhub"))
    yield h
    h.server.stop()


@pytest.fixture(scope="module")
def base_home(hub, tmp_path_factory) -> Path:
    """An HF_HOME whose hub cache huggingface_hub wrote: org/tiny (main, tag v1, and the refs/pr/1 commit fetched
    by sha, so detached), bert-tiny, and the dataset org/ds."""
    home = tmp_path_factory.mktemp("base_home")
    cache = home / "hub"
    snapshot_download("org/tiny", cache_dir=cache, endpoint=hub.url)
    snapshot_download("org/tiny", revision="v1", cache_dir=cache, endpoint=hub.url)
    snapshot_download("org/tiny", revision=hub.commit("org/tiny", "refs/pr/1"), cache_dir=cache, endpoint=hub.url)
    snapshot_download("bert-tiny", cache_dir=cache, endpoint=hub.url)
    snapshot_download("org/ds", repo_type="dataset", cache_dir=cache, endpoint=hub.url)
    return home


@pytest.fixture
def home(base_home, tmp_path) -> Path:
    dst = tmp_path / "home"
    shutil.copytree(base_home, dst, symlinks=True)
    return dst


def scan_home(home: Path, detail: bool = False, **kw):
    return scan(resolve_roots(hf_home=home), detail=detail, **kw)


def disk_bytes(root: Path) -> int:
    """What the disk holds under `root`: regular files, each inode once."""
    seen, total = set(), 0
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            st = os.lstat(os.path.join(dirpath, n))
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def cli(home: Path, *args: str):
    return run_cli(*args, env={"HF_HOME": str(home)})


def one_line_error(r) -> str:
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hfcache: error: "), r.stderr
    return lines[0]


def snapshot_dir(home: Path, repo: str, commit: str, repo_type: str = "model") -> Path:
    return home / "hub" / RepoRef(repo, repo_type).folder_name / "snapshots" / commit


def expected_files(hub, repo_id: str, revision: str, repo_type: str = "model") -> dict[str, str]:
    src = hub.sources[(RepoRef(repo_id, repo_type), revision)]
    return {p.relative_to(src).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in src.rglob("*") if p.is_file()}


LOADER = """
import hashlib, json, sys
from huggingface_hub import hf_hub_download
bad = []
for repo_id, repo_type, rev, name, digest in json.loads(sys.argv[1]):
    try:
        p = hf_hub_download(repo_id, name, repo_type=repo_type, revision=rev, cache_dir=sys.argv[2])
        if hashlib.sha256(open(p, "rb").read()).hexdigest() != digest:
            bad.append([rev, name, "bytes differ"])
    except Exception as e:
        bad.append([rev, name, type(e).__name__])
print(json.dumps(bad))
"""


def assert_loads_offline(home: Path, hub, revisions: list[tuple[str, str, str]]) -> None:
    """huggingface_hub, offline, in a fresh process, finds every file of these revisions with the right bytes.
    Each item: (repo_id, repo_type, revision as the user names it)."""
    todo = []
    for repo_id, repo_type, rev in revisions:
        source_rev = rev
        for (ref, r), commit in hub.commits.items():
            if ref == RepoRef(repo_id, repo_type) and commit == rev:
                source_rev = r
        for name, digest in expected_files(hub, repo_id, source_rev, repo_type).items():
            todo.append([repo_id, repo_type, rev, name, digest])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-c", LOADER, json.dumps(todo), str(home / "hub")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == []
    assert len(todo) > 0


def problems(result, kind: str):
    return [p for g in result.problems if g.kind == kind for p in g.examples]


# -- agreement with huggingface_hub --------------------------------------------------------------------------------
def test_sizes_and_counts_agree_with_scan_cache_dir(home):
    ours, theirs = scan_home(home), scan_cache_dir(home / "hub")
    assert not theirs.warnings
    assert ours.hub.size_on_disk == theirs.size_on_disk
    assert len(ours.hub.repos) == len(theirs.repos) == 3
    by_id = {(r.repo_type, r.repo_id): r for r in theirs.repos}
    for repo in ours.hub.repos:
        other = by_id[(repo.repo_type, repo.repo_id)]
        assert (repo.size_on_disk, repo.nb_files, repo.last_accessed, repo.last_modified) == (
            other.size_on_disk, other.nb_files, other.last_accessed, other.last_modified)
        assert {r.commit: (r.size_on_disk, r.nb_files, set(r.refs), r.last_modified) for r in repo.revisions} == {
            r.commit_hash: (r.size_on_disk, r.nb_files, set(r.refs), r.last_modified) for r in other.revisions}
    tiny = next(r for r in ours.hub.repos if r.repo_id == "org/tiny")
    assert sorted(r.refs for r in tiny.revisions) == [(), ("main",), ("v1",)]
    # the command agrees too, with every size an integer of bytes
    out = json.loads(cli(home, "scan", "--json").stdout)
    assert out["hub"]["size_on_disk"] == theirs.size_on_disk and out["hub"]["repos"] == 3
    assert {(r["repo_type"], r["repo_id"]): r["size_on_disk"] for r in out["repos"]} == {
        (r.repo_type, r.repo_id): r.size_on_disk for r in theirs.repos}
    assert all(isinstance(a["bytes"], int) for a in out["areas"])


def _into_shared_store(home: Path, hub, repo_folder: str, link: Path) -> Path:
    """Move the blob `link` points to into the 2.x shared store, as huggingface_hub publishes Xet downloads."""
    cache = home / "hub"
    blob = (link.parent / os.readlink(link)).resolve()
    xet = hashlib.sha256(f"xet:{blob.name}".encode()).hexdigest()
    payload = cache / "blobs" / xet[:2] / xet
    payload.parent.mkdir(parents=True, exist_ok=True)
    (cache / "blobs" / ".huggingface-shared-blobs").write_text("1\n")
    os.replace(blob, payload)
    os.symlink(f"../../blobs/{xet[:2]}/{xet}", blob)
    with open(f"{payload}.refs", "a") as f:
        f.write(f"{repo_folder}/blobs/{blob.name}\n")
    return payload


def test_shared_store_and_hard_links_count_once(home, hub):
    """The 2.x shared store (repo blob -> ../../blobs/<xx>/<xet hash>) and hard links: bytes counted once."""
    cache = home / "hub"
    _into_shared_store(home, hub, "models--org--tiny", _link(home, hub, "big.bin"))
    ours, theirs = scan_home(home), scan_cache_dir(cache)
    assert not theirs.warnings and not problems(ours, "dangling_link") and not problems(ours, "orphan_blob")
    assert ours.hub.size_on_disk == theirs.size_on_disk
    assert {r.repo_id: r.size_on_disk for r in ours.hub.repos} == {r.repo_id: r.size_on_disk for r in theirs.repos}
    assert ours.hub.shared_store_files == 1 and ours.hub.shared_store_bytes == 2_000_000
    # a second dataset repo whose blobs are hard links of the first: huggingface_hub counts them twice, we once
    ds = cache / "datasets--org--ds"
    shutil.copytree(ds, cache / "datasets--org--ds2", symlinks=True, copy_function=os.link)
    ours, theirs = scan_home(home), scan_cache_dir(cache)
    linked = sum(p.stat().st_size for p in (ds / "blobs").iterdir())
    assert theirs.size_on_disk - ours.hub.size_on_disk == linked > 50_000
    assert not problems(ours, "duplicate")  # already one inode: nothing for dedup to do


def test_rm_and_prune_clean_the_shared_store(home, hub):
    parquet = snapshot_dir(home, "org/ds", hub.commit("org/ds", "main", "dataset"), "dataset") / "data" / \
        "train-00000-of-00001.parquet"
    payload = _into_shared_store(home, hub, "datasets--org--ds", parquet)
    stray = home / "hub" / "blobs" / "ab" / ("ab" + "0" * 62)  # a store file no repo links to any more
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"s" * 300)
    Path(f"{stray}.refs").write_text("")  # its manifest: the last link went
    unknown = home / "hub" / "blobs" / "ab" / ("ab" + "1" * 62)  # no manifest: huggingface_hub's sweep keeps it
    unknown.write_bytes(b"u" * 200)
    result = scan_home(home)
    assert [(p.path, p.fix) for p in problems(result, "orphan_blob")] == [(str(stray), "prune"), (str(unknown), None)]
    assert result.hub.size_on_disk == scan_cache_dir(home / "hub").size_on_disk
    before = disk_bytes(home)
    done = json.loads(cli(home, "rm", "dataset:org/ds", "--yes", "--json").stdout)
    assert "store_blob" in {a["kind"] for a in done["actions"]}
    assert not payload.exists() and not Path(f"{payload}.refs").exists()
    assert done["freed_bytes"] == before - disk_bytes(home) > 50_000
    before = disk_bytes(home)
    done = json.loads(cli(home, "prune", "--yes", "--json").stdout)
    assert not stray.exists() and done["freed_bytes"] == before - disk_bytes(home) > 300
    assert unknown.exists()  # the sweep's rule: missing metadata is never grounds for deletion
    assert not scan_cache_dir(home / "hub").warnings
    assert_loads_offline(home, hub, [("org/tiny", "model", "main"), ("bert-tiny", "model", "main")])


# -- problems ------------------------------------------------------------------------------------------------------
def _link(home, hub, name, rev="main") -> Path:
    return snapshot_dir(home, "org/tiny", hub.commit("org/tiny", rev)) / name


def plant_dangling(home, hub, tmp_path):
    link = _link(home, hub, "config.json")
    (link.parent / os.readlink(link)).unlink()
    return "dangling_link", str(link), len(b'{"model_type": "bert", "hidden_size": 32}\n')


def plant_outside(home, hub, tmp_path):
    link = _link(home, hub, "README.md")
    (tmp_path / "outside.txt").write_text("elsewhere\n")
    link.unlink()
    link.symlink_to(tmp_path / "outside.txt")
    return "link_outside_cache", str(link), 10


def plant_orphan(home, hub, tmp_path):
    data = b"o" * 1234
    path = home / "hub" / "models--org--tiny" / "blobs" / hashlib.sha256(data).hexdigest()
    path.write_bytes(data)
    return "orphan_blob", str(path), 1234


def plant_incomplete(home, hub, tmp_path):
    blobs = home / "hub" / "models--org--tiny" / "blobs"
    old = blobs / f"{'c' * 64}.0123abcd.incomplete"
    old.write_bytes(b"x" * 500)
    os.utime(old, (time.time() - 2 * DAY, time.time() - 2 * DAY))
    (blobs / f"{'d' * 64}.4567abcd.incomplete").write_bytes(b"y" * 7)  # a download running now
    return "incomplete", str(old), 500


def plant_stale_lock(home, hub, tmp_path):
    gone = home / "hub" / ".locks" / "models--org--gone"
    gone.mkdir(parents=True)
    (gone / f"{'e' * 64}.lock").touch()
    return "stale_lock", str(gone), 0


def plant_missing_snapshot(home, hub, tmp_path):
    ref = home / "hub" / "models--org--tiny" / "refs" / "dev"
    ref.write_text("a" * 40)
    return "missing_snapshot", str(ref), 0


def plant_lacking(home, hub, tmp_path):
    _link(home, hub, "nested/deep/dir/notes.txt").unlink()
    return "snapshot_lacks_files", str(snapshot_dir(home, "org/tiny", hub.commit("org/tiny"))), 5


def plant_duplicate_repo(home, hub, tmp_path):
    cache = home / "hub"
    shutil.copytree(cache / "models--org--tiny", cache / "models--org--tiny2", symlinks=True)
    return "duplicate", str(cache / "models--org--tiny2" / "blobs"), None


def plant_copy(home, hub, tmp_path):
    link = _link(home, hub, "big.bin")
    data = link.read_bytes()
    link.unlink()
    link.write_bytes(data)
    return "duplicate", str(link), 2_000_000


def plant_orphan_tree(home, hub, tmp_path):
    path = home / "hub" / "models--org--tiny" / "trees" / f"{'b' * 40}.json"
    path.write_text('{"format_version": 1, "files": {}}')
    return "orphan_metadata", str(path), path.stat().st_size


def plant_not_a_repo(home, hub, tmp_path):
    (home / "hub" / "not-a-repo").mkdir()
    return "malformed", str(home / "hub" / "not-a-repo"), 0


PLANTERS = [plant_dangling, plant_outside, plant_orphan, plant_incomplete, plant_stale_lock, plant_missing_snapshot,
            plant_lacking, plant_duplicate_repo, plant_copy, plant_orphan_tree, plant_not_a_repo]


@pytest.mark.parametrize("planter", PLANTERS, ids=[p.__name__[6:] for p in PLANTERS])
def test_each_problem_is_found_when_planted(home, hub, tmp_path, planter):
    before = scan_home(home, detail=True)
    kind, path, nbytes = planter(home, hub, tmp_path)
    if kind != "stale_lock":
        assert not problems(before, kind)
    found = [p for p in problems(scan_home(home, detail=True), kind) if p.path.startswith(path)]
    assert found, f"{kind} at {path} not reported"
    if nbytes is not None:
        assert found[0].bytes == nbytes
    if kind == "incomplete":
        assert found[0].age >= 2 * DAY - 60 and found[0].fix == "prune"
        fresh = [p for p in problems(scan_home(home), kind) if p.path.endswith("4567abcd.incomplete")]
        assert fresh and fresh[0].fix is None  # a running download is left alone
    if kind == "duplicate" and planter is plant_duplicate_repo:
        saved = sum(p.bytes for p in found)
        assert saved == 2_000_000 + 300_000 + 1000  # big.bin, model.safetensors (main and v1): the LFS blobs


# -- the command's outputs -----------------------------------------------------------------------------------------
def test_scan_command_outputs(home, tmp_path):
    out = json.loads(cli(home, "scan", "--json").stdout)
    assert [r["repo_id"] for r in out["repos"]] == ["org/tiny", "org/ds", "bert-tiny"]  # by size, biggest first
    assert [r["repo_id"] for r in json.loads(cli(home, "scan", "--json", "--filter", "type=dataset").stdout)[
        "repos"]] == ["org/ds"]
    assert [r["repo_id"] for r in json.loads(cli(home, "scan", "--json", "--filter", "size>1MB").stdout)[
        "repos"]] == ["org/tiny"]
    named = json.loads(cli(home, "scan", "--json", "--sort", "name", "--limit", "2").stdout)["repos"]
    assert [r["repo_id"] for r in named] == ["org/ds", "bert-tiny"]  # dataset/… sorts before model/…
    revs = json.loads(cli(home, "scan", "--json", "--revisions", "--filter", "refs=v1").stdout)["revisions"]
    assert [r["refs"] for r in revs] == [["v1"]]
    assert json.loads(cli(home, "scan", "--json", "--filter", "accessed>30d").stdout)["repos"] == []
    plant_stale_lock(home, None, tmp_path)  # a leftover for the report to show
    r = cli(home, "scan", "--html", str(tmp_path / "report.html"))
    assert r.returncode == 0 and "Hub cache" in r.stdout and "model/org/tiny" in r.stdout
    page = (tmp_path / "report.html").read_text()
    assert "<svg" in page and "model/org/tiny" in page and "stale_lock" in page
    assert "src=" not in page and "href=" not in page and "<script" not in page and "@import" not in page
    assert "invalid filter" in one_line_error(cli(home, "scan", "--filter", "size~1GB"))
    assert "invalid size" in one_line_error(cli(home, "scan", "--filter", "size>1XB"))
    assert "no such folder" in one_line_error(cli(home, "scan", "--cache-dir", str(tmp_path / "nope")))
    assert "invalid duration" in one_line_error(cli(home, "prune", "--older-than", "3parsecs"))


# -- reclaiming ----------------------------------------------------------------------------------------------------
def test_prune_frees_what_it_planned_and_breaks_no_snapshot(home, hub):
    plant_orphan(home, hub, None)
    plant_incomplete(home, hub, None)
    plant_orphan_tree(home, hub, None)
    lock = home / "hub" / ".locks" / "models--org--tiny" / f"{'f' * 64}.lock"
    lock.touch()
    os.utime(lock, (time.time() - DAY, time.time() - DAY))
    estimate = scan_home(home).reclaimable.prune
    before = disk_bytes(home)

    dry = cli(home, "prune", "--dry-run", "--json")
    plan = json.loads(dry.stdout)
    assert dry.returncode == 0 and plan["dry_run"] and plan["planned_bytes"] == estimate > 1234 + 500
    assert disk_bytes(home) == before
    refused = cli(home, "prune")  # no --yes and no terminal: the plan, an error line, nothing changed
    assert "nothing changed; pass --yes" in one_line_error(refused) and "prune plan" in refused.stdout
    assert disk_bytes(home) == before

    done = json.loads(cli(home, "prune", "--yes", "--json").stdout)
    assert done["executed"] and not done["errors"] and done["freed_bytes"] == plan["planned_bytes"]
    assert before - disk_bytes(home) == plan["planned_bytes"]
    after = scan_home(home)
    assert not any(p.fix == "prune" for g in after.problems for p in g.examples)
    assert not any(r.detached for repo in after.hub.repos for r in repo.revisions)
    assert not scan_cache_dir(home / "hub").warnings
    assert not lock.exists() and not locks_without_blob(home)  # locks of cached blobs stay, as huggingface_hub's do
    assert_loads_offline(home, hub, [("org/tiny", "model", "main"), ("org/tiny", "model", "v1"),
                                     ("bert-tiny", "model", "main"), ("org/ds", "dataset", "main")])
    assert json.loads(cli(home, "prune", "--yes", "--json").stdout)["actions"] == []


def test_rm_revision_and_repo(home, hub):
    v1 = hub.commit("org/tiny", "v1")
    before = disk_bytes(home)
    plan = json.loads(cli(home, "rm", "org/tiny@v1", "dataset:org/ds", "--dry-run", "--json").stdout)
    assert disk_bytes(home) == before and {a["kind"] for a in plan["actions"]} == {"repo", "revision", "blob"}
    done = json.loads(cli(home, "rm", "org/tiny@v1", "dataset:org/ds", "--yes", "--json").stdout)
    assert done["freed_bytes"] == plan["planned_bytes"] == before - disk_bytes(home)
    tiny = home / "hub" / "models--org--tiny"
    assert not (tiny / "snapshots" / v1).exists() and not (tiny / "refs" / "v1").exists()
    assert not (tiny / "trees" / f"{v1}.json").exists()
    assert not (home / "hub" / "datasets--org--ds").exists()
    assert not (home / "hub" / ".locks" / "datasets--org--ds").exists()
    assert not scan_cache_dir(home / "hub").warnings
    assert_loads_offline(home, hub, [("org/tiny", "model", "main"), ("bert-tiny", "model", "main"),
                                     ("org/tiny", "model", hub.commit("org/tiny", "refs/pr/1"))])
    assert "not in the cache" in one_line_error(cli(home, "rm", "org/nope", "--yes"))
    assert "revision 'v9'" in one_line_error(cli(home, "rm", "org/tiny@v9", "--yes"))
    same = cli(home, "rm", "model/bert-tiny", "--dry-run")  # hf cache ls spelling
    assert same.returncode == 0 and "model/bert-tiny" in same.stdout


def test_rm_keeps_blobs_a_kept_snapshot_uses(home, hub):
    pr = hub.commit("org/tiny", "refs/pr/1")
    blobs = home / "hub" / "models--org--tiny" / "blobs"
    shared = {os.path.basename(os.readlink(snapshot_dir(home, "org/tiny", pr) / n)) for n in ("big.bin", "README.md")}
    before = disk_bytes(home)
    done = json.loads(cli(home, "rm", f"org/tiny@{pr[:10]}", "--yes", "--json").stdout)
    assert done["freed_bytes"] == before - disk_bytes(home) > 0
    assert [a["kind"] for a in done["actions"]] == ["revision", "blob"]  # only its own config.json blob
    assert all((blobs / b).exists() for b in shared)
    assert_loads_offline(home, hub, [("org/tiny", "model", "main"), ("org/tiny", "model", "v1")])


def locks_without_blob(home: Path) -> list[str]:
    cache = home / "hub"
    return sorted(f"{p.parent.name}/{p.name}" for p in (cache / ".locks").rglob("*.lock")
                  if not (cache / p.parent.name / "blobs" / p.name.removesuffix(".lock")).exists())


def test_rm_removes_the_locks_of_blobs_it_deletes(home, hub):
    locks = home / "hub" / ".locks"
    before = sorted(locks.rglob("*.lock"))
    assert before and not locks_without_blob(home)  # huggingface_hub left one per blob
    busy = next((locks / "datasets--org--ds").glob("*.lock"))
    held = FileLock(busy, timeout=0)  # another process downloading that blob now
    held.acquire()
    try:
        done = json.loads(cli(home, "rm", "org/tiny@v1", "dataset:org/ds", "--yes", "--json").stdout)
    finally:
        held.release()
    assert done["executed"] and not done["errors"]
    # a repo with a download under way (a held lock) is left whole and reported; the rest of the plan runs
    assert [s for s in done["skipped"] if "dataset/org/ds" in s and "another process holds" in s], done["skipped"]
    assert (home / "hub" / "datasets--org--ds").is_dir() and busy.exists() and not locks_without_blob(home)
    assert len(list(locks.rglob("*.lock"))) < len(before) - 1  # v1's own blobs took their locks along
    again = json.loads(cli(home, "rm", "dataset:org/ds", "--yes", "--json").stdout)  # the download is over
    assert again["executed"] and not again["errors"] and not again["skipped"]
    assert not (home / "hub" / "datasets--org--ds").exists() and not (locks / "datasets--org--ds").exists()
    r = cli(home, "verify", "org/tiny")
    assert r.returncode == 0 and "stale-lock" not in r.stdout, r.stdout + r.stderr


def test_prune_removes_locks_whose_blob_is_gone_unless_held(home, hub):
    d = home / "hub" / ".locks" / "models--org--tiny"
    gone, busy = d / f"{'a' * 64}.lock", d / f"{'b' * 64}.lock"  # fresh, as a blob deleted by hand leaves them
    gone.touch()
    busy.touch()
    with_blob = [p for p in (home / "hub" / ".locks").rglob("*.lock") if p not in (gone, busy)]
    held = FileLock(busy, timeout=0)
    held.acquire()
    try:
        plan = json.loads(cli(home, "prune", "--dry-run", "--json").stdout)
        [leftover] = [a for a in plan["actions"] if a["kind"] == "leftover"]
        assert leftover["paths"] == [str(gone)] and leftover["bytes"] == 0 and "lock" in leftover["label"]
        done = json.loads(cli(home, "prune", "--yes", "--json").stdout)
    finally:
        held.release()
    assert done["executed"] and not done["errors"]
    assert not gone.exists() and busy.exists()
    assert locks_without_blob(home) == [f"models--org--tiny/{busy.name}"]
    cache = home / "hub"
    assert all(p.exists() for p in with_blob if (cache / p.parent.name / "blobs" / p.stem).exists())


def test_prune_older_than_removes_what_nobody_used(home, hub):
    old = time.time() - 40 * DAY
    for p in (home / "hub" / "models--bert-tiny" / "blobs").iterdir():
        os.utime(p, (old, p.stat().st_mtime))
    downloads = home / "datasets" / "downloads"
    downloads.mkdir(parents=True)
    name = hashlib.sha256(b"https://example.com/data.csv").hexdigest()
    (downloads / name).write_bytes(b"a,b\n" * 100)
    (downloads / f"{name}.json").write_text('{"url": "https://example.com/data.csv", "etag": null}')
    os.utime(downloads / name, (old, old))
    plain = json.loads(cli(home, "prune", "--dry-run", "--json").stdout)
    assert not any(a["kind"] in ("repo", "download") for a in plain["actions"])
    assert not any(a["kind"] == "revision" and "bert-tiny" in a["label"] for a in plain["actions"])
    before = disk_bytes(home)
    done = json.loads(cli(home, "prune", "--older-than", "30d", "--yes", "--json").stdout)
    assert done["freed_bytes"] == before - disk_bytes(home)
    assert not (home / "hub" / "models--bert-tiny").exists()
    assert not (downloads / name).exists() and not (downloads / f"{name}.json").exists()
    assert (home / "hub" / "models--org--tiny" / "refs" / "main").exists()
    assert_loads_offline(home, hub, [("org/tiny", "model", "main"), ("org/ds", "dataset", "main")])


def _contents(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and "/snapshots/" in p.as_posix()}


def test_dedup_keeps_every_byte_and_saves_the_space(home, hub):
    cache = home / "hub"
    shutil.copytree(cache / "models--org--tiny", cache / "models--org--tiny2", symlinks=True)
    shutil.rmtree(cache / "models--org--tiny2" / "refs")  # all its revisions detached: no confusion with org/tiny
    (cache / "models--org--tiny2" / "refs").mkdir()
    (cache / "models--org--tiny2" / "refs" / "main").write_text(hub.commit("org/tiny"))
    copy = snapshot_dir(home, "org/ds", hub.commit("org/ds", "main", "dataset"), "dataset") / "data" / \
        "train-00000-of-00001.parquet"
    data, blob = copy.read_bytes(), copy.parent / os.readlink(copy)
    copy.unlink()
    copy.write_bytes(data)  # a copy instead of a link
    contents, before = _contents(cache), disk_bytes(home)
    estimate = scan_home(home).reclaimable.dedup
    assert estimate == 2_000_000 + 300_000 + 1000 + 50_000

    refused = cli(home, "dedup")
    assert "pass --yes" in one_line_error(refused) and disk_bytes(home) == before
    done = json.loads(cli(home, "dedup", "--yes", "--json").stdout)
    assert not done["errors"] and done["freed_bytes"] == done["planned_bytes"] == estimate
    assert before - disk_bytes(home) == estimate
    assert _contents(cache) == contents  # every file still reads the same
    assert os.path.samefile(copy, blob)
    after = scan_home(home)
    assert after.reclaimable.dedup == 0 and not problems(after, "duplicate")
    assert not scan_cache_dir(cache).warnings
    assert_loads_offline(home, hub, [("org/tiny", "model", "main"), ("org/ds", "dataset", "main")])


def test_dedup_refuses_content_that_does_not_match_its_name(home, hub):
    cache = home / "hub"
    shutil.copytree(cache / "models--org--tiny", cache / "models--org--tiny2", symlinks=True)
    big = os.path.basename(os.readlink(_link(home, hub, "big.bin")))
    bad = cache / "models--org--tiny2" / "blobs" / big
    bad.write_bytes(b"\0" * 2_000_000)  # same name and size, other bytes
    r = cli(home, "dedup", "--yes")
    assert r.returncode == 1 and "does not hash to" in r.stderr
    assert bad.read_bytes() == b"\0" * 2_000_000 and bad.stat().st_nlink == 1
    assert (cache / "models--org--tiny" / "blobs" / big).stat().st_nlink == 1


# -- the other caches ----------------------------------------------------------------------------------------------
DATASETS_SCRIPT = """
import sys, zipfile, fsspec, pyarrow as pa, pyarrow.parquet as pq, datasets
from datasets import DownloadConfig, DownloadManager
home, src = sys.argv[1], sys.argv[2]
cache = home + "/datasets"
open(src + "/d.csv", "w").write("a,b\\n1,2\\n3,4\\n")
pq.write_table(pa.table({"x": [1, 2, 3]}), src + "/p.parquet")
with zipfile.ZipFile(src + "/a.zip", "w") as z:
    z.writestr("in/x.csv", "a,b\\n1,2\\n")
d = datasets.load_dataset("csv", data_files=src + "/d.csv", cache_dir=cache)
d["train"].map(lambda r: {"c": r["a"] * 2})
datasets.load_dataset("parquet", data_files={"train": src + "/p.parquet", "test": src + "/p.parquet"},
                      cache_dir=cache)
with fsspec.open("memory://bucket/x.csv", "wb") as f:
    f.write(b"a,b\\n1,2\\n")
dm = DownloadManager(download_config=DownloadConfig(cache_dir=cache + "/downloads"))
dm.download("memory://bucket/x.csv")
dm.extract(src + "/a.zip")
"""


def test_datasets_cache_built_by_the_datasets_library(tmp_path):
    pytest.importorskip("datasets")
    home, src = tmp_path / "home", tmp_path / "src"
    home.mkdir()
    src.mkdir()
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "0"}
    p = subprocess.run([sys.executable, "-c", DATASETS_SCRIPT, str(home), str(src)], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    module = home / "modules" / "datasets_modules" / "datasets" / "glue" / ("9" * 64)
    module.mkdir(parents=True)
    (module / "glue.py").write_text("# a legacy dataset script\n")
    (home / "token").write_text("hf_do_not_print_me")

    result = scan_home(home)
    by_builder = {p.builder: p for p in result.datasets.prepared}
    assert set(by_builder) == {"csv", "parquet"}
    csv, parquet = by_builder["csv"], by_builder["parquet"]
    assert csv.version == "0.0.0" and csv.config.startswith("default-") and len(csv.fingerprint) == 64
    assert csv.splits == {"train": 2} and parquet.splits == {"train": 3, "test": 3}
    assert csv.map_cache_files == 1 and csv.dataset_name == "csv"
    folder = Path(csv.path)
    assert csv.arrow_bytes == sum(f.stat().st_size for f in folder.glob("*.arrow"))
    assert csv.bytes == sum(f.stat().st_size for f in folder.iterdir())
    [download] = result.datasets.downloads
    assert download.url == "memory://bucket/x.csv" and download.bytes == 8
    [extracted] = result.datasets.extracted
    assert extracted.files == 1
    assert [(m.group, m.name, m.versions) for m in result.modules] == [("datasets_modules", "datasets/glue", 1)]
    areas = {a.name: a for a in result.areas}
    assert areas["datasets"].bytes == disk_bytes(home / "datasets")
    assert areas["modules"].bytes == disk_bytes(home / "modules")
    assert result.token_file
    # fresh locks of a build that just ran are not stale; two hours later they are
    assert not problems(result, "stale_lock")
    later = scan_home(home, now=time.time() + 7200)
    assert problems(later, "stale_lock") and all(p.fix == "prune" for p in problems(later, "stale_lock"))
    for args in (("scan", "--json"), ("scan",)):
        r = cli(home, *args)
        assert r.returncode == 0 and "hf_do_not_print_me" not in r.stdout + r.stderr
    assert json.loads(cli(home, "scan", "--json").stdout)["token_file"] is True


def test_roots_follow_the_environment(tmp_path):
    script = ("import json; from hfcache.cache.roots import resolve_roots; "
              "print(json.dumps({k: str(v) for k, v in vars(resolve_roots()).items()}))")
    env = {**os.environ, "HF_HOME": str(tmp_path / "h"), "HF_DATASETS_CACHE": str(tmp_path / "d"),
           "HF_XET_CACHE": str(tmp_path / "x")}
    env.pop("HF_HUB_CACHE", None)
    out = json.loads(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                    check=True).stdout)
    assert out["hub"] == str(tmp_path / "h" / "hub") and out["datasets"] == str(tmp_path / "d")
    assert out["datasets_downloads"] == str(tmp_path / "d" / "downloads")
    assert out["xet"] == str(tmp_path / "x") and out["modules"] == str(tmp_path / "h" / "modules")
    assert out["token"] == str(tmp_path / "h" / "token")
    env["HF_HUB_CACHE"] = str(tmp_path / "c")
    out = json.loads(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                    check=True).stdout)
    assert out["hub"] == str(tmp_path / "c")


# -- scale -----------------------------------------------------------------------------------------------------------
def _make_big_cache():
    spec = importlib.util.spec_from_file_location("make_big_cache", Path(__file__).parents[1] / "scripts" /
                                                  "make_big_cache.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_cache_agrees_and_memory_follows_repos_not_files(tmp_path):
    make = _make_big_cache()
    peaks = {}
    for label, repos, files in (("base", 40, 800), ("5x files", 40, 4000), ("5x repos", 200, 4000)):
        home = tmp_path / label.replace(" ", "_")
        make.make_cache(str(home), repos, files, seed=3)
        ours, theirs = scan_home(home), scan_cache_dir(home / "hub")
        assert ours.hub.size_on_disk == theirs.size_on_disk and len(ours.hub.repos) == len(theirs.repos) == repos
        assert sum(len(r.revisions) for r in ours.hub.repos) == sum(len(r.revisions) for r in theirs.repos)
        tracemalloc.start()
        scan_home(home)
        peaks[label] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks["5x files"] < peaks["base"] * 1.2  # five times the files: about the same memory
    assert peaks["5x repos"] > peaks["5x files"]  # more repos: more memory
