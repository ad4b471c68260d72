"""`download` and `snapshot`: the one path by which files enter the cache.

Online, a revision is resolved to a commit, the commit's listing gives every file's size and blob name (so no
HEAD per file is needed), and missing blobs are fetched in parallel, each under the same per-blob lock
`huggingface_hub` takes. Offline (`HF_HUB_OFFLINE=1`), or when the endpoint cannot be reached, the cache alone
answers, with the same completeness rule `snapshot_download` applies.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hfcache.cache import durable
from hfcache.cache.layout import HubCache, RepoRef, check_revision, is_commit
from hfcache.cache.meta import FileMeta
from hfcache.cache.partfile import RESUMABLE_MIN_SIZE, PartFile
from hfcache.cache.paths import LEGACY_RECORD_ROLE, UNIQUE
from hfcache.errors import EndpointError, EntryNotFound, OfflineCacheMiss, UsageError
from hfcache.fetch import adaptive
from hfcache.fetch.hub import HubClient
from hfcache.fetch.space import no_space
from hfcache.fetch.transfer import TransferOptions
from hfcache.progress import Progress

SMALL_FILE = 1024 * 1024
SMALL_STREAMS = (4, 8, 64)  # small files in flight on loopback, more per 5 ms of answer latency, at most (adaptive)


@dataclass(frozen=True)
class FetchStats:
    files_fetched: int = 0
    files_reused: int = 0
    bytes_fetched: int = 0
    bytes_total: int = 0
    xet_files: int = 0  # files rebuilt through Xet (the rest of those fetched came over plain HTTP)
    bytes_local: int = 0  # bytes of Xet files rebuilt from chunks already on disk, not fetched
    fetched_by_file: dict[str, int] = field(default_factory=dict)  # bytes received, per file fetched (this process)


@dataclass(frozen=True)
class SnapshotResult:
    repo: RepoRef
    revision: str
    commit: str
    path: Path
    files: int
    stats: FetchStats
    offline: bool = False


@dataclass(frozen=True)
class DownloadResult:
    repo: RepoRef
    revision: str
    commit: str
    paths: list[Path]
    stats: FetchStats
    offline: bool = False


def _is_offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


@dataclass
class Fetcher:
    cache: HubCache
    client: HubClient | None = None
    offline: bool | None = None
    max_workers: int | None = None  # files fetched at once; None: 8, or 8 to 64 by answer latency when most are small
    progress: Progress = field(default_factory=Progress)
    transfer_options: TransferOptions | None = None
    processes: int | None = None  # processes sharing many small files (see fanout.py); None: by core count

    def __post_init__(self) -> None:
        if self.offline is None:
            self.offline = _is_offline()
        if self.client is None and not self.offline:
            self.client = HubClient()

    # -- public ------------------------------------------------------------------------------------------------
    def snapshot(self, repo: RepoRef, revision: str = "main", include: Sequence[str] | None = None,
                 exclude: Sequence[str] | None = None) -> SnapshotResult:
        """Every file of a revision (filtered like `allow_patterns`/`ignore_patterns`), in the cache."""
        check_revision(revision)
        if self.offline:
            return self._snapshot_offline(repo, revision, include, exclude)
        try:
            commit = self.client.resolve_revision(repo, revision)
            files = self.cache.read_tree(repo, commit)
            if files is None:
                files = self.client.list_files(repo, commit)
                with no_space(self.cache.root, None, f"the listing of {repo}"):
                    self.cache.write_tree(repo, commit, files)
        except EndpointError as e:
            try:
                return self._snapshot_offline(repo, revision, include, exclude)
            except OfflineCacheMiss:
                raise e from None
        with no_space(self.cache.root, None, f"the ref {revision} of {repo}"):
            self.cache.write_ref(repo, revision, commit)
        selected = select_files(files, include, exclude)
        if (include or exclude) and not selected and not self.cache.snapshot_dir(repo, commit).is_dir():
            # huggingface_hub warns "No files matched allow_patterns=..." and returns a folder that does not exist;
            # a script's `$(hfcache snapshot ...)` must not get that path: fail instead (the ref and listing stay,
            # as huggingface_hub leaves them)
            given = (("--include", include or []), ("--exclude", exclude or []))
            patterns = ", ".join(f"{opt} {p!r}" for opt, ps in given for p in ps)
            raise EntryNotFound(f"no files matched {patterns} in {repo}@{revision} ({commit[:12]}): nothing fetched")
        stats = self.fetch_files(repo, commit, selected)
        return SnapshotResult(repo, revision, commit, self.cache.snapshot_dir(repo, commit), len(selected), stats)

    def download(self, repo: RepoRef, filenames: Sequence[str], revision: str = "main") -> DownloadResult:
        """Some files of a revision, in the cache; returns their snapshot paths in the order asked."""
        check_revision(revision)
        if not filenames:
            raise UsageError("no file name given")
        if self.offline:
            return self._download_offline(repo, filenames, revision)
        if is_commit(revision):
            pointers = [self.cache.pointer_path(repo, revision, f) for f in filenames]
            if all(p.exists() for p in pointers):
                return DownloadResult(repo, revision, revision, pointers, FetchStats(files_reused=len(pointers)))
        try:
            commit = self.client.resolve_revision(repo, revision)
            tree = self.cache.read_tree(repo, commit)
            if tree is not None and all(f in tree for f in filenames):
                metas = {f: tree[f] for f in filenames}
            else:
                metas = self.client.paths_info(repo, commit, filenames)
        except EndpointError as e:
            try:
                return self._download_offline(repo, filenames, revision)
            except (OfflineCacheMiss, EntryNotFound):
                raise e from None
        with no_space(self.cache.root, None, f"the ref {revision} of {repo}"):
            self.cache.write_ref(repo, revision, commit)
        missing = [f for f in filenames if f not in metas]
        for f in missing:
            self.cache.mark_no_exist(repo, commit, f)
        if missing:
            raise EntryNotFound(f"{', '.join(missing)}: no such file in {repo} at {revision!r} ({commit[:12]})")
        stats = self.fetch_files(repo, commit, {f: metas[f] for f in filenames})
        return DownloadResult(repo, revision, commit,
                              [self.cache.pointer_path(repo, commit, f) for f in filenames], stats)

    # -- offline -----------------------------------------------------------------------------------------------
    def _commit_from_cache(self, repo: RepoRef, revision: str) -> str:
        commit = revision if is_commit(revision) else self.cache.read_ref(repo, revision)
        if commit is None or not self.cache.snapshot_dir(repo, commit).is_dir():
            raise OfflineCacheMiss(f"{repo}@{revision} is not in the cache at {self.cache.root}"
                                   + (" (offline mode is on)" if self.offline else ""))
        return commit

    def _snapshot_offline(self, repo, revision, include, exclude) -> SnapshotResult:
        """The cached snapshot, complete by its listing; `bytes_total` is its size, as online runs report it."""
        from hfcache.units import counted

        commit = self._commit_from_cache(repo, revision)
        folder = self.cache.snapshot_dir(repo, commit)
        tree = self.cache.read_tree(repo, commit)
        if tree is not None:
            selected = select_files(tree, include, exclude)
            absent = [f for f in selected if not self.cache.pointer_path(repo, commit, f).exists()]
            if absent:
                raise OfflineCacheMiss(f"the cached snapshot of {repo}@{revision} lacks {len(absent)} of "
                                       f"{counted(len(selected), 'file')} (first: {absent[0]})")
            sizes = [m.size for m in selected.values()]
        else:  # no listing: the files themselves (a dangling link as 0 bytes)
            sizes = [p.stat().st_size if p.exists() else 0 for p in folder.rglob("*") if not p.is_dir()]
        return SnapshotResult(repo, revision, commit, folder, len(sizes),
                              FetchStats(files_reused=len(sizes), bytes_total=sum(sizes)), offline=True)

    def _download_offline(self, repo, filenames, revision) -> DownloadResult:
        commit = self._commit_from_cache(repo, revision)
        paths = []
        for f in filenames:
            p = self.cache.pointer_path(repo, commit, f)
            if not p.exists():
                if self.cache.no_exist_path(repo, commit, f).exists():
                    raise EntryNotFound(f"{f}: no such file in {repo} at {revision!r} (recorded in the cache)")
                raise OfflineCacheMiss(f"{f} of {repo}@{revision} is not in the cache at {self.cache.root}"
                                       + (" (offline mode is on)" if self.offline else ""))
            paths.append(p)
        return DownloadResult(repo, revision, commit, paths, FetchStats(files_reused=len(paths)), offline=True)

    # -- fetching ----------------------------------------------------------------------------------------------
    def fetch_files(self, repo: RepoRef, commit: str, files: dict[str, FileMeta],
                    feed: Callable[[], tuple[str, FileMeta] | None] | None = None) -> FetchStats:
        """Put `files` (names and metadata of one commit) in the cache; what is there already is reused. `feed`
        (a fan-out worker, with `files` empty): the files come one at a time from the parent, None at the end."""
        from hfcache.fetch.transfer import Transfer
        from hfcache.xet.path import XetPath

        transfer = Transfer(self.client, self.transfer_options)
        self._xet = XetPath(self.cache, transfer)
        self._xet_stats: dict[str, tuple[int, int]] = {}  # file -> (bytes fetched, bytes from disk)
        self._ready_dirs: set[Path] = set()
        self._dirs_lock = threading.Lock()
        blobs = self.cache.blobs_dir(repo)
        partials = self.cache.partials(repo)
        # process-unique partials can only be a dead process's: whoever holds a blob's lock may delete them
        self._orphans = {etag: [p for p, role in ps if role in UNIQUE] for etag, ps in partials.items()}
        if files:
            self.cache.ensure_tag()
        self.progress.start(len(files), sum(m.size for m in files.values()))

        # a fan-out worker (`feed`, no `files`) is handed small files only, a batch at a time
        workers = self.max_workers or (SMALL_STREAMS[2] if feed is not None else _auto_workers(files))
        # Many small files: as many threads as the answer latency calls for (few on loopback, where more only
        # add CPU; more when every answer waits on the network; see adaptive), up to `workers`.
        start = workers if self.max_workers is not None else min(workers, SMALL_STREAMS[0])

        def wanted() -> int:
            if self.max_workers is not None:
                return workers
            latency = transfer.meter.latency()
            return start if latency is None else adaptive.streams(latency, SMALL_STREAMS[0], workers,
                                                                  SMALL_STREAMS[1])

        def work(item: tuple[str, FileMeta]) -> tuple[bool, int]:
            with no_space(self.cache.root, item[1].size, f"{repo}/{item[0]}"):
                return self._ensure_file(transfer, repo, commit, *item)

        # Largest first: the long transfers start early and small files fill the gaps.
        items = sorted(files.items(), key=lambda kv: -kv[1].size)
        helpers = None
        theirs: list[dict] = []
        unfinished: set[str] = set()
        try:
            helpers, shared = self._fan_out(repo, commit, items, lambda: 2 * wanted())
            if feed is None:
                own = adaptive.taker([i for i in items if shared is None or i[0] not in shared.names])
                feed = own if shared is None else (lambda: own() or shared.take())
            ran = adaptive.run_elastic(work, feed, start, workers, wanted)
            if helpers is not None:
                theirs, unfinished = helpers.results()
                if unfinished:  # a worker died without a word: what it was given is fetched here
                    extra = [i for i in items if i[0] in unfinished]
                    ran += adaptive.run_elastic(work, adaptive.taker(extra), start, workers, wanted)
            if partials or unfinished:
                self._sweep(repo, blobs)
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                transfer.stop()  # downloads in flight end at their next chunk; on an error they finish
            if helpers is not None:
                helpers.stop()
            raise
        finally:
            transfer.close()
            self._xet.close()
            self._sync_dirs()
        results = [r for _, r in ran]
        fetched = sum(1 for was_fetched, _ in results if was_fetched) + sum(s["files_fetched"] for s in theirs)
        return FetchStats(
            files_fetched=fetched,
            files_reused=(len(files) or len(ran)) - fetched,
            bytes_fetched=sum(n for _, n in results) + sum(s["bytes_fetched"] for s in theirs),
            bytes_total=sum(m.size for m in files.values()) or sum(m.size for (_, m), _ in ran),
            xet_files=len(self._xet_stats) + sum(s.get("xet_files", 0) for s in theirs),
            bytes_local=sum(local for _, local in self._xet_stats.values()) + sum(s.get("bytes_local", 0)
                                                                                 for s in theirs),
            fetched_by_file=_per_file(ran, theirs),
        )

    def _fan_out(self, repo: RepoRef, commit: str, items: list[tuple[str, FileMeta]],
                 in_hand: Callable[[], int]):
        """Worker processes to share the missing small files with, when there are enough of them: the workers and
        the queue of files they and this process take from (`fanout.Cursor`); (None, None) for none. `in_hand`:
        how many files a worker should hold (see `fanout.Workers`)."""
        from hfcache.fetch import fanout

        if self.processes == 1:
            return None, None
        small = [i for i in items if i[1].size < SMALL_FILE]
        if len(small) < fanout.MIN_FILES_PER_PROCESS * 2 and self.processes is None:
            return None, None
        todo = [i for i in small if not self.cache.pointer_path(repo, commit, i[0]).exists()]
        n = fanout.plan(len(todo), self.processes)
        if n <= 1:
            return None, None
        job = fanout.job(self.cache.root, self.client.endpoint, self.client.token, repo, commit, self.max_workers,
                         self.transfer_options, headers=self.client.hub_headers())

        def file_done(path: str, size: int, fetched: bool) -> None:
            if fetched:
                self.progress.advance(size)
            self.progress.file_done(path, size, fetched)

        shared = fanout.Cursor(todo)
        try:
            return fanout.Workers([job] * (n - 1), shared, file_done, in_hand), shared
        except OSError:
            return None, None

    def _ensure_file(self, transfer, repo: RepoRef, commit: str, filename: str, meta: FileMeta) -> tuple[bool, int]:
        pointer = self.cache.pointer_path(repo, commit, filename)
        if pointer.exists():
            self.progress.file_done(filename, meta.size, False)
            return False, 0
        blob = self.cache.blob_path(repo, meta.etag)
        self._ready(blob.parent, pointer.parent)
        with self.cache.lock(repo, meta.etag, on_wait=lambda: self.progress.waiting(filename)):
            if pointer.exists():
                self.progress.file_done(filename, meta.size, False)
                return False, 0
            if self._reusable(blob, meta):
                self.cache.link(repo, commit, filename, meta.etag, new_blob=False, make_parent=False, pointer=pointer)
                self.progress.file_done(filename, meta.size, False)
                return False, 0
            for orphan in self._orphans.get(meta.etag, ()):  # a killed process's partial; we hold the lock
                orphan.unlink(missing_ok=True)
            if self._xet.link_existing(blob, meta):  # another repo or revision put it in the shared store
                self.cache.link(repo, commit, filename, meta.etag, new_blob=False, make_parent=False, pointer=pointer)
                self.progress.file_done(filename, meta.size, False)
                return False, 0
            outcome = self._xet.fetch(repo, commit, meta, self.progress.advance)
            if outcome is not None:
                self._xet_stats[filename] = (outcome.fetched, outcome.local)
                shared = os.path.islink(blob)
                self.cache.link(repo, commit, filename, meta.etag, new_blob=not shared, make_parent=False,
                                pointer=pointer)
                self.progress.file_done(filename, meta.size, True)
                return True, outcome.fetched
            url = self.client.resolve_url(repo, commit, filename)
            nbytes = transfer.fetch_blob(url, blob, meta, self.progress.advance, name=f"{repo}/{filename}")
            self.cache.link(repo, commit, filename, meta.etag, new_blob=True, make_parent=False, pointer=pointer)
        self.progress.file_done(filename, meta.size, True)
        return True, nbytes

    @staticmethod
    def _reusable(blob: Path, meta: FileMeta) -> bool:
        """An existing blob may be linked into a new snapshot only once its bytes hash to its name: a file planted
        under a valid name, or one an older client published unchecked, is replaced, never linked. (Under the
        blob's lock; a snapshot that already links the blob is not re-read.)"""
        from hfcache.cache.hashing import hash_file, kind_of

        try:
            if os.stat(blob).st_size != meta.size:
                return False
        except FileNotFoundError:
            return False
        kind = kind_of(meta.etag)
        if kind is not None and hash_file(blob, kind) == meta.etag:
            return True
        blob.unlink(missing_ok=True)  # wrong bytes under a hash's name: fetched again below
        return False

    def _sweep(self, repo: RepoRef, blobs: Path) -> None:
        """Partials of blobs that are complete now (a dead worker's, or another tool finished the blob) are
        garbage: remove them, each under its blob's lock, skipping any lock another process holds."""
        from filelock import Timeout

        for etag, found in self.cache.partials(repo).items():
            done = (blobs / etag).is_file()
            if not done and LEGACY_RECORD_ROLE not in {role for _, role in found}:
                continue  # still to be finished: a later run resumes it
            try:
                with self.cache.lock(repo, etag, timeout=0):
                    if done:
                        for p, _ in found:
                            p.unlink(missing_ok=True)
                    else:  # an older hfcache's, where huggingface_hub 0.x/1.x would resume it: renamed for us
                        PartFile(self.cache.partial_paths(repo, etag), etag, RESUMABLE_MIN_SIZE).adopt_legacy()
            except Timeout:
                continue

    def _sync_dirs(self) -> None:
        """Make this run's renames and links durable: one fsync per folder written (blobs are synced before
        their rename, in `PartFile.publish`), rather than one per file."""
        for d in sorted(getattr(self, "_ready_dirs", ())):
            durable.fsync_dir(d)

    def _ready(self, *dirs: Path) -> None:
        """Create each folder once per run, and refuse any that leads out of the cache."""
        for d in dirs:
            if d in self._ready_dirs:
                continue
            with self._dirs_lock:
                if d not in self._ready_dirs:
                    self.cache.check_inside(d)  # before mkdir: never create folders through a planted link
                    d.mkdir(parents=True, exist_ok=True)
                    self.cache.check_inside(d)
                    self._ready_dirs.add(d)


def _per_file(ran: list, theirs: list[dict]) -> dict[str, int]:
    """Bytes received per file fetched, this process's and its workers'."""
    out = {name: n for (name, _), (was, n) in ran if was}
    for s in theirs:
        out.update(s.get("fetched_by_file", {}))
    return out


def _auto_workers(files: dict[str, FileMeta]) -> int:
    """Small files are latency-bound: a round trip each, little data. They deserve more requests in flight;
    large files share bandwidth and are split into parallel parts anyway."""
    small = sum(1 for m in files.values() if m.size < SMALL_FILE)
    return 8 if small < 32 else SMALL_STREAMS[2]


def select_files(files: dict[str, FileMeta], include: Sequence[str] | None,
                 exclude: Sequence[str] | None) -> dict[str, FileMeta]:
    """`huggingface_hub`'s own pattern rules (fnmatch, `*` crosses `/`, trailing `/` means the folder), as
    `patterns` ports them."""
    from hfcache.fetch.patterns import selected

    return {f: files[f] for f in selected(files, include, exclude)}
