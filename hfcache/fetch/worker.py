"""One worker process of a fan-out (`python -m hfcache.fetch.worker`; see `fanout` for why processes): it reads
its job as one JSON line on stdin, then batches of files, runs the ordinary fetch over them as they come, and
writes one JSON line per finished file, then the result or the error. Kept apart from `fanout` (the parent's
side), so that `fetcher`, which starts workers, and the worker, which runs a `Fetcher`, do not import each
other."""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
from dataclasses import asdict
from pathlib import Path

from hfcache import errors
from hfcache.cache.layout import RepoRef
from hfcache.cache.meta import FileMeta
from hfcache.fetch.transfer import TransferOptions
from hfcache.progress import Progress


class _LineProgress(Progress):
    """A worker's progress: one line per finished file, for the parent to show; the rest of the protocol (a
    lock another process holds, say) is the default's silence, so no callback the fetch makes can be missing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def file_done(self, path: str, size: int, fetched: bool) -> None:
        with self._lock:
            sys.stdout.write(json.dumps({"file": path, "size": size, "fetched": fetched}) + "\n")
            sys.stdout.flush()  # the parent hands out the next batch on these lines: a pipe is block-buffered


def _worker_main() -> int:
    from hfcache.cache.layout import HubCache
    from hfcache.fetch.fetcher import Fetcher
    from hfcache.fetch.hub import HubClient

    line = sys.stdin.readline()
    if not line.strip():
        return 130  # stopped before it was given a job (Ctrl-C in the parent): nothing to say
    j = json.loads(line)
    files: queue.SimpleQueue = queue.SimpleQueue()
    threading.Thread(target=_lifeline, args=(files,), daemon=True, name="hfcache-lifeline").start()

    def feed() -> tuple[str, FileMeta] | None:
        """The next file the parent handed over; None once it said there are no more."""
        item = files.get()
        if item is None:
            files.put(None)  # for the other threads waiting here
        return item

    try:
        client = HubClient(j["endpoint"], j["token"], headers=j.get("headers"))
        fetcher = Fetcher(HubCache(Path(j["cache"])), client=client, offline=False,
                          max_workers=j["workers"], progress=_LineProgress(), processes=1,
                          transfer_options=TransferOptions(**j["options"]) if j["options"] else None)
        stats = fetcher.fetch_files(RepoRef(*j["repo"]), j["commit"], {}, feed=feed)
        outcome = {"stats": asdict(stats)}
    except errors.HfcacheError as e:
        outcome = {"error": str(e), "type": type(e).__name__}
    except Exception as e:  # noqa: BLE001 - reported by the parent, in one line
        outcome = {"error": f"download worker: {type(e).__name__}: {e}", "type": "HfcacheError"}
    sys.stdout.write(json.dumps(outcome) + "\n")
    sys.stdout.flush()
    return 0


def _lifeline(files: queue.SimpleQueue) -> None:
    """Queue the files of each batch the parent sends (None after the last); end this worker when its parent is
    gone (stdin at EOF): nobody would take its results, nor stop it."""
    try:
        for line in sys.stdin:
            batch = json.loads(line)
            for f, m in batch.get("files", {}).items():
                files.put((f, FileMeta.from_json(m)))
            if "end" in batch:
                files.put(None)
    except (OSError, ValueError):
        pass
    os._exit(130)


if __name__ == "__main__":
    try:
        sys.exit(_worker_main())
    except (KeyboardInterrupt, BrokenPipeError):  # Ctrl-C reaches the whole group; the parent reports it
        os._exit(130)
