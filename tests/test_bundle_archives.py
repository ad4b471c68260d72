"""Hostile archives: headers, manifests and tree listings that claim (or are) huge are refused in one line, with
nothing written and peak memory bounded (measured on the `import` process alone)."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from hfcache.bundle.manifest import MAX_ENTRIES

MAX_RSS_MB = 150
ZEROS = b"\0" * (1024 * 1024)
BAD_COMMIT = "c" * 40

RSS_SCRIPT = """
import resource, subprocess, sys
p = subprocess.run([sys.executable, "-m", "hfcache", *sys.argv[1:]], capture_output=True, text=True)
sys.stdout.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) + "\\n" + str(p.returncode) + "\\n")
sys.stdout.write(p.stderr)
"""


def _import_measured(bundle: Path, cache: Path) -> tuple[int, int, str]:
    """(peak RSS in MB, exit code, stderr) of `hfcache import` in a process of its own: RUSAGE_CHILDREN of a
    wrapper whose only child is the import."""
    p = subprocess.run([sys.executable, "-c", RSS_SCRIPT, "import", str(bundle), "--cache-dir", str(cache)],
                       capture_output=True, text=True, timeout=300)
    rss_kb, code, stderr = p.stdout.split("\n", 2)
    return int(rss_kb) // 1024, int(code), stderr


def _header(name: str, size: int, kind: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode = size, kind, 0o644
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _member(name: str, data: bytes) -> bytes:
    return _header(name, len(data), tarfile.REGTYPE) + data + b"\0" * (-len(data) % 512)


def _write(path: Path, *chunks, zeros: int = 0, tail: bytes = b"") -> Path:
    """A .tar.gz of `chunks`, then `zeros` MiB of zero bytes (cheap to compress: a small file claiming a lot)."""
    with gzip.open(path, "wb", compresslevel=1) as f:
        for c in chunks:
            f.write(c)
        for _ in range(zeros):
            f.write(ZEROS)
        f.write(tail + b"\0" * 1024)
    return path


def _manifest(entries: list, **top) -> bytes:
    return json.dumps({"schema": "hfcache-bundle", "schema_version": 1, "created_by": {}, "entries": entries,
                       **top}).encode()


def _tree_bundle(tree: bytes) -> bytes:
    digest = hashlib.sha256(tree).hexdigest()
    entry = {"role": "tree", "repo_type": "model", "repo_id": "org/x", "commit": BAD_COMMIT, "size": len(tree),
             "sha256": digest, "payload": digest}
    return _member("manifest.json", _manifest([entry])) + _member(f"payload/{digest}", tree)


def _degenerate_manifest(mib: int) -> bytes:
    """Valid JSON whose parse would take ~25 bytes of memory per byte: empty objects in the entry list."""
    head = b'{"schema": "hfcache-bundle", "schema_version": 1, "created_by": {}, "entries": ['
    return head + b",".join([b"{}"] * (mib * 1024 * 1024 // 3)) + b"]}"


def _many_entries(n: int, bad: bool) -> bytes:
    """`n` valid entries, blobs and the snapshot files using them (as many as a manifest may hold, all kept in
    memory), `bad` one last."""
    entries = []
    for i in range((n - 1) // 2):
        sha = hashlib.sha256(b"%d" % i).hexdigest()
        entries.append({"role": "blob", "repo_type": "model", "repo_id": "org/x", "path": sha, "size": i,
                        "sha256": sha, "payload": sha})
        entries.append({"role": "file", "repo_type": "model", "repo_id": "org/x", "path": f"d{i % 97}/f{i}.bin",
                        "commit": BAD_COMMIT, "blob": sha})
    entries.append({"role": "no_exist", "repo_type": "model", "repo_id": "org/x", "path": "../x" if bad else "x",
                    "commit": BAD_COMMIT})
    return _manifest(entries)


def _zstd_wide_window(path: Path) -> Path:
    """A zstd tar whose frame asks for a 128 MiB window (memory the decoder would hold), then 200 MiB of zeros."""
    zstandard = pytest.importorskip("zstandard")
    params = zstandard.ZstdCompressionParameters(window_log=27, compression_level=1, write_content_size=False)
    with open(path, "wb") as f, zstandard.ZstdCompressor(compression_params=params).stream_writer(f) as w:
        w.write(_member("manifest.json", _manifest([])))
        for _ in range(200):
            w.write(ZEROS)
    return path


def _entries_bundle(path: Path, n: int, bad: bool) -> Path:
    return _write(path, _member("manifest.json", _many_entries(n, bad)))


HOSTILE = {
    # the case: a PAX header claiming 400 MiB (tarfile reads a header whole into memory)
    "pax-header-400MiB": lambda p: _write(p, _header("././@PaxHeader", 400 << 20, tarfile.XHDTYPE), zeros=400),
    "gnu-long-name-400MiB": lambda p: _write(p, _header("././@LongLink", 400 << 20, tarfile.GNUTYPE_LONGNAME),
                                             zeros=400),
    "manifest-claims-400MiB": lambda p: _write(p, _header("manifest.json", 400 << 20, tarfile.REGTYPE),
                                               b"[" * 1024, zeros=400),
    "manifest-of-empty-objects": lambda p: _write(p, _member("manifest.json", _degenerate_manifest(30))),
    "manifest-deeply-nested": lambda p: _write(p, _member("manifest.json", b'{"schema": "hfcache-bundle", '
                                                          b'"schema_version": 1, "entries": [' + b"[" * 5_000_000
                                                          + b"]" * 5_000_000 + b"]}")),
    "tree-of-empty-objects": lambda p: _write(p, _tree_bundle(
        b'{"format_version": 1, "files": {' + b",".join(b'"%x": {}' % i for i in range(3_000_000)) + b"}}")),
    "tree-of-200MiB": lambda p: _big_tree(p, 200),
    "zstd-128MiB-window": _zstd_wide_window,
    "manifest-of-most-entries-last-bad": lambda p: _entries_bundle(p, MAX_ENTRIES, True),
    "manifest-of-most-entries-no-payload": lambda p: _entries_bundle(p, MAX_ENTRIES, False),
    "manifest-of-too-many-entries": lambda p: _entries_bundle(p, MAX_ENTRIES + 1, False),
}


def _big_tree(path: Path, mib: int) -> Path:
    """A tree listing payload of `mib` MiB (spaces: valid JSON whitespace), its hash and size told truly."""
    h = hashlib.sha256(b"{}")
    for _ in range(mib):
        h.update(b" " * (1 << 20))
    digest, size = h.hexdigest(), 2 + (mib << 20)
    entry = {"role": "tree", "repo_type": "model", "repo_id": "org/x", "commit": BAD_COMMIT, "size": size,
             "sha256": digest, "payload": digest}
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(_member("manifest.json", _manifest([entry])) + _header(f"payload/{digest}", size, tarfile.REGTYPE))
        f.write(b"{}")
        for _ in range(mib):
            f.write(b" " * (1 << 20))
        f.write(b"\0" * (-size % 512) + b"\0" * 1024)
    return path


@pytest.mark.parametrize("how", list(HOSTILE))
def test_hostile_archive_is_refused_in_bounded_memory(tmp_path, how):
    bundle = HOSTILE[how](tmp_path / "hostile.tar.gz")
    assert bundle.stat().st_size < 20 << 20
    cache = tmp_path / "hub"
    rss, code, stderr = _import_measured(bundle, cache)
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("hfcache: error: "), stderr
    print(f"{how}: peak RSS {rss} MB: {lines[0]}")
    assert rss < MAX_RSS_MB, f"{how}: peak RSS {rss} MB"
    assert not cache.exists() or not [p for p in cache.rglob("*") if not p.is_dir()], sorted(cache.rglob("*"))


class _Trickle:
    """A stream that gives one byte per read: every value is cut at every place."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        self.pos += 1
        return self.data[self.pos - 1:self.pos]


