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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hfcache.cache import durable
from hfcache.cache.names import BlobName, Commit, RefName, RelPath
from hfcache.errors import UnsafePath, UsageError

REPO_TYPES = ("model", "dataset", "space", "kernel")
COMMIT_RE = re.compile(r"[0-9a-f]{40}")
TREE_FORMAT_VERSION = 1
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
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(self.repo_id)
        except HFValidationError as e:
            raise UsageError(f"invalid repo id {self.repo_id!r}: {str(e).splitlines()[0]}") from None

    @property
    def folder_name(self) -> str:
        return "--".join([f"{self.repo_type}s", *self.repo_id.split("/")])

    @property
    def url_prefix(self) -> str:
        """Path prefix of resolve URLs: models have none, others their plural type."""
        return "" if self.repo_type == "model" else f"{self.repo_type}s/"

    @classmethod
    def from_folder_name(cls, name: str, validate: bool = True) -> RepoRef | None:
        """Inverse of `folder_name`; None for folders that are not repos. `validate=False` skips the repo-id
        rules, as `huggingface_hub`'s cache scan does (and saves importing them when scanning many folders)."""
        parts = name.split("--")
        if len(parts) < 2 or not parts[0].endswith("s") or parts[0][:-1] not in REPO_TYPES or "" in parts:
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


@dataclass(frozen=True)
class FileMeta:
    """What the Hub says about one file at one commit; also one entry of `trees/<commit>.json`."""

    size: int
    blob_id: str
    lfs_sha256: str | None = None
    lfs_size: int | None = None
    xet_hash: str | None = None

    @property
    def etag(self) -> str:
        """The blob name: sha256 for LFS files, the git blob sha1 otherwise."""
        return self.lfs_sha256 or self.blob_id

    def to_json(self) -> dict:
        info: dict = {"size": self.size, "blob_id": self.blob_id}
        if self.lfs_sha256 is not None:
            info["lfs_sha256"] = self.lfs_sha256
            info["lfs_size"] = self.lfs_size
        if self.xet_hash is not None:
            info["xet_hash"] = self.xet_hash
        return info

    @classmethod
    def from_json(cls, info: dict) -> FileMeta:
        return cls(
            size=int(info["size"]),
            blob_id=info["blob_id"],
            lfs_sha256=info.get("lfs_sha256"),
            lfs_size=info.get("lfs_size"),
            xet_hash=info.get("xet_hash"),
        )


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


# -- partial downloads (fetch) -------------------------------------------------------------------------------------
# Partial files are named so that no huggingface_hub version touches them: 0.x and 1.x resume `<etag>.incomplete`
# by appending to whatever is there (a file we had truncated to full size became a zero-filled blob under a valid
# name), and 2.x writes `<etag>.<8 hex>.incomplete` (uuid4 hex) and probes the folder with `tmp_<uuid4>`. Ours carry
# `hfcache` where 2.x has hex, so no name of ours can be one of theirs. All end in `.incomplete` (or have
# `.incomplete.` inside), which every cache tool treats as a leftover, never as a blob.
PARTIAL_SUFFIX = ".incomplete"
_RESUMABLE = ".hfcache.incomplete"  # <etag>.hfcache.incomplete: a large file, resumable from its record
_RECORD = ".hfcache.incomplete.parts"  # its record of the bytes really written (see partfile.py)
_RECORD_TMP = ".hfcache-parts.incomplete"  # the record being replaced
_PRIVATE = ".hfcache-"  # <etag>.hfcache-<8 hex>.incomplete: a small file, one process's, never resumed
LEGACY_RESUMABLE = ".incomplete"  # <etag>.incomplete: huggingface_hub 0.x/1.x's partial, and hfcache's before
LEGACY_RECORD = ".incomplete.parts"  # hfcache's record before: proof that `<etag>.incomplete` is ours, not theirs
_LEGACY_RECORD_TMP = ".parts-tmp.incomplete"

# Roles `partial_of` tells apart.
RESUMABLE, RECORD, RECORD_TMP, PRIVATE = "resumable", "record", "record-tmp", "private"
FOREIGN_PRIVATE = "foreign-private"  # huggingface_hub 2.x's process-unique partial
LEGACY, LEGACY_RECORD_ROLE = "legacy", "legacy-record"
OTHER = "other"  # any other `<etag>.….incomplete` (an import's or a conversion's staging file)
COMPANIONS = frozenset({RECORD, LEGACY_RECORD_ROLE, RECORD_TMP})  # go with a partial, never reported alone
UNIQUE = frozenset({PRIVATE, FOREIGN_PRIVATE})  # one process's: garbage once that process no longer holds the lock
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class PartialPaths:
    """Where one blob's partial download lives: the resumable file, its record, the record's temp name."""

    blob: Path
    path: Path
    record: Path
    record_tmp: Path

    def private(self) -> Path:
        """A fresh process-unique name for a small file's partial (never resumed, so never shared)."""
        return self.blob.with_name(f"{self.blob.name}{_PRIVATE}{os.urandom(4).hex()}{PARTIAL_SUFFIX}")


