"""`hfcache download` and `hfcache snapshot`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hfcache.cli.common import FLAG, CacheDir, Json, RepoType, Revision, app, repo_arg
from hfcache.errors import UsageError


def _progress(label: str, quiet: bool):
    if quiet or not sys.stderr.isatty():
        from hfcache.render.console import NoticeProgress

        return NoticeProgress()  # no bar; a line on stderr when waiting for another process's download
    from hfcache.render.console import RichProgress

    return RichProgress(label)


Connections = Annotated[int | None, typer.Option(
    "--connections", min=1, show_default="auto",
    help="Parallel range requests per large file (auto: 4 on a fast link, up to 16 when answers are slow).")]
PartSize = Annotated[int, typer.Option("--part-size", min=1, help="Part size in MiB; files over twice this are split.")]
Retries = Annotated[int, typer.Option("--retries", min=0, help="Retries per part after a network failure.")]
Processes = Annotated[int | None, typer.Option(
    "--processes", min=1, show_default="auto",
    help="Processes sharing many small files (auto: one per core, from 600 small files).")]



def _fetcher(cache_dir: Path | None, max_workers: int | None, progress, connections: int | None = None,
             part_size: int = 32, retries: int = 8, processes: int | None = None):
    from hfcache.cache.layout import HubCache
    from hfcache.fetch.fetcher import Fetcher
    from hfcache.fetch.transfer import MiB, TransferOptions

    options = TransferOptions(connections=connections, part_size=part_size * MiB,
                              split_threshold=2 * part_size * MiB, retries=retries)
    return Fetcher(HubCache(cache_dir), max_workers=max_workers, progress=progress, transfer_options=options,
                   processes=processes)


@app.command()
def download(
    repo_id: Annotated[str, typer.Argument(help="Repo id, e.g. bert-base-uncased or org/name.")],
    filenames: Annotated[list[str], typer.Argument(help="Files to fetch, as paths in the repo.")],
    revision: Revision = "main",
    repo_type: RepoType = "model",
    cache_dir: CacheDir = None,
    max_workers: Annotated[int | None, typer.Option("--max-workers", min=1, show_default="auto",
                                                    help="Files fetched at once.")] = None,
    connections: Connections = None,
    part_size: PartSize = 32,
    retries: Retries = 8,
    processes: Processes = None,
    as_json: Json = False,
) -> None:
    """Fetch files into the cache and print each one's path in the snapshot, one per line."""
    from hfcache.cache.layout import RepoRef
    from hfcache.render.console import Timer, render_download

    repo_id, repo_type, revision = repo_arg(repo_id, repo_type, revision)
    repo = RepoRef(repo_id, repo_type)
    progress = _progress(str(repo), as_json)
    with Timer() as t:
        try:
            result = _fetcher(cache_dir, max_workers, progress, connections, part_size, retries, processes).download(
                repo, filenames, revision)
        finally:
            getattr(progress, "stop", lambda: None)()
    render_download(result, t.seconds, as_json)


@app.command()
def snapshot(
    repo_id: Annotated[str | None, typer.Argument(help="Repo id, e.g. bert-base-uncased or org/name.",
                                                  show_default=False)] = None,
    revision: Revision = "main",
    repo_type: RepoType = "model",
    include: Annotated[list[str] | None, typer.Option("--include", help="Only files matching this glob.")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Skip files matching this glob.")] = None,
    cache_dir: CacheDir = None,
    max_workers: Annotated[int | None, typer.Option(
        "--max-workers", min=1, show_default="auto",
        help="Files fetched at once (auto: 8; for many small files 8 to 64, more when answers are slow).")] = None,
    connections: Connections = None,
    part_size: PartSize = 32,
    retries: Retries = 8,
    processes: Processes = None,
    lock: Annotated[Path | None, typer.Option("--lock", help="Fetch exactly what this lock file pins (all of it, "
                                              "or REPO_ID's entries), then check it.")] = None,
    safety: Annotated[bool, typer.Option(
        "--safety", metavar=FLAG,
        help="Check the fetched files are safe to load before printing the folder (exit 1, and no folder, if one "
        "is not).")] = False,
    allow: Annotated[list[str] | None, typer.Option("--allow", metavar="MODULE.NAME",
                                                    help="With --safety: accept this import in pickles.")] = None,
    as_json: Json = False,
) -> None:
    """Fetch a whole revision into the cache; the snapshot folder is the last line of stdout."""
    from hfcache.cache.layout import RepoRef
    from hfcache.render.console import Timer, render_snapshot

    if lock is not None:
        from hfcache.cli.verify import snapshot_locked

        if include or exclude:
            raise UsageError("--lock fetches what the lock pins: no --include or --exclude with it")
        fetcher = _fetcher(cache_dir, max_workers, _progress("lock", as_json), connections, part_size, retries,
                           processes)
        return snapshot_locked(lock, repo_id, repo_type, fetcher, as_json)
    if repo_id is None:
        raise UsageError("missing REPO_ID (or --lock FILE)")
    repo_id, repo_type, revision = repo_arg(repo_id, repo_type, revision)
    repo = RepoRef(repo_id, repo_type)
    if safety:  # safetensors headers first, over range requests (see cli/safety.py)
        from hfcache.cli.safety import precheck_remote

        if not precheck_remote(repo, revision, include, exclude, allow or [], as_json):
            raise typer.Exit(1)
    progress = _progress(str(repo), as_json)
    with Timer() as t:
        try:
            result = _fetcher(cache_dir, max_workers, progress, connections, part_size, retries, processes).snapshot(
                repo, revision, include, exclude)
        finally:
            getattr(progress, "stop", lambda: None)()
    if safety:  # see cli/safety.py
        from hfcache.cache.layout import HubCache
        from hfcache.cli.safety import snapshot_checked

        if not snapshot_checked(result, HubCache(cache_dir), allow or [], as_json):
            raise typer.Exit(1)
    render_snapshot(result, t.seconds, as_json)
