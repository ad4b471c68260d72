"""`prune`: what a cache can lose without anyone missing it, as a `Plan` (`reclaim_run.execute` carries it out).

Detached revisions (optionally only those older than `--older-than`), orphan blobs, stale leftovers, the refs and
markers a typo leaves, and old `datasets` downloads; never what a kept snapshot points to.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from hfcache.cache import hfhub
from hfcache.cache.paths import (
    Folder,
    blob_lock_of,
    cache_locks_dir,
    repo_no_exist_dir,
    repo_no_exist_root,
    repo_ref_path,
    repo_tree_path,
)
from hfcache.scan.model import CacheScan, Problem
from hfcache.scan.reclaim import (
    Action,
    Plan,
    _blob_action,
    _fixable,
    _locks_dir,
    _store_action,
    plan_revisions,
    refs_by_commit,
    signature,
)
from hfcache.units import counted


def plan_prune(scan: CacheScan, older_than: float | None = None) -> Plan:
    """Detached revisions, orphan blobs and leftovers; with `older_than` (seconds) also revisions and `datasets`
    downloads not accessed for that long."""
    now = scan.scanned_at
    selected: dict[str, dict[str, str]] = defaultdict(dict)
    for repo in scan.hub.repos:
        for rev in repo.revisions:
            if rev.detached:
                selected[repo.path][rev.commit] = "detached"
            elif older_than is not None and now - rev.last_accessed > older_than:
                selected[repo.path][rev.commit] = f"not accessed for {_days(now - rev.last_accessed)}"
    unreferenced = {str(p) for p in hfhub.unreferenced_store_files(Path(scan.hub.root))}
    extra = [a for p in _fixable(scan, "prune") if (a := _problem_action(p, unreferenced)) is not None]
    typos = _typo_refs(scan)
    whole = tuple(a.repo_path + os.sep for a in typos if a.kind == "repo")
    extra = [a for a in extra if not whole or not a.paths[0].startswith(whole)] + typos
    cleanup = [cache_locks_dir(scan.hub.root)]  # lock folders left empty go too
    cleanup += [repo_no_exist_root(r.path) for r in scan.hub.repos]  # and `.no_exist/`'s
    if older_than is not None:
        for what, entries in (("download", scan.datasets.downloads), ("extraction", scan.datasets.extracted)):
            for d in entries:
                if now - d.last_accessed > older_than:
                    paths = tuple(p for p in (d.path, f"{d.path}.json", f"{d.path}.lock") if os.path.lexists(p))
                    label = f"datasets {what} {d.url or os.path.basename(d.path)[:16]}"
                    extra.append(Action("download", label[:120], f"not accessed for {_days(now - d.last_accessed)}",
                                        paths))
    return plan_revisions(scan, selected, "prune", extra, cleanup=cleanup)


def _problem_action(p: Problem, unreferenced: set[str]) -> Action | None:
    if p.kind == "orphan_blob":
        if p.repo is None:  # the shared store: <cache>/blobs/<xx>/<hash>, if huggingface_hub's sweep would take it
            return _store_action(p.path, "no repo links to it") if p.path in unreferenced else None
        of = f" of {p.repo}" if p.repo else ""
        return _blob_action(p.path, f"orphan blob {os.path.basename(p.path)[:12]}{of}", p.detail)
    if p.kind == "stale_lock":
        # a repo's stale locks are listed one by one (a lock of a cached blob, or a held one, stays); a folder of
        # locks for a repo no longer cached goes whole, but for the locks another process holds
        where = p.repo or os.path.basename(p.path)
        what = counted(p.count, "stale lock") if p.paths else "all stale locks"
        return Action("leftover", f"{what} of {where}", p.detail, p.paths or (p.path,))
    if p.kind == "incomplete":  # acted on under its blob's lock, only if untouched since the plan
        return Action("leftover", f"partial download {os.path.basename(p.path)[:40]}", p.detail or p.kind, (p.path,),
                      lock=blob_lock_of(p.path), sig=signature(p.path))
    if p.kind == "orphan_metadata":
        where = _metadata_of(p.path)
        return Action("leftover", f"orphan metadata {os.path.basename(p.path)[:40]}", p.detail or p.kind, (p.path,),
                      sig=signature(p.path), repo_path=where[0] if where else "", commits=where[1:] if where else ())
    return None


def _metadata_of(path: str) -> tuple[str, str] | None:
    """(repo folder, commit) of a hub `trees/<commit>.json` or `.no_exist/<commit>`; None for other areas."""
    parent, name = os.path.split(path)
    if os.path.basename(parent) not in (Folder.TREES, Folder.NO_EXIST):
        return None
    commit = name.removesuffix(".json")
    return (os.path.dirname(parent), commit) if len(commit) == 40 else None


def _typo_refs(scan: CacheScan) -> list[Action]:
    """Refs to a commit whose only trace is `.no_exist/<commit>` or a tree listing: what a download of a file
    that does not exist (a typo) leaves, as huggingface_hub does. Not damage, but nothing to keep either."""
    out = []
    why = "a ref to a commit never fetched: only .no_exist markers or a listing"
    for repo in scan.hub.repos:
        have = {r.commit for r in repo.revisions}
        refs = refs_by_commit(repo.path)
        mine = []
        for commit, names in sorted(refs.items()):
            if commit in have:
                continue
            traces = [p for p in (repo_no_exist_dir(repo.path, commit), repo_tree_path(repo.path, commit))
                      if os.path.lexists(p)]
            if traces:
                mine.append(Action("leftover", f"{repo.cache_id} ref {', '.join(names)} -> {commit[:12]} (no snapshot)",
                                   why, (*(repo_ref_path(repo.path, n) for n in names), *traces), repo_path=repo.path,
                                   commits=(commit,)))
        if mine and not have and len(mine) == len(refs):  # nothing else in the repo: the folder goes whole
            locks = _locks_dir(scan, repo.path)
            mine = [Action("repo", f"{repo.cache_id} (no revision)", why,
                           tuple(p for p in (repo.path, locks) if os.path.lexists(p)), repo_path=repo.path)]
        out += mine
    return out


def _days(seconds: float) -> str:
    return f"{seconds / 86400:.0f}d" if seconds >= 86400 else f"{seconds / 3600:.0f}h"


