"""`hfcache export`, `import`, `relocate` and `convert`: carrying caches between machines and layouts."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from hfcache.cli.common import FLAG, CacheDir, Json, app
from hfcache.units import counted


def _progress(label: str, quiet: bool):
    from hfcache.progress import Progress

    if quiet or not sys.stderr.isatty():
        return Progress()
    from hfcache.render.console import RichProgress

    return RichProgress(label)


def _note(line: str) -> None:
    print(f"hfcache: {line}", file=sys.stderr)


@contextlib.contextmanager
def _os_errors(doing: str) -> Iterator[None]:
    """A full disk or a refused permission is one line, like every other error (the work is atomic per file)."""
    from hfcache.errors import HfcacheError

    try:
        yield
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise HfcacheError(f"{doing} failed: {e.strerror or e}{where}") from None


@app.command()
def export(
    specs: Annotated[list[str] | None, typer.Argument(
        help="What to export: [model:|dataset:|space:]ORG/NAME[@REVISION] (revision defaults to main); offline "
        "caches: prepared:NAME[:CONFIG], module:NAME, url:URL.",
        show_default=False)] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="Bundle to write: a file, or a folder with "
                                        "--format dir or a trailing /.", show_default=False)] = "",
    fmt: Annotated[str | None, typer.Option("--format", help="tar (one file) or dir (a folder).",
                                            show_default=False)] = None,
    zstd: Annotated[bool, typer.Option(
        "--zstd", metavar=FLAG, help="Compress the tar with zstd (needs `zstandard`).")] = False,
    lock: Annotated[Path | None, typer.Option("--lock", help="Export exactly what this lock file pins (see "
                                              "`hfcache lock`); SPECs then select among its entries.",
                                              show_default=False)] = None,
    include: Annotated[list[str] | None, typer.Option("--include", help="Only files matching this glob.")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Skip files matching this glob.")] = None,
    cache_dir: CacheDir = None,
    as_json: Json = False,
) -> None:
    """Write cached revisions to a bundle another machine can `hfcache import` (no network needed)."""
    from hfcache.bundle.export import export_bundle, parse_spec, plan_export, specs_from_lock
    from hfcache.cache.layout import HubCache
    from hfcache.errors import UsageError
    from hfcache.render.console import Timer, human_size, print_json

    if not specs and lock is None:
        raise UsageError("nothing to export: give at least one repo spec, e.g. org/name@main, or --lock")
    if lock is not None and (include or exclude):
        raise UsageError("--lock already names every file: it cannot be combined with --include/--exclude")
    if fmt not in (None, "tar", "dir"):
        raise UsageError(f"--format {fmt!r}: expected tar or dir")
    if not output:
        raise UsageError("name the bundle to write with -o FILE (or -o FOLDER/)")
    as_dir = fmt == "dir" or (fmt is None and (output.endswith("/") or Path(output).is_dir()))
    out = Path(output)
    zstd = zstd or (not as_dir and out.name.endswith((".zst", ".tzst")))
    with Timer() as t, _os_errors("export"):
        from hfcache.offline.bundle_roles import is_area_spec, plan_areas
        from hfcache.offline.env import offline_roots

        hub_specs = [s for s in specs or () if not is_area_spec(s)]
        areas = plan_areas([s for s in specs or () if is_area_spec(s)], offline_roots(hub_cache=cache_dir))
        chosen = specs_from_lock(lock, hub_specs) if lock is not None else [parse_spec(s) for s in hub_specs]
        plan = plan_export(HubCache(cache_dir), chosen, include, exclude, areas)
        progress = _progress(f"export {out.name}", as_json)
        try:
            result = export_bundle(plan, out, as_dir=as_dir, zstd=zstd, progress=progress)
        finally:
            getattr(progress, "stop", lambda: None)()
    if as_json:
        print_json({**_fields(result), "seconds": round(t.seconds, 3)})
        return
    if result.absent:
        one = len(result.absent) == 1
        _note(f"warning: {counted(len(result.absent), 'file')} the tree listings name {'is' if one else 'are'} not "
              f"in the cache and {'was' if one else 'were'} not exported (first: {result.absent[0]})")
    _note(f"exported {counted(result.files, 'file')} ({counted(result.blobs, 'blob')}, "
          f"{human_size(result.bytes_payload)}) of {counted(len(result.revisions), 'revision')} in {t.seconds:.2f} s")
    print(result.path)


@app.command("import")
def import_(
    bundle: Annotated[Path, typer.Argument(help="Bundle file or folder written by `hfcache export`.")],
    cache_dir: CacheDir = None,
    hf_home: Annotated[Path | None, typer.Option("--hf-home", help="Import into HF_HOME/hub of this folder.",
                                                 show_default=False)] = None,
    no_symlinks: Annotated[bool, typer.Option(
        "--no-symlinks", metavar=FLAG, help="Write real files in snapshots/ (the layout "
                                              "huggingface_hub uses where symlinks are not available).")] = False,
    move_refs: Annotated[bool, typer.Option(
        "--move-refs", metavar=FLAG, help="Move a branch or tag the cache has at another "
                                            "commit to the bundle's (otherwise it is kept and reported as a "
                                            "conflict).")] = False,
    as_json: Json = False,
) -> None:
    """Check every hash in a bundle, then write its files into the cache; safe to re-run.

    A checked bundle proves its bytes match its manifest, not that its commits are the Hub's: a ref the cache
    already has at another commit moves only with --move-refs."""
    from hfcache.bundle.importer import import_bundle
    from hfcache.cache.layout import HubCache
    from hfcache.errors import HfcacheError, UsageError
    from hfcache.render.console import Timer, human_size, print_json

    if cache_dir is not None and hf_home is not None:
        raise UsageError("give --cache-dir or --hf-home, not both")
    cache = HubCache(hf_home / "hub" if hf_home is not None else cache_dir)
    with Timer() as t, _os_errors("import"):
        from hfcache.offline.bundle_roles import import_roots

        progress = _progress(f"import {bundle.name}", as_json)
        # prepared datasets, modules, mapped URLs: beside the cache chosen, never the environment's for another
        areas, refused = import_roots(cache.root, cache_dir is not None, hf_home)
        try:
            result = import_bundle(bundle, cache, symlinks=False if no_symlinks else None, progress=progress,
                                   area_roots=areas, areas_refused=refused, move_refs=move_refs)
        finally:
            getattr(progress, "stop", lambda: None)()
    if as_json:
        print_json({**_fields(result), "seconds": round(t.seconds, 3)})
    else:
        for line in result.refs_moved:
            _note(f"ref moved: {line}")
        _note(f"imported into {result.cache}: {counted(result.files_linked, 'file')} placed, {result.files_present} "
              f"already there; {counted(result.blobs_written, 'blob')} written ({human_size(result.bytes_written)}), "
              f"{result.blobs_reused} reused ({result.layout}) in {t.seconds:.2f} s")
        if result.area_files or result.area_present:
            _note(f"placed {counted(result.area_files, 'file')} of prepared datasets, modules and mapped URLs, "
                  f"{result.area_present} already there")
        for r in result.revisions:  # one snapshot folder per line, as `snapshot` prints it
            print(cache.snapshot_dir(r.repo, r.commit))
    if result.conflicts:
        for line in () if as_json else result.conflicts:
            _note(f"conflict: {line}")
        raise HfcacheError(f"{counted(len(result.conflicts), 'conflict')} with what the cache already holds, left "
                           f"untouched (first: {result.conflicts[0]})")


@app.command()
def relocate(
    old: Annotated[Path, typer.Argument(help="The HF_HOME or hub cache folder to move.")],
    new: Annotated[Path, typer.Argument(help="Where it goes (must not exist, or be an empty folder).")],
    copy: Annotated[bool, typer.Option(
        "--copy", metavar=FLAG, help="Copy, and leave OLD as it is.")] = False,
    as_json: Json = False,
) -> None:
    """Move (or copy) a whole HF_HOME or hub cache, fixing the links and keys that name its old place."""
    from hfcache.bundle.relocate import relocate as do_relocate
    from hfcache.render.console import print_json

    with _os_errors("relocate"):
        result = do_relocate(old, new, copy=copy)
    if as_json:
        print_json(_fields(result))
        return
    for note in result.notes:
        _note(note)
    for name, value in result.env.items():
        print(f"export {name}={_quote(value)}")


@app.command()
def convert(
    to_copies: Annotated[bool, typer.Option(
        "--to-copies", metavar=FLAG, help="Real files in snapshots/, blobs/ emptied.")] = False,
    to_symlinks: Annotated[bool, typer.Option(
        "--to-symlinks", metavar=FLAG, help="blobs/<etag> named by content, snapshots/ "
                                              "relative links; identical files stored once.")] = False,
    cache_dir: CacheDir = None,
    as_json: Json = False,
) -> None:
    """Switch a cache between the symlinked layout and the copied one, file by file, atomically."""
    from hfcache.bundle.convert import convert_to_copies, convert_to_symlinks
    from hfcache.cache.layout import HubCache
    from hfcache.errors import HfcacheError, UsageError
    from hfcache.render.console import human_size, print_json

    if to_copies == to_symlinks:
        raise UsageError("give exactly one of --to-copies and --to-symlinks")
    cache = HubCache(cache_dir)
    with _os_errors("convert"):
        result = convert_to_copies(cache) if to_copies else convert_to_symlinks(cache)
    if as_json:
        print_json(_fields(result))
    else:
        _note(f"{counted(result.files, 'file')} converted to {result.layout} in {result.cache}; "
              f"{counted(result.blobs_created, 'blob')} made, {result.blobs_removed} removed, "
              f"{human_size(result.bytes_saved)} saved by deduplication")
    if result.skipped:
        raise HfcacheError(f"{counted(len(result.skipped), 'file')} left as they were (first: {result.skipped[0]})")


def _fields(result) -> dict:
    from hfcache.render.console import to_jsonable

    return to_jsonable(result)


def _quote(value: str) -> str:
    import shlex

    return shlex.quote(value)
