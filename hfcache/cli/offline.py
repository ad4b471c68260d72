"""`map-url`, `datasets materialize`, `modules add` and `doctor`: make datasets and metrics resolve offline."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from hfcache.cli.common import CacheDir, Json, Revision, app
from hfcache.errors import UsageError
from hfcache.units import counted

datasets_app = typer.Typer(help="Prepared datasets that offline `load_dataset` finds.", no_args_is_help=True)
modules_app = typer.Typer(help="Dataset and metric scripts in the module caches.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(modules_app, name="modules")

DatasetsCache = Annotated[Path | None, typer.Option(
    "--datasets-cache", help="datasets cache (default: HF_DATASETS_CACHE, else HF_HOME/datasets).", show_default=False)]
ModulesCache = Annotated[Path | None, typer.Option(
    "--modules-cache", help="Module cache (default: HF_MODULES_CACHE, else HF_HOME/modules).", show_default=False)]


def _roots(cache_dir: Path | None = None, datasets_cache: Path | None = None, modules_cache: Path | None = None):
    from hfcache.offline.env import offline_roots

    return offline_roots(hub_cache=cache_dir, datasets_cache=datasets_cache, modules_cache=modules_cache)


def _json(obj) -> None:
    from hfcache.render.console import print_json

    print_json(obj)


@app.command("map-url")
def map_url(
    url: Annotated[str | None, typer.Argument(help="The URL a dataset script or metric loader downloads.",
                                              show_default=False)] = None,
    file: Annotated[Path | None, typer.Argument(help="The file to stand for its download.", show_default=False)] = None,
    target: Annotated[str, typer.Option("--target", help="Whose downloads folder: datasets or evaluate.")] = "datasets",
    from_script: Annotated[Path | None, typer.Option(
        "--from-script", help="A legacy dataset script: alone, list the URLs it downloads; with URL FILE, refuse a "
        "URL it does not name.", show_default=False)] = None,
    files: Annotated[Path | None, typer.Option(
        "--files", help="With --from-script: map each URL to the file of the same name in this folder.",
        show_default=False)] = None,
    downloads_dir: Annotated[Path | None, typer.Option(
        "--downloads-dir", help="Downloads folder (default: HF_DATASETS_CACHE/downloads or HF_EVALUATE_CACHE/"
        "downloads).", show_default=False)] = None,
    as_json: Json = False,
) -> None:
    """Place FILE where the library looks for URL's download (sha256(url)[.py] + sidecar), so no script is edited."""
    from hfcache.offline.script_urls import require_in_script, script_urls, url_file_name
    from hfcache.offline.urls import TARGETS
    from hfcache.offline.urls import map_url as do_map

    if target not in TARGETS:
        raise UsageError(f"--target {target}: expected one of {', '.join(TARGETS)}")
    roots = _roots()
    folder = downloads_dir or (roots.evaluate_downloads if target == "evaluate" else roots.datasets_downloads)
    if url is not None and file is None:
        raise UsageError("missing FILE: the file that stands for the URL's download")
    if files is not None and (from_script is None or url is not None):
        raise UsageError("--files maps the URLs of --from-script SCRIPT; give no URL FILE with it")
    if url is None:
        if from_script is None:
            raise UsageError("give URL FILE, or --from-script SCRIPT to list the URLs a script downloads")
        found = script_urls(from_script)
        if files is None:
            if as_json:
                return _json({"script": from_script, "urls": found})
            for u in found:
                if u.downloaded:
                    print(u.url)
            return None
        wanted = [(u.url, files / url_file_name(u.url)) for u in found if u.downloaded]
        missing = [str(p) for _, p in wanted if not p.is_file()]
        if missing:
            from hfcache.errors import SourceMissing

            raise SourceMissing(f"{len(missing)} of the {counted(len(wanted), 'file')} {from_script} downloads "
                                f"{'is' if len(missing) == 1 else 'are'} not in "
                                f"{files}: {', '.join(Path(m).name for m in missing[:5])}")
        mapped = [do_map(u, p, target, folder) for u, p in wanted]
    else:
        if from_script is not None:
            require_in_script(url, from_script)
        mapped = [do_map(url, file, target, folder)]
    if as_json:
        return _json({"mapped": [{"url": m.url, "target": m.target, "paths": m.paths, "size": m.size,
                                  "sha256": m.sha256} for m in mapped]})
    for m in mapped:
        print(m.paths[0])


