"""The typer app and the options every command shares, so every command spells them the same way."""

from __future__ import annotations

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
RepoType = Annotated[str, typer.Option("--repo-type", help="model, dataset, space or kernel.")]
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
