"""One file rebuilt from its Xet reconstruction into its partial, in file order, in bounded memory.

Terms are taken in order; a term whose chunks some file on disk already holds (`index`) is read from there, the
others come from xorb ranges fetched a few ahead on the transfer engine's pool and decoded there. Each chunk is
written, hashed (keyed BLAKE3, for the file's Xet hash), fed to the sha256, and recorded (`index.Row`) after its
bytes; a run killed at any point resumes from the record, every recorded chunk re-read and re-hashed first. The file
must have its Xet hash, its LFS sha256 and its size before the caller may publish it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from hfcache.cache.meta import FileMeta
from hfcache.cache.paths import XetPartialPaths
from hfcache.errors import IntegrityError
from hfcache.fetch.transfer import OnBytes, Stopped
from hfcache.xet.cas import CasSession
from hfcache.xet.chunks import Chunk, decode_chunks
from hfcache.xet.hashes import FileHasher, chunk_hash
from hfcache.xet.index import ROW, ChunkIndex, Row, read_rows
from hfcache.xet.recon import FetchEntry, Reconstruction, Term

WINDOW = 4  # xorb ranges fetched at once, ahead of the writer
BUDGET = 128 * 1024 * 1024  # bytes of xorb ranges held (fetched or in flight) beyond the one being written


@dataclass(frozen=True)
class XetOutcome:
    fetched: int  # bytes received from the CAS for this file (xorb ranges)
    local: int  # file bytes read from chunks already on disk
    resumed: int  # file bytes kept from an earlier run's partial


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


class _Fetches:
    """Xorb ranges for the remote terms, fetched and decoded up to `WINDOW` ahead of the writer, each kept only
    until its last term is written (or evicted beyond a bound, then fetched again if needed)."""

    def __init__(self, session: CasSession, file_hash: str, order: list[FetchEntry], pool: ThreadPoolExecutor):
        self.session, self.file_hash, self.order, self.pool = session, file_hash, order, pool
        self.uses: dict[tuple, int] = {}
        for e in order:
            self.uses[e.key] = self.uses.get(e.key, 0) + 1
        self.queue = list(OrderedDict((e.key, e) for e in order).values())
        self.sizes = {e.key: e.url_end - e.url_start + 1 for e in order}
        self.next = 0
        self.live: OrderedDict[tuple, Future] = OrderedDict()
        self.fetched = 0

    def _load(self, entry: FetchEntry) -> list[Chunk]:
        for attempt in range(2):
            data = self.session.fetch_xorb(self.file_hash, entry)
            self.fetched += len(data)
            try:
                return decode_chunks(data, entry.end - entry.start)
            except IntegrityError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _top_up(self) -> None:
        """Fetch ahead while fewer than `WINDOW` are in flight and what is held stays within `BUDGET` (xorb ranges
        are at most 64 MiB, so memory stays bounded whatever the file size)."""
        while self.next < len(self.queue):
            e = self.queue[self.next]
            held = sum(self.sizes[k] for k in self.live)
            busy = sum(1 for f in self.live.values() if not f.done())
            if self.live and (busy >= WINDOW or held + self.sizes[e.key] > BUDGET):
                return
            self.next += 1
            if e.key not in self.live:
                self.live[e.key] = self.pool.submit(self._load, e)

    def take(self, entry: FetchEntry) -> list[Chunk]:
        self._top_up()
        fut = self.live.get(entry.key)
        if fut is None:
            self.sizes.setdefault(entry.key, entry.url_end - entry.url_start + 1)
            fut = self.live[entry.key] = self.pool.submit(self._load, entry)
        chunks = fut.result()
        self.uses[entry.key] = self.uses.get(entry.key, 1) - 1  # (one not planned: a chunk on disk went bad)
        if self.uses[entry.key] <= 0:
            self.live.pop(entry.key, None)
        self._top_up()
        return chunks

    def cancel(self) -> None:
        for f in self.live.values():
            f.cancel()


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
    fd = os.open(paths.path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
    local = 0
    pool = ThreadPoolExecutor(WINDOW, thread_name_prefix="hfcache-xorb")
    fetches: _Fetches | None = None
    try:
        os.ftruncate(fd, pos.offset)
        os.lseek(fd, pos.offset, os.SEEK_SET)
        with open(paths.record, "r+b" if paths.record.exists() else "wb") as recf:
            recf.truncate(pos.rows * ROW.size)
            recf.seek(pos.rows * ROW.size)
            plan = []  # (term, first chunk, entry or None when on disk)
            for i in range(pos.term, len(terms)):
                t = terms[i]
                first = t.start + (pos.chunk if i == pos.term else 0)
                entry = None if index.covers(_xorb_key(t), first, t.end) else rec.entry_for(t)
                if entry is not None and i == pos.term and pos.chunk and pos.xorb_end and first > entry.start:
                    # a resumed term: fetch from the chunk after the last one written, not the whole range again
                    entry = FetchEntry(entry.xorb, first, entry.end, entry.url, pos.xorb_end, entry.url_end)
                if entry is None and not index.covers(_xorb_key(t), first, t.end):
                    raise IntegrityError(f"the reconstruction of {xet_hash[:12]} gives no URL for chunks "
                                         f"{t.start}-{t.end} of xorb {t.xorb[:12]}")
                plan.append((t, first, entry))
            fetches = _Fetches(session, xet_hash, [e for _, _, e in plan if e is not None], pool)
            for t, first, entry in plan:
                if session.transfer.stopping:
                    raise Stopped("download stopped")
                got = None
                expected = t.length if first == t.start else None
                if entry is None:
                    on_disk = index.read_term(_xorb_key(t), first, t.end)
                    if on_disk is not None:
                        got = [(d, h, 0) for d, h in on_disk]
                        local += sum(len(d) for d, _ in on_disk)
                if got is None:
                    entry = entry or rec.entry_for(t)
                    if entry is None:
                        raise IntegrityError(f"no URL for chunks {t.start}-{t.end} of xorb {t.xorb[:12]}")
                    chunks = fetches.take(entry)
                    got = [(c.data, c.hash, entry.url_start + c.end)
                           for c in chunks[first - entry.start:t.end - entry.start]]
                if expected is not None and sum(len(d) for d, _, _ in got) != expected:
                    raise IntegrityError(f"chunks {t.start}-{t.end} of xorb {t.xorb[:12]} decode to "
                                         f"{sum(len(d) for d, _, _ in got)} bytes, the reconstruction says {expected}")
                for k, (data, h, xorb_end) in enumerate(got):
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    sha.update(data)
                    fh.update(h, len(data))
                    recf.write(Row(_xorb_key(t), first + k, pos.offset, len(data), h, xorb_end).pack())
                    pos.offset += len(data)
                    if k % 16 == 15:
                        recf.flush()  # a killed run loses at most 16 chunks' record (the bytes are re-checked)
                    if on_bytes is not None:
                        on_bytes(len(data))
                recf.flush()
        if pos.offset != meta.size or sha.hexdigest() != meta.etag or fh.hexdigest() != xet_hash:
            _discard(paths)
            raise IntegrityError(f"corrupt Xet download: the rebuilt file has {pos.offset} bytes, sha256 "
                                 f"{sha.hexdigest()[:12]}, xet hash {fh.hexdigest()[:12]}; expected {meta.size}, "
                                 f"{meta.etag[:12]}, {xet_hash[:12]}")
        os.fsync(fd)
    except BaseException:
        if fetches is not None:
            fetches.cancel()
        raise
    finally:
        os.close(fd)
        pool.shutdown(wait=True, cancel_futures=True)
    return XetOutcome(fetched=fetches.fetched if fetches else 0, local=local, resumed=resumed)


def _discard(paths: XetPartialPaths) -> None:
    for p in (paths.path, paths.record):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
