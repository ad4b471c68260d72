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

from hfcache.cache import durable
from hfcache.cache.names import BlobName, Commit, RefName, RelPath, XetHash
from hfcache.errors import UnsafePath, UsageError

REPO_TYPES = ("model", "dataset", "space", "kernel")
COMMIT_RE = re.compile(r"[0-9a-f]{40}")
TREE_FORMAT_VERSION = 1
MAX_TREE_BYTES = 64 * 1024 * 1024  # a listing of ~400k files; a larger trees/*.json is ignored as unreadable
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
            # huggingface_hub's words are for its Python API ("Use `repo_type` argument"): say the CLI's
            reason = str(e).splitlines()[0].replace("Use `repo_type` argument if needed.",
                                                    "For a dataset, space or kernel, use --repo-type or TYPE:ORG/NAME.")
            raise UsageError(f"invalid repo id {self.repo_id!r}: {reason}") from None

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
        """One entry of a `trees/*.json` listing (a file anyone may have written): checked like a server's."""
        return cls.checked(info["size"], info["blob_id"], info.get("lfs_sha256"), info.get("lfs_size"),
                           info.get("xet_hash"))

    @classmethod
    def checked(cls, size: object, blob_id: object, lfs_sha256: object = None, lfs_size: object = None,
                xet_hash: object = None) -> FileMeta:
        """Metadata from outside (a server's listing, a tree file): every name that becomes a path is a checked
        name (`blobs/<etag>` cannot be `.` or `../other-repo/blobs/x`), every size a non-negative int."""
        for what, n in (("size", size), ("lfs size", lfs_size)):
            if (n is not None or what == "size") and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
                raise UnsafePath(f"refusing file {what} {n!r}")
        if lfs_sha256 is not None and not XetHash.check(lfs_sha256):  # same shape: 64 lowercase hex
            raise UnsafePath(f"refusing LFS sha256 {lfs_sha256!r} (expected 64 lowercase hex characters)")
        return cls(size=size, blob_id=BlobName(blob_id), lfs_sha256=lfs_sha256, lfs_size=lfs_size,
                   xet_hash=None if xet_hash is None else XetHash(xet_hash))


def parse_tree(data: bytes) -> dict[str, FileMeta] | None:
    """A `trees/<commit>.json` listing's files, every path and blob name checked; None for another format.
    Raises ValueError/KeyError/TypeError/AttributeError for what is not a listing, `UnsafePath` for a bad name."""
    parsed = json.loads(data)
    if parsed.get("format_version") != TREE_FORMAT_VERSION:
        return None
    return {RelPath(path): FileMeta.from_json(info) for path, info in parsed["files"].items()}


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


class Folder:
    """Each folder name of the layout, spelled once. Code that walks a cache with plain strings for speed (scan,
    reclaim) joins these and the functions below, never its own literals."""

    BLOBS = "blobs"  # in a repo folder: its blobs; at the cache root: the shared store (with its marker)
    SNAPSHOTS = "snapshots"
    REFS = "refs"
    TREES = "trees"
    NO_EXIST = ".no_exist"
    LOCKS = ".locks"  # at the cache root, one folder per repo folder
    LOCK_SUFFIX = ".lock"
    STORE_REFS_SUFFIX = ".refs"  # beside a shared-store entry: which repo blobs link to it


