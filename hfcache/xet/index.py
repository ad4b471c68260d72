"""Which Xet chunks are already on disk: for each file a Xet download wrote, its chunks in order (xorb, chunk index,
offset, length, hash). A new file's term whose chunks are all there is read from disk instead of fetched.

Nothing here is trusted: a file is used only while its size and mtime are those recorded, and every chunk read
back must hash to the hash recorded when the file, checked whole against its Xet hash, was written.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hfcache.xet.hashes import chunk_hash

ROW = struct.Struct("<32sIQI32sQ")  # xorb, chunk index, offset in the file, length, chunk hash, end in the xorb
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, xet_hash TEXT NOT NULL,
                                  size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (xorb BLOB NOT NULL, idx INTEGER NOT NULL, file_id INTEGER NOT NULL,
                                   offset INTEGER NOT NULL, length INTEGER NOT NULL, hash BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_xorb ON chunks (xorb, idx);
CREATE INDEX IF NOT EXISTS chunks_by_file ON chunks (file_id);
"""


@dataclass(frozen=True)
class Row:
    xorb: bytes
    idx: int
    offset: int
    length: int
    hash: bytes
    xorb_end: int = 0  # the byte after the chunk in its xorb (0: unknown, read from disk): where a resume fetches

    def pack(self) -> bytes:
        return ROW.pack(self.xorb, self.idx, self.offset, self.length, self.hash, self.xorb_end)


def read_rows(path: Path) -> Iterator[Row]:
    """The rows of a download record, up to the last whole one."""
    with open(path, "rb") as f:
        while len(raw := f.read(ROW.size)) == ROW.size:
            yield Row(*ROW.unpack(raw))


class ChunkIndex:
    """The index file; thread-safe; any failure to open or use it means "nothing on disk", never an error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection | None:
        if self._db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                self._db = db
            except (OSError, sqlite3.Error):
                return None
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def add_file(self, path: Path, xet_hash: str, rows: Iterable[Row]) -> None:
        """Record a checked file's chunks (replacing what was recorded for that path)."""
        with self._lock:
            db = self._conn()
            if db is None:
                return
            try:
                st = os.stat(path)
                db.execute("BEGIN IMMEDIATE")
                self._forget(db, str(path))
                cur = db.execute("INSERT INTO files (path, xet_hash, size, mtime_ns) VALUES (?, ?, ?, ?)",
                                 (str(path), xet_hash, st.st_size, st.st_mtime_ns))
                fid = cur.lastrowid
                db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)",
                               ((r.xorb, r.idx, fid, r.offset, r.length, r.hash) for r in rows))
                db.execute("COMMIT")
            except (OSError, sqlite3.Error):
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")

    @staticmethod
    def _forget(db: sqlite3.Connection, path: str) -> None:
        for (fid,) in db.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchall():
            db.execute("DELETE FROM chunks WHERE file_id = ?", (fid,))
            db.execute("DELETE FROM files WHERE id = ?", (fid,))

    def covers(self, xorb: bytes, start: int, end: int) -> bool:
        """Whether some one file is recorded to hold chunks [start, end) of `xorb` (not yet checked)."""
        with self._lock:
            db = self._conn()
            if db is None:
                return False
            try:
                row = db.execute("SELECT COUNT(DISTINCT idx) FROM chunks WHERE xorb = ? AND idx >= ? AND idx < ? "
                                 "GROUP BY file_id ORDER BY 1 DESC LIMIT 1", (xorb, start, end)).fetchone()
            except sqlite3.Error:
                return False
        return row is not None and row[0] == end - start

    def read_term(self, xorb: bytes, start: int, end: int) -> list[tuple[bytes | memoryview, bytes]] | None:
        """Chunks [start, end) of `xorb` as (data, hash), read from a file on disk that holds them all and checked
        against their recorded hashes; None when no file does."""
        with self._lock:
            db = self._conn()
            if db is None:
                return None
            try:
                hits = db.execute(
                    "SELECT c.file_id, f.path, f.size, f.mtime_ns, c.idx, c.offset, c.length, c.hash FROM chunks c "
                    "JOIN files f ON f.id = c.file_id WHERE c.xorb = ? AND c.idx >= ? AND c.idx < ? "
                    "ORDER BY c.file_id, c.idx", (xorb, start, end)).fetchall()
            except sqlite3.Error:
                return None
        by_file: dict[int, list] = {}
        for h in hits:
            by_file.setdefault(h[0], []).append(h)
        for rows in by_file.values():
            if [r[4] for r in rows] != list(range(start, end)):
                continue
            got = self._read(rows)
            if got is not None:
                return got
            with self._lock, contextlib.suppress(sqlite3.Error):
                db = self._conn()
                if db is not None:
                    self._forget(db, rows[0][1])
        return None

    @staticmethod
    def _read(rows: list) -> list[tuple[bytes | memoryview, bytes]] | None:
        path, size, mtime = rows[0][1], rows[0][2], rows[0][3]
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_size != size or st.st_mtime_ns != mtime:
                    return None
                first, last = rows[0][5], rows[-1][5] + rows[-1][6]
                contiguous = all(b[5] == a[5] + a[6] for a, b in zip(rows, rows[1:], strict=False))
                span = memoryview(b"")
                if contiguous:  # one read for the term (chunks of one xorb run are written one after another)
                    f.seek(first)
                    span = memoryview(f.read(last - first))  # the chunks are views of it: no copy each
                out = []
                for r in rows:
                    if contiguous:
                        data = span[r[5] - first:r[5] - first + r[6]]
                    else:
                        f.seek(r[5])
                        data = f.read(r[6])
                    h = chunk_hash(data)
                    if len(data) != r[6] or h != r[7]:
                        return None
                    out.append((data, h))
                return out
        except OSError:
            return None
