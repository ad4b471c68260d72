"""Offline datasets, metrics and scripts (issue 7), proved with the real `datasets` and `evaluate` in subprocesses
that have every offline switch on and any network request sent to a dead proxy.

Served dataset repo -> `hfcache snapshot` -> `datasets materialize` -> offline `load_dataset`; a metric folder ->
`modules add` -> offline `evaluate.load`; a metric script -> `map-url` -> offline `evaluate.load`; bad input -> one
line. The legacy (datasets 2.x) recipe is in tests/legacy/, run by `make test-legacy`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import build_hub, run_cli, write_files

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

LEGACY_SCRIPTS = Path(__file__).parent / "legacy" / "scripts"
DEAD = "http://127.0.0.1:9"  # discard port: anything that tries the network fails at once
NETWORK_OFF = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1",
               "HTTP_PROXY": DEAD, "HTTPS_PROXY": DEAD, "http_proxy": DEAD, "https_proxy": DEAD, "NO_PROXY": "",
               "no_proxy": ""}

MRPC = {"train": {"sentence1": ["a cat", "dogs", "rain"], "label": [1, 0, 1], "idx": [0, 1, 2]},
        "validation": {"sentence1": ["birds"], "label": [0], "idx": [3]}}
COLA = {"train": {"sentence": ["x y", "y x"], "label": [1, 0]}}
README = """---
configs:
- config_name: mrpc
  data_files:
  - split: train
    path: mrpc/train-*.parquet
  - split: validation
    path: mrpc/validation-*.parquet
- config_name: cola
  data_files:
  - split: train
    path: cola/train-*.parquet
dataset_info:
- config_name: mrpc
  features:
  - name: sentence1
    dtype: string
  - name: label
    dtype:
      class_label:
        names:
          '0': not_equivalent
          '1': equivalent
  - name: idx
    dtype: int32
---
# glue look-alike: parquet files only, as the Hub's datasets are now
"""

EVALUATE_METRIC = '''\
"""{name}: a tiny accuracy in the evaluate style."""

import datasets
import evaluate
{extra_import}
_DESCRIPTION = "Fraction of predictions equal to their reference."
_KWARGS_DESCRIPTION = "predictions, references: lists of ints"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class {cls}(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({{"predictions": datasets.Value("int32"),
                                        "references": datasets.Value("int32")}}),
        )

    def _compute(self, predictions, references):
        return {{"{name}": {ratio}(sum(int(p == r) for p, r in zip(predictions, references)), len(predictions))}}
'''


def _parquet(columns: dict) -> bytes:
    table = pa.table({k: pa.array(v, pa.int32()) if k == "idx" else v for k, v in columns.items()})
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def _ok(r):
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r


def _one_line_error(r, code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hfcache: error: "), r.stderr
    return lines[0]


def _offline_python(code: str, env: dict[str, str], cwd: Path) -> dict:
    """Run `code` in a fresh interpreter with the network off; it prints one JSON line last."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("HF_ENDPOINT")}
    full.update(env)
    full.update(NETWORK_OFF)
    cwd.mkdir(parents=True, exist_ok=True)  # an empty folder: no local path can shadow a name
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full, cwd=cwd, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _metric_folder(root: Path, name: str, with_helper: bool) -> Path:
    cls = "".join(part.title() for part in name.split("_"))
    files = {f"{name}.py": EVALUATE_METRIC.format(
        name=name, cls=cls, extra_import="from .ratio_helper import ratio\n" if with_helper else "",
        ratio="ratio" if with_helper else "(lambda a, b: a / b)")}
    if with_helper:
        files["ratio_helper.py"] = "def ratio(a, b):  # a relative import: part of the module hash\n    return a / b\n"
    return write_files(root / name, files)


