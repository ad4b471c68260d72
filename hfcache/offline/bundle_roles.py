"""Bundle roles for the offline caches: prepared datasets, module script folders and mapped URLs travel too.

Beside the hub entries (`hfcache.bundle.manifest`), a manifest may list `areas`: one entry per file under a cache area,

    dataset  area datasets            <ns>___<name>/<config>/<version>/<hash>/<file>   (a prepared folder)
    module   area modules             {datasets,evaluate}_modules/.../<name>/<hash>/<file> (+ the __init__.py above)
    url      area datasets_downloads  <sha256(url)>[.py] and its .json sidecar
             or evaluate_downloads

each with its size and sha256, its bytes stored once as a payload like any other. Import stages each file beside
its place, hashing it, and renames it in only after the hub part is published; a bad payload writes nothing.

These folders hold code that `datasets`, `evaluate` and `trust_remote_code` import, so an entry must name a place
its role can have (`_confined`: a prepared folder, a module's versioned folder, a download's flat name), never
`modules/transformers_modules/x.py` or `downloads/extracted/...`; and a file already there is never replaced by
other bytes: it is kept and reported as a conflict, as hub files are.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

from hfcache.cache.hashing import copy_hashed, hash_file
from hfcache.cache.layout import safe_relpath
from hfcache.errors import BundleError, SourceMissing, SpecError
from hfcache.offline.env import OfflineRoots

AREAS: dict[str, tuple[str, ...]] = {"dataset": ("datasets",), "module": ("modules",),
                                     "url": ("datasets_downloads", "evaluate_downloads")}
SPEC_PREFIXES = ("prepared:", "module:", "url:")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DOWNLOAD_NAME = re.compile(r"[0-9a-f]{64}(\.[0-9a-f]{64})?(\.py)?(\.json)?")  # hash_url_to_filename (+ sidecar)
_VERSION = re.compile(r"\d+\.\d+\.\d+")
_MODULE_NAMESPACES = {"datasets_modules": ("datasets", "metrics"), "evaluate_modules": ("metrics",)}


def _confined(role: str, parts: list[str]) -> bool:
    """Whether a path (already a safe relative path) is one its role places, and nothing else in that area."""
    if any(p.startswith(".") or p.endswith((".lock", ".incomplete")) for p in parts):
        return False
    if role == "url":  # <sha256(url)>[.<sha256(etag)>][.py][.json], flat in the downloads folder
        return len(parts) == 1 and _DOWNLOAD_NAME.fullmatch(parts[0]) is not None
    if role == "dataset":  # <builder>/<config>/<version>/<hash>/<file>, never downloads/ beside them
        return len(parts) >= 5 and parts[0] != "downloads" and _VERSION.fullmatch(parts[2]) is not None
    # module: {datasets,evaluate}_modules/<namespace>/<name>/<64-hex hash>/<file>, and the __init__.py above
    spaces = _MODULE_NAMESPACES.get(parts[0])
    if spaces is None:
        return False
    if len(parts) == 2:
        return parts[1] == "__init__.py"
    if parts[1] not in spaces:
        return False
    if len(parts) in (3, 4):
        return parts[-1] == "__init__.py"
    return _SHA256.fullmatch(parts[3]) is not None


@dataclass(frozen=True)
class AreaEntry:
    role: str
    area: str
    path: str
    size: int
    sha256: str

    @property
    def payload(self) -> str:
        return self.sha256

    @property
    def key(self) -> tuple[str, str]:
        return self.area, self.path

    def to_json(self) -> dict:
        return {"role": self.role, "area": self.area, "path": self.path, "size": self.size, "sha256": self.sha256,
                "payload": self.payload}

    @classmethod
    def from_json(cls, d: object) -> AreaEntry:
        """Parse and check one entry; its path will be joined to a cache folder, so it is validated here."""
        if not isinstance(d, dict):
            raise BundleError("manifest area entry is not an object")
        e = cls(role=d.get("role"), area=d.get("area"), path=d.get("path"), size=d.get("size"),
                sha256=d.get("sha256"))
        where = f"manifest area entry {e.role!r} {e.path!r}"
        if e.role not in AREAS or e.area not in AREAS[e.role]:
            raise BundleError(f"{where}: unknown role or area {e.area!r}")
        if not isinstance(e.path, str) or not isinstance(e.sha256, str) or not _SHA256.fullmatch(e.sha256):
            raise BundleError(f"{where}: bad path or sha256")
        if not isinstance(e.size, int) or isinstance(e.size, bool) or e.size < 0 or d.get("payload") != e.sha256:
            raise BundleError(f"{where}: bad size or payload name")
        if not _confined(e.role, safe_relpath(e.path).split("/")):
            raise BundleError(f"{where}: not a place a {e.role} file goes in the {e.area} folder; nothing was "
                              "imported")
        return e


def area_root(roots: OfflineRoots, area: str) -> Path:
    return {"datasets": roots.datasets, "modules": roots.modules, "datasets_downloads": roots.datasets_downloads,
            "evaluate_downloads": roots.evaluate_downloads}[area]


# -- export ----------------------------------------------------------------------------------------------------
def _files(folder: Path) -> list[Path]:
    """Regular files under a folder, leftovers of the libraries and of hfcache (locks, staging) aside."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames)
                if not f.startswith(".") and not f.endswith((".lock", ".incomplete"))]
    return out


