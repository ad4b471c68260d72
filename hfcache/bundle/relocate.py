"""Move a cache, or switch its layout, without breaking anything that names its files.

`relocate` moves (or copies) a whole HF_HOME or hub cache. Relative links move with the tree; absolute links that
old `huggingface_hub` versions made into the old place become relative; `datasets` keys its extracted archives by
the archive's absolute path (`downloads/extracted/<sha256(path)>`), so those folders are renamed for the new
path; locks are dropped (after checking nobody holds one). On one file system the tree is renamed in one step
after the links are fixed in place (each link fix keeps the old tree valid); elsewhere it is copied into a
staging folder beside the target and renamed when complete. Re-running an interrupted relocation finishes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from hfcache.bundle.crash import crash_point
from hfcache.cache import durable
from hfcache.cache.layout import HubCache, RepoRef
from hfcache.cache.paths import Folder, lock_held
from hfcache.errors import HfcacheError, UsageError

DONE_MARK = ".hfcache-relocated-to"  # in the old tree: the new one is complete, the old one may go
MOVING_MARK = ".hfcache-relocating-from"  # in the moved tree until its fix-ups are done
HOME_ENTRIES = ("hub", "datasets", "modules", "token", "stored_tokens", "xet", "assets", "evaluate", "metrics")
PATH_VARS = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "HF_MODULES_CACHE", "HF_XET_CACHE",
             "HF_ASSETS_CACHE", "HF_TOKEN_PATH", "HF_EVALUATE_CACHE", "HF_METRICS_CACHE")


@dataclass(frozen=True)
class RelocateResult:
    old: Path
    new: Path
    kind: str  # "hf_home" or "hub_cache"
    copied: bool
    links_made_relative: int
    links_made_absolute: int
    extracted_renamed: int
    locks_dropped: int
    env: dict[str, str]
    notes: tuple[str, ...]


def _kind(folder: Path) -> str:
    names = {p.name for p in folder.iterdir()}
    if "CACHEDIR.TAG" in names or any(RepoRef.from_folder_name(n) for n in names):
        return "hub_cache"
    if names & set(HOME_ENTRIES):
        return "hf_home"
    raise UsageError(f"{folder} looks like neither an HF_HOME nor a hub cache; refusing to move it")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def relocate(old: Path, new: Path, copy: bool = False) -> RelocateResult:
    """Move or copy the HF_HOME or hub cache `old` to `new` (which must not exist, or be an empty folder)."""
    old, new = Path(os.path.abspath(old)), Path(os.path.abspath(new))
    resumed = _resume(old, new)
    if resumed is not None:
        return resumed
    if not old.is_dir():
        raise UsageError(f"{old} is not a folder")
    if _inside(str(new), str(old)) or _inside(str(old), str(new)):
        raise UsageError("OLD and NEW must not contain one another")
    if new.exists() and (not new.is_dir() or any(new.iterdir())):
        raise UsageError(f"{new} exists and is not an empty folder (to merge caches, use export and import)")
    if not new.parent.is_dir():
        raise UsageError(f"{new.parent} is not a folder")
    kind = _kind(old)
    _check_unlocked(old, kind)
    if not copy and os.stat(old).st_dev == os.stat(new.parent).st_dev:
        links = _fix_links(old, old, new)  # valid in both places: the tree moves as one
        dropped = _drop_locks(old, kind)
        (old / MOVING_MARK).write_text(f"{old}\n")
        if new.exists():
            new.rmdir()
        os.rename(old, new)
        crash_point()
        renamed = _rekey_extracted(new, kind, old, new)
        (new / MOVING_MARK).unlink()
        return _finish(old, new, kind, copy, links, renamed, dropped)
    staging = new.with_name(f".{new.name}.relocating")
    shutil.rmtree(staging, ignore_errors=True)  # what an interrupted copy left
    shutil.copytree(old, staging, symlinks=True)
    links = _fix_links(staging, old, new)
    dropped = _drop_locks(staging, kind)
    renamed = _rekey_extracted(staging, kind, old, new)
    if new.exists():
        new.rmdir()
    os.rename(staging, new)
    crash_point()
    if not copy:
        durable.sync_tree(new)  # the copy must survive a power loss before the original is deleted
        (old / DONE_MARK).write_text(f"{new}\n")
        shutil.rmtree(old)
    return _finish(old, new, kind, copy, links, renamed, dropped)


def _resume(old: Path, new: Path) -> RelocateResult | None:
    """Finish a move that was interrupted after its point of no return, as the markers it left tell."""
    if _marked(old / DONE_MARK, new):  # `new` was complete; removing the old tree was cut short
        shutil.rmtree(old)
        return _finish(old, new, _kind(new), False, (0, 0), 0, 0, resumed=True)
    if not old.exists() and _marked(new / MOVING_MARK, old):  # renamed; the fix-ups after it were cut short
        kind = _kind(new)
        links = _fix_links(new, old, new)
        renamed = _rekey_extracted(new, kind, old, new)
        dropped = _drop_locks(new, kind)
        (new / MOVING_MARK).unlink()
        return _finish(old, new, kind, False, links, renamed, dropped, resumed=True)
    return None


def _marked(marker: Path, other: Path) -> bool:
    try:
        return marker.read_text().strip() == str(other)
    except OSError:
        return False


def _finish(old: Path, new: Path, kind: str, copy: bool, links: tuple[int, int], renamed: int, dropped: int,
            resumed: bool = False) -> RelocateResult:
    env: dict[str, str] = {"HF_HOME" if kind == "hf_home" else "HF_HUB_CACHE": str(new)}
    notes = [f"{'copied' if copy else 'moved'} {old} -> {new}" + (" (finished an interrupted run)" if resumed else "")]
    for var in PATH_VARS:
        value = os.environ.get(var)
        if value and _inside(os.path.abspath(os.path.expanduser(value)), str(old)):
            env[var] = str(new / os.path.relpath(os.path.abspath(os.path.expanduser(value)), old)).rstrip("/.")
    if os.environ.get("TRANSFORMERS_CACHE"):  # the hint only where it applies (issue 12)
        notes.append(f"TRANSFORMERS_CACHE is set ({os.environ['TRANSFORMERS_CACHE']}) but transformers 5 ignores "
                     "it: unset it and use HF_HUB_CACHE or HF_HOME")
    return RelocateResult(old, new, kind, copy, links[0], links[1], renamed, dropped, env, tuple(notes))


def _fix_links(root: Path, old: Path, new: Path) -> tuple[int, int]:
    """Make the links of the tree at `root` (which was at `old`, will be at `new`) valid in both places.

    Absolute links into `old` become relative; relative links that leave the tree become absolute (a move
    would break them). Each link is replaced atomically.
    """
    olds = {str(old), os.path.realpath(old)}
    relative = absolute = 0
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames + dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                continue
            target = os.readlink(path)
            if os.path.isabs(target):
                base = next((o for o in olds if _inside(target, o)), None)
                if base is None:
                    continue
                fixed = os.path.relpath(os.path.join(new, os.path.relpath(target, base)), os.path.join(new, rel_dir))
                relative += 1
            else:
                was = os.path.normpath(os.path.join(old, rel_dir, target))
                if _inside(was, str(old)):
                    continue
                fixed = was
                absolute += 1
            tmp = os.path.join(dirpath, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
            os.symlink(fixed, tmp)
            os.replace(tmp, path)
            crash_point()
    return relative, absolute


def _lock_files(root: Path, kind: str) -> list[Path]:
    """Lock files only: hub `.locks/`, shared-store `<xx>/<hash>.lock`, and `*.lock` outside the hub cache."""
    hub = root / "hub" if kind == "hf_home" else root
    found = [p for p in HubCache(hub).locks_dir().rglob("*") if p.is_file() or p.is_symlink()]
    found += [p for p in HubCache(hub).store_dir().glob(f"??/*{Folder.LOCK_SUFFIX}") if p.is_file()]
    if kind == "hf_home":
        for top in root.iterdir():
            if top.is_dir() and top.name != "hub":
                found += [p for p in top.rglob(f"*{Folder.LOCK_SUFFIX}") if p.is_file()]
    return found


def _check_unlocked(root: Path, kind: str) -> None:
    for path in _lock_files(root, kind):
        if path.name.endswith(Folder.LOCK_SUFFIX) and lock_held(path):
            raise HfcacheError(f"{root} is in use: {path} is held by a running process; stop it first")


def _drop_locks(root: Path, kind: str) -> int:
    files = _lock_files(root, kind)
    for p in files:
        p.unlink(missing_ok=True)
    hub = root / "hub" if kind == "hf_home" else root
    for dirpath, _, _ in sorted(os.walk(HubCache(hub).locks_dir()), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)
    return len(files)


def _extracted_key(path: str) -> str:
    """`datasets.utils.extract`: an archive extracts to `downloads/extracted/<sha256(its absolute path)>`."""
    key = hashlib.sha256(path.encode("utf-8")).hexdigest()
    return key + ".py" if path.endswith(".py") else key


def _rekey_extracted(root: Path, kind: str, old: Path, new: Path) -> int:
    """Rename `datasets/downloads/extracted/<key>` folders for the archives' new absolute paths."""
    if kind != "hf_home":
        return 0
    extracted = root / "datasets" / "downloads" / "extracted"
    if not extracted.is_dir():
        return 0
    keys = {p.name for p in extracted.iterdir() if p.is_dir()}
    prefix = os.path.relpath(extracted, root) + os.sep
    todo = {}  # archive (relative path) -> the key its extracted folder has now
    for d, _, names in os.walk(root / "datasets" / "downloads"):
        for name in names:
            rel = os.path.relpath(os.path.join(d, name), root)
            if (key := _extracted_key(os.path.join(old, rel))) in keys:
                todo[rel] = key
    mapping: dict[str, str] = {}
    while todo:  # an archive inside an extracted folder waits until that folder's new name is known
        ready = [rel for rel in todo if _nest(rel, prefix) not in todo.values()]
        if not ready:
            break
        for rel in ready:
            parent = _nest(rel, prefix)
            moved = rel if parent is None else prefix + mapping.get(parent, parent) + rel[len(prefix) + len(parent):]
            mapping[todo.pop(rel)] = _extracted_key(os.path.join(new, moved))
    renamed = 0
    for old_key, new_key in reversed(mapping.items()):  # nested first: a re-run still finds its parents unmoved
        if old_key != new_key and (extracted / old_key).is_dir() and not (extracted / new_key).exists():
            os.rename(extracted / old_key, extracted / new_key)
            renamed += 1
            crash_point()
    return renamed


def _nest(rel: str, prefix: str) -> str | None:
    """The extracted folder an archive lies in, if it lies in one."""
    return rel[len(prefix):].split(os.sep, 1)[0] if rel.startswith(prefix) else None
