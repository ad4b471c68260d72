"""The transfer engine under faults, kills and concurrency: every run ends with correct blobs or a clear error,
and never with a corrupt or partial file under a blob name or a snapshot path."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hfcache.cache.hashing import hash_file, kind_of
from hfcache.server.faults import Fault
from tests.conftest import build_hub, det_bytes, run_cli, wait_for, wait_until_served

BIG = det_bytes(3_000_000, 11)
FILES = {"big.bin": BIG, "w.safetensors": det_bytes(1_500_000, 12), "config.json": '{"a": 1}\n',
         "sub/notes.txt": "notes\n"}
# A stall is noticed after 1 s: only for the stall fault, whose silence (10 s) the client must notice even when a
# loaded machine starves it for seconds. Every other run waits patiently: a read timeout on a busy box would add a
# retried request to logs whose every request the tests count.
FAST = {"HF_HUB_DOWNLOAD_TIMEOUT": "1"}
PATIENT = {"HF_HUB_DOWNLOAD_TIMEOUT": "60", "HF_HUB_ETAG_TIMEOUT": "60"}
CDN_NAMES = {hashlib.sha256(d).hexdigest(): n.rsplit("/", 1)[-1] for n, d in FILES.items() if isinstance(d, bytes)}


@pytest.fixture(scope="module")
def fhub(tmp_path_factory):
    h = build_hub(tmp_path_factory.mktemp("fhub"), cdn_host="localhost", repos={("org/big", "model", "main"): FILES})
    yield h
    h.server.stop()


@pytest.fixture(autouse=True)
def _no_faults_left(fhub):
    fhub.app.faults.clear()
    yield
    fhub.app.faults.clear()


def assert_clean(cache: Path) -> None:
    """Every blob-named file hashes to its name; every snapshot entry resolves to such a blob; only
    `.incomplete` partials (never linked) may remain."""
    for blob in cache.glob("*/blobs/*"):
        kind = kind_of(blob.name)
        if kind is None:
            assert blob.name.endswith((".incomplete", ".incomplete.parts")), blob
        else:
            assert hash_file(blob, kind) == blob.name, f"corrupt blob {blob}"
    for entry in cache.glob("*/snapshots/**/*"):
        if entry.is_symlink() or entry.is_file():
            target = entry.resolve()
            assert target.is_file() and kind_of(target.name), entry


def assert_complete(cache: Path, commit: str) -> None:
    snap = cache / "models--org--big" / "snapshots" / commit
    for rel, data in FILES.items():
        expected = data.encode() if isinstance(data, str) else data
        assert (snap / rel).read_bytes() == expected, rel
    assert not list(cache.glob("*/blobs/*.incomplete*"))
    assert_clean(cache)


def snapshot(hub, cache: Path, *extra: str, env: dict | None = None):
    return run_cli("snapshot", "org/big", "--cache-dir", str(cache), *extra, endpoint=hub.url,
                   env={**PATIENT, **(env or {})})


SPLIT = ["--part-size", "1"]  # 3 MB file -> 3 parallel range parts


@pytest.fixture
def fired(fhub, monkeypatch) -> list[int]:
    """Where each injected fault fired: the index in `fhub.app.log` of the request it hit (the server keeps the
    record of the request being handled in a context variable, which follows it across awaits and threads)."""
    from hfcache.server.app import CURRENT_REQUEST

    events: list[int] = []
    take = fhub.app.faults.take

    def spy(path, kinds=None):
        fault = take(path, kinds)
        if fault is not None:
            record, log = CURRENT_REQUEST.get(), list(fhub.app.log)
            events.append(max(i for i, r in enumerate(log) if r is record))
        return fault

    monkeypatch.setattr(fhub.app.faults, "take", spy)
    return events


def _file_of(path: str) -> str:
    """The repo file a data request is for: the resolve URL's last part, or the CDN URL's sha256 looked up."""
    head, _, last = path.rpartition("/")
    return CDN_NAMES.get(last, last) if head == "cdn" else last


def assert_retried(log: list, index: int) -> None:
    """The request a fault hit was asked again later: the same file (at the endpoint or the CDN URL it redirected
    to) and, for a part, the same part (a range with the same end; a resumed one starts later)."""
    hit = log[index]

    def end(r) -> str | None:
        return r.range.rsplit("-", 1)[1] if r.range else None

    again = [r for r in log[index + 1:] if r.method == "GET" and _file_of(r.path) == _file_of(hit.path)
             and (hit.range is None or r.range is None or end(r) == end(hit))]
    assert again, f"no retry of {hit.path} {hit.range}"


FAULTS = {  # a fresh Fault per test: a shared one is used up by the first run and injects nothing after
    "reset-big.bin": lambda: Fault("reset", "big.bin"),
    "short-big.bin": lambda: Fault("short", "big.bin"),
    "corrupt-big.bin": lambda: Fault("corrupt", "big.bin"),
    "stall-big.bin": lambda: Fault("stall", "big.bin", seconds=10),  # noticed after 1 s (FAST)
    "429-big.bin": lambda: Fault("429", "big.bin", seconds=1),
    "500-big.bin": lambda: Fault("500", "big.bin"),
    "503-config.json": lambda: Fault("503", "config.json", times=2),
    "expired-big.bin": lambda: Fault("expired", "big.bin"),
    "reset-cdn/": lambda: Fault("reset", "cdn/", times=2),
}


@pytest.mark.parametrize("mode", ["stream", "parts"])
@pytest.mark.parametrize("make_fault", list(FAULTS.values()), ids=list(FAULTS))
def test_transient_faults_are_recovered_with_correct_blobs(fhub, tmp_path, make_fault, mode, fired):
    fault = make_fault()
    wanted = fault.times
    fhub.app.faults.add(fault)
    before = len(fhub.app.log)
    r = snapshot(fhub, tmp_path, *(SPLIT if mode == "parts" else []), env=FAST if fault.kind == "stall" else None)
    assert r.returncode == 0, r.stderr
    assert fault.times == 0 and len(fired) == wanted  # the fault really fired, as often as asked
    log = list(fhub.app.log)
    assert all(i >= before for i in fired)
    for index in fired:
        assert_retried(log, index)
    if mode == "parts" and fault.match != "config.json":  # it hit one range part of a multi-part download
        hits = [(_file_of(log[i].path), log[i].range) for i in fired]
        # big.bin goes in parts (a `cdn/` fault may also hit w.safetensors, fetched in one request)
        assert all(rng is not None for name, rng in hits if name == "big.bin"), hits
    assert_complete(tmp_path, fhub.commit("org/big"))


def test_expired_redirect_is_resolved_again_without_sending_the_token(fhub, tmp_path):
    fhub.app.faults.add(Fault("expired", "big.bin"))
    before = len(fhub.app.log)
    r = snapshot(fhub, tmp_path, env={"HF_TOKEN": "hf_secret"})
    assert r.returncode == 0, r.stderr
    log = list(fhub.app.log)[before:]
    big = [x for x in log if x.path.endswith("big.bin")]
    assert len(big) == 2  # resolved twice: the first redirect target had expired
    assert all(x.authorization is None for x in log if x.path.startswith("cdn/"))
    assert_complete(tmp_path, fhub.commit("org/big"))


@pytest.mark.parametrize(("fault", "needle"), [
    (Fault("500", "big.bin", times=-1), "giving up"),
    (Fault("reset", "big.bin", times=-1, after=1000), "giving up"),
    (Fault("corrupt", "cdn/", times=-1), "corrupt download"),
])
def test_persistent_faults_end_in_one_clear_line_and_nothing_visible(fhub, tmp_path, fault, needle):
    fhub.app.faults.add(fault)
    r = snapshot(fhub, tmp_path, "--retries", "2")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert needle in r.stderr
    snap = tmp_path / "models--org--big" / "snapshots" / fhub.commit("org/big")
    assert not (snap / "big.bin").exists() and not (snap / "big.bin").is_symlink()
    assert_clean(tmp_path)


def test_interrupted_download_resumes_without_refetching_prefix(fhub, tmp_path):
    fhub.app.faults.add(Fault("reset", "big.bin", times=-1, after=1_200_000))
    r = snapshot(fhub, tmp_path, "--retries", "0")
    assert r.returncode == 1
    record = next(tmp_path.glob("*/blobs/*.incomplete.parts"))
    done = sum(d for _, _, d in json.loads(record.read_text())["parts"])
    assert 1_000_000 <= done <= 1_200_000  # what arrived before the reset, all of it kept
    fhub.app.faults.clear()
    before = len(fhub.app.log)
    assert snapshot(fhub, tmp_path).returncode == 0
    big = [x for x in list(fhub.app.log)[before:] if x.path.startswith("cdn/")]
    assert [x.range for x in big] == [f"bytes={done}-{len(BIG) - 1}"]
    assert_complete(tmp_path, fhub.commit("org/big"))


def test_kill_9_at_random_points_then_rerun_completes(fhub, tmp_path):
    rng = random.Random(1234)
    commit = fhub.commit("org/big")
    resumed_trials = 0
    for trial in range(10):
        fhub.app.faults.clear()
        fhub.app.faults.add(Fault("slow", "cdn/", times=-1, rate=1_500_000))
        cache = tmp_path / f"c{trial}"
        extra = SPLIT if trial % 2 else []
        env = {**os.environ, **PATIENT, "HF_ENDPOINT": fhub.url}
        proc = subprocess.Popen([sys.executable, "-m", "hfcache", "snapshot", "org/big", "--cache-dir", str(cache),
                                 *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # the kill lands once a random share of the bytes is on disk: an observable point, not a guessed delay
        target = int(rng.uniform(0.1, 0.8) * (len(BIG) + 1_500_000))
        try:
            wait_for(lambda c=cache, t=target, p=proc: bytes_on_disk(c) >= t or p.poll() is not None,
                     f"{target} bytes on disk")
        finally:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert_clean(cache)
        recorded = {}  # blob -> (bytes kept, offsets where unfinished parts stand)
        for rec in cache.glob("*/blobs/*.incomplete.parts"):
            parts = json.loads(rec.read_text())["parts"]
            recorded[rec.name.split(".")[0]] = (sum(d for _, _, d in parts), [s + d for s, e, d in parts if s + d < e])
        fhub.app.faults.clear()
        # A request the killed process sent just before its end may reach the server's loop only now: not a
        # request of the rerun, whose log is what is checked below.
        wait_until_served(fhub, "the server to be done with the killed process's requests")
        before = len(fhub.app.log)
        r = snapshot(fhub, cache, *extra)
        assert r.returncode == 0, r.stderr
        assert_complete(cache, commit)
        # Bytes recorded as written are never asked for again: each unfinished part restarts at its offset.
        log = list(fhub.app.log)[before:]
        for sha, (kept, offsets) in recorded.items():
            if kind_of(sha) != "sha256":
                continue
            resumed_trials += kept > 0
            starts = sorted(int(x.range.split("=")[1].split("-")[0]) if x.range else 0
                            for x in log if x.path == f"cdn/{sha}")
            assert starts == sorted(offsets), (sha, kept, offsets, starts)
    assert resumed_trials >= 3  # the kills really landed mid-download


def bytes_on_disk(cache: Path) -> int:
    """Bytes written under `blobs/` so far: partials are created at full size and filled in place (sparse), so
    their allocated blocks, not their size, tell how far a download got. A partial renamed into place (or
    removed) between the listing and its stat is skipped: it is counted on the next look."""
    total = 0
    for p in cache.glob("*/blobs/*"):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            total += st.st_blocks * 512
    return total


def test_partials_of_finished_blobs_are_swept_and_others_kept(fhub, tmp_path):
    """A dead process's partials of a blob that another run (or tool) has finished since are garbage; the
    partial of a blob still missing is kept for resuming."""
    cache = tmp_path / "c"
    assert snapshot(fhub, cache).returncode == 0
    blobs = next(cache.glob("*/blobs"))
    done = next(p.name for p in blobs.iterdir() if kind_of(p.name) == "sha256")
    planted = [blobs / f"{done}.incomplete", blobs / f"{done}.incomplete.parts", blobs / f"{done}.0badf00d.incomplete"]
    for p in planted:
        p.write_bytes(b"left by a killed process")
    pending = blobs / f"{'ab' * 32}.incomplete"
    pending.write_bytes(b"a download to resume one day")
    r = snapshot(fhub, cache)
    assert r.returncode == 0, r.stderr
    assert not any(p.exists() for p in planted)
    assert pending.exists()


def test_concurrent_snapshots_fetch_each_blob_once(fhub, tmp_path):
    fhub.app.faults.add(Fault("slow", "cdn/", times=-1, rate=4_000_000))
    before = len(fhub.app.log)
    env = {**os.environ, **PATIENT, "HF_ENDPOINT": fhub.url}
    procs = [subprocess.Popen([sys.executable, "-m", "hfcache", "snapshot", "org/big", "--cache-dir", str(tmp_path)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    assert len({o.strip() for o, _ in outs}) == 1
    gets = [x for x in list(fhub.app.log)[before:] if x.method == "GET" and "/resolve/" in x.path]
    assert sorted(x.path.rsplit("/", 1)[-1] for x in gets) == sorted(["big.bin", "w.safetensors", "config.json",
                                                                      "notes.txt"])
    assert_complete(tmp_path, fhub.commit("org/big"))


def test_lock_left_by_a_killed_process_does_not_block(fhub, tmp_path):
    from hfcache.cache.layout import HubCache, RepoRef

    meta = fhub.app.catalog.get(RepoRef("org/big")).commits[fhub.commit("org/big")]["big.bin"].meta
    lock = HubCache(tmp_path).lock_path(RepoRef("org/big"), meta.etag)
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", f"from filelock import FileLock\nimport time\n"
                               f"l = FileLock({str(lock)!r}); l.acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    r = snapshot(fhub, tmp_path)
    assert r.returncode == 0, r.stderr
    assert_complete(tmp_path, fhub.commit("org/big"))


def test_never_writes_through_a_link_leading_out_of_the_cache(fhub, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = tmp_path / "cache" / "models--org--big"
    repo.mkdir(parents=True)
    (repo / "blobs").symlink_to(outside)
    r = snapshot(fhub, tmp_path / "cache")
    assert r.returncode == 1 and "leads outside the cache" in r.stderr
    assert list(outside.iterdir()) == []


def test_peak_memory_stays_flat_for_a_large_file(tmp_path):
    size = 256 * 1024 * 1024
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "huge.bin", "wb") as f:
        f.truncate(size)  # sparse: cheap to make, still 256 MiB on the wire
    h = build_hub(tmp_path / "hub", repos={})
    try:
        from hfcache.cache.layout import RepoRef

        h.app.catalog.add_folder(RepoRef("org/huge"), src)
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent (here, pytest).
        script = ("import sys\nfrom hfcache.cli import main\nsys.argv = ['hfcache'] + sys.argv[1:]\n"
                  "try:\n    main()\nfinally:\n"
                  "    print([ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0], file=sys.stderr)\n")
        p = subprocess.run([sys.executable, "-c", script, "snapshot", "org/huge", "--cache-dir", str(tmp_path / "c"),
                            "--part-size", "16"], env={**os.environ, "HF_ENDPOINT": h.url},
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        peak_mb = int(p.stderr.split("VmHWM:")[-1].split()[0]) / 1024
        assert 20 < peak_mb < 150, f"peak RSS {peak_mb:.0f} MB"
        assert (tmp_path / "c" / "models--org--huge").is_dir()
    finally:
        h.server.stop()


def test_multi_part_download_without_pwrite_and_preadv(fhub, tmp_path, monkeypatch):
    """Where `os.pwrite`/`os.preadv` do not exist (Windows), parts are written and hashed through a seek under
    one lock: parallel parts of one file still land in place and hash right."""
    from hfcache.cache.layout import HubCache, RepoRef
    from hfcache.fetch.fetcher import Fetcher
    from hfcache.fetch.hub import HubClient
    from hfcache.fetch.transfer import TransferOptions

    monkeypatch.delattr(os, "pwrite")
    monkeypatch.delattr(os, "preadv")
    seeks = []
    real_lseek = os.lseek
    monkeypatch.setattr(os, "lseek", lambda fd, pos, how: seeks.append(pos) or real_lseek(fd, pos, how))
    options = TransferOptions(connections=4, part_size=256 * 1024, split_threshold=1024 * 1024)
    fetcher = Fetcher(HubCache(tmp_path), client=HubClient(fhub.url), transfer_options=options, processes=1)
    fhub.app.faults.add(Fault("reset", "big.bin", after=300_000))  # a retried part resumes mid-part, too
    before = len(fhub.app.log)
    result = fetcher.snapshot(RepoRef("org/big"))
    assert result.stats.files_fetched == len(FILES)
    assert_complete(tmp_path, fhub.commit("org/big"))
    starts = {int(r.range.split("=")[1].split("-")[0]) for r in list(fhub.app.log)[before:]
              if r.range and r.path.startswith("cdn/")}
    assert len(starts) > 10  # many parts of the two large files, fetched as ranges
    assert len(seeks) > 20 and any(pos % (256 * 1024) for pos in seeks)  # the fallback wrote and read them


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name an fsynced descriptor")
def test_blobs_and_refs_are_fsynced_before_the_rename_that_publishes_them(fhub, tmp_path, monkeypatch):
    """A power loss after a rename must not leave a blob or ref with missing bytes under its final name: each
    published file's bytes are fsynced before its rename, and the folders after."""
    from hfcache.cache.layout import HubCache, RepoRef
    from hfcache.fetch.fetcher import Fetcher
    from hfcache.fetch.hub import HubClient

    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst, **kw):
        events.append(("replace", os.fspath(src), os.fspath(dst)))
        real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    Fetcher(HubCache(tmp_path), client=HubClient(fhub.url), processes=1).snapshot(RepoRef("org/big"))
    assert_complete(tmp_path, fhub.commit("org/big"))
    repo = tmp_path / "models--org--big"
    def publishes(e: tuple[str, ...]) -> bool:
        dst = Path(e[2]) if e[0] == "replace" else None
        return dst is not None and (dst.parent == repo / "refs" or dst.parent == repo / "blobs" and kind_of(dst.name))

    published = [(i, e) for i, e in enumerate(events) if publishes(e)]
    assert len(published) == len(FILES) + 1  # every blob, and refs/main
    for i, (_, src, dst) in published:
        assert ("fsync", src) in events[:i], f"{dst} renamed into place before its bytes were synced"
    last_blob = max(i for i, e in published if Path(e[2]).parent == repo / "blobs")
    assert ("fsync", str(repo / "blobs")) in events[last_blob:]  # the folder's entries, once, after the renames


