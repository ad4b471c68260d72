"""joblib's arrays: written raw right after their wrapper's BUILD, between pickle opcodes.

They are skipped as joblib reads them (shape and dtype from the wrapper's state, alignment padding, object arrays
as a nested pickle), and read as opcodes too, as a plain unpickler handed the file would: a disguised payload is
still seen.
"""

from __future__ import annotations

import re

from hfcache.safety.opcodes import _Walker, probe
from hfcache.safety.pickle_values import Malformed, _Call, _Dict, _Global


def skip_array(walker: _Walker, wrapper: _Call, pos: int, end: int) -> int:
    """joblib writes an array's bytes right after its wrapper's BUILD; skip them as joblib reads them, and also
    read them as opcodes, as a plain unpickler would if handed the file (a disguised payload is still seen)."""
    state = wrapper.state.items if isinstance(wrapper.state, _Dict) else {}
    shape, dtype = state.get("shape"), state.get("dtype")
    itemsize, has_object = _itemsize(dtype)
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape) or (
            itemsize is None and not has_object):
        raise Malformed("a joblib array whose shape or dtype cannot be read statically", pos)
    if has_object:  # an object array is a pickle of its own, loaded in place
        _, pos = walker.one(pos, end)
        walker.scan.pickles += 1
        return pos
    start = pos
    if state.get("numpy_array_alignment_bytes") is not None:
        pos = walker.need(pos, 1, end)
        pos = walker.need(pos, walker.buf[pos - 1], end)
    count = 1
    for n in shape:
        count *= n
    pos = walker.need(pos, count * itemsize, end)
    probe(walker.buf, start, pos, walker.scan, "in joblib array data")
    return pos


def _itemsize(dtype) -> tuple[int | None, bool]:
    """The item size of `numpy.dtype(<descr>, ...)` as a pickle spells it, without numpy."""
    if not (isinstance(dtype, _Call) and isinstance(dtype.func, _Global) and dtype.func.name == "dtype"
            and isinstance(dtype.args, tuple) and dtype.args and isinstance(dtype.args[0], str)):
        return None, False
    m = re.fullmatch(r"([biufcmMOSUV])(\d*)", dtype.args[0])
    if not m:
        return None, False
    kind, digits = m.group(1), m.group(2)
    if kind == "O":
        return None, True
    if kind in "SUV":  # flexible types: the size is in the state tuple (elsize, field 5)
        st = dtype.state
        size = st[5] if isinstance(st, tuple) and len(st) > 5 and isinstance(st[5], int) and st[5] > 0 else None
        return size, False
    return (int(digits) if digits else None), False
