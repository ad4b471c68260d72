"""What `hfcache scan` shows about safety, without reading any file: pickle-format files and remembered verdicts.

A file counts as pickle-format when its remembered verdict says so (its bytes were read by an earlier
`verify --safety` or `inspect`), or, never checked, when its name says so (.bin, .pt, .pth, .ckpt, .pkl, .joblib,
...). Snapshot entries are listed (names and link targets only), and the verdict store is queried once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from hfcache.safety.policy import CRITICAL, SAFE, UNKNOWN, UNSAFE

PICKLE_NAMES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".dill", ".mar", ".npy", ".npz")
PICKLE_FORMATS = ("pickle", "torch-zip", "torch-legacy", "joblib", "compressed pickle", "compressed joblib")


@dataclass
class SafetyTally:
    files: int = 0
    pickle_format: int = 0  # by remembered verdict, else by name
    checked: int = 0  # files with a remembered verdict
    verdicts: dict[str, int] = field(default_factory=lambda: {SAFE: 0, UNKNOWN: 0, UNSAFE: 0, CRITICAL: 0})
    unsafe_repos: dict[str, str] = field(default_factory=dict)  # repo -> its worst remembered verdict

    def to_json(self) -> dict:
        return {"files": self.files, "pickle_format_files": self.pickle_format, "checked": self.checked,
                "unchecked": self.files - self.checked, "verdicts": dict(self.verdicts),
                "unsafe_repos": dict(sorted(self.unsafe_repos.items()))}


def tally(hub, store_path) -> SafetyTally:
    """`hub` is a `scan.model.HubScan`; `store_path` the verdict store (`HubCache.safety_verdicts_path()`)."""
    from hfcache.cache.paths import repo_snapshot_dir
    from hfcache.safety.policy import RANK

    entries: list[tuple[str, str, str]] = []  # (repo, file name, blob name)
    for repo in hub.repos:
        name = repo.repo_id if repo.repo_type == "model" else f"{repo.repo_type}:{repo.repo_id}"
        for rev in repo.revisions:
            for rel, target in _entries(repo_snapshot_dir(repo.path, rev.commit)):
                entries.append((name, rel, target))
    out = SafetyTally(files=len(entries))
    known: dict = {}
    if store_path.exists():  # nothing remembered yet: no store to open (and no sqlite to import)
        from hfcache.safety.verdicts import Memory

        memory = Memory(store_path)
        try:
            known = memory.by_name({blob for _, _, blob in entries})
        finally:
            memory.close()
    for repo, rel, blob in entries:
        seen = known.get(blob)
        if seen is None:
            out.pickle_format += rel.lower().endswith(PICKLE_NAMES)
            continue
        verdict, fmt = seen
        out.checked += 1
        out.pickle_format += fmt in PICKLE_FORMATS
        out.verdicts[verdict] = out.verdicts.get(verdict, 0) + 1
        if verdict != SAFE and RANK.get(verdict, 0) > RANK.get(out.unsafe_repos.get(repo, SAFE), 0):
            out.unsafe_repos[repo] = verdict
    return out


def _entries(folder: str):
    """(path in the snapshot, blob name or real path) for each entry; links are read, files are not."""
    stack = [("", folder)]
    while stack:
        prefix, d = stack.pop()
        try:
            it = list(os.scandir(d))
        except OSError:
            continue
        for e in it:
            if e.is_dir(follow_symlinks=False):
                stack.append((f"{prefix}{e.name}/", e.path))
            elif e.is_symlink():
                yield prefix + e.name, os.path.basename(os.readlink(e.path))
            else:
                yield prefix + e.name, os.path.realpath(e.path)
