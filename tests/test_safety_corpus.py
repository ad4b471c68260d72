"""Every file of the corpus, checked by its bytes: each malicious case caught, each benign one passed; and the
pickle walker's edge cases (stack discipline, memo, several pickles, joblib arrays, scale)."""

from __future__ import annotations

import pickle
import struct
import time
import zipfile
from pathlib import Path

import pytest

from hfcache.safety import pickles
from hfcache.safety.check import check_paths, with_names
from hfcache.safety.files import check_file
from hfcache.safety.policy import CRITICAL, SAFE, Policy, grade_denied, policy
from tests.safety_corpus import OS_SYSTEM, P2, STOP, G, U, corpus, good_safetensors, torch_zip

CORPUS = corpus()


def write_sample(folder: Path, name: str) -> Path:
    s = CORPUS[name]
    path = folder / name
    with open(path, "wb") as f:
        f.write(s.data)
        if s.sparse_size:
            f.truncate(s.sparse_size)
    return path


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_case_by_its_bytes(name, tmp_path):
    """The blob has no extension (as in a cache); the snapshot name only adds suspicion."""
    v = with_names(check_file(str(write_sample(tmp_path, name)), Policy()), [CORPUS[name].filename])
    if CORPUS[name].malicious:
        assert v.verdict != SAFE, (name, v)
        assert v.reasons
    else:
        assert v.verdict == SAFE, (name, v.reasons)


def test_the_corpus_covers_what_the_issue_lists():
    for needed in ("torch_zip_state_dict", "torch_legacy_state_dict", "numpy_npy", "numpy_npz",
                   "joblib_sklearn_estimator", "safetensors_valid", "os_system_global", "os_system_stack_global_memo",
                   "builtins_eval", "getattr_chain", "pip_main", "runpy_run_path", "obj_then_pop",
                   "truncated_after_reduce", "second_pickle_after_benign", "pickle_named_safetensors",
                   "zip_local_central_names_differ", "st_overlap", "st_gap", "st_trailing_byte", "st_shape_overflow",
                   "st_duplicate_keys", "st_header_too_big", "st_header_not_brace"):
        assert needed in CORPUS


def test_reported_imports_are_exact(tmp_path):
    v = check_file(str(write_sample(tmp_path, "os_system_stack_global_memo")), Policy())
    assert dict(v.imports) == {"os.system": CRITICAL}
    v = check_file(str(write_sample(tmp_path, "stack_global_memo_rebound")), Policy())
    assert dict(v.imports) == {"collections.OrderedDict": SAFE, "os.system": CRITICAL}  # the rebound memo wins
    v = check_file(str(write_sample(tmp_path, "torch_zip_state_dict")), Policy())
    assert {n for n, _ in v.imports} == {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
                                         "torch.FloatStorage"}
    assert v.format == "torch-zip"


def test_stack_global_operands_not_known_statically_are_unsafe():
    # the module name comes out of a call's result: no static reading can know it
    data = P2 + G("builtins", "str") + U("os") + b"\x85R" + U("system") + b"\x93" + U("id") + b"\x85R."
    scan = pickles.scan(data)
    assert scan.unresolved and scan.error is None


def test_c_unpickler_stack_discipline():
    """Items below a MARK are out of reach (the C unpickler's fence), POP at a mark pops the mark."""
    assert pickles.scan(P2 + b"N(0.").error is None  # POP removes the mark, STOP takes None
    assert "underflow" in pickles.scan(P2 + b"N(R.").error
    assert "memo key" in pickles.scan(P2 + b"h\x05.").error
    assert pickles.scan(P2 + b"N" * 3).error.startswith("truncated")
    assert "protocol" in pickles.scan(b"\x80\x09N.").error


def test_pickles_in_a_row_and_trailing_data():
    two = pickle.dumps(1, 2) + pickle.dumps([1, 2], 4)
    assert pickles.scan(two).pickles == 2
    trailing = pickles.scan(pickle.dumps(1, 2) + b"\x00\x01garbage")
    assert trailing.error is None and trailing.notes


