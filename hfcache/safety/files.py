"""One file, read once: sniff its bytes, then the checker of its format. Returns a `FileVerdict`."""

from __future__ import annotations

import mmap
import os
import zlib

from hfcache.safety import pickles, sniff
from hfcache.safety.policy import UNKNOWN, UNSAFE, Policy
from hfcache.safety.result import FileVerdict, Outcome

MAX_DECOMPRESSED = 1 << 31


def check_file(path: str, policy: Policy) -> FileVerdict:
    """The verdict on the bytes of the file at `path` (what its names claim is weighed by `check.with_names`)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(sniff.HEAD)
            fmt = sniff.sniff(head, size)
            out = Outcome(fmt, policy)
            _dispatch(f, path, size, head, fmt, out)
            if fmt != sniff.ZIP and size > len(head):
                f.seek(max(0, size - sniff.TAIL))
                tail = f.read()
            else:
                tail = head
            if fmt not in (sniff.ZIP, sniff.DATA) and sniff.has_zip_directory(tail[-sniff.TAIL:]):
                out.flag(UNSAFE, f"a {fmt} file that is also a zip archive (readers that look at the end see a zip)")
            elif fmt == sniff.DATA and sniff.has_zip_directory(tail[-sniff.TAIL:]):
                from hfcache.safety import archives

                out.format = "zip"
                f.seek(0)
                archives.check_zip(f, out)
    except OSError as e:
        out = Outcome("unreadable", policy)
        out.flag(UNKNOWN, f"cannot read it: {e.strerror or e}")
        return out.freeze()
    except (MemoryError, RecursionError, ValueError, LookupError, TypeError, ArithmeticError) as e:
        out = Outcome("unreadable", policy)  # hostile input that broke a reader: never safe, and not remembered
        out.flag(UNKNOWN, f"could not be checked ({type(e).__name__}: {str(e)[:120]})")
        return out.freeze()
    return out.freeze()


def _dispatch(f, path: str, size: int, head: bytes, fmt: str, out: Outcome) -> None:
    """Each format's checker is imported when a file of that format turns up (most of a cache is plain data)."""
    if fmt == sniff.PICKLE:
        _pickle_file(f, size, head, out)
    elif fmt == sniff.ZIP:
        from hfcache.safety import archives

        f.seek(0)
        archives.check_zip(f, out)
    elif fmt == sniff.NPY:
        from hfcache.safety import archives

        f.seek(0)
        archives.check_npy(f, size, out)
    elif fmt == sniff.SAFETENSORS:
        from hfcache.safety import tensors

        tensors.check_file(f, path, size, out)
    elif fmt == sniff.GGUF:
        from hfcache.safety import gguf

        gguf.check_gguf(f, size, out)
    elif fmt == sniff.HDF5:
        from hfcache.safety import keras

        keras.check_h5(f, out)
    elif fmt == sniff.COMPRESSED:
        _compressed(f, out)


def _pickle_file(f, size: int, head: bytes, out: Outcome) -> None:
    """A raw pickle (several in a row), legacy torch, or joblib; mapped, not read into memory."""
    buf = head if size <= len(head) else mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        scan = pickles.legacy_torch(buf)
        if scan is not None:
            out.format = "torch-legacy"
        else:
            scan = pickles.scan(buf)
            if any(i.module.startswith("joblib.") for i in scan.imports):
                out.format = "joblib"
        out.add_pickle(scan)
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()


def _compressed(f, out: Outcome) -> None:
    """A compressed stream (joblib's compress=..., a .pkl.gz): its first 64 KiB are sniffed; a pickle inside is
    decompressed (up to 2 GiB) and checked. Anything else compressed is data."""
    import bz2
    import gzip
    import lzma

    f.seek(0)
    magic = f.read(6)
    f.seek(0)

    def opened():
        if magic[:2] == b"\x1f\x8b":
            return gzip.GzipFile(fileobj=f)
        if magic[:3] == b"BZh":
            return bz2.BZ2File(f)
        if magic[:6] == b"\xfd7zXZ\x00" or magic[:3] == b"\x5d\x00\x00":
            return lzma.LZMAFile(f)
        return _Inflate(f) if magic[:1] == b"\x78" else None

    try:
        stream = opened()
        if stream is None:
            out.format = "lz4"
            out.flag(UNKNOWN, "an lz4 stream: not decompressed, not checked")
            return
        head = stream.read(sniff.HEAD)
        inner = sniff.sniff(head, len(head) + 1)
        if inner != sniff.PICKLE:
            out.format = "data"
            return
        data = head + stream.read(MAX_DECOMPRESSED + 1 - len(head))
    except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError):
        out.format = "data"  # not really a compressed stream: plain data
        return
    out.format = "compressed pickle"
    if len(data) > MAX_DECOMPRESSED:
        out.flag(UNKNOWN, "decompresses to more than 2 GiB: not checked")
        return
    scan = pickles.scan(data)
    if any(i.module.startswith("joblib.") for i in scan.imports):
        out.format = "compressed joblib"
    out.add_pickle(scan, "the decompressed stream")


class _Inflate:
    """A zlib stream read in pieces, like the others."""

    def __init__(self, f) -> None:
        self.f, self.d = f, zlib.decompressobj()

    def read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            data = self.d.unconsumed_tail or self.f.read(1 << 20)
            if not data:
                break
            out += self.d.decompress(data, n - len(out))
            if self.d.eof:
                break
        return out
