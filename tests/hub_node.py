"""An upstream Hub for lab tests and benchmarks: `hfcache serve --cache-dir` (same app, same access log on stderr)
plus a control route a test uses to make it misbehave on cue.

    python tests/hub_node.py --cache-dir DIR --host H --port P [--cdn-host H2]

Control (from the test, never from clients): `POST /_lab/status?code=503&match=SUBSTR&times=N` answers N requests
whose path holds SUBSTR (API routes included) with that status; `POST /_lab/body?kind=corrupt|reset|short|
stall|slow&match=SUBSTR&times=N[&after=BYTE][&rate=BYTES_PER_S]` makes bodies misbehave (see
hfcache.server.faults); `POST /_lab/clear` ends every fault. Control requests are not logged, so the access
log counts only what clients asked.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs

if __name__ == "__main__":  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starlette.responses import Response

from hfcache.server.accesslog import AccessLog
from hfcache.server.app import HubApp
from hfcache.server.catalog import Catalog
from hfcache.server.faults import Fault
from hfcache.server.run import serve_forever


class StatusRules:
    """Status faults: [code, path substring, uses left (-1: forever)]."""

    def __init__(self) -> None:
        self.rules: list[list] = []
        self.lock = threading.Lock()

    def take(self, path: str) -> int | None:
        with self.lock:
            for rule in self.rules:
                code, match, times = rule
                if match in path and times != 0:
                    if times > 0:
                        rule[2] -= 1
                    return code
        return None


def status_faults(rules: StatusRules, inner):
    """ASGI: a request a rule matches gets that status (a 429 with Retry-After) before the Hub sees it."""

    async def app(scope, receive, send) -> None:
        if scope["type"] == "http" and (code := rules.take(scope["path"])) is not None:
            headers = {"Retry-After": "1"} if code == 429 else {}
            await Response(f"lab fault: HTTP {code}", status_code=code, headers=headers)(scope, receive, send)
            return
        await inner(scope, receive, send)

    return app


def control(hub: HubApp, rules: StatusRules, inner):
    """ASGI: `/_lab/` requests change the faults (and are not logged); the rest go to `inner`."""

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/_lab/"):
            await inner(scope, receive, send)
            return
        q = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        what = scope["path"][len("/_lab/"):]
        match, times = q.get("match", ""), int(q.get("times", "-1"))
        if what == "status":
            with rules.lock:
                rules.rules.append([int(q["code"]), match, times])
        elif what == "body":
            after = int(q["after"]) if "after" in q else None
            hub.faults.add(Fault(q["kind"], match, times, after=after, seconds=float(q.get("seconds", "30")),
                                 rate=int(q.get("rate", "1000000"))))
        elif what == "clear":
            with rules.lock:
                rules.rules.clear()
            hub.faults.clear()
        else:
            await Response("no such control", status_code=404)(scope, receive, send)
            return
        await Response("ok\n")(scope, receive, send)

    return app


def write_now(line: str) -> None:
    """The access log line, in the file before the answer's last bytes leave (AccessLog logs then): a test reads
    the log as soon as its clients are done. (`hfcache serve` hands its lines to a writer thread instead, which
    may write them later; stderr here is a file, never a reader that could stall the server.)"""
    sys.stderr.write(f"hfcache: {line}\n")
    sys.stderr.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache-dir", type=Path, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cdn-host", default=None, help="redirect LFS downloads to this host (another origin)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    hub = HubApp(Catalog(args.cache_dir), cdn_host=args.cdn_host)
    rules = StatusRules()
    inner = status_faults(rules, hub.asgi)
    if not args.quiet:
        inner = AccessLog(inner, write_now)
    hub.asgi = control(hub, rules, inner)  # serve_forever runs app.asgi

    def ready(url: str) -> None:
        print(url, flush=True)

    serve_forever(hub, args.host, args.port, ready)


if __name__ == "__main__":
    main()
