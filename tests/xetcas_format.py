"""The Xet wire formats the test CAS (tests/xethub.py) needs: xorb chunk walking, shard sections, reconstruction.

Read from xet-core (`xorb_chunk_format.rs`, `metadata_shard/{shard_format,file_structs,xorb_structs}.rs`,
`cas_client/simulation/xorb_utils.rs::compute_reconstruction_ranges`, `cas_types/mod.rs`). Only what a server
does is here: it never decodes a chunk (the bridge serves the uploaded bytes), so no LZ4 and no BLAKE3.
Every parser is bounded and raises `FormatError` on anything malformed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

HASH_LEN = 32
ENTRY = 48  # every shard record (file header/entry/verification/ext, xorb header/entry) is 48 bytes
SHARD_TAG = bytes([*b"HFRepoMetaData", 0, 85, 105, 103, 69, 106, 123, 129, 87, 131, 165, 189, 217, 92, 205, 209,
                   74, 169])
SHARD_HEADER = 48  # tag (32) + version u64 + footer size u64
SHARD_FOOTER = 200  # when present (stored shards); uploads have none
BOOKEND = b"\xff" * HASH_LEN
XORB_FOOTER_IDENT = b"XETBLOB"
CHUNK_HEADER = 8
MAX_CHUNK = 128 * 1024 * 2  # xet-core refuses chunks over 2 * MAX_CHUNK_SIZE (128 KiB target, 2x slack)
FLAG_VERIFICATION = 1 << 31
FLAG_METADATA_EXT = 1 << 30


class FormatError(ValueError):
    """Bytes that are not what the format says."""


def hash_hex(raw: bytes) -> str:
    """A MerkleHash's text form: its four little-endian u64 words, each as 16 hex digits."""
    if len(raw) != HASH_LEN:
        raise FormatError("hash is not 32 bytes")
    return "".join(f"{w:016x}" for w in struct.unpack("<4Q", raw))


def hash_raw(hex_hash: str) -> bytes:
    if len(hex_hash) != 64:
        raise FormatError("hash is not 64 hex digits")
    try:
        return struct.pack("<4Q", *(int(hex_hash[i:i + 16], 16) for i in range(0, 64, 16)))
    except ValueError as e:
        raise FormatError("hash is not hex") from e


@dataclass(frozen=True)
class Chunk:
    start: int  # byte offset of its 8-byte header in the serialized xorb
    end: int  # exclusive: next chunk's header (or the footer)
    scheme: int  # 0 none, 1 LZ4, 2 byte-grouping-4 + LZ4
    raw_len: int  # uncompressed length


def xorb_chunks(data: bytes) -> list[Chunk]:
    """Walk the chunk headers of a serialized xorb up to its `XETBLOB` footer (or the end of the bytes)."""
    chunks: list[Chunk] = []
    pos, n = 0, len(data)
    while pos < n:
        if data[pos:pos + len(XORB_FOOTER_IDENT)] == XORB_FOOTER_IDENT:
            break
        if pos + CHUNK_HEADER > n:
            raise FormatError(f"truncated chunk header at {pos}")
        version = data[pos]
        clen = int.from_bytes(data[pos + 1:pos + 4], "little")
        scheme = data[pos + 4]
        ulen = int.from_bytes(data[pos + 5:pos + 8], "little")
        if version != 0 or scheme > 2 or clen > MAX_CHUNK or ulen > MAX_CHUNK or pos + CHUNK_HEADER + clen > n:
            raise FormatError(f"bad chunk header at {pos}")
        end = pos + CHUNK_HEADER + clen
        chunks.append(Chunk(pos, end, scheme, ulen))
        pos = end
    if not chunks:
        raise FormatError("xorb holds no chunk")
    return chunks


@dataclass(frozen=True)
class Segment:
    xorb: str  # hex
    unpacked: int
    chunk_start: int
    chunk_end: int  # exclusive


@dataclass
class ShardInfo:
    files: dict[str, list[Segment]] = field(default_factory=dict)  # file hash -> its segments, in order
    file_sha256: dict[str, str] = field(default_factory=dict)  # from the metadata extension, when present
    chunks: set[str] = field(default_factory=set)  # every chunk hash in the xorb section (for global dedup)
    xorbs: dict[str, int] = field(default_factory=dict)  # xorb hash -> number of chunks


