"""`hfcache serve --upstream`: a pull-through Hub mirror whose store is a standard hub cache.

- `upstream`: `Upstream`, what the upstream Hub says (branch -> commit with a time to live, stale on error; a
  commit's listing, kept in `trees/`), and how its failures become 502/503/504 (`gateway_status`).
- `access`: `Access`, who may read a repo: the mirror's `--token`, and for a gated or private upstream repo the
  client's own token, asked upstream and remembered briefly.
- `flight`: `Flights`, one fetch per blob however many clients and mirror processes ask (the blob's lock), through
  `hfcache.fetch.transfer`; a process that dies is taken over.
- `follow`: a client's body streamed from a blob being fetched, hashed on the way, its last byte held back until
  the hash is right.
- `app`: `MirrorApp`, the Hub's routes over all that (reusing `hfcache.server` for wire formats).
- `nginx`: the nginx configuration `hfcache serve --nginx-conf` prints (X-Accel-Redirect to the store).
"""