def partial_paths(blob: Path) -> PartialPaths:
    """The partial-download paths of `blobs/<etag>` (a path `HubCache.blob_path` made)."""
    name = blob.name
    return PartialPaths(blob, blob.with_name(name + _RESUMABLE), blob.with_name(name + _RECORD),
                        blob.with_name(name + _RECORD_TMP))


def legacy_partial_paths(blob: Path) -> tuple[Path, Path]:
    """`<etag>.incomplete` and `<etag>.incomplete.parts`, as hfcache named them before (huggingface_hub 0.x/1.x
    resume from the first)."""
    return blob.with_name(blob.name + LEGACY_RESUMABLE), blob.with_name(blob.name + LEGACY_RECORD)


def partial_of(name: str) -> tuple[str, str] | None:
    """(blob name, role) when a file name in `blobs/` is a partial download or its record, any tool's; else None.

    Cheap enough for a scan of every blob: a blob name has no dot.
    """
    if "." not in name:
        return None
    etag, _, rest = name.partition(".")
    rest = "." + rest
    if rest == _RESUMABLE:
        return etag, RESUMABLE
    if rest == _RECORD:
        return etag, RECORD
    if rest in (_RECORD_TMP, _LEGACY_RECORD_TMP):
        return etag, RECORD_TMP
    if rest == LEGACY_RESUMABLE:
        return etag, LEGACY
    if rest == LEGACY_RECORD:
        return etag, LEGACY_RECORD_ROLE
    if not rest.endswith(PARTIAL_SUFFIX):
        return (etag, RECORD_TMP) if PARTIAL_SUFFIX + "." in rest else None  # a record's temp, any version's
    middle = rest[1:-len(PARTIAL_SUFFIX)]
    if middle.startswith(_PRIVATE[1:]) and len(middle) == len(_PRIVATE) - 1 + 8:
        return etag, PRIVATE
    if len(middle) == 8 and set(middle) <= _HEX:
        return etag, FOREIGN_PRIVATE
    return etag, OTHER


class HubCache:
    """One hub cache folder: paths, refs, tree listings, markers, locks and links."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = (Path(root).expanduser() if root is not None else default_cache_dir()).absolute()
        self._symlinks: bool | None = None
        self._lock_dirs: set[Path] = set()

    # -- paths -------------------------------------------------------------------------------------------------
    def repo_dir(self, repo: RepoRef) -> Path:
        return self.root / repo.folder_name

    # Every path is built from checked names (`hfcache.cache.names`): a str that is not one is checked here.
    def blob_path(self, repo: RepoRef, etag: str) -> Path:
        return self.repo_dir(repo) / "blobs" / BlobName(etag)

    def snapshot_dir(self, repo: RepoRef, commit: str) -> Path:
        return self.repo_dir(repo) / "snapshots" / Commit(commit)

    def pointer_path(self, repo: RepoRef, commit: str, filename: str) -> Path:
        return self.snapshot_dir(repo, commit).joinpath(*RelPath(filename).parts)

    def ref_path(self, repo: RepoRef, revision: str) -> Path:
        return self.repo_dir(repo) / "refs" / RefName(revision)

    def tree_path(self, repo: RepoRef, commit: str) -> Path:
        return self.repo_dir(repo) / "trees" / f"{Commit(commit)}.json"

    def no_exist_path(self, repo: RepoRef, commit: str, filename: str) -> Path:
        return self.repo_dir(repo).joinpath(".no_exist", Commit(commit), *RelPath(filename).parts)

    def lock_path(self, repo: RepoRef, etag: str) -> Path:
        return self.root / ".locks" / repo.folder_name / f"{BlobName(etag)}.lock"

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
        try:
            data = json.loads(self.tree_path(repo, commit).read_text(encoding="utf-8"))
            if data.get("format_version") != TREE_FORMAT_VERSION:
                return None
            return {path: FileMeta.from_json(info) for path, info in data["files"].items()}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
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
    def lock(self, repo: RepoRef, etag: str, timeout: float = -1) -> Iterator[None]:
        """The per-blob lock `huggingface_hub` takes (same file, mode 0o664), so both tools exclude each other.

        Where `flock` is missing (some network file systems), a soft lock, as `huggingface_hub` falls back to.
        filelock's own fallback is off: it costs a probe file per lock, which doubles a small file's cost.
        """
        from filelock import FileLock, SoftFileLock

        path = self.lock_path(repo, etag)
        if path.parent not in self._lock_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_dirs.add(path.parent)
        lock = FileLock(path, mode=0o664, timeout=timeout, thread_local=False, fallback_to_soft=False)
        try:
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
        """Probed once per cache, as `huggingface_hub` does; HF_HUB_DISABLE_SYMLINKS forces the copy layout."""
        if self._symlinks is None:
            from huggingface_hub import constants

            if constants.HF_HUB_DISABLE_SYMLINKS:
                self._symlinks = False
            else:
                self.root.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=self.root) as tmp:
                    src = Path(tmp) / "dummy_file_src"
                    src.touch()
                    try:
                        os.symlink("dummy_file_src", Path(tmp) / "dummy_file_dst")
                        self._symlinks = True
                    except OSError:
                        self._symlinks = False
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


def lock_held(path: str | os.PathLike[str]) -> bool:
    """Whether another process holds the lock now (a probe, released at once; unknown counts as free)."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