def test_an_older_hfcache_partial_is_taken_over_and_resumed(fhub, tmp_path):
    """`<etag>.incomplete` + `.parts`, as hfcache named a partial before (the name huggingface_hub 0.x/1.x resume
    from): renamed to our names under the blob's lock, and resumed from its record."""
    sha = hashlib.sha256(BIG).hexdigest()
    blobs = tmp_path / "models--org--big" / "blobs"
    blobs.mkdir(parents=True)
    with open(blobs / f"{sha}.incomplete", "wb") as f:
        f.truncate(len(BIG))
        f.write(BIG[:1_000_000])
    (blobs / f"{sha}.incomplete.parts").write_text(json.dumps(
        {"etag": sha, "size": len(BIG), "parts": [[0, len(BIG), 1_000_000]]}))
    before = len(fhub.app.log)
    assert snapshot(fhub, tmp_path).returncode == 0
    big = [x for x in list(fhub.app.log)[before:] if x.path == f"cdn/{sha}"]
    assert [x.range for x in big] == [f"bytes=1000000-{len(BIG) - 1}"]
    assert_complete(tmp_path, fhub.commit("org/big"))
    assert sorted(p.name for p in blobs.iterdir() if sha in p.name) == [sha]


def test_partial_names_are_none_that_any_huggingface_hub_uses():
    """Ours vs theirs: 0.x/1.x resume `<etag>.incomplete`; 2.x writes `<etag>.<8 hex>.incomplete` and probes with
    `tmp_<uuid4>`. The installed 2.x's source is checked, so this fails when its naming moves."""
    import inspect
    import re

    from huggingface_hub import file_download

    from hfcache.cache.paths import FOREIGN_PRIVATE, LEGACY, PRIVATE, RECORD, RESUMABLE, partial_of, partial_paths

    src = inspect.getsource(file_download)
    assert 'f"{incomplete_path.stem}.{uuid.uuid4().hex[:8]}.incomplete"' in src
    assert 'incomplete_path=Path(blob_path + ".incomplete")' in src
    assert 'src.parent / f"tmp_{uuid.uuid4()}"' in src
    sha = "ab" * 32
    paths = partial_paths(Path("/c/models--o--r/blobs") / sha)
    ours = [paths.path.name, paths.record.name, paths.record_tmp.name, paths.private().name, paths.private().name]
    theirs = re.compile(rf"{sha}(\.[0-9a-f]{{8}})?\.incomplete|tmp_[0-9a-f-]{{36}}")
    assert not [n for n in ours if theirs.fullmatch(n)]
    assert [partial_of(n) for n in ours[:2]] == [(sha, RESUMABLE), (sha, RECORD)]
    assert partial_of(ours[3]) == (sha, PRIVATE) and ours[3] != ours[4]
    assert partial_of(f"{sha}.incomplete") == (sha, LEGACY)
    assert partial_of(f"{sha}.0123abcd.incomplete") == (sha, FOREIGN_PRIVATE)
    assert partial_of(sha) is None and partial_of(f"{sha}.lock") is None


