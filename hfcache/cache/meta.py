"""What the Hub says about a file at a commit (`FileMeta`), and `trees/<commit>.json`, the listing that records it.

Both come from outside (a server, a cache another tool wrote, a bundle): every name and size is checked on the way in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from hfcache.cache.names import BlobName, RelPath, XetHash
from hfcache.errors import UnsafePath

TREE_FORMAT_VERSION = 1
MAX_TREE_BYTES = 64 * 1024 * 1024  # a listing of ~400k files; a larger trees/*.json is ignored as unreadable


@dataclass(frozen=True)
class FileMeta:
    """What the Hub says about one file at one commit; also one entry of `trees/<commit>.json`."""

    size: int
    blob_id: str
    lfs_sha256: str | None = None
    lfs_size: int | None = None
    xet_hash: str | None = None

    @property
    def etag(self) -> str:
        """The blob name: sha256 for LFS files, the git blob sha1 otherwise."""
        return self.lfs_sha256 or self.blob_id

    def to_json(self) -> dict:
        info: dict = {"size": self.size, "blob_id": self.blob_id}
        if self.lfs_sha256 is not None:
            info["lfs_sha256"] = self.lfs_sha256
            info["lfs_size"] = self.lfs_size
        if self.xet_hash is not None:
            info["xet_hash"] = self.xet_hash
        return info

    @classmethod
    def from_json(cls, info: dict) -> FileMeta:
        """One entry of a `trees/*.json` listing (a file anyone may have written): checked like a server's."""
        return cls.checked(info["size"], info["blob_id"], info.get("lfs_sha256"), info.get("lfs_size"),
                           info.get("xet_hash"))

    @classmethod
    def checked(cls, size: object, blob_id: object, lfs_sha256: object = None, lfs_size: object = None,
                xet_hash: object = None) -> FileMeta:
        """Metadata from outside (a server's listing, a tree file): every name that becomes a path is a checked
        name (`blobs/<etag>` cannot be `.` or `../other-repo/blobs/x`), every size a non-negative int."""
        for what, n in (("size", size), ("lfs size", lfs_size)):
            if (n is not None or what == "size") and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
                raise UnsafePath(f"refusing file {what} {n!r}")
        if lfs_sha256 is not None and not XetHash.check(lfs_sha256):  # same shape: 64 lowercase hex
            raise UnsafePath(f"refusing LFS sha256 {lfs_sha256!r} (expected 64 lowercase hex characters)")
        return cls(size=size, blob_id=BlobName(blob_id), lfs_sha256=lfs_sha256, lfs_size=lfs_size,
                   xet_hash=None if xet_hash is None else XetHash(xet_hash))


def parse_tree(data: bytes) -> dict[str, FileMeta] | None:
    """A `trees/<commit>.json` listing's files, every path and blob name checked; None for another format.
    Raises ValueError/KeyError/TypeError/AttributeError for what is not a listing, `UnsafePath` for a bad name."""
    parsed = json.loads(data)
    if parsed.get("format_version") != TREE_FORMAT_VERSION:
        return None
    return {RelPath(path): FileMeta.from_json(info) for path, info in parsed["files"].items()}
