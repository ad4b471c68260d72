"""The Xet download path (issue 16, client side): hashes, chunk decoding, and with the Xet Hub emulator
(tests/xethub.py, fixtures uploaded by hf_xet itself) the cache huggingface_hub 2.4 + hf_xet writes, dedup, faults."""

from __future__ import annotations

import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hfcache.errors import IntegrityError
from hfcache.xet import chunks as C
from hfcache.xet import hashes as H

# xet-core `merklehash/aggregated_hashes.rs` test_correctness: (nodes, xorb hash, file hash with a zero salt)
_A = "cfc5d07f6f03c29bbf424132963fe08d19a37d5757aaf520bf08119f05cd56d6"
_B = "c3e67584b5c4fc2a89837ec39e40f2c8a6bb0b2987ac94cd4b31e5fbdd210a72"
_C = "0d2beb91b9196929a5ddec9f6e306924ddf4a24268e3e59fd8464738d525af37"
_D = "adf8773496a9b7319b2e50dc98093f344053b17d8ad37100b9c07d9805988784"
REFERENCE = [
    ([], "0" * 64, "0" * 64),
    ([(_A, 100)], _A, "8e16257caa3fe079d484d872a8975264b2ff683b0d6db9028cc7c0f968a45661"),
    ([(_A, 100), (_B, 200), (_C, 300)], "71ec1275fca074724e2dd666921b3277c7cee603e4d025bcab2d4050015be2bc",
     "54e55dccc6653c612bdb5576c5d3cb34bb31bc4e100248abccf4c908b3ef7715"),
    ([(_A, 100)] * 4, "89f2ada89ff8c96763c6b25010e6dd76a4c05b1466207633ea559acf2093211b",
     "2cdba690d0e09563596e0cda626d43eb4c96ef1e994fe72d9b2f5a83cfcd36dd"),
    ([(_A, 100), (_B, 200), (_A, 100), (_B, 200), (_C, 300), (_D, 400)],
     "52c826f99507aa05d0b45e9837fa1709e0485425cfbcb1e80db3905cf98b3ee9",
     "91d21684db364c8883ab8209fa5eb2e781cf07f37e1fa43e731c30839afe422f"),
]


@pytest.mark.parametrize("nodes,xorb,file", REFERENCE)
def test_merkle_hashes_match_xet_core_reference(nodes, xorb, file):
    leaves = [(H.from_hex(h), n) for h, n in nodes]
    assert H.to_hex(H.xorb_hash(leaves)) == xorb
    assert H.to_hex(H.file_hash(leaves)) == file
    streaming = H.FileHasher()
    for leaf in leaves:
        streaming.update(*leaf)
    assert streaming.hexdigest() == file


def test_streaming_file_hash_equals_the_level_by_level_one():
    rng = random.Random(16)
    for n in [*range(1, 60), 257, 4099]:
        leaves = [(rng.randbytes(32), rng.randint(1, 65536)) for _ in range(n)]
        streaming = H.FileHasher()
        for leaf in leaves:
            streaming.update(*leaf)
        assert streaming.digest() == H.file_hash(leaves), n


@pytest.mark.parametrize("size", [1, 3, 4097, 60_000])
def test_file_hash_matches_hf_xet(tmp_path, size):
    """A file under the minimum chunk size is one chunk: its Xet hash from hf_xet's own hasher."""
    hf_xet = pytest.importorskip("hf_xet")
    data = random.Random(size).randbytes(size)
    p = tmp_path / "f"
    p.write_bytes(data)
    if size > 8192:  # more than one chunk maybe: our hash of the whole file is checked through the emulator
        return
    assert H.to_hex(H.file_hash([(H.chunk_hash(data), size)])) == hf_xet.hash_files([str(p)])[0].hash


def test_hex_is_little_endian_words():
    raw = bytes(range(32))
    assert H.to_hex(raw).startswith("0706050403020100")
    assert H.from_hex(H.to_hex(raw)) == raw


