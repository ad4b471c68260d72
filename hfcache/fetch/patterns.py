"""`huggingface_hub.utils.filter_repo_objects`, ported: which repo files `allow_patterns`/`ignore_patterns`
(`--include`/`--exclude`) keep, by the library's own rules, without loading `huggingface_hub.utils`.

fnmatch, case-sensitive, `*` crossing `/`; a pattern ending in `/` means everything under that folder; `\\` is a
separator, not an escape. tests/test_hubheaders.py compares the two on the same names and patterns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from fnmatch import fnmatchcase


def _normalize(value: str) -> str:
    return str(value).replace("\\", "/")


def _folder(pattern: str) -> str:
    return pattern + "*" if pattern.endswith("/") else pattern


def filter_names(names: Iterable[str], allow: Sequence[str] | str | None = None,
                 ignore: Sequence[str] | str | None = None) -> Iterator[str]:
    """The names kept (in their order): matching an `allow` pattern if any are given, and no `ignore` one."""
    if isinstance(allow, str):
        allow = [allow]
    if isinstance(ignore, str):
        ignore = [ignore]
    allow_p = [_folder(_normalize(p)) for p in allow] if allow is not None else None
    ignore_p = [_folder(_normalize(p)) for p in ignore] if ignore is not None else None
    for name in names:
        path = _normalize(name)
        if allow_p is not None and not any(fnmatchcase(path, p) for p in allow_p):
            continue
        if ignore_p is not None and any(fnmatchcase(path, p) for p in ignore_p):
            continue
        yield name


def selected(names: Iterable[str], include: Sequence[str] | None, exclude: Sequence[str] | None) -> list[str]:
    """`filter_names` for `--include`/`--exclude` as the commands take them: no option (None, or an empty list)
    means no filter, where an empty `allow` list keeps nothing."""
    return list(filter_names(names, list(include) if include else None, list(exclude) if exclude else None))
