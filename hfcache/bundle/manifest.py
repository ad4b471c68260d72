"""The bundle manifest: what a bundle carries, checked as a whole when read (`export` writes it, `importer` reads it).

A manifest lists, per repo, what its cache folder holds for the exported revisions:

    blob      blobs/<etag>                 size, sha256 or git-sha1 (equal to the etag when the etag is a hash),
                                           xet_hash when the source kept it in the shared store; payload name
    file      snapshots/<commit>/<path>    the etag it points to
    tree      trees/<commit>.json          size, sha256; payload name (its exact bytes)
    no_exist  .no_exist/<commit>/<path>    empty marker
    ref       refs/<name>                  the commit

Links are never carried: a snapshot link, a shared-store link (`blobs/<etag>` -> `../../blobs/<xx>/<xet_hash>`)
or a copied file all become one blob entry with its bytes.
"""

from __future__ import annotations

import io
import json
import platform
import sys
from dataclasses import asdict, dataclass, field
from typing import BinaryIO

from hfcache import __version__
from hfcache.cache.hashing import HashKind, kind_of
from hfcache.cache.layout import RepoRef
from hfcache.cache.names import BlobName, Commit, RelPath, XetHash
from hfcache.errors import BundleError, HfcacheError, UsageError

# Bounds on what an import reads into memory (each file of a bundle costs a `blob` and a `file` entry): a hostile
# manifest is refused at these limits, well under 150 MB of memory, and `export` never writes a larger one.
MAX_MANIFEST_BYTES = 96 * 1024 * 1024
MAX_ENTRIES = 100_000
MAX_ENTRY_BYTES = 64 * 1024
SCHEMA = "hfcache-bundle"
SCHEMA_VERSION = 1
ROLES = ("blob", "file", "tree", "no_exist", "ref")


