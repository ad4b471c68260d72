"""The `hfcache` command: a thin typer layer. Each command parses, calls one library function, renders.

Heavy imports (huggingface_hub, requests, the server, rich tables) happen inside commands, so `--help` and
`--version` stay fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hfcache import __version__

app = typer.Typer(
    name="hfcache",
    help="A Hugging Face Hub-compatible cache and download manager: fetch, verify, audit, carry and serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

CacheDir = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Hub cache folder (default: HF_HUB_CACHE, else HF_HOME/hub).",
                 show_default=False),
]
RepoType = Annotated[str, typer.Option("--repo-type", help="model, dataset or space.")]
Revision = Annotated[str, typer.Option("--revision", help="Branch, tag, commit sha or refs/pr/N.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object for machines.")]


def _version(value: bool) -> None:
    if value:
        print(f"hfcache {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass


def _progress(label: str, quiet: bool):
    from hfcache.fetch import Progress

    if quiet or not sys.stderr.isatty():
        return Progress()
    from hfcache.render import RichProgress

    return RichProgress(label)


def _fetcher(cache_dir: Path | None, max_workers: int, progress):
    from hfcache.fetch import Fetcher
    from hfcache.layout import HubCache

    return Fetcher(HubCache(cache_dir), max_workers=max_workers, progress=progress)


@app.command()
def download(
    repo_id: Annotated[str, typer.Argument(help="Repo id, e.g. bert-base-uncased or org/name.")],
    filenames: Annotated[list[str], typer.Argument(help="Files to fetch, as paths in the repo.")],
    revision: Revision = "main",
    repo_type: RepoType = "model",
    cache_dir: CacheDir = None,
    max_workers: Annotated[int, typer.Option("--max-workers", min=1)] = 8,
    as_json: Json = False,
) -> None:
    """Fetch files into the cache and print each one's path in the snapshot, one per line."""
    from hfcache.layout import RepoRef
    from hfcache.render import Timer, render_download

    progress = _progress(f"{repo_id}", as_json)
    with Timer() as t:
        try:
            result = _fetcher(cache_dir, max_workers, progress).download(
                RepoRef(repo_id, repo_type), filenames, revision)
        finally:
            getattr(progress, "stop", lambda: None)()
    render_download(result, t.seconds, as_json)


@app.command()
def snapshot(
    repo_id: Annotated[str, typer.Argument(help="Repo id, e.g. bert-base-uncased or org/name.")],
    revision: Revision = "main",
    repo_type: RepoType = "model",
    include: Annotated[list[str] | None, typer.Option("--include", help="Only files matching this glob.")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Skip files matching this glob.")] = None,
    cache_dir: CacheDir = None,
    max_workers: Annotated[int, typer.Option("--max-workers", min=1, help="Files fetched at once.")] = 8,
    as_json: Json = False,
) -> None:
    """Fetch a whole revision into the cache; the snapshot folder is the last line of stdout."""
    from hfcache.layout import RepoRef
    from hfcache.render import Timer, render_snapshot

    progress = _progress(f"{repo_id}", as_json)
    with Timer() as t:
        try:
            result = _fetcher(cache_dir, max_workers, progress).snapshot(
                RepoRef(repo_id, repo_type), revision, include, exclude)
        finally:
            getattr(progress, "stop", lambda: None)()
    render_snapshot(result, t.seconds, as_json)


@app.command()
def serve(
    cache_dir: CacheDir = None,
    repo: Annotated[list[str] | None, typer.Option(
        "--repo", help="Serve a folder as a repo: [TYPE:]ORG/NAME[@REVISION]=FOLDER (repeatable).")] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="0 picks a free port.")] = 8000,
    cdn_host: Annotated[str | None, typer.Option(
        "--cdn-host", help="Redirect LFS downloads to this host name (another origin, like the Hub's CDN).")] = None,
) -> None:
    """Serve a cache (and folders) as a Hub: point HF_ENDPOINT at the printed URL."""
    from hfcache.server.app import HubApp
    from hfcache.server.catalog import Catalog
    from hfcache.server.run import serve_forever
    from hfcache.serving import add_folder_specs

    catalog = Catalog(_served_cache(cache_dir, repo))
    add_folder_specs(catalog, repo or [])
    hub_app = HubApp(catalog, cdn_host=cdn_host)

    def ready(url: str) -> None:
        print(url, flush=True)
        print(f"hfcache: serving {len(catalog.repos())} repos at {url} (Ctrl-C stops)", file=sys.stderr, flush=True)

    serve_forever(hub_app, host, port, ready)


def _served_cache(cache_dir: Path | None, folder_specs: list[str] | None) -> Path | None:
    """The cache is served when named, or when no folder is given."""
    if cache_dir is not None or not folder_specs:
        from hfcache.layout import HubCache

        return HubCache(cache_dir).root
    return None


def main() -> None:
    from hfcache.errors import HfcacheError

    try:
        app()
    except HfcacheError as e:
        print(f"hfcache: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("hfcache: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
