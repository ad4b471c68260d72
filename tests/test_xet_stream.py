"""The Xet download pipeline's memory bound (hfcache/xet/stream.py): xorb ranges are fetched in pieces into reused
buffers and decoded chunk run by chunk run, so what a download holds is counted (`XetOutcome.peak_held`) and stays
within `held_bound()` whatever the file size. Asserted on the counter and the buffers allocated, never on timing."""

from __future__ import annotations

import random

import pytest

from hfcache.xet import stream

try:
    from tests.xethub import XetHub, sample_files
    from tests.xethub import xet_hub as xet_hub  # noqa: F401  (the fixture)
except ImportError:  # the emulator not here
    XetHub = None

TOKEN = "hf_xet_test_token"
MiB = 1024 * 1024
needs_hub = pytest.mark.skipif(XetHub is None, reason="the Xet Hub emulator (tests/xethub.py) is not here")


def test_the_default_bound_leaves_room_under_issue_15s_150_mb():
    """The pipeline's own share of a download's memory, by design (the interpreter and libraries take ~60 MB)."""
    assert stream.held_bound() < 72 * MiB


def _snapshot_outcomes(monkeypatch, cache, endpoint, revision="main"):
    from hfcache.cache.layout import HubCache, RepoRef
    from hfcache.fetch.fetcher import Fetcher
    from hfcache.fetch.hub import HubClient
    from hfcache.xet import path as xet_path

    outcomes, streams = [], []
    real_rebuild, real_stream = xet_path.rebuild, stream.Stream

    def rebuild(*a, **kw):
        outcomes.append(real_rebuild(*a, **kw))
        return outcomes[-1]

    class Stream(real_stream):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            streams.append(self)

    monkeypatch.setattr(xet_path, "rebuild", rebuild)
    monkeypatch.setattr("hfcache.xet.download.Stream", Stream)
    r = Fetcher(HubCache(cache), HubClient(endpoint, token=TOKEN), offline=False).snapshot(RepoRef("org/m"),
                                                                                             revision)
    return r, outcomes, streams


def _small_pipeline(monkeypatch, piece: int) -> None:
    monkeypatch.setattr(stream, "PIECE", piece)
    monkeypatch.setattr(stream, "BUDGET", 4 * piece)
    monkeypatch.setattr(stream, "DECODE_MAX", 96 * 1024)
    monkeypatch.setattr(stream, "DEPTH", 2)
    monkeypatch.setattr(stream, "LOCAL_BATCH", 2)


@needs_hub
@pytest.mark.parametrize("piece", [50_001, 200_003])
def test_a_file_many_times_the_budget_is_rebuilt_within_the_bound(xet_hub, tmp_path, monkeypatch, piece):
    """Pieces smaller than a chunk, or cutting chunks and headers anywhere: every byte still right, and what the
    pipeline held never past its bound, a small part of the file."""
    size = 16 * MiB + 12_345
    data = random.Random(41).randbytes(size)
    files = {"model.safetensors": data, **sample_files(seed=42)}  # stored chunks, LZ4, byte-grouped LZ4
    xet_hub.add_repo("org/m", files)
    _small_pipeline(monkeypatch, piece)
    r, outcomes, streams = _snapshot_outcomes(monkeypatch, tmp_path / "c", xet_hub.endpoint)
    for path, want in files.items():
        assert (r.path / path).read_bytes() == want, path
    bound = stream.held_bound()
    assert bound < size // 2
    assert outcomes and all(0 < o.peak_held <= bound for o in outcomes), ([o.peak_held for o in outcomes], bound)
    # buffers are reused: at most what the budget and the decode window keep alive at once
    most = stream.BUDGET // piece + 2 + stream.DEPTH + 1
    assert all(s.prefetch.buffers <= most for s in streams), [s.prefetch.buffers for s in streams]
    assert all(s.held.now == 0 for s in streams)  # every byte counted in was counted out


@needs_hub
def test_chunks_read_from_disk_count_within_the_bound_too(xet_hub, tmp_path, monkeypatch):
    size = 6 * MiB
    v1 = random.Random(43).randbytes(size)
    v2 = v1[: size // 2] + random.Random(44).randbytes(size // 10) + v1[size // 2 + size // 10:]
    xet_hub.add_repo("org/m", {"model.safetensors": v1}, revision="main")
    xet_hub.add_repo("org/m", {"model.safetensors": v2}, revision="v2")
    _small_pipeline(monkeypatch, 100_000)
    _snapshot_outcomes(monkeypatch, tmp_path / "c", xet_hub.endpoint)
    r, outcomes, streams = _snapshot_outcomes(monkeypatch, tmp_path / "c", xet_hub.endpoint, "v2")
    assert (r.path / "model.safetensors").read_bytes() == v2
    (o,) = outcomes
    assert o.local > 0.7 * size and o.fetched < 0.2 * size
    assert 0 < o.peak_held <= stream.held_bound()
    assert streams[0].held.now == 0
