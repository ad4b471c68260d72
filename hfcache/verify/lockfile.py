"""Lock files: pin repos to commits and every file to its size and hash, as a package lock pins versions.

    {
      "repos": [
        {
          "commit": "<40 hex>",
          "files": {
            "config.json": {"git-sha1": "<40 hex>", "size": 571},
            "model.safetensors": {"sha256": "<64 hex>", "size": 437955512}
          },
          "id": "org/name",
          "revision": "main",
          "type": "model"
        }
      ],
      "version": 1
    }

Keys are sorted and each file takes one line, so a change to a pin is a one-line diff. A file is pinned by the
hash its blob is named by: sha256 for LFS files, git blob sha1 otherwise, so checking costs no extra pass.
"""

from __future__ import annotations

import glob
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hfcache.cache.hashing import HashKind, kind_of
from hfcache.cache.layout import HubCache, RepoRef, is_commit, safe_relpath
from hfcache.cache.meta import FileMeta
from hfcache.errors import EndpointError, HfcacheError, LockContradicted, OfflineCacheMiss, UsageError
from hfcache.units import counted

LOCK_VERSION = 1


@dataclass(frozen=True)
class LockedFile:
    size: int
    kind: HashKind
    digest: str

    @classmethod
    def from_meta(cls, meta: FileMeta) -> LockedFile:
        kind = kind_of(meta.etag)
        if kind is None:
            raise UsageError(f"cannot pin a file whose blob name {meta.etag!r} is not a sha256 or git sha1")
        return cls(meta.size, kind, meta.etag)


@dataclass(frozen=True)
class LockedRepo:
    repo: RepoRef
    revision: str
    commit: str
    files: Mapping[str, LockedFile]


@dataclass(frozen=True)
class Lock:
    repos: tuple[LockedRepo, ...]

    def select(self, specs: Sequence[tuple[RepoRef, str | None]]) -> Lock:
        """The entries named by `REPO_ID[@REV]` specs (a revision matches the pinned revision or commit)."""
        if not specs:
            return self
        kept = tuple(e for e in self.repos
                     if any(e.repo == r and rev in (None, e.revision, e.commit) for r, rev in specs))
        missing = [f"{r}@{rev}" if rev else str(r) for r, rev in specs
                   if not any(e.repo == r and rev in (None, e.revision, e.commit) for e in kept)]
        if missing:
            raise UsageError(f"not in the lock file: {', '.join(missing)}")
        return Lock(kept)


# -- text ----------------------------------------------------------------------------------------------------------
def dumps(lock: Lock) -> str:
    """Sorted keys, one file per line: valid JSON that diffs line by line."""
    d = json.dumps
    entries = []
    for e in sorted(lock.repos, key=lambda e: (e.repo.repo_type, e.repo.repo_id, e.revision)):
        files = ",\n".join(f"        {d(p)}: {d({f.kind: f.digest, 'size': f.size}, sort_keys=True)}"
                            for p, f in sorted(e.files.items()))
        entries.append(
            "    {\n"
            f'      "commit": {d(e.commit)},\n'
            + (f'      "files": {{\n{files}\n      }},\n' if files else '      "files": {},\n')
            + f'      "id": {d(e.repo.repo_id)},\n'
            f'      "revision": {d(e.revision)},\n'
            f'      "type": {d(e.repo.repo_type)}\n'
            "    }")
    body = ",\n".join(entries)
    repos = f"[\n{body}\n  ]" if entries else "[]"
    return f'{{\n  "repos": {repos},\n  "version": {LOCK_VERSION}\n}}\n'


