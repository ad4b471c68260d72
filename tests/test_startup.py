"""Offline commands start light: no HTTP client, no pydantic, no server, none of hfcache's own network code.

Each command runs as a user runs it, in a fresh interpreter, on a small cache; an exit hook writes the names in
`sys.modules`, so what any code path imported (at start-up or while working) is caught, not only the top-level
imports. How long the start-up takes is `scripts/bench_startup.py`'s business, not a test's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hfcache.cache.hashing import hash_bytes, lfs_pointer
from hfcache.cache.layout import HubCache, RepoRef
from hfcache.cache.meta import FileMeta

# Top-level packages (and exact modules) an offline command must never load.
HEAVY = ("requests", "httpx", "httpx2", "urllib3", "aiohttp", "pydantic", "pydantic_core", "starlette", "uvicorn",
         "http.client", "huggingface_hub.file_download", "huggingface_hub.hf_api", "hfcache.fetch.hub",
         "hfcache.fetch.transfer", "hfcache.server")

# Run the CLI as `python -m hfcache` does, and dump sys.modules at exit (atexit runs after sys.exit too).
HOOK = """
import atexit, sys
def _dump(path=sys.argv[1]):
    with open(path, "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
atexit.register(_dump)
sys.argv = ["hfcache", *sys.argv[2:]]
from hfcache.cli import main
main()
"""

REPO = RepoRef("org/tiny")
COMMIT = hash_bytes(b"startup test commit", "git-sha1")


def make_cache(root: Path) -> Path:
    """A one-repo cache in huggingface_hub's layout: an LFS file (sha256-named blob), a small git file, a pickle."""
    cache = HubCache(root)
    files = {"model.safetensors": (b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ", True),
             "config.json": (b'{"model_type": "bert"}\n', False),
             "pytorch_model.bin": (b"\x80\x02}q\x00.", True)}
    listing = {}
    for name, (data, lfs) in files.items():
        digest = hash_bytes(data, "sha256" if lfs else "git-sha1")
        meta = (FileMeta(len(data), hash_bytes(lfs_pointer(digest, len(data)), "git-sha1"), digest, len(data)) if lfs
                else FileMeta(len(data), digest))
        blob = cache.blob_path(REPO, meta.etag)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        cache.link(REPO, COMMIT, name, meta.etag, new_blob=False)
        listing[name] = meta
    cache.write_tree(REPO, COMMIT, listing)
    cache.write_ref(REPO, "main", COMMIT)
    cache.ensure_tag()
    return root


def loaded(args: list[str], tmp: Path, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, set]:
    out = tmp / f"modules-{os.getpid()}-{len(list(tmp.glob('modules-*')))}.txt"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_ENDPOINT", "HF_HUB_OFFLINE"))}
    full_env.update({"HF_HOME": str(tmp / "home"), **(env or {})})
    p = subprocess.run([sys.executable, "-c", HOOK, str(out), *args], capture_output=True, text=True, env=full_env,
                       cwd=tmp, timeout=120)
    return p, set(out.read_text().split()) if out.exists() else set()


def heavy(modules: set) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bundle")
    cache = make_cache(tmp / "hub")
    p = subprocess.run([sys.executable, "-m", "hfcache", "export", "org/tiny", "-o", str(tmp / "b.tar"),
                        "--cache-dir", str(cache)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return tmp / "b.tar"


OFFLINE = ["verify", "scan", "rm", "prune", "dedup", "export", "import", "inspect", "relocate", "convert", "lock",
           "map-url", "doctor", "datasets", "modules"]

# (args with {C} the cache, {T} a scratch folder, {B} a bundle), extra environment
RUNS = {
    "help": (["--help"], None),
    "version": (["--version"], None),
    **{f"{c} --help": ([c, "--help"], None) for c in OFFLINE},
    "datasets materialize --help": (["datasets", "materialize", "--help"], None),
    "modules add --help": (["modules", "add", "--help"], None),
    "verify": (["verify", "--cache-dir", "{C}"], None),
    "verify --json": (["verify", "--cache-dir", "{C}", "--json"], None),
    "verify a revision": (["verify", "org/tiny@main", "--cache-dir", "{C}"], None),
    "verify --safety": (["verify", "--cache-dir", "{C}", "--safety"], None),
    "scan": (["scan", "--cache-dir", "{C}"], None),
    "scan --json": (["scan", "--json"], None),
    "rm": (["rm", "org/tiny", "--cache-dir", "{C}", "--dry-run"], None),
    "prune": (["prune", "--cache-dir", "{C}", "--dry-run"], None),
    "dedup": (["dedup", "--cache-dir", "{C}", "--yes"], None),
    "export": (["export", "org/tiny", "-o", "{T}/out.tar", "--cache-dir", "{C}"], None),
    "import": (["import", "{B}", "--cache-dir", "{T}/imported"], None),
    "inspect a repo": (["inspect", "org/tiny", "--cache-dir", "{C}"], None),
    "inspect a file": (["inspect", "{C}/models--org--tiny/snapshots/" + COMMIT + "/pytorch_model.bin"], None),
    "relocate": (["relocate", "{C}", "{T}/moved"], None),
    "convert": (["convert", "--to-copies", "--cache-dir", "{C}"], None),
    "lock, offline": (["lock", "org/tiny", "--cache-dir", "{C}", "-o", "-"], {"HF_HUB_OFFLINE": "1"}),
    "map-url": (["map-url", "https://example.com/data.csv", "{T}/data.csv"], None),
    "doctor": (["doctor"], None),
}


@pytest.mark.parametrize("case", list(RUNS))
def test_offline_command_imports_no_http_client_pydantic_or_server(case, tmp_path, bundle):
    args, env = RUNS[case]
    cache = make_cache(tmp_path / "home" / "hub")
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    args = [a.format(C=cache, T=tmp_path, B=bundle) for a in args]
    p, modules = loaded(args, tmp_path, env)
    assert p.returncode in (0, 1), p.stderr[-2000:]  # 1: inspect's verdict on a pickle; never a usage error
    assert "Traceback" not in p.stderr
    assert modules, "the exit hook wrote nothing"
    assert "hfcache.cli" in modules  # the hook saw the command run
    assert heavy(modules) == [], f"hfcache {' '.join(args)} imported {heavy(modules)}"


def test_a_command_loads_its_own_cli_module_only(tmp_path):
    """The dispatch imports the module of the command run, not the others (`download`'s, `serve`'s)."""
    cache = make_cache(tmp_path / "home" / "hub")
    _, modules = loaded(["verify", "--cache-dir", str(cache)], tmp_path)
    cli = sorted(m for m in modules if m.startswith("hfcache.cli."))
    assert cli == ["hfcache.cli.common", "hfcache.cli.safety", "hfcache.cli.verify"]  # verify's --allow is safety's


def test_the_dispatch_table_names_every_command_and_help_lists_them_all(tmp_path):
    code = ("import hfcache.cli as c; c.register(None); app = c.app;"
            "print(' '.join(sorted([i.name or i.callback.__name__ for i in app.registered_commands]"
            " + [g.name for g in app.registered_groups])))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    from hfcache.cli import COMMANDS

    assert r.stdout.split() == sorted(COMMANDS)
    p, _ = loaded(["--help"], tmp_path, {"COLUMNS": "200"})
    assert p.returncode == 0
    listed = [line.split()[1] for line in p.stdout.splitlines() if line.startswith("│ ") and len(line.split()) > 2]
    assert set(COMMANDS) <= set(listed), set(COMMANDS) - set(listed)


def test_an_unknown_command_still_names_its_error(tmp_path):
    p, _ = loaded(["verfy"], tmp_path)
    assert p.returncode == 2 and "verfy" in p.stderr and "Traceback" not in p.stderr


# What an online snapshot or download must not load: huggingface_hub's API client and HTTP helpers (HfApi,
# `huggingface_hub.utils`, httpx2) and pydantic; hfcache makes its own API calls (`hfcache.fetch.hubapi`).
ONLINE_HEAVY = ("huggingface_hub.hf_api", "huggingface_hub.utils", "huggingface_hub.file_download", "httpx",
                "httpx2", "pydantic", "pydantic_core")

ONLINE_RUNS = {
    "snapshot": ["snapshot", "org/tiny"],
    "snapshot, up to date": ["snapshot", "org/tiny"],
    "snapshot --include --exclude": ["snapshot", "org/tiny", "--include", "*.json", "--include", "tokenizer/",
                                     "--exclude", "README*"],
    "snapshot of a dataset": ["snapshot", "dataset:org/ds"],
    "download": ["download", "org/tiny", "config.json", "model.safetensors", "--revision", "v1"],
    "download at refs/pr/1": ["download", "org/tiny", "config.json", "--revision", "refs/pr/1"],
}


def test_an_online_snapshot_or_download_imports_no_hfapi_httpx_or_pydantic(tmp_path):
    from tests.conftest import build_hub

    hub = build_hub(tmp_path / "hub")
    try:
        cache = tmp_path / "cache"
        for case, args in ONLINE_RUNS.items():
            p, modules = loaded([*args, "--cache-dir", str(cache)], tmp_path,
                                {"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1"})
            assert p.returncode == 0, (case, p.stderr[-2000:])
            assert "hfcache.fetch.hubapi" in modules, case  # the command did ask the endpoint
            bad = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in ONLINE_HEAVY))
            assert bad == [], f"hfcache {' '.join(args)} imported {bad}"
        assert len(hub.requests("api/")) >= len(ONLINE_RUNS)
    finally:
        hub.server.stop()
