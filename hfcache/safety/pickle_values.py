"""What the static pickle walk records and the few values it keeps: imports, the scan result, the errors the
unpickler would raise, and placeholders for everything that is not a name, a small int or a tuple."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_MAX_STR = 256  # longer strings are kept as a placeholder: no module or class name is that long
_MAX_DICT = 64
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class Malformed(Exception):
    """The unpickler would stop here with an error (after running whatever came before)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at byte {offset}")
        self.offset = offset


@dataclass(frozen=True)
class Import:
    module: str
    name: str
    offset: int
    opcode: str  # GLOBAL, INST, STACK_GLOBAL, or a note on where it was found

    @property
    def full(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass
class PickleScan:
    imports: list[Import] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)  # names that cannot be known without running the pickle
    pickles: int = 0
    opcodes: int = 0
    calls: int = 0  # REDUCE, NEWOBJ, OBJ, INST: what turns an import into a call
    error: str | None = None  # the first pickle could not be read to its end
    notes: list[str] = field(default_factory=list)
    end: int = 0  # offset after the last opcode read


class _Long:
    """A string not kept (too long, or not a dotted name): a str to the unpickler, never a resolvable name."""


class _Opaque:
    pass


LONGSTR, OPAQUE = _Long(), _Opaque()


class _Global:
    __slots__ = ("module", "name")

    def __init__(self, module, name) -> None:
        self.module, self.name = module, name


class _Call:
    __slots__ = ("func", "args", "state")

    def __init__(self, func, args) -> None:
        self.func, self.args, self.state = func, args, None


class _Dict:
    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: dict = {}

    def set(self, k, v) -> None:
        if isinstance(k, (str, int)) and len(self.items) < _MAX_DICT:
            self.items[k] = v


def _s(raw: bytes, encoding: str = "utf-8"):
    if len(raw) > _MAX_STR:
        return LONGSTR
    try:
        text = raw.decode(encoding, "surrogatepass" if encoding == "utf-8" else "strict")
    except UnicodeDecodeError:
        return LONGSTR
    return text if _NAME_RE.fullmatch(text) else LONGSTR  # only names matter (and keeping only them saves memory)


def _int(raw: bytes, at: int) -> int:
    try:
        return int(raw)
    except ValueError:
        raise Malformed("not an integer", at) from None


def _escaped(raw: bytes, codec: str):
    if len(raw) > _MAX_STR:
        return LONGSTR
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        return LONGSTR
