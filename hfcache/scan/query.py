"""`--filter`, `--sort` and `--limit` over scanned repos, spelled as `hf cache ls` spells them.

Filters: `size>1GB`, `accessed>30d` (last access more than 30 days ago), `modified<=1w`, `type=dataset`,
`refs=main`; operators `= != > < >= <=`; sizes in SI units (k, kB, M, MB, G, GB, T, TB, P, PB), durations in
s, m, h, d, w, mo, y. Sort keys: size, accessed, modified (newest/biggest first) and name (A to Z); `:asc` or
`:desc` turns them around.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Sequence

from hfcache.errors import UsageError
from hfcache.scan.model import Repo, Revision

SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
              "t": 10**12, "tb": 10**12, "p": 10**15, "pb": 10**15}
TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400, "y": 365 * 86400}
_OPS: dict[str, Callable[[float, float], bool]] = {
    "=": operator.eq, "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt,
    ">=": operator.ge, "<=": operator.le}
_FILTER_RE = re.compile(r"(?P<key>[a-zA-Z_]+)\s*(?P<op>==|!=|>=|<=|>|<|=)\s*(?P<value>.+)")
_NUMBER_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)")
SORT_KEYS = ("size", "accessed", "modified", "name")

Entry = tuple[Repo, Revision | None]
Predicate = Callable[[Repo, Revision | None], bool]


def _with_unit(value: str, units: dict[str, int], what: str) -> float:
    m = _NUMBER_RE.fullmatch(value.strip())
    if not m or m.group(2).lower() not in units:
        raise UsageError(f"invalid {what} {value!r} (e.g. {'1GB, 500MB' if what == 'size' else '30d, 12h, 2w'})")
    return float(m.group(1)) * units[m.group(2).lower()]


def parse_size(value: str) -> int:
    return int(_with_unit(value, SIZE_UNITS, "size"))


def parse_duration(value: str) -> float:
    return _with_unit(value, TIME_UNITS, "duration")


def compile_filter(expr: str, now: float) -> Predicate:
    m = _FILTER_RE.fullmatch(expr.strip())
    if not m:
        raise UsageError(f"invalid filter {expr!r} (expected KEY OP VALUE, e.g. size>1GB, accessed>30d, type=model)")
    key, op, raw = m.group("key").lower(), m.group("op"), m.group("value").strip()
    compare = _OPS[op]
    if key == "size":
        threshold = parse_size(raw)
        return lambda repo, rev: compare((rev or repo).size_on_disk, threshold)
    if key in ("accessed", "modified"):
        seconds = parse_duration(raw)

        def age(repo: Repo, rev: Revision | None) -> bool:
            obj = rev if rev is not None else repo
            ts = obj.last_accessed if key == "accessed" else obj.last_modified
            return compare(now - ts, seconds)

        return age
    if key in ("type", "refs"):
        if op not in ("=", "==", "!="):
            raise UsageError(f"only = and != apply to {key} (in {expr!r})")
        want = raw.lower()
        neg = op == "!="
        if key == "type":
            return lambda repo, rev: (repo.repo_type == want) != neg
        return lambda repo, rev: (want in [r.lower() for r in (rev.refs if rev else repo.refs)]) != neg
    raise UsageError(f"unknown filter key {key!r} in {expr!r} (expected size, accessed, modified, type or refs)")


def compile_sort(expr: str) -> tuple[Callable[[Entry], object], bool]:
    key, _, order = expr.strip().lower().partition(":")
    if key not in SORT_KEYS or order not in ("", "asc", "desc"):
        raise UsageError(f"invalid sort {expr!r} (expected one of {', '.join(SORT_KEYS)}, optionally :asc or :desc)")
    desc = (order or ("asc" if key == "name" else "desc")) == "desc"

    def sort_key(entry: Entry) -> object:
        repo, rev = entry
        obj = rev if rev is not None else repo
        if key == "size":
            return obj.size_on_disk
        if key == "accessed":
            return obj.last_accessed
        if key == "modified":
            return obj.last_modified
        return (repo.cache_id, rev.commit if rev else "")

    return sort_key, desc


def select(repos: Iterable[Repo], filters: Sequence[str] = (), sort: str = "size", limit: int | None = None,
           revisions: bool = False, now: float = 0.0) -> list[Entry]:
    """Repos (or, with `revisions`, one entry per revision) that pass every filter, sorted and cut to `limit`."""
    preds = [compile_filter(f, now) for f in filters]
    sort_key, desc = compile_sort(sort)
    entries: list[Entry] = [(r, v) for r in repos for v in r.revisions] if revisions else [(r, None) for r in repos]
    entries = [e for e in entries if all(p(*e) for p in preds)]
    entries.sort(key=lambda e: e[0].cache_id)
    entries.sort(key=sort_key, reverse=desc)  # type: ignore[arg-type]
    if limit is not None:
        if limit < 0:
            raise UsageError("--limit must be 0 or more")
        entries = entries[:limit]
    return entries