@pytest.fixture(scope="module")
def glue_home(tmp_path_factory):
    """An HF_HOME whose hub cache holds a snapshot of a served parquet dataset repo (and a metric Space)."""
    root = tmp_path_factory.mktemp("offline")
    files = {"README.md": README,
             "mrpc/train-00000-of-00001.parquet": _parquet(MRPC["train"]),
             "mrpc/validation-00000-of-00001.parquet": _parquet(MRPC["validation"]),
             "cola/train-00000-of-00001.parquet": _parquet(COLA["train"])}
    space = {"space_acc.py": EVALUATE_METRIC.format(name="space_acc", cls="SpaceAcc", extra_import="",
                                                     ratio="(lambda a, b: a / b)"), "README.md": "# a metric\n"}
    hub = build_hub(root / "hub", repos={("nyu-mll/glue", "dataset", "main"): files,
                                         ("evaluate-metric/space_acc", "space", "main"): space})
    home = root / "home"
    try:
        env = {"HF_HOME": str(home)}
        _ok(run_cli("snapshot", "nyu-mll/glue", "--repo-type", "dataset", endpoint=hub.url, env=env))
        _ok(run_cli("snapshot", "evaluate-metric/space_acc", "--repo-type", "space", endpoint=hub.url, env=env))
        commit = hub.commit("nyu-mll/glue", repo_type="dataset")
    finally:
        hub.server.stop()
    return home, commit


def _env(home: Path, datasets_cache: Path | None = None) -> dict[str, str]:
    env = {"HF_HOME": str(home)}
    if datasets_cache is not None:
        env["HF_DATASETS_CACHE"] = str(datasets_cache)
    return env


# -- datasets materialize -------------------------------------------------------------------------------------
def test_materialize_then_load_dataset_offline(glue_home, tmp_path):
    home, commit = glue_home
    env = _env(home, tmp_path / "datasets")
    load = """
        import json, datasets
        out = {}
        try:
            datasets.load_dataset("nyu-mll/glue", "mrpc")
        except Exception as e:
            out["before"] = type(e).__name__
        print(json.dumps(out))
    """
    assert _offline_python(load, env, tmp_path / "run") == {"before": "ConnectionError"}  # a snapshot is not enough

    r = _ok(run_cli("datasets", "materialize", "nyu-mll/glue:mrpc", "--alias", "glue", "--alias",
                    'data_files={"train": "mrpc/train-*.parquet"}', "--json", env=env))
    result = json.loads(r.stdout)
    assert result["commit"] == commit and result["config"] == "mrpc" and result["builder"] == "parquet"
    assert result["splits"] == {"train": 3, "validation": 1}
    paths = {(f["name"], f["config_id"]): Path(f["path"]) for f in result["folders"]}
    assert paths[("nyu-mll/glue", "mrpc")] == tmp_path / "datasets" / "nyu-mll___glue" / "mrpc" / "0.0.0" / commit
    assert paths[("glue", "mrpc")] == tmp_path / "datasets" / "glue" / "mrpc" / "0.0.0" / commit
    assert sorted(p.name for p in paths[("nyu-mll/glue", "mrpc")].iterdir()) == [
        "dataset_info.json", "glue-train.arrow", "glue-validation.arrow"]
    assert not [p for p in (tmp_path / "datasets").iterdir() if p.name.startswith(".")]  # staging is gone

    got = _offline_python("""
        import json, datasets
        out = {}
        for name in ("nyu-mll/glue", "glue"):
            ds = datasets.load_dataset(name, "mrpc")
            out[name] = {split: ds[split].to_dict() for split in ds}
            out["labels"] = ds["train"].features["label"].names
        ds = datasets.load_dataset("nyu-mll/glue", data_files={"train": "mrpc/train-*.parquet"})
        out["data_files"] = ds["train"].to_dict()
        print(json.dumps(out))
    """, env, tmp_path / "run")
    assert got["nyu-mll/glue"] == got["glue"] == MRPC
    assert got["labels"] == ["not_equivalent", "equivalent"]  # from the README's dataset_info, not the parquet
    assert got["data_files"] == MRPC["train"]  # datasets #4760/#6837: the offline config id of data_files=


