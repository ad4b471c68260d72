"""A file's format from its bytes, never from its name: a cache's blobs have no extension, and a pickle named
`model.safetensors` is still a pickle. Names only add suspicion (a `.safetensors` that is not one), never trust.
"""

from __future__ import annotations

import struct

HEAD = 1 << 16
TAIL = (1 << 16) + 22  # the zip end-of-central-directory record, with the longest comment

PICKLE, ZIP, NPY, SAFETENSORS, GGUF, HDF5, DATA = "pickle", "zip", "npy", "safetensors", "gguf", "hdf5", "data"
COMPRESSED = "compressed"
_HDF5 = b"\x89HDF\r\n\x1a\n"
# Every opcode byte: the C unpickler needs no PROTO first, so a pickle may start with any of them (FRAME, ...).
_OPCODES = frozenset(b"(.0125FIJKLMNPQRSTUVXabcdeghijlopqrstu}])GBC" + bytes(range(0x80, 0x99)))
# Streams joblib (and others) compress pickles with: gzip, bz2, xz, lzma-alone, zlib, lz4 frame.
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x5d\x00\x00", b"\x78\x01", b"\x78\x5e", b"\x78\x9c",
               b"\x78\xda", b"\x04\x22\x4d\x18")

# What a name claims (only to flag a name the bytes contradict).
CLAIMS = {".safetensors": SAFETENSORS, ".gguf": GGUF, ".npy": NPY, ".npz": ZIP, ".keras": ZIP, ".h5": HDF5,
          ".hdf5": HDF5, ".pt": None, ".pth": None, ".bin": None, ".ckpt": None, ".pkl": None}


def sniff(head: bytes, size: int) -> str:
    """The format of a file that starts with `head` (at least its first 64 KiB, or all of it) and is `size` long."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return ZIP
    if head[:6] == b"\x93NUMPY":
        return NPY
    if head[:4] == b"GGUF":
        return GGUF
    if head[:8] == _HDF5 or head[512:520] == _HDF5:
        return HDF5
    if len(head) >= 2 and head[0] == 0x80 and head[1] <= 5:
        return PICKLE
    if _looks_safetensors(head, size):
        return SAFETENSORS
    if head[:1] and head[0] in _OPCODES and _reads_as_pickle(head, size):
        return PICKLE
    if any(head.startswith(m) for m in _COMPRESSED):
        return COMPRESSED
    return DATA


def _looks_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    n = struct.unpack_from("<Q", head)[0]
    return n >= 2 and 8 + n <= size and head[8:9] in (b"{", b" ")


def _reads_as_pickle(head: bytes, size: int) -> bool:
    """A pickle without a PROTO opcode (protocol 0/1, or a bare FRAME): it reads as one to its end, or it
    imports something before it stops, or it runs on as opcodes to the end of the first 64 KiB of a longer
    file (a payload may come later). Text and random data stop within a few opcodes."""
    from hfcache.safety.pickles import scan

    result = scan(head, max_pickles=1)
    if result.error is None or result.imports:  # (a call needs an import first: a call alone is random bytes)
        return True
    return size > len(head) and result.error.startswith("truncated") and result.opcodes >= 16


def has_zip_directory(tail: bytes) -> bool:
    """A zip end-of-central-directory record near the end: zip readers find the archive from there, whatever
    comes first (torch checks the first bytes, `zipfile` the end: a file can be both a pickle and a zip)."""
    return tail[-22:-18] == b"PK\x05\x06" or tail.rfind(b"PK\x05\x06") >= 0  # rfind: 2x faster than `in`


def claimed(names) -> str | None:
    """The format the first name with a telling extension claims, if any."""
    for name in names:
        for ext, fmt in CLAIMS.items():
            if name.lower().endswith(ext):
                return fmt
    return None
