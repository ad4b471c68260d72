"""Make datasets, metrics and module scripts resolve offline, by writing what the libraries look for.

The libraries' offline fallbacks are exact but unforgiving: a file under `sha256(url)` in a downloads folder, a
prepared Arrow folder named by config and commit, a module folder named by a hash of the script. Each module
here writes one of those or checks them; `env` says where they go.

- `urls`: `map_url` (a file under the name `datasets`/`evaluate` compute for its URL); `script_urls`: the URLs a
  script downloads.
- `materialize`: `materialize` (the prepared Arrow folder, built by `datasets`' own builder).
- `modules`: `install` (a dataset/metric script where each library version looks for it).
- `doctor`: `diagnose` (will it resolve offline here, and why not).
- `bundle_roles`: the offline-cache files a bundle carries and where each may go; `folders`: one swap-in of a
  built folder.
"""
