"""`datasets materialize`: turn a cached Hub dataset snapshot into the prepared folder offline `load_dataset` reads.

Offline, datasets (3 to 5) never looks at the hub cache: it globs `<HF_DATASETS_CACHE>/<ns>___<name>/` for
`<config_id>/<version>/<hash>/` folders whose `dataset_info.json` names the config, and loads the newest. So a
snapshot alone is not enough. This builds that folder with the library's own machinery (the snapshot read as a
local dataset, its README `configs:` and `dataset_info:` applied, the packaged Parquet builder with
`hash=<commit>`), staged and renamed into place. Aliases place the same data under another name (`glue` /
`nyu-mll/glue`) or under the config id an offline `load_dataset(..., data_files=X)` computes (datasets
#4760/#6837: offline hashes the unresolved `data_files`, online the resolved ones).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hfcache.cache.layout import HubCache, RepoRef, is_commit
from hfcache.errors import BuildError, SourceMissing, SpecError, UsageError
from hfcache.offline.folders import swap_folder

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


@dataclass(frozen=True)
class Alias:
    """Another way the same data is asked for: a dataset name, or `load_dataset(NAME, [config], data_files=X)`."""

    name: str | None = None
    data_files: Any = None
    config: str | None = None


@dataclass(frozen=True)
class PreparedFolder:
    name: str
    config_id: str
    path: Path
    data_files: Any = None


@dataclass(frozen=True)
class MaterializeResult:
    repo_id: str
    config: str
    commit: str
    snapshot: Path
    builder: str
    splits: dict[str, int]
    folders: tuple[PreparedFolder, ...]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """`REPO[:CONFIG]` -> (repo id, config or None)."""
    repo_id, _, config = spec.partition(":")
    if not _NAME_RE.fullmatch(repo_id) or (config == "" and spec.endswith(":")):
        raise SpecError(f"invalid dataset spec {spec!r} (expected NAME, NAMESPACE/NAME, optionally :CONFIG)")
    return repo_id, config or None


def parse_alias(value: str) -> Alias:
    """`NAME`, or `[CONFIG:]data_files=<JSON or one pattern>` for a caller passing that config and data_files."""
    config, sep, raw = value.partition("data_files=")
    if sep and (config == "" or config.endswith(":")):
        config = config[:-1] or None
        if config is not None and not _NAME_RE.fullmatch(config):
            raise SpecError(f"invalid alias {value!r}: bad config name {config!r}")
        try:
            data_files = json.loads(raw)
        except ValueError:
            data_files = raw
        if not data_files or not isinstance(data_files, (str, list, dict)):
            raise SpecError(f"invalid alias {value!r}: data_files must be a pattern, a list or a split->files dict")
        return Alias(data_files=data_files, config=config)
    if not _NAME_RE.fullmatch(value):
        raise SpecError(f"invalid alias {value!r} (expected NAME, NAMESPACE/NAME or [CONFIG:]data_files=JSON)")
    return Alias(name=value)


def camelcase_to_snakecase(name: str) -> str:
    """`datasets.naming.camelcase_to_snakecase` (same in 2.x and 5.x), here so `doctor` need not import datasets."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z\d])([A-Z])", r"\1_\2", name).lower()


def prepared_root(datasets_cache: Path, name: str) -> Path:
    """`<cache>/<ns>___<snake(name)>`, as `datasets` names it (`_relative_data_dir`, `_find_hash_in_cache`)."""
    parts = name.split("/")
    parts[-1] = camelcase_to_snakecase(parts[-1])
    return datasets_cache / "___".join(parts)


def offline_config_id(config: str | None, data_files: Any) -> str:
    """The config id offline `load_dataset(name, config, data_files=X)` looks for (computed from X as given)."""
    import datasets

    return datasets.BuilderConfig(config or "default").create_config_id(config_kwargs={"data_files": data_files})


def find_snapshot(hub_cache: Path | None, repo_id: str, revision: str) -> tuple[str, Path]:
    """(commit, folder) of a complete dataset snapshot in the hub cache; what is missing is said exactly."""
    repo = RepoRef(repo_id, "dataset")
    cache = HubCache(hub_cache)
    commit = revision if is_commit(revision) else cache.read_ref(repo, revision)
    folder = cache.snapshot_dir(repo, commit) if commit else None
    if folder is None or not folder.is_dir():
        raise SourceMissing(f"dataset {repo_id} @ {revision} is not in the hub cache {cache.root} "
                            f"(fetch it: hfcache snapshot {repo_id} --repo-type dataset --revision {revision})")
    tree = cache.read_tree(repo, commit)
    missing = sorted(p for p in (tree or {}) if not (folder / p).exists())
    if missing:
        raise SourceMissing(f"the snapshot of dataset {repo_id} @ {commit[:12]} lacks {len(missing)} of its files "
                            f"(e.g. {missing[0]}); fetch it whole: hfcache snapshot {repo_id} --repo-type dataset")
    return commit, folder


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _load_module(snapshot: Path):
    from datasets.load import LocalDatasetModuleFactory

    try:
        return LocalDatasetModuleFactory(str(snapshot)).get_module()
    except Exception as e:  # the library's own reasons: no data files, bad YAML...
        raise BuildError(f"datasets cannot read the snapshot {snapshot}: {_first_line(e)}") from None


