"""The pickle machine, read statically: CPython's C unpickler's stack, marks and memo, no code run.

`_Walker.one` reads one pickle to its STOP, recording every import (GLOBAL, INST, STACK_GLOBAL) into a
`PickleScan`, and raises `Malformed` where the unpickler would fail. Only small literal values are kept (names,
ints, tuples, small dicts), enough to resolve STACK_GLOBAL operands and to read joblib's array headers.
"""

from __future__ import annotations

import contextlib
import re
import struct

from hfcache.safety.pickle_values import (
    _MAX_DICT,
    _MAX_STR,
    _NAME_RE,
    LEGACY_TORCH_MAGIC,
    LONGSTR,
    OPAQUE,
    Import,
    Malformed,
    PickleScan,
    _Call,
    _Dict,
    _escaped,
    _Global,
    _int,
    _s,
)

_RUN = re.compile(rb"(?:K.|M..|J....|G........|N|\x88|\x89)+", re.S)
_SINGLE = re.compile(rb"[N\x88\x89]+")
_ONE = re.compile(rb"K.|M..|J....|G........|N|\x88|\x89", re.S)
_GROUP = [-1] * 256  # opcode -> which branch of the walker's loop holds it (-1: unknown)
_GROUPS = (  # hot groups first
    bytes([0x67, 0x68, 0x6a, 0x70, 0x71, 0x72, 0x94]),  # memo
    bytes([0x47, 0x4a, 0x4b, 0x4d, 0x4e, 0x58, 0x88, 0x89, 0x8c, 0x8d]),  # literals
    bytes([0x28, 0x29, 0x74, 0x85, 0x86, 0x87]),  # marks and tuples
    bytes([0x5d, 0x61, 0x64, 0x65, 0x6c, 0x73, 0x75, 0x7d, 0x8f, 0x90, 0x91]),  # containers
    bytes([0x52, 0x62, 0x63, 0x69, 0x6f, 0x81, 0x92, 0x93]),  # imports and calls
    bytes([0x2e, 0x30, 0x31, 0x32, 0x50, 0x51, 0x80, 0x95]),  # stack, STOP, PROTO, FRAME, persistent ids
    bytes([0x42, 0x43, 0x46, 0x49, 0x4c, 0x53, 0x54, 0x55, 0x56,
           0x82, 0x83, 0x84, 0x8a, 0x8b, 0x8e, 0x96, 0x97, 0x98]),  # the rest
)
for _g, _codes in enumerate(_GROUPS):
    for _c in _codes:
        _GROUP[_c] = _g
_U4, _I4, _U8, _F8 = struct.Struct("<I"), struct.Struct("<i"), struct.Struct("<Q"), struct.Struct("<d")


