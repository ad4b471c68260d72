"""`relocate` and `convert` end to end: every byte kept, links and keys fixed, huggingface_hub still works offline."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import cache_tree, run_cli
from tests.test_bundle import (
    OFFLINE,
    _fill,
    _load_offline,
    _ok,
    _one_line_error,
    _share,
    assert_valid,
    has_command,
)

COPIES = {"HF_HUB_DISABLE_SYMLINKS": "1", "HF_HUB_DISABLE_SYMLINKS_WARNING": "1"}


def _key(path: Path | str) -> str:
    """`datasets`' extracted-folder name for an archive: sha256 of its absolute path."""
    return hashlib.sha256(str(path).encode()).hexdigest()


def _contents(root: Path) -> dict[str, bytes]:
    """Every file's bytes as a reader sees them (through links), by path: what a move must keep."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".locks" not in p.parts and not p.name.endswith(".lock")}


@pytest.fixture(scope="module")
def filled(hub, tmp_path_factory) -> Path:
    return _fill(tmp_path_factory.mktemp("filled") / "hub", hub.url)


def _hf_home(filled: Path, where: Path) -> Path:
    """An HF_HOME as years of use leave it: an absolute link, a datasets download with extracted (and nested
    extracted) archives, locks, a token."""
    home = where / "old-home"
    shutil.copytree(filled, home / "hub", symlinks=True)
    link = next((home / "hub" / "models--org--tiny" / "snapshots").glob("*/config.json"))
    absolute = os.path.normpath(link.parent / os.readlink(link))
    link.unlink()
    link.symlink_to(absolute)  # what huggingface_hub < 0.13 made on some systems
    (home / "hub" / ".locks" / "models--org--tiny" / "stale.lock").write_text("")
    downloads = home / "datasets" / "downloads"
    archive = downloads / _key("https://example.org/data.zip")
    (downloads / "extracted" / _key(archive)).mkdir(parents=True)
    archive.write_bytes(b"PK zip bytes")
    (downloads / f"{archive.name}.json").write_text(json.dumps({"url": "https://example.org/data.zip", "etag": None}))
    (downloads / f"{archive.name}.lock").write_text("")
    inner = downloads / "extracted" / _key(archive) / "inner.zip"
    inner.write_bytes(b"PK inner")
    (downloads / "extracted" / _key(archive) / "train.csv").write_text("a,b\n1,2\n")
    (downloads / "extracted" / _key(inner)).mkdir()
    (downloads / "extracted" / _key(inner) / "deep.txt").write_text("deep\n")
    (home / "datasets" / f"{str(home).replace('/', '_')}_datasets_x.lock").write_text("")
    (home / "token").write_text("hf_not_a_real_token")
    return home


def _assert_moved(old_contents: dict[str, bytes], new: Path, old: Path) -> None:
    extracted = new / "datasets" / "downloads" / "extracted"
    archive = next(p for p in (new / "datasets" / "downloads").iterdir() if p.is_file() and "." not in p.name)
    inner_key = _key(extracted / _key(archive) / "inner.zip")
    assert sorted(p.name for p in extracted.iterdir()) == sorted([_key(archive), inner_key])
    assert (extracted / inner_key / "deep.txt").read_text() == "deep\n"
    renamed = {k.replace(_key(old / "datasets/downloads" / archive.name), _key(archive)): v
               for k, v in old_contents.items()}
    renamed = {k.replace(_key(old / "datasets/downloads/extracted" / _key(old / "datasets/downloads" /
                                                                           archive.name) / "inner.zip"),
                         inner_key): v for k, v in renamed.items()}
    assert _contents(new) == renamed  # every byte, under the names the new place gives them
    for p in new.rglob("*"):
        if p.is_symlink():
            assert not os.path.isabs(os.readlink(p)), p
            assert p.exists(), p
    assert not any(p.name.endswith(".lock") for p in new.rglob("*"))
    assert not (new / "hub" / ".locks").exists()
    assert_valid(new / "hub")
    _load_offline(new)


def test_relocate_moves_an_hf_home_and_everything_still_works(filled, tmp_path):
    old = _hf_home(filled, tmp_path)
    before = _contents(old)
    new = tmp_path / "elsewhere" / "hf"
    new.parent.mkdir()
    r = _ok(run_cli("relocate", str(old), str(new), env={"TRANSFORMERS_CACHE": "/somewhere"}))
    assert r.stdout == f"export HF_HOME={new}\n"
    assert "TRANSFORMERS_CACHE is set" in r.stderr and "transformers 5 ignores it" in r.stderr
    assert not old.exists()
    _assert_moved(before, new, old)
    _verify(new / "hub")


def test_relocate_copy_leaves_the_old_one_as_it_was(filled, tmp_path):
    old = _hf_home(filled, tmp_path)
    before_tree = cache_tree(old)
    before = _contents(old)
    new = tmp_path / "copy"
    r = _ok(run_cli("relocate", str(old), str(new), "--copy", "--json"))
    result = json.loads(r.stdout)
    assert result["links_made_relative"] == 1 and result["extracted_renamed"] == 2 and result["locks_dropped"] >= 3
    assert result["env"] == {"HF_HOME": str(new)}
    assert cache_tree(old) == before_tree
    _assert_moved(before, new, old)


def test_relocate_across_file_systems(filled, tmp_path):
    other = Path("/dev/shm")
    if not other.is_dir() or not os.access(other, os.W_OK) or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system to move to")
    old = _hf_home(filled, tmp_path)
    before = _contents(old)
    with tempfile.TemporaryDirectory(dir=other) as d:
        new = Path(d) / "hf"
        _ok(run_cli("relocate", str(old), str(new)))
        assert not old.exists()
        _assert_moved(before, new, old)


def test_relocate_a_hub_cache_alone(filled, tmp_path):
    old = tmp_path / "cache"
    shutil.copytree(filled, old, symlinks=True)
    assert _share(old) == 3  # shared-store links are relative and stay valid
    before = _contents(old)
    new = tmp_path / "moved"
    r = _ok(run_cli("relocate", str(old), str(new), env={"HF_HUB_CACHE": str(old)}))
    assert r.stdout == f"export HF_HUB_CACHE={new}\n"
    assert _contents(new) == before
    p = subprocess.run([sys.executable, "-c", "from huggingface_hub import snapshot_download as s; "
                        "print(s('org/tiny'), s('org/ds', repo_type='dataset'))"],
                       env={**os.environ, **OFFLINE, "HF_HUB_CACHE": str(new)}, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert_valid(new)


def test_relocate_killed_midway_finishes_when_run_again(filled, tmp_path):
    for n in (1, 2, 3):  # the link fix-ups, the rename, the extracted renames
        old = _hf_home(filled, tmp_path / f"run{n}")
        before = _contents(old)
        new = tmp_path / f"run{n}" / "new"
        r = run_cli("relocate", str(old), str(new), env={"HFCACHE_CRASH_AFTER": str(n)})
        assert r.returncode == -9
        _ok(run_cli("relocate", str(old), str(new)))
        assert not old.exists()
        _assert_moved(before, new, old)


def test_relocate_refusals(filled, tmp_path):
    old = _hf_home(filled, tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert "not an empty folder" in _one_line_error(run_cli("relocate", str(old), str(tmp_path / "full")))
    assert "contain one another" in _one_line_error(run_cli("relocate", str(old), str(old / "inner")))
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_text("meow")
    assert "neither" in _one_line_error(run_cli("relocate", str(tmp_path / "photos"), str(tmp_path / "p2")))
    from filelock import FileLock

    with FileLock(old / "hub" / ".locks" / "models--org--tiny" / "stale.lock"):
        line = _one_line_error(run_cli("relocate", str(old), str(tmp_path / "new")))
    assert "in use" in line
    assert old.exists() and not (tmp_path / "new").exists()


# -- convert -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def layouts(hub, tmp_path_factory) -> tuple[Path, Path]:
    """The same revisions (and a PR that shares most files with main) in both layouts, by huggingface_hub's rules."""
    base = tmp_path_factory.mktemp("layouts")
    out = []
    for name, env in (("links", None), ("copies", COPIES)):
        out.append(_fill(base / name, hub.url, env=env, extra=(("org/tiny", "model", "refs/pr/1"),)))
    assert not any(v[0] == "link" for v in cache_tree(out[1]).values())
    return out[0], out[1]