@pytest.mark.parametrize("scheme", [C.NONE, C.LZ4, C.BG4_LZ4])
def test_decode_each_scheme(scheme):
    rng = random.Random(scheme)
    pieces = [bytes(rng.randrange(4) for _ in range(n)) for n in (1, 2, 3, 4, 5, 1000, 65_537)]
    xorb = b"".join(C.encode_chunk(p, scheme) for p in pieces)
    got = C.decode_chunks(xorb, len(pieces))
    assert [c.data for c in got] == pieces
    assert [c.hash for c in got] == [H.chunk_hash(p) for p in pieces]


def test_bg4_layout_is_xet_cores():
    data = bytes(range(10))  # groups: 0 4 8 | 1 5 9 | 2 6 | 3 7
    assert C.bg4_split(data) == bytes([0, 4, 8, 1, 5, 9, 2, 6, 3, 7])
    assert C.bg4_regroup(C.bg4_split(data)) == data


@pytest.mark.parametrize("damage", ["payload", "truncated", "oversized", "scheme", "count"])
def test_bad_chunks_are_refused(damage):
    good = C.encode_chunk(b"x" * 5000, C.LZ4)
    if damage == "payload":
        bad = good[:20] + bytes([good[20] ^ 0xFF]) + good[21:]
    elif damage == "truncated":
        bad = good[:-3]
    elif damage == "oversized":
        bad = good[:5] + (C.MAX_CHUNK + 1).to_bytes(3, "little") + good[8:]
    elif damage == "scheme":
        bad = good[:4] + bytes([7]) + good[5:]
    else:
        bad = good
    with pytest.raises(IntegrityError):
        C.decode_chunks(bad, 2 if damage == "count" else None)


