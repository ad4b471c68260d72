"""Hashing a verify plan: each physical file read once, in parallel threads (hashlib releases the GIL), for every
hash kind asked of it; then each expectation judged against what was read.

Large blobs start hashing before the plan is done (`Hasher.early`): on a whole repo every file of `blobs/` is
hashed by its name anyway, so the planning (one core, Python) runs alongside the hashing instead of before it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from hfcache import waits
from hfcache.cache.hashing import HashKind, hash_file_kinds, kind_of
from hfcache.progress import Progress
from hfcache.verify.plan import _Target
from hfcache.verify.report import Problem

HASH_CHUNK = 1024 * 1024  # buffer and hash state stay in L2: measurably faster here than 4 MiB
BATCH_BYTES, BATCH_FILES = 8 * 1024 * 1024, 64  # small files go in batches (a future per file costs), small
# enough that the last batch leaves the other core idle a few ms at most (32 MiB: ~20 ms)
EARLY_BYTES = 16 * 1024 * 1024  # blobs this large start hashing while the plan is made
SWITCH_INTERVAL = 0.0002  # seconds: the GIL switch interval while the plan is made beside early hashing

Result = tuple[int, dict] | OSError


class _Gate:
    """The progress of work that may begin before `progress.start` (early hashing): what is reported before it
    is held, then replayed once the totals are known."""

    def __init__(self, progress: Progress) -> None:
        self._p, self._lock, self._open = progress, threading.Lock(), False
        self._bytes, self._done = 0, []

    def advance(self, n: int) -> None:
        if not self._open:
            with self._lock:
                if not self._open:
                    self._bytes += n
                    return
        self._p.advance(n)

    def file_done(self, path: str, size: int) -> None:
        if not self._open:
            with self._lock:
                if not self._open:
                    self._done.append((path, size))
                    return
        self._p.file_done(path, size, True)

    def start(self, files: int, total: int) -> None:
        with self._lock:
            self._p.start(files, total)
            if self._bytes:
                self._p.advance(self._bytes)
            for path, size in self._done:
                self._p.file_done(path, size, True)
            self._open = True


class Hasher:
    """`jobs` threads hashing files: `early` ones as soon as they are known, then the plan's (`hash_all`)."""

    def __init__(self, jobs: int, progress: Progress) -> None:
        self.jobs = max(1, jobs)
        self.gate = _Gate(progress)
        self._pool: ThreadPoolExecutor | None = None
        self._early: dict[str, tuple[HashKind, Future]] = {}

    def __enter__(self) -> Hasher:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="hfcache-verify")
        return self._pool

    def work(self, path: str, size: int, kinds) -> Result:
        try:
            result = hash_file_kinds(path, kinds, HASH_CHUNK, self.gate.advance)
        except OSError as e:
            return e
        self.gate.file_done(path, size)
        return result

    def early(self, blobs_dirs: list[str]) -> None:
        """Start on the large regular files of these `blobs/` folders, largest first, each by its name's kind.
        Only for folders whose every blob the plan will ask for (whole repos), so no work is wasted."""
        found = []
        for d in blobs_dirs:
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue  # the plan reports it
            for e in entries:
                kind = kind_of(e.name)
                if kind is None or not e.is_file(follow_symlinks=False):
                    continue
                try:
                    size = e.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
                if size >= EARLY_BYTES:
                    found.append((size, e.path, kind))
        for size, path, kind in sorted(found, reverse=True):
            self._early[path] = (kind, self.pool().submit(self.work, path, size, (kind,)))

    @contextlib.contextmanager
    def sharing_the_gil(self) -> Iterator[None]:
        """While Python work runs beside early hashing: a hashing thread takes the GIL back after each chunk, and
        waits up to the switch interval (5 ms) for a busy thread to give it; for ~0.7 ms of hashing a chunk, that
        would idle the hashers most of the time. A short interval for that span only (and back after)."""
        if not self._early:
            yield
            return
        before = sys.getswitchinterval()
        sys.setswitchinterval(min(before, SWITCH_INTERVAL))
        try:
            yield
        finally:
            sys.setswitchinterval(before)

    def hash_all(self, targets: list[_Target]) -> list[Result]:
        """One result per target, in order: an early result when it has every kind asked, else hashed now."""
        self.gate.start(len(targets), sum(t.size for t in targets))
        ready: dict[int, Future] = {}
        rest: list[tuple[int, _Target, set]] = []
        for i, t in enumerate(targets):
            kinds = {k for _, k, _ in t.expects}
            got = self._early.get(t.path)
            if got is not None and kinds == {got[0]}:
                ready[i] = got[1]
            else:
                rest.append((i, t, kinds))
        if self.jobs <= 1 and not self._early:
            return [self.work(t.path, t.size, kinds) for _, t, kinds in rest]
        for batch in _batches(rest):
            fut = self.pool().submit(lambda b: [self.work(t.path, t.size, k) for _, t, k in b], batch)
            for j, (i, _, _) in enumerate(batch):
                ready[i] = _Item(fut, j)
        return [ready[i].result() for i in range(len(targets))]


class _Item:
    """One file's result inside a batch's future."""

    def __init__(self, fut: Future, index: int) -> None:
        self.fut, self.index = fut, index

    def result(self) -> Result:
        return waits.result(self.fut)[self.index]


def _hash_all(targets: list[_Target], jobs: int, progress: Progress) -> list[Result]:
    with Hasher(jobs, progress) as h:
        return h.hash_all(targets)


def _batches(items: list):
    """Large files one per task (largest first, so they start early); small ones grouped, to spare the pool
    a future per file."""
    batch, size = [], 0
    for item in items:
        t = item[1]
        if t.size >= BATCH_BYTES:
            yield [item]
            continue
        batch.append(item)
        size += t.size
        if size >= BATCH_BYTES or len(batch) >= BATCH_FILES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _judge(t: _Target, result: Result) -> list[Problem]:
    if isinstance(result, OSError):
        return [Problem("unreadable", str(t.repo), tuple(sum(t.referrers.values(), [])), t.blob,
                        "readable", f"{type(result).__name__}: {result.strerror or result}", t.size)]
    size, digests = result
    out = []
    for (repo, kind, digest), e in sorted(t.expects.items(), key=lambda kv: (str(kv[0][0]), kv[0][1], kv[0][2])):
        paths = set(e.paths) | (set(t.referrers.get(repo, [])) if e.whole else set())
        common = dict(paths=tuple(sorted(paths)), blob=t.blob, bytes=size)
        wrong = {s: src for s, src in e.sizes.items() if s != size}
        if wrong:
            out.append(Problem("size-mismatch", str(repo), expected=" or ".join(map(str, sorted(wrong))),
                               actual=str(size), sources=tuple(sorted(set().union(*wrong.values()))), **common))
        elif digests[kind] != digest:
            out.append(Problem("hash-mismatch", str(repo), expected=f"{kind}:{digest}",
                               actual=f"{kind}:{digests[kind]}", sources=tuple(sorted(e.sources)), **common))
    return out
