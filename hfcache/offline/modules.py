"""`modules add`: install a dataset or metric script where each library looks for it when offline.

    datasets <= 3.6 scripts   <HF_MODULES_CACHE>/datasets_modules/datasets/<name with / -> -->/<hash>/<name>.py
    load_metric (datasets 2)  <HF_MODULES_CACHE>/datasets_modules/metrics/<name>/<hash>/<name>.py
    evaluate                  <HF_MODULES_CACHE>/evaluate_modules/metrics/<ns>--<name>/<hash>/<name>.py

`<hash>` is the libraries' `files_to_hash` of the script and its relative imports, so the folder is the one they
would have made online; offline they take the newest `<name>.py` among 64-character folders. Scripts are read
with `ast` to tell which kind they are, never imported or run.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from hfcache.errors import ScriptError, SourceMissing, SpecError, UsageError
from hfcache.offline.folders import swap_folder

KINDS = ("dataset", "metric", "evaluate")
_NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SPEC_RE = re.compile(r"(dataset|space):([^@\s]+)(?:@(\S+))?")
_EVALUATE_BASES = {"Metric": "metric", "Comparison": "comparison", "Measurement": "measurement",
                   "EvaluationModule": "metric"}
_DATASETS_BUILDERS = {"GeneratorBasedBuilder", "ArrowBasedBuilder", "BeamBasedBuilder", "DatasetBuilder"}
# The libraries' `get_imports` patterns: a leading dot marks a file next to the script, `# From: URL` a remote one.
_IMPORT_RE = re.compile(r"^import\s+(\.?)([^\s\.]+)[^#\r\n]*(?:#\s+From:\s+)?([^\r\n]*)")
_FROM_RE = re.compile(r"^from\s+(\.?)([^\s\.]+)(?:[^\s]*)\s+import\s+[^#\r\n]*(?:#\s+From:\s+)?([^\r\n]*)")


@dataclass(frozen=True)
class ModuleScript:
    """A script ready to install: what it is, under which name, with the files the library copies beside it."""

    script: Path
    name: str  # "glue", "org/ds" (datasets), "accuracy" (load_metric), "evaluate-metric/accuracy" (evaluate)
    kind: str  # dataset | metric | evaluate
    local_imports: tuple[tuple[str, Path], ...] = ()
    additional_files: tuple[tuple[str, Path], ...] = ()

    @property
    def base(self) -> str:
        return self.name.split("/")[-1]


@dataclass(frozen=True)
class InstalledModule:
    name: str
    kind: str
    hash: str
    module_dir: Path
    script: Path
    files: tuple[str, ...]
    source: Path


# -- the libraries' hash --------------------------------------------------------------------------------------
def hash_python_lines(lines: list[str]) -> str:
    """`_hash_python_lines`: comments cut, lines (newline kept) that end up empty dropped, joined by newlines."""
    kept = [stripped for line in lines if (stripped := re.sub(r"#.*", "", line))]
    return hashlib.sha256("\n".join(kept).encode("utf-8")).hexdigest()


def files_to_hash(paths: list[Path]) -> str:
    """`files_to_hash` of datasets and evaluate: the folder name a script's module gets."""
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(p.rglob("*.[pP][yY]")) if p.is_dir() else [p])
    lines: list[str] = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            lines.extend(fh.readlines())
    return hash_python_lines(lines)


def relative_imports(script: Path) -> list[tuple[str, str | None]]:
    """`get_imports`, relative ones only: (module name, `# From:` URL or None), in the order the library keeps."""
    out: list[tuple[str, str | None]] = []
    in_docstring = False
    for line in script.read_text(encoding="utf-8").splitlines(keepends=True):
        if len(re.findall(r'[\s\S]*?"""[\s\S]*?', line)) == 1:
            in_docstring = not in_docstring
        if in_docstring:
            continue
        m = _IMPORT_RE.match(line) or _FROM_RE.match(line)
        if m and m.group(1) and all(name != m.group(2) for name, _ in out):
            out.append((m.group(2), m.group(3) or None))
    return out


