"""Bundle entries for the offline caches (modules, prepared datasets, downloads) and refs: confined to their role's
place in the target the user chose, never replacing what is there; a ref moves only when asked."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_bundle import OFFLINE, _export, _fill, _ok, _one_line_error

HASH = "a" * 64
MODULE = f"datasets_modules/datasets/org--ds/{HASH}/ds.py"
URL_NAME = hashlib.sha256(b"https://example.org/data.csv").hexdigest()


def _bundle(where: Path, areas: list[tuple[str, str, str, bytes]]) -> Path:
    """A folder bundle carrying only offline-cache files: (role, area, path, bytes)."""
    (where / "payload").mkdir(parents=True)
    entries = []
    for role, area, path, data in areas:
        digest = hashlib.sha256(data).hexdigest()
        (where / "payload" / digest).write_bytes(data)
        entries.append({"role": role, "area": area, "path": path, "size": len(data), "sha256": digest,
                        "payload": digest})
    (where / "manifest.json").write_text(json.dumps({"schema": "hfcache-bundle", "schema_version": 1,
                                                     "created_by": {}, "entries": [], "areas": entries}))
    return where


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()) if root.exists() else []


HOSTILE = {
    "transformers-module": ("module", "modules", "transformers_modules/x.py"),
    "module-outside-a-version": ("module", "modules", "datasets_modules/datasets/org--ds/ds.py"),
    "module-version-not-a-hash": ("module", "modules", "datasets_modules/datasets/org--ds/latest/ds.py"),
    "module-unknown-namespace": ("module", "modules", f"datasets_modules/hooks/x/{HASH}/x.py"),
    "dataset-in-downloads": ("dataset", "datasets", "downloads/extracted/abc/def/0.0.0/x/y"),
    "dataset-lock-file": ("dataset", "datasets", "org___ds/default/0.0.0/abc/x.lock"),
    "dataset-not-a-prepared-folder": ("dataset", "datasets", "org___ds/x.arrow"),
    "url-in-extracted": ("url", "datasets_downloads", f"extracted/{URL_NAME}/x"),
    "url-not-a-download-name": ("url", "evaluate_downloads", "evil.py"),
    "url-climbs-out": ("url", "datasets_downloads", "../modules/x.py"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_an_area_entry_outside_its_roles_place_is_refused(tmp_path, case):
    role, area, path = HOSTILE[case]
    bundle = _bundle(tmp_path / "b", [(role, area, path, b"import os  # evil\n")])
    home = tmp_path / "home"
    line = _one_line_error(run_cli("import", str(bundle), "--hf-home", str(home), env=OFFLINE))
    assert "nothing was imported" in line or "unsafe" in line, line
    assert _files(home) == []


def _module_bundle(tmp_path: Path, data: bytes) -> Path:
    return _bundle(tmp_path / "b", [("module", "modules", MODULE, data), ("url", "datasets_downloads", URL_NAME,
                                                                          b"a,b\n1,2\n")])


def test_an_existing_module_with_other_bytes_is_kept_and_reported(tmp_path):
    home = tmp_path / "home"
    planted = home / "modules" / MODULE
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"# the script the user trusted\n")
    r = run_cli("import", str(_module_bundle(tmp_path, b"# another script\n")), "--hf-home", str(home), env=OFFLINE)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"conflict: modules/{MODULE} exists with other content (kept)" in r.stderr
    assert planted.read_bytes() == b"# the script the user trusted\n"
    assert (home / "datasets" / "downloads" / URL_NAME).read_bytes() == b"a,b\n1,2\n"  # the rest is placed
    assert not [p for p in planted.parent.iterdir() if p != planted]  # no staging file left beside it


def test_an_existing_file_with_the_same_bytes_is_present_not_a_conflict(tmp_path):
    home = tmp_path / "home"
    same = home / "modules" / MODULE
    same.parent.mkdir(parents=True)
    same.write_bytes(b"# the same script\n")
    r = _ok(run_cli("import", str(_module_bundle(tmp_path, b"# the same script\n")), "--hf-home", str(home),
                    "--json", env=OFFLINE))
    result = json.loads(r.stdout)
    assert result["area_files"] == 1 and result["area_present"] == 1 and result["conflicts"] == []


def test_a_planted_link_at_the_place_is_a_conflict(tmp_path):
    home = tmp_path / "home"
    link = home / "modules" / MODULE
    link.parent.mkdir(parents=True)
    (tmp_path / "target.py").write_bytes(b"# outside\n")
    link.symlink_to(tmp_path / "target.py")
    r = run_cli("import", str(_module_bundle(tmp_path, b"# outside\n")), "--hf-home", str(home), env=OFFLINE)
    assert r.returncode == 1 and "exists with other content" in r.stderr
    assert link.is_symlink() and (tmp_path / "target.py").read_bytes() == b"# outside\n"


def test_cache_dir_places_area_files_beside_it_not_in_the_environments_folders(tmp_path):
    elsewhere = tmp_path / "env-caches"
    env = {**OFFLINE, "HF_MODULES_CACHE": str(elsewhere / "modules"), "HF_DATASETS_CACHE": str(elsewhere / "ds"),
           "HF_HOME": str(elsewhere / "home")}
    bundle = _module_bundle(tmp_path, b"# script\n")
    _ok(run_cli("import", str(bundle), "--cache-dir", str(tmp_path / "target" / "hub"), env=env))
    assert (tmp_path / "target" / "modules" / MODULE).read_bytes() == b"# script\n"
    assert (tmp_path / "target" / "datasets" / "downloads" / URL_NAME).is_file()
    assert _files(elsewhere) == []
    # a cache folder that is not an HF_HOME's hub/: no place for them, refused before anything is written
    r = run_cli("import", str(bundle), "--cache-dir", str(tmp_path / "bare"), env=env)
    assert r.returncode == 2 and "--hf-home" in _one_line_error(r)
    assert _files(tmp_path / "bare") == [] and _files(elsewhere) == []


# -- refs --------------------------------------------------------------------------------------------------------
def test_a_ref_at_another_commit_moves_only_with_move_refs(hub, tmp_path):
    source = _fill(tmp_path / "source", hub.url)
    bundle = _export(source, tmp_path / "b.tar", specs=("org/tiny",))
    home = tmp_path / "home"
    _ok(run_cli("snapshot", "org/tiny", "--revision", "v1", "--cache-dir", str(home / "hub"), endpoint=hub.url))
    main_ref = home / "hub" / "models--org--tiny" / "refs" / "main"
    main_ref.write_text(hub.commit("org/tiny", "v1"))  # the cache says main is v1's commit
    r = run_cli("import", str(bundle), "--hf-home", str(home), env=OFFLINE)
    assert r.returncode == 1 and "ref main is at" in r.stderr and "--move-refs" in r.stderr
    assert main_ref.read_text() == hub.commit("org/tiny", "v1")
    snap = home / "hub" / "models--org--tiny" / "snapshots" / hub.commit("org/tiny")
    assert (snap / "config.json").is_file()  # the files themselves are imported: only the ref is kept
    r = _ok(run_cli("import", str(bundle), "--hf-home", str(home), "--move-refs", env=OFFLINE))
    assert "ref moved: org/tiny: main" in r.stderr
    assert main_ref.read_text() == hub.commit("org/tiny")
