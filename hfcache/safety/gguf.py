"""GGUF (llama.cpp): the header is parsed, and a chat template is reported for review.

A GGUF holds no code, but `tokenizer.chat_template` is a Jinja template that servers render: one that reaches
for Python internals (`__globals__`, `__subclasses__`, ...) is the template-injection of CVE-2024-34359.
"""

from __future__ import annotations

import re
import struct
from typing import BinaryIO

from hfcache.safety.policy import UNKNOWN, UNSAFE
from hfcache.safety.result import Outcome

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
MAX_KEYS, MAX_ARRAY, MAX_STRING = 1 << 16, 1 << 24, 1 << 26
MAX_ITEMS = 1 << 24  # metadata values read in all (a real tokenizer holds a few hundred thousand)
_INJECTION = re.compile(r"__(class|mro|subclasses|globals|builtins|init|import|base|bases|dict|code|getattribute)__"
                        r"|\b(os|subprocess|popen|eval|exec|import|getattr|lipsum|cycler|joiner|namespace)\b")


class _Bad(Exception):
    pass


class _Reader:
    def __init__(self, f: BinaryIO, size: int, v1: bool) -> None:
        self.f, self.left, self.v1 = f, size, v1
        self.items = 0

    def take(self, n: int) -> bytes:
        if n > self.left:
            raise _Bad("truncated")
        data = self.f.read(n)
        if len(data) < n:
            raise _Bad("truncated")
        self.left -= n
        return data

    def u(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def count(self) -> int:
        return self.u("<I" if self.v1 else "<Q")

    def string(self) -> str:
        n = self.count()
        if n > MAX_STRING:
            raise _Bad(f"a string of {n:,} bytes")
        return self.take(n).decode("utf-8", "replace")

    def value(self, vtype: int, keep: bool):
        self.items += 1
        if self.items > MAX_ITEMS:
            raise _Bad(f"more than {MAX_ITEMS:,} metadata values")
        if vtype in _SCALARS:
            return self.u(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            itype, n = self.u("<I"), self.count()
            if n > MAX_ARRAY or itype == _ARRAY:
                raise _Bad(f"an array of {n:,} items of type {itype}")
            items = [self.value(itype, keep) for _ in range(n)]
            return items if keep and n <= 16 else f"[{n} items]"
        raise _Bad(f"unknown value type {vtype}")


def check_gguf(f: BinaryIO, size: int, out: Outcome) -> None:
    out.format = "gguf"
    try:
        f.seek(0)
        head = f.read(8)
        if len(head) < 8 or head[:4] != b"GGUF":
            raise _Bad("no GGUF magic")
        version = struct.unpack_from("<I", head, 4)[0]
        if version not in (1, 2, 3):
            raise _Bad(f"unknown version {version}")
        r = _Reader(f, size - 8, version == 1)
        tensors, keys = r.count(), r.count()
        if keys > MAX_KEYS:
            raise _Bad(f"{keys:,} metadata keys")
        meta: dict = {}
        for _ in range(keys):
            key = r.string()
            vtype = r.u("<I")
            meta[key] = r.value(vtype, True)
    except (_Bad, struct.error) as e:
        out.flag(UNSAFE, f"malformed GGUF header: {e}")
        return
    templates = {k: v for k, v in meta.items() if k.startswith("tokenizer.chat_template") and isinstance(v, str)}
    out.info.update({"version": version, "tensors": tensors, "metadata_keys": len(meta),
                     "architecture": meta.get("general.architecture"), "chat_templates": sorted(templates)})
    for key, template in templates.items():
        hits = sorted({m.group(0) for m in _INJECTION.finditer(template)})
        if hits:
            out.flag(UNKNOWN, f"{key} reaches for {', '.join(hits)}: review it before a server renders it")
        else:
            out.note(f"review: {key} is a Jinja template ({len(template):,} characters) a server will render")
