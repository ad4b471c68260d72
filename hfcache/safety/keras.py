"""Keras `.keras` (a zip with `config.json`) and `.h5`: a `Lambda` layer carries Python bytecode (CVE-2024-3660),
and a module reference outside Keras imports what it names (the `safe_mode` bypass of CVE-2025-1550)."""

from __future__ import annotations

import json
from typing import BinaryIO

from hfcache.safety.policy import CRITICAL, UNSAFE
from hfcache.safety.result import Outcome

_SAFE_MODULES = ("keras", "keras_hub", "keras_nlp", "keras_cv", "tensorflow.keras", "tf_keras")


def check_config(data: bytes, out: Outcome) -> None:
    """Walk a model config: every `class_name`, `module` and `registered_name` it holds."""
    try:
        config = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        out.flag(UNSAFE, f"Keras config is not JSON: {str(e)[:120]}")
        return
    layers = 0
    stack, seen = [config], 0
    while stack and seen < 1_000_000:
        node = stack.pop()
        seen += 1
        if isinstance(node, dict):
            if "class_name" in node:
                layers += 1
            if node.get("class_name") in ("Lambda", "TFOpLambda"):
                out.flag(CRITICAL, f"Keras {node['class_name']} layer "
                                   f"{(node.get('config') or {}).get('name', '?')!r}: it runs Python code when loaded")
            module = node.get("module")
            if isinstance(module, str) and module and module.split(".")[0] not in _SAFE_MODULES:
                out.flag(UNSAFE, f"Keras config refers to module {module!r} "
                                 f"({node.get('class_name') or node.get('registered_name')}): it is imported on load")
            if node.get("class_name") == "__lambda__" or "__lambda__" in str(node.get("registered_name", "")):
                out.flag(CRITICAL, "Keras config holds a serialized lambda")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    out.info["config_objects"] = layers


def check_h5(f: BinaryIO, out: Outcome) -> None:
    """An HDF5 file: Keras keeps the model config as a JSON attribute; find it in the bytes (no h5py needed)."""
    out.format = "hdf5"
    f.seek(0)
    carry, found = b"", 0
    decoder = json.JSONDecoder()
    while True:
        chunk = f.read(1 << 22)
        if not chunk:
            break
        data = carry + chunk
        at = data.find(b'{"class_name"')
        while at >= 0:
            try:
                obj, end = decoder.raw_decode(data[at:at + (1 << 24)].decode("utf-8", "replace"))
            except ValueError:
                break
            found += 1
            check_config(json.dumps(obj).encode(), out)
            at = data.find(b'{"class_name"', at + end)
        carry = data[-(1 << 16):]
    if found:
        out.format = "keras-h5"
