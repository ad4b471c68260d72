"""The bytes of a Xet file in order, in bounded memory: xorb ranges fetched in pieces, decoded chunk by chunk.

A remote term's chunks are a run of bytes in a xorb range; they are fetched in `PIECE`-sized ranged GETs, up to
`BUDGET` bytes ahead of the writer (fetched or in flight), across terms. The writer walks each piece's chunk
headers (cheap, in order: a chunk may straddle two pieces), then hands runs of whole chunks (at most `DECODE_MAX`
bytes decoded) to a small pool that decodes and hashes them, up to `DEPTH` runs ahead. A term whose chunks a file
on disk holds is read from there, `LOCAL_BATCH` chunks at a time, on the same pool. So what the pipeline holds is
at most `held_bound()`, whatever the file or xorb size; `Held` counts it (and its peak) as it goes.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from hfcache.errors import IntegrityError
from hfcache.xet.chunks import HEADER, MAX_CHUNK, chunk_header, decode_chunks
from hfcache.xet.recon import FetchEntry, Term

PIECE = 4 * 1024 * 1024  # bytes per ranged GET of a xorb range
BUDGET = 24 * 1024 * 1024  # raw xorb bytes fetched or in flight ahead of the writer
FETCHERS = 6  # ranged GETs at once
DECODE_MAX = 2 * 1024 * 1024  # decoded bytes per decode job
DEPTH = 3  # decode or disk-read jobs ahead of the writer
DECODERS = 3
LOCAL_BATCH = 16  # chunks per read from a file on disk (at most 16 x 128 KiB)
WRITE_AHEAD = 2  # batches the consumer may be writing and hashing while it takes the next (it frees them)


def held_bound() -> int:
    """The most the pipeline may hold: the fetch budget (plus one piece over it, the first never waits), the
    decode window and the batches being written (each job's raw bytes and its decoded bytes), and the bytes of a
    chunk cut by a piece's end."""
    raw_job = max(PIECE, DECODE_MAX) + 2 * (2 * MAX_CHUNK + HEADER)
    job = raw_job + max(DECODE_MAX + MAX_CHUNK, LOCAL_BATCH * MAX_CHUNK)
    return BUDGET + PIECE + (DEPTH + WRITE_AHEAD + 1) * job + 2 * (2 * MAX_CHUNK + HEADER)


class Held:
    """Bytes the pipeline holds now, and the most it ever held (for the tests and the report)."""

    def __init__(self) -> None:
        self.now = self.peak = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.now += n
            self.peak = max(self.peak, self.now)


@dataclass(frozen=True)
class Remote:
    """Chunks [first, end) of `entry`'s xorb, whose bytes start at `byte_start` (chunks before `first` from there
    on are skipped: the reconstruction gave a range wider than the term and no known offset)."""
    term: Term
    entry: FetchEntry
    first: int
    byte_start: int
    skip_from: int  # chunk index at `byte_start`


@dataclass(frozen=True)
class Local:
    term: Term
    first: int


Fetch = Callable[[FetchEntry, int, int, "bytearray | None"], "bytes | bytearray | memoryview"]
# ([(data, hash, end in xorb or 0)], first chunk, plan index, the call that frees the batch once written)
Out = tuple[list[tuple[bytes, bytes, int]], int, int, Callable[[], None]]


class _Piece:
    """One fetched range in a reused buffer, returned to the free list when the writer and every decode job that
    reads it are done with it."""

    def __init__(self, buf: bytearray, start: int, size: int) -> None:
        self.buf, self.start, self.size, self.refs = buf, start, size, 1
        self.view: memoryview | None = None


class _Prefetch:
    """Pieces of the remote terms' byte ranges, fetched in order up to `BUDGET` ahead, into reused buffers."""

    def __init__(self, remotes: list[tuple[int, Remote]], fetch: Fetch, pool: ThreadPoolExecutor,
                 held: Held) -> None:
        self.remotes, self.fetch, self.pool, self.held = remotes, fetch, pool, held
        self.cursor = 0  # the remote term whose pieces are being queued
        self.offset = remotes[0][1].byte_start if remotes else 0
        self.queue: deque[tuple[int, int, _Piece, Future]] = deque()  # (plan index, size, piece, future)
        self.queued = 0
        self.free: list[bytearray] = []
        # a small file's pieces are small: no buffer larger than all its remote bytes
        self.buffer_size = min(PIECE, sum(r.entry.url_end - r.byte_start + 1 for _, r in remotes))
        self.buffers = 0  # allocated, for the tests: at most what the budget and the decode window hold

    def _get(self, entry: FetchEntry, start: int, end: int, piece: _Piece) -> _Piece:
        piece.view = memoryview(self.fetch(entry, start, end, piece.buf))
        return piece

    def release(self, piece: _Piece) -> None:
        piece.refs -= 1
        if piece.refs == 0:
            piece.view = None
            self.free.append(piece.buf)
            self.held.add(-piece.size)

    def _top_up(self) -> None:
        while self.cursor < len(self.remotes):
            i, r = self.remotes[self.cursor]
            if self.offset > r.entry.url_end:
                self.cursor += 1
                if self.cursor < len(self.remotes):
                    self.offset = self.remotes[self.cursor][1].byte_start
                continue
            end = min(self.offset + PIECE - 1, r.entry.url_end)
            size = end - self.offset + 1
            if self.queue and self.queued + size > BUDGET:
                return
            if not self.free:
                self.free.append(bytearray(self.buffer_size))
                self.buffers += 1
            piece = _Piece(self.free.pop(), self.offset, size)
            self.queue.append((i, size, piece, self.pool.submit(self._get, r.entry, self.offset, end, piece)))
            self.queued += size
            self.held.add(size)
            self.offset = end + 1

    def _drop_head(self) -> None:
        _, size, piece, fut = self.queue.popleft()
        self.queued -= size
        if fut.cancel():
            self.release(piece)
        else:  # being fetched: its buffer is left to the garbage collector
            self.held.add(-size)

    def take(self, index: int) -> tuple[_Piece, int] | None:
        """The next piece of plan item `index` and its size (the caller releases it), None when it has none
        left."""
        self._top_up()
        while self.queue and self.queue[0][0] < index:  # pieces of a term that ended early
            self._drop_head()
            self._top_up()
        if not self.queue or self.queue[0][0] != index:
            return None
        _, size, piece, fut = self.queue.popleft()
        self.queued -= size
        fut.result()
        self._top_up()
        return piece, size

    def done_with(self, index: int) -> None:
        """Plan item `index` needs no more pieces: stop queueing them."""
        if self.cursor < len(self.remotes) and self.remotes[self.cursor][0] == index:
            self.cursor += 1
            if self.cursor < len(self.remotes):
                self.offset = self.remotes[self.cursor][1].byte_start
        while self.queue and self.queue[0][0] == index:
            self._drop_head()

    def cancel(self) -> None:
        for _, _, _, fut in self.queue:
            fut.cancel()


def _decode(view: memoryview, count: int, base: int) -> list[tuple[bytes, bytes, int]]:
    return [(c.data, c.hash, base + c.end) for c in decode_chunks(view, count, copy=False)]


class Stream:
    """Yields each term's chunks in file order as `Out` batches; `read_local(xorb, start, end)` gives
    [(data, hash)] from disk or None (then those chunks are fetched with `fallback(term, start, end)`)."""

    def __init__(self, plan: list[Remote | Local], fetch: Fetch,
                 read_local: Callable[[str, int, int], list[tuple[bytes, bytes]] | None],
                 fallback: Callable[[Term, int, int], list[tuple[bytes, bytes, int]]]) -> None:
        self.plan, self.read_local, self.fallback = plan, read_local, fallback
        self.held = Held()
        self.fetch_pool = ThreadPoolExecutor(FETCHERS, thread_name_prefix="hfcache-xorb")
        self.decode_pool = ThreadPoolExecutor(DECODERS, thread_name_prefix="hfcache-xet-decode")
        remotes = [(i, p) for i, p in enumerate(plan) if isinstance(p, Remote)]
        self.prefetch = _Prefetch(remotes, fetch, self.fetch_pool, self.held)
        # (future, bytes held, first chunk, plan index, the term when read from disk, the piece it reads)
        self.pending: deque[tuple[Future, int, int, int, Term | None, _Piece | None]] = deque()
        self.local = 0
        self.writing = 0  # batches handed out and not yet freed (at most WRITE_AHEAD + 1)

    def close(self) -> None:
        self.prefetch.cancel()
        for fut, *_ in self.pending:  # (their buffers are not reused: nothing is after this)
            fut.cancel()
        self.fetch_pool.shutdown(wait=True, cancel_futures=True)
        self.decode_pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, fut: Future, held: int, first: int, index: int, term: Term | None,
                piece: _Piece | None = None) -> Iterator[Out]:
        self.held.add(held)
        if piece is not None:
            piece.refs += 1
        self.pending.append((fut, held, first, index, term, piece))
        while len(self.pending) > DEPTH:
            yield from self._drain()

    def _drain(self) -> Iterator[Out]:
        """The oldest job's chunks, and the call that frees them (its piece, which stored chunks are views of):
        the consumer makes it once they are written and hashed."""
        fut, held, first, index, local_term, piece = self.pending.popleft()
        self.writing += 1

        freed: list[bool] = []

        def done() -> None:
            if not freed:
                freed.append(True)
                self.writing -= 1
                self.held.add(-held)
                if piece is not None:
                    self.prefetch.release(piece)

        got = fut.result()
        if local_term is None:
            yield got, first, index, done
        elif got is None:  # not on disk after all (changed, or a chunk went bad): from the CAS
            yield self.fallback(local_term, first, min(first + LOCAL_BATCH, local_term.end)), first, index, done
        else:
            self.local += sum(len(d) for d, _ in got)
            yield [(d, h, 0) for d, h in got], first, index, done

    def __iter__(self) -> Iterator[Out]:
        for index, item in enumerate(self.plan):
            if isinstance(item, Local):
                t = item.term
                for a in range(item.first, t.end, LOCAL_BATCH):
                    b = min(a + LOCAL_BATCH, t.end)
                    fut = self.decode_pool.submit(self.read_local, t.xorb, a, b)
                    yield from self._submit(fut, (b - a) * MAX_CHUNK, a, index, t)
            else:
                yield from self._remote(index, item)
        while self.pending:
            yield from self._drain()

    def _remote(self, index: int, r: Remote) -> Iterator[Out]:
        """Walk the headers piece by piece; decode runs of whole wanted chunks on the pool (views into the piece's
        buffer); a chunk cut by a piece's end is joined (a small copy) and decoded alone."""
        t = r.term
        idx, carry = r.skip_from, b""  # the chunk `carry` begins (or the next one, when it is empty)
        while idx < t.end:
            got = self.prefetch.take(index)
            if got is None:
                raise IntegrityError(f"xorb {t.xorb[:12]}: its range ends before chunk {idx} (the term needs "
                                     f"{t.start}-{t.end})")
            piece, _ = got
            try:
                view = piece.view
                assert view is not None
                pos = 0
                if carry:
                    head = carry if len(carry) >= HEADER else carry + bytes(view[:HEADER - len(carry)])
                    if len(head) < HEADER:
                        carry = head
                        continue
                    _, clen, ulen = chunk_header(memoryview(head), 0)
                    pos = HEADER + clen - len(carry)
                    if pos > len(view):
                        carry += bytes(view)
                        continue
                    whole = carry + bytes(view[:pos])
                    carry = b""
                    if idx >= r.first:
                        fut = self.decode_pool.submit(_decode, memoryview(whole), 1, piece.start + pos - len(whole))
                        yield from self._submit(fut, len(whole) + ulen, idx, index, None)
                    idx += 1
                jobs: list[tuple[int, int, int, int, int]] = []  # (start, end, count, first, decoded bytes)
                run_start, run_first, run_ulen, run_n = pos, idx, 0, 0
                while idx < t.end and len(view) - pos >= HEADER:
                    _, clen, ulen = chunk_header(view, pos)
                    if pos + HEADER + clen > len(view):
                        break
                    if idx < r.first:  # skipped: the run starts after it
                        pos += HEADER + clen
                        idx += 1
                        run_start, run_first = pos, idx
                        continue
                    if run_n and run_ulen + ulen > DECODE_MAX:
                        jobs.append((run_start, pos, run_n, run_first, run_ulen))
                        run_start, run_first, run_ulen, run_n = pos, idx, 0, 0
                    pos += HEADER + clen
                    idx += 1
                    run_ulen += ulen
                    run_n += 1
                if run_n:
                    jobs.append((run_start, pos, run_n, run_first, run_ulen))
                for a, b, n, first, ulen in jobs:
                    fut = self.decode_pool.submit(_decode, view[a:b], n, piece.start + a)
                    yield from self._submit(fut, ulen, first, index, None, piece)
                if idx < t.end:
                    carry = bytes(view[pos:])
                    if len(carry) > 2 * MAX_CHUNK + HEADER:
                        raise IntegrityError(f"xorb {t.xorb[:12]}: a chunk runs past {len(carry)} bytes")
            finally:
                self.prefetch.release(piece)
        self.prefetch.done_with(index)


def fetch_run(fetch: Fetch, entry: FetchEntry, a: int, b: int
              ) -> list[tuple[bytes, bytes, int]]:
    """Chunks [a, b) of `entry`, fetched piece by piece from the start of its range (their offsets are not known):
    the rare path of chunks expected on disk that were not there."""
    out: list[tuple[bytes, bytes, int]] = []
    idx, off, carry = entry.start, entry.url_start, b""
    while idx < b:
        if off > entry.url_end:
            raise IntegrityError(f"xorb {entry.xorb[:12]}: its range ends before chunk {idx}")
        end = min(off + PIECE - 1, entry.url_end)
        buf = carry + bytes(fetch(entry, off, end, None))
        base, off = off - len(carry), end + 1
        view = memoryview(buf)
        pos, span, n = 0, 0, 0
        while idx < b and len(buf) - pos >= HEADER:
            _, clen, _ = chunk_header(view, pos)
            if pos + HEADER + clen > len(buf):
                break
            if idx < a:
                span = pos + HEADER + clen
            else:
                n += 1
            pos += HEADER + clen
            idx += 1
        if n:
            out += _decode(view[span:pos], n, base + span)
        carry = bytes(view[pos:])
    return out
