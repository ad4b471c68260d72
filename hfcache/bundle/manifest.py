"""Carry cached repos to another machine: the bundle manifest, and `export` (import is `hfcache.bundle.importer`).

A manifest lists, per repo, what its cache folder holds for the exported revisions:

    blob      blobs/<etag>                 size, sha256 or git-sha1 (equal to the etag when the etag is a hash),
                                           xet_hash when the source kept it in the shared store; payload name
    file      snapshots/<commit>/<path>    the etag it points to
    tree      trees/<commit>.json          size, sha256; payload name (its exact bytes)
    no_exist  .no_exist/<commit>/<path>    empty marker
    ref       refs/<name>                  the commit

Links are never carried: a snapshot link, a shared-store link (`blobs/<etag>` -> `../../blobs/<xx>/<xet_hash>`)
or a copied file all become one blob entry with its bytes. Export reads the cache only, never the network, and
hashes every byte it writes, so a damaged source cache cannot produce a bundle.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hfcache import __version__
from hfcache.cache.hashing import HashKind, hash_bytes, hash_file, kind_of
from hfcache.cache.layout import HubCache, RepoRef, is_commit, safe_relpath
from hfcache.errors import BundleError, HfcacheError, IntegrityError, OfflineCacheMiss, UsageError
from hfcache.fetch.fetcher import Progress
from hfcache.units import counted

SCHEMA = "hfcache-bundle"
SCHEMA_VERSION = 1
ROLES = ("blob", "file", "tree", "no_exist", "ref")
_ETAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_XET_RE = re.compile(r"[0-9a-f]{64}")


# -- the manifest ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One thing a repo's cache folder holds; see the module docstring for what each role uses."""

    role: str
    repo: RepoRef
    path: str = ""  # file/no_exist: path in the repo; blob: etag; ref: ref name; tree: ""
    commit: str | None = None
    size: int = 0
    sha256: str | None = None
    git_sha1: str | None = None
    blob: str | None = None  # file: the etag it points to
    xet_hash: str | None = None  # blob: its name in the source's shared store
    payload: str | None = None  # blob/tree: the payload file holding its bytes

    @property
    def digest(self) -> tuple[HashKind, str]:
        """The hash the payload must have: git-sha1 when that is what names the blob, sha256 otherwise."""
        if self.git_sha1 is not None:
            return "git-sha1", self.git_sha1
        if self.sha256 is None:
            raise BundleError(f"manifest entry {self.role} {self.path!r} of {self.repo} has no hash")
        return "sha256", self.sha256

    @property
    def key(self) -> tuple:
        """What must be unique: a place in the repo folder (a ref is one place, whatever its commit)."""
        return self.role, self.repo, None if self.role == "ref" else self.commit, self.path

    def to_json(self) -> dict:
        out: dict = {"role": self.role, "repo_type": self.repo.repo_type, "repo_id": self.repo.repo_id}
        for k, v in asdict(self).items():
            if k not in ("role", "repo") and v not in (None, ""):
                out[k] = v
        if self.role in ("blob", "tree"):
            out["size"] = self.size
        return out

    @classmethod
    def from_json(cls, d: object) -> Entry:
        """Parse and check one entry: every name in it will become a path, so each is validated here."""
        if not isinstance(d, dict):
            raise BundleError("manifest entry is not an object")
        try:
            repo = RepoRef(str(d["repo_id"]), str(d["repo_type"]))
        except (KeyError, HfcacheError) as e:
            raise BundleError(f"manifest entry with a bad repo: {e}") from None
        e = cls(role=d.get("role"), repo=repo, path=d.get("path", ""), commit=d.get("commit"),
                size=d.get("size", 0), sha256=d.get("sha256"), git_sha1=d.get("git_sha1"), blob=d.get("blob"),
                xet_hash=d.get("xet_hash"), payload=d.get("payload"))
        e._check()
        return e

    def _check(self) -> None:
        where = f"manifest entry {self.role!r} {self.path!r} of {self.repo}"
        if self.role not in ROLES:
            raise BundleError(f"{where}: unknown role")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise BundleError(f"{where}: bad size")
        for name, value, n in (("sha256", self.sha256, 64), ("git_sha1", self.git_sha1, 40)):
            if value is not None and (not isinstance(value, str) or kind_of(value) is None or len(value) != n):
                raise BundleError(f"{where}: bad {name}")
        if self.role != "blob" and (self.commit is None or not isinstance(self.commit, str)
                                    or not is_commit(self.commit)):
            raise BundleError(f"{where}: bad commit")
        if self.role in ("file", "no_exist", "ref"):
            if not isinstance(self.path, str):
                raise BundleError(f"{where}: bad path")
            safe_relpath(self.path)
        if self.role == "file" and (not isinstance(self.blob, str) or not _ETAG_RE.fullmatch(self.blob)):
            raise BundleError(f"{where}: bad blob name")
        if self.role == "blob":
            if not isinstance(self.path, str) or not _ETAG_RE.fullmatch(self.path):
                raise BundleError(f"{where}: bad blob name")
            kind = kind_of(self.path)
            if kind is not None and self.digest != (kind, self.path):
                raise BundleError(f"{where}: its hash must be its name")
            if self.xet_hash is not None and not (isinstance(self.xet_hash, str) and _XET_RE.fullmatch(self.xet_hash)):
                raise BundleError(f"{where}: bad xet hash")
        if self.role == "tree" and (self.sha256 is None or self.git_sha1 is not None or self.path):
            raise BundleError(f"{where}: a tree is named by its commit and checked by sha256")
        if self.role in ("blob", "tree") and self.payload != self.digest[1]:
            raise BundleError(f"{where}: its payload must be named by its hash")


