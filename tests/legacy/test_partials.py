"""hfcache and an older huggingface_hub (0.24, this legacy venv's) on one cache: a download hfcache left half done
(killed) must never become a corrupt blob when huggingface_hub 0.x/1.x fetches the same file.

Those versions resume from exactly `blobs/<etag>.incomplete` by appending to whatever is there and publish the
result with no hash check; hfcache's partial (the full size at once, filled in place) must live under a name they
never touch. hfcache runs from the main environment (HFCACHE_PYTHON), the Hub too (`stalling_hub.py`).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

huggingface_hub = pytest.importorskip("huggingface_hub")
if int(huggingface_hub.__version__.split(".")[0]) >= 2:
    pytest.skip(f"needs huggingface_hub < 2 (this is {huggingface_hub.__version__}): run make test-legacy",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
HFCACHE_PYTHON = os.environ.get("HFCACHE_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
SIZE = 4_000_000  # over hfcache's 1 MiB resumable threshold: one partial of the full size, filled in place
STALL_AFTER = 1_500_000


def _payload() -> bytes:
    block, out = b"seed", bytearray()
    while len(out) < SIZE:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:SIZE])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env.update(extra)
    return env


def _wait_until(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def stalling_hub(tmp_path):
    """A Hub whose first download of big.bin stalls after STALL_AFTER bytes; later ones are whole."""
    folder = tmp_path / "src"
    folder.mkdir()
    data = _payload()
    (folder / "big.bin").write_bytes(data)
    server = subprocess.Popen([HFCACHE_PYTHON, str(Path(__file__).with_name("stalling_hub.py")), str(folder),
                               "big.bin", str(STALL_AFTER)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        url = server.stdout.readline().strip()
        assert url.startswith("http://"), "the hub did not start"
        yield url, data
    finally:
        server.kill()
        server.wait()


def _written_bytes(path: Path) -> int:
    """Bytes really on disk (the file is created at full size, sparse): what hfcache has written so far."""
    try:
        return path.stat().st_blocks * 512
    except FileNotFoundError:
        return 0


FETCH = ("import sys\nfrom huggingface_hub import hf_hub_download\n"
         "print(hf_hub_download('org/big', 'big.bin', cache_dir=sys.argv[1]))\n")


def _plant_old_hfcache_partial(blobs: Path, sha: str, data: bytes) -> Path:
    """What hfcache before this change left when killed: `<etag>.incomplete` at full size, partly filled, and its
    record `<etag>.incomplete.parts` (a name huggingface_hub never writes)."""
    blobs.mkdir(parents=True)
    old = blobs / f"{sha}.incomplete"
    with open(old, "wb") as f:
        f.truncate(SIZE)
        f.write(data[:1_000_000])
    (blobs / f"{sha}.incomplete.parts").write_text(
        f'{{"etag": "{sha}", "size": {SIZE}, "parts": [[0, {SIZE}, 1000000]]}}')
    return old


@pytest.mark.parametrize("older_leftover", [False, True], ids=["fresh", "older-hfcache-leftover"])
def test_huggingface_hub_0x_never_publishes_a_partial_hfcache_left(stalling_hub, tmp_path, older_leftover):
    """hfcache is killed mid-download (after bytes reach the disk); huggingface_hub 0.24 then fetches the same
    file into the same cache and must publish the right bytes. With an older hfcache's leftover under the name
    0.24 resumes from, hfcache moves it to its own names (under the blob's lock) before downloading."""
    url, data = stalling_hub
    sha = hashlib.sha256(data).hexdigest()
    cache = tmp_path / "cache"
    blobs = cache / "models--org--big" / "blobs"
    old = _plant_old_hfcache_partial(blobs, sha, data) if older_leftover else None

    killed = subprocess.Popen([HFCACHE_PYTHON, "-m", "hfcache", "download", "org/big", "big.bin", "--cache-dir",
                               str(cache)], env=_env(HF_ENDPOINT=url), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        def partial_with_bytes() -> list[Path]:
            if old is not None and old.exists():
                return []  # not taken over yet
            found = list(blobs.glob("*.incomplete")) if blobs.is_dir() else []
            return [p for p in found if _written_bytes(p) >= STALL_AFTER // 2]

        partial = _wait_until(partial_with_bytes, "hfcache's partial file to hold data")[0]
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    assert not (blobs / sha).exists()  # killed mid-download: nothing published
    assert partial.exists()

    # huggingface_hub 0.24 fetches the same file into the same cache (the stall is used up: a whole answer now).
    p = subprocess.run([sys.executable, "-c", FETCH, str(cache)], env=_env(HF_ENDPOINT=url), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert hashlib.sha256(Path(p.stdout.strip().splitlines()[-1]).read_bytes()).hexdigest() == sha
    assert hashlib.sha256((blobs / sha).read_bytes()).hexdigest() == sha

    # hfcache afterwards: the blob is reused, and its own partial of a blob now complete is swept.
    r = subprocess.run([HFCACHE_PYTHON, "-m", "hfcache", "download", "org/big", "big.bin", "--cache-dir", str(cache)],
                       env=_env(HF_ENDPOINT=url), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in blobs.iterdir()) == [sha]
