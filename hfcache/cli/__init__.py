"""The `hfcache` command: a thin typer layer. Each command parses, calls one library function, renders.

Commands live one module per area (`cli/fetch.py`, `cli/serve.py`, ...), each registering on `app`. Heavy
imports (huggingface_hub, requests, the server, rich tables) happen inside commands, so `--help` and
`--version` stay fast.
"""

from __future__ import annotations

import sys

from hfcache.cli import bundle as _bundle  # noqa: F401  (registers export, import, relocate, convert)
from hfcache.cli import fetch as _fetch  # noqa: F401  (registers download, snapshot)
from hfcache.cli import offline as _offline  # noqa: F401  (registers map-url, datasets, modules, doctor)
from hfcache.cli import scan as _scan  # noqa: F401  (registers scan, rm, prune, dedup)
from hfcache.cli import serve as _serve  # noqa: F401  (registers serve)
from hfcache.cli import verify as _verify  # noqa: F401  (registers verify, lock)
from hfcache.cli.common import app


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
    except Exception as e:  # a bug or a broken environment: one line, the traceback only on request
        import os

        if os.environ.get("HFCACHE_DEBUG"):
            raise
        print(f"hfcache: error: {type(e).__name__}: {e} (HFCACHE_DEBUG=1 shows the traceback)", file=sys.stderr)
        sys.exit(1)


__all__ = ["app", "main"]