class HubCache:
    """One hub cache folder: paths, refs, tree listings, markers, locks and links."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = (Path(root).expanduser() if root is not None else default_cache_dir()).absolute()
        self._symlinks: bool | None = None
        self._lock_dirs: set[Path] = set()

    # -- paths -------------------------------------------------------------------------------------------------
    def repo_dir(self, repo: RepoRef) -> Path:
        return self.root / repo.folder_name

    def blobs_dir(self, repo: RepoRef) -> Path:
        return self.repo_dir(repo) / Folder.BLOBS

    def snapshots_dir(self, repo: RepoRef) -> Path:
        return self.repo_dir(repo) / Folder.SNAPSHOTS

    def refs_dir(self, repo: RepoRef) -> Path:
        return self.repo_dir(repo) / Folder.REFS

    def no_exist_dir(self, repo: RepoRef, commit: str) -> Path:
        return self.repo_dir(repo) / Folder.NO_EXIST / Commit(commit)

    def locks_dir(self, repo: RepoRef | None = None) -> Path:
        """`.locks/`, or one repo's folder in it."""
        return self.root / Folder.LOCKS / repo.folder_name if repo is not None else self.root / Folder.LOCKS

    def store_dir(self) -> Path:
        return self.root / Folder.BLOBS

    def store_blob_path(self, xet_hash: str) -> Path:
        h = XetHash(xet_hash)
        return self.store_dir() / h[:2] / h

    # Every path is built from checked names (`hfcache.cache.names`): a str that is not one is checked here.
    def blob_path(self, repo: RepoRef, etag: str) -> Path:
        return self.blobs_dir(repo) / BlobName(etag)

    def snapshot_dir(self, repo: RepoRef, commit: str) -> Path:
        return self.snapshots_dir(repo) / Commit(commit)

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
        from filelock import FileLock, SoftFileLock, Timeout

        path = self.lock_path(repo, etag)
        if path.parent not in self._lock_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_dirs.add(path.parent)
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
            from huggingface_hub.file_download import are_symlinks_supported

            self._symlinks = are_symlinks_supported(self.root)
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


# -- reclaim and scan: partial names and plain-string paths ---------------------------------------------------------
# `scan` and `reclaim` handle many paths per run: these take and return plain `str` (no Path objects, no checks;
# the names come from listing the cache itself), and are the one place their shapes are spelled.
def is_partial_name(name: str) -> bool:
    """A partial download or its progress record in `blobs/`, any tool's (see `partial_of`)."""
    return partial_of(name) is not None


def partial_etag(name: str) -> str:
    """The blob a partial-download file in `blobs/` belongs to (its lock is that blob's lock)."""
    found = partial_of(name)
    return found[0] if found is not None else name.split(".", 1)[0]


def repo_blobs_dir(repo_path: str) -> str:
    return f"{repo_path}/{Folder.BLOBS}"


def repo_snapshots_dir(repo_path: str) -> str:
    return f"{repo_path}/{Folder.SNAPSHOTS}"


def repo_snapshot_dir(repo_path: str, commit: str) -> str:
    return f"{repo_path}/{Folder.SNAPSHOTS}/{commit}"


def repo_refs_dir(repo_path: str) -> str:
    return f"{repo_path}/{Folder.REFS}"


def repo_ref_path(repo_path: str, ref: str) -> str:
    return f"{repo_path}/{Folder.REFS}/{ref}"


def repo_tree_path(repo_path: str, commit: str) -> str:
    return f"{repo_path}/{Folder.TREES}/{commit}.json"


def repo_no_exist_root(repo_path: str) -> str:
    return f"{repo_path}/{Folder.NO_EXIST}"


def repo_no_exist_dir(repo_path: str, commit: str) -> str:
    return f"{repo_no_exist_root(repo_path)}/{commit}"


def cache_locks_dir(hub_root: str) -> str:
    return f"{hub_root}/{Folder.LOCKS}"


def repo_locks_dir(hub_root: str, repo_path: str) -> str:
    """`<cache>/.locks/<repo folder>`."""
    return f"{cache_locks_dir(hub_root)}/{os.path.basename(repo_path)}"


def blob_lock_of(blob_file: str) -> str:
    """The lock of the blob a `blobs/` entry (the blob, or a partial of it) belongs to:
    `<cache>/<folder>/blobs/<etag>[...]` -> `<cache>/.locks/<folder>/<etag>.lock`."""
    repo_path = os.path.dirname(os.path.dirname(blob_file))
    return repo_lock_of(os.path.dirname(repo_path), repo_path, partial_etag(os.path.basename(blob_file)))


def repo_lock_of(hub_root: str, repo_path: str, etag: str) -> str:
    return f"{repo_locks_dir(hub_root, repo_path)}/{etag}{Folder.LOCK_SUFFIX}"


def store_root_of(store_file: str) -> str:
    """The cache a shared-store payload `<cache>/blobs/<xx>/<hash>` belongs to."""
    return os.path.dirname(os.path.dirname(os.path.dirname(store_file)))


def store_manifest_of(store_file: str) -> str:
    """The `.refs` manifest huggingface_hub keeps beside a shared-store payload."""
    return f"{store_file}{Folder.STORE_REFS_SUFFIX}"
