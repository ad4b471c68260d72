"""Sizes for people: one formatter, so every command shows bytes the same way."""

from __future__ import annotations


def human_size(n: float) -> str:
    """SI units, as `hf cache` shows them."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
