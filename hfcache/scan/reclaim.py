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
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from hfcache.cache.hashing import hash_file, kind_of
from hfcache.cache.layout import REPO_TYPES, RepoRef
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
        out.append(Action(a.kind, a.label, a.reason, a.paths, freed, a.source, a.digest))
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
    store = os.path.join(hub_root, "blobs") + os.sep
    for repo in repos:
        try:
            it = os.scandir(os.path.join(repo.path, "blobs"))
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
    base = payload
    return Action("store_blob", f"shared blob {os.path.basename(payload)[:12]}", reason,
                  tuple(p for p in (base, f"{base}.refs", f"{base}.lock") if os.path.lexists(p)))


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
                                  reason, tuple(p for p in (path, locks) if os.path.lexists(p))))
            gone_links.update(_blob_links(repo))
            gone_dirs += [path, locks]
            continue
        blobs: set[str] = set()
        for rev in repo.revisions:
            if rev.commit not in commits:
                continue
            actions.append(_revision_action(repo, rev, commits[rev.commit]))
            gone_dirs += [p for p in actions[-1].paths if p.endswith(rev.commit)]
            cleanup.append(os.path.join(path, "refs"))
            for f in rev.files or ():
                if f.linked and f.blob.startswith(inside + "blobs" + os.sep):
                    if f.blob in kept:
                        kept_notes += 1
                    else:
                        blobs.add(f.blob)
        for b in sorted(blobs):
            actions.append(Action("blob", f"{repo.cache_id} blob {os.path.basename(b)[:12]}",
                                  "used only by deleted revisions", _with_lock(b)))
            if os.path.islink(b):
                gone_links.add(b)
    actions += _orphaned_store_files(scan, gone_links)
    inside = tuple(os.path.join(d, "") for d in gone_dirs)
    actions += [a for a in extra if not inside or not a.paths[0].startswith(inside)]
    if kept_notes:
        notes = [*notes, f"{counted(kept_notes, 'file')} of deleted revisions keep their blob: a kept snapshot uses it"]
    return _plan(command, actions, notes, cleanup)


def _with_lock(blob: str) -> tuple[str, ...]:
    """A repo blob and its lock file (`<cache>/.locks/<repo folder>/<etag>.lock`), which is useless once the
    blob is gone: `verify` would warn about it."""
    repo_dir = os.path.dirname(os.path.dirname(blob))
    lock = os.path.join(os.path.dirname(repo_dir), ".locks", os.path.basename(repo_dir),
                        f"{os.path.basename(blob)}.lock")
    return (blob, lock) if os.path.lexists(lock) else (blob,)


def _locks_dir(scan: CacheScan, repo_path: str) -> str:
    return os.path.join(scan.hub.root, ".locks", os.path.basename(repo_path))


def _blob_links(repo: Repo) -> set[str]:
    out = set()
    try:
        with os.scandir(os.path.join(repo.path, "blobs")) as it:
            out = {e.path for e in it if e.is_symlink()}
    except OSError:
        pass
    return out


def _orphaned_store_files(scan: CacheScan, gone_links: set[str]) -> list[Action]:
    if not gone_links:
        return []
    out = []
    for payload, links in sorted(_store_links(scan.hub.root, scan.hub.repos).items()):
        if links and links <= gone_links:
            out.append(_store_action(payload, "no repo links to it any more"))
    return out


def _revision_action(repo: Repo, rev: Revision, reason: str) -> Action:
    paths = [os.path.join(repo.path, "snapshots", rev.commit)]
    paths += [os.path.join(repo.path, "refs", *r.split("/")) for r in rev.refs]
    paths += [p for p in (os.path.join(repo.path, "trees", f"{rev.commit}.json"),
                          os.path.join(repo.path, ".no_exist", rev.commit)) if os.path.lexists(p)]
    refs = f" ({', '.join(rev.refs)})" if rev.refs else " (detached)"
    return Action("revision", f"{repo.cache_id}@{rev.commit[:12]}{refs}", reason, tuple(paths))


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
                                  tuple(p for p in (path, locks) if os.path.lexists(p))))
            del selected[path]
    return plan_revisions(scan, selected, "rm", actions)


# -- prune ---------------------------------------------------------------------------------------------------------
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
    extra = [a for a in map(_problem_action, _fixable(scan, "prune")) if a is not None]
    cleanup = [os.path.join(scan.hub.root, ".locks")]  # lock folders left empty go too
    if older_than is not None:
        for what, entries in (("download", scan.datasets.downloads), ("extraction", scan.datasets.extracted)):
            for d in entries:
                if now - d.last_accessed > older_than:
                    paths = tuple(p for p in (d.path, f"{d.path}.json", f"{d.path}.lock") if os.path.lexists(p))
                    label = f"datasets {what} {d.url or os.path.basename(d.path)[:16]}"
                    extra.append(Action("download", label[:120], f"not accessed for {_days(now - d.last_accessed)}",
                                        paths))
    return plan_revisions(scan, selected, "prune", extra, cleanup=cleanup)


def _fixable(scan: CacheScan, fix: str) -> list[Problem]:
    return [p for g in scan.problems for p in g.examples if p.fix == fix]


