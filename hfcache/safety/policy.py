"""Which imports a pickle may make: an allow list of the kind `torch.load(weights_only=True)` uses, and grades.

A pickle is safe only if every import it makes is allowed. The rest is graded, worst first:
  critical  runs code or touches the system (os, subprocess, builtins.eval/exec/getattr, runpy, pip, ...)
  unsafe    any other standard-library name: the gadgets deny lists keep missing (functools.partial, ...)
  unknown   a third-party name nobody vouched for
Deny lists are bypassed by the next unlisted gadget; an allow list fails closed. The grades only say how bad.

`POLICY_VERSION` changes whenever the lists do, so verdicts remembered under an older policy are not reused.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

POLICY_VERSION = "1"

SAFE, UNKNOWN, UNSAFE, CRITICAL = "safe", "unknown", "unsafe", "critical"
RANK = {SAFE: 0, UNKNOWN: 1, UNSAFE: 2, CRITICAL: 3}

_TORCH_STORAGES = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
                   "ComplexFloat", "ComplexDouble", "QInt8", "QUInt8", "QInt32", "QUInt4x2", "QUInt2x4")
_TORCH_DTYPES = ("float32", "float", "float64", "double", "float16", "half", "bfloat16", "int64", "long", "int32",
                 "int", "int16", "short", "int8", "uint8", "bool", "complex64", "complex128", "cfloat", "cdouble",
                 "qint8", "quint8", "qint32", "quint4x2", "quint2x4", "float8_e4m3fn", "float8_e5m2",
                 "float8_e4m3fnuz", "float8_e5m2fnuz", "uint16", "uint32", "uint64", "complex32", "chalf")
_TORCH_REBUILD = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                  "_rebuild_parameter_with_state", "_rebuild_sparse_tensor", "_rebuild_meta_tensor_no_storage",
                  "_rebuild_nested_tensor", "_rebuild_qtensor", "_rebuild_wrapper_subclass",
                  "_rebuild_device_tensor_from_numpy", "_rebuild_sparse_csr_tensor")

# What torch.load(weights_only=True) accepts (torch/_weights_only_unpickler.py `_get_allowed_globals`), plus
# numpy's array reconstruction and joblib's array wrapper, which only describe data.
ALLOWED: frozenset[str] = frozenset([
    "collections.OrderedDict", "collections.Counter", "collections.defaultdict",
    "builtins.set", "builtins.frozenset", "builtins.bytearray", "builtins.slice", "builtins.complex",
    "builtins.int", "builtins.float", "builtins.str", "builtins.bytes", "builtins.list", "builtins.dict",
    "builtins.tuple", "builtins.bool", "_codecs.encode",
    "torch.Size", "torch.Tensor", "torch.device", "torch.nn.parameter.Parameter", "torch.serialization._get_layout",
    "torch._tensor._rebuild_from_type_v2", "torch.storage.UntypedStorage", "torch.storage.TypedStorage",
    "torch.strided", "torch.sparse_coo", "torch.sparse_csr", "torch.sparse_csc", "torch.sparse_bsr",
    "torch.sparse_bsc", "torch._mkldnn", "torch.contiguous_format", "torch.channels_last",
    "torch.channels_last_3d", "torch.preserve_format", "torch.per_tensor_affine", "torch.per_channel_affine",
    "torch.per_tensor_symmetric", "torch.per_channel_symmetric", "torch.per_channel_affine_float_qparams",
    *(f"torch.{s}Storage" for s in _TORCH_STORAGES), *(f"torch.cuda.{s}Storage" for s in _TORCH_STORAGES),
    *(f"torch.{d}" for d in _TORCH_DTYPES), *(f"torch._utils.{f}" for f in _TORCH_REBUILD),
    *(f"{m}.multiarray.{f}" for m in ("numpy.core", "numpy._core") for f in ("_reconstruct", "scalar")),
    "numpy.ndarray", "numpy.dtype", "numpy.core.multiarray._frombuffer", "numpy._core.multiarray._frombuffer",
    "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer",
    "joblib.numpy_pickle.NumpyArrayWrapper", "joblib.numpy_pickle_compat.NDArrayWrapper",
])
# numpy's dtype classes (numpy.dtypes.Float32DType, ...) are data descriptions too.
_ALLOWED_PATTERNS = (re.compile(r"numpy\.dtypes\.[A-Za-z0-9]+DType"),
                     # scikit-learn estimators: a class is instantiated empty and its state set as attributes (the
                     # common false alarm of deny lists on joblib files). Functions of sklearn stay unknown.
                     re.compile(r"sklearn(\.[A-Za-z_][A-Za-z0-9_]*)+\.[A-Z][A-Za-z0-9_]*"))

# Names that run code or reach the system: a module prefix, or module.name.
CRITICAL_MODULES = frozenset([
    "os", "posix", "nt", "subprocess", "_posixsubprocess", "sys", "socket", "shutil", "runpy", "pip", "pty",
    "pydoc", "webbrowser", "importlib", "ctypes", "_ctypes", "multiprocessing", "code", "codeop", "commands",
    "platform", "pickle", "_pickle", "cPickle", "dill", "marshal", "bdb", "pdb", "timeit", "profile", "cProfile",
    "trace", "doctest", "asyncio", "signal", "threading", "_thread", "http", "urllib", "ftplib", "smtplib",
    "telnetlib", "xmlrpc", "imp", "zipimport", "tempfile", "glob", "pathlib", "io", "_io", "fileinput",
    "shelve", "sqlite3", "venv", "ensurepip", "distutils", "setuptools", "pkg_resources", "torch.hub",
    "torch.serialization", "torch._dynamo", "torch.jit", "torch.utils.cpp_extension", "numpy.testing",
    "numpy.f2py", "numpy.distutils", "joblib.parallel", "IPython", "builtins.__import__", "__builtin__.__import__",
])
CRITICAL_NAMES = frozenset(
    f"{m}.{n}" for m in ("builtins", "__builtin__", "__builtins__")
    for n in ("eval", "exec", "execfile", "compile", "getattr", "setattr", "delattr", "open", "apply", "breakpoint",
              "input", "globals", "locals", "vars", "__import__", "memoryview", "help", "exit", "quit", "reload",
              "file", "object", "type", "super", "classmethod", "staticmethod", "property")
) | frozenset(["operator.attrgetter", "operator.methodcaller", "operator.itemgetter", "functools.partial",
               "functools.reduce", "types.FunctionType", "types.CodeType", "types.MethodType", "copyreg._reconstructor",
               "numpy.load", "numpy.lib.npyio.load", "torch.load", "torch.storage._load_from_bytes",
               "torch._C._load_for_lite_interpreter", "numpy.frompyfunc", "numpy.vectorize"])

_STDLIB = frozenset(getattr(sys, "stdlib_module_names", ())) | {"builtins", "__builtin__", "__builtins__"}
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class Policy:
    """The allow list in force: the built-in one plus names a user vouched for (`--allow module.name`)."""

    extra: frozenset[str] = frozenset()
    reasons: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def version(self) -> str:
        """The policy version, and a digest of the user's additions: both decide whether a verdict still holds."""
        if not self.extra:
            return POLICY_VERSION
        digest = hashlib.sha256("\n".join(sorted(self.extra)).encode()).hexdigest()[:12]
        return f"{POLICY_VERSION}+{digest}"

    def grade(self, name: str) -> str:
        """The grade of one import `module.name` (the dotted form: `os.system`, `torch._utils._rebuild_tensor`)."""
        if name in self.extra or name in ALLOWED or any(p.fullmatch(name) for p in _ALLOWED_PATTERNS):
            return SAFE
        return grade_denied(name)


