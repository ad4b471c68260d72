"""The cache layout `huggingface_hub` 2.x reads and writes, and nothing else.

    <cache>/CACHEDIR.TAG
    <cache>/.locks/<repo-folder>/<etag>.lock
    <cache>/<type>s--<org>--<name>/blobs/<etag>
                                 /refs/<revision>                   commit sha, no newline
                                 /snapshots/<commit>/<path>         relative symlink to ../../blobs/<etag>
                                 /trees/<commit>.json               tree listing, format_version 1
                                 /.no_exist/<commit>/<path>         empty marker: the Hub says no such file

Every write is atomic (temporary name, then `os.replace`), so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hfcache.cache import durable, flock
from hfcache.cache.meta import MAX_TREE_BYTES, TREE_FORMAT_VERSION, FileMeta, parse_tree
from hfcache.cache.names import BlobName, Commit, RefName, RelPath, XetHash, repo_id_problem
from hfcache.cache.paths import (
    Folder,
    PartialPaths,
    XetPartialPaths,
    partial_of,
    partial_paths,
    xet_partial_paths,
)
from hfcache.errors import UnsafePath, UsageError

REPO_TYPES = ("model", "dataset", "space", "kernel")
COMMIT_RE = re.compile(r"[0-9a-f]{40}")
CACHEDIR_TAG_CONTENT = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by huggingface_hub.\n"
    "# For information about cache directory tags, see:\n"
    "#\thttps://bford.info/cachedir/\n"
)


def is_commit(revision: str) -> bool:
    return Commit.check(revision)


@dataclass(frozen=True)
class RepoRef:
    """A repo on a Hub: its id and type."""

    repo_id: str
    repo_type: str = "model"

    def __post_init__(self) -> None:
        if self.repo_type not in REPO_TYPES:
            raise UsageError(f"unknown repo type {self.repo_type!r} (expected one of {', '.join(REPO_TYPES)})")
        problem = repo_id_problem(self.repo_id)  # huggingface_hub's rules, without importing its HTTP stack
        if problem is not None:
            # huggingface_hub's words are for its Python API ("Use `repo_type` argument"): say the CLI's
            cli_words = "For a dataset, space or kernel, use --repo-type or TYPE:ORG/NAME."
            reason = problem.splitlines()[0].replace("Use `repo_type` argument if needed.", cli_words)
            raise UsageError(f"invalid repo id {self.repo_id!r}: {reason}")

    @property
    def folder_name(self) -> str:
        """`huggingface_hub`'s `repo_folder_name`, spelled with its own separator (the function itself sits in a
        module whose import costs 0.2 s; tests/test_structure.py checks both agree)."""
        from huggingface_hub import constants

        return constants.REPO_ID_SEPARATOR.join([f"{self.repo_type}s", *self.repo_id.split("/")])

    @property
    def url_prefix(self) -> str:
        """Path prefix of resolve URLs: models have none, others their plural type."""
        from huggingface_hub import constants

        return constants.REPO_TYPES_URL_PREFIXES.get(self.repo_type, "")

    @classmethod
    def from_folder_name(cls, name: str, validate: bool = True) -> RepoRef | None:
        """Inverse of `folder_name`; None for folders that are not repos. `validate=False` skips the repo-id
        rules, as `huggingface_hub`'s cache scan does (and saves importing them when scanning many folders)."""
        from huggingface_hub import constants

        parts = name.split(constants.REPO_ID_SEPARATOR)
        if len(parts) < 2 or constants.REPO_TYPES_MAPPING.get(parts[0]) not in REPO_TYPES or "" in parts:
            return None
        if not validate:
            ref = object.__new__(cls)
            object.__setattr__(ref, "repo_id", "/".join(parts[1:]))
            object.__setattr__(ref, "repo_type", parts[0][:-1])
            return ref
        try:
            return cls("/".join(parts[1:]), parts[0][:-1])
        except UsageError:
            return None

    def __str__(self) -> str:
        return self.repo_id if self.repo_type == "model" else f"{self.repo_type}:{self.repo_id}"


def parse_repo_spec(spec: str, repo_type: str | None = None) -> tuple[RepoRef, RefName | None]:
    """`REPO_ID[@REV]` or `TYPE:REPO_ID[@REV]`, as every command takes a repo and as repos are shown (a repo id holds
    no `@` or `:`). The one parser of them: the repo id and the revision are checked here, where they enter."""
    name, rtype = spec, repo_type or "model"
    if ":" in name.split("@", 1)[0]:
        rtype, name = name.split(":", 1)
    repo_id, sep, rev = name.partition("@")
    if sep and not rev:
        raise UsageError(f"{spec!r}: nothing after '@' (expected REPO_ID@REVISION)")
    return RepoRef(repo_id, rtype), RefName(rev) if rev else None


