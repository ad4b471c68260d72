"""`export`: plan a bundle from the cache alone (offline by nature), then write it, hashing every byte.

A damaged source cache cannot produce a bundle: each payload is hashed as it is written and must match its name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hfcache.bundle.manifest import ROLES, Entry, Manifest, Revision, check_exportable, library_versions
from hfcache.cache.hashing import HashKind, hash_bytes, hash_file, kind_of
from hfcache.cache.layout import HubCache, RepoRef, is_commit, parse_repo_spec, safe_relpath
from hfcache.cache.names import BlobName
from hfcache.errors import IntegrityError, OfflineCacheMiss, UsageError
from hfcache.fetch.patterns import selected
from hfcache.progress import Progress
from hfcache.units import counted


@dataclass(frozen=True)
class Spec:
    """A revision to export; from a lock file it also names its commit and pins each file (size, hash)."""

    repo: RepoRef
    revision: str = "main"
    commit: str | None = None
    pinned: Mapping[str, tuple[int, str]] | None = None

    def __str__(self) -> str:
        return f"{self.repo.repo_type}:{self.repo.repo_id}@{self.revision}"


def specs_from_lock(path: Path, select: Sequence[str] = ()) -> list[Spec]:
    """The revisions a lock file pins (`hfcache lock`), or those of them that `select` names."""
    from hfcache.verify import lockfile

    wanted = [(s.repo, s.revision if "@" in text else None) for text, s in ((t, parse_spec(t)) for t in select)]
    lock = lockfile.read(path).select(wanted)
    return [Spec(e.repo, e.revision, e.commit, {p: (f.size, f.digest) for p, f in e.files.items()})
            for e in lock.repos]


def parse_spec(text: str) -> Spec:
    """`[model:|dataset:|space:|kernel:]org/name[@revision]`; the revision defaults to `main`."""
    repo, rev = parse_repo_spec(text)
    return Spec(repo, rev or "main")


@dataclass(frozen=True)
class Source:
    """Where a payload's bytes are read from, and the hash they must have."""

    path: Path
    kind: HashKind
    digest: str
    size: int


@dataclass(frozen=True)
class ExportPlan:
    manifest: Manifest
    sources: dict[str, Source]  # payload name -> a file holding it
    inline: dict[str, bytes]  # payload name -> bytes already read (tree listings)
    revisions: tuple[Revision, ...]
    absent: tuple[str, ...]  # files the tree listing names that the cache does not hold (not exported)

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self.sources.values()) + sum(len(b) for b in self.inline.values())


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    compressed: bool
    revisions: tuple[Revision, ...]
    files: int
    blobs: int
    payloads: int
    bytes_payload: int
    bytes_written: int
    absent: tuple[str, ...]


def plan_export(cache: HubCache, specs: Sequence[Spec], include: Sequence[str] | None = None,
                exclude: Sequence[str] | None = None, areas: tuple = ((), {})) -> ExportPlan:
    """What a bundle of `specs` holds, read from the cache alone (offline by nature); `areas` are offline-cache
    files and their sources (`hfcache.offline.bundle_roles.plan_areas`)."""
    if not specs and not areas[0]:
        raise UsageError("nothing to export: give at least one repo spec")
    acc = _Plan()
    for spec in specs:
        acc.add(cache, spec, include, exclude)
    order = {role: i for i, role in enumerate(ROLES)}
    ordered = sorted(acc.entries.values(), key=lambda e: (order[e.role], e.repo.repo_type, e.repo.repo_id,
                                                          e.commit or "", e.path))
    for a in areas[0]:
        acc.sources.setdefault(a.payload, Source(areas[1][a.payload], "sha256", a.sha256, a.size))
    manifest = Manifest(tuple(ordered), library_versions(), tuple(areas[0]))
    manifest._check()
    return ExportPlan(manifest, acc.sources, acc.inline, tuple(acc.revisions), tuple(acc.absent))


