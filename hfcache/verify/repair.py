"""`verify --repair`: fetch again what `verify` found damaged or missing, by the one checked download path.

The endpoint's listing for each commit says what each file must be. A blob is fetched by
`Transfer.fetch_blob` under its lock: hashed before it becomes visible, then renamed over the damaged one, so a
reader sees the old bytes or the good ones, never a mix; then the snapshot entry is linked again. A damaged
blob no snapshot uses is removed (a later download would otherwise link it as is). Extra files, refs and
leftovers are left alone: repair restores content, it deletes nothing a user may want.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from hfcache.cache.layout import HubCache, RepoRef
from hfcache.cache.meta import FileMeta
from hfcache.cache.paths import Folder
from hfcache.errors import EntryNotFound, RepoNotFound, RevisionNotFound
from hfcache.verify.report import ERROR, VerifyReport

REPAIRABLE = ("hash-mismatch", "size-mismatch", "missing-file", "broken-link", "bad-link", "unreadable")
_DAMAGE = ("hash-mismatch", "size-mismatch", "unreadable")


@dataclass(frozen=True)
class Repaired:
    repo: str
    path: str  # relative to the cache root
    action: str  # refetched, relinked, removed
    bytes: int


def repair(report: VerifyReport, cache: HubCache, client, transfer_options=None,
           on_bytes: Callable[[int], None] | None = None) -> tuple[Repaired, ...]:
    """Repair what can be repaired in `report`; the caller verifies again to prove it."""
    from hfcache.fetch.transfer import Transfer

    damaged: set[str] = set()
    wanted: dict[tuple[RepoRef, str], set[str]] = {}
    for p in report.problems:
        if p.kind not in REPAIRABLE or p.severity != ERROR:  # --allow-partial: missing files are fine
            continue
        if p.blob and p.kind in _DAMAGE and ("name" in p.sources or p.kind == "unreadable"):
            damaged.add(p.blob)
        for path in p.paths:
            parsed = _snapshot_path(path)
            if parsed is not None:
                wanted.setdefault(parsed[:2], set()).add(parsed[2])
    done: list[Repaired] = []
    linked = {p.blob for p in report.problems if p.blob and p.paths}
    for blob in sorted(damaged - linked):
        done.extend(_remove_orphan(cache, blob))
    transfer = Transfer(client, transfer_options)
    try:
        for (repo, commit), rels in sorted(wanted.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            listing = _listing(client, repo, commit)
            for rel in sorted(rels):
                if rel in listing:
                    done.append(_refetch(cache, client, transfer, repo, commit, rel, listing[rel], damaged, on_bytes))
    finally:
        transfer.close()
    return tuple(done)


def _snapshot_path(path: str) -> tuple[RepoRef, str, str] | None:
    """`<repo folder>/snapshots/<commit>/<file>` back into its parts."""
    parts = path.split("/", 3)
    if len(parts) != 4 or parts[1] != Folder.SNAPSHOTS:
        return None
    repo = RepoRef.from_folder_name(parts[0])
    return (repo, parts[2], parts[3]) if repo is not None else None


def _listing(client, repo: RepoRef, commit: str) -> dict[str, FileMeta]:
    """What the endpoint says the commit holds; an unreachable endpoint raises (the caller reports the damage)."""
    try:
        return client.list_files(repo, commit)
    except (RepoNotFound, RevisionNotFound, EntryNotFound):
        return {}  # the endpoint lacks the commit: nothing to fetch it from; the re-check still reports it


def _refetch(cache: HubCache, client, transfer, repo: RepoRef, commit: str, rel: str, meta: FileMeta,
             damaged: set[str], on_bytes) -> Repaired:
    blob = cache.blob_path(repo, meta.etag)
    pointer = cache.pointer_path(repo, commit, rel)
    blob_rel = os.path.relpath(blob, cache.root).replace(os.sep, "/")
    blob.parent.mkdir(parents=True, exist_ok=True)
    cache.check_inside(blob.parent, pointer.parent)
    with cache.lock(repo, meta.etag):
        fetched = not (blob.is_file() and blob_rel not in damaged and blob.stat().st_size == meta.size)
        if fetched:
            transfer.fetch_blob(client.resolve_url(repo, commit, rel), blob, meta, on_bytes)
            damaged.discard(blob_rel)
        cache.link(repo, commit, rel, meta.etag, new_blob=fetched)
    shown = os.path.relpath(pointer, cache.root).replace(os.sep, "/")
    return Repaired(str(repo), shown, "refetched" if fetched else "relinked", meta.size if fetched else 0)


def _remove_orphan(cache: HubCache, blob: str) -> list[Repaired]:
    folder, _, name = blob.partition(f"/{Folder.BLOBS}/")
    repo = RepoRef.from_folder_name(folder)
    if repo is None or "/" in name:
        return []
    path = cache.blob_path(repo, name)
    with cache.lock(repo, name):
        size = path.stat().st_size if path.is_file() else 0
        path.unlink(missing_ok=True)
    return [Repaired(str(repo), blob, "removed", size)]
