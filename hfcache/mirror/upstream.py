"""What the upstream Hub says, remembered in the mirror's store.

A branch or tag is asked upstream at most once per `revalidate` seconds (its answer kept as `refs/<name>`, as any
client keeps it); a commit never changes, and its listing is kept as `trees/<commit>.json`, so both answer from
the store for ever after. When upstream is in trouble (unreachable, 429, 5xx, a timeout) the last known answer is
served (stale on error), after at most `STALE_WAIT` seconds when upstream is silent; with `HF_HUB_OFFLINE=1`
upstream is never asked. What upstream really says is missing
(a repo, a revision, a file) stays a 404; its failures become 502/503/504 (`gateway_status`), never a 404 (which
makes clients record `.no_exist`) nor a 401 (which makes them give up).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from hfcache.cache.layout import HubCache, RepoRef, is_commit
from hfcache.cache.meta import FileMeta
from hfcache.errors import EndpointError, HfcacheError, OfflineCacheMiss
from hfcache.fetch.hub import HubClient
from hfcache.fetch.transfer import Transfer, TransferOptions

STALE_WAIT = 2.0  # seconds upstream gets to revalidate when a last answer can be served instead
T = TypeVar("T")
RETRY_AFTER_FAILURE = 5.0  # after a failed revalidation, the stale answer is served this long before asking again
CLIENTS_MAX = 256  # HubClients kept (one per client token); the oldest is dropped beyond
TREES_KEPT = 256  # commit listings kept in memory (they never change; trees/ keeps them all on disk)
# The mirror's own clients wait on it: a blob upstream refuses is reported after a few tries, not after minutes.
MIRROR_TRANSFER = TransferOptions(connections=1, split_threshold=1 << 62, retries=2)


def token_key(token: str | None) -> str:
    """A token as a dictionary key: its hash, so no structure the mirror keeps holds the token itself."""
    return "" if token is None else hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def gateway_status(error: BaseException) -> int:
    """The status a client gets for an upstream failure: 503 when upstream throttles, is unavailable or the mirror
    is offline, 504 for a timeout, 502 otherwise."""
    if isinstance(error, OfflineCacheMiss):
        return 503
    seen: BaseException | None = error
    for _ in range(8):  # the original exception hides in the context chain (`raise ... from None` keeps it)
        if seen is None:
            break
        if "Timeout" in type(seen).__name__ or isinstance(seen, TimeoutError):
            return 504
        response = getattr(seen, "response", None)
        if getattr(response, "status_code", None) in (429, 503):
            return 503
        seen = seen.__context__
    text = str(error)
    if "HTTP 429" in text or "HTTP 503" in text:
        return 503
    if "Timeout" in text:
        return 504
    return 502


class _Pending:
    """One question to upstream in flight: its answer (a value or an exception) once `event` is set."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.result: object = None


@dataclass
class _Known:
    commit: str
    checked: float  # time.monotonic() of the last upstream answer (or of a failed try, shifted)


