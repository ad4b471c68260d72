"""Reclaiming space: `rm`, `prune` and `dedup` each compute a `Plan`, then one `execute` runs it or, for a dry
run, walks the very same steps without touching anything.

Rules every plan keeps:
- A blob that any kept snapshot points to (in any repo, one link hop) is never deleted; a shared-store file is
  deleted only when no remaining repo blob links to it.
- A revision goes with its refs, its `trees/<commit>.json` and its `.no_exist/<commit>/`; a repo whose every
  revision goes is deleted as one folder, with its `.locks/` folder. A deleted blob's lock file goes with it.
- A lock file is unlinked only while this process holds it (huggingface_hub takes the same files): one another
  process holds is a download under way and stays, and so does its folder.
- Bytes are counted the way the disk frees them: a file's bytes count only when every hard link to it goes
  (so `freed_bytes` is what `du` would show, not a sum of sizes).
- Order: snapshots and refs first, blobs after, so an interrupted run leaves no snapshot pointing at nothing.
- A partial download (and its progress record) is a download in progress while its blob's lock is held, and a
  leftover only when that lock is free and it is old (`scan` decides; `layout.is_partial_name` says which they are).
- A plan is acted on later than it was made: `reclaim_run.execute` re-checks each item under its blob lock and
  skips (and reports) what changed since. Shared-store files go through huggingface_hub's own sweep.
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from hfcache.cache import hfhub
from hfcache.cache.layout import REPO_TYPES, RepoRef
from hfcache.cache.paths import (
    blob_lock_of,
    repo_blobs_dir,
    repo_lock_of,
    repo_locks_dir,
    repo_no_exist_dir,
    repo_ref_path,
    repo_refs_dir,
    repo_snapshot_dir,
    repo_tree_path,
    store_dir_of,
    store_manifest_of,
)
from hfcache.errors import HfcacheError, RepoNotFound, RevisionNotFound, UsageError
from hfcache.scan.model import CacheScan, Problem, Repo, Revision
from hfcache.units import counted

PHASES = {"repo": 0, "revision": 0, "blob": 1, "store_blob": 2, "leftover": 3, "download": 3, "link": 4}


class ConfirmationRequired(HfcacheError):
    """A plan that deletes or relinks files was shown but `--yes` was not given and no one can be asked."""


@dataclass(frozen=True)
class Action:
    """One step. `paths` are removed in order (files, links or whole folders); a `link` action replaces
    `paths[0]` with a hard link to `source` once both hash to `digest`."""

    kind: str
    label: str
    reason: str
    paths: tuple[str, ...]
    bytes: int = 0
    source: str | None = None
    digest: str = ""
    # what executing re-checks, as planned: the blob lock to hold while acting, `paths[0]`'s (inode, size,
    # mtime_ns), and the repo and commit(s) a revision, repo or metadata action is about
    lock: str = ""
    sig: tuple[int, ...] = ()
    repo_path: str = ""
    commits: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    command: str
    actions: tuple[Action, ...]
    freed_bytes: int
    notes: tuple[str, ...] = ()
    cleanup_dirs: tuple[str, ...] = ()  # folders removed afterwards if the plan left them empty

    def by_kind(self) -> dict[str, tuple[int, int]]:
        out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for a in self.actions:
            out[a.kind][0] += 1
            out[a.kind][1] += a.bytes
        return {k: (v[0], v[1]) for k, v in out.items()}


@dataclass(frozen=True)
class Outcome:
    plan: Plan
    dry_run: bool
    done: int
    freed_bytes: int
    errors: tuple[str, ...] = field(default=())
    skipped: tuple[str, ...] = field(default=())  # items left alone: in use, or changed since the plan


def signature(path: str) -> tuple[int, ...]:
    """What identifies a file's state between planning and acting: (inode, size, mtime_ns); () if absent."""
    try:
        st = os.lstat(path)
    except OSError:
        return ()
    return (st.st_ino, st.st_size, st.st_mtime_ns)


