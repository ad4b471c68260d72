"""Where datasets, evaluate and their module caches live, and which variables turn their network off.

Built on `hfcache.cache.roots` (the scan work's resolution of HF_HOME, HF_DATASETS_CACHE, HF_MODULES_CACHE,
HF_METRICS_CACHE, HF_EVALUATE_CACHE as the libraries read them); this adds the two folders only the offline
remapping needs: evaluate's downloads and the dynamic-module roots.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# What each library reads to stay off the network (evaluate ignores HF_HUB_OFFLINE; datasets >= 2.21 falls back
# to it but older ones read only HF_DATASETS_OFFLINE).
OFFLINE_VARS: dict[str, str] = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class OfflineRoots:
    """The folders the offline fallbacks read; none needs to exist."""

    hub: Path
    datasets: Path
    datasets_downloads: Path
    modules: Path
    evaluate_downloads: Path
    metrics: Path

    @property
    def datasets_modules(self) -> Path:
        return self.modules / "datasets_modules"

    @property
    def evaluate_modules(self) -> Path:
        return self.modules / "evaluate_modules"


def offline_roots(hub_cache: str | os.PathLike[str] | None = None, datasets_cache: str | os.PathLike[str] | None = None,
                  modules_cache: str | os.PathLike[str] | None = None,
                  hf_home: str | os.PathLike[str] | None = None) -> OfflineRoots:
    """The environment's folders (or all at their defaults under `hf_home`), with explicit overrides (as
    `cache_dir=` / `dynamic_modules_path=` would be)."""
    from hfcache.cache.roots import resolve_roots

    r = resolve_roots(hf_home=hf_home, hub_cache=hub_cache)
    datasets, downloads = r.datasets, r.datasets_downloads
    if datasets_cache is not None:  # `cache_dir=` in datasets moves downloads/ along with it
        datasets = Path(datasets_cache).expanduser().absolute()
        downloads = datasets / "downloads"
    evaluate_downloads = r.evaluate / "downloads"
    if hf_home is None:
        evaluate_downloads = Path(os.environ.get("HF_DATASETS_DOWNLOADED_EVALUATE_PATH", evaluate_downloads))
    modules = Path(modules_cache).expanduser().absolute() if modules_cache is not None else r.modules
    return OfflineRoots(hub=r.hub, datasets=datasets, datasets_downloads=downloads, modules=modules,
                        evaluate_downloads=evaluate_downloads.expanduser().absolute(), metrics=r.metrics)


def library_version(name: str) -> str | None:
    """The installed version of a distribution, without importing it (importing datasets takes a second)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def major(version: str | None) -> int | None:
    try:
        return int(version.split(".")[0]) if version else None
    except ValueError:
        return None


def offline_env_state(environ: dict[str, str] | None = None) -> dict[str, bool]:
    """Which offline switch each library sees now; datasets >= 2.21 takes HF_HUB_OFFLINE when its own is unset."""
    env = os.environ if environ is None else environ

    def on(var: str) -> bool:
        return env.get(var, "").upper() in _TRUE

    hub = on("HF_HUB_OFFLINE") or on("TRANSFORMERS_OFFLINE")
    return {"HF_HUB_OFFLINE": hub,
            "HF_DATASETS_OFFLINE": on("HF_DATASETS_OFFLINE") if "HF_DATASETS_OFFLINE" in env else hub,
            "HF_EVALUATE_OFFLINE": on("HF_EVALUATE_OFFLINE")}
