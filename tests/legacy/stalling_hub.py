"""A Hub for the legacy tests, run by hfcache's own interpreter (HFCACHE_PYTHON): serves FOLDER as `org/big`, and
the first download of a file whose path contains MATCH stalls after AFTER bytes (for as long as the test needs
to kill the client). Prints its URL, then serves until killed.

    python stalling_hub.py FOLDER MATCH AFTER
"""

from __future__ import annotations

import sys
from pathlib import Path

from hfcache.cache.layout import RepoRef
from hfcache.server.app import HubApp
from hfcache.server.catalog import Catalog
from hfcache.server.faults import Fault
from hfcache.server.run import serve_forever


def main() -> None:
    folder, match, after = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    catalog = Catalog()
    catalog.add_folder(RepoRef("org/big"), folder, "main")
    app = HubApp(catalog)
    app.faults.add(Fault("stall", match, after=after, seconds=3600))
    serve_forever(app, "127.0.0.1", 0, lambda url: print(url, flush=True))


if __name__ == "__main__":
    main()