class _Walker:
    def __init__(self, buf, scan: PickleScan, joblib=None) -> None:
        """`joblib`: the function that skips joblib's raw array bytes after a `NumpyArrayWrapper` (see
        `joblib_arrays.skip_array`), given by the caller when the pickle is joblib's, so this module needs none."""
        self.buf, self.scan, self.joblib = buf, scan, joblib
        self.ops = 0  # opcodes read by the current `one` (added to scan.opcodes when it ends)

    def line(self, pos: int, end: int) -> tuple[bytes, int]:
        nl = self.buf.find(b"\n", pos, end)
        if nl < 0:
            raise Malformed("truncated (no end of line)", pos)
        return bytes(self.buf[pos:nl]), nl + 1

    def need(self, pos: int, n: int, end: int) -> int:
        if n < 0 or pos + n > end:
            raise Malformed("truncated", pos)
        return pos + n

    def record(self, module, name, offset: int, opcode: str) -> None:
        if isinstance(module, str) and isinstance(name, str):
            self.scan.imports.append(Import(module, name, offset, opcode))
        else:
            self.scan.unresolved.append(f"{opcode} at byte {offset}: operands not known before running the pickle")

    def one(self, pos: int, end: int):
        """Read one pickle from `pos` to its STOP; returns (value, position after STOP)."""
        scan = self.scan
        stack: list = []
        push = stack.append
        marks: list[int] = []
        memo: list = []  # dense keys (BINPUT 0, 1, 2, ... and MEMOIZE) in a list; others in `sparse`
        sparse: dict = {}

        def pop(at: int):
            if len(stack) <= (marks[-1] if marks else 0):
                raise Malformed("stack underflow", at)
            return stack.pop()

        def pop_mark(at: int) -> list:
            if not marks:
                raise Malformed("no MARK to pop to", at)
            fence = marks.pop()
            items = stack[fence:]
            del stack[fence:]
            return items

        def top(at: int):
            if not stack:
                raise Malformed("stack underflow", at)
            return stack[-1]

        try:
            return self._loop(pos, end, stack, push, marks, memo, sparse, pop, pop_mark, top)
        finally:
            scan.opcodes += self.ops
            self.ops = 0

    def _loop(self, pos, end, stack, push, marks, memo, sparse, pop, pop_mark, top):  # noqa: C901 - one branch per opcode
        buf, scan = self.buf, self.scan
        ops = 0
        try:
            while True:
                if pos >= end:
                    self.ops = ops
                    raise Malformed("truncated (no STOP)", pos)
                op = buf[pos]
                at = pos
                pos += 1
                ops += 1
                g = _GROUP[op]
                if g == 0:
                    if op == 0x94 and stack and not sparse:  # MEMOIZE, the common case inline
                        memo.append(stack[-1])
                        continue
                    if op == 0x71 and pos < end and stack and buf[pos] == len(memo) and not sparse:  # BINPUT, in order
                        memo.append(stack[-1])
                        pos += 1
                        continue
                    if op == 0x71 or op == 0x94 or op == 0x72 or op == 0x70:  # BINPUT MEMOIZE LONG_BINPUT PUT
                        if op == 0x71:
                            if pos >= end:
                                raise Malformed("truncated", pos)
                            key = buf[pos]
                            pos += 1
                        elif op == 0x94:
                            key = len(memo) + len(sparse)
                        elif op == 0x72:
                            pos = self.need(pos, 4, end)
                            key = _I4.unpack_from(buf, pos - 4)[0]
                        else:
                            raw, pos = self.line(pos, end)
                            key = _int(raw, at)
                        if key < 0:
                            raise Malformed("negative memo key", at)
                        if key == len(memo):
                            memo.append(top(at))
                        elif key < len(memo):
                            memo[key] = top(at)
                        else:
                            sparse[key] = top(at)
                    elif op == 0x68 or op == 0x6A or op == 0x67:  # BINGET LONG_BINGET GET
                        if op == 0x68:
                            pos = self.need(pos, 1, end)
                            key = buf[pos - 1]
                        elif op == 0x6A:
                            pos = self.need(pos, 4, end)
                            key = _U4.unpack_from(buf, pos - 4)[0]
                        else:
                            raw, pos = self.line(pos, end)
                            key = _int(raw, at)
                        if key < len(memo):
                            push(memo[key])
                        elif key in sparse:
                            push(sparse[key])
                        else:
                            raise Malformed(f"memo key {key} not found", at)
                elif g == 1:
                    if op == 0x8C and pos < end and pos + 1 + buf[pos] <= end:  # SHORT_BINUNICODE, inline
                        n = buf[pos]
                        push(_s(buf[pos + 1:pos + 1 + n]))
                        pos += 1 + n
                        continue
                    if op == 0x47 and pos + 8 <= end:  # BINFLOAT, inline (the value is not needed)
                        push(OPAQUE)
                        pos += 8
                        continue
                    if op == 0x4B:  # BININT1
                        if pos >= end:
                            raise Malformed("truncated", pos)
                        push(buf[pos])
                        pos += 1
                    elif op == 0x4A:  # BININT
                        if pos + 4 > end:
                            raise Malformed("truncated", pos)
                        push(_I4.unpack_from(buf, pos)[0])
                        pos += 4
                    elif op == 0x4D:  # BININT2
                        pos = self.need(pos, 2, end)
                        push(buf[pos - 2] | buf[pos - 1] << 8)
                    elif op == 0x8C or op == 0x58 or op == 0x8D:  # SHORT_BINUNICODE BINUNICODE BINUNICODE8
                        if op == 0x8C:
                            pos = self.need(pos, 1, end)
                            n = buf[pos - 1]
                        elif op == 0x58:
                            pos = self.need(pos, 4, end)
                            n = _U4.unpack_from(buf, pos - 4)[0]
                        else:
                            pos = self.need(pos, 8, end)
                            n = _U8.unpack_from(buf, pos - 8)[0]
                        pos = self.need(pos, n, end)
                        push(_s(buf[pos - n:pos]) if n <= _MAX_STR else LONGSTR)
                    elif op == 0x47:  # BINFLOAT
                        pos = self.need(pos, 8, end)
                        push(_F8.unpack_from(buf, pos - 8)[0])
                    elif op == 0x4E:  # NONE
                        push(None)
                    elif op == 0x88 or op == 0x89:  # NEWTRUE NEWFALSE
                        push(op == 0x88)
                elif g == 2:
                    if op == 0x28:  # MARK, often before a long run of plain numbers: those are counted in bulk
                        marks.append(len(stack))
                        run = _RUN.match(buf, pos, end)
                        if run is not None and run.end() - pos > 64:
                            single = _SINGLE.match(buf, pos, run.end())
                            k = (run.end() - pos if single is not None and single.end() == run.end()
                                 else len(_ONE.findall(buf, pos, run.end())))
                            stack.extend([OPAQUE] * k)
                            scan.opcodes += k
                            pos = run.end()
                    elif op == 0x85:  # TUPLE1
                        push((pop(at),))
                    elif op == 0x86:  # TUPLE2
                        b = pop(at)
                        push((pop(at), b))
                    elif op == 0x87:  # TUPLE3
                        c = pop(at)
                        b = pop(at)
                        push((pop(at), b, c))
                    elif op == 0x74:  # TUPLE
                        push(tuple(pop_mark(at)))
                    elif op == 0x29:  # EMPTY_TUPLE
                        push(())
                elif g == 3:
                    if op == 0x5D or op == 0x8F:  # EMPTY_LIST EMPTY_SET
                        push(OPAQUE)
                    elif op == 0x7D:  # EMPTY_DICT
                        push(_Dict())
                    elif op == 0x65 or op == 0x90:  # APPENDS ADDITEMS
                        pop_mark(at)
                        top(at)
                    elif op == 0x61:  # APPEND
                        pop(at)
                        top(at)
                    elif op == 0x75:  # SETITEMS
                        items = pop_mark(at)
                        if len(items) % 2:
                            raise Malformed("odd number of items for SETITEMS", at)
                        d = top(at)
                        if isinstance(d, _Dict):
                            for i in range(0, min(len(items), 2 * _MAX_DICT), 2):
                                d.set(items[i], items[i + 1])
                    elif op == 0x73:  # SETITEM
                        v = pop(at)
                        k = pop(at)
                        d = top(at)
                        if isinstance(d, _Dict):
                            d.set(k, v)
                    elif op == 0x64 or op == 0x6C or op == 0x91:  # DICT LIST FROZENSET
                        items = pop_mark(at)
                        if op == 0x64:
                            if len(items) % 2:
                                raise Malformed("odd number of items for DICT", at)
                            d = _Dict()
                            for i in range(0, min(len(items), 2 * _MAX_DICT), 2):
                                d.set(items[i], items[i + 1])
                            push(d)
                        else:
                            push(OPAQUE)
                elif g == 4:
                    if op == 0x52 or op == 0x81:  # REDUCE NEWOBJ
                        args = pop(at)
                        push(_Call(pop(at), args))
                        scan.calls += 1
                    elif op == 0x92:  # NEWOBJ_EX
                        pop(at)
                        args = pop(at)
                        push(_Call(pop(at), args))
                        scan.calls += 1
                    elif op == 0x62:  # BUILD
                        state = pop(at)
                        obj = top(at)
                        scan.calls += 1
                        if isinstance(obj, _Call):
                            obj.state = state
                            if self.joblib is not None and _is_wrapper(obj.func):
                                stack[-1] = OPAQUE
                                pos = self.joblib(self, obj, pos, end)
                    elif op == 0x63 or op == 0x69:  # GLOBAL INST
                        module, pos = self.line(pos, end)
                        name, pos = self.line(pos, end)
                        mod, nm = _s(module, "utf-8"), _s(name, "utf-8")
                        self.record(mod, nm, at, "GLOBAL" if op == 0x63 else "INST")
                        g = _Global(mod, nm)
                        if op == 0x63:
                            push(g)
                        else:
                            push(_Call(g, tuple(pop_mark(at))))
                            scan.calls += 1
                    elif op == 0x93:  # STACK_GLOBAL
                        name = pop(at)
                        module = pop(at)
                        self.record(module, name, at, "STACK_GLOBAL")
                        push(_Global(module, name))
                    elif op == 0x6F:  # OBJ
                        items = pop_mark(at)
                        if not items:
                            raise Malformed("OBJ without a class", at)
                        push(_Call(items[0], tuple(items[1:])))
                        scan.calls += 1
                elif g == 5:
                    if op == 0x30:  # POP
                        if len(stack) > (marks[-1] if marks else 0):
                            stack.pop()
                        elif marks:
                            marks.pop()
                        else:
                            raise Malformed("stack underflow", at)
                    elif op == 0x31:  # POP_MARK
                        pop_mark(at)
                    elif op == 0x32:  # DUP
                        push(top(at))
                    elif op == 0x2E:  # STOP
                        self.ops = ops
                        return pop(at), pos
                    elif op == 0x80:  # PROTO
                        pos = self.need(pos, 1, end)
                        if buf[pos - 1] > 5:
                            raise Malformed(f"unsupported protocol {buf[pos - 1]}", at)
                    elif op == 0x95:  # FRAME: the C unpickler reads on across frame ends; so do we, linearly
                        pos = self.need(pos, 8, end)
                        self.need(pos, _U8.unpack_from(buf, pos - 8)[0], end)
                    elif op == 0x51:  # BINPERSID
                        pop(at)
                        push(OPAQUE)
                    elif op == 0x50:  # PERSID
                        _, pos = self.line(pos, end)
                        push(OPAQUE)
                elif g == 6:
                    if op == 0x8A or op == 0x8B:  # LONG1 LONG4
                        if op == 0x8A:
                            pos = self.need(pos, 1, end)
                            n = buf[pos - 1]
                        else:
                            pos = self.need(pos, 4, end)
                            n = _I4.unpack_from(buf, pos - 4)[0]
                        pos = self.need(pos, n, end)
                        push(int.from_bytes(buf[pos - n:pos], "little", signed=True) if n <= 16 else OPAQUE)
                    elif op in (0x43, 0x42, 0x8E, 0x96, 0x55, 0x54):  # SHORT_BINBYTES BINBYTES BINBYTES8 BYTEARRAY8
                        if op == 0x43 or op == 0x55:  # ... SHORT_BINSTRING BINSTRING
                            pos = self.need(pos, 1, end)
                            n = buf[pos - 1]
                        elif op == 0x42 or op == 0x54:
                            pos = self.need(pos, 4, end)
                            n = (_U4 if op == 0x42 else _I4).unpack_from(buf, pos - 4)[0]
                        else:
                            pos = self.need(pos, 8, end)
                            n = _U8.unpack_from(buf, pos - 8)[0]
                        pos = self.need(pos, n, end)
                        # BINSTRING decodes to str ("ASCII" by default, "latin1" for numpy): a name can be spelt so
                        push(_s(buf[pos - n:pos], "latin-1") if op in (0x55, 0x54) else OPAQUE)
                    elif op in (0x49, 0x4C, 0x46):  # INT LONG FLOAT
                        raw, pos = self.line(pos, end)
                        if op == 0x49 and raw in (b"00", b"01"):
                            push(raw == b"01")
                        elif op == 0x46:
                            push(OPAQUE)
                        else:
                            push(_int(raw.rstrip(b"L") if op == 0x4C else raw, at))
                    elif op == 0x53 or op == 0x56:  # STRING UNICODE
                        raw, pos = self.line(pos, end)
                        if op == 0x53:
                            if len(raw) < 2 or raw[:1] != raw[-1:] or raw[:1] not in (b"'", b'"'):
                                raise Malformed("STRING not quoted", at)
                            push(_escaped(raw[1:-1], "unicode_escape"))
                        else:
                            push(_escaped(raw, "raw_unicode_escape"))
                    elif op in (0x82, 0x83, 0x84):  # EXT1 EXT2 EXT4: the copyreg extension registry
                        n = {0x82: 1, 0x83: 2, 0x84: 4}[op]
                        pos = self.need(pos, n, end)
                        scan.unresolved.append(f"EXT{n} at byte {at}: a name from the extension registry")
                        push(OPAQUE)
                    elif op == 0x97:  # NEXT_BUFFER
                        push(OPAQUE)
                    elif op == 0x98:  # READONLY_BUFFER
                        top(at)

                else:
                    raise Malformed(f"unknown opcode 0x{op:02x}", at)
        except (Malformed, RecursionError):
            self.ops = ops
            raise


def _is_wrapper(func) -> bool:
    return isinstance(func, _Global) and func.module == "joblib.numpy_pickle" and func.name == "NumpyArrayWrapper"


def probe(buf, start: int, end: int, scan: PickleScan, where: str) -> None:
    """Read bytes a loader treats as data as if they were opcodes, until they stop parsing: imports with real
    names found there are recorded (a plain unpickler given the file would run them)."""
    side = PickleScan()
    with contextlib.suppress(Malformed, RecursionError):
        _Walker(buf, side).one(start, end)
    for imp in side.imports:
        if _NAME_RE.fullmatch(imp.module) and _NAME_RE.fullmatch(imp.name):
            scan.imports.append(Import(imp.module, imp.name, imp.offset, f"{imp.opcode} {where}"))


__all__ = ["LEGACY_TORCH_MAGIC", "Import", "Malformed", "PickleScan", "probe"]
