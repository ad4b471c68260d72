"""Fetching: the one path by which bytes enter a cache (Xet files through `hfcache.xet`, on this engine).

- `fetcher`: `Fetcher.download` and `Fetcher.snapshot` (online and offline), returning typed results.
- `hub`: `HubClient`, the Hub API client (metadata through `HfApi`; its errors become hfcache's one-line errors).
- `transfer`: the transfer engine: pooled connections, ranged parts, retries, checked atomic blob writes.
- `ranges`: byte ranges into memory through the same engine and rules (the Xet path's reconstructions and xorbs).
- `fanout`: many small files shared by worker processes (`Workers`, the parent's side); `worker`: one worker
  process (`python -m hfcache.fetch.worker`).
"""
