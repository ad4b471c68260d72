"""The per-blob lock, taken with `flock` directly: the same lock `filelock.FileLock` (and so `huggingface_hub`)
takes on the same file, without its bookkeeping.

filelock 4 registers every descriptor for fork tracking, resolves the real path and probes the file system on
each acquire: for a 16 KiB file that cost more than the transfer itself (half of a 2,000-file snapshot's CPU).
The protocol other processes see is unchanged: `open(O_CREAT, 0o664)`, `flock(LOCK_EX)`, the file left in
place on release. A lock file that a peer unlinked (or replaced) while we waited is taken again, by the name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable

POLL = 0.05  # filelock's own poll interval while another process holds the lock
NO_FLOCK = (errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP)

try:
    import fcntl
except ImportError:  # Windows: the caller falls back to filelock
    fcntl = None  # type: ignore[assignment]

AVAILABLE = fcntl is not None


class LockTimeout(TimeoutError):
    """The lock was not free within the timeout (0: not free at once)."""


def acquire(path: str, timeout: float = -1, on_wait: Callable[[], None] | None = None, mode: int = 0o664) -> int:
    """Lock `path` (created if need be); returns the descriptor to pass to `release`. `timeout` < 0 waits for
    ever; `on_wait` is called once if the lock is not free at once. Raises `OSError` with an errno in `NO_FLOCK`
    where the file system has no flock (the caller falls back)."""
    deadline = None if timeout < 0 else time.monotonic() + timeout
    waited = False
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    while True:
        fd = os.open(path, flags, mode)
        try:
            if os.fstat(fd).st_mode & 0o777 != mode:
                with contextlib.suppress(PermissionError):  # as filelock: the umask must not lock out the group
                    os.fchmod(fd, mode)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                fd = -1
            else:
                if _still_named(fd, path):
                    return fd
                os.close(fd)  # unlinked or replaced by a peer before we got it: lock the file now named so
                fd = -1
                continue
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        if deadline is not None and time.monotonic() >= deadline:
            raise LockTimeout(f"{path} is locked by another process")
        if not waited and on_wait is not None:
            on_wait()
        waited = True
        time.sleep(POLL if deadline is None else max(0.0, min(POLL, deadline - time.monotonic())))


def release(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _still_named(fd: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
    except FileNotFoundError:
        return False
