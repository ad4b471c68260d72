"""`hfcache inspect`, and the safety half of `verify --safety` and `snapshot --safety`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hfcache.cli.common import CacheDir, Json, app

Allow = Annotated[list[str] | None, typer.Option(
    "--allow", metavar="MODULE.NAME[=REASON]",
    help="Accept this import in pickles (a known-benign class of yours); with --lock, kept there with its reason.")]


@app.command()
def inspect(
    target: Annotated[str, typer.Argument(metavar="REPO[@REV]|PATH",
                                          help="A repo in the cache (e.g. org/name, dataset:org/ds@v1) or a path.")],
    files: Annotated[list[str] | None, typer.Argument(metavar="[FILE]...", show_default=False,
                                                      help="Only these files of the repo's snapshot.")] = None,
    repo_type: Annotated[str | None, typer.Option("--repo-type", show_default=False,
                                                  help="model, dataset, space or kernel.")] = None,
    allow: Allow = None,
    cache_dir: CacheDir = None,
    as_json: Json = False,
) -> None:
    """What a model file is and whether it is safe to load: its format by its bytes; for safetensors the tensor
    and parameter counts, dtypes and metadata; for pickles every import and the verdict.

    Exit status: 0 safe, 1 unsafe or unknown, 2 bad usage.
    """
    from hfcache.render.safety import render_inspect

    report = run_inspect(target, files or [], repo_type, allow or [], cache_dir)
    render_inspect(report, as_json)
    if not report.ok:
        raise typer.Exit(1)


def run_inspect(target: str, files: list[str], repo_type: str | None, allow: list[str], cache_dir: Path | None):
    from hfcache.cache.layout import HubCache
    from hfcache.safety.workflow import inspect_target

    return inspect_target(HubCache(cache_dir), target, files, repo_type, allow)


def render_verified(report, repaired, safety, as_json: bool, junit: Path | None) -> None:
    from hfcache.render.console import print_json
    from hfcache.render.safety import render_safety, safety_json, write_junit
    from hfcache.render.verify import render_report, report_json

    if as_json:
        print_json({**report_json(report, repaired), "safety": safety_json(safety)})
    else:
        render_report(report, repaired, False)
        render_safety(safety, False)
    if junit is not None:
        write_junit(junit, safety, report)


def snapshot_checked(result, cache, allow: list[str], as_json: bool) -> bool:
    """`snapshot --safety`: check the fetched snapshot; on failure render why (and no folder) and say so."""
    from hfcache.render.safety import render_safety, summary
    from hfcache.safety.workflow import check_snapshot

    report = check_snapshot(cache, result.repo, result.commit, allow)
    if report.ok:
        if not as_json:
            print(summary(report), file=sys.stderr)
        return True
    if as_json:
        render_safety(report, True)
    else:
        stdout = sys.stdout
        try:
            sys.stdout = sys.stderr
            render_safety(report, False)
        finally:
            sys.stdout = stdout
        print(f"hfcache: error: {result.repo}@{result.commit[:12]} is not safe to load; the snapshot folder is not "
              "printed", file=sys.stderr)
    return False


def scan_tally(result):
    """`scan`: pickle-format files and remembered verdicts of the hub cache scanned (names and links only)."""
    from hfcache.cache.layout import HubCache
    from hfcache.safety.tally import tally

    return tally(result.hub, HubCache(result.hub.root).safety_verdicts_path())


def precheck_remote(repo, revision: str, include, exclude, allow: list[str], as_json: bool) -> bool:
    """`snapshot --safety`, before the download: render what `safety.workflow.precheck_headers` found; False when a
    safetensors header is malformed."""
    from hfcache.render.console import print_json
    from hfcache.safety.workflow import precheck_headers

    found = precheck_headers(repo, revision, include, exclude, allow)
    if found is None or not found.bad:
        return True
    commit = found.commit
    if as_json:
        print_json({"ok": False, "repo": str(repo), "commit": commit, "checked_before_download": [
            {"path": h.path, "requests": h.requests, **h.verdict.to_json()} for h in found.bad]})
    else:
        for h in found.bad:
            print(f"{h.verdict.verdict}: {repo}@{commit[:12]}: {h.path} [safetensors header, {h.requests} range "
                  f"requests]: " + "; ".join(h.verdict.reasons), file=sys.stderr)
        print(f"hfcache: error: {repo}@{commit[:12]} has malformed safetensors: nothing was downloaded",
              file=sys.stderr)
    return False
