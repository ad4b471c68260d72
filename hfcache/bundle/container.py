"""Bundle containers: one tar file (zstd-compressed on request) or one folder, both holding

    manifest.json          what the bundle holds and every payload's size and hash (see `hfcache.bundle.manifest`)
    payload/<digest>       the bytes, named by their content hash, each stored once

Writers write beside the target and rename at the end, so a half-written bundle never has the final name. Readers
treat the bundle as hostile: only regular files named `payload/<hex digest>` are accepted (no links, devices,
`..`), and a tar member that appears twice, or is not in the manifest, stops the import.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import stat
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from hfcache.bundle.manifest import MAX_MANIFEST_BYTES
from hfcache.cache.hashing import HashingReader, HashKind, OnBytes, copy_hashed
from hfcache.errors import BundleError, UsageError

MANIFEST_NAME = "manifest.json"
PAYLOAD_DIR = "payload"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
STREAM_BUFFER = 1024 * 1024  # tarfile streams in 10 kB records by default: slow for GB payloads
MAX_ZSTD_WINDOW = 32 * 1024 * 1024
MAX_HEADER_BYTES = 1024 * 1024  # PAX / GNU long-name headers, per member: tarfile reads them into memory whole
_PAYLOAD_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def is_payload_name(name: str) -> bool:
    return _PAYLOAD_RE.fullmatch(name) is not None


def _zstandard():
    try:
        import zstandard
    except ImportError:
        raise UsageError("zstd needs the `zstandard` package: pip install zstandard") from None
    return zstandard


# -- writing ---------------------------------------------------------------------------------------------------
class BundleWriter:
    """Common shape of the two writers: manifest first, then payloads, then `commit` (or `abort`)."""

    def add_manifest(self, data: bytes) -> None: ...
    def add_bytes(self, name: str, data: bytes) -> None: ...
    def add_file(self, name: str, path: Path, size: int, kind: HashKind, on_bytes: OnBytes | None) -> str: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class TarWriter(BundleWriter):
    """A streamed tar with fixed owners and times, so the same content gives the same bundle bytes."""

    def __init__(self, out: Path, zstd: bool = False) -> None:
        self.out = out
        self.tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
        self._file = open(self.tmp, "xb")  # noqa: SIM115 (closed in commit/abort)
        self._zstd = None
        sink: BinaryIO = self._file
        if zstd:
            self._zstd = _zstandard().ZstdCompressor(level=3).stream_writer(self._file, closefd=False)
            sink = self._zstd
        self._tar = tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT,  # noqa: SIM115
                                 bufsize=STREAM_BUFFER)

    @staticmethod
    def _info(name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime, info.type = size, 0o644, 0, tarfile.REGTYPE
        return info

    def add_manifest(self, data: bytes) -> None:
        self._tar.addfile(self._info(MANIFEST_NAME, len(data)), io.BytesIO(data))

    def add_bytes(self, name: str, data: bytes) -> None:
        self._tar.addfile(self._info(f"{PAYLOAD_DIR}/{name}", len(data)), io.BytesIO(data))

    def add_file(self, name: str, path: Path, size: int, kind: HashKind, on_bytes: OnBytes | None) -> str:
        with open(path, "rb") as f:
            reader = HashingReader(f, kind, size, on_bytes)
            try:
                self._tar.addfile(self._info(f"{PAYLOAD_DIR}/{name}", size), reader)
            except OSError as e:  # tarfile says "unexpected end of data" when the file shrank
                raise BundleError(f"{path} changed while it was read ({e})") from None
        return reader.hexdigest()

    def commit(self) -> None:
        self._tar.close()
        if self._zstd is not None:
            self._zstd.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.out)

    def abort(self) -> None:
        for part in (self._tar, self._zstd, self._file):
            with contextlib.suppress(Exception):  # best effort: the file goes anyway
                if part is not None:
                    part.close()
        self.tmp.unlink(missing_ok=True)


class DirWriter(BundleWriter):
    """A folder bundle: what `rsync`, a USB stick or an object store can carry file by file."""

    def __init__(self, out: Path) -> None:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UsageError(f"{out} exists and is not an empty folder")
        self.out = out
        self.tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
        (self.tmp / PAYLOAD_DIR).mkdir(parents=True)

    def add_manifest(self, data: bytes) -> None:
        (self.tmp / MANIFEST_NAME).write_bytes(data)

    def add_bytes(self, name: str, data: bytes) -> None:
        (self.tmp / PAYLOAD_DIR / name).write_bytes(data)

    def add_file(self, name: str, path: Path, size: int, kind: HashKind, on_bytes: OnBytes | None) -> str:
        with open(path, "rb") as src, open(self.tmp / PAYLOAD_DIR / name, "xb") as dst:
            try:
                return copy_hashed(src, dst, kind, size, on_bytes)
            except EOFError:
                raise BundleError(f"{path} changed while it was read") from None

    def commit(self) -> None:
        if self.out.is_dir():
            self.out.rmdir()  # empty, checked above; rename cannot replace a folder on every system
        os.replace(self.tmp, self.out)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def open_writer(out: Path, as_dir: bool, zstd: bool) -> BundleWriter:
    if as_dir:
        if zstd:
            raise UsageError("--zstd applies to a single-file bundle, not a folder")
        return DirWriter(out)
    if out.exists():
        raise UsageError(f"{out} exists; choose another name or remove it")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent} is not a folder")
    return TarWriter(out, zstd)


# -- reading ---------------------------------------------------------------------------------------------------
class BundleReader:
    """`manifest()`, a stream read to its end first, then `payloads()`: (name, stream, size) in the container's
    order, each read once."""

    compressed: bool = False

    def manifest(self) -> BinaryIO: ...

    def payloads(self, expected: list[str]) -> Iterator[tuple[str, BinaryIO, int]]: ...
    def close(self) -> None: ...

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _CappedInfo(tarfile.TarInfo):
    """tarfile reads a PAX or GNU long-name header's data into memory whole, whatever size it claims (and chains
    them): refused here, before it reads, above `MAX_HEADER_BYTES` per member. Sparse members, which a bundle never
    has and whose maps tarfile also reads unbounded, are refused outright."""

    _EXTENSIONS = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                   tarfile.GNUTYPE_LONGLINK)

    def _proc_member(self, tar):
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise BundleError("the bundle has a sparse tar member, which hfcache never writes")
        if self.type in self._EXTENSIONS:
            used = getattr(tar, "_hfcache_header_bytes", 0) + self.size
            if used > MAX_HEADER_BYTES:
                raise BundleError(f"the bundle has a tar header of {used} bytes (at most {MAX_HEADER_BYTES}): "
                                  "not a bundle hfcache wrote; nothing was imported")
            tar._hfcache_header_bytes = used
        else:
            tar._hfcache_header_bytes = 0
        return super()._proc_member(tar)

    def _proc_gnusparse_10(self, next, pax_headers, tar):
        raise BundleError("the bundle has a sparse tar member, which hfcache never writes")


class TarReader(BundleReader):
    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 (closed in close)
        self._zstd = None
        source: BinaryIO = self._file
        magic = self._file.read(4)
        self._file.seek(0)
        if magic == ZSTD_MAGIC:
            # The window is memory the decoder holds: 32 MiB at most (export writes 2 MiB windows; zstd --long
            # would need 128 MiB and is refused, in one line).
            self._zstd = _zstandard().ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW).stream_reader(
                self._file, closefd=False)
            source, self.compressed = self._zstd, True
        try:
            self._tar = tarfile.open(fileobj=source, mode="r|*", bufsize=STREAM_BUFFER,  # noqa: SIM115
                                     tarinfo=_CappedInfo)
            first = self._tar.next()
        except read_errors() as e:
            self.close()
            raise BundleError(f"{path} is not a bundle (not a readable tar file: {e})") from None
        except BaseException:
            self.close()
            raise
        if first is None or first.name != MANIFEST_NAME or not first.isreg():
            self.close()
            raise BundleError(f"{path} is not a bundle: its first member must be {MANIFEST_NAME}")
        if first.size > MAX_MANIFEST_BYTES:
            self.close()
            raise BundleError(f"the bundle's manifest is too large: {first.size} bytes (at most "
                              f"{MAX_MANIFEST_BYTES}); nothing was imported")
        self._first = first

    def manifest(self) -> BinaryIO:
        f = self._tar.extractfile(self._first)
        assert f is not None
        return _Guarded(f)  # type: ignore[return-value]

    def payloads(self, expected: list[str]) -> Iterator[tuple[str, BinaryIO, int]]:
        wanted, seen = set(expected), set()
        try:
            for member in self._tar:
                if member is self._first:  # iterating a tar starts again from the members read so far
                    continue
                folder, _, name = member.name.partition("/")
                if not member.isreg():
                    raise BundleError(f"bundle member {member.name!r} is not a regular file (a bundle never "
                                      "carries links or devices)")
                if folder != PAYLOAD_DIR or name not in wanted:
                    raise BundleError(f"bundle member {member.name!r} is not in its manifest")
                if name in seen:
                    raise BundleError(f"bundle member {member.name!r} appears twice")
                seen.add(name)
                f = self._tar.extractfile(member)
                assert f is not None
                yield name, _Guarded(f), member.size
        except read_errors() as e:
            raise BundleError(f"the bundle is truncated or damaged: {e}") from None
        if seen != wanted:
            raise BundleError(f"the bundle lacks {len(wanted - seen)} payload files its manifest lists "
                              f"(first: {sorted(wanted - seen)[0]})")

    def close(self) -> None:
        for c in (getattr(self, "_tar", None), self._zstd, self._file):
            if c is not None:
                c.close()


class _Guarded:
    """A tar member's stream whose read errors (a truncated or damaged tar) become one-line bundle errors."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw

    def __enter__(self) -> _Guarded:
        return self

    def __exit__(self, *exc: object) -> None:
        pass  # the tar owns the stream

    def readinto(self, view) -> int:
        try:
            return self._raw.readinto(view)
        except read_errors() as e:
            raise BundleError(f"the bundle is truncated or damaged: {e}") from None

    def read(self, n: int = -1) -> bytes:
        try:
            return self._raw.read(n)
        except read_errors() as e:
            raise BundleError(f"the bundle is truncated or damaged: {e}") from None


