"""The URLs a legacy dataset script downloads, read with `ast`: the script is never imported or run.

Scripts build their URLs from string literals: `_URL = "https://x/"`, `_URLS = {"train": _URL + "train.json"}`,
`f"{_BASE}/{lang}.tsv"` in a loop over `_LANGS`, `data_url=` in a BuilderConfig read back as
`self.config.data_url`. A small evaluator follows names, `+`, f-strings, `%`, `.format`, `os.path.join`/`urljoin`,
subscripts and loops over literal collections, and keeps every whole string that is a URL. URLs held by names
like `_HOMEPAGE` or `_CITATION` (and `url=`/`homepage=` arguments) are listed as not downloaded.
"""

from __future__ import annotations

import ast
import itertools
import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlparse

from hfcache.errors import ScriptError, SourceMissing, UsageError

_URL_RE = re.compile(r"(?:https?|ftp|hf|s3|gs)://[^\s{}]+")
_NOT_DOWNLOADED = re.compile(r"homepage|citation|licen[cs]e|description|paper|website|^url$", re.IGNORECASE)
_MAX_VALUES = 512  # per expression: enough for a loop over languages, bounded for pathological scripts
_JOINS = {"join", "urljoin"}


@dataclass(frozen=True)
class ScriptUrl:
    """One URL in a script: where it first appears and whether the script downloads it."""

    url: str
    line: int
    context: str
    downloaded: bool


class _Evaluator:
    """Possible string values of expressions, from every binding of each name anywhere in the script."""

    def __init__(self, tree: ast.Module) -> None:
        self.bindings: dict[str, list[ast.AST]] = defaultdict(list)  # name -> value expressions
        self.loops: dict[str, list[tuple[ast.AST, int | None]]] = defaultdict(list)  # name -> (iterable, tuple index)
        self._busy: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    self._bind(target, node.value)
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                self._bind(node.target, node.value)
            elif isinstance(node, ast.keyword) and node.arg:
                self.bindings[node.arg].append(node.value)  # BuilderConfig(data_url=...) -> self.config.data_url
            elif isinstance(node, (ast.For, ast.comprehension)):
                self._bind_loop(node.target, node.iter)

    def _bind(self, target: ast.AST, value: ast.AST) -> None:
        if isinstance(target, ast.Name):
            self.bindings[target.id].append(value)
        elif isinstance(target, ast.Attribute):
            self.bindings[target.attr].append(value)

    def _bind_loop(self, target: ast.AST, iterable: ast.AST) -> None:
        if isinstance(target, ast.Name):
            self.loops[target.id].append((iterable, None))
        elif isinstance(target, ast.Tuple):
            for i, elt in enumerate(target.elts):
                if isinstance(elt, ast.Name):
                    self.loops[elt.id].append((iterable, i))

    # -- values ------------------------------------------------------------------------------------------------
    def strings(self, node: ast.AST) -> list[str]:
        return [v for v in self.values(node) if isinstance(v, str)]

    def values(self, node: ast.AST) -> list[object]:
        """Scalar values (str, int, float) `node` may take; empty when unknown."""
        key = id(node)
        if key in self._busy:
            return []
        self._busy.add(key)
        try:
            out = self._values(node)
        finally:
            self._busy.discard(key)
        return list(dict.fromkeys(out))[:_MAX_VALUES]

    def _values(self, node: ast.AST) -> list[object]:
        if isinstance(node, ast.Constant):
            return [node.value] if isinstance(node.value, (str, int, float)) else []
        if isinstance(node, (ast.Name, ast.Attribute)):
            name = node.id if isinstance(node, ast.Name) else node.attr
            out = [v for expr in self.bindings.get(name, ()) for v in self.values(expr)]
            out += [v for it, idx in self.loops.get(name, ()) for v in self.elements(it, idx)]
            return out
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self._combine([node.left, node.right], lambda a, b: a + b if type(a) is type(b) else None)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            args = node.right.elts if isinstance(node.right, ast.Tuple) else [node.right]
            return self._combine([node.left, *args], lambda fmt, *a: fmt % a if isinstance(fmt, str) else None)
        if isinstance(node, ast.JoinedStr):
            parts = [v.value if isinstance(v, ast.FormattedValue) else v for v in node.values]
            return self._combine(parts, lambda *a: "".join(map(str, a)))
        if isinstance(node, ast.Subscript):
            return self._subscript(node)
        if isinstance(node, ast.IfExp):
            return self.values(node.body) + self.values(node.orelse)
        if isinstance(node, ast.Call):
            return self._call(node)
        return []

    def _combine(self, nodes: list[ast.AST], fn) -> list[object]:
        options = [self.values(n) for n in nodes]
        if not all(options):
            return []
        out: list[object] = []
        for combo in itertools.islice(itertools.product(*options), _MAX_VALUES):
            try:
                v = fn(*combo)
            except (TypeError, ValueError, KeyError, IndexError):
                continue
            if v is not None:
                out.append(v)
        return out

    def _call(self, node: ast.Call) -> list[object]:
        func = node.func
        if node.keywords and not (isinstance(func, ast.Attribute) and func.attr == "format"):
            return []
        if isinstance(func, ast.Attribute) and func.attr == "format":
            names = [k.arg for k in node.keywords if k.arg]
            kw_nodes = [k.value for k in node.keywords if k.arg]

            def fmt(template, *a):
                pos, kw = a[:len(node.args)], dict(zip(names, a[len(node.args):], strict=True))
                return template.format(*pos, **kw) if isinstance(template, str) else None

            return self._combine([func.value, *node.args, *kw_nodes], fmt)
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in _JOINS and len(node.args) >= 2:
            join = urljoin if name == "urljoin" else posixpath.join
            return self._combine(list(node.args), lambda *a: join(*a) if all(isinstance(x, str) for x in a) else None)
        if name == "str" and len(node.args) == 1:
            return [str(v) for v in self.values(node.args[0])]
        return []

    def _subscript(self, node: ast.Subscript) -> list[object]:
        keys = self.values(node.slice)
        out: list[object] = []
        for container in self._containers(node.value):
            if isinstance(container, ast.Dict):
                for k, v in zip(container.keys, container.values, strict=True):
                    if k is None:
                        continue
                    if not keys or set(self.values(k)) & set(keys):
                        out += self.values(v)
            elif isinstance(container, (ast.List, ast.Tuple)):
                for elt in container.elts:
                    out += self.values(elt)
        return out

    def _containers(self, node: ast.AST, depth: int = 0) -> list[ast.AST]:
        """The literal dict/list/tuple/set nodes a name or expression may stand for."""
        if depth > 8:
            return []
        if isinstance(node, (ast.Dict, ast.List, ast.Tuple, ast.Set)):
            return [node]
        if isinstance(node, (ast.Name, ast.Attribute)):
            name = node.id if isinstance(node, ast.Name) else node.attr
            return [c for e in self.bindings.get(name, ()) for c in self._containers(e, depth + 1)]
        if isinstance(node, ast.Call) and len(node.args) == 1 and isinstance(node.func, ast.Name) \
                and node.func.id in ("list", "tuple", "sorted", "set"):
            return self._containers(node.args[0], depth + 1)
        return []

    def elements(self, iterable: ast.AST, index: int | None) -> list[object]:
        """Values a loop variable takes over `iterable` (element `index` of each item when it unpacks a tuple)."""
        method = None
        if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Attribute) and not iterable.args:
            method, iterable = iterable.func.attr, iterable.func.value
        out: list[object] = []
        for c in self._containers(iterable):
            if isinstance(c, ast.Dict):
                pairs = [(k, v) for k, v in zip(c.keys, c.values, strict=True) if k is not None]
                if method == "items":
                    picked = [p[index] for p in pairs] if index is not None else []
                else:
                    picked = [v for _, v in pairs] if method == "values" else [k for k, _ in pairs]
            else:
                picked = [e.elts[index] if index is not None and isinstance(e, ast.Tuple) and index < len(e.elts)
                          else e for e in c.elts]
            for p in picked:
                out += self.values(p)
        return out


