"""Many small files shared by worker processes: the same cache as huggingface_hub writes, every file fetched
once, progress for all of them, and a worker's failure reported in one line with nothing corrupt left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from hfcache.cache.layout import HubCache, RepoRef
from hfcache.fetch.fetcher import Fetcher
from hfcache.server.faults import Fault
from tests.conftest import build_hub, cache_tree, det_bytes, run_cli, wait_for
from tests.test_transfer import assert_clean

FILES = {f"shard{i % 4}/f{i:03d}.json": det_bytes(3000 + i, 100 + i) for i in range(60)}
FILES["weights.bin"] = det_bytes(1_500_000, 7)
FILES["copy/same.json"] = FILES["shard0/f000.json"]  # two names, one blob


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    h = build_hub(tmp_path_factory.mktemp("many"), cdn_host="localhost",
                  repos={("org/many", "model", "main"): FILES})
    yield h
    h.server.stop()


@pytest.fixture(autouse=True)
def _no_faults_left(many):
    many.app.faults.clear()
    many.app.log.clear()
    yield
    many.app.faults.clear()


def resolved(hub) -> Counter:
    return Counter(r.path.rsplit("/", 1)[-1] for r in hub.requests("/resolve/") if r.method == "GET")


def test_workers_write_the_cache_huggingface_hub_writes(many, tmp_path):
    ours = run_cli("snapshot", "org/many", "--cache-dir", str(tmp_path / "ours"), "--processes", "3", "--json",
                   endpoint=many.url)
    assert ours.returncode == 0, ours.stderr
    stats = json.loads(ours.stdout)
    assert stats["files_fetched"] + stats["files_reused"] == len(FILES)
    assert stats["bytes_fetched"] == sum(len(d) for d in set(FILES.values()))
    # each distinct blob was asked for once, whichever process fetched it
    assert sum(resolved(many).values()) == len(set(FILES.values()))

    from huggingface_hub import snapshot_download

    snapshot_download("org/many", cache_dir=tmp_path / "theirs", endpoint=many.url)
    assert cache_tree(tmp_path / "ours") == cache_tree(tmp_path / "theirs")


def test_progress_reports_every_file_from_every_process(many, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", many.url)
    seen: list[tuple[str, int, bool]] = []
    advanced: list[int] = []

    from hfcache.progress import Progress

    class Recorder(Progress):  # (a lock wait is told too: two names of one blob may meet in two processes)
        def start(self, files: int, total_bytes: int) -> None: ...
        def advance(self, nbytes: int) -> None: advanced.append(nbytes)
        def file_done(self, path: str, size: int, fetched: bool) -> None: seen.append((path, size, fetched))

    from hfcache.fetch.hub import HubClient

    fetcher = Fetcher(HubCache(tmp_path / "c"), client=HubClient(many.url), progress=Recorder(), processes=2)
    result = fetcher.snapshot(RepoRef("org/many"))
    assert sorted(p for p, _, _ in seen) == sorted(FILES)
    assert sum(advanced) == sum(len(d) for d in set(FILES.values()))  # two names, one blob: fetched once
    assert result.stats.files_fetched + result.stats.files_reused == len(FILES)
    assert_clean(tmp_path / "c")


def test_a_failing_worker_ends_in_one_line_and_a_rerun_finishes(many, tmp_path):
    cache = tmp_path / "c"
    small = sorted(f for f, d in FILES.items() if len(d) < 1024 * 1024)
    failing = [small[5], small[-7]]  # whichever process takes them
    many.app.faults.add(*(Fault("500", name, times=-1) for name in failing))
    bad = run_cli("snapshot", "org/many", "--cache-dir", str(cache), "--processes", "3", "--retries", "1",
                  endpoint=many.url)
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "HTTP 500" in lines[0] and "Traceback" not in bad.stderr, bad.stderr
    assert_clean(cache)
    snap = next((cache / "models--org--many" / "snapshots").iterdir())
    assert not any((snap / name).exists() for name in failing)

    many.app.faults.clear()
    many.app.log.clear()
    good = run_cli("snapshot", "org/many", "--cache-dir", str(cache), "--processes", "3", endpoint=many.url)
    assert good.returncode == 0, good.stderr
    refetched = resolved(many)
    assert {name.rsplit("/", 1)[-1] for name in failing} <= set(refetched)
    assert sum(refetched.values()) < len(FILES) - 2  # what the failed run finished was kept
    for rel, data in FILES.items():
        assert (snap / rel).read_bytes() == data
    assert_clean(cache)


def _children(pid: int) -> set[int]:
    """The live child processes of `pid` (Linux /proc)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to see the worker processes")
