"""The legacy recipe with datasets 2.x (run by `make test-legacy` in .venv-legacy): a glue/mrpc-style script
dataset whose data URLs `map-url` places and whose script `modules add` installs builds offline, and
`load_metric` loads a mapped metric script and an installed one, with no script edited.

hfcache itself runs from the main environment (HFCACHE_PYTHON, default .venv/bin/python): its huggingface_hub
2.x cannot live beside datasets 2.x, as on a user's machine where the tool and the old project are apart.
Skipped where datasets is 3 or newer (the main suite), or missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")
if int(datasets.__version__.split(".")[0]) >= 3:
    pytest.skip(f"legacy recipe needs datasets < 3 (this is {datasets.__version__}): run make test-legacy",
                allow_module_level=True)

from datasets.load import files_to_hash  # noqa: E402  (only after the version check)

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).parent / "scripts"
HFCACHE_PYTHON = os.environ.get("HFCACHE_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
DEAD = "http://127.0.0.1:9"
NETWORK_OFF = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HTTP_PROXY": DEAD, "HTTPS_PROXY": DEAD,
               "http_proxy": DEAD, "https_proxy": DEAD, "NO_PROXY": "", "no_proxy": ""}

MRPC_TRAIN = ("#1 ID\t#2 ID\tQuality\t#1 String\t#2 String\n"
              "1\t2\t1\ta cat sat\tthe cat sat\n3\t4\t0\tdogs bark\tbirds sing\n5\t6\t1\tit rains\tit pours\n")
FILES = {"msr_paraphrase_train.txt": MRPC_TRAIN, "mrpc_dev_ids.tsv": "3\t4\n",
         "msr_paraphrase_test.txt": "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t7\t8\tup\tdown\n",
         "AX.tsv": "index\tpremise\thypothesis\n0\tall birds fly\tsome birds fly\n"}


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env["HF_HOME"] = str(home)
    return env


def hfcache(*args: str, home: Path) -> subprocess.CompletedProcess:
    p = subprocess.run([HFCACHE_PYTHON, "-m", "hfcache", *args], env=_env(home), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return p


def offline_python(code: str, home: Path, cwd: Path) -> dict:
    """This (legacy) interpreter, network off, in an empty folder so no local path shadows a dataset name."""
    cwd.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env={**_env(home), **NETWORK_OFF}, cwd=cwd,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.py"))}


@pytest.fixture
def untouched_scripts():
    """No script is edited by hand, or by anything else: the sources are the same bytes after the test."""
    before = _digests(SCRIPTS)
    yield
    assert _digests(SCRIPTS) == before


def test_script_dataset_builds_offline_from_mapped_urls_and_installed_module(tmp_path, untouched_scripts):
    home = tmp_path / "home"
    data = tmp_path / "downloaded"
    data.mkdir()
    for name, text in FILES.items():
        (data / name).write_text(text)
    script = SCRIPTS / "tiny_glue" / "tiny_glue.py"
    urls = hfcache("map-url", "--from-script", str(script), home=home).stdout.split()
    assert len(urls) == 4 and all(u.startswith("https://data.example.invalid/") for u in urls)
    placed = hfcache("map-url", "--from-script", str(script), "--files", str(data), home=home).stdout.split()
    assert [Path(p).name for p in placed] == [hashlib.sha256(u.encode()).hexdigest() for u in urls]
    module_dir = Path(hfcache("modules", "add", str(script.parent), home=home).stdout.strip())
    assert module_dir.name == files_to_hash([str(script)])  # the folder datasets itself would have made
    assert module_dir.parent == home / "modules" / "datasets_modules" / "datasets" / "tiny_glue"

    got = offline_python("""
        import json, datasets
        mrpc = datasets.load_dataset("tiny_glue", "mrpc", trust_remote_code=True)
        ax = datasets.load_dataset("tiny_glue", "ax", trust_remote_code=True)
        print(json.dumps({"mrpc": {s: mrpc[s].to_dict() for s in mrpc}, "ax": ax["test"].to_dict(),
                          "labels": mrpc["train"].features["label"].names,
                          "cache": mrpc["train"].cache_files[0]["filename"]}))
    """, home, tmp_path / "run")
    assert got["mrpc"]["train"] == {"sentence1": ["a cat sat", "it rains"], "sentence2": ["the cat sat", "it pours"],
                                    "label": [1, 1], "idx": [0, 2]}
    assert got["mrpc"]["validation"]["sentence1"] == ["dogs bark"] and got["mrpc"]["test"]["sentence1"] == ["up"]
    assert got["ax"]["sentence1"] == ["all birds fly"]
    assert got["labels"] == ["not_equivalent", "equivalent"]
    assert f"tiny_glue/mrpc/1.0.0/{module_dir.name}/" in got["cache"]


def test_load_metric_offline_from_a_mapped_script(tmp_path, untouched_scripts):
    home = tmp_path / "home"
    url = (f"https://raw.githubusercontent.com/huggingface/datasets/{datasets.__version__}/metrics/tiny_match/"
           "tiny_match.py")
    placed = Path(hfcache("map-url", url, str(SCRIPTS / "tiny_match" / "tiny_match.py"), home=home).stdout.strip())
    assert placed == home / "datasets" / "downloads" / (hashlib.sha256(url.encode()).hexdigest() + ".py")
    got = offline_python("""
        import json, datasets
        m = datasets.load_metric("tiny_match", trust_remote_code=True)
        print(json.dumps(m.compute(predictions=[1, 0, 1, 1], references=[1, 1, 1, 1])))
    """, home, tmp_path / "run")
    assert got == {"match": 0.75}


def test_load_metric_offline_from_an_installed_module(tmp_path, untouched_scripts):
    home = tmp_path / "home"
    script = SCRIPTS / "tiny_match" / "tiny_match.py"
    module_dir = Path(hfcache("modules", "add", str(script), home=home).stdout.strip())
    assert module_dir == home / "modules" / "datasets_modules" / "metrics" / "tiny_match" / files_to_hash([str(script)])
    got = offline_python("""
        import json, datasets
        m = datasets.load_metric("tiny_match", trust_remote_code=True)
        print(json.dumps(m.compute(predictions=[0, 0], references=[0, 1])))
    """, home, tmp_path / "run")
    assert got == {"match": 0.5}
