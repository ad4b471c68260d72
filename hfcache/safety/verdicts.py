"""Verdicts remembered across runs, so a second check of an unchanged cache reads no file.

A verdict is keyed by what identifies the bytes and the rules: the blob's name (its hash) or the file's real path,
its size, mtime and ctime (a rewrite changes them; ctime cannot be set back), and the policy version (a new allow
list, or a user's `--allow`, decides afresh). The store is one SQLite file under HF_HOME (see
`HubCache.safety_verdicts_path`); if it cannot be opened or written, checks simply run without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from hfcache.safety.result import FileVerdict

_SCHEMA = ("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, name TEXT NOT NULL, policy TEXT NOT NULL, "
           "verdict TEXT NOT NULL, format TEXT NOT NULL, data TEXT NOT NULL)")
_INDEX = "CREATE INDEX IF NOT EXISTS verdicts_name ON verdicts (name)"


def identity(name: str, st: os.stat_result) -> str:
    return f"{name}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"


class Memory:
    """Read all at once, written back in one transaction: a run does two queries, not one per file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=30)
            self._db.execute(_SCHEMA)
            self._db.execute(_INDEX)
        except (OSError, sqlite3.Error):
            self._db = None

    def recall(self, keys: Iterable[str], policy: str) -> dict[str, FileVerdict]:
        if self._db is None:
            return {}
        wanted = list(keys)
        found: dict[str, FileVerdict] = {}
        try:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                rows = self._db.execute(
                    f"SELECT key, data FROM verdicts WHERE policy = ? AND key IN ({','.join('?' * len(chunk))})",
                    [policy, *chunk])
                for key, data in rows:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        found[key] = FileVerdict.from_json(json.loads(data))
        except sqlite3.Error:
            return {}
        return found

    def remember(self, items: dict[str, FileVerdict], policy: str) -> None:
        if self._db is None or not items:
            return
        try:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?)",
                                     [(k, k.split("|", 1)[0], policy, v.verdict, v.format, json.dumps(v.to_json()))
                                      for k, v in items.items()])
        except sqlite3.Error:
            pass

    def by_name(self, names: Iterable[str]) -> dict[str, tuple[str, str]]:
        """(verdict, format) last remembered for each blob name, under any policy: what `scan` shows."""
        if self._db is None:
            return {}
        out: dict[str, tuple[str, str]] = {}
        wanted = list(names)
        try:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                rows = self._db.execute(
                    f"SELECT name, verdict, format FROM verdicts WHERE name IN ({','.join('?' * len(chunk))})", chunk)
                for name, verdict, fmt in rows:
                    out[name] = (verdict, fmt)
        except sqlite3.Error:
            return {}
        return out

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