# -- what a script is -----------------------------------------------------------------------------------------
def detect_kind(script: Path) -> tuple[str, str | None]:
    """(kind, evaluate module type) from the classes the script defines, read with `ast`."""
    try:
        tree = ast.parse(script.read_text(encoding="utf-8"), filename=str(script))
    except SyntaxError as e:
        raise ScriptError(f"{script}: not valid Python (line {e.lineno}: {e.msg})") from None
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    classes = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}

    def dotted(expr: ast.expr) -> str:
        parts = []
        while isinstance(expr, ast.Attribute):
            parts.append(expr.attr)
            expr = expr.value
        if not isinstance(expr, ast.Name):
            return ""
        parts.append(aliases.get(expr.id, expr.id))
        return ".".join(reversed(parts))

    def kind_of(cls: ast.ClassDef, seen: frozenset[str]) -> tuple[str, str | None] | None:
        for base in cls.bases:
            full = dotted(base)
            root, last = full.split(".")[0], full.split(".")[-1]
            if root == "evaluate" and last in _EVALUATE_BASES:
                return "evaluate", _EVALUATE_BASES[last]
            if root == "datasets" and last == "Metric":
                return "metric", None
            if root == "datasets" and last in _DATASETS_BUILDERS:
                return "dataset", None
            if full in classes and full not in seen:
                found = kind_of(classes[full], seen | {full})
                if found:
                    return found
        return None

    for cls in classes.values():
        if found := kind_of(cls, frozenset({cls.name})):
            return found
    raise ScriptError(f"{script}: defines no datasets builder, datasets.Metric or evaluate module class "
                      "(pass --kind to say what it is)")


def check_name(name: str, kind: str) -> str:
    parts = name.split("/")
    if len(parts) > (1 if kind == "metric" else 2) or not all(_NAME_PART.fullmatch(p) for p in parts):
        shape = "NAME" if kind == "metric" else "NAME or NAMESPACE/NAME"
        raise UsageError(f"invalid {kind} module name {name!r} (expected {shape})")
    return name


def _script_in(folder: Path, stem: str | None) -> Path:
    """The library's rule: `<folder>/<folder name>.py`; else the one script there."""
    candidates = [folder / f"{stem or folder.name}.py"]
    if candidates[0].is_file():
        return candidates[0]
    scripts = sorted(p for p in folder.glob("*.py") if p.name != "__init__.py")
    if len(scripts) == 1:
        return scripts[0]
    raise SourceMissing(f"{folder}: no {candidates[0].name}" + (f" (and {len(scripts)} other scripts)" if scripts
                                                              else ""))


def _from_spec(spec: str, hub_cache: Path | None, revision: str) -> tuple[Path, str, str]:
    """(script, name, default kind) of `dataset:REPO[@REV]` or `space:NS/NAME[@REV]` in the hub cache."""
    from hfcache.cache.layout import HubCache, RepoRef, is_commit

    m = _SPEC_RE.fullmatch(spec)
    if m is None:
        raise SpecError(f"{spec!r} is neither a script, a folder nor a spec (dataset:REPO[@REV], space:NS/NAME[@REV])")
    repo_type, repo_id, rev = m.group(1), m.group(2), m.group(3) or revision
    repo = RepoRef(repo_id, repo_type)
    cache = HubCache(hub_cache)
    commit = rev if is_commit(rev) else cache.read_ref(repo, rev)
    snapshot = cache.snapshot_dir(repo, commit) if commit else None
    if snapshot is None or not snapshot.is_dir():
        raise SourceMissing(f"{repo} @ {rev} is not in the hub cache {cache.root} "
                            f"(fetch it with `hfcache snapshot {repo_id} --repo-type {repo_type}`)")
    base = repo_id.split("/")[-1]
    return _script_in(snapshot, base), repo_id, "evaluate" if repo_type == "space" else "dataset"


