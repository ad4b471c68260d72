"""`hfcache verify` and `hfcache lock` (and the work behind `hfcache snapshot --lock`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hfcache.cli.common import FLAG, CacheDir, Json, app

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

    return bool(constants.HF_HUB_OFFLINE)


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
    as_json: Json = False,
) -> None:
    """Prove the cache intact: links, refs, and every blob's hash against its name, trees/, the Hub or a lock.

    Exit status: 0 intact, 1 damage or a mismatch or missing file found, or the endpoint could not be asked
    (--online, --repair), 2 bad usage or environment.
    """
    from hfcache.cache.layout import HubCache
    from hfcache.errors import UsageError
    from hfcache.render.verify import render_report, write_junit
    from hfcache.verify import lockfile
    from hfcache.verify.check import OnlineUnavailable, parse_spec
    from hfcache.verify.check import verify as run

    parsed = [parse_spec(s, repo_type) for s in specs or []]
    cache = HubCache(cache_dir)
    pins = lockfile.read(lock) if lock is not None else None
    if junit is not None:
        _check_writable(junit)  # before hashing, not after
    client = None
    if online or repair:
        if _offline():
            raise UsageError(f"{'--online' if online else '--repair'} needs the endpoint, but HF_HUB_OFFLINE is set")
        from hfcache.fetch.hub import HubClient

        client = HubClient()

    def check(hub):
        progress = _progress(as_json)
        try:
            return run(cache, parsed, repo_type=None if parsed else repo_type, lock=pins,
                       client=hub, jobs=jobs, allow_partial=allow_partial, progress=progress)
        finally:
            getattr(progress, "stop", lambda: None)()

    failure = None
    try:
        report = check(client if online else None)
    except OnlineUnavailable as e:  # the damage the cache itself shows is still found and reported
        report = check(None)
        failure = f"hfcache: error: {e} (only the offline checks ran)"
    repaired = ()
    if repair and failure is None and not report.ok:
        from hfcache.errors import HfcacheError
        from hfcache.verify.repair import repair as fix

        try:
            repaired = fix(report, cache, client)
        except HfcacheError as e:  # the damage found is still reported, then why it stays
            failure = f"hfcache: error: --repair: {e}"
        else:
            report = check(client if online else None)
    render_report(report, repaired, as_json)
    if junit is not None:
        write_junit(junit, report)
    if failure:
        print(failure, file=sys.stderr)
    if not report.ok:
        raise typer.Exit(1)
    if failure:  # an operation failed (the endpoint could not be asked): 1, as any failure; 2 is for usage
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
    """`snapshot --lock`: fetch what the lock pins (all of it, or one repo's entries), then check it offline.

    Pins the endpoint contradicts are refused before anything is fetched (see `lockfile.fetch`).
    """
    from hfcache.render.console import print_json, render_snapshot
    from hfcache.render.verify import report_json, summary
    from hfcache.verify import lockfile
    from hfcache.verify.check import parse_spec, verify

    specs = [parse_spec(repo_id, repo_type)] if repo_id else []
    pins = lockfile.read(lock).select(specs)
    try:
        results = lockfile.fetch(pins, fetcher, source=str(lock))  # refuses a lock the endpoint contradicts
    finally:
        getattr(fetcher.progress, "stop", lambda: None)()
    report = verify(fetcher.cache, specs, lock=pins)
    if as_json:
        print_json({"snapshots": [{"repo_id": r.repo.repo_id, "repo_type": r.repo.repo_type, "commit": r.commit,
                                   "path": str(r.path), "files": r.files, "files_fetched": r.stats.files_fetched,
                                   "bytes_fetched": r.stats.bytes_fetched} for r in results],
                    "verify": report_json(report)})
    else:
        if report.ok:  # a script's `$(hfcache snapshot --lock ...)` must get no path when the check failed
            for r in results:
                render_snapshot(r, 0.0, False)
        for p in report.problems:
            print(f"{p.severity}: {p.repo}: {p.describe()}", file=sys.stderr)
        print(summary(report), file=sys.stderr)
    if not report.ok:
        raise typer.Exit(1)
