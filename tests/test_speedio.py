"""The transfer engine's fast paths keep every guarantee: parts that arrive out of order are hashed in order
(from memory at the front, from the page cache behind it), a corrupt byte in a middle part is caught with
nothing published, the lean HTTP connections are kept alive, the flock-based blob lock excludes other
processes, and the adaptive stream count stays within its bounds."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hfcache.cache.hashing import new_hasher
from hfcache.cache.meta import FileMeta
from hfcache.cache.partfile import PartFile, plan_parts
from hfcache.cache.paths import partial_paths
from hfcache.errors import IntegrityError
from hfcache.fetch import adaptive
from hfcache.fetch.hub import HubClient
from hfcache.fetch.inorder import OrderedHash
from hfcache.fetch.transfer import Transfer, TransferOptions
from tests.conftest import det_bytes

PART = 256 * 1024
DATA = det_bytes(4 * PART, 31)  # four parts
SHA = hashlib.sha256(DATA).hexdigest()


class _RangeServer(http.server.ThreadingHTTPServer):
    """Serves DATA with `Range`; the first part is held back until every other part has been sent (so parts
    complete out of order, by an event, not a delay); `corrupt_at` flips one byte in what it sends."""

    daemon_threads = True

    def __init__(self, corrupt_at: int | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.corrupt_at = corrupt_at
        self.others_sent = threading.Semaphore(0)
        self.requests: list[tuple[int, str | None]] = []  # (client port, Range): one port = one connection

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/blob"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        srv: _RangeServer = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.client_address[1], rng))
        start, end = 0, len(DATA) - 1
        if rng:
            a, b = rng.removeprefix("bytes=").split("-")
            start, end = int(a), int(b)
        if rng and start == 0:
            for _ in range(3):  # the other three parts first; bounded: a test fails rather than hangs
                srv.others_sent.acquire(timeout=30)
        body = bytearray(DATA[start:end + 1])
        if srv.corrupt_at is not None and start <= srv.corrupt_at <= end:
            body[srv.corrupt_at - start] ^= 0xFF
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(DATA)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if rng and start != 0:
            srv.others_sent.release()


@pytest.fixture
def range_server(request):
    srv = _RangeServer(getattr(request, "param", None))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _fetch(srv: _RangeServer, dest: Path) -> int:
    meta = FileMeta.checked(size=len(DATA), blob_id="0" * 40, lfs_sha256=SHA, lfs_size=len(DATA))
    opts = TransferOptions(connections=4, part_size=PART, split_threshold=PART, retries=0, read_timeout=30)
    transfer = Transfer(HubClient(srv.url.rsplit("/", 1)[0], token=False), opts)
    try:
        return transfer.fetch_blob(srv.url, dest, meta)
    finally:
        transfer.close()


def test_parts_arriving_out_of_order_are_hashed_in_order(range_server, tmp_path):
    dest = tmp_path / "blobs" / SHA
    dest.parent.mkdir()
    assert _fetch(range_server, dest) == len(DATA)
    assert dest.read_bytes() == DATA
    assert sorted(r for _, r in range_server.requests) == sorted(
        f"bytes={s}-{s + PART - 1}" for s in range(0, len(DATA), PART))
    assert os.listdir(dest.parent) == [SHA]  # no partial, no record left


@pytest.mark.parametrize("range_server", [2 * PART + 1234], indirect=True)
def test_a_corrupt_byte_in_a_middle_part_is_caught_and_nothing_published(range_server, tmp_path):
    dest = tmp_path / "blobs" / SHA
    dest.parent.mkdir()
    with pytest.raises(IntegrityError, match="corrupt download"):
        _fetch(range_server, dest)
    assert os.listdir(dest.parent) == []  # neither the blob nor a partial of bytes known to be wrong


def test_ordered_hash_hashes_each_byte_once_in_order_whoever_gets_there(tmp_path):
    """Parts written last-to-first, the front part offered from memory, the rest read back: same digest as a
    plain hash, and the front part's bytes never read back."""
    blob = tmp_path / SHA
    pf = PartFile(partial_paths(blob), SHA, len(DATA))
    pf.open(PART)
    assert [p.start for p in pf.parts] == [p.start for p in plan_parts(len(DATA), PART)]
    ordered = OrderedHash(new_hasher("sha256", len(DATA)))
    for part in reversed(pf.parts[1:]):  # parts 3, 2, 1: ahead of the front, so not hashed yet
        for off in range(part.start, part.end, 64 * 1024):
            chunk = DATA[off:off + 64 * 1024]
            pf.write(part, chunk)
            ordered.offer(off, chunk)
    assert ordered.pos == 0
    front = pf.parts[0]
    for off in range(0, PART, 64 * 1024):  # the front part: hashed from memory as it arrives
        chunk = DATA[off:off + 64 * 1024]
        pf.write(front, chunk)
        ordered.offer(off, chunk)
        ordered.offer(off, chunk)  # offered twice (a retry's duplicate): hashed once
    assert ordered.pos == ordered.inline == PART
    while ordered.catch_up(pf, pf.frontier()):
        pass
    pf.close()
    assert ordered.pos == len(DATA) and ordered.inline == PART
    assert ordered.hasher.hexdigest() == SHA


