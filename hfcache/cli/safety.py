"""`hfcache inspect`, and the safety half of `verify --safety` and `snapshot --safety`."""

from __future__ import annotations

import os
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
    from hfcache.errors import UsageError
    from hfcache.safety.allowlist import build_policy
    from hfcache.safety.check import check_cache, check_paths

    pol = build_policy(allow)
    if os.path.exists(target) or os.sep in target and not files and target.startswith((".", os.sep, "~")):
        if files:
            raise UsageError("FILE arguments go with a REPO; give paths as the first argument alone")
        return check_paths([target], policy=pol, cache=HubCache(cache_dir))
    from hfcache.verify.check import parse_spec

    spec = parse_spec(target, repo_type)
    return check_cache(HubCache(cache_dir), [spec], policy=pol, only=files)


def start_verified(cache, specs, repo_type: str | None, allow: list[str], lock: Path | None, jobs: int | None):
    """`verify --safety`: the safety check over the selection verify checks, started in a thread so that it overlaps
    verify's hashing (which runs outside the GIL). The policy is built first: a bad --allow fails before any work."""
    from concurrent.futures import ThreadPoolExecutor

    from hfcache.safety.allowlist import build_policy
    from hfcache.safety.check import check_cache
    from hfcache.verify import lockfile

    pol = build_policy(allow, lock)
    pins = lockfile.read(lock) if lock is not None else None

    def run():
        return check_cache(cache, specs, repo_type=None if specs else repo_type, policy=pol, jobs=jobs, lock=pins)

    pool = ThreadPoolExecutor(1, thread_name_prefix="hfcache-safety")
    future = pool.submit(run)
    pool.shutdown(wait=False)
    return future, run


def finish_verified(started, repaired) -> object:
    """The safety report; checked again after a repair (the repaired files are new bytes; the rest is
    remembered)."""
    future, run = started
    report = future.result()
    return run() if repaired else report


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
    from hfcache.render.safety import render_safety
    from hfcache.safety.allowlist import build_policy
    from hfcache.safety.check import check_cache

    report = check_cache(cache, [(result.repo, result.commit)], policy=build_policy(allow))
    if report.ok:
        if not as_json:
            from hfcache.render.safety import summary

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
    """`snapshot --safety`, before the download: safetensors headers over two range requests each. False (and why,
    on stderr, or JSON) when one is malformed; an endpoint that cannot answer leaves it to the check after."""
    from huggingface_hub import constants

    from hfcache.errors import EndpointError
    from hfcache.fetch.fetcher import _filter
    from hfcache.fetch.hub import HubClient
    from hfcache.render.console import print_json
    from hfcache.safety.allowlist import build_policy
    from hfcache.safety.remote import check_remote_headers

    if constants.is_offline_mode():
        return True
    client = HubClient()
    try:
        commit = client.resolve_revision(repo, revision)
        files = _filter(client.list_files(repo, commit), include, exclude)
        bad = [h for h in check_remote_headers(client, repo, commit, files, build_policy(allow)) if not h.verdict.safe]
    except EndpointError:
        return True
    if not bad:
        return True
    if as_json:
        print_json({"ok": False, "repo": str(repo), "commit": commit, "checked_before_download": [
            {"path": h.path, "requests": h.requests, **h.verdict.to_json()} for h in bad]})
    else:
        for h in bad:
            print(f"{h.verdict.verdict}: {repo}@{commit[:12]}: {h.path} [safetensors header, {h.requests} range "
                  f"requests]: " + "; ".join(h.verdict.reasons), file=sys.stderr)
        print(f"hfcache: error: {repo}@{commit[:12]} has malformed safetensors: nothing was downloaded",
              file=sys.stderr)
    return False
