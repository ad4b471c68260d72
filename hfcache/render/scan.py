"""Rendering for `scan`, `rm`, `prune` and `dedup`: a rich summary on a terminal, JSON (sizes in bytes) for
machines. The scan and the plans are computed elsewhere; this module only shows them."""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import asdict
from typing import Any

from hfcache.scan.model import CacheScan, Repo, Revision
from hfcache.scan.reclaim import Outcome, Plan
from hfcache.units import counted, human_size

Entry = tuple[Repo, Revision | None]


def ago(ts: float, now: float) -> str:
    if not ts:
        return "-"
    s = max(0.0, now - ts)
    for unit, size in (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400),
                       ("hour", 3600), ("minute", 60)):
        if s >= size:
            n = int(s // size)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"


# -- JSON ----------------------------------------------------------------------------------------------------------
def _revision_json(rev: Revision, files: bool) -> dict[str, Any]:
    out = {"commit": rev.commit, "refs": list(rev.refs), "detached": rev.detached, "nb_files": rev.nb_files,
           "size_on_disk": rev.size_on_disk, "last_accessed": rev.last_accessed, "last_modified": rev.last_modified,
           "has_tree": rev.has_tree, "lacks": rev.lacks, "no_exist": rev.no_exist}
    if files and rev.files is not None:
        out["files"] = [asdict(f) for f in rev.files]
    return out


def _repo_json(repo: Repo, files: bool) -> dict[str, Any]:
    return {"repo_id": repo.repo_id, "repo_type": repo.repo_type, "cache_id": repo.cache_id, "path": repo.path,
            "size_on_disk": repo.size_on_disk, "nb_files": repo.nb_files, "bytes": repo.bytes,
            "last_accessed": repo.last_accessed, "last_modified": repo.last_modified, "refs": list(repo.refs),
            "orphan_bytes": repo.orphan_bytes, "incomplete_bytes": repo.incomplete_bytes,
            "detached_bytes": repo.detached_bytes,
            "revisions": [_revision_json(r, files) for r in repo.revisions]}


def scan_json(scan: CacheScan, entries: list[Entry], revisions: bool, files: bool) -> dict[str, Any]:
    hub = scan.hub
    out: dict[str, Any] = {
        "hf_home": scan.roots["home"], "roots": scan.roots, "scanned_at": scan.scanned_at,
        "seconds": round(scan.seconds, 4), "bytes": scan.bytes,
        "areas": [asdict(a) for a in scan.areas], "others": [asdict(a) for a in scan.others],
        "token_file": scan.token_file, "stored_tokens_file": scan.stored_tokens_file,
        "hub": {"root": hub.root, "exists": hub.exists, "size_on_disk": hub.size_on_disk, "bytes": hub.bytes,
                "files": hub.files, "repos": len(hub.repos), "revisions": sum(len(r.revisions) for r in hub.repos),
                "shared_store_files": hub.shared_store_files, "shared_store_bytes": hub.shared_store_bytes,
                "locks": hub.locks},
        "datasets": asdict(scan.datasets),
        "modules": [asdict(m) for m in scan.modules],
        "problems": [{"kind": g.kind, "description": g.description, "count": g.count, "bytes": g.bytes,
                      "fixable_bytes": g.fixable_bytes, "examples": [asdict(p) for p in g.examples]}
                     for g in scan.problems],
        "reclaimable": {"prune": scan.reclaimable.prune, **asdict(scan.reclaimable)},
    }
    if revisions:
        out["revisions"] = [{"repo_id": repo.repo_id, "repo_type": repo.repo_type, **_revision_json(rev, files)}
                            for repo, rev in entries if rev is not None]
    else:
        out["repos"] = [_repo_json(repo, files) for repo, _ in entries]
    return out


def print_json(obj: Any) -> None:
    """One line: `json.dumps` with `indent` runs the pure-Python encoder, 4x slower on a cache of 5,000 repos."""
    sys.stdout.write(json.dumps(obj) + "\n")


def plan_json(plan: Plan, outcome: Outcome | None) -> dict[str, Any]:
    return {"command": plan.command, "planned_bytes": plan.freed_bytes,
            "executed": outcome is not None and not outcome.dry_run,
            "dry_run": outcome is None or outcome.dry_run,
            "freed_bytes": outcome.freed_bytes if outcome and not outcome.dry_run else 0,
            "actions": [asdict(a) for a in plan.actions], "notes": list(plan.notes),
            "errors": list(outcome.errors) if outcome else [],
            "skipped": list(outcome.skipped) if outcome else []}


# -- rich ----------------------------------------------------------------------------------------------------------
def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def _table(title: str | None, *columns: str, right: tuple[str, ...] = ()):
    from rich.table import Table

    t = Table(title=title, title_justify="left", title_style="bold", box=None, header_style="bold dim",
              pad_edge=False)
    for c in columns:
        t.add_column(c, justify="right" if c in right else "left", overflow="fold")
    return t


def render_scan(scan: CacheScan, entries: list[Entry], revisions: bool, shown_of: int, filters: list[str],
                sort: str, limit: int) -> None:
    c, now = _console(), scan.scanned_at
    c.print(f"[bold]HF_HOME[/] {scan.roots['home']}: [bold]{human_size(scan.bytes)}[/] "
            f"(scanned in {scan.seconds:.2f} s)")
    areas = _table(None, "area", "path", "files", "size", "modified", right=("files", "size"))
    for a in (*scan.areas, *scan.others):
        if a.exists:
            areas.add_row(a.name if a in scan.areas else f"other: {a.name}", a.path, f"{a.files:,}",
                          human_size(a.bytes), ago(a.last_modified, now))
    c.print(areas)
    c.print("token: " + ("a token file exists (not read)" if scan.token_file else "no token file")
            + (", stored_tokens exists" if scan.stored_tokens_file else ""))
    _hub_summary(c, scan, entries, revisions, shown_of, filters, sort)
    _datasets_summary(c, scan, limit)
    _problems(c, scan)
    r = scan.reclaimable
    c.print(f"\n[bold]Reclaimable[/]: `hfcache prune` ~{human_size(r.prune)} (detached revisions "
            f"{human_size(r.detached)}, orphan blobs {human_size(r.orphans)}, leftovers {human_size(r.leftovers)}; "
            f"more with --older-than); `hfcache dedup` ~{human_size(r.dedup)}.")


def _hub_summary(c, scan: CacheScan, entries: list[Entry], revisions: bool, shown_of: int, filters: list[str],
                 sort: str) -> None:
    hub, now = scan.hub, scan.scanned_at
    if not hub.exists:
        c.print(f"\nno hub cache at {hub.root}")
        return
    types = Counter(r.repo_type for r in hub.repos)
    nrev = sum(len(r.revisions) for r in hub.repos)
    detached = sum(1 for r in hub.repos for v in r.revisions if v.detached)
    store = f"; shared store {counted(hub.shared_store_files, 'file', ',')}" if hub.shared_store_files else ""
    kinds = ", ".join(f"{n:,} {t}{'s' if n != 1 else ''}" for t, n in sorted(types.items()))
    c.print(f"\n[bold]Hub cache[/]: {counted(len(hub.repos), 'repo', ',')} ({kinds}), "
            f"{counted(nrev, 'revision', ',')} ({detached:,} detached), "
            f"{human_size(hub.size_on_disk)} in blobs{store}")
    what = "revisions" if revisions else "repos"
    title = f"{what} by {sort}: {len(entries):,} of {shown_of:,}" + (f" matching {' and '.join(filters)}"
                                                                     if filters else "")
    if revisions:
        t = _table(title, "repo", "revision", "refs", "files", "size", "modified", right=("files", "size"))
        for repo, rev in entries:
            assert rev is not None
            t.add_row(repo.cache_id, rev.commit[:12], " ".join(rev.refs) or "(detached)", f"{rev.nb_files:,}",
                      human_size(rev.size_on_disk), ago(rev.last_modified, now))
    else:
        t = _table(title, "repo", "revs", "files", "size", "accessed", "modified", "refs",
                   right=("revs", "files", "size"))
        for repo, _ in entries:
            t.add_row(repo.cache_id, str(len(repo.revisions)), f"{repo.nb_files:,}", human_size(repo.size_on_disk),
                      ago(repo.last_accessed, now), ago(repo.last_modified, now), " ".join(repo.refs))
    c.print(t)


def _datasets_summary(c, scan: CacheScan, limit: int) -> None:
    ds, now = scan.datasets, scan.scanned_at
    if ds.exists and ds.prepared:
        t = _table(f"\nprepared datasets: {len(ds.prepared):,} in {ds.root}", "builder", "config", "version",
                   "fingerprint", "splits", "arrow", "size", "accessed", right=("arrow", "size"))
        for p in sorted(ds.prepared, key=lambda p: -p.bytes)[:limit]:
            splits = " ".join(f"{k}:{v:,}" for k, v in p.splits.items())
            t.add_row(p.builder, p.config, p.version, p.fingerprint[:16], splits, human_size(p.arrow_bytes),
                      human_size(p.bytes), ago(p.last_accessed, now))
        c.print(t)
    if ds.downloads or ds.extracted:
        c.print(f"datasets downloads: {counted(len(ds.downloads), 'file', ',')}, "
                f"{human_size(sum(d.bytes for d in ds.downloads))}; extracted: "
                f"{counted(len(ds.extracted), 'folder', ',')}, {human_size(sum(d.bytes for d in ds.extracted))}")
        for d in sorted(ds.downloads, key=lambda d: -d.bytes)[:min(limit, 5)]:
            c.print(f"  {human_size(d.bytes):>9}  {d.url or d.path}")
    if scan.modules:
        t = _table("\nmodules", "group", "module", "versions", "size", right=("versions", "size"))
        for m in sorted(scan.modules, key=lambda m: -m.bytes)[:limit]:
            t.add_row(m.group, m.name, str(m.versions), human_size(m.bytes))
        c.print(t)


def _problems(c, scan: CacheScan) -> None:
    real = sum(g.count for g in scan.problems if g.kind != "stale_lock")  # leftover locks are harmless
    if not real:
        c.print("\n[bold green]No problems found.[/]")
    if not scan.problems:
        return
    stale = sum(g.count for g in scan.problems if g.kind == "stale_lock")
    title = f"\nproblems ({real:,})" if real else "\nleftovers prune can remove"
    if real and stale:
        title += f" and {counted(stale, 'leftover lock', ',')}"
    t = _table(title, "kind", "count", "bytes at stake", "fix",
               "example", right=("count", "bytes at stake"))
    home = scan.roots["home"].rstrip("/") + "/"
    for g in scan.problems:
        fixes = sorted({p.fix for p in g.examples if p.fix})
        ex = g.examples[0] if g.examples else None
        path = ex.path.removeprefix(home) if ex else ""  # relative to HF_HOME: the table stays narrow
        example = path + (f" ({ex.detail})" if ex and ex.detail else "")
        t.add_row(g.description, f"{g.count:,}", human_size(g.bytes), ", ".join(fixes) or "-", example)
    c.print(t)


def render_plan(plan: Plan, outcome: Outcome | None, show: int = 40) -> None:
    c = _console()
    if not plan.actions:
        c.print(f"{plan.command}: nothing to do.")
        return
    verb = "replace with hard links" if plan.command == "dedup" else "delete"
    c.print(f"[bold]{plan.command}[/] plan: {verb} {counted(len(plan.actions), 'item', ',')}, freeing "
            f"[bold]{human_size(plan.freed_bytes)}[/] ({counted(plan.freed_bytes, 'byte', ',')})")
    t = _table(None, "kind", "item", "why", "frees", right=("frees",))
    for a in plan.actions[:show]:
        t.add_row(a.kind, a.label, a.reason, human_size(a.bytes))
    c.print(t)
    if len(plan.actions) > show:
        rest = plan.actions[show:]
        c.print(f"… and {len(rest):,} more ({human_size(sum(a.bytes for a in rest))}); --json lists them all")
    for n in plan.notes:
        c.print(f"note: {n}")
    if outcome is None:
        return
    if outcome.dry_run:
        c.print("dry run: nothing changed.")
    else:
        c.print(f"done: {outcome.done:,} of {counted(len(plan.actions), 'item', ',')}, "
                f"freed {human_size(outcome.freed_bytes)}.")
    for e in outcome.skipped:
        c.print(f"skipped: {e}")
    for e in outcome.errors:
        print(f"hfcache: {e}", file=sys.stderr)