# -- the manifest ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
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
    def from_json(cls, d: object, repos: dict | None = None) -> Entry:
        """Parse and check one entry: every name in it will become a path, so each is validated here. `repos`
        shares one RepoRef per repo between the entries of a manifest (and commits are interned): less memory."""
        if not isinstance(d, dict):
            raise BundleError("manifest entry is not an object")
        repos = {} if repos is None else repos
        key = (d.get("repo_id"), d.get("repo_type"))
        repo = repos.get(key) if all(isinstance(k, str) for k in key) else None
        if repo is None:
            try:
                repo = RepoRef(str(d["repo_id"]), str(d["repo_type"]))
            except (KeyError, HfcacheError) as e:
                raise BundleError(f"manifest entry with a bad repo: {e}") from None
            if all(isinstance(k, str) for k in key):
                repos[key] = repo
        commit, role, path = d.get("commit"), d.get("role"), d.get("path", "")
        same = {path: path} if isinstance(path, str) else {}  # a blob's name, hash and payload: one string

        def one(key: str) -> object:
            v = d.get(key)
            return same.setdefault(v, v) if isinstance(v, str) else v

        e = cls(role=sys.intern(role) if isinstance(role, str) else role, repo=repo, path=path,
                commit=sys.intern(commit) if isinstance(commit, str) else commit,
                size=d.get("size", 0), sha256=one("sha256"), git_sha1=one("git_sha1"), blob=one("blob"),
                xet_hash=d.get("xet_hash"), payload=one("payload"))
        e._check()
        return e

    def _check(self) -> None:
        """Every name that will become a path is a checked name (`hfcache.cache.names`), refused here, before
        any path is made from it."""
        where = f"manifest entry {self.role!r} {self.path!r} of {self.repo}"
        if self.role not in ROLES:
            raise BundleError(f"{where}: unknown role")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise BundleError(f"{where}: bad size")
        for name, value, n in (("sha256", self.sha256, 64), ("git_sha1", self.git_sha1, 40)):
            if value is not None and (not isinstance(value, str) or kind_of(value) is None or len(value) != n):
                raise BundleError(f"{where}: bad {name}")
        if self.role != "blob" and not Commit.check(self.commit):
            raise BundleError(f"{where}: bad commit")
        if self.role in ("file", "no_exist", "ref") and not RelPath.check(self.path):
            raise BundleError(f"{where}: unsafe file or ref name")
        if self.role == "file" and not BlobName.check(self.blob):
            raise BundleError(f"{where}: bad blob name (expected a 40- or 64-character lowercase hex hash)")
        if self.role == "blob":
            if not BlobName.check(self.path):
                raise BundleError(f"{where}: bad blob name (expected a 40- or 64-character lowercase hex hash)")
            if self.digest != (kind_of(self.path), self.path):
                raise BundleError(f"{where}: its hash must be its name")
            if self.xet_hash is not None and not XetHash.check(self.xet_hash):
                raise BundleError(f"{where}: bad xet hash")
        elif self.xet_hash is not None:
            raise BundleError(f"{where}: only a blob has a xet hash")
        if self.role == "tree" and (self.sha256 is None or self.git_sha1 is not None or self.path):
            raise BundleError(f"{where}: a tree is named by its commit and checked by sha256")
        if self.role in ("blob", "tree") and self.payload != self.digest[1]:
            raise BundleError(f"{where}: its payload must be named by its hash")
        if self.role not in ("blob", "tree") and self.payload is not None:
            raise BundleError(f"{where}: only a blob or a tree has a payload")


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
        return cls.from_stream(io.BytesIO(data))

    @classmethod
    def from_stream(cls, stream: BinaryIO) -> Manifest:
        """Read and check a manifest entry by entry: memory grows with the entries kept, never with what a hostile
        document would make `json.loads` build, and the whole is refused beyond `MAX_MANIFEST_BYTES` or
        `MAX_ENTRIES`."""
        from hfcache.bundle.jsonstream import START, TooLarge, walk
        from hfcache.offline.bundle_roles import AreaEntry

        top: dict = {}
        entries: list[Entry] = []
        areas: list = []
        repos: dict[tuple, RepoRef] = {}
        try:
            for key, value in walk(stream, {"entries": "array", "areas": "array"}, MAX_MANIFEST_BYTES,
                                   MAX_ENTRY_BYTES):
                if key not in ("entries", "areas"):
                    top[key] = value
                elif value is START:
                    _check_schema(top)
                    top[key] = True
                elif len(entries) + len(areas) >= MAX_ENTRIES:
                    raise BundleError(f"the bundle's manifest lists more than {MAX_ENTRIES} entries, the most "
                                      "hfcache reads in one bundle")
                elif key == "entries":
                    entries.append(Entry.from_json(value, repos))
                else:
                    areas.append(AreaEntry.from_json(value))
        except TooLarge as e:
            raise BundleError(f"the bundle's manifest is too large: {e}") from None
        except (UnicodeDecodeError, ValueError) as e:
            raise BundleError(f"the bundle's manifest is not JSON: {e}") from None
        _check_schema(top)
        if "entries" not in top:
            raise BundleError("the bundle's manifest has no entry list")
        created_by = top.get("created_by")
        m = cls(tuple(entries), created_by if isinstance(created_by, dict) else {}, tuple(areas))
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


def _check_schema(top: dict) -> None:
    if top.get("schema") != SCHEMA:
        raise BundleError("the bundle's manifest is not an hfcache bundle manifest")
    if top.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(f"bundle schema version {top.get('schema_version')!r} is not supported "
                          f"(this hfcache reads version {SCHEMA_VERSION}); upgrade hfcache")


def check_exportable(manifest: Manifest, data: bytes) -> None:
    """A bundle this hfcache could not import again is not written: it says how to split it instead."""
    n = len(manifest.entries) + len(manifest.areas)
    if len(data) > MAX_MANIFEST_BYTES or n > MAX_ENTRIES:
        raise UsageError(f"this export needs {n} manifest entries ({len(data) // (1024 * 1024)} MiB); one bundle "
                         f"holds at most {MAX_ENTRIES} ({MAX_MANIFEST_BYTES // (1024 * 1024)} MiB): split it into "
                         "several bundles (fewer revisions each, or --include/--exclude)")


def library_versions() -> dict[str, str]:
    import huggingface_hub

    return {"hfcache": __version__, "huggingface_hub": huggingface_hub.__version__,
            "python": platform.python_version()}


@dataclass(frozen=True)
class Revision:
    """One revision a bundle carries: the name it was asked by (a ref, or the commit itself) and its commit."""

    repo: RepoRef
    revision: str
    commit: str