def resolve_script(path_or_spec: str, hub_cache: Path | None = None, revision: str = "main", name: str | None = None,
                   kind: str | None = None) -> ModuleScript:
    """What `modules add` installs: a script file, a folder holding one, or a cached Hub repo holding one."""
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    path = Path(path_or_spec).expanduser()
    if path.is_file():
        script, default_name, default_kind = path, path.stem, None
    elif path.is_dir():
        script = _script_in(path, None)
        default_name, default_kind = script.stem, None
    else:
        script, default_name, default_kind = _from_spec(path_or_spec, hub_cache, revision)
    detected, module_type = detect_kind(script) if kind is None else (kind, None)
    kind = kind or detected
    if default_kind is not None and kind != default_kind:  # a repo's id names it only as what the repo holds
        default_name = default_name.split("/")[-1]
    name = name or default_name
    if kind == "evaluate" and "/" not in name:
        name = f"evaluate-{module_type or 'metric'}/{name}"
    check_name(name, kind)
    imports = []
    for mod, url in relative_imports(script):
        if url:
            raise ScriptError(f"{script}: imports .{mod} from {url}; put that file next to the script and drop "
                              "the `# From:` comment's download, or install it by hand")
        file = script.parent / f"{mod}.py"
        if not file.is_file():
            raise SourceMissing(f"{script}: imports .{mod} but {file} does not exist")
        imports.append((mod, file))
    extra = tuple((f, script.parent / f) for f in ("dataset_infos.json", "README.md")
                  if kind == "dataset" and (script.parent / f).is_file())
    return ModuleScript(script=script, name=name, kind=kind, local_imports=tuple(imports), additional_files=extra)


# -- installing -----------------------------------------------------------------------------------------------
def module_parent(modules_root: Path, kind: str, name: str) -> Path:
    """The folder whose 64-character subfolders hold the versions of one module."""
    package = "evaluate_modules" if kind == "evaluate" else "datasets_modules"
    namespace = "datasets" if kind == "dataset" else "metrics"
    return modules_root / package / namespace / name.replace("/", "--")


def install(module: ModuleScript, modules_root: Path) -> InstalledModule:
    """Copy the script folder into place atomically (staged, checked by hash, renamed) and make it the newest."""
    digest = files_to_hash([module.script, *(p for _, p in module.local_imports)])
    parent = module_parent(modules_root, module.kind, module.name)
    for folder in (parent.parent.parent, parent.parent, parent):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").touch(exist_ok=True)
    final = parent / digest
    staging = parent / f".{digest[:16]}.{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir()
    try:
        (staging / "__init__.py").touch()
        shutil.copyfile(module.script, staging / f"{module.base}.py")
        for mod, src in module.local_imports:
            shutil.copyfile(src, staging / f"{mod}.py")
        for fname, src in module.additional_files:
            shutil.copyfile(src, staging / fname)
        meta = {"original file path": str(module.script), "local file path": str(final / f"{module.base}.py")}
        (staging / f"{module.base}.json").write_text(json.dumps(meta), encoding="utf-8")
        copied = files_to_hash([staging / f"{module.base}.py", *(staging / f"{m}.py" for m, _ in module.local_imports)])
        if copied != digest:
            raise ScriptError(f"{module.script} changed or was damaged while it was copied")
        swap_folder(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    script = final / f"{module.base}.py"
    os.utime(script)  # offline, the newest <name>.py wins
    files = tuple(sorted(p.name for p in final.iterdir()))
    return InstalledModule(name=module.name, kind=module.kind, hash=digest, module_dir=final, script=script,
                           files=files, source=module.script)


def installed_versions(modules_root: Path, kind: str, name: str) -> list[Path]:
    """The module folders a library would consider offline, newest `<name>.py` last."""
    parent = module_parent(modules_root, kind, name)
    base = name.split("/")[-1]
    try:
        dirs = [d for d in parent.iterdir() if len(d.name) == 64 and (d / f"{base}.py").is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(dirs, key=lambda d: (d / f"{base}.py").stat().st_mtime)
