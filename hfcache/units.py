"""Sizes and counts for people: one formatter each, so every command shows them the same way."""

from __future__ import annotations


def human_size(n: float) -> str:
    """SI units, as `hf cache` shows them."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def counted(n: int, noun: str, spec: str = "", many: str | None = None) -> str:
    """`1 file`, `2 files`: a count with its noun in the right number (`spec` formats the count, e.g. `,`)."""
    return f"{n:{spec}} {noun if n == 1 else many or noun + 's'}"