def _prepared(spec: str, roots: OfflineRoots) -> list[tuple[str, str, Path]]:
    from hfcache.offline.materialize import parse_spec, prepared_folders

    name, config = parse_spec(spec)
    folders = prepared_folders(roots.datasets, name, config)
    if not folders:
        raise SourceMissing(f"no prepared folder for {spec} in {roots.datasets} (hfcache datasets materialize)")
    return [("dataset", "datasets", f) for folder in folders for f in _files(folder)]


def _module(name: str, roots: OfflineRoots) -> list[tuple[str, str, Path]]:
    from hfcache.offline.modules import installed_versions, module_parent

    candidates = [("dataset", name), ("metric", name), ("evaluate", name)]
    if "/" not in name:
        candidates += [("evaluate", f"evaluate-{t}/{name}") for t in ("metric", "comparison", "measurement")]
    out = []
    for kind, n in candidates:
        versions = installed_versions(roots.modules, kind, n) if kind != "metric" or "/" not in n else []
        if versions:
            parent = module_parent(roots.modules, kind, n)
            inits = [p / "__init__.py" for p in (parent, parent.parent, parent.parent.parent)]
            out += [("module", "modules", f) for f in inits if f.is_file()]
            out += [("module", "modules", f) for v in versions for f in _files(v)]
    if not out:
        raise SourceMissing(f"no module named {name} in {roots.modules} (hfcache modules add)")
    return out


def _url(url: str, roots: OfflineRoots) -> list[tuple[str, str, Path]]:
    from hfcache.offline.urls import check_url, names_for

    check_url(url)
    out = []
    for area, target in (("datasets_downloads", "datasets"), ("evaluate_downloads", "evaluate")):
        folder = area_root(roots, area)
        for name in names_for(url, target):
            if (folder / name).is_file():
                out += [("url", area, folder / n) for n in (name, f"{name}.json") if (folder / n).is_file()]
    if not out:
        raise SourceMissing(f"{url} is not mapped in {roots.datasets_downloads} or {roots.evaluate_downloads} "
                            "(hfcache map-url)")
    return out


def is_area_spec(spec: str) -> bool:
    return spec.startswith(SPEC_PREFIXES)


def plan_areas(specs: list[str], roots: OfflineRoots) -> tuple[tuple[AreaEntry, ...], dict[str, Path]]:
    """Entries and payload sources for `prepared:NAME[:CONFIG]`, `module:NAME` and `url:URL` specs."""
    found: dict[tuple[str, str], tuple[str, Path]] = {}
    for spec in specs:
        kind, _, value = spec.partition(":")
        if not value:
            raise SpecError(f"{spec!r}: nothing after {kind}:")
        picked = {"prepared": _prepared, "module": _module, "url": _url}[kind](value, roots)
        for role, area, path in picked:
            rel = path.relative_to(area_root(roots, area)).as_posix()
            found[(area, rel)] = (role, path)
    entries, sources = [], {}
    for (area, rel), (role, path) in sorted(found.items()):
        digest = hash_file(path, "sha256")
        entries.append(AreaEntry(role, area, rel, path.stat().st_size, digest))
        sources.setdefault(digest, path)
    return tuple(entries), sources


# -- import ----------------------------------------------------------------------------------------------------
def import_roots(hub_cache: Path, cache_dir_given: bool,
                 hf_home: Path | None) -> tuple[OfflineRoots | None, str | None]:
    """Where an import into the cache the user chose puts offline-cache files: (roots, None), or (None, why not).

    `--hf-home H`: every folder at its default place under H. `--cache-dir C`: under C's HF_HOME when C is one's
    `hub` folder, never the environment's (a bundle for one cache must not land in another's modules); a bare
    cache folder has no such place. Neither: the environment's folders, as the libraries will read them."""
    from hfcache.offline.env import offline_roots

    if hf_home is not None:
        return offline_roots(hf_home=hf_home, hub_cache=hub_cache), None
    if not cache_dir_given:
        return offline_roots(hub_cache=hub_cache), None
    if hub_cache.name == "hub":
        return offline_roots(hf_home=hub_cache.parent, hub_cache=hub_cache), None
    return None, (f"this bundle carries prepared datasets, modules or mapped URLs, which have no place beside "
                  f"{hub_cache} (not the hub folder of an HF_HOME): import it with --hf-home")


