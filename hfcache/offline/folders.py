"""Publishing a folder that readers look up by name: built aside, then swapped in by rename."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def swap_folder(staging: Path, final: Path) -> None:
    """Put `staging` at `final`: an existing `final` is renamed aside first and removed after, so a reader
    sees the old folder or the new one, never a half-written one."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name[:16]}.{uuid.uuid4().hex[:8]}.old"
        os.rename(final, old)
    os.rename(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
