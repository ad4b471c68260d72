"""`doctor`: will this dataset, metric, URL or script resolve offline with the libraries installed here? If not, why.

Each check follows the library's own offline path for the installed version (read from package metadata, never
imported): datasets >= 3 reads prepared folders only; datasets < 4 also runs a cached script module, whose data
URLs must be mapped; evaluate tries its mapped Hub script for each module type, then cached modules;
`load_metric` (datasets < 3) a mapped GitHub script, then cached modules.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from hfcache.errors import HfcacheError, SpecError
from hfcache.offline.env import OFFLINE_VARS, OfflineRoots, library_version, major, offline_env_state
from hfcache.offline.materialize import find_snapshot, parse_spec, prepared_folders, prepared_root
from hfcache.offline.modules import files_to_hash, installed_versions
from hfcache.offline.script_urls import script_urls
from hfcache.offline.urls import check_url, datasets_metric_url, evaluate_script_url, is_mapped

_KIND_RE = re.compile(r"(dataset|metric|url|script):(.+)")
_METRIC_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")
_EVALUATE_TYPES = ("metric", "comparison", "measurement")


@dataclass(frozen=True)
class Check:
    """One library call and whether it resolves offline: from where, or why not and what to run."""

    library: str
    call: str
    ok: bool
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class Diagnosis:
    spec: str
    kind: str
    ok: bool
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class DoctorReport:
    libraries: dict[str, str | None]
    roots: OfflineRoots
    offline_now: dict[str, bool]
    set_vars: dict[str, str]
    warnings: tuple[str, ...]
    diagnoses: tuple[Diagnosis, ...]
    ok: bool


def parse_doctor_spec(spec: str) -> tuple[str, str]:
    """(kind, value): `dataset:`, `metric:`, `url:`, `script:` prefixes, or guessed (URL, *.py, else dataset)."""
    m = _KIND_RE.fullmatch(spec)
    if m:
        kind, value = m.group(1), m.group(2)
    elif "://" in spec:
        kind, value = "url", spec
    elif spec.endswith(".py"):
        kind, value = "script", spec
    else:
        kind, value = "dataset", spec
    if kind == "dataset":
        parse_spec(value)
    elif kind == "metric" and not _METRIC_RE.fullmatch(value):
        raise SpecError(f"invalid metric name {value!r} (expected NAME or NAMESPACE/NAME)")
    elif kind == "url":
        check_url(value)
    elif kind == "script" and not Path(value).is_file():
        raise SpecError(f"script {value}: no such file")
    return kind, value


def _lib(name: str, version: str | None) -> str:
    return f"{name} {version}" if version else name


def _unmapped(script: Path, downloads: Path) -> list[str]:
    return [u.url for u in script_urls(script) if u.downloaded and is_mapped(u.url, downloads) is None]


def _script_module_check(name: str, call: str, lib: str, roots: OfflineRoots, versions: list[Path]) -> Check:
    module = versions[-1]
    unmapped = _unmapped(module / f"{name.split('/')[-1]}.py", roots.datasets_downloads)
    if unmapped:
        return Check(lib, call, False, f"script module {module} downloads {len(unmapped)} URL(s) not mapped, "
                     f"first {unmapped[0]}", f"hfcache map-url {unmapped[0]} FILE")
    return Check(lib, call, True, f"script module {module}; its data URLs are mapped")


def _dataset(spec: str, roots: OfflineRoots, version: str | None) -> list[Check]:
    name, config = parse_spec(spec)
    call = f'load_dataset("{name}"' + (f', "{config}"' if config else "") + ")"
    lib = _lib("datasets", version)
    if version is None:
        return [Check("datasets", call, False, "datasets is not installed here", "pip install datasets")]
    modules = installed_versions(roots.modules, "dataset", name)
    if modules and major(version) is not None and major(version) < 4:  # scripts are looked up first
        return [_script_module_check(name, call, lib, roots, modules)]
    folders = prepared_folders(roots.datasets, name, config)
    if not folders:
        root = prepared_root(roots.datasets, name)
        configs = sorted({d.parts[-3] for d in root.glob("*/*/*") if d.is_dir()})
        why = f"no prepared folder under {root}" + (f" for config {config!r} (prepared: {', '.join(configs)})"
                                                    if configs and config else "")
        if modules:
            why += f"; its script module is not run: datasets {version} no longer runs scripts"
        target = f"{name}:{config}" if config else name
        try:
            find_snapshot(roots.hub, name, "main")
            fix = f"hfcache datasets materialize {target}"
        except HfcacheError:
            fix = f"hfcache snapshot {name} --repo-type dataset && hfcache datasets materialize {target}"
        return [Check(lib, call, False, why, fix)]
    newest = folders[-1]
    if config is None:
        siblings = [d.parts[-3] for d in folders if d.parts[-2:] == newest.parts[-2:]]
        if len(siblings) > 1:
            return [Check(lib, call, False, f"{len(siblings)} configs prepared for the same commit "
                          f"({', '.join(sorted(siblings))}): the call must name one", None)]
    info = json.loads((newest / "dataset_info.json").read_text(encoding="utf-8"))
    base = prepared_root(roots.datasets, name).name.split("___")[-1]
    missing = [s for s in (info.get("splits") or {}) if not any(newest.glob(f"{base}-{s}*.arrow"))]
    if missing:
        return [Check(lib, call, False, f"{newest} lacks the Arrow files of split(s) {', '.join(missing)}",
                      f"hfcache datasets materialize {name}:{newest.parts[-3]}")]
    return [Check(lib, call, True, str(newest))]


def _metric(name: str, roots: OfflineRoots, versions: dict[str, str | None]) -> list[Check]:
    checks = []
    ev = versions.get("evaluate")
    if ev:
        call = f'evaluate.load("{name}")'
        repos = [name] if "/" in name else [f"evaluate-{t}/{name}" for t in _EVALUATE_TYPES]
        found = None
        for repo in repos:  # evaluate's order offline: each type's mapped Hub script, then cached modules
            url = evaluate_script_url(repo, ev)
            if (path := is_mapped(url, roots.evaluate_downloads, "evaluate")) is not None:
                found = f"mapped script {path} (for {url})"
                break
        for repo in repos if found is None else ():
            if mods := installed_versions(roots.modules, "evaluate", repo):
                found = f"module {mods[-1]}"
                break
        base = name.split("/")[-1]
        fix = (f"hfcache modules add {base}/  (a folder holding {base}.py), or hfcache map-url "
               f"{evaluate_script_url(repos[0], ev)} {base}.py --target evaluate")
        checks.append(Check(_lib("evaluate", ev), call, found is not None,
                            found or f"no mapped script and no module for {', '.join(repos)}",
                            None if found else fix))
    ds = versions.get("datasets")
    if ds and (major(ds) or 0) < 3 and "/" not in name:
        call = f'datasets.load_metric("{name}")'
        url = datasets_metric_url(name, ds)
        found = None
        if (path := is_mapped(url, roots.datasets_downloads)) is not None:
            found = f"mapped script {path} (for {url})"
        elif mods := installed_versions(roots.modules, "metric", name):
            found = f"module {mods[-1]}"
        checks.append(Check(_lib("datasets", ds), call, found is not None, found or "no mapped script, no module",
                            None if found else f"hfcache map-url {url} {name}.py  (or hfcache modules add {name}/)"))
    if not checks:
        checks.append(Check("evaluate", f'evaluate.load("{name}")', False,
                            "neither evaluate nor datasets < 3 is installed here", "pip install evaluate"))
    return checks


def _url(url: str, roots: OfflineRoots, versions: dict[str, str | None]) -> list[Check]:
    checks = []
    for lib, downloads, target in (("datasets", roots.datasets_downloads, "datasets"),
                                   ("evaluate", roots.evaluate_downloads, "evaluate")):
        if versions.get(lib) is None:
            continue
        path = is_mapped(url, downloads, target)
        checks.append(Check(_lib(lib, versions[lib]), f"cached_path({url!r})", path is not None,
                            str(path) if path else f"not in {downloads}",
                            None if path else f"hfcache map-url {url} FILE --target {target}"))
    return checks or [Check("datasets", f"cached_path({url!r})", False, "neither datasets nor evaluate is installed",
                            "pip install datasets")]


def _script(path: Path, roots: OfflineRoots, version: str | None) -> list[Check]:
    name = path.stem
    call = f'load_dataset("{name}", trust_remote_code=True)'
    lib = _lib("datasets", version)
    unmapped = _unmapped(path, roots.datasets_downloads)
    modules = installed_versions(roots.modules, "dataset", name)
    problems = []
    if not modules:
        problems.append(("its module is not installed", f"hfcache modules add {path}"))
    elif modules[-1].name != files_to_hash([path]):
        problems.append((f"the newest installed module {modules[-1].name[:12]} is another version of it",
                         f"hfcache modules add {path}"))
    if unmapped:
        problems.append((f"{len(unmapped)} URL(s) it downloads are not mapped, first {unmapped[0]}",
                         f"hfcache map-url --from-script {path} --files DIR"))
    if version is None or (major(version) or 0) >= 4:
        problems.insert(0, (f"{lib} does not run dataset scripts (removed in datasets 4.0)" if version
                            else "datasets is not installed here", None))
    if problems:
        return [Check(lib, call, False, "; ".join(p for p, _ in problems), next((f for _, f in problems if f), None))]
    return [Check(lib, call, True, f"module {modules[-1]}; all its data URLs are mapped")]


def diagnose(specs: list[str], roots: OfflineRoots) -> DoctorReport:
    """One diagnosis per spec; specs are parsed first so a bad one fails before any work."""
    parsed = [(s, *parse_doctor_spec(s)) for s in specs]
    versions = {lib: library_version(lib) for lib in ("datasets", "evaluate", "huggingface_hub")}
    offline_now = offline_env_state()
    diagnoses = []
    for spec, kind, value in parsed:
        if kind == "dataset":
            checks = _dataset(value, roots, versions["datasets"])
        elif kind == "metric":
            checks = _metric(value, roots, versions)
        elif kind == "url":
            checks = _url(value, roots, versions)
        else:
            checks = _script(Path(value), roots, versions["datasets"])
        diagnoses.append(Diagnosis(spec=spec, kind=kind, ok=any(c.ok for c in checks), checks=tuple(checks)))
    warnings = []
    kinds = {k for _, k, _ in parsed}
    if kinds & {"dataset", "script", "url"} and not offline_now["HF_DATASETS_OFFLINE"]:
        warnings.append("datasets will try the Hub first: set HF_DATASETS_OFFLINE=1 (datasets < 2.21 ignores "
                        "HF_HUB_OFFLINE)")
    if kinds & {"metric", "url"} and versions["evaluate"] and not offline_now["HF_EVALUATE_OFFLINE"]:
        warnings.append("evaluate ignores HF_HUB_OFFLINE: set HF_EVALUATE_OFFLINE=1 or it tries the network first")
    return DoctorReport(libraries=versions, roots=roots, offline_now=offline_now, set_vars=dict(OFFLINE_VARS),
                        warnings=tuple(warnings), diagnoses=tuple(diagnoses), ok=all(d.ok for d in diagnoses))