class DirReader(BundleReader):
    def __init__(self, path: Path) -> None:
        self.root = path
        manifest = path / MANIFEST_NAME
        if not _regular(manifest):
            raise BundleError(f"{path} is not a bundle: no regular {MANIFEST_NAME} in it")
        self._manifest = manifest
        payload = path / PAYLOAD_DIR
        if os.path.lexists(payload) and not stat.S_ISDIR(payload.lstat().st_mode):
            raise BundleError(f"{payload} is not a folder (a bundle never carries links)")

    def manifest(self) -> BinaryIO:
        try:
            fd = os.open(self._manifest, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as e:
            raise BundleError(f"{self._manifest} cannot be read: {e.strerror}") from None
        return os.fdopen(fd, "rb")

    def payloads(self, expected: list[str]) -> Iterator[tuple[str, BinaryIO, int]]:
        for name in expected:
            path = self.root / PAYLOAD_DIR / name
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            except FileNotFoundError:
                raise BundleError(f"the bundle lacks {PAYLOAD_DIR}/{name}, which its manifest lists") from None
            except OSError:
                raise BundleError(f"{PAYLOAD_DIR}/{name} in the bundle is a link or unreadable") from None
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise BundleError(f"{PAYLOAD_DIR}/{name} in the bundle is not a regular file")
                yield name, f, st.st_size

    def close(self) -> None:
        pass


def read_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged or hostile tar raises: tarfile's errors, and zlib's or zstd's own through it."""
    import zlib

    errors: tuple[type[BaseException], ...] = (tarfile.TarError, OSError, EOFError, zlib.error)
    try:
        import zstandard
    except ImportError:
        return errors
    return (*errors, zstandard.ZstdError)


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def open_reader(path: Path) -> BundleReader:
    if path.is_symlink() and path.is_dir():
        path = path.resolve()
    if path.is_dir():
        return DirReader(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such bundle")
    return TarReader(path)
