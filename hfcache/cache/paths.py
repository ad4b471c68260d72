"""The shapes of names inside a hub cache: folder names, partial-download names, lock paths, as plain values.

`HubCache` (in `layout`) builds typed paths from checked names on these; `scan` and `reclaim`, which handle many
paths per run, use the plain-string functions here. Either way a shape is spelled in this one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
_XET = ".hfcache-xet.incomplete"  # <etag>.hfcache-xet.incomplete: a Xet download, resumable from its chunks
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


@dataclass(frozen=True)
class XetPartialPaths:
    """A Xet download's partial (`<etag>.hfcache-xet.incomplete`, rebuilt in file order) and its record of the
    chunks written (`….incomplete.chunks`): partials by `partial_of`'s rules, so every tool treats them as
    leftovers, and names apart from the HTTP path's, whose record has another format."""

    blob: Path
    path: Path
    record: Path


def xet_partial_paths(blob: Path) -> XetPartialPaths:
    name = blob.name
    return XetPartialPaths(blob, blob.with_name(f"{name}{_XET}"), blob.with_name(f"{name}{_XET}.chunks"))


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


def staging_path(blob: Path, purpose: str) -> Path:
    """A private name beside `blobs/<etag>` where an import or a conversion stages the blob's bytes:
    `<etag>.<purpose>-<8 hex>.incomplete`, a partial by `partial_of`'s rules, so every tool treats it as a leftover."""
    return blob.with_name(f"{blob.name}.{purpose}-{os.urandom(4).hex()}{PARTIAL_SUFFIX}")


def staging_etag(name: str, purpose: str) -> str | None:
    """The blob a staging file of `purpose` (see `staging_path`) belongs to, or None if `name` is not one."""
    etag, sep, rest = name.partition(f".{purpose}-")
    return etag if sep and rest.endswith(PARTIAL_SUFFIX) else None


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


def store_dir_of(hub_root: str) -> str:
    """huggingface_hub 2.x's shared blob store, `<cache>/blobs/` (entries `<xx>/<xet hash>`)."""
    return f"{hub_root}/{Folder.BLOBS}"


def store_root_of(store_file: str) -> str:
    """The cache a shared-store payload `<cache>/blobs/<xx>/<hash>` belongs to."""
    return os.path.dirname(os.path.dirname(os.path.dirname(store_file)))


def store_manifest_of(store_file: str) -> str:
    """The `.refs` manifest huggingface_hub keeps beside a shared-store payload."""
    return f"{store_file}{Folder.STORE_REFS_SUFFIX}"
