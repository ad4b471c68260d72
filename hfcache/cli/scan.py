"""`hfcache scan`, `rm`, `prune` and `dedup`: audit HF_HOME and reclaim space.

`rm`, `prune` and `dedup` print their plan, then act only with `--yes`. `--dry-run` prints the plan and stops.
Without either, a terminal is asked to confirm; anything else (a pipe, a script) gets the plan on stdout, a
one-line error on stderr and exit status 1, so a script never believes it freed space it did not.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hfcache.cli.common import FLAG, CacheDir, Json, RepoType, app

HfHome = Annotated[Path | None, typer.Option(
    "--hf-home", help="Scan this HF_HOME, every cache at its default place under it (default: the environment's).",
    show_default=False)]
Yes = Annotated[bool, typer.Option("--yes", "-y", metavar=FLAG, help="Act on the plan without asking.")]
DryRun = Annotated[bool, typer.Option("--dry-run", metavar=FLAG, help="Show the plan only; change nothing.")]


def _roots(hf_home: Path | None, cache_dir: Path | None):
    from hfcache.cache.roots import resolve_roots
    from hfcache.errors import UsageError

    for opt, p in (("--hf-home", hf_home), ("--cache-dir", cache_dir)):
        if p is not None and not p.expanduser().is_dir():
            raise UsageError(f"{opt} {p}: no such folder")
    return resolve_roots(hf_home=hf_home, hub_cache=cache_dir)


@app.command()
def scan(
    cache_dir: CacheDir = None,
    hf_home: HfHome = None,
    sort: Annotated[str, typer.Option("--sort", help="size, accessed, modified or name; add :asc or :desc.")] = "size",
    filters: Annotated[list[str] | None, typer.Option(
        "--filter", help="Keep repos matching, e.g. 'size>1GB', 'accessed>30d', 'type=dataset' (repeatable).")] = None,
    revisions: Annotated[bool, typer.Option("--revisions", metavar=FLAG,
                                            help="One line per revision instead of per repo.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="Show at most N repos (terminal default 15).",
                                              show_default=False)] = None,
    files: Annotated[bool, typer.Option("--files", metavar=FLAG,
                                        help="With --json: list every snapshot file too.")] = False,
    hub_only: Annotated[bool, typer.Option("--hub-only", metavar=FLAG, help="Scan the hub cache alone.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Also write a self-contained HTML report here.",
                                              show_default=False)] = None,
    as_json: Json = False,
) -> None:
    """Audit every Hugging Face cache in HF_HOME: sizes, repos, datasets, problems, and what could be reclaimed."""
    from hfcache.render.scan import print_json, render_scan, scan_json
    from hfcache.scan import scan as do_scan
    from hfcache.scan.query import select

    result = do_scan(_roots(hf_home, cache_dir), detail=files, hub_only=hub_only)
    shown_limit = limit if limit is not None else (None if as_json else 15)
    entries = select(result.hub.repos, filters or [], sort, shown_limit, revisions, result.scanned_at)
    total = len(select(result.hub.repos, filters or [], sort, None, revisions, result.scanned_at))
    if html is not None:
        from hfcache.scan.report_html import render_html

        try:
            html.write_text(render_html(result), encoding="utf-8")
        except OSError as e:
            from hfcache.errors import UsageError

            raise UsageError(f"cannot write {html}: {e.strerror}") from None
    from hfcache.cli.safety import scan_tally  # pickle-format files and remembered verdicts (no file read)

    safety = scan_tally(result)
    if as_json:
        print_json({**scan_json(result, entries, revisions, files), "safety": safety.to_json()})
    else:
        render_scan(result, entries, revisions, total, filters or [], sort, shown_limit or 15)
        from hfcache.render.safety import render_tally

        render_tally(safety)
        if html is not None:
            print(f"report: {html}")


def _act(plan, yes: bool, dry_run: bool, as_json: bool) -> None:
    """Show the plan; run it for real only with --yes (or a confirmation typed on a terminal)."""
    from hfcache.render.scan import plan_json, print_json, render_plan
    from hfcache.scan.reclaim import ConfirmationRequired
    from hfcache.scan.reclaim_run import execute

    if dry_run or not plan.actions:
        outcome = execute(plan, dry_run=True)
        print_json(plan_json(plan, outcome)) if as_json else render_plan(plan, outcome)
        return
    if not yes:
        interactive = sys.stdin.isatty() and sys.stdout.isatty() and not as_json
        if as_json:
            print_json(plan_json(plan, None))
        else:
            render_plan(plan, None)
        if not interactive:
            raise ConfirmationRequired(f"{plan.command}: nothing changed; pass --yes to act on this plan "
                                       "(or --dry-run to only show it)")
        if not typer.confirm("Proceed?", default=False):
            print(f"{plan.command}: nothing changed.")  # the user declined: nothing failed
            return
    outcome = execute(plan, dry_run=False)
    print_json(plan_json(plan, outcome)) if as_json else render_plan(plan, outcome)
    if outcome.errors:
        raise typer.Exit(1)


@app.command()
def rm(
    targets: Annotated[list[str], typer.Argument(
        help="Repos to remove: ORG/NAME, TYPE:ORG/NAME or TYPE/ORG/NAME, with @REV (ref or commit) for one revision.",
        show_default=False)],
    repo_type: RepoType = "model",
    cache_dir: CacheDir = None,
    yes: Yes = False,
    dry_run: DryRun = False,
    as_json: Json = False,
) -> None:
    """Remove repos or revisions from the hub cache; blobs a kept snapshot still uses stay."""
    from hfcache.scan import scan as do_scan
    from hfcache.scan.reclaim import plan_rm

    result = do_scan(_roots(None, cache_dir), detail=True, hub_only=True)
    _act(plan_rm(result, targets, repo_type), yes, dry_run, as_json)


@app.command()
def prune(
    older_than: Annotated[str | None, typer.Option(
        "--older-than", help="Also remove revisions and datasets downloads not accessed for this long, e.g. 30d.",
        show_default=False)] = None,
    cache_dir: CacheDir = None,
    hf_home: HfHome = None,
    yes: Yes = False,
    dry_run: DryRun = False,
    as_json: Json = False,
) -> None:
    """Remove detached revisions, orphan blobs and leftovers (old partial downloads, stale locks, orphan metadata)."""
    from hfcache.scan import scan as do_scan
    from hfcache.scan.prune import plan_prune
    from hfcache.scan.query import parse_duration

    age = parse_duration(older_than) if older_than is not None else None
    result = do_scan(_roots(hf_home, cache_dir), detail=True)
    _act(plan_prune(result, age), yes, dry_run, as_json)


@app.command()
def dedup(
    cache_dir: CacheDir = None,
    yes: Yes = False,
    dry_run: DryRun = False,
    as_json: Json = False,
) -> None:
    """Replace identical blobs (across repos, or copies in snapshots) with hard links, after hashing each one."""
    from hfcache.scan import scan as do_scan
    from hfcache.scan.reclaim import plan_dedup

    result = do_scan(_roots(None, cache_dir), detail=True, hub_only=True)
    _act(plan_dedup(result), yes, dry_run, as_json)