def test_user_allow_and_never_allowed_names():
    data = P2 + G("mylib.layers", "Block") + b")\x81."
    assert pickles.scan(data).imports[0].full == "mylib.layers.Block"
    assert Policy().grade("mylib.layers.Block") == "unknown"
    assert policy(["mylib.layers.Block"]).grade("mylib.layers.Block") == SAFE
    assert policy(["mylib.layers.Block"]).version != Policy().version
    from hfcache.errors import UsageError

    for bad in ("os.system", "sys.modules", "nodots", "a b.c"):
        with pytest.raises(UsageError):
            policy([bad])
    assert grade_denied("subprocess.Popen") == CRITICAL
    assert grade_denied("webbrowser.open") == CRITICAL
    assert grade_denied("shelve.open") == CRITICAL
    assert grade_denied("collections.deque") == "unsafe"  # stdlib, not on the list
    assert grade_denied("somepkg.thing") == "unknown"


def test_zip_entry_flagged_encrypted_and_duplicate_names(tmp_path):
    data = bytearray(torch_zip())
    at = data.index(b"PK\x01\x02")  # first central entry: set the encrypted flag there only
    data[at + 8] |= 1
    p = tmp_path / "enc"
    p.write_bytes(bytes(data))
    v = check_file(str(p), Policy())
    assert v.verdict != SAFE and any("flag" in r or "encrypted" in r for r in v.reasons)
    buf = tmp_path / "dup"
    with zipfile.ZipFile(buf, "w") as z, pytest.warns(UserWarning):
        z.writestr("archive/data.pkl", pickle.dumps({}, 2))
        z.writestr("archive/data.pkl", P2 + OS_SYSTEM + STOP)
    v = check_file(str(buf), Policy())
    assert v.verdict == CRITICAL and any("twice" in r for r in v.reasons)


def test_safetensors_details_for_inspect(tmp_path):
    p = tmp_path / "st"
    p.write_bytes(good_safetensors())
    v = check_file(str(p), Policy())
    assert v.info["tensors"] == 2 and v.info["parameters"] == 7
    assert v.info["dtypes"] == {"BF16": 1, "F32": 1} and v.info["metadata"] == {"format": "pt"}


def test_safetensors_written_by_the_library_pass(tmp_path):
    np = pytest.importorskip("numpy")
    from safetensors.numpy import save_file

    p = tmp_path / "lib.safetensors"
    save_file({"a": np.zeros((3, 5), dtype=np.float32), "b": np.arange(7, dtype=np.int64)}, str(p),
              metadata={"format": "np"})
    v = check_file(str(p), Policy())
    assert v.verdict == SAFE and v.info["parameters"] == 22


def test_check_paths_reads_a_folder_and_names_every_path(tmp_path):
    write_sample(tmp_path, "os_system_global")
    (tmp_path / "again").symlink_to(tmp_path / "os_system_global")
    write_sample(tmp_path, "config_json")
    report = check_paths([tmp_path])
    assert not report.ok
    bad = [f for f in report.files if not f.verdict.safe]
    assert len(bad) == 1 and len(bad[0].paths) == 2


def _big_pickle() -> bytes:
    """About 10 MB of opcodes: a long list of ints, floats and names, as a plain pickle."""
    items = []
    for i in range(400_000):
        items.extend((i * 7919, float(i), f"n{i % 1000}"))
    return pickle.dumps(items, 4)


def test_ten_megabytes_of_opcodes_are_decided(tmp_path):
    """Decided at all, and correctly (a payload at the very end is found); time and memory are measured in
    scripts/bench_safety.py, not asserted here (a busy machine)."""
    data = _big_pickle()
    assert len(data) > 5_000_000
    p = tmp_path / "big"
    p.write_bytes(data + P2 + OS_SYSTEM + STOP)
    started = time.perf_counter()
    v = check_file(str(p), Policy())
    assert v.verdict == CRITICAL
    assert time.perf_counter() - started < 60  # a generous bound: a hang, not speed, is what this catches


