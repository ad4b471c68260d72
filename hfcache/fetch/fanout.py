"""Spread a snapshot's many small files over worker processes.

Fetching a small file is mostly Python work (a request, a lock, a few file operations: about a millisecond),
and the GIL runs that work one thread at a time, so a thousand small files keep one core busy however many
threads wait on the network. A second process uses a second core. The cache needs nothing new for this: every
blob is written under the per-blob lock and published by rename, exactly as when several `hfcache` or
`huggingface_hub` processes fill one cache, so a worker simply runs the ordinary fetch on the files it is handed.

A worker is `python -m hfcache.fetch.worker`: the job goes in on stdin as one JSON line, then the files in
batches (one JSON line each, a few dozen files, and a last line saying there are no more), and out come one JSON
line per finished file, then the result (or the error, which the parent raises as its own). The files are not
split in fixed shares: a worker starts ~0.3 s after the parent and runs on a core the server shares, so fixed
halves left one process working alone for the last 20% of the time. Every process takes from one queue
(`Cursor`): the parent's threads one file at a time, a worker in batches: it is kept with twice as many files in
hand as the parent runs threads (at least `BATCH`), topped up whenever half of them are done.

`multiprocessing` is not used: its `spawn` re-imports the caller's `__main__`, which breaks scripts without a main
guard and stdin.
A worker costs ~0.12 s of CPU at start-up (it never imports `HfApi`: its parent hands it the Hub headers, and
URLs are built without `huggingface_hub.file_download`), so workers are used only when there are enough small files
to pay for it.

Workers run in a session of their own, so a terminal's Ctrl-C reaches the parent only: a worker interrupted
while still importing would print a traceback of its own (~20 lines each); the parent ends them instead. The
parent keeps their stdin open as a lifeline: a worker whose stdin closes (the parent died, even by kill -9)
exits at once.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from hfcache import errors, waits
from hfcache.cache.layout import RepoRef
from hfcache.cache.meta import FileMeta
from hfcache.fetch.transfer import TransferOptions

MIN_FILES_PER_PROCESS = 300  # below this, a worker's start-up costs more than the time it saves
MAX_PROCESSES = 8
BATCH = 32  # files a worker has in hand at least; more when it runs more threads (`in_hand`), refilled at half


def plan(todo: int, processes: int | None) -> int:
    """How many processes (this one included) should share `todo` small files; 1 means no fan-out."""
    if processes is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        processes = min(cores, MAX_PROCESSES, todo // MIN_FILES_PER_PROCESS)
    return max(1, min(processes, todo))


class Cursor:
    """The files not handed out yet, shared by this process's threads and the workers' feeders."""

    def __init__(self, items: list[tuple[str, FileMeta]]) -> None:
        self.names = frozenset(f for f, _ in items)
        self._items = collections.deque(items)
        self._lock = threading.Lock()

    def take(self) -> tuple[str, FileMeta] | None:
        with self._lock:
            return self._items.popleft() if self._items else None

    def take_many(self, n: int) -> list[tuple[str, FileMeta]]:
        with self._lock:
            return [self._items.popleft() for _ in range(min(n, len(self._items)))]

    def close(self) -> None:
        """Hand out nothing more: a process failed, and the run ends with its error (as a thread's error ends
        the run in one process)."""
        with self._lock:
            self._items.clear()


def job(cache_root: Path, endpoint: str, token: str | bool | None, repo: RepoRef, commit: str,
        workers: int | None, options: TransferOptions | None, headers: dict[str, str] | None = None) -> dict:
    """A worker's job, as the JSON it reads (the token travels over a pipe, never on a command line). `headers`:
    the parent's Hub headers, so the worker need not import huggingface_hub's HTTP helpers to build them."""
    return {"cache": str(cache_root), "endpoint": endpoint, "token": token, "headers": headers,
            "repo": [repo.repo_id, repo.repo_type], "commit": commit, "workers": workers,
            "options": asdict(options) if options else None}


def batch_line(items: list[tuple[str, FileMeta]]) -> str:
    """Files for a worker (an empty batch: there are no more)."""
    return json.dumps({"files": {f: m.to_json() for f, m in items}} if items else {"end": True}) + "\n"


class Workers:
    """Worker processes fetching files handed out from one `Cursor`, from which the caller's threads take too."""

    def __init__(self, jobs: list[dict], cursor: Cursor, file_done: Callable[[str, int, bool], None],
                 in_hand: Callable[[], int] = lambda: BATCH) -> None:
        """`in_hand`: how many files a worker should hold, asked at each top-up (the caller's wanted threads
        times two: a worker under the same latency runs as many, and each must find a file waiting)."""
        self._cursor = cursor
        self._in_hand = in_hand
        self._sent: list[set[str]] = [set() for _ in jobs]  # handed to each worker, not reported done
        self._file_done = file_done
        self._outcomes: list[dict] = [{} for _ in jobs]
        # the files each worker reported fetched, and their sizes: the stats of one that dies before its own
        self._reported: list[dict[str, int]] = [{} for _ in jobs]
        self._procs: list[subprocess.Popen] = []
        # the worker imports this very hfcache, wherever the caller found it
        here = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
        self._readers: list[threading.Thread] = []
        try:  # a Ctrl-C here too must not leave a worker behind: it would not see the terminal's Ctrl-C
            with _ctrl_c_held() as interrupted:
                for _ in jobs:
                    if interrupted:
                        break  # raised as the block ends
                    self._procs.append(subprocess.Popen([sys.executable, "-m", "hfcache.fetch.worker"], env=env,
                                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                                        **_OWN_SESSION))
            for i, (proc, j) in enumerate(zip(self._procs, jobs, strict=True)):
                reader = threading.Thread(target=self._read, args=(proc, i, json.dumps(j)), daemon=True,
                                          name="hfcache-fanout")
                reader.start()
                self._readers.append(reader)
        except BaseException:  # OSError: no interpreter to start (an embedded Python): the caller fetches it all
            self.stop()
            raise

    def _read(self, proc: subprocess.Popen, i: int, job_text: str) -> None:
        try:
            self._converse(proc, i, job_text)
        except Exception as e:  # noqa: BLE001 - a progress callback failed, say: an error, as in this process's threads
            self._outcomes[i] = {"error": f"download worker: {type(e).__name__}: {e}", "type": "HfcacheError"}
            self._cursor.close()
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(OSError, ValueError):
                proc.stdout.read()  # to its end, so the kill is seen

    def _converse(self, proc: subprocess.Popen, i: int, job_text: str) -> None:
        sent = self._sent[i]
        ended = not self._send(proc, job_text + "\n") or not self._feed(proc, sent)
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line cut short by the worker's end: its exit status and outcome tell the rest
            if "file" in event:
                sent.discard(event["file"])
                if event["fetched"]:
                    self._reported[i][event["file"]] = event["size"]
                self._file_done(event["file"], event["size"], event["fetched"])
                if not ended and len(sent) <= self._target() // 2:
                    ended = not self._feed(proc, sent)
            else:
                self._outcomes[i] = event
                if "error" in event:
                    self._cursor.close()

    def _feed(self, proc: subprocess.Popen, sent: set[str]) -> bool:
        """Hand the worker its next batch; False once there are no more (it was told so) or it is gone."""
        items = self._cursor.take_many(self._target() - len(sent))
        sent.update(f for f, _ in items)
        return self._send(proc, batch_line(items)) and bool(items)

    def _target(self) -> int:
        return max(BATCH, self._in_hand())

    @staticmethod
    def _send(proc: subprocess.Popen, text: str) -> bool:
        try:
            proc.stdin.write(text)
            proc.stdin.flush()  # stdin stays open: the worker's lifeline (see the module's docstring)
            return True
        except (OSError, ValueError):
            return False  # the worker died; its exit status and what it did not report tell the rest

    def results(self) -> tuple[list[dict], set[str]]:
        """Wait for every worker: their stats, and the files of any that died without a word (killed, or it
        could not start), which the caller then fetches itself. A download error a worker met is raised here."""
        for proc, reader in zip(self._procs, self._readers, strict=True):
            waits.join(reader)  # the worker's stdout ended: it has written its outcome, or died
            _close(proc.stdin)
            waits.process(proc)
        stats, unfinished = [], set()
        for outcome, job_files, reported in zip(self._outcomes, self._sent, self._reported, strict=True):
            if "error" in outcome:
                cls = getattr(errors, outcome["type"], errors.HfcacheError)
                raise (cls if isinstance(cls, type) and issubclass(cls, errors.HfcacheError)
                       else errors.HfcacheError)(outcome["error"])
            if "stats" in outcome:
                stats.append(outcome["stats"])
            else:  # died: the files it reported count as its (whole files: what it resumed is not known)
                stats.append({"files_fetched": len(reported), "bytes_fetched": sum(reported.values()),
                              "fetched_by_file": reported})
                unfinished.update(job_files)
        return stats, unfinished

    def stop(self) -> None:
        """On an error or Ctrl-C here: end the workers (what they fetched so far stays valid)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
            _close(proc.stdin)
        for proc in self._procs:
            proc.wait()


@contextlib.contextmanager
def _ctrl_c_held() -> Iterator[list[int]]:
    """Hold a Ctrl-C until the block ends, then raise it (the list yielded says whether one came). A
    KeyboardInterrupt raised inside `subprocess.Popen` after its fork loses the child: no Popen object comes back
    to be kept in `_procs`, so `stop()` would neither end nor wait for that worker (in a session of its own, it
    does not see the terminal's Ctrl-C either). Only the main thread gets KeyboardInterrupt (or whatever a Python
    handler raises), and only there may a handler be set; SIG_DFL, SIG_IGN and a handler not set from Python are
    left alone."""
    previous = signal.getsignal(signal.SIGINT)
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield caught
        return
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield caught
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)  # now the workers are all known: the handler the caller had


_OWN_SESSION: dict = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if sys.platform == "win32"
                      else {"start_new_session": True})


def _close(stream) -> None:
    with contextlib.suppress(OSError):  # a worker that died with bytes still in the pipe
        stream.close()