def grade_denied(name: str) -> str:
    if name in CRITICAL_NAMES:
        return CRITICAL
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        if ".".join(parts[:i]) in CRITICAL_MODULES:
            return CRITICAL
    if parts[0] in _STDLIB or parts[0].startswith("_"):
        return UNSAFE
    return UNKNOWN


def policy(allow: Iterable[str] = (), reasons: dict[str, str] | None = None) -> Policy:
    """The built-in policy plus `allow`. A name that can never be allowed (os, sys, posix, nt: as torch rules) or
    is not a dotted name is a usage error."""
    from hfcache.errors import UsageError

    extra = set()
    for name in allow:
        if not _NAME_RE.fullmatch(name) or "." not in name:
            raise UsageError(f"--allow {name!r}: expected module.name, e.g. mylib.layers.Block")
        if name.split(".")[0] in ("os", "sys", "posix", "nt", "subprocess", "builtins", "__builtin__"):
            raise UsageError(f"--allow {name!r}: names from {name.split('.')[0]} can never be allowed")
        extra.add(name)
    return Policy(frozenset(extra), {n: (reasons or {}).get(n, "") for n in sorted(extra)})


def worst(grades: Iterable[str]) -> str:
    out = SAFE
    for g in grades:
        if RANK[g] > RANK[out]:
            out = g
    return out
