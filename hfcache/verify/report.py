"""What `verify` finds: problem kinds, one `Problem` per finding, and the report a run returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hfcache.errors import UsageError

ERROR, WARNING = "error", "warning"

KINDS = {
    "hash-mismatch": "the content does not hash to what is recorded",
    "size-mismatch": "the file size differs from what is recorded",
    "missing-file": "a listed file is not in the snapshot",
    "extra-file": "a snapshot file is not in the listing",
    "broken-link": "a snapshot link points to a blob that does not exist",
    "bad-link": "a snapshot entry does not point to a blob of its own repo",
    "blob-outside-cache": "a blob is a link that leads out of the cache",
    "dangling-ref": "a ref names no snapshot",
    "missing-repo": "the repo is not in the cache",
    "missing-snapshot": "the revision is not in the cache",
    "not-on-hub": "the endpoint does not know this commit",
    "unreadable": "the file cannot be read",
    "incomplete-download": "a partial download was left behind (warning)",
    "stale-lock": "a lock for a blob that never arrived (warning)",
    "download-in-progress": "another process holds a blob's lock (warning)",
    "unreadable-tree": "trees/<commit>.json cannot be read (warning)",
    "unverifiable": "nothing records what this file should hash to (warning)",
    "ref-moved": "the endpoint's ref points to another commit (warning)",
    "store-link-invalid": "a blob links into the shared store, but not to an entry huggingface_hub knows (warning)",
    "store-ref-missing": "a blob links into the shared store without being in the entry's .refs (warning)",
}



class OnlineUnavailable(UsageError):
    """`--online` could not get the endpoint's listing; the caller still runs and reports the offline checks."""

@dataclass(frozen=True)
class Problem:
    """One finding. Paths and blob are relative to the cache root, so they name the place unambiguously."""

    kind: str
    repo: str
    paths: tuple[str, ...] = ()
    blob: str | None = None
    expected: str | None = None
    actual: str | None = None
    bytes: int = 0
    severity: str = ERROR
    sources: tuple[str, ...] = ()  # who recorded the expectation: name, tree, hub, lock

    def describe(self) -> str:
        what = self.blob or (self.paths[0] if self.paths else self.repo)
        parts = [f"{self.kind}: {what}"]
        if self.expected is not None or self.actual is not None:
            parts.append(f"expected {self.expected}, got {self.actual}")
        if self.sources:
            parts.append(f"per {'+'.join(self.sources)}")
        if self.blob and self.paths:
            parts.append("linked from " + ", ".join(self.paths))
        elif self.blob and self.kind in ("hash-mismatch", "size-mismatch", "unreadable"):
            parts.append("no snapshot links to it")
        elif len(self.paths) > 1:
            parts.append("also " + ", ".join(self.paths[1:]))
        return "; ".join(parts)


@dataclass(frozen=True)
class RepoResult:
    repo_id: str
    repo_type: str
    snapshots: tuple[str, ...]
    files: int  # snapshot entries checked
    blobs: int  # physical files hashed
    bytes: int  # bytes hashed
    problems: tuple[Problem, ...]

    @property
    def name(self) -> str:
        return self.repo_id if self.repo_type == "model" else f"{self.repo_type}:{self.repo_id}"

    @property
    def ok(self) -> bool:
        return not any(p.severity == ERROR for p in self.problems)


@dataclass(frozen=True)
class VerifyReport:
    cache_dir: Path
    repos: tuple[RepoResult, ...]
    problems: tuple[Problem, ...]
    files: int
    blobs: int
    bytes: int
    seconds: float
    jobs: int
    online: bool = False
    lock: bool = False

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == ERROR)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == WARNING)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def gib_per_s(self) -> float:
        return self.bytes / 2**30 / self.seconds if self.seconds > 0 else 0.0
