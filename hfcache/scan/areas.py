"""The caches around the hub cache: `datasets` (prepared Arrow data, downloads, extractions) and the modules.

Layouts as `datasets` 3.x-5.x writes them (see the datasets-layouts notes):
`<cache>/<builder>/<config>/<version>/<fingerprint>/{dataset_info.json,*.arrow}` with `*.lock` and
`<fingerprint>.incomplete/` siblings; `downloads/<sha256(url)>[.<sha256(etag)>][.py]` with a `.json` sidecar
`{"url", "etag"}`, `.lock` and `.incomplete`; `downloads/extracted/<sha256(archive path)>/`.
"""

from __future__ import annotations

import json
import os
import stat

from hfcache.scan.model import DatasetsDownload, DatasetsScan, ModuleEntry, PreparedDataset
from hfcache.scan.walk import IGNORED_NAMES, Context, Tally, du

DATA_SUFFIXES = (".arrow", ".parquet")


def _lock_or_leftover(ctx: Context, path: str, st: os.stat_result, what: str, size: int | None = None) -> None:
    """Locks `datasets` never removes, and partial downloads or builds, once they are old."""
    age = ctx.now - st.st_mtime
    size = st.st_size if size is None else size
    if path.endswith(".lock"):
        if age > ctx.stale_after:
            ctx.problems.add("stale_lock", path, size, f"{what} lock", age=age, fix="prune")
    elif ".incomplete" in os.path.basename(path):
        fresh = age < ctx.stale_after
        ctx.problems.add("incomplete", path, size, f"partial {what}" + (" (recent)" if fresh else ""), age=age,
                         fix=None if fresh else "prune")


def scan_datasets(root: str, downloads: str, extracted: str, ctx: Context) -> tuple[DatasetsScan, Tally]:
    tally = Tally()
    if not os.path.isdir(root) and not os.path.isdir(downloads):
        return DatasetsScan(root, False), tally
    skip = ctx.skip | {downloads, extracted}
    prepared: list[PreparedDataset] = []
    stack: list[tuple[str, tuple[str, ...]]] = [(root, ())]
    while stack:
        d, parts = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                if e.name in IGNORED_NAMES or e.path in skip:
                    continue
                if e.is_dir(follow_symlinks=False):
                    if e.name.endswith(".incomplete"):
                        t = du(e.path, ctx)
                        tally.merge(t)
                        _lock_or_leftover(ctx, e.path, e.stat(follow_symlinks=False), "dataset build", t.logical)
                    elif len(parts) == 3:
                        prepared.append(_prepared(e.path, (*parts, e.name), ctx, tally))
                    else:
                        stack.append((e.path, (*parts, e.name)))
                elif e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    tally.add(st, ctx.inodes)
                    _lock_or_leftover(ctx, e.path, st, "datasets")
    dl, dl_tally = _downloads(downloads, extracted, ctx)
    tally.merge(dl_tally)
    ex, ex_tally = _extracted(extracted, ctx)
    tally.merge(ex_tally)
    prepared.sort(key=lambda p: p.path)
    return DatasetsScan(root, True, tuple(prepared), dl, ex, tally.bytes, tally.files), tally


def _prepared(path: str, parts: tuple[str, ...], ctx: Context, tally: Tally) -> PreparedDataset:
    builder, config, version, fingerprint = parts
    t = Tally()
    arrow = map_cache = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            t.add(st, ctx.inodes)
            if name.endswith(DATA_SUFFIXES):
                arrow += st.st_size
                map_cache += name.startswith("cache-")
    tally.merge(t)
    dataset_name, splits = None, {}
    try:
        with open(os.path.join(path, "dataset_info.json"), "rb") as f:
            info = json.loads(f.read())
        dataset_name = info.get("dataset_name") or info.get("builder_name")
        splits = {k: int(v.get("num_examples") or 0) for k, v in (info.get("splits") or {}).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    return PreparedDataset(path, builder.replace("___", "/"), config, version, fingerprint, dataset_name, splits,
                           t.files, t.logical, arrow, map_cache, t.atime, t.mtime)


def _downloads(downloads: str, extracted: str, ctx: Context) -> tuple[tuple[DatasetsDownload, ...], Tally]:
    tally = Tally()
    data: dict[str, os.stat_result] = {}
    sidecars: dict[str, str] = {}
    try:
        it = os.scandir(downloads)
    except OSError:
        return (), tally
    with it:
        for e in it:
            if e.path == extracted or e.name in IGNORED_NAMES:
                continue
            if e.is_dir(follow_symlinks=False):
                tally.merge(du(e.path, ctx))
                continue
            if not e.is_file(follow_symlinks=False):
                continue
            st = e.stat(follow_symlinks=False)
            tally.add(st, ctx.inodes)
            if e.name.endswith(".json"):
                sidecars[e.name[:-5]] = e.path
            elif e.name.endswith((".lock", ".incomplete")):
                _lock_or_leftover(ctx, e.path, st, "datasets download")
            else:
                data[e.name] = st
    out = []
    for name, st in sorted(data.items()):
        url = etag = None
        if name in sidecars:
            try:
                with open(sidecars[name], "rb") as f:
                    meta = json.loads(f.read())
                url, etag = meta.get("url"), meta.get("etag")
            except (OSError, ValueError, AttributeError):
                pass
        out.append(DatasetsDownload(f"{downloads}/{name}", url, etag, 1, st.st_size, st.st_atime, st.st_mtime))
    for name, path in sorted(sidecars.items()):
        if name not in data:
            ctx.problems.add("orphan_metadata", path, os.lstat(path).st_size, "download sidecar without its file",
                             fix="prune")
    return tuple(out), tally


def _extracted(extracted: str, ctx: Context) -> tuple[tuple[DatasetsDownload, ...], Tally]:
    tally = Tally()
    out = []
    try:
        it = os.scandir(extracted)
    except OSError:
        return (), tally
    with it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            t = du(e.path, ctx)
            tally.merge(t)
            out.append(DatasetsDownload(e.path, None, None, t.files, t.logical, t.atime, t.mtime))
        elif e.is_file(follow_symlinks=False):
            st = e.stat(follow_symlinks=False)
            tally.add(st, ctx.inodes)
            _lock_or_leftover(ctx, e.path, st, "extraction")
    return tuple(out), tally


def scan_modules(root: str, ctx: Context) -> tuple[tuple[ModuleEntry, ...], Tally]:
    """`<modules>/<group>/<kind or org>/<name>/<hash>/...`: one entry per name, its hash folders as versions."""
    tally = Tally()
    out: list[ModuleEntry] = []
    try:
        groups = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return (), tally
    for g in groups:
        if not g.is_dir(follow_symlinks=False):
            tally.merge(du(g.path, ctx))
            continue
        for kind in sorted(os.scandir(g.path), key=lambda e: e.name):
            if not kind.is_dir(follow_symlinks=False) or kind.name == "__pycache__":
                tally.merge(du(kind.path, ctx))
                continue
            for mod in sorted(os.scandir(kind.path), key=lambda e: e.name):
                t = du(mod.path, ctx)
                tally.merge(t)
                if not mod.is_dir(follow_symlinks=False) or mod.name == "__pycache__":
                    continue
                versions = sum(1 for v in os.scandir(mod.path) if v.is_dir(follow_symlinks=False)
                               and v.name != "__pycache__")
                out.append(ModuleEntry(g.name, f"{kind.name}/{mod.name}", versions, t.files, t.logical, t.mtime))
    return tuple(out), tally
