"""One file rebuilt from its Xet reconstruction into its partial, in file order, in bounded memory.

Terms are taken in order; a term whose chunks some file on disk already holds (`index`) is read from there, the
others come from xorb ranges fetched piece by piece ahead of the writer and decoded chunk run by chunk run
(`stream.Stream`, within `stream.held_bound()` bytes). Each chunk is
written, hashed (keyed BLAKE3, for the file's Xet hash), fed to the sha256, and recorded (`index.Row`) after its
bytes; a run killed at any point resumes from the record, every recorded chunk re-read and re-hashed first. The file
must have its Xet hash, its LFS sha256 and its size before the caller may publish it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from hfcache import waits
from hfcache.cache.meta import FileMeta
from hfcache.cache.paths import XetPartialPaths
from hfcache.errors import IntegrityError
from hfcache.fetch.transfer import OnBytes, Stopped
from hfcache.xet.cas import CasSession
from hfcache.xet.hashes import FileHasher, chunk_hash
from hfcache.xet.index import ROW, ChunkIndex, Row, read_rows
from hfcache.xet.recon import FetchEntry, Reconstruction, Term
from hfcache.xet.stream import WRITE_AHEAD, Local, Remote, Stream, fetch_run


@dataclass(frozen=True)
class XetOutcome:
    fetched: int  # bytes received from the CAS for this file (xorb ranges)
    local: int  # file bytes read from chunks already on disk
    resumed: int  # file bytes kept from an earlier run's partial
    peak_held: int = 0  # the most bytes the pipeline held at once (fetched, in flight, decoding): its memory bound


@dataclass
class _Position:
    term: int = 0
    chunk: int = 0  # chunks of `term` already written
    offset: int = 0
    rows: int = 0
    xorb_end: int = 0  # where the last chunk written ends in its xorb (0: unknown)


def _xorb_key(t: Term) -> bytes:
    return bytes.fromhex(t.xorb)


def _resume(paths: XetPartialPaths, terms: list[Term], sha, fh: FileHasher) -> _Position:
    """What an earlier run wrote and recorded, re-read and re-hashed chunk by chunk; the rest is cut off."""
    pos = _Position()
    if not (paths.path.is_file() and paths.record.is_file()):
        return pos
    try:
        with open(paths.path, "rb") as f:
            for row in read_rows(paths.record):
                if pos.term >= len(terms):
                    break
                t = terms[pos.term]
                if row.xorb != _xorb_key(t) or row.idx != t.start + pos.chunk or row.offset != pos.offset:
                    break
                data = f.read(row.length)
                if len(data) != row.length or chunk_hash(data) != row.hash:
                    break
                sha.update(data)
                fh.update(row.hash, row.length)
                pos.offset += row.length
                pos.rows += 1
                pos.chunk += 1
                pos.xorb_end = row.xorb_end
                if pos.chunk == t.chunks:
                    pos.term, pos.chunk = pos.term + 1, 0
    except OSError:
        return _Position()
    return pos


def rebuild(session: CasSession, index: ChunkIndex, paths: XetPartialPaths, meta: FileMeta,
            on_bytes: OnBytes | None = None, recon: Reconstruction | None = None) -> XetOutcome:
    """Rebuild the file at `paths.path`, checked whole; on a mismatch the partial is discarded and
    `IntegrityError` raised. The caller holds the blob's lock."""
    xet_hash = meta.xet_hash
    rec = recon or session.reconstruction(xet_hash)
    if rec.offset != 0 or rec.size != meta.size:
        raise IntegrityError(f"the CAS rebuilds {xet_hash[:12]} as {rec.size} bytes, the Hub says {meta.size}")
    terms = rec.terms
    sha, fh = hashlib.sha256(), FileHasher()
    pos = _resume(paths, terms, sha, fh)
    resumed = pos.offset
    fetched = [0]
    count_lock = threading.Lock()

    def fetch(entry: FetchEntry, start: int, end: int, into: bytearray | None) -> bytes | bytearray | memoryview:
        data = session.fetch_xorb(xet_hash, entry, start=start, end=end, into=into)
        with count_lock:
            fetched[0] += len(data)
        return data

    def read_local(xorb: str, start: int, end: int) -> list[tuple[bytes, bytes]] | None:
        return index.read_term(bytes.fromhex(xorb), start, end)

    def fallback(t: Term, start: int, end: int) -> list[tuple[bytes, bytes, int]]:
        entry = rec.entry_for(t)
        if entry is None:
            raise IntegrityError(f"no URL for chunks {t.start}-{t.end} of xorb {t.xorb[:12]}")
        return fetch_run(fetch, entry, start, end)

    plan: list[Remote | Local] = []
    for i in range(pos.term, len(terms)):
        t = terms[i]
        first = t.start + (pos.chunk if i == pos.term else 0)
        if index.covers(_xorb_key(t), first, t.end):
            plan.append(Local(t, first))
            continue
        entry = rec.entry_for(t)
        if entry is None:
            raise IntegrityError(f"the reconstruction of {xet_hash[:12]} gives no URL for chunks "
                                 f"{t.start}-{t.end} of xorb {t.xorb[:12]}")
        if i == pos.term and pos.chunk and pos.xorb_end and entry.url_start <= pos.xorb_end <= entry.url_end:
            plan.append(Remote(t, entry, first, pos.xorb_end, first))  # resumed: from the chunk after the last one
        else:
            plan.append(Remote(t, entry, first, entry.url_start, entry.start))
    fd = os.open(paths.path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
    stream = Stream(plan, fetch, read_local, fallback)
    hasher = ThreadPoolExecutor(1, thread_name_prefix="hfcache-sha256")  # in order
    writers = ThreadPoolExecutor(2 if hasattr(os, "pwritev") else 1, thread_name_prefix="hfcache-xet-write")
    writing: deque = deque()  # (write, hash, packed rows, bytes, done), oldest first

    def settle(keep: int) -> None:
        """Record the oldest batches once their bytes are written and hashed (the record never runs ahead of the
        bytes), and free them."""
        while len(writing) > keep:
            wrote, hashed, rows, n, done = writing.popleft()
            waits.result(wrote)
            waits.result(hashed)
            done()
            recf.write(rows)
            recf.flush()  # a killed run loses at most a few batches' record (the bytes are re-checked)
            if on_bytes is not None:
                on_bytes(n)

    try:
        os.ftruncate(fd, pos.offset)
        os.lseek(fd, pos.offset, os.SEEK_SET)
        with open(paths.record, "r+b" if paths.record.exists() else "wb") as recf:
            recf.truncate(pos.rows * ROW.size)
            recf.seek(pos.rows * ROW.size)
            current, want, term_bytes = -1, 0, 0
            for got, first, i, done in stream:
                if session.transfer.stopping:
                    raise Stopped("download stopped")
                item = plan[i]
                t = item.term
                if i != current:
                    _check_term(plan, current, term_bytes)
                    current, want, term_bytes = i, item.first, 0
                if first != want or first + len(got) > t.end:
                    raise IntegrityError(f"chunks of xorb {t.xorb[:12]} out of order ({first}, expected {want})")
                want = first + len(got)
                xk = _xorb_key(t)
                datas = [d for d, _, _ in got]
                hashed = hasher.submit(_sha_update, sha, datas)  # beside the writes: both release the GIL
                wrote = writers.submit(_write_at, fd, datas, pos.offset)
                rows = []
                for k, (data, h, xorb_end) in enumerate(got):
                    fh.update(h, len(data))
                    rows.append(Row(xk, first + k, pos.offset, len(data), h, xorb_end).pack())
                    pos.offset += len(data)
                    term_bytes += len(data)
                writing.append((wrote, hashed, b"".join(rows), sum(len(d) for d in datas), done))
                settle(WRITE_AHEAD)
                if want == t.end:
                    _check_term(plan, current, term_bytes)
                    current = -1
            _check_term(plan, current, term_bytes)
            settle(0)
        if pos.offset != meta.size or sha.hexdigest() != meta.etag or fh.hexdigest() != xet_hash:
            _discard(paths)
            raise IntegrityError(f"corrupt Xet download: the rebuilt file has {pos.offset} bytes, sha256 "
                                 f"{sha.hexdigest()[:12]}, xet hash {fh.hexdigest()[:12]}; expected {meta.size}, "
                                 f"{meta.etag[:12]}, {xet_hash[:12]}")
        os.fsync(fd)
    finally:
        writers.shutdown(wait=True)  # before the file closes: no write may land in a reused descriptor
        hasher.shutdown(wait=True)
        os.close(fd)
        stream.close()
    return XetOutcome(fetched=fetched[0], local=stream.local, resumed=resumed, peak_held=stream.held.peak)


def _sha_update(sha, datas: list) -> None:
    for d in datas:
        sha.update(d)


def _write_at(fd: int, datas: list, offset: int) -> None:
    """The batch at `offset`: one `pwritev` (a chunk is 64 KiB: one write each would cost a syscall each); without
    it (one writer thread then, in order) seek and write."""
    views = [memoryview(d) for d in datas]
    if not hasattr(os, "pwritev"):
        os.lseek(fd, offset, os.SEEK_SET)
        for view in views:
            while view:
                view = view[os.write(fd, view):]
        return
    while views:
        n = os.pwritev(fd, views[:512], offset)
        if n <= 0:
            raise OSError(f"pwritev wrote {n} bytes")
        offset += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


def _check_term(plan: list, i: int, got: int) -> None:
    """A whole term (not one resumed midway) must decode to the length the reconstruction gave."""
    if i < 0:
        return
    t = plan[i].term
    if plan[i].first == t.start and got != t.length:
        raise IntegrityError(f"chunks {t.start}-{t.end} of xorb {t.xorb[:12]} decode to {got} bytes, the "
                             f"reconstruction says {t.length}")


def _discard(paths: XetPartialPaths) -> None:
    for p in (paths.path, paths.record):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