def test_lean_connections_are_kept_alive_across_files(range_server, tmp_path):
    from hfcache.fetch import conn

    pool = conn.Pool((10.0, 10.0))
    try:
        for _ in range(5):
            with pool.get(range_server.url, {"Accept-Encoding": "identity"}) as resp:
                assert resp.status_code == 200
                got = b"".join(iter(lambda: resp.read1(1 << 20), b""))
            assert got == DATA
    finally:
        pool.close()
    assert len({port for port, _ in range_server.requests}) == 1  # five requests, one connection


def test_flock_lock_excludes_another_process_and_keeps_the_file(tmp_path):
    """The lock other tools (filelock, so huggingface_hub) take on the same file: held here, a filelock in
    another process cannot take it; released, it can."""
    from hfcache.cache import flock

    path = tmp_path / "x.lock"
    probe = ("import sys, filelock\n"
             "try:\n    filelock.FileLock(sys.argv[1], timeout=0).acquire()\n    print('got')\n"
             "except filelock.Timeout:\n    print('busy')\n")
    fd = flock.acquire(str(path))
    try:
        out = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "busy"
        with pytest.raises(flock.LockTimeout):
            flock.acquire(str(path), timeout=0)
    finally:
        flock.release(fd)
    out = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "got"
    assert path.exists()
    assert path.stat().st_mode & 0o777 == 0o664


def test_a_lock_file_unlinked_while_waiting_is_taken_by_its_new_name(tmp_path):
    from hfcache.cache import flock

    path = tmp_path / "y.lock"
    fd = flock.acquire(str(path))
    waited = threading.Event()
    got: list[int] = []
    t = threading.Thread(target=lambda: got.append(flock.acquire(str(path), timeout=60, on_wait=waited.set)))
    t.start()
    assert waited.wait(60)
    path.unlink()  # a peer removed the lock file: the waiter must lock the file now at that name
    t.join(60)
    try:
        assert got and os.path.samestat(os.fstat(got[0]), os.stat(path))
    finally:
        flock.release(fd)
        if got:
            flock.release(got[0])


@pytest.mark.parametrize("latency_ms", [0.0, 0.2, 1, 5, 20, 30, 100, 1000, 1e6])
def test_streams_grow_with_answer_latency_within_bounds(latency_ms):
    lo, hi = 8, 64
    n = adaptive.streams(latency_ms / 1000, lo, hi)
    assert lo <= n <= hi
    assert adaptive.streams(latency_ms / 1000 * 2 + 0.001, lo, hi) >= n  # never fewer when answers are slower


def test_streams_are_few_on_loopback_and_many_on_a_slow_link():
    assert adaptive.streams(0.0005, 8, 64) == 8
    assert adaptive.streams(0.100, 8, 64) == 64
    assert 8 < adaptive.streams(0.020, 8, 64) < 64


