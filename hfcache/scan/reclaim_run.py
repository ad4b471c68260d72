"""Acting on a reclaim plan (`reclaim.Plan`) made moments, or minutes, earlier.

Between the plan and the act another process may have started a download, linked a blob into a new snapshot,
moved a ref or resumed a partial file. So each item is re-checked when it is acted on, under the lock
huggingface_hub and hfcache take for that blob (`.locks/<repo folder>/<etag>.lock`):

- a lock another process holds means a download or link is under way: the item is left alone;
- a file whose (inode, size, mtime) differ from the plan's, a blob a snapshot links to now, a revision a ref
  names now, a repo with a revision the plan did not know: left alone.

Each such item is reported in `Outcome.skipped` with the reason (not an error: nothing failed, and a later run
picks it up). Shared-store files are removed only by huggingface_hub's own `sweep_shared_blob`, which reads
their `.refs` manifest under the store's lock.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from hfcache.cache import hfhub
from hfcache.cache.hashing import hash_file, kind_of
from hfcache.cache.layout import is_commit
from hfcache.cache.paths import Folder, lock_held, repo_blobs_dir, repo_refs_dir, repo_snapshots_dir, store_root_of
from hfcache.scan.reclaim import Action, Outcome, Plan, refs_by_commit, signature

LOCK_BATCH = 256  # blob locks held at once while one walk of a repo's snapshots re-checks their use


class _Skip(Exception):
    """An item left alone (in use, or changed since the plan): reported, not an error."""


class _Refused(Exception):
    """An item that could not be acted on for a reason a person should look at (an error)."""


def execute(plan: Plan, dry_run: bool) -> Outcome:
    """Run the plan in order, or (dry run) go through the same steps touching nothing."""
    run = _Run(dry_run)
    actions = plan.actions
    i = 0
    while i < len(actions):
        a = actions[i]
        if a.kind == "blob" and not dry_run:  # consecutive blobs of one repo: checked in batches
            j = i
            while (j < len(actions) and j - i < LOCK_BATCH and actions[j].kind == "blob"
                   and _repo_of(actions[j]) == _repo_of(a)):
                j += 1
            run.blobs(actions[i:j])
            i = j
            continue
        run.one(a)
        i += 1
    if not dry_run:
        for d in plan.cleanup_dirs:
            _remove_empty_dirs(d)
    return Outcome(plan, dry_run, run.done, run.freed, tuple(run.errors), tuple(run.skipped))


class _Run:
    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.done = self.freed = 0
        self.errors: list[str] = []
        self.skipped: list[str] = []
        self.verified: dict[str, bool] = {}

    def one(self, a: Action) -> None:
        try:
            if a.kind == "link":
                with _held(a.lock, self.dry_run):
                    self._unchanged(a)
                    _relink(a, self.dry_run, self.verified)
            elif self.dry_run:
                pass
            elif a.kind == "store_blob":
                self._unchanged(a)
                if hfhub.sweep_shared_blob(Path(a.paths[0]), Path(store_root_of(a.paths[0]))) == 0:
                    raise _Skip("kept by huggingface_hub's sweep: its .refs manifest names a link again")
            elif a.kind == "repo":
                self._repo(a)
            elif a.kind == "revision":
                self._revision(a)
            else:
                self._leftover(a)
        except _Skip as e:
            self.skipped.append(f"{a.label}: {e}")
            return
        except (OSError, _Refused) as e:
            self.errors.append(f"{a.label}: {e}")
            return
        self.done += 1
        self.freed += a.bytes

    # -- checks --------------------------------------------------------------------------------------------------
    @staticmethod
    def _unchanged(a: Action) -> None:
        if a.sig and signature(a.paths[0]) != a.sig:
            raise _Skip("changed since the plan (written to, replaced or removed); left alone")

    def _repo(self, a: Action) -> None:
        snaps = {n for n in _listdir(repo_snapshots_dir(a.repo_path)) if is_commit(n)}  # revisions, as scan counts
        new = sorted(snaps - set(a.commits))
        if new:
            raise _Skip(f"has a revision the plan did not know ({new[0][:12]}): changed since the plan")
        locks = a.paths[1] if len(a.paths) > 1 else ""
        busy = [n for n in sorted(_listdir(locks)) if lock_held(os.path.join(locks, n))] if locks else []
        if busy:
            raise _Skip(f"in use: another process holds the lock {busy[0]} (a download under way)")
        for p in a.paths:
            _remove(p)

    def _revision(self, a: Action) -> None:
        commit = a.commits[0]
        now = refs_by_commit(a.repo_path).get(commit, [])
        refs_dir = repo_refs_dir(a.repo_path) + os.sep
        planned = {os.path.relpath(p, refs_dir).replace(os.sep, "/") for p in a.paths if p.startswith(refs_dir)}
        added = sorted(set(now) - planned)
        if added:
            raise _Skip(f"ref {added[0]} names it now: changed since the plan")
        for p in a.paths:
            if p.startswith(refs_dir) and os.path.relpath(p, refs_dir).replace(os.sep, "/") not in now:
                if os.path.lexists(p):  # the ref moved to another commit since the plan: it stays
                    self.skipped.append(f"{a.label}: ref {os.path.relpath(p, refs_dir)} moved since the plan; kept")
                continue
            _remove(p)

    def _leftover(self, a: Action) -> None:
        if a.repo_path and a.commits:  # metadata or refs of a commit: only while it still has no snapshot
            commit = a.commits[0]
            if os.path.isdir(os.path.join(repo_snapshots_dir(a.repo_path), commit)):
                raise _Skip(f"{commit[:12]} has a snapshot now: changed since the plan")
            refs_dir = repo_refs_dir(a.repo_path) + os.sep
            named = set(refs_by_commit(a.repo_path).get(commit, []))
            for p in a.paths:
                if p.startswith(refs_dir) and os.path.relpath(p, refs_dir).replace(os.sep, "/") not in named:
                    raise _Skip("a ref moved since the plan; left alone")
        with _held(a.lock, False):
            self._unchanged(a)
            for p in a.paths:
                _remove(p)

    # -- blobs -----------------------------------------------------------------------------------------------------
    def blobs(self, batch: list[Action]) -> None:
        """Repo blobs of one repo: each under its lock, after one walk of the repo's snapshots (taken while the
        locks are held, so no download can link a blob between the check and the delete)."""
        with contextlib.ExitStack() as stack:
            held: list[Action] = []
            for a in batch:
                try:
                    stack.enter_context(_held(a.lock, False))
                except _Skip as e:
                    self.skipped.append(f"{a.label}: {e}")
                    continue
                held.append(a)
            used = _linked_blobs(_repo_of(batch[0])) if held else set()
            for a in held:
                try:
                    self._unchanged(a)
                    if os.path.basename(a.paths[0]) in used:
                        raise _Skip("a snapshot links to it now: changed since the plan")
                    for p in a.paths:
                        _remove(p)
                    _unlink_held(a.lock)  # useless once its blob is gone; we hold it, so no one is using it
                except _Skip as e:
                    self.skipped.append(f"{a.label}: {e}")
                    continue
                except OSError as e:
                    self.errors.append(f"{a.label}: {e}")
                    continue
                self.done += 1
                self.freed += a.bytes


def _repo_of(a: Action) -> str:
    return os.path.dirname(os.path.dirname(a.paths[0]))


def _listdir(path: str) -> set[str]:
    try:
        return set(os.listdir(path))
    except OSError:
        return set()


def _linked_blobs(repo_path: str) -> set[str]:
    """Names in `blobs/` that a snapshot of this repo links to now."""
    blobs = repo_blobs_dir(repo_path)
    out: set[str] = set()
    for dirpath, _dirs, names in os.walk(repo_snapshots_dir(repo_path)):
        for n in names:
            p = os.path.join(dirpath, n)
            try:
                target = os.readlink(p)
            except OSError:
                continue
            full = os.path.normpath(os.path.join(dirpath, target))
            if os.path.dirname(full) == blobs:
                out.add(os.path.basename(full))
    return out


# -- locks -----------------------------------------------------------------------------------------------------------
_CREATED: set[str] = set()  # lock files this run created to check an item (removed again if it stays)


@contextlib.contextmanager
def _held(path: str, dry_run: bool) -> Iterator[None]:
    """Hold a blob's lock for the body, or raise `_Skip` if another process holds it. No lock path: nothing."""
    if not path or dry_run:
        yield
        return
    from filelock import FileLock, Timeout

    existed = os.path.lexists(path)
    if not existed and not os.path.isdir(os.path.dirname(path)):
        yield  # no lock folder: no process has ever locked a blob of this repo here
        return
    lock = FileLock(path, mode=0o664, timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise _Skip("in use: another process holds its lock (a download under way)") from None
    except OSError as e:
        raise _Skip(f"its lock cannot be taken ({e.strerror}); left alone") from None
    if not existed:
        _CREATED.add(path)
    try:
        yield
    finally:
        if path in _CREATED:
            _CREATED.discard(path)
            with contextlib.suppress(OSError):
                os.unlink(path)
        lock.release()


def _unlink_held(path: str) -> None:
    if path:
        _CREATED.discard(path)
        with contextlib.suppress(OSError):
            os.unlink(path)


# -- removal ---------------------------------------------------------------------------------------------------------
def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if os.path.basename(os.path.dirname(path)) == Folder.LOCKS:
            _remove_locks(path)
        else:
            shutil.rmtree(path)
    elif stat.S_ISREG(st.st_mode) and path.endswith(Folder.LOCK_SUFFIX):
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

    lock = FileLock(path, timeout=0, thread_local=False)
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


# -- dedup -----------------------------------------------------------------------------------------------------------
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
        raise _Refused("on another file system than the copy kept; left alone")
    if st_t.st_size != st_s.st_size:
        raise _Refused("sizes differ; left alone")
    if dry_run:
        return
    for p in (source, target):
        if not _hash_ok(p, a.digest, verified):
            raise _Refused(f"{p} does not hash to {a.digest[:12]}; left alone (run hfcache verify)")
    tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.{uuid.uuid4().hex[:8]}.dedup")
    os.link(source, tmp)
    try:
        os.replace(tmp, target)
    except OSError:
        os.unlink(tmp)
        raise
