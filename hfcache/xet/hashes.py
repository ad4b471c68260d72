"""Xet hashes, as xet-core's `merklehash` computes them (keyed BLAKE3 throughout).

A hash is 32 bytes; its hex form prints the four little-endian u64 words, 16 hex digits each (so each 8-byte
group reads reversed). A merkle node hashes the lines `"{hex} : {size}\\n"` of its children; children are grouped
by content (a cut after a child whose last u64 word is 0 mod 4, 2 to 9 children a group), level by level, until
one node is left. A xorb's hash is that root over its chunks; a file's hash is the root keyed once more with zeros.
"""

from __future__ import annotations

import blake3

DATA_KEY = bytes([102, 151, 245, 119, 91, 149, 80, 222, 49, 53, 203, 172, 165, 151, 24, 28, 157, 228, 33, 16, 155,
                  235, 43, 88, 180, 208, 176, 75, 147, 173, 242, 41])
INTERNAL_NODE_KEY = bytes([1, 126, 197, 199, 165, 71, 41, 150, 253, 148, 102, 102, 180, 138, 2, 230, 93, 221, 83,
                           111, 55, 199, 109, 210, 248, 99, 82, 230, 74, 83, 113, 63])
FILE_KEY = bytes(32)
ZERO = bytes(32)
BRANCHING = 4
MIN_GROUP, MAX_GROUP = 2, 2 * BRANCHING + 1


def chunk_hash(data: bytes | memoryview) -> bytes:
    return blake3.blake3(data, key=DATA_KEY).digest()


def node_hash(data: bytes) -> bytes:
    return blake3.blake3(data, key=INTERNAL_NODE_KEY).digest()


def to_hex(h: bytes) -> str:
    """xet-core's `DataHash::hex`: each 8-byte word printed as a little-endian u64."""
    return "".join(h[i:i + 8][::-1].hex() for i in range(0, 32, 8))


def from_hex(s: str) -> bytes:
    raw = bytes.fromhex(s)
    if len(raw) != 32:
        raise ValueError(f"not a 32-byte hash: {s!r}")
    return b"".join(raw[i:i + 8][::-1] for i in range(0, 32, 8))


def _is_cut(h: bytes) -> bool:
    return int.from_bytes(h[24:32], "little") % BRANCHING == 0


def _merge(nodes: list[tuple[bytes, int]]) -> tuple[bytes, int]:
    text = "".join(f"{to_hex(h)} : {n}\n" for h, n in nodes)
    return node_hash(text.encode()), sum(n for _, n in nodes)


def _next_cut(nodes: list[tuple[bytes, int]], start: int) -> int:
    """Index after the group starting at `start` (xet-core's `next_merge_cut`)."""
    left = len(nodes) - start
    if left <= 2:
        return len(nodes)
    end = min(MAX_GROUP, left)
    for i in range(2, end):
        if _is_cut(nodes[start + i][0]):
            return start + i + 1
    return start + end


def merkle_root(nodes: list[tuple[bytes, int]]) -> bytes:
    """The aggregated hash of (hash, size) leaves; the zero hash for none."""
    if not nodes:
        return ZERO
    level = list(nodes)
    while len(level) > 1:
        out, i = [], 0
        while i < len(level):
            j = _next_cut(level, i)
            out.append(_merge(level[i:j]))
            i = j
        level = out
    return level[0][0]


def xorb_hash(chunks: list[tuple[bytes, int]]) -> bytes:
    return merkle_root(chunks)


def file_hash_of_root(root: bytes, empty: bool) -> bytes:
    return ZERO if empty else blake3.blake3(root, key=FILE_KEY).digest()


class FileHasher:
    """A file's Xet hash from its chunks in order, in bounded memory: each level of the tree keeps only the nodes
    of its group still open (at most `MAX_GROUP`), so a 50 GB file needs no list of its million chunks."""

    def __init__(self) -> None:
        self._levels: list[list[tuple[bytes, int]]] = []
        self._count: list[int] = []  # nodes pushed into each level so far

    def update(self, h: bytes, size: int) -> None:
        self._push(0, (h, size))

    def _push(self, level: int, node: tuple[bytes, int]) -> None:
        if level == len(self._levels):
            self._levels.append([])
            self._count.append(0)
        buf = self._levels[level]
        buf.append(node)
        self._count[level] += 1
        # A group closes at a cut (from its third node on) or at MAX_GROUP nodes; `_next_cut` also needs to know
        # whether more than two nodes remain, which only the end can tell for the last group: keep it open.
        n = len(buf)
        if n > 2 and (_is_cut(node[0]) or n == MAX_GROUP):
            self._levels[level] = []
            self._push(level + 1, _merge(buf))

    def digest(self) -> bytes:
        """The file hash (the hasher is spent afterwards)."""
        if not self._levels or self._count[0] == 0:
            return ZERO
        level = 0
        while True:
            buf = self._levels[level]
            above = level + 1 < len(self._levels) and self._count[level + 1] > 0
            if not above and len(buf) == 1 and self._count[level] == 1:
                return file_hash_of_root(buf[0][0], False)
            if buf:
                self._levels[level] = []
                self._push(level + 1, _merge(buf))
            level += 1

    def hexdigest(self) -> str:
        return to_hex(self.digest())


def file_hash(chunks: list[tuple[bytes, int]]) -> bytes:
    return file_hash_of_root(merkle_root(chunks), not chunks)
