"""The one adapter for `huggingface_hub`'s private names: its 2.x shared blob store (`utils._shared_blobs`).

Nothing else in hfcache imports a private `huggingface_hub` name. Where the library lacks one of these (an
older or newer release that moved it), each function says so by returning None/False, and callers keep to
plain per-repo blobs, which every release reads. `tests/test_structure.py` fails loudly if the names move,
so a library upgrade that changes them is noticed, not silently degraded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

SHARED_MARKER = ".huggingface-shared-blobs"  # the store's marker file, as `is_shared_blobs_dir` checks it


def _module():
    try:
        from huggingface_hub.utils import _shared_blobs
    except ImportError:
        return None
    return _shared_blobs


def shared_blob_target(blob: Path, cache_root: Path) -> Path | None:
    """The shared-store file a repo's `blobs/<etag>` link leads to, or None (not a store link, or no store)."""
    m = _module()
    return m.shared_blob_target(blob, cache_root) if m is not None else None


def sweep_shared_blob(store_path: Path, cache_root: Path) -> int:
    """Drop a store entry's stale `.refs` lines and the entry itself when nothing links to it (bytes freed)."""
    m = _module()
    return m.sweep_shared_blob(store_path, cache_dir=cache_root) if m is not None else 0


def expected_sweep_bytes(store_path: Path, cache_root: Path, deleting: set[Path]) -> int:
    """What `sweep_shared_blob` would free once the repo blob links `deleting` are gone (0: it would keep it)."""
    m = _module()
    if m is None:
        return 0
    return m.expected_shared_blob_freed_size(store_path, blob_paths_to_delete=deleting, cache_dir=cache_root)


def unreferenced_store_files(cache_root: Path) -> dict[Path, int]:
    """Store payloads whose `.refs` manifest names no live link: those `sweep_shared_blob` deletes (with sizes).
    A payload with no manifest, or an unreadable one, is not among them: huggingface_hub leaks it rather than risk
    deleting referenced bytes."""
    m = _module()
    return m.unreferenced_shared_blobs(cache_root) if m is not None else {}


def publisher() -> Callable | None:
    """`publish_blob_to_shared_store` when the shared store is on (HF_HUB_DISABLE_SHARED_BLOBS unset), else None."""
    m = _module()
    if m is None or not m.shared_blobs_enabled():
        return None
    return m.publish_blob_to_shared_store


def store_linker() -> Callable | None:
    """`try_link_from_shared_store` (link `blobs/<etag>` to an existing store entry) when the store is on."""
    m = _module()
    if m is None or not m.shared_blobs_enabled():
        return None
    return m.try_link_from_shared_store


REQUIRED = ("shared_blob_target", "sweep_shared_blob", "shared_blobs_enabled", "publish_blob_to_shared_store",
            "SHARED_BLOBS_MARKER_NAME", "expected_shared_blob_freed_size", "unreferenced_shared_blobs",
            "try_link_from_shared_store")
