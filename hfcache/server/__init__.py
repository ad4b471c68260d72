"""`hfcache serve`: a Hub-compatible server (Starlette on uvicorn) over a cache and plain folders.

- `catalog`: `Catalog`, what is served: repos read from a hub cache or built from folders.
- `app`: `HubApp`, the Hub's HTTP API over a catalog (revision info, tree listings, resolve with ranges).
- `folders`: `add_folder_specs`, `--repo TYPE:ID[@REV]=FOLDER` parsing.
- `run`: `serve_forever`, uvicorn with a ready line.
- `wire`: Hub-shaped error answers, ASCII-safe headers, `Range` parsing (RFC 9110).
- `accesslog`: one line per request, written from a thread (a stalled reader never blocks the server).
- `faults`: the misbehaviours a test server can be told to show (reset, short body, wrong bytes, 429, ...).
"""