def test_legacy_torch_storages_are_data_not_opcodes(tmp_path):
    v = check_file(str(write_sample(tmp_path, "torch_legacy_state_dict")), Policy())
    assert v.format == "torch-legacy" and v.verdict == SAFE and v.info["pickles"] == 5


def test_joblib_array_bytes_that_are_opcodes_are_still_seen():
    """joblib skips an array's raw bytes; a plain unpickler would run them: a payload there is found."""
    pytest.importorskip("joblib")
    data = bytearray(CORPUS["joblib_sklearn_estimator"].data)
    marker = struct.pack("<d", 0.0) + struct.pack("<d", 1.0)  # the start of coef_ = arange(12) as float64
    at = bytes(data).index(marker)
    while data[at - 1] == 0xFF:  # joblib's alignment padding, after its length byte: where a plain unpickler goes on
        at -= 1
    at -= 1
    payload = b"cos\nsystem\n"
    data[at:at + len(payload)] = payload
    v = pickles.scan(bytes(data))
    assert any(i.full == "os.system" for i in v.imports)


def test_pickles_without_proto_are_found_by_their_bytes(tmp_path):
    """The C unpickler needs no PROTO: a bare FRAME, or a protocol 0 pickle whose payload comes after 64 KiB."""
    frame_body = b"\x8c\x02os\x8c\x06system\x93" + U("id") + b"\x85R."
    bare_frame = b"\x95" + struct.pack("<Q", len(frame_body)) + frame_body
    long_p0 = b"(lp0\n" + b"I1\na" * 40_000 + b"cos\nsystem\n(S'id'\ntR."
    for name, data in (("frame", bare_frame), ("p0", long_p0)):
        p = tmp_path / name
        p.write_bytes(data)
        v = check_file(str(p), Policy())
        assert v.format == "pickle" and v.verdict == CRITICAL, (name, v)


def test_random_and_text_data_are_not_false_alarms(tmp_path):
    from tests.conftest import det_bytes

    flagged = []
    for seed in range(400):
        p = tmp_path / f"r{seed}"
        p.write_bytes(det_bytes(70_000 + seed, seed))
        v = check_file(str(p), Policy())
        if not v.safe:
            flagged.append((seed, v.format, v.reasons))
    for i, text in enumerate((b"Readme\nline", b"city,pop\nParis,2\n", b"I think so\n", b"(1, 2)\n", b"[PAD]\n[UNK]\n",
                              b"V" + b"x" * 70_000, b"# model card\n" * 6000)):
        p = tmp_path / f"t{i}"
        p.write_bytes(text)
        v = check_file(str(p), Policy())
        if not v.safe:
            flagged.append((text[:10], v.format, v.reasons))
    assert flagged == []


class _Recorder(pickle.Unpickler):
    """The real unpickler, noting each name it imports (only standard-library values are loaded here)."""

    def __init__(self, data: bytes) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self.names: set[str] = set()

    def find_class(self, module, name):
        self.names.add(f"{module}.{name}")
        return super().find_class(module, name)


def test_imports_match_what_the_real_unpickler_imports():
    """Across protocols 0-5 and many standard types, the static walk finds exactly the unpickler's imports."""
    import collections
    import datetime
    import decimal
    import fractions
    import uuid

    shared = collections.OrderedDict(a=1)
    values = [collections.OrderedDict(a=[1, 2.5, "x"]), datetime.datetime(2024, 1, 2, 3, 4, 5), decimal.Decimal("1.5"),
              fractions.Fraction(1, 3), {1, 2}, frozenset({3}), complex(1, 2), bytearray(b"ab"), range(3),
              uuid.UUID(int=5), collections.Counter("aab"), collections.defaultdict(list, a=[1]),
              [shared, shared, {"k": (shared, b"bytes", None, True)}], collections.deque([1, 2])]
    for proto in range(6):
        data = pickle.dumps(values, proto)
        rec = _Recorder(data)
        rec.load()
        result = pickles.scan(data)
        assert result.error is None and not result.unresolved, proto
        assert {i.full for i in result.imports} == rec.names, proto
