"""The `hfcache` command: a thin typer layer. Each command parses, calls one library function, renders.

Commands live one module per area (`cli/fetch.py`, `cli/serve.py`, ...), each registering on `app`. Only the
module of the command being run is imported (`COMMANDS`), so typer builds that command alone, and an offline
command never pays for the others' imports; `hfcache --help`, completion and an unknown name load them all.
Heavy imports (huggingface_hub, requests, the server, rich tables) happen inside commands.
"""

from __future__ import annotations

import importlib
import os
import sys

from hfcache.cli.common import app

# Every command, and the module that registers it on `app`. `--help` lists them in MODULES' order, as each
# module registers them; tests/test_startup.py checks this table names every command there is.
MODULES = ("bundle", "fetch", "offline", "safety", "scan", "serve", "verify")
COMMANDS = {"export": "bundle", "import": "bundle", "relocate": "bundle", "convert": "bundle",
            "download": "fetch", "snapshot": "fetch",
            "map-url": "offline", "datasets": "offline", "modules": "offline", "doctor": "offline",
            "inspect": "safety",
            "scan": "scan", "rm": "scan", "prune": "scan", "dedup": "scan",
            "serve": "serve",
            "verify": "verify", "lock": "verify"}


def register(argv: list[str] | None = None) -> None:
    """Import the module of the command `argv` names (every module for `--help`, completion, or a name that is
    not a command, so typer's own message and help list them all). The root takes no option with a value, so
    the first argument that is not an option is the command."""
    name = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    completing = any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ)
    wanted = (COMMANDS[name],) if name in COMMANDS and not completing else MODULES
    for module in wanted:
        importlib.import_module(f"hfcache.cli.{module}")


def main() -> None:
    from hfcache.errors import HfcacheError

    register(sys.argv[1:])
    try:
        code = app(standalone_mode=False, prog_name="hfcache") or 0  # also as `python -m hfcache`: one name
    except HfcacheError as e:
        print(f"hfcache: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except BrokenPipeError:
        sys.exit(1)
    except OSError as e:  # the file system said no (a --cache-dir that is a file, no permission): not a bug
        if e.strerror is None:
            _usage_error(e)
        where = f": {e.filename}" if e.filename else ""
        print(f"hfcache: error: {e.strerror}{where}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:
        _usage_error(e)
    if code == 130:  # typer turns Ctrl-C into Exit(130) before it reaches the handler above
        _interrupted()
    sys.exit(code)


def _interrupted() -> None:
    """Ctrl-C: one line, and out at once. Threads still in flight would be waited for at a normal exit; the
    cache needs no clean-up (it is built to survive a kill at any instant), and the OS frees the locks."""
    import os

    print("hfcache: interrupted", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def _usage_error(e: Exception) -> None:
    """typer's own errors (a missing argument, an unknown option) in one line, like ours; anything else is a
    bug or a broken environment: one line too, the traceback only on request."""
    ctx = getattr(e, "ctx", None)
    if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:  # `hfcache` alone: the help, as asked
        print(ctx.get_help())
        sys.exit(0)
    if hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int):
        command = ctx.command_path if ctx is not None else " ".join(["hfcache", *sys.argv[1:2]])
        where = f" (see '{command} --help')"
        print(f"hfcache: error: {e.format_message()}{where}", file=sys.stderr)
        sys.exit(e.exit_code)
    if type(e).__name__ == "Abort":
        print("hfcache: aborted", file=sys.stderr)
        sys.exit(1)
    import os

    if os.environ.get("HFCACHE_DEBUG"):
        raise e
    print(f"hfcache: error: {type(e).__name__}: {e} (HFCACHE_DEBUG=1 shows the traceback)", file=sys.stderr)
    sys.exit(1)


__all__ = ["COMMANDS", "app", "main", "register"]
