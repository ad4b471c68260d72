"""Read a large JSON object piece by piece, in bounded memory: a bundle's manifest and its tree listings.

`json.loads` builds every object of a document at once, ~25 bytes of memory per byte for a hostile one
(`[{},{},...]`), and nothing is checked until all of it is built. Here the top level of an object is walked by
hand and each item of its large members (`entries`, `files`) is decoded on its own, under a size limit, so the
caller checks each item as it comes and keeps only what it needs.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from typing import BinaryIO, Literal

CHUNK = 64 * 1024
START = object()  # yielded as the value when an expanded member opens, before its items
_WS = " \t\n\r"
_DELIMITERS = _WS + ",:]}"
_DECODER = json.JSONDecoder()


class TooLarge(ValueError):
    """The document, or one value in it, is larger than its limit."""


class _Reader:
    def __init__(self, stream: BinaryIO, max_bytes: int, max_value: int) -> None:
        self.stream, self.max_bytes, self.max_value = stream, max_bytes, max_value
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf, self.pos, self.eof, self.read = "", 0, False, 0

    def more(self) -> bool:
        if self.eof:
            return False
        chunk = self.stream.read(CHUNK)
        self.read += len(chunk)
        if self.read > self.max_bytes:
            raise TooLarge(f"larger than {self.max_bytes // (1024 * 1024)} MiB")
        text = self.decoder.decode(chunk, final=not chunk)
        self.eof = not chunk
        self.buf, self.pos = self.buf[self.pos:] + text, 0
        return True

    def peek(self) -> str:
        """The next character that is not white space ('' at the end)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def take(self, chars: str) -> str:
        c = self.peek()
        if not c or c not in chars:
            raise ValueError(f"expected one of {chars!r} at byte ~{self.read - len(self.buf) + self.pos}, "
                             f"found {c or 'the end'!r}")
        self.pos += 1
        return c

    def value(self) -> object:
        """One complete JSON value, read no further than `max_value` characters ahead."""
        self.peek()
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.buf, self.pos)
            except (ValueError, RecursionError):
                obj, end = None, -1
            # A value counts once a delimiter follows it: "2" of "2.5" (or "tr" of "true") may go on.
            follows = self.buf[end:end + 1]
            if end >= 0 and ((follows and follows in _DELIMITERS) or (self.eof and not follows)):
                self.pos = end
                return obj
            if len(self.buf) - self.pos > self.max_value:
                raise TooLarge(f"a value is not valid JSON or larger than {self.max_value // 1024} KiB")
            if not self.more():
                if end >= 0:
                    self.pos = end
                    return obj
                raise ValueError("invalid or truncated JSON")


def walk(stream: BinaryIO, expand: dict[str, Literal["array", "object"]], max_bytes: int,
         max_value: int) -> Iterator[tuple[str, object]]:
    """(key, value) for each member of the top-level object. A member named in `expand` is not decoded whole:
    (key, START) first, then (key, item) per array item, or (key, (name, value)) per object member."""
    r = _Reader(stream, max_bytes, max_value)
    r.take("{")
    seen: set[str] = set()
    if r.peek() == "}":
        r.pos += 1
    else:
        while True:
            key = r.value()
            if not isinstance(key, str):
                raise ValueError("expected a member name")
            if key in seen:
                raise ValueError(f"member {key!r} appears twice")
            seen.add(key)
            r.take(":")
            kind = expand.get(key)
            if kind is None:
                yield key, r.value()
            else:
                yield key, START
                yield from _items(r, key, kind)
            if r.take(",}") == "}":
                break
    if r.peek() != "":
        raise ValueError("extra data after the JSON document")


def _items(r: _Reader, key: str, kind: str) -> Iterator[tuple[str, object]]:
    close = "]" if kind == "array" else "}"
    r.take("[" if kind == "array" else "{")
    if r.peek() == close:
        r.pos += 1
        return
    while True:
        if kind == "array":
            yield key, r.value()
        else:
            name = r.value()
            if not isinstance(name, str):
                raise ValueError("expected a member name")
            r.take(":")
            yield key, (name, r.value())
        if r.take("," + close) == close:
            return
