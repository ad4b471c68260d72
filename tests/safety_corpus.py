"""A corpus of model files, benign and malicious, built from bytes (no torch needed); shared by the safety tests
and scripts/bench_safety.py. Nothing here is ever unpickled.

`corpus()` -> {name: Sample}; a Sample has the file name it is stored under (its extension, if any, is part of
the case), its bytes, and whether it is malicious.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import sys
import types
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    filename: str
    data: bytes
    malicious: bool
    sparse_size: int = 0  # when set, the file is extended (sparsely) to this size


# -- a tiny pickle assembler -----------------------------------------------------------------------------------------
def G(module: str, name: str) -> bytes:  # GLOBAL
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def U(text: str) -> bytes:  # BINUNICODE
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def SU(text: str) -> bytes:  # SHORT_BINUNICODE
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def I(n: int) -> bytes:  # noqa: E743  BININT
    return b"J" + struct.pack("<i", n)


def T(*items: bytes) -> bytes:  # MARK ... TUPLE
    return b"(" + b"".join(items) + b"t"


P2, P4, STOP, REDUCE, EMPTY_TUPLE, NEWFALSE = b"\x80\x02", b"\x80\x04", b".", b"R", b")", b"\x89"


def _tensor(key: str, storage: str, numel: int, shape: tuple[int, ...], legacy: bool = False) -> bytes:
    stride = tuple(_stride(shape, i) for i in range(len(shape)))
    pid = [U("storage"), G("torch", "FloatStorage"), U(storage), U("cpu"), I(numel)] + ([b"N"] if legacy else [])
    return (U(key) + G("torch._utils", "_rebuild_tensor_v2") + b"(" + T(*pid) + b"Q" + I(0)
            + T(*(I(n) for n in shape)) + T(*(I(n) for n in stride)) + NEWFALSE
            + G("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE + b"t" + REDUCE)


def _stride(shape: tuple[int, ...], i: int) -> int:
    out = 1
    for n in shape[i + 1:]:
        out *= n
    return out


def state_dict_pickle(legacy: bool = False) -> bytes:
    """What torch.save writes for {'w': FloatTensor[2, 3], 'b': FloatTensor[3]}: OrderedDict and rebuild calls."""
    return (P2 + G("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE + b"("
            + _tensor("w", "0", 6, (2, 3), legacy) + _tensor("b", "1", 3, (3,), legacy) + b"u" + STOP)


def torch_zip(pkl: bytes | None = None, prefix: str = "archive") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", pkl if pkl is not None else state_dict_pickle())
        z.writestr(f"{prefix}/byteorder", "little")
        z.writestr(f"{prefix}/data/0", struct.pack("<6f", *range(6)))
        z.writestr(f"{prefix}/data/1", struct.pack("<3f", 1, 2, 3))
        z.writestr(f"{prefix}/version", "3\n")
        z.writestr(f"{prefix}/.data/serialization_id", "1234567890")
    return buf.getvalue()


def torch_legacy(data_pickle: bytes | None = None) -> bytes:
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    out = pickle.dumps(0x1950A86A20F9469CFC6C, 2) + pickle.dumps(1001, 2) + pickle.dumps(sys_info, 2)
    out += data_pickle if data_pickle is not None else state_dict_pickle(legacy=True)
    out += pickle.dumps(["0", "1"], 2)
    for n in (6, 3):  # raw storages: element count, then the elements
        out += struct.pack("<q", n) + struct.pack(f"<{n}f", *range(n))
    return out


def safetensors_bytes(header: dict | str, data: bytes, length: int | None = None) -> bytes:
    raw = header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))
    raw_b = raw.encode()
    return struct.pack("<Q", len(raw_b) if length is None else length) + raw_b + data


def good_safetensors() -> bytes:
    return safetensors_bytes({"__metadata__": {"format": "pt"},
                              "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                              "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]}}, bytes(22))


def gguf_bytes(template: str | None) -> bytes:
    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    kvs = [(s("general.architecture"), 8, s("llama")), (s("llama.context_length"), 4, struct.pack("<I", 2048))]
    if template is not None:
        kvs.append((s("tokenizer.chat_template"), 8, s(template)))
    body = b"".join(k + struct.pack("<I", t) + v for k, t, v in kvs)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + body


def keras_zip(lambda_layer: bool, module: str = "keras.layers") -> bytes:
    layers = [{"module": module, "class_name": "Dense", "config": {"name": "dense", "units": 2}}]
    if lambda_layer:
        layers.append({"module": "keras.layers", "class_name": "Lambda",
                       "config": {"name": "lambda", "function": {"class_name": "__lambda__",
                                                                 "config": {"code": "4wEAAAAAAAAA"}}}})
    config = {"module": "keras", "class_name": "Sequential", "config": {"name": "seq", "layers": layers}}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.3.3"}))
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + bytes(100))
    return buf.getvalue()


def keras_h5(lambda_layer: bool) -> bytes:
    """An HDF5 file as Keras 2 writes one: the model config is a JSON attribute somewhere in the bytes."""
    layers = [{"class_name": "Dense", "config": {"name": "dense", "units": 2}}]
    if lambda_layer:
        layers.append({"class_name": "Lambda", "config": {"name": "lam", "function": ["4wEAAAAAAAAA", None, None]}})
    config = json.dumps({"class_name": "Sequential", "config": {"name": "seq", "layers": layers}})
    return b"\x89HDF\r\n\x1a\n" + bytes(2000) + b"model_config\x00" + config.encode() + bytes(3000)


def _rename_local(zip_bytes: bytes, old: str, new: str) -> bytes:
    """The local header names `new` where the central directory still says `old` (same length)."""
    assert len(old) == len(new)
    at = zip_bytes.index(b"PK\x03\x04" + zip_bytes[zip_bytes.index(old.encode()) - 26:zip_bytes.index(old.encode())])
    head = zip_bytes[:at + 30] + new.encode() + zip_bytes[at + 30 + len(old):]
    return head


@contextmanager
def _fake_modules(**modules: dict):
    """Importable stand-ins (scikit-learn is not installed) for as long as joblib pickles them."""
    saved = {name: sys.modules.get(name) for name in modules}
    try:
        for name, attrs in modules.items():
            mod = types.ModuleType(name)
            for k, v in attrs.items():
                setattr(mod, k, v)
                if isinstance(v, type):
                    v.__module__, v.__qualname__ = name, k
            sys.modules[name] = mod
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def joblib_estimator(payload: bool = False) -> bytes | None:
    """What joblib.dump writes for a fitted scikit-learn-like estimator (arrays written raw between opcodes)."""
    try:
        import joblib  # noqa: F401  (its NumpyPickler is imported below)
        import numpy as np
    except ImportError:
        return None

    class LinearRegression:
        def __init__(self) -> None:
            self.coef_ = np.arange(12, dtype=np.float64).reshape(3, 4)
            self.intercept_ = np.array([0.5, 1.5, 2.5], dtype=np.float32)
            self.feature_names_in_ = np.array(["a", "b", "c", "d"], dtype=object)
            self.n_features_in_ = 4
            self.fit_intercept = True

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo owned",))

    with _fake_modules(**{"sklearn": {}, "sklearn.linear_model": {},
                          "sklearn.linear_model._base": {"LinearRegression": LinearRegression}}):
        est = LinearRegression()
        if payload:
            est.callback = Evil()
        from joblib.numpy_pickle import NumpyPickler

        # `datasets` imports dill, which extends pickle's own dispatch table in place (classes then go by value):
        # dill keeps the stock table, which is what joblib.dump uses in a process without dill
        stock = getattr(sys.modules.get("dill._dill"), "pickle_dispatch_copy", None)

        class StockPickler(NumpyPickler):
            dispatch = dict(stock) if stock is not None else NumpyPickler.dispatch.copy()

        buf = io.BytesIO()
        StockPickler(buf).dump(est)  # what joblib.dump(est, buf) writes
        return buf.getvalue()


def _npy(arr) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _npz() -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, a=np.arange(10), b=np.ones((2, 2), dtype=np.float16))
    return buf.getvalue()


OS_SYSTEM = G("os", "system") + U("echo owned") + b"\x85" + REDUCE


def corpus() -> dict[str, Sample]:
    """Every case: benign ones must pass, malicious ones must be caught."""
    benign_pickle = pickle.dumps({"epoch": 3, "lr": 0.01, "names": ["a", "b"]}, 4)
    stack_global_memo = (P4 + SU("os") + b"\x94" + b"0" + SU("system") + b"\x94" + b"0"  # memo 0, 1; popped
                         + b"h\x00h\x01\x93" + SU("echo owned") + b"\x85" + REDUCE + STOP)
    memo_overwrite = (P4 + SU("collections") + b"\x94" + SU("OrderedDict") + b"\x94" + b"\x93" + b"0"
                      + SU("os") + b"q\x00" + b"0" + SU("system") + b"q\x01" + b"0"  # memo 0, 1 rebound
                      + b"h\x00h\x01\x93" + SU("echo") + b"\x85" + REDUCE + STOP)
    getattr_chain = (P2 + G("builtins", "getattr") + b"(" + G("builtins", "getattr") + b"("
                     + G("collections", "OrderedDict") + U("__init__") + b"tR" + U("__globals__") + b"tR" + STOP)
    cases = {
        # -- benign ----------------------------------------------------------------------------------------------
        "torch_zip_state_dict": Sample("pytorch_model.bin", torch_zip(), False),
        "torch_legacy_state_dict": Sample("model.pt", torch_legacy(), False),
        "plain_pickle_dict": Sample("training_args.bin", benign_pickle, False),
        "safetensors_valid": Sample("model.safetensors", good_safetensors(), False),
        "gguf_with_plain_chat_template": Sample("model.gguf", gguf_bytes(
            "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"), False),
        "keras_dense": Sample("model.keras", keras_zip(False), False),
        "keras_h5_dense": Sample("model.h5", keras_h5(False), False),
        "config_json": Sample("config.json", b'{"model_type": "bert"}', False),
        # -- malicious: pickles ----------------------------------------------------------------------------------
        "os_system_global": Sample("pytorch_model.bin", P2 + OS_SYSTEM + STOP, True),
        "os_system_stack_global_memo": Sample("model.pkl", stack_global_memo, True),
        "stack_global_memo_rebound": Sample("model.pkl", memo_overwrite, True),
        "builtins_eval": Sample("model.ckpt", P2 + G("builtins", "eval") + U("print(1)") + b"\x85R." , True),
        "getattr_chain": Sample("model.pth", getattr_chain, True),
        "pip_main": Sample("model.bin", P2 + G("pip", "main") + b"(]" + U("install") + b"atR" + STOP, True),
        "runpy_run_path": Sample("model.bin", P2 + G("runpy", "run_path") + U("/tmp/x.py") + b"\x85R.", True),
        "obj_then_pop": Sample("model.bin", P2 + b"(" + G("os", "system") + U("echo owned") + b"o" + b"0N.", True),
        "truncated_after_reduce": Sample("model.bin", P2 + OS_SYSTEM, True),
        "second_pickle_after_benign": Sample("model.bin", benign_pickle + P2 + OS_SYSTEM + STOP, True),
        "pickle_named_safetensors": Sample("model.safetensors", benign_pickle, True),
        "protocol0_inst": Sample("model.bin", b"(S'echo owned'\nios\nsystem\n.", True),
        "unlisted_stdlib_gadget": Sample("model.bin", P2 + G("_operator", "attrgetter") + U("x") + b"\x85R.", True),
        "functools_partial": Sample("model.bin", P2 + G("functools", "partial") + b"(" + G("os", "system")
                                    + U("id") + b"tR.", True),
        "ext_registry": Sample("model.bin", P2 + b"\x82\x01" + U("x") + b"\x85R.", True),
        "unknown_opcode": Sample("model.bin", P2 + b"N\xff.", True),
        "legacy_torch_payload": Sample("model.pt", torch_legacy(P2 + OS_SYSTEM + STOP), True),
        "torch_zip_payload": Sample("pytorch_model.bin", torch_zip(P2 + OS_SYSTEM + STOP), True),
        "zip_local_central_names_differ": Sample("pytorch_model.bin", _rename_local(
            torch_zip(state_dict_pickle()), "archive/data.pkl", "archive/datb.pkl"), True),
        "pickle_zip_polyglot": Sample("model.bin", P2 + OS_SYSTEM + STOP + torch_zip(), True),
        "gzip_pickle": Sample("model.pkl.gz", _gzip(P2 + OS_SYSTEM + STOP), True),
        # -- malicious: other formats ----------------------------------------------------------------------------
        "keras_lambda": Sample("model.keras", keras_zip(True), True),
        "keras_foreign_module": Sample("model.keras", keras_zip(False, module="os"), True),
        "keras_h5_lambda": Sample("model.h5", keras_h5(True), True),
        "gguf_template_injection": Sample("model.gguf", gguf_bytes(
            "{{ self.__init__.__globals__.__builtins__.__import__('os').popen('id').read() }}"), True),
        # -- malicious: safetensors ------------------------------------------------------------------------------
        "st_overlap": Sample("model.safetensors", safetensors_bytes(
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
             "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)), True),
        "st_gap": Sample("model.safetensors", safetensors_bytes(
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
             "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}}, bytes(20)), True),
        "st_trailing_byte": Sample("model.safetensors", good_safetensors() + b"\x00", True),
        "st_shape_overflow": Sample("model.safetensors", safetensors_bytes(
            {"a": {"dtype": "F32", "shape": [2 ** 62, 2 ** 3], "data_offsets": [0, 0]}}, b""), True),
        "st_duplicate_keys": Sample("model.safetensors", safetensors_bytes(
            '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
            '"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4)), True),
        "st_header_too_big": Sample("model.safetensors", struct.pack("<Q", 100_000_001) + b"{", True,
                                    sparse_size=8 + 100_000_001),
        "st_header_not_brace": Sample("model.safetensors", safetensors_bytes(
            ' {"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4)), True),
        "st_unknown_dtype": Sample("model.safetensors", safetensors_bytes(
            {"a": {"dtype": "F33", "shape": [1], "data_offsets": [0, 4]}}, bytes(4)), True),
    }
    try:
        import numpy as np
    except ImportError:
        np = None
    if np is not None:
        cases["numpy_npy"] = Sample("weights.npy", _npy(np.arange(20, dtype=np.float32)), False)
        cases["numpy_npz"] = Sample("weights.npz", _npz(), False)
        cases["numpy_array_pickle"] = Sample("arrays.pkl", pickle.dumps({"x": np.arange(4)}, 2), False)
        cases["npy_object_payload"] = Sample("weights.npy", b"\x93NUMPY\x01\x00" + _npy_object_header()
                                             + P2 + OS_SYSTEM + STOP, True)
    est = joblib_estimator()
    if est is not None:
        cases["joblib_sklearn_estimator"] = Sample("model.joblib", est, False)
        cases["joblib_payload"] = Sample("model.joblib", joblib_estimator(payload=True), True)
    return cases


def _npy_object_header() -> bytes:
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (64 - 10 - len(header) - 1) + b"\n"
    return struct.pack("<H", len(header)) + header


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)
