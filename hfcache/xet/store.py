"""A checked Xet download into the cache as huggingface_hub 2.4 leaves it, through its own store functions.

With the shared store on (neither HF_HUB_DISABLE_XET nor HF_HUB_DISABLE_SHARED_BLOBS, and symlinks work in this
cache): the bytes go to `<cache>/blobs/<xx>/<xet_hash>` (read-only), `<xet_hash>.refs` gains the repo blob's line,
and `blobs/<sha256>` becomes a link to it (`publish_blob_to_shared_store`); a store entry another repo or revision
published is linked without any download (`try_link_from_shared_store`). Otherwise the repo blob is a plain file.
"""

from __future__ import annotations

import os
from pathlib import Path

from hfcache.cache import durable
from hfcache.cache.hfhub import publisher, store_linker
from hfcache.cache.layout import HubCache
from hfcache.cache.meta import FileMeta
from hfcache.cache.paths import XetPartialPaths


def shared_enabled(cache: HubCache) -> bool:
    return publisher() is not None and cache.symlinks_supported()


def link_existing(cache: HubCache, blob: Path, meta: FileMeta) -> bool:
    """`blobs/<sha256>` linked to the store's entry for its Xet hash, when there is one (no bytes fetched)."""
    linker = store_linker()
    if linker is None or not cache.symlinks_supported() or meta.xet_hash is None:
        return False
    return bool(linker(blob_path=str(blob), xet_hash=meta.xet_hash, cache_dir=cache.root, expected_size=meta.size))


def publish(cache: HubCache, paths: XetPartialPaths, meta: FileMeta) -> Path:
    """Move the checked partial to `blobs/<sha256>`, then into the shared store when it is on; returns where the
    bytes now live."""
    durable.fsync_file(paths.path)
    if os.path.lexists(paths.blob):
        os.unlink(paths.blob)  # a stale or wrong entry (checked and refused by the caller)
    os.replace(paths.path, paths.blob)
    pub = publisher()
    if pub is not None and cache.symlinks_supported() and meta.xet_hash is not None and pub(
            blob_path=str(paths.blob), xet_hash=meta.xet_hash, cache_dir=cache.root, expected_size=meta.size):
        return cache.store_blob_path(meta.xet_hash)
    return paths.blob
