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
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, powershell)
    context_settings={"help_option_names": ["-h", "--help"]},
)

CacheDir = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Hub cache folder (default: HF_HUB_CACHE, else HF_HOME/hub).",
                 show_default=False),
]
RepoType = Annotated[str, typer.Option("--repo-type", help="model, dataset, space or kernel.")]
Revision = Annotated[str, typer.Option("--revision", help="Branch, tag, commit sha or refs/pr/N.")]
# a pure flag: no `<bool>` in the help, as if it took a value (typer shows the type of a bool unless told)
FLAG = ""
Json = Annotated[bool, typer.Option("--json", metavar=FLAG, help="Print one JSON object for machines.")]


def repo_arg(spec: str, repo_type: str, revision: str = "main") -> tuple[str, str, str]:
    """`REPO_ID`, `TYPE:REPO_ID`, either with `@REV`, as every command takes a repo: (repo_id, repo_type,
    revision). `--repo-type` and `--revision` must not contradict what the spec itself says."""
    from hfcache.cache.layout import parse_repo_spec
    from hfcache.errors import UsageError

    explicit_type = ":" in spec.split("@", 1)[0]
    repo, rev = parse_repo_spec(spec, repo_type)
    if explicit_type and repo_type not in ("model", repo.repo_type):  # "model" is the default: not told apart
        raise UsageError(f"{spec} and --repo-type {repo_type} disagree")
    if rev and revision not in ("main", rev):
        raise UsageError(f"{spec} and --revision {revision} disagree")
    return repo.repo_id, repo.repo_type, rev or revision


def _version(value: bool) -> None:
    if value:
        print(f"hfcache {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, metavar=FLAG,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass
