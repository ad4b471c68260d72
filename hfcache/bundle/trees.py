"""A bundle's tree listings: checked item by item, in bounded memory, before any of them is published."""

from __future__ import annotations

from typing import BinaryIO

from hfcache.bundle.jsonstream import START, walk
from hfcache.bundle.manifest import MAX_ENTRY_BYTES, Manifest
from hfcache.cache.meta import MAX_TREE_BYTES, TREE_FORMAT_VERSION, FileMeta
from hfcache.cache.names import RelPath
from hfcache.errors import BundleError, UnsafePath


def check_trees(manifest: Manifest, trees: dict[str, BinaryIO]) -> None:
    """A tree listing must be one huggingface_hub reads, naming only checked paths and blob names, and agree with
    the snapshot files of its commit on every blob name and size. Read item by item: memory stays bounded."""
    blob_size = {(e.repo, e.path): e.size for e in manifest.of_role("blob")}
    files = {(f.repo, f.commit, f.path): f.blob for f in manifest.of_role("file")}
    for t in manifest.of_role("tree"):
        where = f"the bundle's tree listing of {t.repo}@{t.commit[:12]}"
        stream = trees[t.payload]
        stream.seek(0)
        version = None
        try:
            for key, value in walk(stream, {"files": "object"}, MAX_TREE_BYTES, MAX_ENTRY_BYTES):
                if key == "format_version":
                    version = value
                if key != "files":
                    continue
                if version != TREE_FORMAT_VERSION:
                    raise BundleError(f"{where} is not in a format this hfcache reads; nothing was imported")
                if value is START:
                    continue
                path, info = value
                meta = FileMeta.from_json(info)
                etag = files.get((t.repo, t.commit, RelPath(path)))
                if etag is not None and (etag != meta.etag or blob_size[(t.repo, etag)] != meta.size):
                    raise BundleError(f"{where} disagrees with its files about {path!r}; nothing was imported")
        except UnsafePath as e:
            raise BundleError(f"{where}: {e}; nothing was imported") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise BundleError(f"{where} is not a tree listing ({e}); nothing was imported") from None
        if version != TREE_FORMAT_VERSION:
            raise BundleError(f"{where} is not in a format this hfcache reads; nothing was imported")
