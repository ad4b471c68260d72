"""`hfcache serve`: a Hub-compatible server (Starlette on uvicorn) over a cache and plain folders."""