def _pick_config(module, repo_id: str, config: str | None) -> str:
    params = module.builder_configs_parameters
    names = [c.name for c in params.builder_configs or []]
    if config is not None:
        if config not in names:
            raise SourceMissing(f"dataset {repo_id} has no config {config!r} (configs: {', '.join(names)})")
        return config
    if params.default_config_name:
        return params.default_config_name
    if len(names) == 1:
        return names[0]
    raise SourceMissing(f"dataset {repo_id} has {len(names)} configs ({', '.join(names)}): name one as "
                        f"{repo_id}:CONFIG")


def _build(builder_cls, staging: Path, snapshot: Path, base: str, commit: str, config: str, info, data_files=None):
    try:
        builder = builder_cls(cache_dir=str(staging), dataset_name=base, config_name=config, hash=commit,
                              base_path=str(snapshot), info=info, data_files=data_files)
        builder.download_and_prepare()
    except Exception as e:
        raise BuildError(f"datasets could not prepare {base}/{config} from {snapshot}: {_first_line(e)}") from None
    return builder


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _place(built: Path, dest: Path, old_base: str, new_base: str) -> None:
    """Copy (hard links when possible) a built folder to `dest`, renamed for `new_base`, then swap it in."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name[:16]}.{uuid.uuid4().hex[:8]}.tmp"
    shutil.copytree(built, tmp, copy_function=_link_or_copy)
    try:
        if new_base != old_base:  # arrow files are named <dataset_name>-<split>...
            for f in tmp.glob(f"{old_base}-*.arrow"):
                f.rename(f.with_name(new_base + f.name[len(old_base):]))
            info_file = tmp / "dataset_info.json"
            info = json.loads(info_file.read_text(encoding="utf-8"))
            info["dataset_name"] = new_base
            info_file.write_text(json.dumps(info, sort_keys=True), encoding="utf-8")
        swap_folder(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.utime(dest)  # offline, the newest folder of a config wins


def materialize(spec: str, datasets_cache: Path, hub_cache: Path | None = None, revision: str = "main",
                aliases: tuple[Alias, ...] = ()) -> MaterializeResult:
    """Build `<datasets_cache>/<ns>___<name>/<config>/<version>/<commit>/` (and each alias) from the snapshot."""
    repo_id, config = parse_spec(spec)
    commit, snapshot = find_snapshot(hub_cache, repo_id, revision)
    try:
        import datasets
        from datasets.load import get_dataset_builder_class
    except ImportError:
        raise UsageError("materialize needs the `datasets` library: pip install 'hfcache[offline]'") from None
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its reasons come back as one BuildError line
    module = _load_module(snapshot)
    config = _pick_config(module, repo_id, config)
    base = camelcase_to_snakecase(repo_id.split("/")[-1])
    builder_cls = get_dataset_builder_class(module, dataset_name=base)
    info = module.dataset_infos.get(config) if module.dataset_infos else None
    names = [repo_id, *dict.fromkeys(a.name for a in aliases if a.name and a.name != repo_id)]
    datasets_cache.mkdir(parents=True, exist_ok=True)
    staging = datasets_cache / f".hfcache-materialize-{uuid.uuid4().hex[:12]}"
    folders: list[PreparedFolder] = []
    try:
        builder = _build(builder_cls, staging / "main", snapshot, base, commit, config, info)
        builds = [(builder, config, None)]
        default = module.builder_configs_parameters.default_config_name
        for i, alias in enumerate(a for a in aliases if a.data_files is not None):
            # as online `load_dataset(name, alias.config, data_files=X)` builds it: that config (or the default)
            # with X resolved in the snapshot; placed where the offline call looks, under X as given
            if alias.config is not None:
                _pick_config(module, repo_id, alias.config)
            b = _build(builder_cls, staging / f"alias{i}", snapshot, base, commit, alias.config or default, None,
                       alias.data_files)
            builds.append((b, offline_config_id(alias.config, alias.data_files), alias.data_files))
        for b, config_id, data_files in builds:
            built = Path(b.cache_dir)
            version = built.parent.name
            for name in names:
                dest = prepared_root(datasets_cache, name) / config_id / version / commit
                _place(built, dest, base, camelcase_to_snakecase(name.split("/")[-1]))
                folders.append(PreparedFolder(name=name, config_id=config_id, path=dest, data_files=data_files))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    splits = {name: split.num_examples for name, split in (builder.info.splits or {}).items()}
    return MaterializeResult(repo_id=repo_id, config=config, commit=commit, snapshot=snapshot,
                             builder=builder.name, splits=splits, folders=tuple(folders))


def prepared_folders(datasets_cache: Path, name: str, config: str | None = None) -> list[Path]:
    """Folders offline `load_dataset(name[, config])` would consider, oldest first (the newest is loaded)."""
    out = []
    for d in prepared_root(datasets_cache, name).glob(f"{config or '*'}/*/*"):
        if not d.is_dir() or d.name.startswith("."):
            continue
        try:
            info = json.loads((d / "dataset_info.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if info.get("config_name") == d.parts[-3]:  # without data_files=, the library requires this
            out.append(d)
    return sorted(out, key=lambda d: d.stat().st_mtime)