@pytest.mark.parametrize("moment", ["workers-starting", "workers-downloading"])
def test_ctrl_c_stops_every_process_in_one_line_and_a_rerun_finishes(many, tmp_path, moment):
    """Ctrl-C as a terminal sends it (to the whole foreground process group), the moment the worker processes
    exist (still importing) or once they are fetching: one line, exit 130, no process left, a clean cache."""
    cache = tmp_path / "c"
    many.app.faults.add(Fault("slow", "cdn/", times=-1, rate=1_000))  # the large file takes long: never done
    env = {**os.environ, "HF_ENDPOINT": many.url}
    proc = subprocess.Popen([sys.executable, "-m", "hfcache", "snapshot", "org/many", "--cache-dir", str(cache),
                             "--processes", "3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        workers = wait_for(lambda: _children(proc.pid) if len(_children(proc.pid)) >= 2 else None,
                            "two worker processes")
        if moment == "workers-downloading":  # every process has asked for files (the parent's share alone: 21)
            wait_for(lambda: sum(resolved(many).values()) >= 30, "files requested by the workers")
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["hfcache: interrupted"], err
    wait_for(lambda: not any(_alive(pid) for pid in workers), "the workers to end", timeout=60)
    assert_clean(cache)

    many.app.faults.clear()
    r = run_cli("snapshot", "org/many", "--cache-dir", str(cache), "--processes", "3", endpoint=many.url)
    assert r.returncode == 0, r.stderr
    for rel, data in FILES.items():
        assert (cache / "models--org--many" / "snapshots" / many.commit("org/many") / rel).read_bytes() == data
    assert not list(cache.glob("*/blobs/*.incomplete*"))  # the interrupted run's partials are gone too
    assert_clean(cache)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("interpreter", ["/bin/false", "/nonexistent/python"])
def test_workers_that_die_or_cannot_start_leave_their_share_to_this_process(many, tmp_path, monkeypatch,
                                                                            interpreter):
    import sys

    from hfcache.fetch.hub import HubClient

    monkeypatch.setattr(sys, "executable", interpreter)  # the worker exits at once, or never starts
    cache = tmp_path / "c"
    result = Fetcher(HubCache(cache), client=HubClient(many.url), processes=3).snapshot(RepoRef("org/many"))
    assert result.stats.files_fetched + result.stats.files_reused == len(FILES)
    for rel, data in FILES.items():
        assert (result.path / rel).read_bytes() == data
    assert sum(resolved(many).values()) == len(set(FILES.values()))
    assert_clean(cache)


def test_a_worker_that_dies_mid_run_keeps_the_files_it_reported_in_the_stats(many, tmp_path, monkeypatch):
    """A worker killed after reporting some files (here: its stdout closes after three lines, so its next
    report fails): those files count as fetched, by it, not as found in the cache when this process takes
    over the worker's unfinished share."""
    from hfcache.fetch.hub import HubClient

    wrapper = tmp_path / "python-dies-after-3-lines"
    wrapper.write_text(f'#!/bin/sh\n"{sys.executable}" "$@" | head -n 3\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(wrapper))
    reported: list[tuple[str, bool]] = []

    from hfcache.progress import Progress

    class Recorder(Progress):
        def file_done(self, path: str, size: int, fetched: bool) -> None:
            if threading.current_thread().name == "hfcache-fanout":
                reported.append((path, fetched))

    cache = tmp_path / "c"
    result = Fetcher(HubCache(cache), client=HubClient(many.url), progress=Recorder(), processes=2,
                     max_workers=1).snapshot(RepoRef("org/many"))
    by_worker = {p for p, fetched in reported if fetched}
    assert len(reported) == 3 and by_worker, reported  # it reported three files, then died
    assert by_worker <= set(result.stats.fetched_by_file)
    assert result.stats.files_fetched == len(result.stats.fetched_by_file)  # none counted twice
    for rel, data in FILES.items():
        assert (result.path / rel).read_bytes() == data
    assert_clean(cache)


def test_few_files_stay_in_one_process(many, tmp_path, monkeypatch):
    """Auto mode starts no worker for a handful of files: its start-up would cost more than it saves."""
    from hfcache.fetch import fanout

    assert fanout.plan(40, None) == 1
    assert fanout.plan(10_000, None) == min(len(os.sched_getaffinity(0)), fanout.MAX_PROCESSES)
    assert fanout.plan(10_000, 1) == 1
    assert fanout.plan(2, 5) == 2


def test_the_cursor_hands_out_each_file_once_to_every_taker():
    from hfcache.cache.meta import FileMeta
    from hfcache.fetch import fanout

    meta = FileMeta.checked(size=1, blob_id="a" * 40, lfs_sha256=None, lfs_size=None, xet_hash=None)
    cursor = fanout.Cursor([(f"f{i}", meta) for i in range(100)])
    got = [cursor.take()[0] for _ in range(3)] + [f for f, _ in cursor.take_many(40)] + [cursor.take()[0]]
    got += [f for f, _ in cursor.take_many(1000)]
    assert got == [f"f{i}" for i in range(100)]
    assert cursor.take() is None and cursor.take_many(5) == []


def test_a_worker_takes_every_progress_callback_the_fetch_makes():
    """A worker whose lock is held by another process is told `waiting` like any fetch: a worker progress missing
    a callback failed the whole snapshot (seen under load, when two workers met on one lock)."""
    from hfcache.fetch.worker import _LineProgress
    from hfcache.progress import Progress

    calls = [n for n in vars(Progress) if not n.startswith("_")]
    assert "waiting" in calls
    worker = _LineProgress()
    for name in calls:
        assert callable(getattr(worker, name, None)), name
    worker.waiting("config.json")  # silent in a worker: the parent shows progress


def test_a_worker_s_client_needs_no_hfapi(tmp_path):
    """A fan-out worker only transfers: given its parent's headers, its HubClient imports neither HfApi nor
    huggingface_hub's download module (0.3 s of CPU per worker), and still keeps the token off other origins."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from hfcache.cache.layout import RepoRef\n"
        "from hfcache.fetch.hub import HubClient\n"
        "c = HubClient('http://127.0.0.1:9', 'tok', headers={'user-agent': 'x', 'authorization': 'Bearer tok'})\n"
        "assert c.resolve_url(RepoRef('org/m', 'dataset'), 'a' * 40, 'd/f 1.bin') == "
        "'http://127.0.0.1:9/datasets/org/m/resolve/' + 'a' * 40 + '/d/f%201.bin'\n"
        "assert c.headers_for('http://127.0.0.1:9/x')['authorization'] == 'Bearer tok'\n"
        "assert 'authorization' not in c.headers_for('http://cdn.example/x')\n"
        "heavy = [m for m in ('huggingface_hub.hf_api', 'huggingface_hub.file_download', 'httpx2')\n"
        "         if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_the_worker_job_carries_the_parent_s_headers(tmp_path):
    from hfcache.cache.layout import RepoRef
    from hfcache.fetch import fanout
    from hfcache.fetch.hub import HubClient

    client = HubClient("http://127.0.0.1:9", token="secret")
    j = fanout.job(tmp_path, client.endpoint, client.token, RepoRef("org/m"), "a" * 40, None, None,
                   headers=client.hub_headers())
    assert j["headers"]["authorization"] == "Bearer secret"
    assert "hfcache" in j["headers"]["user-agent"]


def test_a_failing_progress_callback_for_a_worker_s_file_is_an_error(many, tmp_path):
    """The parent hands a worker its files as it reports progress: a callback that raises there ends the worker
    and the run with that error, as it does in this process's own threads (it was lost with the reader thread,
    and the worker's files were fetched again here), and nothing waits for ever."""
    from hfcache.errors import HfcacheError
    from hfcache.fetch.hub import HubClient
    from hfcache.progress import Progress

    class Broken(Progress):
        def file_done(self, path: str, size: int, fetched: bool) -> None:
            if threading.current_thread().name == "hfcache-fanout":
                raise RuntimeError("progress display gone")

    fetcher = Fetcher(HubCache(tmp_path / "c"), client=HubClient(many.url), progress=Broken(), processes=2,
                      max_workers=1)
    done = []
    t = threading.Thread(target=lambda: done.append(_outcome(fetcher)), daemon=True)
    t.start()
    t.join(120)
    assert done, "the snapshot hung"
    assert isinstance(done[0], HfcacheError) and "progress display gone" in str(done[0])
    assert_clean(tmp_path / "c")


def _outcome(fetcher):
    from hfcache.errors import HfcacheError

    try:
        return fetcher.snapshot(RepoRef("org/many"))
    except HfcacheError as e:
        return e


def test_workers_report_each_file_at_once_without_pythonunbuffered(many, tmp_path):
    """A worker is handed its next batch when it reports files done: its reports must not wait in a pipe's
    8 KiB buffer (without PYTHONUNBUFFERED, as a user runs it, worker and parent waited on each other for ever)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED" and not k.startswith("HF_")}
    env["HF_ENDPOINT"] = many.url
    try:
        p = subprocess.run([sys.executable, "-m", "hfcache", "snapshot", "org/many", "--cache-dir",
                            str(tmp_path / "c"), "--processes", "2", "--max-workers", "1"],
                           capture_output=True, text=True, env=env, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the snapshot hung: a worker's progress lines stayed in its stdout buffer")
    assert p.returncode == 0, p.stderr
    assert_clean(tmp_path / "c")


def test_a_worker_may_grow_to_as_many_streams_as_this_process(tmp_path, monkeypatch):
    """A worker is handed small files only, a batch at a time (`files` empty): it may grow to as many threads
    as this process does under latency, not the 8 that an empty file list once gave it."""
    from hfcache.fetch import adaptive, fetcher
    from hfcache.fetch.hub import HubClient

    most = []
    monkeypatch.setattr(adaptive, "run_elastic", lambda work, take, start, m, wanted: most.append(m) or [])
    f = Fetcher(HubCache(tmp_path / "c"), client=HubClient("http://127.0.0.1:9"), processes=1)
    f.fetch_files(RepoRef("org/m"), "a" * 40, {}, feed=lambda: None)
    assert most == [fetcher.SMALL_STREAMS[2]]


def test_a_worker_s_error_stops_every_process_taking_new_files(many, tmp_path):
    """A file failing in a worker ends the run as a thread's failure does in one process: no process starts
    another file (the parent went on to fetch every other file before it said so). This process's one thread is
    held on the large file until the worker has failed its file twice and exited (its error line went first), so
    however loaded the machine, this process could take another file only after it was told of the error."""
    todo = sorted((f for f, d in FILES.items() if len(d) < 1024 * 1024), key=lambda f: -len(FILES[f]))
    first = todo[0]  # in the first batch the worker is handed, before this process reaches the queue
    release = threading.Event()
    many.app.faults.add(Fault("500", first, times=-1),
                        Fault("stall", "weights.bin", times=-1, seconds=120, release=release))
    err = tmp_path / "stderr"
    env = {**os.environ, "HF_ENDPOINT": many.url, "HF_HUB_DOWNLOAD_TIMEOUT": "300"}  # the held file must not time out
    with open(err, "w") as errf:
        proc = subprocess.Popen([sys.executable, "-m", "hfcache", "snapshot", "org/many", "--cache-dir",
                                 str(tmp_path / "c"), "--processes", "2", "--max-workers", "1", "--retries", "1"],
                                env=env, stdout=subprocess.DEVNULL, stderr=errf)
    try:
        name = first.rsplit("/", 1)[-1]
        wait_for(lambda: (resolved(many)[name] >= 2 and not _children(proc.pid)) or proc.poll() is not None,
                 "the worker to fail and exit", timeout=120)
    finally:
        release.set()
        try:
            proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 1 and "HTTP 500" in err.read_text(), err.read_text()
    asked = resolved(many)
    assert set(asked) == {first.rsplit("/", 1)[-1], "weights.bin"}, asked  # nothing else was started
    assert_clean(tmp_path / "c")


def test_a_worker_is_kept_with_as_many_files_as_its_threads_can_take():
    """Under latency a worker runs up to 64 threads: with a fixed batch of 32 it never held more than ~48
    files, and its other threads sat idle. It is topped up to twice the wanted threads (at least BATCH)."""
    import io
    from types import SimpleNamespace

    from hfcache.cache.meta import FileMeta
    from hfcache.fetch import fanout

    meta = FileMeta.checked(size=1, blob_id="a" * 40)
    workers = fanout.Workers.__new__(fanout.Workers)  # its hand-out only: no process
    workers._cursor = fanout.Cursor([(f"f{i}", meta) for i in range(500)])
    workers._in_hand = lambda: 128
    fake = SimpleNamespace(stdin=io.StringIO())
    sent: set[str] = set()
    assert workers._feed(fake, sent) and len(sent) == 128
    in_hand = set(sorted(sent)[:60])  # 68 of them done
    assert workers._feed(fake, in_hand) and len(in_hand) == 128
    workers._in_hand = lambda: 4  # loopback: few threads, still a batch at least
    few = {"x"}
    assert workers._feed(fake, few) and len(few) == fanout.BATCH
    lines = [json.loads(line) for line in fake.stdin.getvalue().splitlines()]
    assert [len(b["files"]) for b in lines] == [128, 68, fanout.BATCH - 1]


def test_a_ctrl_c_while_a_worker_is_being_started_still_ends_that_worker(monkeypatch):
    """Ctrl-C may land while `subprocess.Popen` of a worker has forked but not returned: that worker would be in
    no list, so nothing would end or wait for it (in its own session, it sees no terminal Ctrl-C). It is held
    until every started worker is known, then raised: every worker is ended and waited for."""
    import signal

    from hfcache.cache.meta import FileMeta
    from hfcache.fetch import fanout

    started: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        started.append(proc)
        if len(started) == 2:
            signal.raise_signal(signal.SIGINT)  # as if it came between this fork and the call's return
        return proc

    monkeypatch.setattr(fanout.subprocess, "Popen", popen)
    meta = FileMeta.checked(size=1, blob_id="a" * 40, lfs_sha256=None, lfs_size=None, xet_hash=None)
    try:
        with pytest.raises(KeyboardInterrupt):
            fanout.Workers([{"job": i} for i in range(3)], fanout.Cursor([("f", meta)]), lambda *a: None)
        assert len(started) == 2  # the Ctrl-C stopped the starts
        assert [p.returncode for p in started] == [-signal.SIGTERM] * 2  # both ended, and waited for
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
