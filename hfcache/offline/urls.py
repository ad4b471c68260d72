"""`map-url`: put a file where datasets/evaluate look for a URL they would download, so no script is edited.

Both libraries name a download `sha256(url)` (+ `.` + `sha256(etag)` when an etag was used, + `.py` when the URL
ends in `.py`) with a sidecar `<name>.json` = `{"url", "etag"}`. Offline, or with `use_etag=False` (how builders
fetch data), the etag-free name is the one found. So placing the bytes there replaces "rewrite the URLs".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hfcache.cache.hashing import copy_hashed, hash_file
from hfcache.errors import IntegrityError, UsageError

Target = Literal["datasets", "evaluate"]
TARGETS: tuple[str, ...] = ("datasets", "evaluate")
DEFAULT_ENDPOINT = "https://huggingface.co"
_SCHEMES = ("http://", "https://", "ftp://", "hf://", "s3://", "gs://")


@dataclass(frozen=True)
class MappedUrl:
    """One URL placed in one downloads folder: under each name some library version computes for it."""

    url: str
    target: str
    downloads_dir: Path
    names: tuple[str, ...]
    size: int
    sha256: str

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(self.downloads_dir / n for n in self.names)


def download_name(url: str, etag: str | None = None) -> str:
    """The file name both libraries give a download (`hash_url_to_filename`, unchanged from datasets 1.x to 5.x)."""
    name = hashlib.sha256(url.encode("utf-8")).hexdigest()
    if etag:
        name += "." + hashlib.sha256(etag.encode("utf-8")).hexdigest()
    if url.endswith(".py"):
        name += ".py"
    return name


def hf_rewrite(url: str, endpoint: str | None = None) -> str | None:
    """datasets 2.15-2.21 hash a Hub resolve URL as `hf://<type>s/<repo>@<rev>/<path>`; None for other URLs."""
    endpoint = (endpoint or _endpoint()).rstrip("/")
    if url.startswith(endpoint + "/") and "/resolve/" in url:
        return "hf://" + url[len(endpoint) + 1:].replace("/resolve/", "@", 1)
    return None


def names_for(url: str, target: str) -> tuple[str, ...]:
    """Every etag-free name a supported version of `target` computes for `url`, first the current one."""
    names = [download_name(url)]
    rewritten = hf_rewrite(url) if target == "datasets" else None
    if rewritten is not None:
        names.append(download_name(rewritten))
    return tuple(names)


def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def evaluate_script_url(repo: str, version: str) -> str:
    """The URL `evaluate.load` fetches a Hub module's script from: Space `repo`, tag `v<version>` (main for dev)."""
    revision = os.environ.get("HF_SCRIPTS_VERSION") or ("main" if "dev" in version else version)
    if re.match(r"\d*\.\d*\.\d*", revision):
        revision = "v" + revision
    name = repo.split("/")[-1]
    return f"{_endpoint()}/spaces/{repo}/resolve/{revision}/{name}.py"


def datasets_metric_url(name: str, version: str) -> str:
    """The URL `datasets.load_metric` (<= 2.x) fetches a canonical metric script from, at the library's version."""
    revision = "main" if "dev" in version else version
    return f"https://raw.githubusercontent.com/huggingface/datasets/{revision}/metrics/{name}/{name}.py"


def check_url(url: str) -> str:
    if not url.startswith(_SCHEMES) or any(c.isspace() for c in url):
        raise UsageError(f"not a URL: {url!r} (expected {', '.join(s.rstrip('/') for s in _SCHEMES)})")
    return url


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def _place(src: Path, dst: Path, size: int, expected: str | None) -> str:
    """Copy `src` to `dst` atomically, hashing on the way and once more from disk; a mismatch leaves nothing."""
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.incomplete")
    try:
        with open(src, "rb", buffering=0) as fin, open(tmp, "wb") as fout:
            digest = copy_hashed(fin, fout, "sha256", size)
            fout.flush()
            os.fsync(fout.fileno())
        if expected is not None and digest != expected:
            raise IntegrityError(f"{src} changed while it was copied (sha256 {digest}, expected {expected})")
        written = hash_file(tmp, "sha256")
        if written != digest:
            raise IntegrityError(f"copy of {src} at {dst} is damaged (sha256 {written}, read {digest})")
        os.replace(tmp, dst)
        return digest
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def map_url(url: str, file: str | os.PathLike[str], target: str, downloads_dir: Path) -> MappedUrl:
    """Place `file` as the download of `url` for `target`, under every name it may be looked up by."""
    check_url(url)
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r} (expected one of {', '.join(TARGETS)})")
    src = Path(file)
    if not src.is_file():
        raise UsageError(f"{src}: no such file")
    size = src.stat().st_size
    downloads_dir.mkdir(parents=True, exist_ok=True)
    names = names_for(url, target)
    digest: str | None = None
    for name, hashed_url in zip(names, (url, hf_rewrite(url)), strict=False):
        digest = _place(src, downloads_dir / name, size, digest)
        _write_json(downloads_dir / f"{name}.json", {"url": hashed_url, "etag": None})
    assert digest is not None
    return MappedUrl(url=url, target=target, downloads_dir=downloads_dir, names=names, size=size, sha256=digest)


def is_mapped(url: str, downloads_dir: Path, target: str = "datasets") -> Path | None:
    """The placed file a library would find offline for `url`, or None."""
    for name in names_for(url, target):
        if (downloads_dir / name).is_file():
            return downloads_dir / name
    return None
