"""A user's `--allow module.name[=REASON]`, and where a team keeps them: the lock file.

With `--lock FILE`, the names allowed in its `"safety": {"allow": {name: reason}}` block count, and a name given on
the command line is written into that block with its reason (a reason is then required), so the next run and the
next colleague see who vouched for what and why. `hfcache lock` rewrites the lock without the block: allow again.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from hfcache.errors import UsageError
from hfcache.safety.policy import Policy, policy


def parse_allow(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, _, reason = item.partition("=")
        out[name.strip()] = reason.strip()
    return out


def from_lock(path: Path) -> dict[str, str]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read lock file {path}: {e}") from None
    allow = (data.get("safety") or {}).get("allow") if isinstance(data, dict) else None
    if allow is None:
        return {}
    if not isinstance(allow, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in allow.items()):
        raise UsageError(f"{path}: \"safety\": {{\"allow\": ...}} must map module.name to a reason")
    return dict(allow)


def record_in_lock(path: Path, allow: dict[str, str]) -> None:
    """Add names to the lock's safety block, keeping the lock's own layout (one file per line)."""
    from hfcache.verify import lockfile

    text = Path(path).read_text(encoding="utf-8")
    lock = lockfile.loads(text, str(path))
    merged = {**from_lock(path), **allow}
    body = lockfile.dumps(lock)
    block = json.dumps({"allow": dict(sorted(merged.items()))}, sort_keys=True)
    tail = f'  "version": {lockfile.LOCK_VERSION}\n}}\n'
    assert body.endswith(tail)
    new = body[: -len(tail)] + f'  "safety": {block},\n' + tail
    tmp = Path(path).with_name(f".{Path(path).name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(new, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write lock file {path}: {e.strerror or e}") from None


def build_policy(allow: Sequence[str] = (), lock: Path | None = None) -> Policy:
    """The policy for a run: the built-in allow list, the lock's allowances, the command line's."""
    given = parse_allow(allow)
    if lock is not None and given:
        missing = [n for n, r in given.items() if not r]
        if missing:
            raise UsageError(f"--allow {missing[0]}: with --lock, give a reason to keep in the lock file "
                             f"(--allow '{missing[0]}=why it is benign')")
    reasons = {**(from_lock(lock) if lock is not None else {}), **given}
    result = policy(reasons, reasons)
    if lock is not None and given:
        record_in_lock(lock, given)
    return result