@dataclass
class _Plan:
    """What `plan_export` gathers, revision by revision (blobs and payloads shared between them once)."""

    entries: dict[tuple, Entry] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    inline: dict[str, bytes] = field(default_factory=dict)
    revisions: list[Revision] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)

    def put(self, e: Entry) -> None:
        self.entries[e.key] = e

    def add(self, cache: HubCache, spec: Spec, include, exclude) -> None:
        repo = spec.repo
        commit = spec.commit or (spec.revision if is_commit(spec.revision) else cache.read_ref(repo, spec.revision))
        snap = cache.snapshot_dir(repo, commit) if commit else None
        if snap is None or not snap.is_dir():
            raise OfflineCacheMiss(f"{spec} is not in the cache at {cache.root}")
        self.revisions.append(Revision(repo, spec.revision, commit))
        tree = cache.read_tree(repo, commit)
        if spec.pinned is not None:
            files = _pinned_files(spec, snap)
        else:
            files = set(selected(_snapshot_files(snap), include, exclude))
        for rel in sorted(files):
            self.add_file(cache, spec, commit, rel, tree)
        if tree is not None:
            if spec.pinned is None:
                self.absent += [f"{repo}@{commit[:12]}/{p}" for p in selected(tree, include, exclude)
                                if p not in files]
            data = cache.tree_path(repo, commit).read_bytes()
            digest = hash_bytes(data, "sha256")
            self.put(Entry("tree", repo, commit=commit, size=len(data), sha256=digest, payload=digest))
            self.inline[digest] = data
        for rel in _snapshot_files(cache.no_exist_dir(repo, commit)):
            self.put(Entry("no_exist", repo, rel, commit=commit))
        if not is_commit(spec.revision):
            self.put(Entry("ref", repo, spec.revision, commit=commit))

    def add_file(self, cache: HubCache, spec: Spec, commit: str, rel: str, tree) -> None:
        repo = spec.repo
        etag, source, xet = _locate(cache, repo, cache.snapshot_dir(repo, commit) / rel, rel, tree)
        size = source.stat().st_size
        if spec.pinned is not None and spec.pinned[rel] != (size, etag):
            raise IntegrityError(f"{spec} {rel}: the cache holds {counted(size, 'byte')} named {etag}, the lock "
                                 f"pins {counted(spec.pinned[rel][0], 'byte')} named {spec.pinned[rel][1]}")
        kind = kind_of(etag)
        digest = etag if kind is not None else hash_file(source, "sha256")  # an odd blob name: checked by sha256
        kind = kind or "sha256"
        blob = Entry("blob", repo, etag, size=size, xet_hash=xet, payload=digest,
                     **{"git_sha1" if kind == "git-sha1" else "sha256": digest})
        self.entries.setdefault(blob.key, blob)
        self.sources.setdefault(digest, Source(source, kind, digest, size))
        self.put(Entry("file", repo, rel, commit=commit, blob=etag))


def _pinned_files(spec: Spec, snap: Path) -> set[str]:
    files = set(spec.pinned or {})
    missing = sorted(p for p in files if not (snap / p).exists())
    if missing:
        raise OfflineCacheMiss(f"{spec}: the cache lacks {counted(len(missing), 'file')} the lock pins "
                               f"(first: {missing[0]}); fetch them with `hfcache snapshot --lock` first")
    return files


def _snapshot_files(folder: Path) -> list[str]:
    """Repo-relative names of the files (or links) under a folder, sorted; links to folders are not followed."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(filenames + [d for d in dirnames if (base / d).is_symlink()]):
            out.append(safe_relpath((base / name).relative_to(folder).as_posix()))
    return sorted(out)


def _locate(cache: HubCache, repo: RepoRef, pointer: Path, rel: str, tree) -> tuple[str, Path, str | None]:
    """(etag, file with the bytes, shared-store xet hash) of one snapshot entry, whatever the layout."""
    if not pointer.exists():
        raise IntegrityError(f"{pointer} is a broken link: the cache is damaged (the blob it names is gone)")
    blobs = cache.blobs_dir(repo)
    if pointer.is_symlink():
        target = Path(os.path.normpath(pointer.parent / os.readlink(pointer)))
        if target.is_dir():
            raise IntegrityError(f"{pointer} links to a folder, which no cache does")
        if BlobName.check(target.name) and (target.parent == blobs or
                                                os.path.realpath(target.parent) == os.path.realpath(blobs)):
            return target.name, pointer, _shared_xet_hash(cache, blobs / target.name)
    meta = tree.get(rel) if tree else None
    if meta is not None and meta.size == pointer.stat().st_size:
        return meta.etag, pointer, None  # a copied file: its tree listing names it (checked while writing)
    from hfcache.cache.lfs import file_meta

    return file_meta(pointer, rel).etag, pointer, None


def _shared_xet_hash(cache: HubCache, blob: Path) -> str | None:
    """The store name when `blobs/<etag>` links into the cache-wide shared store of huggingface_hub 2.x."""
    if not blob.is_symlink():
        return None
    from hfcache.cache.hfhub import shared_blob_target

    target = shared_blob_target(blob, cache.root)
    return target.name if target is not None else None


def export_bundle(plan: ExportPlan, out: Path, as_dir: bool = False, zstd: bool = False,
                  progress: Progress | None = None) -> ExportResult:
    """Write the bundle, hashing every payload as it goes; a mismatch leaves no bundle behind."""
    from hfcache.bundle.container import open_writer

    progress = progress or Progress()
    data = plan.manifest.to_bytes()
    check_exportable(plan.manifest, data)
    writer = open_writer(out, as_dir, zstd)
    payloads = plan.manifest.payloads()
    progress.start(len(payloads), plan.total_bytes)
    try:
        writer.add_manifest(data)
        for name, (kind, digest, size) in payloads.items():
            if name in plan.inline:
                writer.add_bytes(name, plan.inline[name])
                progress.advance(size)
            else:
                src = plan.sources[name]
                got = writer.add_file(name, src.path, size, kind, progress.advance)
                if got != digest:
                    raise IntegrityError(f"{src.path}: its {kind} is {got}, not {digest} as its name says; the "
                                         "source cache is damaged (run `hfcache verify`, then fetch it again)")
            progress.file_done(name, size, True)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    m = plan.manifest
    written = _size_on_disk(out)
    return ExportResult(out, "dir" if as_dir else "tar", zstd, plan.revisions, len(m.of_role("file")),
                        len(m.of_role("blob")), len(payloads), plan.total_bytes, written, plan.absent)


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
