"""The code's shape: every module imports on its own, and the private huggingface_hub names we rely on exist."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys

import pytest

import hfcache


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(hfcache.__path__, "hfcache.") if m.name != "hfcache.__main__")


def test_the_package_tree_has_its_modules():
    names = _modules()
    assert "hfcache.cache.layout" in names and "hfcache.fetch.transfer" in names and len(names) > 40


@pytest.mark.parametrize("module", _modules())
def test_each_module_imports_alone_without_side_effects(module, tmp_path):
    """A fresh interpreter per module catches import cycles (which depend on import order) and work done at
    import time (a module that writes, or starts a thread)."""
    code = ("import sys, threading, os; before = set(os.listdir('.')); import " + module +
            "; assert threading.active_count() == 1, 'thread started at import';"
            " assert set(os.listdir('.')) == before, 'file written at import'")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_offline_modules_do_not_import_the_http_stack():
    """verify, scan, the cache model and the offline commands' work must not pay for requests or the server."""
    mods = ["hfcache.cache.layout", "hfcache.verify.check", "hfcache.scan", "hfcache.scan.reclaim",
            "hfcache.render.verify", "hfcache.render.scan", "hfcache.bundle.importer"]
    code = ("import sys; import " + ", ".join(mods) +
            "; bad = [m for m in ('requests', 'starlette', 'uvicorn', 'pydantic') if m in sys.modules]; print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_private_huggingface_hub_names_are_where_the_adapter_expects():
    """If huggingface_hub moves or renames these, this fails: update `hfcache.cache.hfhub`, nothing else."""
    from huggingface_hub.utils import _shared_blobs

    from hfcache.cache import hfhub

    missing = [n for n in hfhub.REQUIRED if not hasattr(_shared_blobs, n)]
    assert not missing, f"huggingface_hub.utils._shared_blobs lacks {missing}"
    assert _shared_blobs.SHARED_BLOBS_MARKER_NAME == hfhub.SHARED_MARKER


def test_only_the_adapter_imports_private_huggingface_hub_names():
    import pathlib
    import re

    root = pathlib.Path(hfcache.__file__).parent
    pat = re.compile(r"^\s*(from|import) huggingface_hub(\.\w+)*\._\w+|^\s*from huggingface_hub(\.\w+)* import _\w+",
                     re.MULTILINE)
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.name != "hfhub.py" and pat.search(p.read_text())]
    assert offenders == []


@pytest.mark.parametrize(("repo_id", "repo_type"), [("bert-base-uncased", "model"), ("org/name", "dataset"),
                                                    ("a.b/c_d-e", "space"), ("org/k", "kernel")])
def test_layout_names_repo_folders_and_urls_as_huggingface_hub_does(repo_id, repo_type):
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import repo_folder_name

    from hfcache.cache.layout import RepoRef
    from hfcache.fetch.hub import HubClient

    ref = RepoRef(repo_id, repo_type)
    assert ref.folder_name == repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    assert RepoRef.from_folder_name(ref.folder_name) == ref
    client = HubClient(endpoint="http://127.0.0.1:9")
    # resolve_url builds the URL itself (no huggingface_hub.file_download import): every character class
    for name in ("dir/f #1.bin", "a?b&c=d%20e.txt", "café/文件.json", "+~!$'()*,;:@[].x", "sp ace/t\tab"):
        for rev in ("a" * 40, "refs/pr/1", "v1.0+x"):
            assert client.resolve_url(ref, rev, name) == hf_hub_url(
                repo_id, name, repo_type=repo_type, revision=rev, endpoint="http://127.0.0.1:9"), (name, rev)


_REPO_IDS = ["gpt2", "org/name", "a.b/c_d-e", "Org-1/Model_2.v3", "x" * 96, "o/" + "x" * 96, "x" * 97,
             "org/" + "y" * 97, "", "/", "org/", "/name", "a/b/c", "datasets/org/name", "-lead", "trail-", ".dot",
             "dot.", "a--b", "a..b", "org/a--b", "name.git", "org/name.git", "café", "org/文件夹", "a b", "a\nb",
             "a\x00b", "../x", "org/..", "..", ".", "a/.b", "a_/b", "_a", "a_", "org/_private", "1", "a@b", "a:b",
             "a\\b", "a/b\n", "\nname", 123, None, b"org/name"]


@pytest.mark.parametrize("repo_id", _REPO_IDS, ids=repr)
def test_repo_id_rules_are_huggingface_hubs(repo_id):
    """`names.repo_id_problem` is `validate_repo_id` without its import of the HTTP client: same verdict, same
    words, on good and hostile ids."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from hfcache.cache.names import repo_id_problem

    if repo_id is None:  # huggingface_hub lets None through (an optional argument); a RepoRef never has None
        assert repo_id_problem(repo_id) is not None
        return
    try:
        validate_repo_id(repo_id)
        theirs = None
    except HFValidationError as e:
        theirs = str(e)
    assert repo_id_problem(repo_id) == theirs


@pytest.mark.parametrize("disabled", [False, True])
def test_symlink_probe_answers_as_huggingface_hub(disabled, tmp_path):
    """`HubCache.symlinks_supported` is `are_symlinks_supported` without importing `file_download` (and with it
    the HTTP client): both answer alike, HF_HUB_DISABLE_SYMLINKS included, and leave nothing behind."""
    env = {**os.environ, "HF_HUB_DISABLE_SYMLINKS": "1" if disabled else "0"}
    code = ("import sys; from pathlib import Path; from hfcache.cache.layout import HubCache;"
            "from huggingface_hub.file_download import are_symlinks_supported;"
            "ours = HubCache(sys.argv[1]).symlinks_supported(); print(ours, are_symlinks_supported(sys.argv[1]))")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c")], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == (["False", "False"] if disabled else ["True", "True"])
    assert list((tmp_path / "c").iterdir()) == [] if not disabled else not (tmp_path / "c").exists()


def test_no_module_imports_another_that_imports_it_back():
    """No import cycle, not even through imports inside functions (a lazy import hides a cycle from a fresh
    import but still ties two modules together): the graph of every `hfcache` import has no loop."""
    import ast
    import pathlib

    root = pathlib.Path(hfcache.__file__).parent
    mods = {}
    for p in root.rglob("*.py"):
        parts = ("hfcache", *p.relative_to(root).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph: dict[str, set[str]] = {}
    for m, p in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hfcache"):
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                         for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("hfcache")}
        graph[m] = {d for d in deps if d in mods and d != m and d != "hfcache"}

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [c for m in sorted(graph) if (c := cycle_from(m))]
    assert not cycles, cycles[0]