def _convert(cache: Path, to: str, env: dict | None = None):
    return run_cli("convert", f"--to-{to}", "--cache-dir", str(cache), "--json", env=env)


def test_convert_to_copies_is_huggingface_hubs_copied_layout(layouts, tmp_path):
    links, copies = layouts
    cache = tmp_path / "hub"
    shutil.copytree(links, cache, symlinks=True)
    result = json.loads(_ok(_convert(cache, "copies")).stdout)
    assert result["files"] == 17 and result["layout"] == "copies"
    assert cache_tree(cache) == cache_tree(copies)
    assert not any((cache / "models--org--tiny" / "blobs").iterdir())
    _load_offline(cache.parent, {"HF_HUB_CACHE": str(cache)})


def test_convert_to_symlinks_names_blobs_by_content_and_deduplicates(layouts, tmp_path):
    links, copies = layouts
    cache = tmp_path / "hub"
    shutil.copytree(copies, cache, symlinks=True)
    result = json.loads(_ok(_convert(cache, "symlinks")).stdout)
    assert result["files"] == 17
    assert result["bytes_saved"] > 2_000_000  # the PR's big.bin and model.safetensors are main's: stored once
    assert cache_tree(cache) == cache_tree(links)
    _load_offline(cache.parent, {"HF_HUB_CACHE": str(cache)})
    _verify(cache)


