"""What `scan` returns: frozen records, nothing printed (the renderers and `reclaim` read them).

Sizes are integers of bytes (`st_size`, so sparse files count at their apparent size, as `huggingface_hub` counts
them). Two kinds of totals exist on purpose:

- `size_on_disk` is `huggingface_hub`'s number (`scan_cache_dir`): per repo, the sum over the distinct blobs its
  snapshots point to; for the hub, blobs referenced by snapshots plus the shared store, except that a blob hard
  linked into several repos counts once here.
- `bytes` is the footprint: every regular file under the folder (orphans, partial downloads, `trees/` included),
  each inode once across the whole scan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PROBLEM_KINDS: dict[str, str] = {
    "dangling_link": "link whose target is missing",
    "link_outside_cache": "link that leaves the cache",
    "orphan_blob": "blob no snapshot points to",
    "incomplete": "unfinished download or build",
    "stale_lock": "lock files left behind (harmless, 0 bytes)",
    "missing_snapshot": "ref naming a commit with no snapshot",
    "snapshot_lacks_files": "snapshot lacks files its trees/ listing names",
    "duplicate": "same content stored twice",
    "orphan_metadata": "trees/, .no_exist or sidecar of something gone",
    "malformed": "entry the cache layout does not allow",
}


@dataclass(frozen=True)
class Problem:
    """One finding. `bytes` is what is at stake: freed by `fix` when it has one, else missing or exposed."""

    kind: str
    path: str
    bytes: int = 0
    detail: str = ""
    age: float | None = None
    repo: str | None = None
    fix: str | None = None  # "prune", "dedup" or None (needs a person, or a download)
    paths: tuple[str, ...] = ()  # duplicates: every copy of the content, the one to keep first
    digest: str = ""  # duplicates: the content hash (blob name) every copy must have
    count: int = 1  # how many findings this record stands for (a repo's stale locks are one record)


@dataclass(frozen=True)
class ProblemGroup:
    """All problems of one kind; `examples` holds every one in detail mode, the first few otherwise."""

    kind: str
    count: int
    bytes: int
    fixable_bytes: int
    examples: tuple[Problem, ...]

    @property
    def description(self) -> str:
        return PROBLEM_KINDS.get(self.kind, self.kind)


@dataclass(frozen=True)
class CachedFile:
    """A snapshot entry (kept only in detail mode). `blob` is what it points to, one hop, or itself if a copy."""

    path: str
    blob: str
    size: int
    linked: bool


@dataclass(frozen=True)
class Revision:
    commit: str
    refs: tuple[str, ...]
    nb_files: int
    size_on_disk: int
    last_accessed: float
    last_modified: float
    has_tree: bool = False
    lacks: int = 0  # files `trees/<commit>.json` names that the snapshot does not have
    no_exist: int = 0  # `.no_exist/<commit>/...` markers
    files: tuple[CachedFile, ...] | None = None

    @property
    def detached(self) -> bool:
        return not self.refs


@dataclass(frozen=True)
class Repo:
    repo_type: str
    repo_id: str
    path: str
    size_on_disk: int
    nb_files: int
    bytes: int
    last_accessed: float
    last_modified: float
    revisions: tuple[Revision, ...]
    orphan_bytes: int = 0
    incomplete_bytes: int = 0
    detached_bytes: int = 0  # freed by deleting the revisions no ref points to

    @property
    def cache_id(self) -> str:
        """`hf cache ls` spelling: `model/org/name`."""
        return f"{self.repo_type}/{self.repo_id}"

    @property
    def refs(self) -> tuple[str, ...]:
        return tuple(sorted(r for rev in self.revisions for r in rev.refs))


@dataclass(frozen=True)
class HubScan:
    root: str
    exists: bool
    repos: tuple[Repo, ...] = ()
    size_on_disk: int = 0
    bytes: int = 0
    files: int = 0
    shared_store_files: int = 0
    shared_store_bytes: int = 0
    locks: int = 0


@dataclass(frozen=True)
class PreparedDataset:
    """One `<builder>/<config>/<version>/<fingerprint>/` folder of Arrow files `datasets` built."""

    path: str
    builder: str
    config: str
    version: str
    fingerprint: str
    dataset_name: str | None
    splits: dict[str, int]
    files: int
    bytes: int
    arrow_bytes: int
    map_cache_files: int
    last_accessed: float
    last_modified: float


@dataclass(frozen=True)
class DatasetsDownload:
    """A file `datasets` downloaded (`downloads/<sha256(url)>`), or a folder it extracted an archive to."""

    path: str
    url: str | None
    etag: str | None
    files: int
    bytes: int
    last_accessed: float
    last_modified: float


@dataclass(frozen=True)
class DatasetsScan:
    root: str
    exists: bool
    prepared: tuple[PreparedDataset, ...] = ()
    downloads: tuple[DatasetsDownload, ...] = ()
    extracted: tuple[DatasetsDownload, ...] = ()
    bytes: int = 0
    files: int = 0


@dataclass(frozen=True)
class ModuleEntry:
    """A module in HF_MODULES_CACHE, e.g. group `datasets_modules`, name `datasets/glue`, one folder per hash."""

    group: str
    name: str
    versions: int
    files: int
    bytes: int
    last_modified: float


@dataclass(frozen=True)
class Area:
    name: str
    path: str
    exists: bool
    files: int = 0
    bytes: int = 0
    last_modified: float = 0.0


@dataclass(frozen=True)
class Reclaimable:
    """What `prune` (no age limit) and `dedup` would free, as the scan estimates it."""

    detached: int = 0
    orphans: int = 0
    leftovers: int = 0
    dedup: int = 0

    @property
    def prune(self) -> int:
        return self.detached + self.orphans + self.leftovers


@dataclass(frozen=True)
class CacheScan:
    roots: dict[str, str]
    areas: tuple[Area, ...]
    hub: HubScan
    datasets: DatasetsScan
    modules: tuple[ModuleEntry, ...]
    token_file: bool
    stored_tokens_file: bool
    problems: tuple[ProblemGroup, ...]
    reclaimable: Reclaimable
    scanned_at: float
    seconds: float
    others: tuple[Area, ...] = field(default=())

    @property
    def bytes(self) -> int:
        return sum(a.bytes for a in self.areas) + sum(a.bytes for a in self.others)