def _modes(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out[p.relative_to(root).as_posix()] = stat.S_IMODE(p.lstat().st_mode)
    return out


# -- with the Xet Hub emulator ---------------------------------------------------------------------------------------
try:
    from tests.xethub import XetHub, hf_download
    from tests.xethub import xet_hub as xet_hub  # noqa: F401  (the fixture)
except ImportError:  # the emulator (branch h-xetcas) not merged yet
    XetHub = None

from tests.conftest import cache_tree, run_cli  # noqa: E402

TOKEN = "hf_xet_test_token"
MiB = 1024 * 1024
needs_hub = pytest.mark.skipif(XetHub is None, reason="the Xet Hub emulator (tests/xethub.py) is not here")


def _fetcher(cache_dir: Path, endpoint: str, **kw):
    from hfcache.cache.layout import HubCache
    from hfcache.fetch.fetcher import Fetcher
    from hfcache.fetch.hub import HubClient

    return Fetcher(HubCache(cache_dir), HubClient(endpoint, token=TOKEN), offline=False, **kw)


def _snapshot(cache_dir: Path, endpoint: str, repo: str = "org/m", revision: str = "main", **kw):
    from hfcache.cache.layout import RepoRef

    return _fetcher(cache_dir, endpoint, **kw).snapshot(RepoRef(repo), revision)


def _model(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def _visible(cache_dir: Path) -> list[str]:
    """Everything under any blobs/ or snapshots/ that is not a partial (`.incomplete`) or the store's bookkeeping."""
    out = []
    for p in cache_dir.rglob("*"):
        rel = p.relative_to(cache_dir).as_posix()
        if ".incomplete" in p.name or p.is_dir() or p.name.endswith((".lock", ".refs")) \
                or p.name == ".huggingface-shared-blobs":
            continue
        if "/blobs/" in f"/{rel}" or "/snapshots/" in rel:
            out.append(rel)
    return out


@needs_hub
def test_snapshot_is_the_cache_huggingface_hub_writes_and_each_reads_the_other(xet_hub, tmp_path):
    files = {"model.safetensors": _model(3 * MiB + 123), "sub/weights.bin": _model(70_000, 1),
             "config.json": '{"a": 1}'}
    commit = xet_hub.add_repo("org/m", files)
    ours, oracle = tmp_path / "ours", tmp_path / "oracle"
    result = _snapshot(ours, xet_hub.endpoint)
    assert result.commit == commit and result.stats.xet_files == 2
    assert result.stats.fetched_by_file["model.safetensors"] <= 3 * MiB + 200_000
    assert xet_hub.stats.xorb_bytes > 0 and xet_hub.stats.bridge_bytes == 0
    hf_download(xet_hub.endpoint, oracle, "org/m", token=TOKEN)
    assert cache_tree(ours) == cache_tree(oracle)
    assert _modes(ours) == _modes(oracle)
    store = ours / "blobs"
    assert (store / ".huggingface-shared-blobs").read_text() == "1\n"
    xh = xet_hub.xet_file("org/m", "model.safetensors").xet_hash
    assert (store / xh[:2] / f"{xh}.refs").read_text().startswith("models--org--m/blobs/")
    # each reads the other's cache offline: huggingface_hub reads ours, hfcache reads and verifies the oracle's
    for cache in (ours, oracle):
        env = {"HF_HUB_OFFLINE": "1"}
        code = ("from huggingface_hub import hf_hub_download, try_to_load_from_cache\n"
                f"p = hf_hub_download('org/m', 'model.safetensors', cache_dir={str(cache)!r})\n"
                f"q = try_to_load_from_cache('org/m', 'sub/weights.bin', cache_dir={str(cache)!r})\n"
                "print(open(p, 'rb').read() == open(q, 'rb').read() or 'x', len(open(p,'rb').read()))\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, **env}, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split()[-1] == str(len(files["model.safetensors"]))
        r = run_cli("verify", "--cache-dir", str(cache), env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        r = run_cli("snapshot", "org/m", "--cache-dir", str(cache), env=env)
        assert r.returncode == 0, r.stdout + r.stderr


@needs_hub
def test_a_revision_changing_a_tenth_fetches_a_small_part(xet_hub, tmp_path):
    size = 8 * MiB
    v1 = _model(size, 7)
    cut = size // 2
    v2 = v1[:cut] + _model(size // 10, 8) + v1[cut + size // 10:]
    xet_hub.add_repo("org/m", {"model.safetensors": v1}, revision="main")
    c2 = xet_hub.add_repo("org/m", {"model.safetensors": v2}, revision="v2")
    _snapshot(tmp_path / "c", xet_hub.endpoint, revision="main")
    xet_hub.stats.reset()
    r = _snapshot(tmp_path / "c", xet_hub.endpoint, revision="v2")
    fetched = r.stats.fetched_by_file["model.safetensors"]
    assert r.commit == c2
    assert xet_hub.stats.xorb_bytes == fetched
    out = run_cli("snapshot", "org/m@v2", "--json", "--cache-dir", str(tmp_path / "c"), endpoint=xet_hub.endpoint,
                  env={"HF_TOKEN": TOKEN})
    assert out.returncode == 0 and '"fetched_by_file": {}' in out.stdout.replace("\n", ""), out.stdout
    assert fetched < 0.2 * size, fetched
    assert r.stats.bytes_local > 0.7 * size
    blob = r.path / "model.safetensors"
    assert blob.read_bytes() == v2


@needs_hub
@pytest.mark.parametrize("fault", ["reconstruction_401", "expire_next_xorb", "reset_next_xorb", "corrupt_once"])
def test_transient_faults_are_survived(xet_hub, tmp_path, fault):
    data = _model(3 * MiB, 30 + len(fault))  # apart from other tests' data: the chunk index is per HF_HOME
    xet_hub.add_repo("org/m", {"model.safetensors": data})
    if fault == "corrupt_once":
        xet_hub.faults.corrupt_next_xorb = 1
    else:
        setattr(xet_hub.faults, fault, 1)
    r = _snapshot(tmp_path / "c", xet_hub.endpoint)
    assert (r.path / "model.safetensors").read_bytes() == data
    assert getattr(xet_hub.faults, "corrupt_next_xorb" if fault == "corrupt_once" else fault) == 0  # it happened
    if fault == "reconstruction_401":
        assert xet_hub.stats.token_calls >= 2
    if fault == "expire_next_xorb":
        assert xet_hub.stats.reconstructions >= 2


@needs_hub
def test_a_corrupt_chunk_is_refused_and_nothing_is_visible(xet_hub, tmp_path):
    data = _model(2 * MiB, 4)
    xet_hub.add_repo("org/m", {"model.safetensors": data})
    xet_hub.faults.corrupt_next_xorb = 1000
    with pytest.raises(IntegrityError):
        _snapshot(tmp_path / "c", xet_hub.endpoint)
    assert _visible(tmp_path / "c") == []
    r = run_cli("snapshot", "org/m", "--cache-dir", str(tmp_path / "c2"), endpoint=xet_hub.endpoint,
                env={"HF_TOKEN": TOKEN})
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert len((r.stdout + r.stderr).strip().splitlines()) == 1, r.stderr
    assert _visible(tmp_path / "c2") == []


@needs_hub
def test_an_interrupted_file_resumes_where_it_stopped(xet_hub, tmp_path):
    from hfcache.progress import Progress

    size = 12 * MiB
    data = _model(size, 5)
    xet_hub.add_repo("org/m", {"model.safetensors": data})

    class Crash(Progress):
        written = 0

        def advance(self, n: int) -> None:
            self.written += n
            if self.written > size // 2:
                raise KeyboardInterrupt  # as a kill would leave it: bytes and record on disk, nothing published

    with pytest.raises(KeyboardInterrupt):
        _snapshot(tmp_path / "c", xet_hub.endpoint, progress=Crash())
    assert _visible(tmp_path / "c") == []
    partials = list((tmp_path / "c").rglob("*.hfcache-xet.incomplete"))
    assert partials and partials[0].stat().st_size > 0
    xet_hub.stats.reset()
    r = _snapshot(tmp_path / "c", xet_hub.endpoint)
    assert (r.path / "model.safetensors").read_bytes() == data
    assert xet_hub.stats.xorb_bytes < 0.75 * size
    assert not list((tmp_path / "c").rglob("*.incomplete*"))


@needs_hub
@pytest.mark.parametrize("how", ["HF_HUB_DISABLE_XET", "no_xet"])
def test_without_xet_the_http_path_stays(xet_hub, tmp_path, how):
    data = _model(2 * MiB, 6)
    xet_hub.add_repo("org/m", {"model.safetensors": data})
    env = {"HF_TOKEN": TOKEN}
    if how == "no_xet":
        xet_hub.faults.no_xet = True
    else:
        env[how] = "1"
    r = run_cli("snapshot", "org/m", "--cache-dir", str(tmp_path / "c"), endpoint=xet_hub.endpoint, env=env)
    assert r.returncode == 0, r.stderr
    assert xet_hub.stats.xorb_bytes == 0 and xet_hub.stats.bridge_bytes == len(data)
    assert not (tmp_path / "c" / "blobs").exists()
    hf_download(xet_hub.endpoint, tmp_path / "oracle", "org/m", token=TOKEN, env={how: "1"} if how != "no_xet" else {})
    assert cache_tree(tmp_path / "c") == cache_tree(tmp_path / "oracle")


@needs_hub
def test_shared_blobs_disabled_gives_plain_blobs_from_xet(xet_hub, tmp_path):
    data = _model(2 * MiB, 9)
    xet_hub.add_repo("org/m", {"model.safetensors": data})
    env = {"HF_TOKEN": TOKEN, "HF_HUB_DISABLE_SHARED_BLOBS": "1"}
    r = run_cli("snapshot", "org/m", "--cache-dir", str(tmp_path / "c"), endpoint=xet_hub.endpoint, env=env)
    assert r.returncode == 0, r.stderr
    assert xet_hub.stats.xorb_bytes > 0 and xet_hub.stats.bridge_bytes == 0
    hf_download(xet_hub.endpoint, tmp_path / "oracle", "org/m", token=TOKEN, env={"HF_HUB_DISABLE_SHARED_BLOBS": "1"})
    assert cache_tree(tmp_path / "c") == cache_tree(tmp_path / "oracle")
    assert not (tmp_path / "c" / "blobs").exists()


@needs_hub
def test_verify_and_scan_understand_the_shared_store(xet_hub, tmp_path):
    data = _model(2 * MiB, 10)
    xet_hub.add_repo("org/m", {"model.safetensors": data})
    xet_hub.add_repo("org/n", {"model.safetensors": data})
    cache = tmp_path / "c"
    _snapshot(cache, xet_hub.endpoint, repo="org/m")
    xet_hub.stats.reset()
    r = _snapshot(cache, xet_hub.endpoint, repo="org/n")
    assert xet_hub.stats.xorb_bytes == 0 and r.stats.files_reused == 1  # linked from the store, nothing fetched
    xh = xet_hub.xet_file("org/m", "model.safetensors").xet_hash
    entry = cache / "blobs" / xh[:2] / xh
    assert len(Path(f"{entry}.refs").read_text().splitlines()) == 2
    ok = run_cli("verify", "--cache-dir", str(cache))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    scan = run_cli("scan", "--cache-dir", str(cache))
    assert scan.returncode == 0 and "shared store 1 file" in scan.stdout.replace("\n", " "), scan.stdout
    refs = Path(f"{entry}.refs")
    refs.write_text(refs.read_text().splitlines()[0] + "\n")  # one link unlisted: huggingface_hub's GC may drop it
    warned = run_cli("verify", "--cache-dir", str(cache))
    assert "store-ref-missing: models--org--n/blobs/" in warned.stdout + warned.stderr, warned.stdout + warned.stderr
    os.chmod(entry, 0o644)
    with open(entry, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff" if data[1000] != 0xFF else b"\x00")
    bad = run_cli("verify", "--cache-dir", str(cache))
    assert bad.returncode == 1 and "hash-mismatch" in bad.stdout + bad.stderr


@needs_hub
def test_download_export_import_and_rm_of_a_xet_cache(xet_hub, tmp_path):
    data = _model(2 * MiB, 11)
    xet_hub.add_repo("org/m", {"model.safetensors": data, "config.json": "{}"})
    cache, oracle = tmp_path / "c", tmp_path / "oracle"
    env = {"HF_TOKEN": TOKEN}
    r = run_cli("download", "org/m", "model.safetensors", "--cache-dir", str(cache), endpoint=xet_hub.endpoint,
                env=env)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip().splitlines()[-1]).read_bytes() == data
    hf_download(xet_hub.endpoint, oracle, "org/m", "model.safetensors", token=TOKEN)
    assert cache_tree(cache) == cache_tree(oracle)
    bundle = tmp_path / "b.tar"
    assert run_cli("export", "org/m", "-o", str(bundle), "--cache-dir", str(cache)).returncode == 0
    imported = tmp_path / "imported"
    r = run_cli("import", str(bundle), "--cache-dir", str(imported))
    assert r.returncode == 0, r.stderr
    assert cache_tree(imported) == cache_tree(cache)
    assert run_cli("verify", "--cache-dir", str(imported)).returncode == 0
    r = run_cli("rm", "org/m", "--yes", "--cache-dir", str(cache))
    assert r.returncode == 0, r.stderr
    xh = xet_hub.xet_file("org/m", "model.safetensors").xet_hash
    assert not (cache / "blobs" / xh[:2] / xh).exists()  # the store entry went with its last link


@needs_hub
def test_a_killed_download_resumes(xet_hub, tmp_path):
    """SIGKILL in the middle of a file (no cleanup, no buffered write flushed): the next run keeps what the record
    proves and fetches the rest."""
    import signal

    size = 12 * MiB
    data = _model(size, 12)
    xet_hub.add_repo("org/m", {"model.safetensors": data})
    cache = tmp_path / "c"
    code = f"""
import os, signal
from hfcache.cache.layout import HubCache, RepoRef
from hfcache.fetch.fetcher import Fetcher
from hfcache.fetch.hub import HubClient
from hfcache.progress import Progress

class Kill(Progress):
    n = 0
    def advance(self, k):
        self.n += k
        if self.n > {size * 2 // 3}:
            os.kill(os.getpid(), signal.SIGKILL)

Fetcher(HubCache({str(cache)!r}), HubClient({xet_hub.endpoint!r}, token={TOKEN!r}), offline=False,
        progress=Kill()).snapshot(RepoRef("org/m"))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert _visible(cache) == []
    xet_hub.stats.reset()
    r = _snapshot(cache, xet_hub.endpoint)
    assert (r.path / "model.safetensors").read_bytes() == data
    assert xet_hub.stats.xorb_bytes < 0.5 * size, xet_hub.stats.xorb_bytes
    assert not list(cache.rglob("*.incomplete*"))


@needs_hub
def test_chunks_on_disk_that_went_bad_are_fetched_instead(xet_hub, tmp_path):
    size = 4 * MiB
    v1 = _model(size, 13)
    v2 = v1[: size // 2] + _model(size // 10, 14) + v1[size // 2 + size // 10:]
    xet_hub.add_repo("org/m", {"model.safetensors": v1}, revision="main")
    xet_hub.add_repo("org/m", {"model.safetensors": v2}, revision="v2")
    cache = tmp_path / "c"
    _snapshot(cache, xet_hub.endpoint, revision="main")
    xh = xet_hub.xet_file("org/m", "model.safetensors", revision="main").xet_hash
    entry = cache / "blobs" / xh[:2] / xh
    st = entry.stat()
    os.chmod(entry, 0o644)
    with open(entry, "r+b") as f:  # same size, same mtime: only the chunk hashes can tell
        f.seek(100)
        f.write(bytes(b ^ 0xFF for b in v1[100:200]))
    os.utime(entry, ns=(st.st_atime_ns, st.st_mtime_ns))
    xet_hub.stats.reset()
    r = _snapshot(cache, xet_hub.endpoint, revision="v2")
    assert (r.path / "model.safetensors").read_bytes() == v2
    assert xet_hub.stats.xorb_bytes > 0.2 * size  # the spoilt range came from the CAS, not the disk


@needs_hub
def test_real_chunks_of_every_scheme_are_decoded(xet_hub, tmp_path):
    """hf_xet's own uploads: float weights come out byte-grouped + LZ4, text LZ4, random bytes stored as is."""
    from collections import Counter

    from tests.xetcas_format import xorb_chunks
    from tests.xethub import sample_files

    files = sample_files(seed=21)
    xet_hub.add_repo("org/m", files)
    schemes = Counter(c.scheme for x in (xet_hub.root / "xorbs").iterdir() for c in xorb_chunks(x.read_bytes()))
    assert set(schemes) == {C.NONE, C.LZ4, C.BG4_LZ4}, schemes
    r = _snapshot(tmp_path / "c", xet_hub.endpoint)
    assert r.stats.xet_files == len(files)
    for path, data in files.items():
        assert (r.path / path).read_bytes() == data


def test_a_hostile_reconstruction_is_one_endpoint_error():
    """Nesting deep enough to exhaust the parser's recursion is refused like any other bad answer."""
    from hfcache.errors import EndpointError
    from hfcache.xet import recon

    for body in (b"[" * 100_000, b'{"terms": 5}', b"null"):
        with pytest.raises(EndpointError):
            recon.parse(body, "the CAS")
    assert recon.MAX_RECON_BYTES <= 64 * 1024 * 1024
