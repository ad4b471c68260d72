"""Hostile request fields, read safely: header values we echo, `Range`, `Authorization`, `cursor`.

Every function here turns any input into a value or a refusal, never an exception: a 500 makes huggingface_hub
retry, and a wrong 404 makes it record `.no_exist`.
"""

from __future__ import annotations

import hmac
import re
from typing import Literal

HEADER_TEXT_MAX = 200
_NUM_MAX_DIGITS = 19  # beyond int64: longer numbers are "too large", never parsed (int() caps digits anyway)
_SPEC = re.compile(r"(\d*)-(\d*)")

Unsatisfiable = Literal["unsatisfiable"]


def header_text(text: str) -> str:
    """`text` as a header value: printable ASCII only (others escaped as `\\uXXXX`), capped in length.

    HTTP headers are latin-1 at best and CR/LF would end them; the JSON body keeps the real text."""
    out = text.encode("ascii", "backslashreplace").decode("ascii")
    out = "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in out)
    return out if len(out) <= HEADER_TEXT_MAX else out[:HEADER_TEXT_MAX - 3] + "..."


def _num(digits: str) -> int:
    return int(digits) if len(digits) <= _NUM_MAX_DIGITS else 10 ** _NUM_MAX_DIGITS


def parse_range(value: str | None, size: int) -> tuple[int, int] | Unsatisfiable | None:
    """The inclusive byte span a `Range` header asks of a `size`-byte body, per RFC 9110 section 14.

    None: serve the whole body (no header, another unit, several ranges, or an invalid spec such as `10-5`:
    a server MAY ignore those). "unsatisfiable": answer 416 (the first byte is past the end, or a zero suffix).
    """
    if not value:
        return None
    unit, sep, spec = value.partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    m = _SPEC.fullmatch(spec.strip())
    if m is None or m.group(0) == "-":
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last N bytes
        n = _num(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = _num(first)
    if last and _num(last) < start:
        return None  # invalid, so ignored
    if start >= size:
        return "unsatisfiable"
    return start, min(_num(last), size - 1) if last else size - 1


def bearer_matches(header: str | None, token: str) -> bool:
    """Constant-time check of `Authorization: Bearer <token>` on bytes (a non-ASCII header is just wrong)."""
    if header is None:
        return False
    sent = header.encode("latin-1", "replace")  # Starlette decoded the raw bytes as latin-1
    return hmac.compare_digest(sent, f"Bearer {token}".encode())


def parse_cursor(value: str | None) -> int | None:
    """A tree page cursor (an offset we wrote in `Link`), or None when it is not one."""
    if value is None or value == "":
        return 0
    if not value.isascii() or not value.isdigit() or len(value) > _NUM_MAX_DIGITS:
        return None
    return int(value)
