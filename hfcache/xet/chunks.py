"""A xorb byte range decoded into chunks (xet-core `xorb_chunk_format.rs`, `compression_scheme.rs`, `bg4.rs`).

Each chunk: an 8-byte header (u8 version 0, u24 LE compressed length, u8 scheme, u24 LE uncompressed length),
then its payload: stored as is (0), an LZ4 frame (1), or an LZ4 frame of the bytes regrouped by position mod 4
(2: all bytes 0, 4, 8... first, then 1, 5, 9...). Every length is checked before it is trusted: a hostile CAS
cannot make a chunk larger than xet-core's limit, or a decoder read past what it sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from hfcache.errors import IntegrityError
from hfcache.xet.hashes import chunk_hash

HEADER = 8
MAX_CHUNK = 128 * 1024  # xet-core MAX_CHUNK_SIZE: twice the 64 KiB target
NONE, LZ4, BG4_LZ4 = 0, 1, 2
SCHEMES = {NONE: "none", LZ4: "lz4", BG4_LZ4: "bg4-lz4"}


@dataclass(frozen=True)
class Chunk:
    data: bytes | memoryview
    hash: bytes  # keyed BLAKE3 of `data`, computed here
    end: int = 0  # where the chunk ends in the buffer it was decoded from (header and payload)


def bg4_regroup(grouped: bytes) -> bytes:
    """Undo byte grouping: group i holds the bytes at positions i, i+4, i+8...; the first `n % 4` groups hold
    one byte more."""
    n = len(grouped)
    split, rem = divmod(n, 4)
    out = bytearray(n)
    pos = 0
    for i in range(4):
        size = split + (1 if i < rem else 0)
        out[i::4] = grouped[pos:pos + size]
        pos += size
    return bytes(out)


def bg4_split(data: bytes) -> bytes:
    """Byte grouping (for tests and fixtures): the inverse of `bg4_regroup`."""
    return b"".join(data[i::4] for i in range(4))


def _lz4_frame(payload: bytes, expected: int) -> bytes:
    import lz4.frame

    try:
        d = lz4.frame.LZ4FrameDecompressor()
        out = d.decompress(payload, max_length=expected + 1)
    except RuntimeError as e:
        raise IntegrityError(f"corrupt xorb chunk: LZ4 frame does not decode ({e})") from None
    if len(out) != expected:
        raise IntegrityError(f"corrupt xorb chunk: decodes to {len(out)} bytes, its header says {expected}")
    return out


def decode_payload(scheme: int, payload: bytes | memoryview, uncompressed: int) -> bytes | memoryview:
    """The chunk's bytes; a stored (scheme 0) payload given as a view comes back as that view, uncopied."""
    if scheme == NONE:
        if len(payload) != uncompressed:
            raise IntegrityError("corrupt xorb chunk: stored length differs from its header")
        return payload
    if scheme == LZ4:
        return _lz4_frame(payload, uncompressed)
    if scheme == BG4_LZ4:
        return bg4_regroup(_lz4_frame(payload, uncompressed))
    raise IntegrityError(f"xorb chunk with unknown compression scheme {scheme}")


def encode_chunk(data: bytes, scheme: int) -> bytes:
    """One chunk as a xorb holds it (for tests and fixtures)."""
    import lz4.frame

    if scheme == NONE:
        payload = data
    elif scheme == LZ4:
        payload = lz4.frame.compress(data)
    else:
        payload = lz4.frame.compress(bg4_split(data))
    return bytes([0]) + len(payload).to_bytes(3, "little") + bytes([scheme]) + len(data).to_bytes(3, "little") \
        + payload


def chunk_header(view: memoryview, pos: int) -> tuple[int, int, int]:
    """(scheme, stored length, decoded length) of the chunk whose header starts at `pos`, each checked; the caller
    checks that `pos + HEADER` is within the buffer."""
    head = bytes(view[pos:pos + HEADER])
    version, scheme = head[0], head[4]
    clen = int.from_bytes(head[1:4], "little")
    ulen = int.from_bytes(head[5:8], "little")
    if version != 0:
        raise IntegrityError(f"xorb chunk header version {version} (expected 0)")
    if ulen > MAX_CHUNK or clen > 2 * MAX_CHUNK:
        raise IntegrityError(f"xorb chunk of {ulen} bytes ({clen} stored) exceeds the {MAX_CHUNK}-byte limit")
    return scheme, clen, ulen


def decode_chunks(buf: bytes | memoryview, count: int | None = None, copy: bool = True) -> list[Chunk]:
    """Every chunk in `buf` (exactly `count` of them when given), each decoded and hashed. With `copy=False` a
    stored chunk's data is a view into `buf` (the caller keeps `buf` unchanged while it uses the chunks)."""
    view = memoryview(buf)
    chunks: list[Chunk] = []
    pos = 0
    while pos < len(view) and (count is None or len(chunks) < count):
        if len(view) - pos < HEADER:
            raise IntegrityError("truncated xorb: a chunk header is cut short")
        scheme, clen, ulen = chunk_header(view, pos)
        start = pos + HEADER
        if start + clen > len(view):
            raise IntegrityError("truncated xorb: a chunk's payload is cut short")
        payload = view[start:start + clen]
        data = decode_payload(scheme, payload if not copy or scheme != NONE else bytes(payload), ulen)
        pos = start + clen
        chunks.append(Chunk(data, chunk_hash(data), pos))
    if count is not None and len(chunks) != count:
        raise IntegrityError(f"xorb range holds {len(chunks)} chunks, the reconstruction said {count}")
    return chunks