@datasets_app.command("materialize")
def materialize(
    spec: Annotated[str, typer.Argument(help="REPO[:CONFIG], a dataset snapshot already in the hub cache.")],
    revision: Revision = "main",
    alias: Annotated[list[str] | None, typer.Option(
        "--alias", help="Also findable as this name (glue / nyu-mll/glue), or as [CONFIG:]data_files=JSON for "
        "offline load_dataset(REPO, data_files=...) calls. Repeatable.", show_default=False)] = None,
    cache_dir: CacheDir = None,
    datasets_cache: DatasetsCache = None,
    as_json: Json = False,
) -> None:
    """Build the prepared folder offline load_dataset(REPO, CONFIG) reads, from the cached snapshot's files."""
    from hfcache.offline.materialize import parse_alias, parse_spec

    parse_spec(spec)
    aliases = tuple(parse_alias(a) for a in alias or ())
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # everything it needs is on disk: never the network
        os.environ[var] = "1"
    from hfcache.offline.materialize import materialize as build

    result = build(spec, _roots(cache_dir, datasets_cache).datasets, cache_dir, revision, aliases)
    if as_json:
        return _json(result)
    rows = ", ".join(f"{k} {v}" for k, v in result.splits.items())
    print(f"{result.repo_id}:{result.config} @ {result.commit[:12]} ({rows})", file=sys.stderr)
    for f in result.folders:
        print(f.path)


@modules_app.command("add")
def modules_add(
    path_or_spec: Annotated[str, typer.Argument(help="A script, a folder holding NAME/NAME.py, or a cached repo: "
                                                "dataset:REPO[@REV] or space:NS/NAME[@REV].")],
    name: Annotated[str | None, typer.Option("--name", help="Name it is loaded by (default: the script's; "
                                             "evaluate: evaluate-metric/NAME).", show_default=False)] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="dataset, metric (datasets.load_metric) or evaluate "
                                             "(default: read from the script's classes).", show_default=False)] = None,
    revision: Revision = "main",
    cache_dir: CacheDir = None,
    modules_cache: ModulesCache = None,
    as_json: Json = False,
) -> None:
    """Install a dataset or metric script where its library looks for it offline; prints the module folder."""
    from hfcache.offline.modules import install, resolve_script

    module = resolve_script(path_or_spec, cache_dir, revision, name, kind)
    result = install(module, _roots(modules_cache=modules_cache).modules)
    if as_json:
        return _json(result)
    print(f"{result.kind} {result.name} {result.hash[:12]}", file=sys.stderr)
    print(result.module_dir)


@app.command()
def doctor(
    specs: Annotated[list[str] | None, typer.Argument(
        help="dataset:NAME[:CONFIG], metric:NAME, url:URL or script:PATH (a bare URL, .py path or dataset name "
        "is guessed).", show_default=False)] = None,
    cache_dir: CacheDir = None,
    datasets_cache: DatasetsCache = None,
    modules_cache: ModulesCache = None,
    as_json: Json = False,
) -> None:
    """Say whether each spec resolves offline with the libraries installed here, why not, and what to set."""
    from hfcache.offline.doctor import diagnose

    report = diagnose(list(specs or ()), _roots(cache_dir, datasets_cache, modules_cache))
    if as_json:
        _json(report)
    else:
        libs = ", ".join(f"{k} {v}" for k, v in report.libraries.items() if v) or "none of datasets, evaluate"
        print(f"libraries: {libs}")
        for d in report.diagnoses:
            for c in d.checks:
                print(f"{'ok' if c.ok else 'NO':<3} {d.spec}  {c.call} [{c.library}]: {c.detail}")
                if c.fix:
                    print(f"      fix: {c.fix}")
        for w in report.warnings:
            print(f"note: {w}")
        print("offline, set:")
        for var, value in report.set_vars.items():
            now = "on" if report.offline_now.get(var) else "off"
            print(f"  export {var}={value}    # now {now}")
    if not report.ok:
        raise typer.Exit(1)