def test_convert_to_symlinks_without_tree_listings_uses_the_hubs_rules(layouts, tmp_path):
    links, copies = layouts
    cache = tmp_path / "hub"
    shutil.copytree(copies, cache, symlinks=True)
    for trees in cache.glob("*/trees"):
        shutil.rmtree(trees)
    _ok(_convert(cache, "symlinks"))
    expected = {k: v for k, v in cache_tree(links).items() if "/trees" not in k}
    assert cache_tree(cache) == expected


def test_convert_a_shared_store_cache_to_copies_and_back(layouts, tmp_path):
    links, copies = layouts
    cache = tmp_path / "hub"
    shutil.copytree(links, cache, symlinks=True)
    assert _share(cache) == 3
    before = _contents(cache / "models--org--tiny" / "snapshots")
    _ok(_convert(cache, "copies"))
    assert _contents(cache / "models--org--tiny" / "snapshots") == before
    assert not any((cache / "models--org--tiny" / "blobs").iterdir())
    assert not list((cache / "blobs").glob("??/" + "?" * 64))  # the store's payloads went with their last user
    _ok(_convert(cache, "symlinks"))
    assert {k: v for k, v in cache_tree(cache).items() if not k.startswith("blobs")} == cache_tree(links)


@pytest.mark.parametrize("to", ["copies", "symlinks"])
def test_convert_killed_midway_is_valid_and_finishes(layouts, tmp_path, to):
    links, copies = layouts
    start, goal = (links, copies) if to == "copies" else (copies, links)
    for n in (1, 4, 9, 16, 23):
        cache = tmp_path / f"hub{n}"
        shutil.copytree(start, cache, symlinks=True)
        before = _contents(cache)
        r = _convert(cache, to, env={"HFCACHE_CRASH_AFTER": str(n)})
        assert r.returncode in (-9, 0), r.stderr
        assert_valid(cache)
        assert {k: v for k, v in _contents(cache).items() if "/blobs/" not in k} == {
            k: v for k, v in before.items() if "/blobs/" not in k}
        _ok(_convert(cache, to))
        assert cache_tree(cache) == cache_tree(goal)


def test_convert_usage_errors(tmp_path):
    assert "exactly one" in _one_line_error(run_cli("convert", "--cache-dir", str(tmp_path)))
    assert "exactly one" in _one_line_error(run_cli("convert", "--to-copies", "--to-symlinks", "--cache-dir",
                                                    str(tmp_path)))
    line = _one_line_error(run_cli("convert", "--to-symlinks", "--cache-dir", str(tmp_path), env=COPIES))
    assert "symlinks are not available" in line


def _verify(cache: Path) -> None:
    if has_command("verify"):
        _ok(run_cli("verify", "--cache-dir", str(cache), env=OFFLINE))
