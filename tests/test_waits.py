"""A Ctrl-C the kernel delivers to a thread other than the main one still interrupts the main thread's waits.

The signal is sent to one chosen helper thread (`pthread_kill`), as the kernel does when the main thread has it
blocked for a moment (creating a thread) or pending: only a flag is set, and a main thread in an untimed lock wait
never sees it. Each case runs in a fresh interpreter, bounded: before `hfcache.waits`, each one hung there.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")

PRELUDE = """
import signal, sys, threading
release = threading.Event()  # what the blocked work waits for: set only after the KeyboardInterrupt
busy = threading.Event()

def hold(*_):
    busy.set()
    release.wait(600)
    return 0

def deliver_elsewhere():
    busy.wait(600)
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # to this thread: the main one only sees a flag

threading.Thread(target=deliver_elsewhere, daemon=True).start()
try:
    run()
except KeyboardInterrupt:
    release.set()
    print("interrupted")
    sys.exit(0)
print("not interrupted")
sys.exit(1)
"""

CASES = {
    "run_elastic": """
        from hfcache.fetch import adaptive
        items = iter([1])
        def run():
            adaptive.run_elastic(hold, lambda: next(items, None), 1, 1, lambda: 1)
    """,
    "future": """
        from concurrent.futures import ThreadPoolExecutor
        from hfcache import waits
        def run():
            waits.result(ThreadPoolExecutor(1).submit(hold))
    """,
    "join": """
        from hfcache import waits
        def run():
            t = threading.Thread(target=hold, daemon=True)
            t.start()
            waits.join(t)
    """,
    "process": """
        import subprocess
        from hfcache import waits
        def run():
            proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
            busy.set()
            try:
                waits.process(proc)
            finally:
                proc.kill()
                proc.wait()
    """,
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_ctrl_c_delivered_to_another_thread_ends_the_main_thread_s_wait(case):
    script = textwrap.dedent(CASES[case]) + PRELUDE
    try:
        p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the main thread never saw the Ctrl-C")
    assert (p.returncode, p.stdout.strip()) == (0, "interrupted"), p.stderr


def test_a_future_s_own_timeout_error_is_its_result():
    from concurrent.futures import Future
    from concurrent.futures import TimeoutError as FutureTimeout

    from hfcache import waits

    done: Future = Future()
    done.set_exception(FutureTimeout("the work's own"))
    with pytest.raises(FutureTimeout, match="the work's own"):
        waits.result(done)
    ok: Future = Future()
    ok.set_result(7)
    assert waits.result(ok) == 7


def test_a_stop_ends_a_transfer_between_its_retries(tmp_path):
    """A Ctrl-C (`Transfer.stop()`) while the server is down: the download ends at once, in `Stopped`, rather than
    sitting out every retry's backoff (8 retries: ~40 s) with the process unable to exit."""
    import hashlib
    import socket
    import threading

    from hfcache.cache.meta import FileMeta
    from hfcache.fetch.hub import HubClient
    from hfcache.fetch.transfer import Stopped, Transfer, TransferOptions

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed once the block ends: every attempt is refused
    data = b"x" * 1000
    sha = hashlib.sha256(data).hexdigest()
    meta = FileMeta.checked(size=len(data), blob_id="0" * 40, lfs_sha256=sha, lfs_size=len(data))
    transfer = Transfer(HubClient(url, token=False), TransferOptions(retries=8, read_timeout=30))
    dest = tmp_path / "blobs" / sha
    dest.parent.mkdir()
    outcome: list[BaseException | int] = []

    def fetch() -> None:
        try:
            outcome.append(transfer.fetch_blob(f"{url}/f", dest, meta))
        except BaseException as e:  # noqa: BLE001 - the test reads it
            outcome.append(e)

    t = threading.Thread(target=fetch, daemon=True)
    t.start()
    transfer.stop()  # before or during its first attempt or backoff: it ends without the next attempt
    t.join(60)
    transfer.close()
    assert outcome and isinstance(outcome[0], Stopped), outcome
    assert not dest.exists()
