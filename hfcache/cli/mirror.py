"""`hfcache serve --upstream` (a pull-through mirror) and `hfcache serve --nginx-conf`: parsing and printing only."""

from __future__ import annotations

import sys
from pathlib import Path

from hfcache.errors import UsageError


def mirror_or_conf(cache_dir: Path | None, host: str, port: int, token: str | None, quiet: bool,
                   upstream: str | None, revalidate: float, accel_redirect: str | None, nginx_conf: bool,
                   listen: str, upstream_servers: str | None, folder_options: bool) -> None:
    from hfcache.cache.layout import HubCache

    if folder_options:
        raise UsageError("--upstream and --nginx-conf take no --repo, --cdn-host or --latency-ms")
    root = HubCache(cache_dir).root
    if nginx_conf:
        from hfcache.mirror.nginx import nginx_conf as render

        servers = [s.strip() for s in upstream_servers.split(",") if s.strip()] if upstream_servers else \
            [f"127.0.0.1:{port}"]
        print(render(root, servers, listen), end="")
        return
    assert upstream is not None
    if accel_redirect is not None and (not accel_redirect.startswith("/") or
                                       any(c in accel_redirect for c in " ;{}\"'\n\\$#?%")):
        raise UsageError(f"--accel-redirect {accel_redirect!r}: expected a URL path such as /_hfcache/")
    if not upstream.startswith(("http://", "https://")):
        raise UsageError(f"--upstream {upstream!r}: expected an http:// or https:// URL")
    root.mkdir(parents=True, exist_ok=True)
    from hfcache.mirror.app import MirrorApp
    from hfcache.server.accesslog import LineWriter
    from hfcache.server.run import exposure_warning, serve_forever

    access_log = None if quiet else LineWriter(sys.stderr, prefix="hfcache: ")
    app = MirrorApp(root, upstream, revalidate=revalidate, token=token, accel_redirect=accel_redirect,
                    access_log=access_log)
    if (warning := exposure_warning(host, token)) is not None:
        print(f"hfcache: warning: {warning}", file=sys.stderr, flush=True)

    def ready(url: str) -> None:
        print(url, flush=True)
        mode = " (offline: the store only)" if app.upstream.offline else ""
        print(f"hfcache: mirroring {upstream} into {root} at {url}{mode} (Ctrl-C stops)", file=sys.stderr,
              flush=True)

    serve_forever(app, host, port, ready)  # type: ignore[arg-type]
