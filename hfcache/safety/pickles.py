"""A static walk over pickle opcodes, as CPython's C unpickler reads them: every import, nothing executed.

Why our own walker rather than an analyser from PyPI. Measured on the corpus of tests/safety_corpus.py
(scripts/bench_safety.py, docs/benchmarks.md: 35 malicious files, 12 benign):
  - picklescan 1.0.5 caught 18/35, one false alarm (a joblib-saved estimator): it decides by a deny list (an
    unlisted gadget passes), walks with `pickletools.genops`, and misses the extension registry, unknown
    opcodes, compressed pickles, a zip whose local and central names differ, and a pickle named `.safetensors`
    (it picks files by extension);
  - modelscan 0.8.8 caught 8/35 with 5 false alarms: it picks files by extension (a cache's blobs have none),
    skips a raw pickle named `.bin` that lacks torch's legacy magic number, and errors on numpy 2 files;
  - fickling 0.1.12 caught 32/35 but raised 10 false alarms on 12 benign files (a torch zip state dict, numpy
    files, safetensors, a config.json: whatever it cannot decode as one pickle), and missed a second pickle after
    a benign one and a payload in a legacy torch file.
This walker keeps the C unpickler's stack and mark discipline and the memo, resolves STACK_GLOBAL operands through
both, records every GLOBAL/INST/STACK_GLOBAL import whether or not it is called, reads several pickles in a row,
and calls anything it cannot follow (parse error, truncation, unknown opcode, a name it cannot resolve statically,
the extension registry) never safe. It holds only small literal values, so 10 MB of opcodes need little memory.
"""

from __future__ import annotations

from hfcache.safety.joblib_arrays import skip_array
from hfcache.safety.opcodes import LEGACY_TORCH_MAGIC, Import, Malformed, PickleScan, _Walker, probe


def scan(buf, start: int = 0, end: int | None = None, *, max_pickles: int | None = None) -> PickleScan:
    """Every pickle from `start`, one after another, until the data ends (or `max_pickles` were read).

    The first pickle must read cleanly; bytes after a complete pickle are read as pickles too: a loader that reads
    pickles in turn would run them. If they do not parse, they are data (a note), unless they hold imports.
    """
    end = len(buf) if end is None else end
    result = PickleScan()
    joblib = buf.find(b"NumpyArrayWrapper", start, min(end, start + (1 << 24))) >= 0
    walker = _Walker(buf, result, skip_array if joblib else None)
    pos = start
    while pos < end and (max_pickles is None or result.pickles < max_pickles):
        try:
            _, pos = walker.one(pos, end)
        except Malformed as e:
            if result.pickles == 0:
                result.error = str(e)
            else:
                result.notes.append(f"{end - pos:,} bytes after pickle {result.pickles} are not a pickle ({e})")
            result.end = end
            return result
        except RecursionError:
            result.error = "nested too deeply"
            return result
        result.pickles += 1
    result.end = pos
    return result


def legacy_torch(buf) -> PickleScan | None:
    """The legacy torch format (magic number, protocol, sys info, data, storage keys, then raw storages), or None
    when the first pickle is not the magic number. Only the five pickles are opcodes; the rest is data."""
    first = PickleScan()
    try:  # the magic number's pickle is a few bytes: a first pickle longer than 64 is not it (and is read once)
        value, _ = _Walker(buf, first).one(0, min(len(buf), 64))
    except (Malformed, RecursionError):
        return None
    if value != LEGACY_TORCH_MAGIC or first.imports:
        return None
    result = scan(buf, 0, len(buf), max_pickles=5)
    if result.error is None and result.pickles < 5:
        result.error = f"legacy torch file with {result.pickles} pickles, 5 expected"
    if result.end < len(buf):
        result.notes.append(f"{len(buf) - result.end:,} bytes of raw storages")
    return result


__all__ = ["LEGACY_TORCH_MAGIC", "Import", "Malformed", "PickleScan", "legacy_torch", "probe", "scan"]
