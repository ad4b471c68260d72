"""Where each Hugging Face cache lives, resolved as the libraries that write them resolve it.

`huggingface_hub` paths come from `huggingface_hub.constants` (read once, at import, like the library does), the
`datasets`/modules paths from the same environment variables and defaults as `datasets.config` (which expands
`~` but not `$VARS`). Passing `hf_home` means "everything at its default place under this folder".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CacheRoots:
    """Every cache folder under (or configured next to) HF_HOME; none needs to exist."""

    home: Path
    hub: Path
    datasets: Path
    datasets_downloads: Path
    datasets_extracted: Path
    modules: Path
    xet: Path
    assets: Path
    metrics: Path
    evaluate: Path
    token: Path
    stored_tokens: Path

    def areas(self) -> dict[str, Path]:
        """The folders `scan` measures, by area name (datasets downloads are part of `datasets`)."""
        return {"hub": self.hub, "datasets": self.datasets, "modules": self.modules, "xet": self.xet,
                "assets": self.assets, "metrics": self.metrics, "evaluate": self.evaluate}


def resolve_roots(hf_home: str | os.PathLike[str] | None = None,
                  hub_cache: str | os.PathLike[str] | None = None) -> CacheRoots:
    """The cache folders the libraries would use now; `hub_cache` overrides the hub cache alone."""
    if hf_home is not None:
        home = Path(hf_home).expanduser().absolute()
        hub, xet, assets, token = home / "hub", home / "xet", home / "assets", home / "token"
        env: dict[str, str] = {}
    else:
        from huggingface_hub import constants

        home = Path(constants.HF_HOME)
        hub, xet, assets = Path(constants.HF_HUB_CACHE), Path(constants.HF_XET_CACHE), Path(constants.HF_ASSETS_CACHE)
        token = Path(constants.HF_TOKEN_PATH)
        env = dict(os.environ)
        # datasets computes its own HF_HOME: expanduser only, XDG default "~/.cache".
        home_for_datasets = Path(os.path.expanduser(env.get(
            "HF_HOME", os.path.join(env.get("XDG_CACHE_HOME", "~/.cache"), "huggingface"))))
    if hf_home is not None:
        home_for_datasets = home
    datasets = Path(env.get("HF_DATASETS_CACHE", home_for_datasets / "datasets"))
    downloads = Path(env.get("HF_DATASETS_DOWNLOADED_DATASETS_PATH", datasets / "downloads"))
    extracted = Path(env.get("HF_DATASETS_EXTRACTED_DATASETS_PATH", datasets / "downloads" / "extracted"))
    if hub_cache is not None:
        hub = Path(hub_cache)

    def absolute(p: Path) -> Path:
        return p.expanduser().absolute()

    return CacheRoots(
        home=absolute(home), hub=absolute(hub), datasets=absolute(datasets), datasets_downloads=absolute(downloads),
        datasets_extracted=absolute(extracted),
        modules=absolute(Path(env.get("HF_MODULES_CACHE", home_for_datasets / "modules"))),
        xet=absolute(xet), assets=absolute(assets),
        metrics=absolute(Path(env.get("HF_METRICS_CACHE", home_for_datasets / "metrics"))),
        evaluate=absolute(Path(env.get("HF_EVALUATE_CACHE", home_for_datasets / "evaluate"))),
        token=absolute(token), stored_tokens=absolute(token.parent / "stored_tokens"),
    )