def test_materialize_second_config_and_rerun_replace_in_place(glue_home, tmp_path):
    home, commit = glue_home
    env = _env(home, tmp_path / "datasets")
    _ok(run_cli("datasets", "materialize", "nyu-mll/glue:cola", env=env))
    folder = tmp_path / "datasets" / "nyu-mll___glue" / "cola" / "0.0.0" / commit
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    r = _ok(run_cli("datasets", "materialize", "nyu-mll/glue:cola", env=env))
    assert r.stdout.strip() == str(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first
    got = _offline_python("""
        import json, datasets
        print(json.dumps(datasets.load_dataset("nyu-mll/glue", "cola")["train"].to_dict()))
    """, env, tmp_path / "run")
    assert got == COLA["train"]


@pytest.mark.parametrize("args, code, needle", [
    (["nyu-mll/glue:nope"], 1, "has no config 'nope' (configs: mrpc, cola)"),
    (["nyu-mll/glue:"], 2, "invalid dataset spec"),
    (["org/missing:x"], 1, "is not in the hub cache"),
    (["nyu-mll/glue:mrpc", "--revision", "v9"], 1, "is not in the hub cache"),
    (["bad name!"], 2, "invalid dataset spec"),
    (["nyu-mll/glue:mrpc", "--alias", "data_files={}"], 2, "invalid alias"),
    (["nyu-mll/glue:mrpc", "--alias", "a b"], 2, "invalid alias"),
])
def test_materialize_bad_input_is_one_line(glue_home, tmp_path, args, code, needle):
    home, _ = glue_home
    line = _one_line_error(run_cli("datasets", "materialize", *args, env=_env(home, tmp_path / "d")), code)
    assert needle in line
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


def test_materialize_of_unreadable_data_is_one_line(hub, tmp_path):
    env = _env(tmp_path / "home")
    _ok(run_cli("snapshot", "org/ds", "--repo-type", "dataset", endpoint=hub.url, env=env))  # parquet: random bytes
    line = _one_line_error(run_cli("datasets", "materialize", "org/ds", env=env), 1)
    assert "datasets could not prepare ds/default" in line and "Parquet magic bytes not found" in line
    assert not (tmp_path / "home" / "datasets" / "org___ds").exists()


# -- evaluate: modules add, map-url ---------------------------------------------------------------------------
def test_evaluate_load_offline_from_modules_add(glue_home, tmp_path):
    home, _ = glue_home
    env = _env(home)
    folder = _metric_folder(tmp_path / "src", "tiny_acc", with_helper=True)
    info = json.loads(_ok(run_cli("modules", "add", str(folder), "--json", env=env)).stdout)
    module_dir = Path(info["module_dir"])
    assert info["kind"] == "evaluate" and info["name"] == "evaluate-metric/tiny_acc"
    assert module_dir == home / "modules" / "evaluate_modules" / "metrics" / "evaluate-metric--tiny_acc" / info["hash"]
    assert set(info["files"]) == {"__init__.py", "tiny_acc.py", "tiny_acc.json", "ratio_helper.py"}
    sources = [str(folder / "tiny_acc.py"), str(folder / "ratio_helper.py")]
    got = _offline_python(f"""
        import json, evaluate
        from evaluate.loading import files_to_hash
        m = evaluate.load("tiny_acc")
        print(json.dumps({{"score": m.compute(predictions=[1, 0, 1, 1], references=[1, 1, 1, 1]),
                          "hash": files_to_hash({sources!r})}}))
    """, env, tmp_path / "run")
    assert got == {"score": {"tiny_acc": 0.75}, "hash": info["hash"]}  # the folder evaluate itself would make


def test_evaluate_load_offline_from_map_url(glue_home, tmp_path):
    home, _ = glue_home
    env = _env(home)
    script = _metric_folder(tmp_path / "src", "solo_acc", with_helper=False) / "solo_acc.py"
    version = metadata.version("evaluate")
    url = f"https://huggingface.co/spaces/evaluate-metric/solo_acc/resolve/v{version}/solo_acc.py"
    r = _ok(run_cli("map-url", url, str(script), "--target", "evaluate", env=env))
    name = hashlib.sha256(url.encode()).hexdigest() + ".py"
    placed = home / "evaluate" / "downloads" / name
    assert r.stdout.strip() == str(placed)
    assert placed.read_bytes() == script.read_bytes()
    assert json.loads((placed.parent / f"{name}.json").read_text()) == {"url": url, "etag": None}
    got = _offline_python("""
        import json, evaluate
        print(json.dumps(evaluate.load("solo_acc").compute(predictions=[1, 0], references=[1, 1])))
    """, env, tmp_path / "run")
    assert got == {"solo_acc": 0.5}


def test_modules_add_from_a_cached_space(glue_home, tmp_path):
    home, _ = glue_home
    env = _env(home)
    info = json.loads(_ok(run_cli("modules", "add", "space:evaluate-metric/space_acc", "--json", env=env)).stdout)
    assert info["name"] == "evaluate-metric/space_acc" and info["kind"] == "evaluate"
    got = _offline_python("""
        import json, evaluate
        print(json.dumps(evaluate.load("space_acc").compute(predictions=[0, 0], references=[0, 0])))
    """, env, tmp_path / "run")
    assert got == {"space_acc": 1.0}


def test_modules_add_legacy_layouts_and_hash(tmp_path):
    from hfcache.offline.modules import files_to_hash

    env = _env(tmp_path / "home")
    ds = json.loads(_ok(run_cli("modules", "add", str(LEGACY_SCRIPTS / "tiny_glue"), "--json", env=env)).stdout)
    script = LEGACY_SCRIPTS / "tiny_glue" / "tiny_glue.py"
    assert ds["kind"] == "dataset" and ds["hash"] == files_to_hash([script])
    folder = tmp_path / "home" / "modules" / "datasets_modules" / "datasets" / "tiny_glue" / ds["hash"]
    assert Path(ds["module_dir"]) == folder and (folder / "tiny_glue.py").read_bytes() == script.read_bytes()
    assert json.loads((folder / "tiny_glue.json").read_text())["local file path"] == str(folder / "tiny_glue.py")
    for level in (folder, folder.parent, folder.parent.parent, folder.parent.parent.parent):
        assert (level / "__init__.py").is_file()
    metric = json.loads(_ok(run_cli("modules", "add", str(LEGACY_SCRIPTS / "tiny_match" / "tiny_match.py"),
                                    "--json", env=env)).stdout)
    assert metric["kind"] == "metric"
    assert Path(metric["module_dir"]).parent == tmp_path / "home/modules/datasets_modules/metrics/tiny_match"
    # the evaluate copy of the libraries' hash gives the same folder name
    evaluate_loading = pytest.importorskip("evaluate.loading")
    assert evaluate_loading.files_to_hash([str(script)]) == ds["hash"]


@pytest.mark.parametrize("spec, code, needle", [
    ("nothing-here", 2, "is neither a script, a folder nor a spec"),
    ("dataset:org/missing", 1, "is not in the hub cache"),
    ("README", 1, "defines no datasets builder"),
])
def test_modules_add_bad_input_is_one_line(glue_home, tmp_path, spec, code, needle):
    home, _ = glue_home
    (tmp_path / "README").write_text("# not a script\n")
    r = subprocess.run([sys.executable, "-m", "hfcache", "modules", "add", spec], cwd=tmp_path, capture_output=True,
                       text=True, env={**os.environ, "HF_HOME": str(home)})
    assert needle in _one_line_error(r, code)


# -- map-url and script URLs ----------------------------------------------------------------------------------
def test_map_url_names_sidecars_and_hf_rewrite(tmp_path):
    env = _env(tmp_path / "home")
    data = write_files(tmp_path, {"train.csv": "a,b\n1,2\n"}) / "train.csv"
    url = "https://huggingface.co/datasets/org/ds/resolve/main/train.csv"
    out = json.loads(_ok(run_cli("map-url", url, str(data), "--json", env=env)).stdout)["mapped"][0]
    downloads = tmp_path / "home" / "datasets" / "downloads"
    names = [hashlib.sha256(u.encode()).hexdigest() for u in (url, "hf://datasets/org/ds@main/train.csv")]
    assert [Path(p) for p in out["paths"]] == [downloads / n for n in names]  # 2.15-2.21 hash the hf:// form
    for n, u in zip(names, (url, "hf://datasets/org/ds@main/train.csv"), strict=True):
        assert (downloads / n).read_bytes() == data.read_bytes()
        assert json.loads((downloads / f"{n}.json").read_text()) == {"url": u, "etag": None}
    assert out["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert not [p for p in downloads.iterdir() if p.name.startswith(".")]
    data.write_text("a,b\n3,4\n")  # mapping again replaces it
    _ok(run_cli("map-url", url, str(data), env=env))
    assert (downloads / names[0]).read_text() == "a,b\n3,4\n"


def test_script_urls_are_read_not_run(tmp_path):
    from hfcache.offline.script_urls import script_urls

    marker = tmp_path / "ran"
    script = write_files(tmp_path, {"s.py": textwrap.dedent(f"""
        import os
        open({str(marker)!r}, "w").close()  # would prove the script ran
        _HOMEPAGE = "https://example.org/s"
        _BASE = "https://data.example.org/s"
        _LANGS = ["de", "fr"]
        _TEMPLATE = "https://x.example.org/{{lang}}/data.{{ext}}"
        _URLS = {{"train": _BASE + "/train.json", "dev": f"{{_BASE}}/dev.json"}}

        class Cfg:
            def __init__(self, data_url, url):
                self.data_url = data_url

        CONFIGS = [Cfg(data_url="https://dl.example.org/s/A.zip", url="https://example.org/s/a.html")]

        def split_generators(self, dl):
            per_lang = {{lang: _TEMPLATE.format(lang=lang, ext="tsv") for lang in _LANGS}}
            extra = os.path.join(_BASE, "extra.txt")
            pct = "%s/pct.txt" % _BASE
            return dl.download(self.config.data_url), per_lang, extra, pct
    """)}) / "s.py"
    found = {u.url: u.downloaded for u in script_urls(script)}
    assert found == {
        "https://example.org/s/a.html": False,  # _HOMEPAGE, a prefix of it, reads as a base: dropped
        "https://data.example.org/s/train.json": True, "https://data.example.org/s/dev.json": True,
        "https://dl.example.org/s/A.zip": True, "https://x.example.org/de/data.tsv": True,
        "https://x.example.org/fr/data.tsv": True, "https://data.example.org/s/extra.txt": True,
        "https://data.example.org/s/pct.txt": True,
    }
    assert not marker.exists()


def test_from_script_lists_maps_and_refuses(tmp_path):
    env = _env(tmp_path / "home")
    script = str(LEGACY_SCRIPTS / "tiny_glue" / "tiny_glue.py")
    listed = _ok(run_cli("map-url", "--from-script", script, env=env)).stdout.split()
    assert listed == ["https://data.example.invalid/tiny-glue/mrpc/mrpc_dev_ids.tsv",
                      "https://data.example.invalid/tiny-glue/mrpc/msr_paraphrase_train.txt",
                      "https://data.example.invalid/tiny-glue/mrpc/msr_paraphrase_test.txt",
                      "https://data.example.invalid/tiny-glue/AX.tsv"]
    data = write_files(tmp_path / "data", {"AX.tsv": "premise\thypothesis\np\th\n"})
    line = _one_line_error(run_cli("map-url", "--from-script", script, "--files", str(data), env=env), 1)
    assert "3 of the 4 files" in line and "mrpc_dev_ids.tsv" in line
    ax = "https://data.example.invalid/tiny-glue/AX.tsv"
    _ok(run_cli("map-url", ax, str(data / "AX.tsv"), "--from-script", script, env=env))
    line = _one_line_error(run_cli("map-url", ax + "x", str(data / "AX.tsv"), "--from-script", script, env=env), 1)
    assert "is not a URL" in line and "downloads" in line


@pytest.mark.parametrize("args, needle", [
    (["not-a-url", "f"], "not a URL"),
    (["https://x.org/a.csv", "missing-file"], "no such file"),
    (["https://x.org/a.csv"], "missing FILE"),
    ([], "give URL FILE"),
    (["https://x.org/a.csv", "f", "--target", "hub"], "--target hub"),
    (["--from-script", "missing.py"], "no such file"),
])
def test_map_url_bad_input_is_one_line(tmp_path, args, needle):
    (tmp_path / "f").write_text("x")
    r = subprocess.run([sys.executable, "-m", "hfcache", "map-url", *args], cwd=tmp_path, capture_output=True,
                       text=True, env={**os.environ, "HF_HOME": str(tmp_path / "home")})
    assert needle in _one_line_error(r, 2)


def test_from_script_refuses_a_broken_script(tmp_path):
    bad = write_files(tmp_path, {"bad.py": "def broken(:\n"}) / "bad.py"
    assert "not valid Python (line 1" in _one_line_error(run_cli("map-url", "--from-script", str(bad)), 1)


# -- doctor ---------------------------------------------------------------------------------------------------
def test_doctor_says_what_resolves_why_not_and_what_to_set(glue_home, tmp_path):
    home, commit = glue_home
    env = _env(home, tmp_path / "datasets")
    _ok(run_cli("datasets", "materialize", "nyu-mll/glue:mrpc", env=env))
    _ok(run_cli("modules", "add", str(_metric_folder(tmp_path / "src", "doc_acc", with_helper=False)), env=env))
    specs = ["dataset:nyu-mll/glue:mrpc", "nyu-mll/glue:cola", "metric:doc_acc", "metric:absent_metric",
             "url:https://x.org/a.csv"]
    r = run_cli("doctor", *specs, "--json", env=env)
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    by_spec = {d["spec"]: d for d in report["diagnoses"]}
    assert by_spec["dataset:nyu-mll/glue:mrpc"]["ok"]
    assert by_spec["dataset:nyu-mll/glue:mrpc"]["checks"][0]["detail"].endswith(f"mrpc/0.0.0/{commit}")
    cola = by_spec["nyu-mll/glue:cola"]["checks"][0]
    assert not cola["ok"] and cola["fix"] == "hfcache datasets materialize nyu-mll/glue:cola"
    assert "prepared: mrpc" in cola["detail"]
    assert by_spec["metric:doc_acc"]["ok"]
    absent = by_spec["metric:absent_metric"]["checks"][0]
    assert not absent["ok"] and "hfcache map-url https://huggingface.co/spaces/evaluate-metric/absent_metric" in \
        absent["fix"]
    assert not by_spec["url:https://x.org/a.csv"]["ok"]
    assert report["set_vars"] == {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    assert any("HF_EVALUATE_OFFLINE" in w for w in report["warnings"])

    text = run_cli("doctor", "dataset:nyu-mll/glue:mrpc", "metric:doc_acc", env={**env, **NETWORK_OFF})
    assert text.returncode == 0, text.stderr
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
        assert f"export {var}=1    # now on" in text.stdout
    assert text.stdout.count("\nok ") == 2 and "note:" not in text.stdout


@pytest.mark.parametrize("spec, needle", [("dataset:bad name", "invalid dataset spec"),
                                          ("metric:a/b/c", "invalid metric name"),
                                          ("script:missing.py", "no such file"),
                                          ("url:nope", "not a URL")])
def test_doctor_bad_spec_is_one_line(tmp_path, spec, needle):
    assert needle in _one_line_error(run_cli("doctor", spec, env=_env(tmp_path / "home")), 2)


def test_help_imports_none_of_the_heavy_libraries():
    code = "import sys, hfcache.cli; print([m for m in ('datasets', 'evaluate', 'pyarrow') if m in sys.modules])"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "[]"


# -- export / import ------------------------------------------------------------------------------------------
def test_export_import_carries_prepared_datasets_modules_and_mapped_urls(glue_home, tmp_path):
    home, commit = glue_home
    a = tmp_path / "a"
    env_a = {"HF_HOME": str(home), "HF_DATASETS_CACHE": str(a / "datasets"), "HF_MODULES_CACHE": str(a / "modules"),
             "HF_EVALUATE_CACHE": str(a / "evaluate")}
    _ok(run_cli("datasets", "materialize", "nyu-mll/glue:mrpc", env=env_a))
    _ok(run_cli("modules", "add", str(_metric_folder(tmp_path / "src", "bun_acc", with_helper=True)), env=env_a))
    script = _metric_folder(tmp_path / "src", "url_acc", with_helper=False) / "url_acc.py"
    url = f"https://huggingface.co/spaces/evaluate-metric/url_acc/resolve/v{metadata.version('evaluate')}/url_acc.py"
    _ok(run_cli("map-url", url, str(script), "--target", "evaluate", env=env_a))
    specs = ["dataset:nyu-mll/glue", "prepared:nyu-mll/glue:mrpc", "module:bun_acc", f"url:{url}"]
    bundle = tmp_path / "bundle"
    _ok(run_cli("export", *specs, "-o", f"{bundle}/", env=env_a))
    manifest = json.loads((bundle / "manifest.json").read_text())
    roles = {e["role"] for e in manifest["areas"]}
    assert roles == {"dataset", "module", "url"}
    paths = {e["path"] for e in manifest["areas"]}
    assert f"nyu-mll___glue/mrpc/0.0.0/{commit}/dataset_info.json" in paths
    assert not any(p.endswith(".lock") for p in paths)

    # a tampered offline payload: nothing lands, and no empty prepared folder is left to confuse datasets
    info = next(e for e in manifest["areas"] if e["path"].endswith("dataset_info.json"))
    bad = tmp_path / "bad"
    _ok(run_cli("export", *specs, "-o", f"{bad}/", env=env_a))
    (bad / "payload" / info["payload"]).write_bytes(b"{}" + b" " * (info["size"] - 2))
    _one_line_error(run_cli("import", str(bad), env={"HF_HOME": str(tmp_path / "c")}), 1)
    assert not (tmp_path / "c" / "datasets").exists() or not any((tmp_path / "c" / "datasets").rglob("*"))

    b = tmp_path / "b"  # another machine: every cache at its default place under HF_HOME
    r = _ok(run_cli("import", str(bundle), env={"HF_HOME": str(b)}))
    assert "placed" in r.stderr
    got = _offline_python("""
        import json, datasets, evaluate
        ds = datasets.load_dataset("nyu-mll/glue", "mrpc")
        print(json.dumps({"mrpc": {s: ds[s].to_dict() for s in ds},
                          "bun": evaluate.load("bun_acc").compute(predictions=[1], references=[1]),
                          "url": evaluate.load("url_acc").compute(predictions=[1], references=[0])}))
    """, {"HF_HOME": str(b)}, tmp_path / "run")
    assert got["mrpc"] == MRPC and got["bun"] == {"bun_acc": 1.0} and got["url"] == {"url_acc": 0.0}
    assert (b / "datasets" / "nyu-mll___glue" / "mrpc" / "0.0.0" / commit / "glue-train.arrow").is_file()
