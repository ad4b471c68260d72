"""The walk's shared state, built so memory grows with repos, not with files.

- Inodes are remembered only when `st_nlink > 1` (a hard link may be met again); other files count once by
  construction.
- Problems are tallied per kind; only the first few are kept unless the caller asks for all of them.
- Duplicate blobs across repos are found with a fixed-size bitmap of blob names (no per-blob record): a name
  whose bit is already set is a candidate, and one more listing of the `blobs/` folders confirms candidates.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections import defaultdict
from dataclasses import dataclass, field

from hfcache.scan.model import Problem, ProblemGroup

IGNORED_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})  # as huggingface_hub's scan ignores them


class InodeCounter:
    """Says whether a file's bytes were already counted (through another hard link)."""

    def __init__(self) -> None:
        self._seen: set[tuple[int, int]] = set()

    def first(self, st: os.stat_result) -> bool:
        if st.st_nlink < 2:
            return True
        key = (st.st_dev, st.st_ino)
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


class Problems:
    """Problem tally: count and bytes per kind, and up to `keep` examples (None keeps all)."""

    def __init__(self, keep: int | None) -> None:
        self.keep = keep
        self.count: dict[str, int] = defaultdict(int)
        self.bytes: dict[str, int] = defaultdict(int)
        self.fixable: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.examples: dict[str, list[Problem]] = defaultdict(list)

    def add(self, kind: str, path: str, nbytes: int = 0, detail: str = "", *, age: float | None = None,
            repo: str | None = None, fix: str | None = None, paths: tuple[str, ...] = (), digest: str = "",
            count: int = 1) -> None:
        self.count[kind] += count
        self.bytes[kind] += nbytes
        if fix is not None:
            self.fixable[fix][kind] += nbytes
        ex = self.examples[kind]
        if self.keep is None or len(ex) < self.keep:
            ex.append(Problem(kind, path, nbytes, detail, age, repo, fix, paths, digest, count))

    def groups(self) -> tuple[ProblemGroup, ...]:
        out = []
        for kind in sorted(self.count, key=lambda k: (-self.bytes[k], -self.count[k], k)):
            fixable = sum(per_kind.get(kind, 0) for per_kind in self.fixable.values())
            out.append(ProblemGroup(kind, self.count[kind], self.bytes[kind], fixable, tuple(self.examples[kind])))
        return tuple(out)

    def fixable_by(self, fix: str, kinds: tuple[str, ...] | None = None) -> int:
        per_kind = self.fixable.get(fix, {})
        return sum(v for k, v in per_kind.items() if kinds is None or k in kinds)


class DupFinder:
    """Candidate duplicate sha256 blob names, with a fixed 4 MiB Bloom filter (two bits per name, from the
    name's hash): a name whose bits are both set already is a candidate. Each repo also keeps a 1024-bit
    signature of its names, so confirming a candidate looks only where it may be. (The filter is filled by
    `HubWalk._merge`, inlined there because it runs once per blob.)"""

    BITS = 25
    FEW = 64  # up to this many candidates, probe each one with `lstat`; beyond, re-list the folders

    def __init__(self) -> None:
        self.bitmap = bytearray(1 << (self.BITS - 3))
        self.mask = (1 << self.BITS) - 1
        self.candidates: set[str] = set()

    def confirm(self, blob_dirs: list[tuple[str, int]]) -> dict[str, list[str]]:
        """Candidate name -> every blob path holding it (only names met in two or more folders)."""
        if not self.candidates:
            return {}
        bits = {name: 1 << (hash(name) & 1023) for name in self.candidates}
        wanted = 0
        for b in bits.values():
            wanted |= b
        found: dict[str, list[str]] = defaultdict(list)
        for d, signature in blob_dirs:
            if not signature & wanted:
                continue
            if len(bits) <= self.FEW:
                for name, b in bits.items():
                    if signature & b and os.path.lexists(f"{d}/{name}"):
                        found[name].append(f"{d}/{name}")
                continue
            try:
                names = os.listdir(d)
            except OSError:
                continue
            for name in self.candidates.intersection(names):
                found[name].append(f"{d}/{name}")
        return {k: v for k, v in found.items() if len(v) > 1}


@dataclass
class Tally:
    """Files and bytes of a walked folder (bytes counted once per inode), and its newest times."""

    files: int = 0
    bytes: int = 0
    logical: int = 0  # bytes without the hard-link dedup: what the folder alone holds
    atime: float = 0.0
    mtime: float = 0.0

    def add(self, st: os.stat_result, inodes: InodeCounter) -> None:
        self.files += 1
        self.logical += st.st_size
        if inodes.first(st):
            self.bytes += st.st_size
        if st.st_atime > self.atime:
            self.atime = st.st_atime
        if st.st_mtime > self.mtime:
            self.mtime = st.st_mtime

    def merge(self, other: Tally) -> None:
        self.files += other.files
        self.bytes += other.bytes
        self.logical += other.logical
        self.atime = max(self.atime, other.atime)
        self.mtime = max(self.mtime, other.mtime)


@dataclass
class Context:
    """Everything one scan shares across areas."""

    now: float
    stale_after: float
    inodes: InodeCounter = field(default_factory=InodeCounter)
    problems: Problems = field(default_factory=lambda: Problems(20))
    dups: DupFinder = field(default_factory=DupFinder)
    skip: frozenset[str] = frozenset()  # area roots: walking one area never enters another


def du(path: str, ctx: Context, tally: Tally | None = None) -> Tally:
    """Files and bytes under `path` (a file or a folder), links not followed, other areas skipped."""
    tally = tally if tally is not None else Tally()
    try:
        st = os.lstat(path)
    except OSError:
        return tally
    if not stat.S_ISDIR(st.st_mode):
        if stat.S_ISREG(st.st_mode):
            tally.add(st, ctx.inodes)
        return tally
    stack = [path]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    if e.path not in ctx.skip:
                        stack.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        tally.add(e.stat(follow_symlinks=False), ctx.inodes)
    return tally