class Upstream:
    """The upstream endpoint as the mirror uses it: metadata with a time to live, clients and transfers per token.

    `token=None` is the mirror's own identity upstream (HF_TOKEN or the stored token of the mirror's user); a
    client's token is used where the mirror must act as that client (a gated or private repo).
    """

    def __init__(self, cache: HubCache, endpoint: str, revalidate: float = 60.0, offline: bool = False) -> None:
        self.cache = cache
        self.endpoint = endpoint.rstrip("/")
        self.revalidate = revalidate
        self.offline = offline
        self._known: dict[tuple[RepoRef, str], _Known] = {}
        self._clients: dict[str, tuple[HubClient, Transfer]] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[tuple, threading.Lock] = {}
        self._pending: dict[tuple, _Pending] = {}
        self._trees: OrderedDict[tuple[RepoRef, str], dict[str, FileMeta]] = OrderedDict()

    # -- clients -----------------------------------------------------------------------------------------------
    def client(self, token: str | None = None, anonymous: bool = False) -> tuple[HubClient, Transfer]:
        """The client (and its transfer engine, one connection pool) acting with `token`; `anonymous`: none."""
        key = "anonymous" if anonymous else token_key(token)
        with self._lock:
            hit = self._clients.get(key)
            if hit is None:
                if len(self._clients) >= CLIENTS_MAX:
                    self._clients.pop(next(iter(self._clients)))
                client = HubClient(self.endpoint, token=False if anonymous else token)
                hit = (client, Transfer(client, MIRROR_TRANSFER))
                self._clients[key] = hit
            return hit

    @contextmanager
    def _single(self, key: tuple) -> Iterator[None]:
        """One thread of this process asks upstream a given question at a time; the others then read its answer."""
        with self._lock:
            if len(self._key_locks) > 10_000:  # bounded: a lock dropped while held only lets one question repeat
                self._key_locks.clear()
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            yield

    # -- metadata ----------------------------------------------------------------------------------------------
    def known_commit(self, repo: RepoRef, revision: str) -> str | None:
        """The commit when it is known and fresh (no I/O: the event loop may call it), else None."""
        if is_commit(revision):
            return revision
        known = self._known.get((repo, revision))
        if known is not None and time.monotonic() - known.checked < self.revalidate:
            return known.commit
        return None

    def known_listing(self, repo: RepoRef, commit: str) -> dict[str, FileMeta] | None:
        """A commit's listing when this process holds it in memory (no I/O), else None."""
        return self._trees.get((repo, commit))

    def _remember(self, repo: RepoRef, commit: str, files: dict[str, FileMeta]) -> dict[str, FileMeta]:
        with self._lock:
            self._trees[(repo, commit)] = files
            while len(self._trees) > TREES_KEPT:
                self._trees.popitem(last=False)
        return files

    def commit(self, repo: RepoRef, revision: str, token: str | None = None) -> str:
        """The commit `revision` names: a commit as is; a branch or tag from memory while fresh, else upstream;
        on upstream trouble the last known answer (memory, then `refs/`). With a last answer to fall back on,
        upstream gets `STALE_WAIT` seconds: a silent upstream (a partition) must not hold clients until their own
        timeout; its answer, when it comes, is kept for the next request."""
        if is_commit(revision):
            return revision
        key = (repo, revision)
        known = self._known.get(key)
        if known is not None and time.monotonic() - known.checked < self.revalidate:
            return known.commit
        if self.offline:
            return self._stale(repo, revision, OfflineCacheMiss(f"{repo}@{revision} is not in the mirror's store "
                                                                "(offline mode is on)"))
        fallback = known.commit if known is not None else self.cache.read_ref(repo, revision)

        def ask() -> str:
            commit = self.client(token)[0].resolve_revision(repo, revision)
            if len(self._known) > 100_000:  # bounded; refs/ still holds every last answer
                self._known.clear()
            self._known[key] = _Known(commit, time.monotonic())
            self.cache.write_ref(repo, revision, commit)
            return commit

        done, result = self.ask_once(("ref", *key), ask, STALE_WAIT if fallback is not None else None)
        if not done:  # upstream silent: the last answer, and no new wait for a while
            return self._stale(repo, revision, EndpointError(f"{self.endpoint} did not answer in time"))
        if isinstance(result, EndpointError):
            return self._stale(repo, revision, result)
        if isinstance(result, BaseException):
            raise result
        return result

    def ask_once(self, key: tuple, ask: Callable[[], T], wait: float | None) -> tuple[bool, T | BaseException]:
        """Run `ask` in a thread, once per `key` at a time (callers asking meanwhile share its answer); wait for
        it at most `wait` seconds (None: until it ends). (done, its value or exception); done is False when the
        wait ran out, the question still running."""
        with self._lock:
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = _Pending()
                threading.Thread(target=self._answer, args=(key, pending, ask), daemon=True,
                                 name="hfcache-upstream-ask").start()
        if not pending.event.wait(wait):
            return False, EndpointError("no answer yet")
        return True, pending.result

    def _answer(self, key: tuple, pending: _Pending, ask: Callable[[], object]) -> None:
        try:
            pending.result = ask()
        except BaseException as e:  # handed to every caller waiting
            pending.result = e
        finally:
            with self._lock:
                self._pending.pop(key, None)
            pending.event.set()

    def _stale(self, repo: RepoRef, revision: str, error: HfcacheError) -> str:
        known = self._known.get((repo, revision))
        commit = known.commit if known is not None else self.cache.read_ref(repo, revision)
        if commit is None:
            raise error
        retry_at = time.monotonic() - self.revalidate + min(RETRY_AFTER_FAILURE, self.revalidate)
        self._known[(repo, revision)] = _Known(commit, retry_at)
        return commit

    def listing(self, repo: RepoRef, commit: str, token: str | None = None) -> dict[str, FileMeta]:
        """Every file of a commit with its metadata, from `trees/` or (once) upstream."""
        files = self.known_listing(repo, commit)
        if files is not None:
            return files
        files = self.cache.read_tree(repo, commit)
        if files is not None:
            return self._remember(repo, commit, files)
        if self.offline:
            raise OfflineCacheMiss(f"the listing of {repo}@{commit[:12]} is not in the mirror's store "
                                   "(offline mode is on)")
        with self._single(("tree", repo, commit)):
            files = self.cache.read_tree(repo, commit)
            if files is None:
                files = self.client(token)[0].list_files(repo, commit)
                self.cache.write_tree(repo, commit, files)
            return self._remember(repo, commit, files)

    def close(self) -> None:
        with self._lock:
            for client, transfer in self._clients.values():
                transfer.close()
                client.close()  # its API connections (an evicted client may still be in use: left to the GC)
            self._clients.clear()
