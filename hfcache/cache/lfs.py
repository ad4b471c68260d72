"""Which files a git server stores with LFS, and a local file's Hub metadata from its bytes.

Used wherever a file without a tree listing must be named as the Hub would name it: a folder served as a repo,
a snapshot file turned into a blob (`convert --to-symlinks`), an export of a copied snapshot.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from hfcache.cache.hashing import hash_bytes, hash_file, lfs_pointer
from hfcache.cache.meta import FileMeta

# The Hub's default .gitattributes: these files are stored with LFS, as is anything over 10 MB.
LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*", "*.mlmodel",
    "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt",
    "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm",
    "*.xz", "*.zip", "*.zst", "*tfevents*", "*.lz4", "*.mds", "*.mp3", "*.ogg", "*.wav", "*.flac", "*.jpg",
    "*.jpeg", "*.png", "*.webp", "*.mp4", "*.webm",
)
LFS_SIZE_THRESHOLD = 10 * 1000 * 1000


def is_lfs_path(path: str, size: int) -> bool:
    name = path.rsplit("/", 1)[-1]
    return size > LFS_SIZE_THRESHOLD or any(
        fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(path, p) for p in LFS_PATTERNS
    )


def file_meta(path: Path, repo_path: str) -> FileMeta:
    """Hub metadata for a local file: LFS by the default rules, git blob id otherwise."""
    size = path.stat().st_size
    if is_lfs_path(repo_path, size):
        sha = hash_file(path, "sha256")
        pointer = lfs_pointer(sha, size)
        return FileMeta(size=size, blob_id=hash_bytes(pointer, "git-sha1"), lfs_sha256=sha, lfs_size=size)
    return FileMeta(size=size, blob_id=hash_file(path, "git-sha1"))