def test_gate_admits_at_most_its_limit_and_follows_changes():
    gate = adaptive.Gate(2)
    assert gate.try_enter() and gate.try_enter() and not gate.try_enter()
    gate.set_limit(3)
    assert gate.try_enter() and not gate.try_enter()
    gate.set_limit(1)
    for _ in range(3):
        gate.leave()
    assert gate.active == 0
    assert gate.try_enter() and not gate.try_enter()


def _probe(wanted_at, n_items, hold_until=None):
    """Run `n_items` through `run_elastic`, recording how many ran at once; `hold_until(k)`: an item blocks
    until k items run together (or 30 s pass), which shows that k threads exist."""
    lock, now, peak, seen = threading.Lock(), [0], [0], []
    deadline = time.monotonic() + 30  # one bound for the whole run, not one per item
    together = threading.Condition(lock)

    def work(i):
        with together:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
            together.notify_all()
            if hold_until is not None and i > 0:  # the first item's end is when more are first asked for
                together.wait_for(lambda: now[0] >= hold_until or peak[0] >= hold_until,
                                   timeout=max(0.0, deadline - time.monotonic()))
            seen.append(i)
            now[0] -= 1
        return i * 2

    done = [0]

    def wanted():
        done[0] += 1
        return wanted_at(done[0])

    out = adaptive.run_elastic(work, adaptive.taker(range(n_items)), 1, 64, wanted)
    return out, peak[0], seen


def test_elastic_run_returns_every_item_with_its_result_and_runs_each_once():
    out, _, seen = _probe(lambda k: 1 + k % 5, 200)
    assert sorted(out) == [(i, i * 2) for i in range(200)]
    assert sorted(seen) == list(range(200))


def test_elastic_run_waits_for_a_feed_that_is_slow_to_come():
    """A fan-out worker's files arrive in batches over a pipe: a `take` that blocks for a while is waited for,
    and the run ends only at its None."""
    import queue

    q: queue.SimpleQueue = queue.SimpleQueue()

    def producer():
        for i in range(50):
            q.put(i)
        q.put(None)

    def take():
        item = q.get(timeout=30)
        if item is None:
            q.put(None)  # for the other threads
        return item

    t = threading.Thread(target=producer)
    out_box = []
    runner = threading.Thread(target=lambda: out_box.append(adaptive.run_elastic(lambda i: -i, take, 4, 4,
                                                                                lambda: 4)))
    runner.start()  # every thread waits in `take` before the first item exists
    t.start()
    runner.join(60)
    t.join(60)
    assert sorted(out_box[0]) == [(i, -i) for i in range(50)]


def test_elastic_run_keeps_one_thread_while_one_is_wanted():
    _, peak, _ = _probe(lambda k: 1, 100)
    assert peak == 1


def test_elastic_run_starts_threads_when_more_are_wanted():
    """After the first item 6 are wanted: 6 items must run at once (each waits for the sixth), which a
    single thread (or a pool that never grows) cannot do within the bound."""
    _, peak, _ = _probe(lambda k: 6, 60, hold_until=6)
    assert peak >= 6


def test_elastic_run_stops_handing_out_items_after_an_error():
    started = []

    def work(i):
        started.append(i)
        if i == 3:
            raise ValueError("boom")
        return i

    with pytest.raises(ValueError, match="boom"):
        adaptive.run_elastic(work, adaptive.taker(range(1000)), 1, 1, lambda: 1)
    assert started == [0, 1, 2, 3]


