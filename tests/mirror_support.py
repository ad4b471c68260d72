"""Helpers for mirror tests (loopback here, network namespaces and nginx elsewhere): an upstream hub with a large
blob, mirror processes, and counting what upstream was asked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hfcache.cache.layout import HubCache, RepoRef
from tests.conftest import MODEL_MAIN, Hub, build_hub, det_bytes

BIG = det_bytes(3_000_000, 7)  # resumable (>= 1 MiB), so followers in other processes read its partial
REPO = RepoRef("org/tiny")


def mirror_hub(root: Path, token: str | None = None, cdn_host: str | None = "localhost") -> Hub:
    """The test upstream: org/tiny (main, v1, refs/pr/1), a dataset, and `huge.bin` (3 MB) in org/tiny's main."""
    from tests.conftest import DATASET, MODEL_PR, MODEL_V1

    repos = {
        ("org/tiny", "model", "main"): {**MODEL_MAIN, "huge.bin": BIG},
        ("org/tiny", "model", "v1"): MODEL_V1,
        ("org/tiny", "model", "refs/pr/1"): MODEL_PR,
        ("org/ds", "dataset", "main"): DATASET,
    }
    return build_hub(root, cdn_host=cdn_host, token=token, repos=repos)


def upstream_gets(hub: Hub, filename: str) -> list:
    """GETs upstream answered for `filename` by resolve (each upstream fetch of a file asks resolve once; a
    redirect to the CDN origin is then followed)."""
    return [r for r in hub.app.log if r.method == "GET" and "/resolve/" in r.path and r.path.endswith("/" + filename)]


def blob_of(store: Path, filename: str, hub: Hub, revision: str = "main") -> Path:
    """Where the mirror's store keeps `filename` of org/tiny (by the upstream's own metadata)."""
    from hfcache.cache.lfs import file_meta

    source = hub.sources[(REPO, revision)] / filename
    return HubCache(store).blob_path(REPO, file_meta(source, filename).etag)


@dataclass
class MirrorProcess:
    proc: subprocess.Popen
    url: str
    log: Path

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_mirror(store: Path, upstream: str, *args: str, env: dict[str, str] | None = None,
                 log: Path | None = None) -> MirrorProcess:
    """`hfcache serve --upstream` in its own process on a free port; returns once it listens (its first stdout line
    is its URL). Its access log goes to `log`."""
    log = log or store.parent / f"mirror-{os.urandom(4).hex()}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_ENDPOINT", "HF_HUB_OFFLINE"))}
    full_env.update({"HFCACHE_NO_FSYNC": "1", **(env or {})})
    with open(log, "ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "hfcache", "serve", "--upstream", upstream, "--cache-dir",
                                 str(store), "--port", "0", *args], stdout=subprocess.PIPE, stderr=err,
                                env=full_env, text=True)
    url = proc.stdout.readline().strip()  # the ready line, or "" if it died
    if not url.startswith("http"):
        proc.wait(timeout=30)
        raise RuntimeError(f"mirror did not start: {log.read_text()[-2000:]}")
    return MirrorProcess(proc, url, log)
