"""Fetching: the one path by which bytes enter a cache (Xet files through `hfcache.xet`, on this engine).

- `fetcher`: `Fetcher.download` and `Fetcher.snapshot` (online and offline), returning typed results.
- `hub`: `HubClient`, the Hub API client (revision, listing, paths-info; answers checked as hostile, errors as
  hfcache's one-line errors); `hubapi`: those calls on the wire, as `HfApi` sends them, without importing it;
  `hubheaders`: `build_hf_headers` ported (user agent, token); `patterns`: `filter_repo_objects` ported.
- `transfer`: the transfer engine: pooled connections, ranged parts hashed in order as they arrive, retries,
  checked atomic blob writes.
- `inorder`: `OrderedHash`, one hash over parts that arrive out of order, fed in order.
- `conn`: lean kept-alive `http.client` connections for transfers (no proxy or client certificate involved).
- `adaptive`: how many requests to keep in flight, from the answer latency (a gate whose limit follows it, and
  `run_elastic`, the fetch threads whose number follows it).
- `space`: a full disk in one line (a file that cannot fit refused before it is written).
- `ranges`: byte ranges into memory through the same engine and rules (the Xet path's reconstructions and xorbs).
- `fanout`: many small files shared by worker processes, all taking from one queue (`Cursor`; `Workers`, the
  parent's side); `worker`: one worker process (`python -m hfcache.fetch.worker`).
"""
