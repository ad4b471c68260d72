"""Single flight: one upstream fetch per blob, however many clients and mirror processes ask for it at once.

A `Flight` is this process's one thread for one missing blob. It takes the blob's lock (`HubCache.lock`, the lock
huggingface_hub and every hfcache process take): if it gets it, it fetches the blob through the transfer engine
(`hfcache.fetch.transfer`, which resumes a partial, hash-checks and publishes) and links it into the snapshot. While
another process holds the lock, the flight waits on it, and clients follow that process's partial file through
its progress record; if that process dies, its lock is released, this flight gets it and resumes the partial.

Clients of this process share the flight (`Flights.get`); they read the growing file as `available()` says, woken
by `subscribe()`'s event once per `NOTIFY_STEP` bytes landed and at the end (in this process; fewer wake-ups, bigger
reads), or by polling the record (another process's). nginx sends every client of one URL to one process
(`hfcache.mirror.nginx`), so a blob's followers are mostly in the process that fetches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hfcache.cache.layout import HubCache, RepoRef
from hfcache.cache.meta import FileMeta
from hfcache.cache.partfile import written_prefix
from hfcache.cache.paths import UNIQUE
from hfcache.fetch.fetcher import Fetcher
from hfcache.mirror.upstream import Upstream

RUNNING, DONE, FAILED = "running", "done", "failed"
FAILURE_KEPT = 2.0  # seconds a failed fetch stays the answer, so a burst of retries is not a burst upstream
NOTIFY_STEP = 1024 * 1024  # followers are woken once per this many bytes written (upstream reads are ~64 KiB)


class Flight:
    def __init__(self, cache: HubCache, upstream: Upstream, repo: RepoRef, commit: str, filename: str,
                 meta: FileMeta, token: str | None, on_end: Callable[[Flight], None]) -> None:
        self.cache, self.upstream = cache, upstream
        self.repo, self.commit, self.filename, self.meta, self.token = repo, commit, filename, meta, token
        self.blob = cache.blob_path(repo, meta.etag)
        self.paths = cache.partial_paths(repo, meta.etag)
        self.pointer = cache.pointer_path(repo, commit, filename)
        self.state = RUNNING
        self.error: BaseException | None = None
        self.fetching = False  # this process holds the lock and writes the partial
        self.fetched = False  # this flight brought the bytes from upstream (else the store or another process did)
        self._base = 0
        self._advanced = 0
        self._told = 0  # _advanced when followers were last woken
        self._on_end = on_end
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"hfcache-flight-{meta.etag[:12]}")

    def start(self) -> Flight:
        self._thread.start()
        return self

    # -- followers ---------------------------------------------------------------------------------------------
    def available(self) -> int:
        """Bytes from the start of the blob's file that hold what was received (the hash is checked later)."""
        if self.state == DONE:
            return self.meta.size
        if self.fetching:
            return min(self.meta.size, self._base + self._advanced)
        if self.blob.exists():  # published (hash-checked) by another process, while this flight still runs
            return self.meta.size
        return written_prefix(self.paths, self.meta.etag, self.meta.size)

    @property
    def clean(self) -> bool:
        """This flight fetched the blob writing each byte once (no restart under a reader): what followers read
        while it wrote is what its hash check passed."""
        return self.fetched and self._advanced == self.meta.size - self._base

    def source(self) -> Path:
        """The file to read: the blob once published, else the partial being written."""
        return self.blob if self.state == DONE or self.blob.exists() else self.paths.path

    def subscribe(self) -> asyncio.Event:
        """An event set whenever the flight moves on (bytes, the end); call from the event loop."""
        event = asyncio.Event()
        with self._lock:
            self._waiters.add((asyncio.get_running_loop(), event))
        if self.state != RUNNING:
            event.set()
        return event

    def unsubscribe(self, event: asyncio.Event) -> None:
        with self._lock:
            self._waiters = {w for w in self._waiters if w[1] is not event}

    def _notify(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed (server shutting down)
                loop.call_soon_threadsafe(event.set)

    # -- the fetching thread -----------------------------------------------------------------------------------
    def _bytes(self, n: int) -> None:
        self._advanced += n
        if self._advanced - self._told >= NOTIFY_STEP or self._base + self._advanced >= self.meta.size:
            self._told = self._advanced  # one wake-up per step, not per network read: followers read big chunks
            self._notify()

    def _run(self) -> None:
        try:
            self._ensure()
            self.state = DONE
        except BaseException as e:  # reported to every follower; the thread itself ends quietly
            self.error = e
            self.state = FAILED
        finally:
            self.fetching = False
            self._on_end(self)
            self._notify()

    def _ensure(self) -> None:
        """What `Fetcher` does for one file, with the mirror's clients told how far the bytes are."""
        cache, repo, meta = self.cache, self.repo, self.meta
        for folder in (self.blob.parent, self.pointer.parent):
            folder.mkdir(parents=True, exist_ok=True)
        cache.check_inside(self.blob.parent, self.pointer.parent)
        cache.ensure_tag()
        with cache.lock(repo, meta.etag, on_wait=self._notify):
            if self.pointer.exists():
                return
            if Fetcher._reusable(self.blob, meta):
                cache.link(repo, self.commit, self.filename, meta.etag, new_blob=False, make_parent=False)
                return
            for path, role in cache.partials(repo).get(meta.etag, ()):
                if role in UNIQUE:  # a dead process's private partial: we hold the lock
                    path.unlink(missing_ok=True)
            client, transfer = self.upstream.client(self.token)
            self._base = written_prefix(self.paths, meta.etag, meta.size)  # what the transfer resumes from
            self.fetching = True
            self._notify()
            url = client.resolve_url(repo, self.commit, self.filename)
            transfer.fetch_blob(url, self.blob, meta, self._bytes, name=f"{repo}/{self.filename}")
            self.fetched = True
            self.fetching = False
            cache.link(repo, self.commit, self.filename, meta.etag, new_blob=True, make_parent=False)


class Flights:
    """This process's flights, one per blob at a time."""

    def __init__(self, cache: HubCache, upstream: Upstream) -> None:
        self.cache, self.upstream = cache, upstream
        self._flights: dict[tuple[RepoRef, str], Flight] = {}
        self._failed: dict[tuple[RepoRef, str], tuple[Flight, float]] = {}
        self.failure_kept = FAILURE_KEPT
        self._lock = threading.Lock()
        self.started = 0  # flights begun (tests and the bench read it)

    def get(self, repo: RepoRef, commit: str, filename: str, meta: FileMeta, token: str | None) -> Flight:
        key = (repo, meta.etag)
        with self._lock:
            flight = self._flights.get(key)
            failed = self._failed.get(key)
            if flight is None and failed is not None and time.monotonic() - failed[1] < self.failure_kept:
                return failed[0]  # clients retrying at once do not each send upstream another request
            if flight is None:
                flight = Flight(self.cache, self.upstream, repo, commit, filename, meta, token, self._ended)
                self._flights[key] = flight
                self.started += 1
                flight.start()
            return flight

    def _ended(self, flight: Flight) -> None:
        key = (flight.repo, flight.meta.etag)
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
            if flight.state == FAILED:
                if len(self._failed) > 10_000:
                    self._failed.clear()
                self._failed[key] = (flight, time.monotonic())
            else:
                self._failed.pop(key, None)

    def running(self) -> int:
        with self._lock:
            return len(self._flights)