def test_a_lean_answer_reads_as_json_like_a_requests_one(tmp_path):
    """The mirror's access check calls `.json()` and the Xet token reader reads a bounded body: both work over a
    lean connection (they failed with AttributeError / TypeError once transfers stopped going through requests)."""
    from hfcache.fetch import conn
    from tests.stubhub import StubHub, json_reply

    pool = conn.Pool((10, 10))
    with StubHub(lambda req: json_reply({"gated": False, "casUrl": "http://x"})) as hub:
        try:
            url = f"{hub.url}/api/models/org/m"
            with pool.get(url, {}) as resp:
                assert resp.json() == {"gated": False, "casUrl": "http://x"}
            with pool.get(url, {}) as resp:
                assert conn.read_json(resp, 64 * 1024)["casUrl"] == "http://x"
            with pool.get(url, {}) as resp, pytest.raises(ValueError):
                conn.read_json(resp, 16)  # a body over the limit is refused, not read whole
        finally:
            pool.close()


def test_a_location_with_spaces_and_letters_is_sent_percent_encoded():
    """A redirect's Location may carry a space or a non-ASCII letter: sent as `requests` sends it, not refused."""
    from hfcache.fetch import conn
    from tests.stubhub import StubHub

    pool = conn.Pool((10, 10))
    with StubHub(lambda req: (200, {}, b"ok")) as hub:
        try:
            for path in ("/a b/é.bin?x=1", "/already%20quoted"):
                with pool.get(hub.url + path, {}) as resp:
                    assert resp.status_code == 200 and resp.read(10) == b"ok"
        finally:
            pool.close()


def test_names_no_file_system_takes_are_refused_where_they_enter():
    from hfcache.cache.names import RefName, RelPath
    from hfcache.errors import UnsafePath, UsageError

    with pytest.raises(UsageError):
        RefName("a" * 256)
    with pytest.raises(UnsafePath):
        RelPath("dir/" + "é" * 128)  # 256 bytes in UTF-8
    assert RelPath("dir/" + "é" * 127) and RefName("refs/pr/" + "a" * 255)


def test_the_folders_a_hubcache_remembers_stay_bounded(tmp_path):
    """A server's HubCache is asked for the folder of every repo name a client sends: what it remembers must not
    grow with them; a folder asked again is still the right one."""
    from hfcache.cache import layout
    from hfcache.cache.layout import HubCache, RepoRef

    cache = HubCache(tmp_path)
    for i in range(layout.DIRS_REMEMBERED * 2 + 10):
        assert cache.repo_dir(RepoRef(f"org/r{i}")) == tmp_path / f"models--org--r{i}"
    assert len(cache._dirs) <= layout.DIRS_REMEMBERED
    assert cache.snapshot_dir(RepoRef("org/r1"), "a" * 40) == tmp_path / "models--org--r1" / "snapshots" / ("a" * 40)


def test_elastic_run_does_not_start_an_item_a_waiting_take_gave_after_an_error():
    """A `take` that waits (a worker's feed) may hand out an item after another thread failed: it is not run."""
    from hfcache.fetch import adaptive

    raised = threading.Event()
    ran: list[int] = []
    items = iter(range(1, 100))

    def take():
        i = next(items, None)
        if i == 2:
            assert raised.wait(30)  # the second thread's item comes only once the run has raised the first's error
        return i

    def work(i: int) -> int:
        if i == 1:
            raise RuntimeError("boom")
        ran.append(i)
        return i

    with pytest.raises(RuntimeError, match="boom"):
        try:
            adaptive.run_elastic(work, take, 2, 2, lambda: 2)
        finally:
            raised.set()
    for t in [t for t in threading.enumerate() if t.name == "hfcache-fetch"]:
        t.join(30)
    assert ran == []


def test_elastic_run_goes_on_with_the_threads_it_could_start(monkeypatch):
    """A process limit refusing more threads: the run finishes on those it has (it waited for ever on threads
    counted but never started)."""
    real, started = threading.Thread.start, [0]

    def start(self):
        if self.name == "hfcache-fetch":
            started[0] += 1
            if started[0] > 2:
                raise RuntimeError("can't start new thread")
        real(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    box: list = []
    runner = threading.Thread(target=lambda: box.append(adaptive.run_elastic(lambda i: i, adaptive.taker(range(100)),
                                                                             8, 8, lambda: 8)))
    real(runner)
    runner.join(60)
    assert box and sorted(box[0]) == [(i, i) for i in range(100)]
