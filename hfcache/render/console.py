"""Rendering: rich on a terminal, JSON for machines. The work lives elsewhere and returns plain results."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfcache.progress import Progress
from hfcache.units import counted, human_size

if TYPE_CHECKING:
    from hfcache.fetch.fetcher import DownloadResult, SnapshotResult


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "repo_id") and hasattr(obj, "repo_type"):
        return {"repo_id": obj.repo_id, "repo_type": obj.repo_type}
    return obj


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2) + "\n")


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def waiting_line(path: str) -> str:
    return f"waiting for {path}: another process is downloading it"


class NoticeProgress(Progress):
    """No bar (not a terminal, or --json): only what a person needs to know, one line on stderr."""

    def waiting(self, path: str) -> None:
        print(waiting_line(path), file=sys.stderr, flush=True)


class RichProgress(Progress):
    """Files, bytes and speed on stderr, shown only on a terminal."""

    def __init__(self, label: str) -> None:
        from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn
        from rich.progress import Progress as _P

        self._p = _P(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                     TimeRemainingColumn(), console=stderr_console(), transient=True)
        self._label = label
        self._bytes = None
        self._files = None

    def start(self, files: int, total_bytes: int) -> None:
        self._p.start()
        self._bytes = self._p.add_task(self._label, total=total_bytes)
        self._files_total = files
        self._done = 0

    def advance(self, nbytes: int) -> None:
        self._p.advance(self._bytes, nbytes)

    def file_done(self, path: str, size: int, fetched: bool) -> None:
        self._done += 1
        if not fetched:  # reused bytes count as done, so the bar reaches its end
            self._p.advance(self._bytes, size)
        self._p.update(self._bytes, description=f"{self._label} ({self._done}/{counted(self._files_total, 'file')})")

    def waiting(self, path: str) -> None:
        self._p.console.print(waiting_line(path))  # above the bar, which would otherwise just sit at 0

    def stop(self) -> None:
        self._p.stop()


def _summary(stats, seconds: float, offline: bool) -> str:
    if offline:
        return f"offline: {counted(stats.files_reused, 'file')} from the cache"
    speed = f", {human_size(stats.bytes_fetched / seconds)}/s" if stats.bytes_fetched and seconds > 0 else ""
    local = f", {human_size(stats.bytes_local)} of Xet chunks already on disk" if stats.bytes_local else ""
    return (f"fetched {counted(stats.files_fetched, 'file')} ({human_size(stats.bytes_fetched)}{local}) in "
            f"{seconds:.2f} s{speed}; {stats.files_reused} already in the cache")


def render_snapshot(result: SnapshotResult, seconds: float, as_json: bool) -> None:
    if as_json:
        print_json({
            "repo_id": result.repo.repo_id, "repo_type": result.repo.repo_type, "revision": result.revision,
            "commit": result.commit, "path": str(result.path), "files": result.files,
            "files_fetched": result.stats.files_fetched, "files_reused": result.stats.files_reused,
            "bytes_fetched": result.stats.bytes_fetched, "bytes_total": result.stats.bytes_total,
            "xet_files": result.stats.xet_files, "bytes_local": result.stats.bytes_local,
            "fetched_by_file": result.stats.fetched_by_file, "offline": result.offline, "seconds": round(seconds, 3),
        })
        return
    if sys.stderr.isatty():
        stderr_console().print(f"{result.repo}@{result.revision} → {result.commit[:12]}: "
                               + _summary(result.stats, seconds, result.offline))
    print(result.path)


def render_download(result: DownloadResult, seconds: float, as_json: bool) -> None:
    if as_json:
        print_json({
            "repo_id": result.repo.repo_id, "repo_type": result.repo.repo_type, "revision": result.revision,
            "commit": result.commit, "paths": [str(p) for p in result.paths],
            "files_fetched": result.stats.files_fetched, "files_reused": result.stats.files_reused,
            "bytes_fetched": result.stats.bytes_fetched, "xet_files": result.stats.xet_files,
            "bytes_local": result.stats.bytes_local, "fetched_by_file": result.stats.fetched_by_file,
            "offline": result.offline, "seconds": round(seconds, 3),
        })
        return
    for p in result.paths:
        print(p)


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
