"""Names from outside (a server, a `trees/*.json`, a bundle manifest, a request, the command line), checked once.

Each is a `str` subclass whose constructor refuses a bad string with `UnsafePath` (or `UsageError` for what a user
typed), so a value of one of these types is proof the check ran. The layout builds paths only from them: no code
can make a cache path from an unchecked name. Constructing from a value that already has the type costs nothing.

    BlobName   40-hex git blob sha1 or 64-hex sha256 (the xet hash has the sha256 shape): `blobs/<name>`
    XetHash    64-hex xet hash: `<cache>/blobs/<xx>/<hash>` in the shared store
    Commit     40-hex commit sha: `snapshots/<commit>`, `trees/<commit>.json`, `.no_exist/<commit>`
    RefName    a branch, tag or `refs/pr/N`: a file under `refs/`, never leaving it
    RelPath    a file path inside a snapshot: `/`-separated, no `..`, `.`, empty part, backslash, NUL or drive
    RepoFolder `<type>s--<org>--<name>`: a repo's folder in the cache
"""

from __future__ import annotations

import re

from hfcache.errors import UnsafePath, UsageError

_BLOB_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_HASH64_RE = re.compile(r"[0-9a-f]{64}")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_DRIVE_RE = re.compile(r"[A-Za-z]:")
_FOLDER_RE = re.compile(r"(models|datasets|spaces|kernels)--[A-Za-z0-9._-]+(--[A-Za-z0-9._-]+)?")


class _Name(str):
    __slots__ = ()
    what = "name"

    def __new__(cls, value: str):
        if type(value) is cls:
            return value
        if not isinstance(value, str) or not cls._ok(value):
            raise UnsafePath(f"refusing {cls.what} {value!r}")
        return super().__new__(cls, value)

    @classmethod
    def _ok(cls, value: str) -> bool:
        raise NotImplementedError

    @classmethod
    def check(cls, value: str) -> bool:
        """Whether `value` is a valid name of this kind, without raising."""
        return isinstance(value, str) and cls._ok(value)


class BlobName(_Name):
    """A blob's name in `blobs/`: the git blob sha1 (40 hex) or the LFS sha256 (64 hex)."""

    __slots__ = ()
    what = "blob name (expected a 40- or 64-character lowercase hex hash)"

    @classmethod
    def _ok(cls, value: str) -> bool:
        return _BLOB_RE.fullmatch(value) is not None


class XetHash(_Name):
    """A file's xet hash: 64 hex, the name of its entry in the shared store."""

    __slots__ = ()
    what = "xet hash (expected 64 lowercase hex characters)"

    @classmethod
    def _ok(cls, value: str) -> bool:
        return _HASH64_RE.fullmatch(value) is not None


class Commit(_Name):
    """A full commit sha (40 hex)."""

    __slots__ = ()
    what = "commit (expected 40 lowercase hex characters)"

    @classmethod
    def _ok(cls, value: str) -> bool:
        return _COMMIT_RE.fullmatch(value) is not None


NAME_MAX = 255


def _relpath_ok(value: str) -> bool:
    """No way out of the folder, and no component a file system refuses (over NAME_MAX, 255 bytes): such a name
    fails where it enters, not as an OSError deep in a write or a read."""
    return bool(value) and "\0" not in value and "\\" not in value and not value.startswith("/") \
        and _DRIVE_RE.match(value) is None \
        and all(part not in ("", ".", "..") and len(part.encode("utf-8", "surrogatepass")) <= NAME_MAX
                for part in value.split("/"))


class RelPath(_Name):
    """A repo-relative file path: it cannot leave the folder it is joined to."""

    __slots__ = ()
    what = "unsafe file name"

    @classmethod
    def _ok(cls, value: str) -> bool:
        return _relpath_ok(value)

    @property
    def parts(self) -> list[str]:
        return self.split("/")


class RefName(_Name):
    """A revision name as stored under `refs/` (`main`, `v1.0`, `refs/pr/3`): typed by a user, so a bad one is a
    usage error."""

    __slots__ = ()
    what = "revision"

    def __new__(cls, value: str):
        try:
            return super().__new__(cls, value)
        except UnsafePath:
            raise UsageError(f"invalid revision {value!r}") from None

    @classmethod
    def _ok(cls, value: str) -> bool:
        return _relpath_ok(value)


class RepoFolder(_Name):
    """A repo's folder name in a hub cache, `<type>s--<org>--<name>` (or `<type>s--<name>`)."""

    __slots__ = ()
    what = "repo folder name"

    @classmethod
    def _ok(cls, value: str) -> bool:
        return _FOLDER_RE.fullmatch(value) is not None and ".." not in value


# huggingface_hub's `validate_repo_id` rules and words (utils/_validators.py), here because importing that module
# imports huggingface_hub.errors and with it the whole HTTP client: an offline command must not pay for it.
# tests/test_structure.py checks both agree on a corpus of good and hostile ids.
_REPO_ID_RE = re.compile(
    r"""
    (\b[\w\-.]{1,96}\b/)? # optional namespace
    \b[\w\-.]{1,96}\b     # repo name
    """,
    flags=re.VERBOSE | re.ASCII,
)


def repo_id_problem(repo_id: object) -> str | None:
    """Why `huggingface_hub.utils.validate_repo_id` would refuse `repo_id` (its message), or None when it is valid."""
    if not isinstance(repo_id, str):
        return f"Repo id must be a string, not {type(repo_id)}: '{repo_id}'."
    if repo_id.count("/") > 1:
        return ("Repo id must be in the form 'repo_name' or 'namespace/repo_name':"
                f" '{repo_id}'. Use `repo_type` argument if needed.")
    if not _REPO_ID_RE.fullmatch(repo_id):
        return ("Repo id must use alphanumeric chars, '-', '_' or '.'."
                " The name cannot start or end with '-' or '.' and the maximum length is 96:"
                f" '{repo_id}'.")
    if "--" in repo_id or ".." in repo_id:
        return f"Cannot have -- or .. in repo_id: '{repo_id}'."
    if repo_id.endswith(".git"):
        return f"Repo_id cannot end by '.git': '{repo_id}'."
    return None
