"""The nginx configuration `hfcache serve --nginx-conf` prints: nginx in front of one or more mirror processes.

nginx proxies every request to the mirrors, one URL always to the same one while it answers (so the clients of
one blob share one process's fetch), unbuffered: a blob still being fetched streams as it lands. For a
stored blob a mirror answers with `X-Accel-Redirect: /_hfcache/<path in the store>` and nginx sends the file itself
from an internal location (sendfile, ranges, thousands of connections), with the Hub headers the mirror set. The
file is complete: run it with `nginx -p PREFIX -c FILE` (the pid file and temp folders go under PREFIX; errors to
stderr; in the foreground, for a supervisor). The mirrors must run with `--accel-redirect /_hfcache/`.
"""

from __future__ import annotations

from pathlib import Path

from hfcache.errors import UsageError

ACCEL_PREFIX = "/_hfcache/"
# Headers nginx drops on an internal redirect (it keeps only a few known ones): passed from the mirror's answer.
_HUB_HEADERS = ("X-Repo-Commit", "X-Linked-Etag", "X-Linked-Size", "ETag")


def _addr(value: str, what: str) -> str:
    host, sep, port = value.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536 or any(c in value for c in " ;{}\"'\n\\$#"):
        raise UsageError(f"{what} {value!r}: expected HOST:PORT or PORT")
    return value if sep else f"127.0.0.1:{port}"


def nginx_conf(cache_dir: Path, servers: list[str], listen: str = "127.0.0.1:8080",
               accel_prefix: str = ACCEL_PREFIX, workers: str = "auto") -> str:
    """A full nginx.conf: `listen` in front, `servers` (HOST:PORT of the mirror processes) behind."""
    root = str(Path(cache_dir).absolute())
    if any(c in root for c in " ;{}\"'\n\\$#"):
        raise UsageError(f"--cache-dir {root!r}: nginx cannot be given a path with spaces, quotes or ;{{}}$#")
    if not servers:
        raise UsageError("no mirror to proxy to: give --port or --upstream-servers")
    backends = "\n".join(f"        server {_addr(s, '--upstream-servers')};" for s in servers)
    listen = _addr(listen if ":" in listen else f"0.0.0.0:{listen}", "--listen")
    prefix = "/" + accel_prefix.strip("/") + "/"
    passed = "\n".join(f"            add_header {h} $upstream_http_{h.lower().replace('-', '_')} always;"
                       for h in _HUB_HEADERS)
    return f"""# nginx in front of `hfcache serve --upstream URL --accel-redirect {prefix}` (see hfcache serve --help).
# Run: mkdir -p PREFIX && nginx -p PREFIX -c THIS_FILE   (as root, add -g 'user USER;' for a user who can read
# the store). In the foreground, errors on stderr; the pid file and temp folders go under PREFIX.
worker_processes {workers};
daemon off;
pid nginx.pid;
error_log stderr warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 100000;

    # One URL, one mirror process (consistent hash): the clients of a blob being fetched follow it in the process
    # that fetches it, woken by its writes, with no second hash; a process that fails passes its URLs on.
    upstream hfcache_mirror {{
        hash $request_uri consistent;
{backends}
        keepalive 64;
    }}

    server {{
        listen {listen};
        server_tokens off;

        # Stored blobs: a mirror answers X-Accel-Redirect {prefix}<path in the store>; nginx sends the file.
        location {prefix} {{
            internal;
            alias {root}/;
            default_type application/octet-stream;
            etag off;
{passed}
        }}

        # Everything else (metadata, authorisation, blobs being fetched) is the mirrors' answer, streamed as is.
        location / {{
            proxy_pass http://hfcache_mirror;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            # unbuffered, nginx relays through one buffer of proxy_buffer_size: the default page (4k) costs a
            # read and a write per 4k of a followed blob (most of the CPU of 8 clients on an uncached blob)
            proxy_buffer_size 256k;
            proxy_buffers 4 256k;
            proxy_busy_buffers_size 512k;
            proxy_request_buffering off;
            proxy_max_temp_file_size 0;
            proxy_next_upstream error timeout non_idempotent;  # paths-info, a POST, only reads
            proxy_next_upstream_tries 3;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}
}}
"""