# -- accounting ----------------------------------------------------------------------------------------------------
def _files_under(path: str) -> Iterable[os.stat_result]:
    """Regular files at or under `path`, links not followed."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISREG(st.st_mode):
        yield st
    elif stat.S_ISDIR(st.st_mode):
        for dirpath, _dirs, names in os.walk(path):
            for n in names:
                try:
                    s = os.lstat(os.path.join(dirpath, n))
                except OSError:
                    continue
                if stat.S_ISREG(s.st_mode):
                    yield s


def _attribute(actions: list[Action]) -> list[Action]:
    """Set each action's bytes: the inodes whose last link this plan removes, credited to the first action."""
    links: dict[tuple[int, int], int] = defaultdict(int)
    per_action: list[list[os.stat_result]] = []
    for a in actions:
        # a link action frees the copy it replaces (if that was its last link), never the file kept
        sts = [st for p in (a.paths[:1] if a.kind == "link" else a.paths) for st in _files_under(p)]
        per_action.append(sts)
        for st in sts:
            links[(st.st_dev, st.st_ino)] += 1
    credited: set[tuple[int, int]] = set()
    out = []
    for a, sts in zip(actions, per_action, strict=True):
        freed = 0
        for st in sts:
            key = (st.st_dev, st.st_ino)
            if key not in credited and links[key] >= st.st_nlink:
                credited.add(key)
                freed += st.st_size
        out.append(replace(a, bytes=freed))
    return out


def _plan(command: str, actions: list[Action], notes: Sequence[str] = (), cleanup: Iterable[str] = ()) -> Plan:
    actions = sorted(actions, key=lambda a: (PHASES.get(a.kind, 9), a.paths[0]))
    actions = _attribute(actions)
    return Plan(command, tuple(actions), sum(a.bytes for a in actions), tuple(notes), tuple(sorted(set(cleanup))))


# -- revisions (rm, prune) -----------------------------------------------------------------------------------------
def _need_detail(scan: CacheScan) -> None:
    if any(rev.files is None for repo in scan.hub.repos for rev in repo.revisions):
        raise ValueError("reclaim plans need scan(detail=True)")


def _store_links(hub_root: str, repos: Iterable[Repo]) -> dict[str, set[str]]:
    """Shared-store file -> the repo blob links pointing to it (normally one per repo holding the file)."""
    out: dict[str, set[str]] = defaultdict(set)
    store = store_dir_of(hub_root) + os.sep
    for repo in repos:
        try:
            it = os.scandir(repo_blobs_dir(repo.path))
        except OSError:
            continue
        with it:
            for e in it:
                if e.is_symlink():
                    target = os.path.normpath(os.path.join(os.path.dirname(e.path), os.readlink(e.path)))
                    if target.startswith(store):
                        out[target].add(e.path)
    return out


def _store_action(payload: str, reason: str) -> Action:
    """A shared-store entry, deleted by huggingface_hub's sweep: the payload and its `.refs` manifest (its lock
    file stays, as the sweep leaves it)."""
    return Action("store_blob", f"shared blob {os.path.basename(payload)[:12]}", reason,
                  tuple(p for p in (payload, store_manifest_of(payload)) if os.path.lexists(p)),
                  sig=signature(payload))


