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

import json
import platform
import re
from dataclasses import asdict, dataclass, field

from hfcache import __version__
from hfcache.cache.hashing import HashKind, kind_of
from hfcache.cache.layout import RepoRef, is_commit, safe_relpath
from hfcache.errors import BundleError, HfcacheError

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


@dataclass(frozen=True)
class Revision:
    """One revision a bundle carries: the name it was asked by (a ref, or the commit itself) and its commit."""

    repo: RepoRef
    revision: str
    commit: str
