"""Zip archives (PyTorch's format, numpy's `.npz`, Keras's `.keras`) and numpy's `.npy`.

A zip is read the way torch (miniz) and numpy read it: from its central directory at the end. Each entry's local
header is read as well, and an entry whose names disagree (the picklescan bypass CVE-2025-1944), an encrypted or
oddly flagged entry (CVE-2025-1945), a duplicate name or an unknown compression is never safe: readers disagree
on such entries, and a scanner must not read a different entry than the loader does.
"""

from __future__ import annotations

import ast
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from hfcache.safety import pickles
from hfcache.safety.policy import UNKNOWN, UNSAFE
from hfcache.safety.result import Outcome

MAX_MEMBER = 1 << 30  # a pickle or config inside an archive larger than this is not read (and not safe)
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_TORCH_PKL = re.compile(r"[^/]+/(data|constants)\.pkl")


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of the data
    compressed: int
    size: int
    method: int


def members(f: BinaryIO, out: Outcome) -> list[Member] | None:
    """The entries of the central directory, each checked against its local header; None if not a zip."""
    try:
        zf = zipfile.ZipFile(f)
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        out.flag(UNSAFE, f"unreadable zip: {e}")
        return None
    seen: set[str] = set()
    result = []
    for info in infos:
        name = info.orig_filename
        if name in seen:
            out.flag(UNSAFE, f"zip entry {name!r} appears twice in the central directory (readers pick different ones)")
        seen.add(name)
        f.seek(info.header_offset)
        raw = f.read(_LOCAL.size)
        if len(raw) < _LOCAL.size or raw[:4] != b"PK\x03\x04":
            out.flag(UNSAFE, f"zip entry {name!r}: no local header where the central directory says")
            continue
        _, _, flags, method, _, _, _, _, _, nlen, xlen = _LOCAL.unpack(raw)
        local_name = f.read(nlen)
        central_name = name.encode("utf-8" if info.flag_bits & 0x800 else "cp437", "surrogateescape")
        if local_name != central_name:
            out.flag(UNSAFE, f"zip entry {name!r} is named {local_name.decode('utf-8', 'replace')!r} in its local "
                             "header: scanners and loaders read different entries")
        if info.flag_bits & 0x41 or flags & 0x41:
            out.flag(UNSAFE, f"zip entry {name!r} is flagged encrypted: readers disagree on it")
        if (flags ^ info.flag_bits) & ~0x808:
            out.flag(UNSAFE, f"zip entry {name!r}: local and central flags differ ({flags:#x} vs {info.flag_bits:#x})")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or method != info.compress_type:
            out.flag(UNSAFE, f"zip entry {name!r}: compression {info.compress_type} (or differing local method)")
            continue
        result.append(Member(name, info.header_offset + _LOCAL.size + nlen + xlen, info.compress_size,
                             info.file_size, info.compress_type))
    return result


def read_member(f: BinaryIO, m: Member, out: Outcome, limit: int = MAX_MEMBER) -> bytes | None:
    if m.size > limit or m.compressed > limit:
        out.flag(UNKNOWN, f"zip entry {m.name!r} is too large to check ({m.size:,} bytes)")
        return None
    f.seek(m.offset)
    data = f.read(m.compressed)
    if len(data) < m.compressed:
        out.flag(UNSAFE, f"zip entry {m.name!r} is truncated")
        return None
    if m.method == zipfile.ZIP_DEFLATED:
        d = zlib.decompressobj(-15)
        try:
            data = d.decompress(data, m.size + 1)
        except zlib.error as e:
            out.flag(UNSAFE, f"zip entry {m.name!r} does not inflate: {e}")
            return None
    if len(data) != m.size:
        out.flag(UNSAFE, f"zip entry {m.name!r}: {len(data):,} bytes, the directory says {m.size:,}")
        return None
    return data


def check_zip(f: BinaryIO, out: Outcome) -> None:
    """Decide what the zip is (torch, npz, keras, other) and check the entries its loader would read."""
    entries = members(f, out)
    if entries is None:
        return
    names = [m.name for m in entries]
    torch = [m for m in entries if _TORCH_PKL.fullmatch(m.name)]
    out.info["entries"] = len(entries)
    if torch:
        out.format = "torch-zip"
        prefix = torch[0].name.split("/")[0]
        if any(n.startswith(f"{prefix}/code/") for n in names):
            out.flag(UNSAFE, "TorchScript archive: its code/ runs when loaded with torch.jit.load")
        storages = f"{prefix}/data/"
        for m in entries:
            if m.name.startswith(storages):
                continue
            data = read_member(f, m, out) if m.name.endswith(".pkl") or m.size >= 2 else None
            if data is not None and (m.name.endswith(".pkl") or data[:1] == b"\x80"):
                out.add_pickle(pickles.scan(data), m.name)
        return
    if "config.json" in names and ("metadata.json" in names or any(n.endswith(".weights.h5") for n in names)):
        from hfcache.safety.keras import check_config

        out.format = "keras"
        data = read_member(f, entries[names.index("config.json")], out, 1 << 28)
        if data is not None:
            check_config(data, out)
        return
    npy = [m for m in entries if m.name.endswith(".npy")]
    if npy and len(npy) == len(entries):
        out.format = "npz"
    for m in entries:  # npz entries, and pickles in any other zip
        head_only = m.name.endswith(".npy")
        data = read_member(f, m, out)
        if data is None:
            continue
        if head_only and data[:6] == b"\x93NUMPY":
            check_npy_bytes(data, out, m.name)
        elif m.name.endswith(".pkl") or data[:1] == b"\x80":
            out.add_pickle(pickles.scan(data), m.name)


def npy_header(data: bytes) -> tuple[dict, int] | None:
    """numpy's header dict and where the data starts, or None when it is not a valid header."""
    if len(data) < 10 or data[:6] != b"\x93NUMPY":
        return None
    major = data[6]
    if major == 1:
        n, start = struct.unpack_from("<H", data, 8)[0], 10
    elif major in (2, 3) and len(data) >= 12:
        n, start = struct.unpack_from("<I", data, 8)[0], 12
    else:
        return None
    try:
        header = ast.literal_eval(data[start:start + n].decode("latin-1" if major < 3 else "utf-8"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        return None
    if not isinstance(header, dict) or not {"descr", "fortran_order", "shape"} <= set(header):
        return None
    return header, start + n


def check_npy_bytes(data: bytes, out: Outcome, where: str = "") -> None:
    at = f" {where}" if where else ""
    parsed = npy_header(data)
    if parsed is None:
        out.flag(UNSAFE, f"malformed .npy header{at}")
        return
    header, start = parsed
    out.info.setdefault("arrays", []).append({"name": where, "dtype": str(header["descr"]),
                                              "shape": list(header["shape"]) if isinstance(header["shape"], tuple)
                                              else header["shape"]})
    if "O" in str(header["descr"]):
        out.note(f"object array{at}: np.load refuses it unless allow_pickle=True")
        out.add_pickle(pickles.scan(data, start), where or "the object array")


def check_npy(f: BinaryIO, size: int, out: Outcome) -> None:
    """A `.npy`: only the header is read, unless its dtype holds objects (then the data is a pickle)."""
    out.format = "npy"
    head = f.read(min(size, 1 << 16))
    parsed = npy_header(head)
    if parsed is not None and "O" in str(parsed[0]["descr"]):
        head += f.read()
    check_npy_bytes(head, out)