def plan_revisions(scan: CacheScan, selected: dict[str, dict[str, str]], command: str,
                   extra: Sequence[Action] = (), notes: Sequence[str] = (), cleanup: Sequence[str] = ()) -> Plan:
    """Delete revisions: `selected` maps repo path -> {commit: reason}."""
    _need_detail(scan)
    repos = {r.path: r for r in scan.hub.repos}
    kept: set[str] = set()
    for repo in scan.hub.repos:
        chosen = selected.get(repo.path, {})
        for rev in repo.revisions:
            if rev.commit not in chosen:
                kept.update(f.blob for f in rev.files or ())
    actions: list[Action] = []
    cleanup = list(cleanup)
    gone_links: set[str] = set()
    gone_dirs: list[str] = []  # folders deleted whole: extra actions inside them are redundant
    kept_notes = 0
    for path, commits in sorted(selected.items()):
        repo = repos[path]
        inside = path + os.sep
        whole = len(commits) == len(repo.revisions) and not any(b.startswith(inside) for b in kept)
        if whole:
            locks = _locks_dir(scan, path)
            reason = ", ".join(sorted(set(commits.values())))
            n = len(repo.revisions)
            actions.append(Action("repo", f"{repo.cache_id} ({'its one revision' if n == 1 else f'all {n} revisions'})",
                                  reason, tuple(p for p in (path, locks) if os.path.lexists(p)), repo_path=path,
                                  commits=tuple(r.commit for r in repo.revisions)))
            gone_links.update(_blob_links(repo))
            gone_dirs += [path, locks]
            continue
        blobs: set[str] = set()
        for rev in repo.revisions:
            if rev.commit not in commits:
                continue
            actions.append(_revision_action(repo, rev, commits[rev.commit]))
            gone_dirs += [p for p in actions[-1].paths if p.endswith(rev.commit)]
            cleanup.append(repo_refs_dir(path))
            for f in rev.files or ():
                if f.linked and f.blob.startswith(repo_blobs_dir(path) + os.sep):
                    if f.blob in kept:
                        kept_notes += 1
                    else:
                        blobs.add(f.blob)
        for b in sorted(blobs):
            actions.append(_blob_action(b, f"{repo.cache_id} blob {os.path.basename(b)[:12]}",
                                        "used only by deleted revisions"))
            if os.path.islink(b):
                gone_links.add(b)
    store, kept_store = _orphaned_store_files(scan, gone_links)
    actions += store
    inside = tuple(os.path.join(d, "") for d in gone_dirs)
    actions += [a for a in extra if not inside or not a.paths[0].startswith(inside)]
    if kept_notes:
        notes = [*notes, f"{counted(kept_notes, 'file')} of deleted revisions keep their blob: a kept snapshot uses it"]
    if kept_store:
        notes = [*notes, f"{counted(kept_store, 'shared-store file')} kept: huggingface_hub's sweep keeps an entry "
                         "whose .refs manifest names another link, or is missing"]
    return _plan(command, actions, notes, cleanup)


def _blob_action(blob: str, label: str, reason: str) -> Action:
    """A repo blob; its lock file (`<cache>/.locks/<repo folder>/<etag>.lock`) is held while it is deleted,
    then goes too: it is useless once the blob is gone (`verify` would warn about it)."""
    return Action("blob", label, reason, (blob,), lock=blob_lock_of(blob), sig=signature(blob))


def _locks_dir(scan: CacheScan, repo_path: str) -> str:
    return repo_locks_dir(scan.hub.root, repo_path)


def _blob_links(repo: Repo) -> set[str]:
    out = set()
    try:
        with os.scandir(repo_blobs_dir(repo.path)) as it:
            out = {e.path for e in it if e.is_symlink()}
    except OSError:
        pass
    return out


def _orphaned_store_files(scan: CacheScan, gone_links: set[str]) -> tuple[list[Action], int]:
    """Store files whose every link goes with this plan, and that huggingface_hub's sweep would then delete
    (it reads their `.refs` manifest); also how many it would keep."""
    if not gone_links:
        return [], 0
    out, kept = [], 0
    root = Path(scan.hub.root)
    for payload, links in sorted(_store_links(scan.hub.root, scan.hub.repos).items()):
        if links and links <= gone_links:
            if hfhub.expected_sweep_bytes(Path(payload), root, {Path(p) for p in links}) > 0:
                out.append(_store_action(payload, "no repo links to it any more"))
            else:
                kept += 1
    return out, kept


def _revision_action(repo: Repo, rev: Revision, reason: str) -> Action:
    paths = [repo_snapshot_dir(repo.path, rev.commit)]
    paths += [repo_ref_path(repo.path, r) for r in rev.refs]
    paths += [p for p in (repo_tree_path(repo.path, rev.commit), repo_no_exist_dir(repo.path, rev.commit))
              if os.path.lexists(p)]
    refs = f" ({', '.join(rev.refs)})" if rev.refs else " (detached)"
    return Action("revision", f"{repo.cache_id}@{rev.commit[:12]}{refs}", reason, tuple(paths), repo_path=repo.path,
                  commits=(rev.commit,))


