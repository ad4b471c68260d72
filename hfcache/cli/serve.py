"""`hfcache serve`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hfcache.cli.common import FLAG, CacheDir, app
from hfcache.units import counted


@app.command()
def serve(
    cache_dir: CacheDir = None,
    repo: Annotated[list[str] | None, typer.Option(
        "--repo", help="Serve a folder as a repo: [TYPE:]ORG/NAME[@REVISION]=FOLDER (repeatable).")] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="0 picks a free port.")] = 8000,
    cdn_host: Annotated[str | None, typer.Option(
        "--cdn-host", help="Redirect LFS downloads to this host name (another origin, like the Hub's CDN).")] = None,
    token: Annotated[str | None, typer.Option(
        "--token", envvar="HFCACHE_SERVE_TOKEN",
        help="Clients must send this token (every repo private; a mirror's gated repos: docs/mirror.md).")] = None,
    latency_ms: Annotated[float, typer.Option(
        "--latency-ms", min=0, help="Delay every answer (emulates a WAN round trip, for benchmarks).")] = 0.0,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", metavar=FLAG,
        help="No line per request on stderr (client, method, path, status, bytes sent).")] = False,
    upstream: Annotated[str | None, typer.Option(
        "--upstream", help="Be a pull-through mirror of this Hub (e.g. https://huggingface.co); the store is "
                           "--cache-dir, a standard hub cache.")] = None,
    revalidate: Annotated[float, typer.Option(
        "--revalidate", min=0, help="Mirror: seconds a branch or tag is trusted before asking upstream again.")] = 60.0,
    accel_redirect: Annotated[str | None, typer.Option(
        "--accel-redirect", help="Mirror: answer a stored blob with X-Accel-Redirect PREFIX<path in the store>, "
                                 "for nginx to send (see --nginx-conf).")] = None,
    nginx_conf: Annotated[bool, typer.Option(
        "--nginx-conf", metavar=FLAG, help="Print an nginx.conf for nginx in front of mirrors on --port (or "
                                           "--upstream-servers) over --cache-dir, and exit.")] = False,
    listen: Annotated[str, typer.Option("--listen", help="--nginx-conf: where nginx listens, [ADDR:]PORT.")] = \
        "127.0.0.1:8080",
    upstream_servers: Annotated[str | None, typer.Option(
        "--upstream-servers", help="--nginx-conf: the mirror processes, HOST:PORT,HOST:PORT.")] = None,
) -> None:
    """Serve a cache (and folders) as a Hub, or mirror a Hub into a cache (--upstream): point HF_ENDPOINT at the
    printed URL."""
    if nginx_conf or upstream is not None:
        from hfcache.cli.mirror import mirror_or_conf

        mirror_or_conf(cache_dir, host, port, token, quiet, upstream, revalidate, accel_redirect, nginx_conf,
                       listen, upstream_servers, bool(repo or cdn_host or latency_ms))
        return
    from hfcache.server.accesslog import LineWriter
    from hfcache.server.app import HubApp
    from hfcache.server.catalog import Catalog
    from hfcache.server.folders import add_folder_specs
    from hfcache.server.run import exposure_warning, serve_forever

    if cache_dir is not None and not cache_dir.is_dir():
        from hfcache.errors import UsageError

        raise UsageError(f"--cache-dir {cache_dir} is not a folder")
    catalog = Catalog(_served_cache(cache_dir, repo))
    add_folder_specs(catalog, repo or [])
    access_log = None if quiet else LineWriter(sys.stderr, prefix="hfcache: ")
    hub_app = HubApp(catalog, cdn_host=cdn_host, token=token, latency=latency_ms / 1000, access_log=access_log)
    if (warning := exposure_warning(host, token)) is not None:
        print(f"hfcache: warning: {warning}", file=sys.stderr, flush=True)

    def ready(url: str) -> None:
        print(url, flush=True)
        print(f"hfcache: serving {counted(len(catalog.repos()), 'repo')} at {url} (Ctrl-C stops)", file=sys.stderr,
              flush=True)

    serve_forever(hub_app, host, port, ready)


def _served_cache(cache_dir: Path | None, folder_specs: list[str] | None) -> Path | None:
    """The cache is served when named, or when no folder is given."""
    if cache_dir is not None or not folder_specs:
        from hfcache.cache.layout import HubCache

        return HubCache(cache_dir).root
    return None
