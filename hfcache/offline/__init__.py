"""Make datasets, metrics and module scripts resolve offline, by writing what the libraries look for.

The libraries' offline fallbacks are exact but unforgiving: a file under `sha256(url)` in a downloads folder, a
prepared Arrow folder named by config and commit, a module folder named by a hash of the script. Each module
here writes one of those (`urls`, `materialize`, `modules`) or checks them (`doctor`); `env` says where they go.
"""