def safe_relpath(name: str) -> RelPath:
    """Check a repo-relative file name from a server or bundle; refuse anything that could leave its folder."""
    return RelPath(name)


def check_revision(revision: str) -> RefName:
    """A revision names a file under `refs/`: refuse what is empty or could leave that folder."""
    return RefName(revision)


def default_cache_dir() -> Path:
    """The hub cache as `huggingface_hub` resolves it (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME, ~)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _atomic_write(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename, fsync the folder: after a crash or power loss, the old bytes or the new, never
    an empty file; and a failed write (a full disk) leaves no temp file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            durable.fsync_fd(f.fileno())
        durable.replace(tmp, path, synced=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _symlinks_supported(root: Path) -> bool:
    """`huggingface_hub.file_download.are_symlinks_supported`, step for step (its module imports the HTTP client,
    which an offline command must not pay for): HF_HUB_DISABLE_SYMLINKS, else a relative link tried in a temporary
    folder inside the cache. tests/test_structure.py checks both answer alike."""
    from huggingface_hub import constants

    if constants.HF_HUB_DISABLE_SYMLINKS:
        return False
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, ignore_cleanup_errors=True) as tmp:
        src, dst = Path(tmp) / "dummy_file_src", Path(tmp) / "dummy_file_dst"
        src.touch()
        try:
            os.symlink(os.path.relpath(src, start=os.path.dirname(dst)), dst)
        except OSError:
            return False
    return True


DIRS_REMEMBERED = 4096  # folders a HubCache remembers (a snapshot needs a few; a long-lived server, more names)


class HubCache:
    """One hub cache folder: paths, refs, tree listings, markers, locks and links."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = (Path(root).expanduser() if root is not None else default_cache_dir()).absolute()
        self._symlinks: bool | None = None
        self._lock_dirs: set[Path] = set()
        # folders already built, by (kind, repo[, commit]): a snapshot of 2,000 small files asks for the same few
        # folders ~10,000 times, and each `Path /` costs more than the file's link
        self._dirs: dict[tuple, Path] = {}

    def _dir(self, key: tuple, make: Callable[[], Path]) -> Path:
        d = self._dirs.get(key)
        if d is None:
            if len(self._dirs) >= DIRS_REMEMBERED:  # a server asked for ever new repo names: memory stays bounded
                self._dirs.clear()
            d = self._dirs[key] = make()
        return d

    # -- paths -------------------------------------------------------------------------------------------------
    def repo_dir(self, repo: RepoRef) -> Path:
        return self._dir(("repo", repo), lambda: self.root / repo.folder_name)

    def blobs_dir(self, repo: RepoRef) -> Path:
        return self._dir(("blobs", repo), lambda: self.repo_dir(repo) / Folder.BLOBS)

    def snapshots_dir(self, repo: RepoRef) -> Path:
        return self._dir(("snapshots", repo), lambda: self.repo_dir(repo) / Folder.SNAPSHOTS)

    def refs_dir(self, repo: RepoRef) -> Path:
        return self.repo_dir(repo) / Folder.REFS

    def no_exist_dir(self, repo: RepoRef, commit: str) -> Path:
        return self.repo_dir(repo) / Folder.NO_EXIST / Commit(commit)

    def locks_dir(self, repo: RepoRef | None = None) -> Path:
        """`.locks/`, or one repo's folder in it."""
        if repo is None:
            return self.root / Folder.LOCKS
        return self._dir(("locks", repo), lambda: self.root / Folder.LOCKS / repo.folder_name)

    def store_dir(self) -> Path:
        return self.root / Folder.BLOBS

    def store_blob_path(self, xet_hash: str) -> Path:
        h = XetHash(xet_hash)
        return self.store_dir() / h[:2] / h

    # Every path is built from checked names (`hfcache.cache.names`): a str that is not one is checked here.
    def blob_path(self, repo: RepoRef, etag: str) -> Path:
        return self.blobs_dir(repo) / BlobName(etag)

    def snapshot_dir(self, repo: RepoRef, commit: str) -> Path:
        return self._dir(("snapshot", repo, commit), lambda: self.snapshots_dir(repo) / Commit(commit))

    def pointer_path(self, repo: RepoRef, commit: str, filename: str) -> Path:
        return self.snapshot_dir(repo, commit).joinpath(*RelPath(filename).parts)

    def ref_path(self, repo: RepoRef, revision: str) -> Path:
        return self.refs_dir(repo) / RefName(revision)

    def tree_path(self, repo: RepoRef, commit: str) -> Path:
        return self.repo_dir(repo) / Folder.TREES / f"{Commit(commit)}.json"

    def no_exist_path(self, repo: RepoRef, commit: str, filename: str) -> Path:
        return self.no_exist_dir(repo, commit).joinpath(*RelPath(filename).parts)

    def lock_path(self, repo: RepoRef, etag: str) -> Path:
        return self.locks_dir(repo) / f"{BlobName(etag)}{Folder.LOCK_SUFFIX}"

    # -- refs and listings -------------------------------------------------------------------------------------
    def read_ref(self, repo: RepoRef, revision: str) -> str | None:
        try:
            commit = self.ref_path(repo, revision).read_text().strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        return commit if is_commit(commit) else None

    def write_ref(self, repo: RepoRef, revision: str, commit: str) -> None:
        """Record what a branch or tag points to; a commit needs no ref, an unchanged ref is not rewritten."""
        if revision == commit or self.read_ref(repo, revision) == commit:
            return
        _atomic_write(self.ref_path(repo, revision), commit.encode())

    def read_tree(self, repo: RepoRef, commit: str) -> dict[str, FileMeta] | None:
        """The listing, or None when there is none or it cannot be used: unreadable, too large, or naming a path
        or blob that is not a checked name. huggingface_hub ignores an unusable listing too (and lists again),
        so a planted one is never a source of paths, and the next online run replaces it."""
        try:
            path = self.tree_path(repo, commit)
            if path.stat().st_size > MAX_TREE_BYTES:
                return None
            return parse_tree(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, UnsafePath):
            return None

    def write_tree(self, repo: RepoRef, commit: str, files: dict[str, FileMeta]) -> None:
        """Same bytes as `huggingface_hub._tree_cache.write_tree_cache`: sorted paths, `indent=1`."""
        data = {"format_version": TREE_FORMAT_VERSION, "files": {p: files[p].to_json() for p in sorted(files)}}
        path = self.tree_path(repo, commit)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def mark_no_exist(self, repo: RepoRef, commit: str, filename: str) -> None:
        marker = self.no_exist_path(repo, commit, filename)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()

    def ensure_tag(self) -> None:
        tag = self.root / "CACHEDIR.TAG"
        if not tag.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            _atomic_write(tag, CACHEDIR_TAG_CONTENT.encode())

    def check_inside(self, *folders: Path) -> None:
        """Refuse to write through a link that leads out of the cache (a planted `blobs` link, say)."""
        root = os.path.realpath(self.root)
        for folder in folders:
            probe = Path(folder)
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            real = os.path.realpath(probe)
            if real != root and not real.startswith(root + os.sep):
                raise UnsafePath(f"refusing to write through {folder}: it leads outside the cache ({real})")

    # -- locks and links ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, repo: RepoRef, etag: str, timeout: float = -1,
             on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """The per-blob lock `huggingface_hub` takes (same file, mode 0o664), so both tools exclude each other.

        Where `flock` is missing (some network file systems), a soft lock, as `huggingface_hub` falls back to.
        filelock's own fallback is off: it costs a probe file per lock, which doubles a small file's cost.
        `on_wait` is called once when the lock is not free at once (another process is downloading the blob), so
        a caller can say why it waits; the waiting itself is unchanged.
        """
        path = self.lock_path(repo, etag)
        if path.parent not in self._lock_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_dirs.add(path.parent)
        if flock.AVAILABLE:
            try:
                fd = flock.acquire(str(path), timeout, on_wait)
            except flock.LockTimeout:
                from filelock import Timeout

                raise Timeout(str(path)) from None
            except OSError as e:
                if e.errno not in flock.NO_FLOCK:
                    raise
            else:
                try:
                    yield
                finally:
                    flock.release(fd)
                return
        with self._filelock(path, timeout, on_wait):
            yield

    @staticmethod
    @contextlib.contextmanager
    def _filelock(path: Path, timeout: float, on_wait: Callable[[], None] | None) -> Iterator[None]:
        """filelock's lock: where `fcntl` is missing (Windows), or a soft lock where `flock` is."""
        from filelock import FileLock, SoftFileLock, Timeout

        lock = FileLock(path, mode=0o664, timeout=timeout, thread_local=False, fallback_to_soft=False)
        try:
            if on_wait is None or timeout == 0:
                lock.acquire()
            else:
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    on_wait()
                    lock.acquire()
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            lock = SoftFileLock(path, timeout=timeout)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def symlinks_supported(self) -> bool:
        """`huggingface_hub`'s own probe of this cache folder (HF_HUB_DISABLE_SYMLINKS forces the copy layout), so
        both tools pick the same layout for the same folder."""
        if self._symlinks is None:
            self._symlinks = _symlinks_supported(self.root)
        return self._symlinks

    def link(self, repo: RepoRef, commit: str, filename: str, etag: str, new_blob: bool,
             make_parent: bool = True, pointer: Path | None = None) -> Path:
        """Make `snapshots/<commit>/<filename>` point at `blobs/<etag>` with a relative link.

        Without symlinks, as `huggingface_hub` does: a blob fetched just now is moved into place, an older one
        is copied (atomically, so a partial copy is never visible).
        """
        pointer = pointer or self.pointer_path(repo, commit, filename)
        blob = self.blob_path(repo, etag)
        if make_parent:
            pointer.parent.mkdir(parents=True, exist_ok=True)
        if self.symlinks_supported():
            target = os.path.relpath(blob, pointer.parent)
            try:
                os.symlink(target, pointer)
            except FileExistsError:  # replace whatever is there (a broken link, say) atomically
                tmp = pointer.with_name(f".{pointer.name}.{uuid.uuid4().hex[:8]}.tmp")
                os.symlink(target, tmp)
                os.replace(tmp, pointer)
        elif new_blob:
            os.replace(blob, pointer)
        else:
            tmp = pointer.with_name(f".{pointer.name}.{uuid.uuid4().hex[:8]}.tmp")
            shutil.copyfile(blob, tmp)
            durable.fsync_file(tmp)
            os.replace(tmp, pointer)
        return pointer

    # -- partial downloads (fetch) -----------------------------------------------------------------------------
    def partial_paths(self, repo: RepoRef, etag: str) -> PartialPaths:
        """The resumable partial of `blobs/<etag>`, its record and the record's temp name."""
        return partial_paths(self.blob_path(repo, etag))

    # -- safety (verify --safety, inspect) ---------------------------------------------------------------------
    def safety_verdicts_path(self) -> Path:
        """Remembered safety verdicts. Outside the hub cache, so `huggingface_hub.scan_cache_dir` (which calls
        anything at the cache root a corrupted repo) and `hfcache scan` never see it: HF_HOME/hfcache/. Keys are
        a file's identity (blob hash, size, times), so one store serves every cache."""
        from huggingface_hub import constants

        return Path(constants.HF_HOME) / "hfcache" / "safety-verdicts.sqlite"


    def partials(self, repo: RepoRef) -> dict[str, list[tuple[Path, str]]]:
        """Every partial-download file in the repo's `blobs/` (any tool's), by blob name, with its role
        (`partial_of`). One listing: asking per blob would cost a directory listing per file."""
        found: dict[str, list[tuple[Path, str]]] = {}
        blobs = self.repo_dir(repo) / "blobs"
        try:
            entries = list(os.scandir(blobs))
        except OSError:
            return found
        for e in entries:
            hit = partial_of(e.name)
            if hit is not None and BlobName.check(hit[0]):
                found.setdefault(hit[0], []).append((Path(e.path), hit[1]))
        return found

    # -- xet (the Xet download path, hfcache.xet) --------------------------------------------------------------
    def xet_partial_paths(self, repo: RepoRef, etag: str) -> XetPartialPaths:
        """Where a Xet download of `blobs/<etag>` is rebuilt, and its record of the chunks written."""
        return xet_partial_paths(self.blob_path(repo, etag))

    def xet_index_path(self) -> Path:
        """hfcache's index of the Xet chunks already on disk (dedup across files and revisions). Outside the hub
        cache, like the safety verdicts, so huggingface_hub's cache scan never sees it; entries name absolute
        paths, each checked (size, mtime, chunk hash) before use, so one index serves every cache."""
        from huggingface_hub import constants

        return Path(constants.HF_HOME) / "hfcache" / "xet-chunks.sqlite"
