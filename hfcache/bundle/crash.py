"""Test hook: kill the process at a chosen step, to prove a killed `import`, `relocate` or `convert` leaves a
valid cache and that re-running finishes the job."""

from __future__ import annotations

import os
import time

_steps = 0


def crash_point() -> None:
    """Test hook: with HFCACHE_CRASH_AFTER=N the process SIGKILLs itself at its N-th step (import, convert)."""
    limit = os.environ.get("HFCACHE_CRASH_AFTER")
    if not limit:
        return
    global _steps
    _steps += 1
    if _steps >= int(limit):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)