@dataclass(frozen=True)
class Manifest:
    entries: tuple[Entry, ...]
    created_by: dict = field(default_factory=dict)
    areas: tuple = ()  # files of the offline caches (`hfcache.offline.bundle_roles.AreaEntry`)

    def to_bytes(self) -> bytes:
        data = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created_by": self.created_by,
                "entries": [e.to_json() for e in self.entries]}
        if self.areas:
            data["areas"] = [a.to_json() for a in self.areas]
        return (json.dumps(data, indent=1, sort_keys=False) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, ValueError) as e:
            raise BundleError(f"the bundle's manifest is not JSON: {e}") from None
        if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
            raise BundleError("the bundle's manifest is not an hfcache bundle manifest")
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise BundleError(f"bundle schema version {raw.get('schema_version')!r} is not supported "
                              f"(this hfcache reads version {SCHEMA_VERSION}); upgrade hfcache")
        if not isinstance(raw.get("entries"), list):
            raise BundleError("the bundle's manifest has no entry list")
        if not isinstance(raw.get("areas", []), list):
            raise BundleError("the bundle's manifest has a bad area list")
        from hfcache.offline.bundle_roles import AreaEntry

        m = cls(tuple(Entry.from_json(e) for e in raw["entries"]), raw.get("created_by") or {},
                tuple(AreaEntry.from_json(a) for a in raw.get("areas", [])))
        m._check()
        return m

    def _check(self) -> None:
        """The entries must hold together: one entry per place, and every link to a blob the bundle has."""
        seen: set[tuple] = set()
        blobs: dict[tuple[RepoRef, str], Entry] = {}
        for e in self.entries:
            if e.key in seen:
                raise BundleError(f"the manifest lists {e.role} {e.path!r} of {e.repo} twice")
            seen.add(e.key)
            if e.role == "blob":
                blobs[(e.repo, e.path)] = e
        for e in self.entries:
            if e.role == "file" and (e.repo, e.blob) not in blobs:
                raise BundleError(f"the manifest links {e.path!r} of {e.repo} to blob {e.blob}, which it lacks")
        payloads = self.payloads()
        for e in self.entries:
            if e.payload is not None and payloads[e.payload] != (*e.digest, e.size):
                raise BundleError(f"the manifest gives payload {e.payload} two different sizes or hashes")
        if len({a.key for a in self.areas}) != len(self.areas):
            raise BundleError("the manifest lists one area file twice")
        for a in self.areas:
            if payloads[a.payload] != ("sha256", a.sha256, a.size):
                raise BundleError(f"the manifest gives payload {a.payload} two different sizes or hashes")

    def payloads(self) -> dict[str, tuple[HashKind, str, int]]:
        """Payload name -> (hash kind, digest, size), in manifest order."""
        out: dict[str, tuple[HashKind, str, int]] = {}
        for e in self.entries:
            if e.payload is not None:
                out.setdefault(e.payload, (*e.digest, e.size))
        for a in self.areas:
            out.setdefault(a.payload, ("sha256", a.sha256, a.size))
        return out

    def of_role(self, role: str) -> list[Entry]:
        return [e for e in self.entries if e.role == role]