def _context(node: ast.AST, parents: dict[int, ast.AST]) -> str:
    """The name, keyword or dict key a URL is held by, nearest first."""
    child = node
    while (parent := parents.get(id(child))) is not None:
        if isinstance(parent, ast.keyword) and parent.arg:
            return parent.arg
        if isinstance(parent, (ast.Assign, ast.AnnAssign)):
            target = parent.targets[0] if isinstance(parent, ast.Assign) else parent.target
            if isinstance(target, ast.Name):
                return target.id
            if isinstance(target, ast.Attribute):
                return target.attr
            return ""
        if isinstance(parent, ast.Dict) and child in parent.values:
            key = parent.keys[parent.values.index(child)]
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                return key.value
        if isinstance(parent, ast.stmt):
            return ""
        child = parent
    return ""


def _is_download(url: str) -> bool:
    """A whole URL naming a file, not a folder prefix, a template or a bare host."""
    if "{" in url or "%s" in url or "%d" in url:
        return False
    parsed = urlparse(url)
    return bool(parsed.netloc) and not parsed.path.endswith("/") and parsed.path not in ("",)


def script_urls(script: str | Path) -> tuple[ScriptUrl, ...]:
    """Every URL the script names, in order of first appearance; `downloaded` False for homepages and citations."""
    path = Path(script)
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read it ({e})") from None
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as e:
        raise ScriptError(f"{path}: not valid Python (line {e.lineno}: {e.msg})") from None
    parents = {id(child): parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    ev = _Evaluator(tree)
    found: dict[str, ScriptUrl] = {}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Constant, ast.BinOp, ast.JoinedStr, ast.Call)):
            continue
        for value in ev.strings(node):
            if not (_URL_RE.fullmatch(value) and _is_download(value)):
                continue
            ctx = _context(node, parents)
            seen = found.get(value)
            downloaded = not _NOT_DOWNLOADED.search(ctx)
            if seen is None or (downloaded and not seen.downloaded) or node.lineno < seen.line:
                found[value] = ScriptUrl(value, node.lineno, ctx, downloaded or bool(seen and seen.downloaded))
    urls = sorted(found.values(), key=lambda u: (u.line, u.url))
    # A prefix extended elsewhere (`_BASE + "/train.csv"`) is a base, unless its last segment names a file.
    return tuple(u for u in urls if "." in url_file_name(u.url)
                 or not any(o.url.startswith(u.url + "/") for o in urls))


def url_file_name(url: str) -> str:
    """The last path segment of a URL: the name a file fetched from it usually has."""
    return posixpath.basename(urlparse(url).path)


def require_in_script(url: str, script: str | Path) -> ScriptUrl:
    """The script's entry for `url`; a URL the script never names is refused (a typo maps nothing)."""
    urls = script_urls(script)
    for u in urls:
        if u.url == url:
            return u
    n = sum(u.downloaded for u in urls)
    raise SourceMissing(f"{url} is not a URL {script} downloads (it names {n}: list them with "
                        f"`hfcache map-url --from-script {script}`)")