def _write_past_one_flush(tmp_path, partfile):
    from hfcache.cache.paths import partial_paths

    size = 2 * partfile.FLUSH_EVERY_BYTES
    pf = partfile.PartFile(partial_paths(tmp_path / ("ab" * 32)), "ab" * 32, size)
    pf.open(size)
    chunk = b"\0" * (1024 * 1024)
    for _ in range(partfile.FLUSH_EVERY_BYTES // len(chunk) + 1):
        pf.write(pf.parts[0], chunk)
    return pf


@pytest.mark.parametrize("has_sync_file_range", [True, False])
def test_a_large_partial_is_flushed_to_the_disk_while_it_is_written(tmp_path, monkeypatch, has_sync_file_range):
    """So that the fsync before publishing finds only the tail: every 32 MiB a background thread starts the
    bytes for the disk with `sync_file_range` (which takes no inode lock, so the writers never wait on it), or
    `fdatasync` where there is no `sync_file_range`."""
    import threading

    from hfcache.cache import partfile

    started, synced = threading.Event(), threading.Event()
    real_start, real_sync = partfile.start_writeback, getattr(os, "fdatasync", os.fsync)

    def start(fd):
        started.set()
        return real_start(fd) if has_sync_file_range else False

    monkeypatch.setattr(partfile, "start_writeback", start)
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.set(), real_sync(fd))[1], raising=False)
    pf = _write_past_one_flush(tmp_path, partfile)
    assert started.wait(30)  # while the file is still being written
    if has_sync_file_range:
        pf.discard()  # the flusher stopped: it never fell back to fdatasync
        assert not synced.is_set()
    else:
        assert synced.wait(30)
        pf.discard()
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_start_writeback_works_on_linux(tmp_path):
    from hfcache.cache import partfile

    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * 65536)
        assert partfile.start_writeback(fd) is True
        assert partfile.start_writeback(fd) is True  # waits for the first round, starts none: still fine
    finally:
        os.close(fd)
    assert path.read_bytes() == b"x" * 65536