def library_versions() -> dict[str, str]:
    import huggingface_hub

    return {"hfcache": __version__, "huggingface_hub": huggingface_hub.__version__,
            "python": platform.python_version()}


# -- export ----------------------------------------------------------------------------------------------------
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
    repo_type, rest = "model", text
    head, sep, tail = text.partition(":")
    if sep:
        repo_type, rest = head, tail
    repo_id, sep, revision = rest.partition("@")
    if sep and not revision:
        raise UsageError(f"{text!r}: empty revision after '@'")
    return Spec(RepoRef(repo_id, repo_type), revision or "main")


@dataclass(frozen=True)
class Revision:
    """One revision a bundle carries: the name it was asked by (a ref, or the commit itself) and its commit."""

    repo: RepoRef
    revision: str
    commit: str


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
            files = set(_filter(_snapshot_files(snap), include, exclude))
        for rel in sorted(files):
            self.add_file(cache, spec, commit, rel, tree)
        if tree is not None:
            if spec.pinned is None:
                self.absent += [f"{repo}@{commit[:12]}/{p}" for p in _filter(list(tree), include, exclude)
                                if p not in files]
            data = cache.tree_path(repo, commit).read_bytes()
            digest = hash_bytes(data, "sha256")
            self.put(Entry("tree", repo, commit=commit, size=len(data), sha256=digest, payload=digest))
            self.inline[digest] = data
        for rel in _snapshot_files(cache.repo_dir(repo) / ".no_exist" / commit):
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


def _filter(files: Iterable[str], include: Sequence[str] | None, exclude: Sequence[str] | None) -> list[str]:
    """`snapshot`'s own pattern rules, from `huggingface_hub`."""
    from huggingface_hub.utils import filter_repo_objects

    return list(filter_repo_objects(list(files), allow_patterns=list(include) if include else None,
                                    ignore_patterns=list(exclude) if exclude else None))


def _locate(cache: HubCache, repo: RepoRef, pointer: Path, rel: str, tree) -> tuple[str, Path, str | None]:
    """(etag, file with the bytes, shared-store xet hash) of one snapshot entry, whatever the layout."""
    if not pointer.exists():
        raise IntegrityError(f"{pointer} is a broken link: the cache is damaged (the blob it names is gone)")
    blobs = cache.repo_dir(repo) / "blobs"
    if pointer.is_symlink():
        target = Path(os.path.normpath(pointer.parent / os.readlink(pointer)))
        if target.is_dir():
            raise IntegrityError(f"{pointer} links to a folder, which no cache does")
        if _ETAG_RE.fullmatch(target.name) and (target.parent == blobs or
                                                os.path.realpath(target.parent) == os.path.realpath(blobs)):
            return target.name, pointer, _shared_xet_hash(cache, blobs / target.name)
    meta = tree.get(rel) if tree else None
    if meta is not None and meta.size == pointer.stat().st_size:
        return meta.etag, pointer, None  # a copied file: its tree listing names it (checked while writing)
    from hfcache.server.catalog import file_meta

    return file_meta(pointer, rel).etag, pointer, None


def _shared_xet_hash(cache: HubCache, blob: Path) -> str | None:
    """The store name when `blobs/<etag>` links into the cache-wide shared store of huggingface_hub 2.x."""
    if not blob.is_symlink():
        return None
    try:
        from huggingface_hub.utils._shared_blobs import shared_blob_target
    except ImportError:
        return None
    target = shared_blob_target(blob, cache.root)
    return target.name if target is not None else None


def export_bundle(plan: ExportPlan, out: Path, as_dir: bool = False, zstd: bool = False,
                  progress: Progress | None = None) -> ExportResult:
    """Write the bundle, hashing every payload as it goes; a mismatch leaves no bundle behind."""
    from hfcache.bundle.container import open_writer

    progress = progress or Progress()
    writer = open_writer(out, as_dir, zstd)
    payloads = plan.manifest.payloads()
    progress.start(len(payloads), plan.total_bytes)
    try:
        writer.add_manifest(plan.manifest.to_bytes())
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


# -- test hook -------------------------------------------------------------------------------------------------
_steps = 0


def crash_point() -> None:
    """Test hook: with HFCACHE_CRASH_AFTER=N the process SIGKILLs itself at its N-th step (import, convert)."""
    limit = os.environ.get("HFCACHE_CRASH_AFTER")
    if not limit:
        return
    global _steps
    _steps += 1
    if _steps >= int(limit):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)