def parse_shard(data: bytes, max_records: int = 10_000_000) -> ShardInfo:
    """The file section (file hash -> segments) and the xorb section (chunk hashes) of a shard, read in order
    as xet-core's `MDBMinimalShard` does: an upload carries no footer (header `footer_size` 0), a stored shard
    has one (lookup tables, HMAC key) after the two sections."""
    if len(data) < SHARD_HEADER + 2 * ENTRY or data[:32] != SHARD_TAG:
        raise FormatError("not a shard (tag)")
    version, footer_size = struct.unpack_from("<QQ", data, 32)
    if version != 2 or footer_size not in (0, SHARD_FOOTER):
        raise FormatError(f"shard header version {version}, footer size {footer_size}")
    if footer_size and data[-SHARD_FOOTER + 9 * 8:-SHARD_FOOTER + 9 * 8 + 32] != b"\0" * 32:
        raise FormatError("shard chunk hashes are keyed (HMAC): not expected from an upload")
    limit = len(data) - footer_size
    info = ShardInfo()
    pos, records = SHARD_HEADER, 0
    while True:
        if pos + ENTRY > limit:
            raise FormatError("file section runs past its end")
        raw_hash, flags, n = struct.unpack_from("<32sII", data, pos)
        pos += ENTRY
        if raw_hash == BOOKEND:
            break
        following = n * (2 if flags & FLAG_VERIFICATION else 1) + (1 if flags & FLAG_METADATA_EXT else 0)
        records += 1 + following
        if records > max_records or pos + following * ENTRY > limit:
            raise FormatError("file section too long")
        segs = []
        for i in range(n):
            xh, _xflags, unpacked, c0, c1 = struct.unpack_from("<32sIIII", data, pos + i * ENTRY)
            if c1 <= c0:
                raise FormatError("empty chunk range in a file segment")
            segs.append(Segment(hash_hex(xh), unpacked, c0, c1))
        file_hash = hash_hex(raw_hash)
        info.files[file_hash] = segs
        if flags & FLAG_METADATA_EXT:
            ext = pos + (following - 1) * ENTRY
            info.file_sha256[file_hash] = hash_hex(data[ext:ext + 32])  # stored as a MerkleHash is: LE words
        pos += following * ENTRY
    while True:
        if pos + ENTRY > limit:
            raise FormatError("xorb section runs past its end")
        raw_hash, _flags, n, _bytes, _disk = struct.unpack_from("<32sIIII", data, pos)
        pos += ENTRY
        if raw_hash == BOOKEND:
            break
        records += 1 + n
        if records > max_records or pos + n * ENTRY > limit:
            raise FormatError("xorb section too long")
        info.xorbs[hash_hex(raw_hash)] = n
        for i in range(n):
            info.chunks.add(hash_hex(data[pos + i * ENTRY:pos + i * ENTRY + 32]))
        pos += n * ENTRY
    return info


@dataclass(frozen=True)
class Term:
    xorb: str
    unpacked: int
    chunk_start: int
    chunk_end: int


@dataclass(frozen=True)
class Fetch:
    xorb: str
    chunk_start: int
    chunk_end: int
    byte_start: int  # in the serialized xorb
    byte_end: int  # exclusive


def reconstruct(segments: list[Segment], chunks_of, start: int, end: int) -> tuple[int, list[Term], list[Fetch]]:
    """Terms and merged xorb byte ranges for file bytes [start, end) (end clipped to the size), as
    xet-core's `compute_reconstruction_ranges` builds them: whole chunks, `offset_into_first_range` the bytes
    of the first chunk before `start`. `chunks_of(xorb_hash)` gives that xorb's `Chunk` list.
    The caller checks `start < size` (else 416)."""
    size = sum(s.unpacked for s in segments)
    end = min(end, size)
    cum, idx = 0, 0
    while cum + segments[idx].unpacked <= start:
        cum += segments[idx].unpacked
        idx += 1
    first_chunk_start = cum
    terms: list[Term] = []
    wanted: dict[str, list[tuple[int, int, int, int]]] = {}
    while idx < len(segments) and cum < end:
        seg = segments[idx]
        chunks = chunks_of(seg.xorb)
        if seg.chunk_end > len(chunks):
            raise FormatError(f"segment past the end of xorb {seg.xorb}")
        c0, c1, unpacked = seg.chunk_start, seg.chunk_end, seg.unpacked
        if cum < start:
            while c0 < c1 and cum + chunks[c0].raw_len <= start:
                cum += chunks[c0].raw_len
                first_chunk_start += chunks[c0].raw_len
                unpacked -= chunks[c0].raw_len
                c0 += 1
        if cum + unpacked > end:
            while c1 > c0 and cum + unpacked - chunks[c1 - 1].raw_len >= end:
                unpacked -= chunks[c1 - 1].raw_len
                c1 -= 1
        terms.append(Term(seg.xorb, unpacked, c0, c1))
        wanted.setdefault(seg.xorb, []).append((c0, c1, chunks[c0].start, chunks[c1 - 1].end))
        cum += unpacked
        idx += 1
    fetches: list[Fetch] = []
    for xorb, ranges in wanted.items():
        ranges.sort()
        cur = list(ranges[0])
        for c0, c1, b0, b1 in ranges[1:]:
            if c0 <= cur[1]:
                cur[1], cur[3] = max(cur[1], c1), max(cur[3], b1)
            else:
                fetches.append(Fetch(xorb, *cur))
                cur = [c0, c1, b0, b1]
        fetches.append(Fetch(xorb, *cur))
    return start - first_chunk_start, terms, fetches