def _problem_action(p: Problem) -> Action | None:
    if p.kind == "orphan_blob":
        if p.repo is None:  # the shared store: <cache>/blobs/<xx>/<hash>
            return _store_action(p.path, "no repo links to it")
        return Action("blob", f"orphan blob {os.path.basename(p.path)[:12]}" + (f" of {p.repo}" if p.repo else ""),
                      p.detail, _with_lock(p.path))
    if p.kind == "stale_lock":
        # a repo's stale locks are listed one by one (a lock of a cached blob, or a held one, stays); a folder of
        # locks for a repo no longer cached goes whole, but for the locks another process holds
        where = p.repo or os.path.basename(p.path)
        what = counted(p.count, "stale lock") if p.paths else "all stale locks"
        return Action("leftover", f"{what} of {where}", p.detail, p.paths or (p.path,))
    label = {"incomplete": "partial download", "orphan_metadata": "orphan metadata"}
    if p.kind in label:
        return Action("leftover", f"{label[p.kind]} {os.path.basename(p.path)[:40]}", p.detail or p.kind, (p.path,))
    return None


def _days(seconds: float) -> str:
    return f"{seconds / 86400:.0f}d" if seconds >= 86400 else f"{seconds / 3600:.0f}h"


# -- dedup ---------------------------------------------------------------------------------------------------------
def plan_dedup(scan: CacheScan) -> Plan:
    """Every duplicate group: copies beyond the first become hard links to it (same device only)."""
    actions = []
    for p in _fixable(scan, "dedup"):
        keep = p.paths[0]
        for other in p.paths[1:]:
            actions.append(Action("link", f"{os.path.relpath(other, scan.hub.root)}", p.detail, (other,),
                                  source=keep, digest=p.digest))
    return _plan("dedup", actions)


# -- execute -------------------------------------------------------------------------------------------------------
def execute(plan: Plan, dry_run: bool) -> Outcome:
    """Run the plan in order, or (dry run) go through the same steps touching nothing."""
    done = freed = 0
    errors: list[str] = []
    verified: dict[str, bool] = {}
    for a in plan.actions:
        try:
            if a.kind == "link":
                _relink(a, dry_run, verified)
            elif not dry_run:
                for p in a.paths:
                    _remove(p)
        except (OSError, _Skip) as e:
            errors.append(f"{a.label}: {e}")
            continue
        done += 1
        freed += a.bytes
    if not dry_run:
        for d in plan.cleanup_dirs:
            _remove_empty_dirs(d)
    return Outcome(plan, dry_run, done, freed, tuple(errors))


class _Skip(Exception):
    pass


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if os.path.basename(os.path.dirname(path)) == ".locks":
            _remove_locks(path)
        else:
            shutil.rmtree(path)
    elif stat.S_ISREG(st.st_mode) and path.endswith(".lock"):
        _remove_lock(path)
    else:
        os.unlink(path)


def _remove_locks(folder: str) -> None:
    """A repo's `.locks/` folder: every lock that can be taken, then the folder if that emptied it."""
    with os.scandir(folder) as it:
        paths = [e.path for e in it]
    for p in paths:
        _remove(p)
    with contextlib.suppress(OSError):
        os.rmdir(folder)


def _remove_lock(path: str) -> None:
    """Unlink a lock file while holding it, so no process is between taking it and using it; one another
    process holds (or that cannot be taken) stays."""
    from filelock import FileLock, Timeout

    lock = FileLock(path, timeout=0, fallback_to_soft=False)
    try:
        lock.acquire()
    except (Timeout, OSError):
        return
    try:
        os.unlink(path)
    finally:
        lock.release()


def _remove_empty_dirs(root: str) -> None:
    """Empty sub-folders (e.g. `refs/pr/`) left once their refs went; the root itself stays."""
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        if dirpath != root:
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def _hash_ok(path: str, digest: str, cache: dict[str, bool]) -> bool:
    if path not in cache:
        kind = kind_of(digest)
        cache[path] = kind is not None and hash_file(path, kind) == digest
    return cache[path]


def _relink(a: Action, dry_run: bool, verified: dict[str, bool]) -> None:
    """Replace a copy with a hard link to the kept file, after both hash to their shared name."""
    target, source = a.paths[0], a.source or ""
    st_t, st_s = os.lstat(target), os.lstat(source)
    if (st_t.st_dev, st_t.st_ino) == (st_s.st_dev, st_s.st_ino):
        return
    if st_t.st_dev != st_s.st_dev:
        raise _Skip("on another file system than the copy kept; left alone")
    if st_t.st_size != st_s.st_size:
        raise _Skip("sizes differ; left alone")
    if dry_run:
        return
    for p in (source, target):
        if not _hash_ok(p, a.digest, verified):
            raise _Skip(f"{p} does not hash to {a.digest[:12]}; left alone (run hfcache verify)")
    tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.{uuid.uuid4().hex[:8]}.dedup")
    os.link(source, tmp)
    try:
        os.replace(tmp, target)
    except OSError:
        os.unlink(tmp)
        raise
