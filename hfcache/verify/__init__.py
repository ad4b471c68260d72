"""Verify: prove a cache intact, offline, against the Hub or against a lock file; repair what is not.

- `check`: `verify()` returns a `VerifyReport` (structure, content hashes, online listing, lock pins); its parts:
  `plan` (what each file must hash to, from its name, `trees/`, the Hub, the lock), `content` (each file read once,
  in threads), `report` (`Problem`, `VerifyReport`).
- `lockfile`: `pin`, `read`, `write`, `fetch`: the lock file that pins commits, sizes and hashes.
- `repair`: `repair()` fetches damaged or missing files again.
- `workflow`: `verify_and_repair()` (check, repair, check again) and `snapshot_locked()` (`snapshot --lock`).
"""
