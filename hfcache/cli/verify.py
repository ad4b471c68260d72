"""`hfcache verify` and `hfcache lock` (and the work behind `hfcache snapshot --lock`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hfcache.cli.common import FLAG, CacheDir, Json, app
from hfcache.cli.safety import Allow

Specs = Annotated[list[str] | None, typer.Argument(
    metavar="REPO_ID[@REV]", show_default=False,
    help="Repos to check, e.g. org/name, org/name@v1.0, dataset:org/ds (default: the whole cache).")]
AnyRepoType = Annotated[str | None, typer.Option(
    "--repo-type", show_default=False,
    help="model, dataset, space or kernel: the type of the REPO_IDs given; with none given, check only that type.")]
Include = Annotated[list[str] | None, typer.Option("--include", help="Only files matching this glob.")]
Exclude = Annotated[list[str] | None, typer.Option("--exclude", help="Skip files matching this glob.")]


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def _progress(as_json: bool):
    from hfcache.progress import Progress

    if as_json or not sys.stderr.isatty():
        return Progress()
    from hfcache.render.verify import HashProgress

    return HashProgress()


@app.command()
def verify(
    specs: Specs = None,
    repo_type: AnyRepoType = None,
    cache_dir: CacheDir = None,
    online: Annotated[bool, typer.Option(
        "--online", metavar=FLAG,
        help="Also check against the endpoint's listing (HF_ENDPOINT): hashes, sizes, missing and extra "
        "files.")] = False,
    lock: Annotated[Path | None, typer.Option(
        "--lock", help="Check the commits and files this lock file pins (see `hfcache lock`); offline.")] = None,
    repair: Annotated[bool, typer.Option(
        "--repair", metavar=FLAG,
        help="Fetch damaged or missing files again from the endpoint, then check again.")] = False,
    jobs: Annotated[int | None, typer.Option(
        "--jobs", "-j", min=1, show_default=False, help="Files hashed at once (default: the CPU count).")] = None,
    allow_partial: Annotated[bool, typer.Option(
        "--allow-partial", metavar=FLAG, help="Files a listing names but a snapshot lacks are warnings, not problems "
        "(snapshots fetched with --include).")] = False,
    junit: Annotated[Path | None, typer.Option(
        "--junit", help="Also write a JUnit XML report there, each repo a test case.")] = None,
    safety: Annotated[bool, typer.Option(
        "--safety", metavar=FLAG,
        help="Also check every snapshot file is safe to load (pickles by allow list, safetensors strictly, ...); "
        "1 if one is unsafe or unknown.")] = False,
    allow: Allow = None,
    as_json: Json = False,
) -> None:
    """Prove the cache intact: links, refs, and every blob's hash against its name, trees/, the Hub or a lock.

    Exit status: 0 intact (and safe, with --safety), 1 damage or a mismatch or missing file found (or a file
    unsafe to load), or the endpoint could not be asked (--online, --repair), 2 bad usage or environment.
    """
    from hfcache.cache.layout import HubCache
    from hfcache.errors import UsageError
    from hfcache.render.verify import render_report, write_junit
    from hfcache.verify.check import parse_spec
    from hfcache.verify.workflow import verify_and_repair

    parsed = [parse_spec(s, repo_type) for s in specs or []]
    cache = HubCache(cache_dir)
    pins = None
    if lock is not None:
        from hfcache.verify import lockfile

        pins = lockfile.read(lock)
    if junit is not None:
        _check_writable(junit)  # before hashing, not after
    started = None
    if safety:  # in a thread, alongside the hashing
        from hfcache.safety.workflow import SafetyRun

        started = SafetyRun(cache, parsed, repo_type, allow or [], lock, jobs)
    client = None
    if online or repair:
        if _offline():
            raise UsageError(f"{'--online' if online else '--repair'} needs the endpoint, but HF_HUB_OFFLINE is set")
        from hfcache.fetch.hub import HubClient

        client = HubClient()
    outcome = verify_and_repair(cache, parsed, repo_type=repo_type, lock=pins, client=client, online=online,
                                repair=repair, jobs=jobs, allow_partial=allow_partial,
                                progress=lambda: _progress(as_json))
    report = outcome.report
    safe = None
    if started is not None:
        from hfcache.cli.safety import render_verified

        safe = started.report(bool(outcome.repaired))
        render_verified(report, outcome.repaired, safe, as_json, junit)
    else:
        render_report(report, outcome.repaired, as_json)
        if junit is not None:
            write_junit(junit, report)
    if outcome.failure:
        print(f"hfcache: error: {outcome.failure}", file=sys.stderr)
    if not report.ok or (safe is not None and not safe.ok):
        raise typer.Exit(1)
    if outcome.failure:  # an operation failed (the endpoint could not be asked): 1, as any failure; 2 is usage
        raise typer.Exit(1)


def _check_writable(path: Path) -> None:
    """Refuse a report path that cannot be written before the work, not after it."""
    from hfcache.errors import UsageError

    existed = path.exists()
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "Is a directory")
        with open(path, "a"):
            pass
    except OSError as e:
        raise UsageError(f"--junit {path}: cannot write it ({e.strerror})") from None
    if not existed:
        path.unlink(missing_ok=True)


@app.command("lock")
def lock_command(
    specs: Annotated[list[str], typer.Argument(metavar="REPO_ID[@REV]", help="Repos to pin (REV: main).")],
    repo_type: Annotated[str, typer.Option("--repo-type", help="model, dataset, space or kernel.")] = "model",
    output: Annotated[str, typer.Option("--output", "-o", help="Lock file to write; '-' prints it.")] = "hfcache.lock",
    include: Include = None,
    exclude: Exclude = None,
    cache_dir: CacheDir = None,
    as_json: Json = False,
) -> None:
    """Pin repos to commits, and every file to its size and hash, in a small diff-friendly lock file.

    The endpoint says what each revision is; offline (HF_HUB_OFFLINE=1) the cache's refs and trees/ do.
    """
    from hfcache.cache.layout import HubCache
    from hfcache.render.verify import render_lock
    from hfcache.verify import lockfile
    from hfcache.verify.check import parse_spec

    parsed = [parse_spec(s, repo_type) for s in specs]
    client = None
    if not _offline():
        from hfcache.fetch.hub import HubClient

        client = HubClient()
    pins = lockfile.pin(HubCache(cache_dir), parsed, client, include, exclude)
    if output == "-":
        sys.stdout.write(lockfile.dumps(pins))
        return
    lockfile.write(Path(output), pins)
    render_lock(pins, output, as_json)


def snapshot_locked(lock: Path, repo_id: str | None, repo_type: str, fetcher, as_json: bool) -> None:
    """`snapshot --lock`: render what `workflow.snapshot_locked` did; exit 1 when the check failed."""
    from hfcache.render.console import print_json, render_snapshot
    from hfcache.render.verify import report_json, summary
    from hfcache.verify.check import parse_spec
    from hfcache.verify.workflow import snapshot_locked as run

    done = run(lock, [parse_spec(repo_id, repo_type)] if repo_id else [], fetcher)
    report = done.report
    if as_json:
        print_json({"snapshots": [{"repo_id": r.repo.repo_id, "repo_type": r.repo.repo_type, "commit": r.commit,
                                   "path": str(r.path), "files": r.files, "files_fetched": r.stats.files_fetched,
                                   "bytes_fetched": r.stats.bytes_fetched} for r in done.snapshots],
                    "verify": report_json(report)})
    else:
        if report.ok:  # a script's `$(hfcache snapshot --lock ...)` must get no path when the check failed
            for r in done.snapshots:
                render_snapshot(r, 0.0, False)
        for p in report.problems:
            print(f"{p.severity}: {p.repo}: {p.describe()}", file=sys.stderr)
        print(summary(report), file=sys.stderr)
    if not report.ok:
        raise typer.Exit(1)