# -- rm ------------------------------------------------------------------------------------------------------------
def find_repo(scan: CacheScan, spec: str, default_type: str = "model") -> Repo:
    """A repo by `org/name`, `TYPE:org/name`, `hf cache ls`'s `TYPE/org/name`, or its folder name."""
    if default_type not in REPO_TYPES:
        raise UsageError(f"unknown repo type {default_type!r} (expected one of {', '.join(REPO_TYPES)})")
    by_key = {(r.repo_type, r.repo_id): r for r in scan.hub.repos}
    candidates: list[tuple[str, str]] = []
    if ":" in spec:
        t, _, rid = spec.partition(":")
        if t not in REPO_TYPES:
            raise UsageError(f"unknown repo type {t!r} in {spec!r} (expected one of {', '.join(REPO_TYPES)})")
        candidates.append((t, rid))
    elif (ref := RepoRef.from_folder_name(spec)) is not None:
        candidates.append((ref.repo_type, ref.repo_id))
    else:
        candidates.append((default_type, spec))
        head, _, rest = spec.partition("/")
        if head in REPO_TYPES and rest:
            candidates.append((head, rest))
        if head.endswith("s") and head[:-1] in REPO_TYPES and rest:
            candidates.append((head[:-1], rest))
    for key in candidates:
        if key in by_key:
            return by_key[key]
    if not spec or spec.startswith("/") or spec.count("/") > 2:
        raise UsageError(f"invalid repo id {spec!r}")
    raise RepoNotFound(f"{spec} is not in the cache at {scan.hub.root}")


def find_revision(repo: Repo, rev: str) -> Revision:
    """By ref name (`main`, `refs/pr/1`), full commit, or a unique commit prefix of 7+ characters."""
    for r in repo.revisions:
        if rev in r.refs or rev == r.commit:
            return r
    matches = [r for r in repo.revisions if len(rev) >= 7 and r.commit.startswith(rev.lower())]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(sorted({x for r in repo.revisions for x in r.refs} | {r.commit[:12] for r in repo.revisions}))
    what = "is ambiguous" if matches else "is not cached"
    raise RevisionNotFound(f"revision {rev!r} of {repo.cache_id} {what} (cached: {known or 'none'})")


def plan_rm(scan: CacheScan, targets: Sequence[str], default_type: str = "model") -> Plan:
    if not targets:
        raise UsageError("name at least one repo to remove, e.g. org/name or org/name@main")
    selected: dict[str, dict[str, str]] = defaultdict(dict)
    for t in targets:
        spec, _, rev = t.partition("@")
        repo = find_repo(scan, spec, default_type)
        revs = [find_revision(repo, rev)] if rev else list(repo.revisions)
        for r in revs:
            selected[repo.path][r.commit] = "asked for"
        if not revs:
            selected[repo.path] = {}
    actions = []
    for path, commits in list(selected.items()):
        if not commits:  # a repo folder with no revision at all: the folder itself goes
            repo = next(r for r in scan.hub.repos if r.path == path)
            locks = _locks_dir(scan, path)
            actions.append(Action("repo", f"{repo.cache_id} (no revision)", "asked for",
                                  tuple(p for p in (path, locks) if os.path.lexists(p)), repo_path=path))
            del selected[path]
    return plan_revisions(scan, selected, "rm", actions)


def refs_by_commit(repo_path: str) -> dict[str, list[str]]:
    """commit -> the refs naming it, read now (a handful of small files)."""
    out: dict[str, list[str]] = defaultdict(list)
    top = repo_refs_dir(repo_path)
    for dirpath, _dirs, names in os.walk(top):
        for n in names:
            path = os.path.join(dirpath, n)
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    commit = f.read(100).strip()
            except OSError:
                continue
            out[commit].append(os.path.relpath(path, top).replace(os.sep, "/"))
    return out


def _fixable(scan: CacheScan, fix: str) -> list[Problem]:
    return [p for g in scan.problems for p in g.examples if p.fix == fix]


# -- dedup ---------------------------------------------------------------------------------------------------------
def plan_dedup(scan: CacheScan) -> Plan:
    """Every duplicate group: copies beyond the first become hard links to it (same device only)."""
    actions = []
    for p in _fixable(scan, "dedup"):
        keep = p.paths[0]
        for other in p.paths[1:]:
            actions.append(Action("link", f"{os.path.relpath(other, scan.hub.root)}", p.detail, (other,),
                                  source=keep, digest=p.digest, lock=_dedup_lock(scan.hub.root, other, p.digest),
                                  sig=signature(other)))
    return _plan("dedup", actions)


def _dedup_lock(hub_root: str, path: str, digest: str) -> str:
    """The blob lock of a copy: `<repo>/blobs/<etag>` or a snapshot file of that content in `<repo>/...`."""
    rel = os.path.relpath(path, hub_root).split(os.sep)
    return repo_lock_of(hub_root, os.path.join(hub_root, rel[0]), digest) if len(rel) > 2 else ""