class AreaImport:
    """Stages the area payloads of one import, then links them into place (or removes them on failure). A file
    already at its place is kept: counted as present when its bytes are the bundle's, a conflict otherwise."""

    def __init__(self, entries: tuple[AreaEntry, ...], roots: OfflineRoots) -> None:
        self.roots = roots
        self.by_payload: dict[str, list[AreaEntry]] = {}
        self.present = 0
        self.conflicts: list[str] = []
        for e in entries:
            dest = self.dest(e)
            if os.path.lexists(dest):
                if _same_file(dest, e):
                    self.present += 1
                else:
                    self.conflicts.append(self._conflict(e))
                continue
            self.by_payload.setdefault(e.payload, []).append(e)
        self.temps: dict[tuple[str, str], tuple[Path, Path]] = {}  # entry key -> (staged file, its place)
        self.created: list[Path] = []  # folders staging made: an empty prepared folder would break datasets

    @staticmethod
    def _conflict(e: AreaEntry) -> str:
        return f"{e.area}/{e.path} exists with other content (kept)"

    def dest(self, e: AreaEntry) -> Path:
        root = area_root(self.roots, e.area)
        path = root.joinpath(*safe_relpath(e.path).split("/"))
        probe = path.parent  # a link planted inside the root must not lead out of it
        while probe != root and not probe.exists():
            probe = probe.parent
        if probe.exists() and not (os.path.realpath(probe) + os.sep).startswith(os.path.realpath(root) + os.sep):
            raise BundleError(f"area entry {e.path!r} would be written outside {root}")
        return path

    def wants(self, payload: str) -> bool:
        """Whether the payload's bytes must be staged (a payload whose places are all taken is only checked)."""
        return payload in self.by_payload

    def _temp(self, e: AreaEntry) -> Path:
        dest = self.dest(e)
        missing, folder = [], dest.parent
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for d in reversed(missing):
            d.mkdir()
            self.created.append(d)
        tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.incomplete"
        self.temps[e.key] = (tmp, dest)
        return tmp

    def stage(self, payload: str, stream, kind, size: int, on_bytes) -> str:
        """Stream one payload beside its first place, hashing it; other places get copies once it checks out."""
        first, *rest = self.by_payload[payload]
        with open(self._temp(first), "xb") as f:
            got = copy_hashed(stream, f, kind, size, on_bytes)
        if got == payload:
            for e in rest:
                shutil.copyfile(self.temps[first.key][0], self._temp(e))
        return got

    def stage_copy(self, payload: str, checked: Path) -> None:
        """Bytes a hub blob of the same bundle also has, already staged and checked."""
        for e in self.by_payload[payload]:
            shutil.copyfile(checked, self._temp(e))

    def publish(self) -> int:
        """Link each staged file to its place without ever replacing one (a prepared folder or module appears
        newest: offline, the newest wins); one that appeared meanwhile is a conflict."""
        n = 0
        for key, (tmp, dest) in self.temps.items():
            try:
                _place_new(tmp, dest)
                n += 1
            except FileExistsError:
                self.conflicts.append(f"{key[0]}/{key[1]} exists with other content (kept)")
            finally:
                tmp.unlink(missing_ok=True)
        self.temps = {}
        return n

    def undo(self) -> None:
        for tmp, _ in self.temps.values():
            tmp.unlink(missing_ok=True)
        for d in reversed(self.created):
            with contextlib.suppress(OSError):
                d.rmdir()
        self.temps, self.created = {}, []


def _same_file(path: Path, e: AreaEntry) -> bool:
    """A regular file (not a link) with the entry's size and sha256."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == e.size and hash_file(path, "sha256") == e.sha256


def _place_new(tmp: Path, dest: Path) -> None:
    """`tmp` appears at `dest` atomically, and only if nothing is there: a hard link fails on an existing name.
    Where hard links are not supported, a rename after a check (the window is this process's alone)."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise
    except OSError:
        if os.path.lexists(dest):
            raise FileExistsError(dest) from None
        os.replace(tmp, dest)
