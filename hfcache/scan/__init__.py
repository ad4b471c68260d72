"""`scan`: what is in HF_HOME, where the bytes are, what is wrong, and what `prune` and `dedup` would free.

The result is a tree of frozen records (`hfcache.scan.model`), like `huggingface_hub`'s `HFCacheInfo`; nothing
is printed here. Per-file records are kept only with `detail=True` (what `rm`, `prune` and `dedup` plan from).

- `scan()` (here): the whole HF_HOME; `hub`, `repo`, `areas`, `walk`: its parts; `model`: the records.
- `query`: `--sort` and `--filter`.
- `reclaim`: `plan_rm`, `plan_dedup` make a `Plan` (`prune.plan_prune` too); `reclaim_run.execute(plan)` carries it
  out, re-checking each item under its lock.
- `files`: the low-level reads the walk is built on.
- `report_html`: the self-contained HTML report (`scan --html`).
"""

from __future__ import annotations

import os
import time

from hfcache.cache.roots import CacheRoots, resolve_roots
from hfcache.scan.areas import scan_datasets, scan_modules
from hfcache.scan.hub import HubWalk
from hfcache.scan.model import (
    PROBLEM_KINDS,
    Area,
    CachedFile,
    CacheScan,
    DatasetsDownload,
    DatasetsScan,
    HubScan,
    ModuleEntry,
    PreparedDataset,
    Problem,
    ProblemGroup,
    Reclaimable,
    Repo,
    Revision,
)
from hfcache.scan.walk import Context, Problems, du

STALE_AFTER = 3600.0  # a partial download untouched this long belongs to no running process

__all__ = ["PROBLEM_KINDS", "STALE_AFTER", "Area", "CacheScan", "CachedFile", "DatasetsDownload", "DatasetsScan",
           "HubScan", "ModuleEntry", "PreparedDataset", "Problem", "ProblemGroup", "Reclaimable", "Repo",
           "Revision", "scan"]


def scan(roots: CacheRoots | None = None, *, detail: bool = False, hub_only: bool = False,
         stale_after: float = STALE_AFTER, examples: int = 20, now: float | None = None) -> CacheScan:
    """Scan every cache under `roots` (default: as the libraries resolve them from the environment).

    `detail` keeps every snapshot file and every problem; otherwise `examples` problems per kind are kept.
    """
    start = time.perf_counter()
    roots = roots or resolve_roots()
    area_paths = {name: str(p) for name, p in roots.areas().items()}
    ctx = Context(now=time.time() if now is None else now, stale_after=stale_after,
                  problems=Problems(None if detail else examples),
                  skip=frozenset({*area_paths.values(), str(roots.datasets_downloads), str(roots.datasets_extracted)}))

    hub = HubWalk(area_paths["hub"], ctx, detail).run()
    areas = [Area("hub", hub.root, hub.exists, hub.files, hub.bytes, max((r.last_modified for r in hub.repos),
                                                                        default=0.0))]
    datasets = DatasetsScan(area_paths["datasets"], False)
    modules: tuple[ModuleEntry, ...] = ()
    others: list[Area] = []
    if not hub_only:
        datasets, t = scan_datasets(area_paths["datasets"], str(roots.datasets_downloads),
                                    str(roots.datasets_extracted), ctx)
        areas.append(Area("datasets", datasets.root, datasets.exists, t.files, t.bytes, t.mtime))
        modules, t = scan_modules(area_paths["modules"], ctx)
        areas.append(Area("modules", area_paths["modules"], os.path.isdir(area_paths["modules"]), t.files, t.bytes,
                          t.mtime))
        for name in ("xet", "assets", "metrics", "evaluate"):
            t = du(area_paths[name], ctx)
            areas.append(Area(name, area_paths[name], os.path.exists(area_paths[name]), t.files, t.bytes, t.mtime))
        others = _others(roots, ctx)

    groups = ctx.problems.groups()
    reclaim = Reclaimable(
        detached=sum(r.detached_bytes for r in hub.repos),
        orphans=ctx.problems.fixable_by("prune", ("orphan_blob",)),
        leftovers=ctx.problems.fixable_by("prune") - ctx.problems.fixable_by("prune", ("orphan_blob",)),
        dedup=ctx.problems.fixable_by("dedup"),
    )
    return CacheScan(
        roots={k: str(v) for k, v in vars(roots).items()}, areas=tuple(areas), hub=hub, datasets=datasets,
        modules=modules, token_file=os.path.lexists(roots.token), stored_tokens_file=os.path.lexists(
            roots.stored_tokens), problems=groups, reclaimable=reclaim, scanned_at=ctx.now,
        seconds=time.perf_counter() - start, others=tuple(others))


def _others(roots: CacheRoots, ctx: Context) -> list[Area]:
    """Whatever else sits in HF_HOME (old `transformers/`, other tools' folders), so every byte is accounted."""
    known = ctx.skip | {str(roots.token), str(roots.stored_tokens)}
    out = []
    try:
        entries = sorted(os.scandir(roots.home), key=lambda e: e.name)
    except OSError:
        return out
    for e in entries:
        if e.path in known:
            continue
        t = du(e.path, ctx)
        out.append(Area(e.name, e.path, True, t.files, t.bytes, t.mtime))
    return out
