"""safetensors, strictly: the `safetensors` library's own parser, plus what it leaves out.

The Rust parser (safetensors/src/tensor.rs) checks the header length, offsets and sizes, but not that the JSON
starts with `{` nor that keys are unique (serde keeps the last duplicate, other readers the first). The checks
here follow the format's README: so two readers can never see two different files in the same bytes.
"""

from __future__ import annotations

import json
import struct
from typing import BinaryIO

from hfcache.safety.policy import UNSAFE
from hfcache.safety.result import Outcome

MAX_HEADER = 100_000_000
DTYPE_BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
              "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
              "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64}
_U64 = 1 << 64


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise _Duplicate(f"duplicate key {dup!r}")
    return dict(pairs)


def header_length(first8: bytes, size: int) -> int | str:
    """N from the first 8 bytes, or why it is wrong."""
    if len(first8) < 8:
        return "shorter than the 8-byte header length"
    n = struct.unpack("<Q", first8[:8])[0]
    if n > MAX_HEADER:
        return f"header length {n:,} is over the {MAX_HEADER:,}-byte limit"
    if 8 + n > size:
        return f"header length {n:,} runs past the end of the file ({size:,} bytes)"
    return n


def check_header(header: bytes, size: int, out: Outcome) -> None:
    """Check the JSON header (the N bytes after the length) of a file of `size` bytes; fill `out.info`."""
    out.format = "safetensors"
    if header[:1] != b"{":
        out.flag(UNSAFE, "safetensors header does not start with '{'")
        return
    try:
        text = header.decode("utf-8")
        meta = json.loads(text.rstrip(" "), object_pairs_hook=_no_duplicates)
    except _Duplicate as e:
        out.flag(UNSAFE, f"safetensors header has a {e}")
        return
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        out.flag(UNSAFE, f"safetensors header is not JSON: {str(e)[:120]}")
        return
    if not isinstance(meta, dict):
        out.flag(UNSAFE, "safetensors header is not a JSON object")
        return
    metadata = meta.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        out.flag(UNSAFE, "safetensors __metadata__ is not a map of strings to strings")
        metadata = None
    spans, params, dtypes = [], 0, {}
    for name, t in meta.items():
        problem = _tensor(name, t)
        if isinstance(problem, str):
            out.flag(UNSAFE, f"safetensors tensor {name!r}: {problem}")
            continue
        begin, end, count = problem
        spans.append((begin, end, name))
        params += count
        dtypes[t["dtype"]] = dtypes.get(t["dtype"], 0) + 1
    spans.sort()
    cursor = 0
    for begin, end, name in spans:
        if begin < cursor:
            out.flag(UNSAFE, f"safetensors tensor {name!r} overlaps the one before it (starts at {begin}, "
                             f"previous ends at {cursor})")
        elif begin > cursor:
            out.flag(UNSAFE, f"safetensors gap of {begin - cursor} bytes before tensor {name!r}")
        cursor = max(cursor, end)
    data = size - 8 - len(header)
    if cursor != data:
        out.flag(UNSAFE, f"safetensors data is {data:,} bytes but the tensors cover {cursor:,}"
                         + (" (trailing bytes)" if data > cursor else ""))
    out.info.update({"tensors": len(spans), "parameters": params, "dtypes": dict(sorted(dtypes.items())),
                     "metadata": metadata or {}, "header_bytes": len(header)})


def _tensor(name: str, t) -> tuple[int, int, int] | str:
    if not isinstance(t, dict) or set(t) != {"dtype", "shape", "data_offsets"}:
        return "not an object of dtype, shape and data_offsets"
    dtype, shape, offsets = t["dtype"], t["shape"], t["data_offsets"]
    if dtype not in DTYPE_BITS:
        return f"unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                              for n in shape):
        return "shape is not a list of non-negative integers"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(
            isinstance(n, int) and not isinstance(n, bool) and 0 <= n < _U64 for n in offsets)):
        return "data_offsets is not [begin, end]"
    begin, end = offsets
    if end < begin:
        return f"data_offsets end {end} before begin {begin}"
    count = 1
    for n in shape:
        count *= n
        if count >= _U64:
            return f"shape {shape} overflows"
    bits = count * DTYPE_BITS[dtype]
    if bits >= _U64:
        return f"shape {shape} times {dtype} overflows"
    if bits % 8:
        return f"{count} elements of {dtype} are not a whole number of bytes"
    if bits // 8 != end - begin:
        return f"shape {shape} of {dtype} needs {bits // 8:,} bytes, data_offsets give {end - begin:,}"
    return begin, end, count


def check_file(f: BinaryIO, path: str, size: int, out: Outcome) -> None:
    """Read the header (8 + N bytes, not the tensors) and check it; then the library's own parser."""
    out.format = "safetensors"
    f.seek(0)
    n = header_length(f.read(8), size)
    if isinstance(n, str):
        out.flag(UNSAFE, f"safetensors {n}")
        return
    check_header(f.read(n), size, out)
    if out.reasons:
        return
    try:
        from safetensors import safe_open

        with safe_open(path, framework="numpy") as st:
            st.keys()
    except ImportError:
        out.note("the safetensors library is not installed: only hfcache's own checks ran")
    except Exception as e:
        if type(e).__name__ == "SafetensorError":  # the library's parser said no
            out.flag(UNSAFE, f"the safetensors library refuses it: {str(e)[:160]}")
        else:  # the library itself failed (an old version, a missing framework): our checks stand alone
            out.note(f"the safetensors library could not open it ({type(e).__name__}): only hfcache's checks ran")
