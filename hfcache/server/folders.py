"""Parsing `--repo [TYPE:]ORG/NAME[@REVISION]=FOLDER` specs for `hfcache serve`."""

from __future__ import annotations

from pathlib import Path

from hfcache.cache.layout import RepoRef
from hfcache.errors import UsageError
from hfcache.server.catalog import Catalog


def parse_folder_spec(spec: str) -> tuple[RepoRef, str, Path]:
    name, sep, folder = spec.partition("=")
    if not sep or not folder:
        raise UsageError(f"--repo {spec!r}: expected [TYPE:]ORG/NAME[@REVISION]=FOLDER")
    repo_type = "model"
    if ":" in name:
        repo_type, name = name.split(":", 1)
    repo_id, _, revision = name.partition("@")
    return RepoRef(repo_id, repo_type), revision or "main", Path(folder)


def add_folder_specs(catalog: Catalog, specs: list[str]) -> None:
    for spec in specs:
        repo, revision, folder = parse_folder_spec(spec)
        if not folder.is_dir():
            raise UsageError(f"--repo {spec!r}: {folder} is not a folder")
        catalog.add_folder(repo, folder, revision)