def loads(text: str, source: str = "lock file") -> Lock:
    """Parse and validate; anything off is a one-line usage error naming the file."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != LOCK_VERSION:
            raise ValueError(f"unknown lock file version {data.get('version') if isinstance(data, dict) else None!r}")
        return Lock(tuple(_entry(e) for e in data["repos"]))
    except HfcacheError as e:
        raise UsageError(f"{source}: {e}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"{source}: not a valid hfcache lock file ({type(e).__name__}: {e})") from None


def _entry(e: dict) -> LockedRepo:
    repo = RepoRef(e["id"], e["type"])
    if not is_commit(e["commit"]):
        raise ValueError(f"{repo}: {e['commit']!r} is not a commit sha")
    files = {}
    for path, info in e["files"].items():
        hashes = [(k, v) for k, v in info.items() if k in ("sha256", "git-sha1")]
        if len(hashes) != 1 or kind_of(hashes[0][1]) != hashes[0][0]:
            raise ValueError(f"{repo} {path}: needs exactly one of sha256 (64 hex) or git-sha1 (40 hex)")
        size = info["size"]
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"{repo} {path}: bad size {size!r}")
        files[safe_relpath(path)] = LockedFile(size, hashes[0][0], hashes[0][1])
    return LockedRepo(repo, str(e["revision"]), e["commit"], files)


def read(path: Path) -> Lock:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot read lock file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a valid hfcache lock file (not UTF-8 text)") from None
    return loads(text, str(path))


def write(path: Path, lock: Lock) -> None:
    """Atomically, so an interrupted `hfcache lock` never leaves half a lock file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(dumps(lock), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write lock file {path}: {e.strerror or e}") from None


# -- making and using locks ----------------------------------------------------------------------------------------
def pin(cache: HubCache, specs: Sequence[tuple[RepoRef, str | None]], client=None,
        include: Sequence[str] | None = None, exclude: Sequence[str] | None = None) -> Lock:
    """Resolve each `REPO_ID[@REV]` to a commit and its file listing: from the endpoint when `client` is given
    (a listing already in `trees/` is reused: a commit's files never change), else from the cache alone."""
    from hfcache.fetch.patterns import selected

    entries = []
    for repo, rev in specs:
        revision = rev or "main"
        if client is not None:
            commit = client.resolve_revision(repo, revision)
            files = cache.read_tree(repo, commit)
            if files is None:
                files = client.list_files(repo, commit)
                cache.write_tree(repo, commit, files)
        else:
            commit = revision if is_commit(revision) else cache.read_ref(repo, revision)
            files = cache.read_tree(repo, commit) if commit else None
            if files is None:
                raise OfflineCacheMiss(f"cannot pin {repo}@{revision} offline: no cached listing "
                                       f"({'no ref' if commit is None else f'no trees/{commit}.json'}) in {cache.root}")
        keep = selected(files, include, exclude)
        entries.append(LockedRepo(repo, revision, commit, {p: LockedFile.from_meta(files[p]) for p in sorted(keep)}))
    return Lock(tuple(entries))


def fetch(lock: Lock, fetcher, source: str = "the lock") -> list:
    """`snapshot --lock`: each pinned commit with exactly its pinned files (through `Fetcher.snapshot`, which
    checks every byte it fetches); the pinned revision's ref is pointed at the pinned commit.

    Online, every pin is first compared with the endpoint's listing of its commit: a lock the endpoint
    contradicts fetches nothing, rather than half its files and then a failed check.
    """
    if not fetcher.offline:
        listings = _listings(lock, fetcher.cache, fetcher.client)
        check(listings, fetcher.client.endpoint, source)
        for e, files, cached in listings:
            if not cached:  # saves `Fetcher.snapshot` listing the commit again
                fetcher.cache.write_tree(e.repo, e.commit, files)
    results = []
    for e in lock.repos:
        if not e.files:
            continue
        patterns = [glob.escape(p) for p in e.files]  # exact names, even with `*` or `[` in them
        results.append(fetcher.snapshot(e.repo, e.commit, include=patterns))
        if not fetcher.offline and e.revision != e.commit:
            fetcher.cache.write_ref(e.repo, e.revision, e.commit)
    return results


Listing = tuple[LockedRepo, dict[str, FileMeta], bool]  # an entry, its commit's files, read from trees/?


def _listings(lock: Lock, cache: HubCache, client) -> list[Listing]:
    """Each entry's listing and whether it came from `trees/` (a commit's files never change, so a cached
    listing is the endpoint's). An unreachable endpoint is left to `Fetcher.snapshot`, which falls back to the
    cache."""
    out = []
    for e in lock.repos:
        if not e.files:
            continue
        files = cache.read_tree(e.repo, e.commit)
        if files is not None:
            out.append((e, files, True))
            continue
        try:
            out.append((e, client.list_files(e.repo, e.commit), False))
        except EndpointError:
            continue
    return out


def check(listings: Sequence[Listing], endpoint: str, source: str = "the lock") -> None:
    """Refuse, in one line naming the first, pins the listings contradict (other hash or size, or no such file)."""
    found = [(e, path, pin, listing.get(path)) for e, listing, _ in listings
             for path, pin in sorted(e.files.items()) if _contradicts(pin, listing.get(path))]
    if not found:
        return
    e, path, pin, meta = found[0]
    listed = "no such file" if meta is None else f"{kind_of(meta.etag)} {meta.etag} ({counted(meta.size, 'byte')})"
    pinned = sum(len(e.files) for e, _, _ in listings)
    verb = "disagrees" if len(found) == 1 else "disagree"
    raise LockContradicted(
        f"{source} contradicts {endpoint} for {e.repo}@{e.commit[:12]}: {path} is pinned as {pin.kind} "
        f"{pin.digest} ({counted(pin.size, 'byte')}), the endpoint lists {listed}; {len(found)} of "
        f"{counted(pinned, 'pinned file')} {verb}, nothing fetched")


def _contradicts(pin: LockedFile, meta: FileMeta | None) -> bool:
    return meta is None or (pin.digest, pin.size) != (meta.etag, meta.size)