@pytest.mark.parametrize("doc", [
    {"a": 12345, "b": [1, 2.5, -3e2, True, None, "x\u00e9\\\""], "c": {"k": {}}},
    {"files": {"x/\u00fc.txt": {"size": 10, "blob_id": "ab" * 20}, "y": {"size": 0, "blob_id": "cd" * 20}},
     "format_version": 1},
    {},
])
def test_stream_walk_reads_what_json_loads_reads(doc):
    from hfcache.bundle.jsonstream import START, walk

    for expand in ({}, {"b": "array", "files": "object"}):
        got: dict = {}
        for key, value in walk(_Trickle(json.dumps(doc, indent=1).encode()), expand, 1 << 20, 1 << 16):
            if key in expand:
                if value is START:
                    got[key] = [] if expand[key] == "array" else {}
                elif expand[key] == "array":
                    got[key].append(value)
                else:
                    got[key][value[0]] = value[1]
            else:
                got[key] = value
        assert got == doc


@pytest.mark.parametrize("text", [b"", b"{", b'{"a": 1,}', b'{"a": 1} x', b'{"a": 1, "a": 2}', b"[1]", b'{"a": 1'])
def test_stream_walk_refuses_what_is_not_one_object(text):
    from hfcache.bundle.jsonstream import walk

    with pytest.raises(ValueError):
        list(walk(_Trickle(text), {}, 1 << 20, 1 << 16))
