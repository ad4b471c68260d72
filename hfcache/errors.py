"""One exception family. Every message is the one line the CLI prints; callers catch `HfcacheError`."""

from __future__ import annotations


class HfcacheError(Exception):
    """Base class. `exit_code` is what the CLI exits with."""

    exit_code = 1


class UsageError(HfcacheError):
    """Bad arguments or environment: exit status 2, as for any usage error."""

    exit_code = 2


class RepoNotFound(HfcacheError):
    pass


class RevisionNotFound(HfcacheError):
    pass


class EntryNotFound(HfcacheError):
    pass


class AuthError(HfcacheError):
    pass


class EndpointError(HfcacheError):
    """The endpoint could not be reached or answered something unusable."""


class OfflineCacheMiss(HfcacheError):
    """Offline mode is on and the cache cannot answer."""


class IntegrityError(HfcacheError):
    """Downloaded or stored bytes do not match the hash they must have."""


class DiskFull(HfcacheError):
    """No space left (or quota exceeded) for a file: the message names it, the bytes it needs and those free."""


class LockContradicted(HfcacheError):
    """A lock pins files the endpoint's listing of the pinned commit names otherwise: nothing was fetched."""


class UnsafePath(HfcacheError):
    """A file name from a server or a bundle would escape the folder it belongs in."""


class BundleError(HfcacheError):
    """A bundle that cannot be read, or whose manifest does not hold together: nothing is imported from it."""


class SpecError(UsageError):
    """A spec on the command line that cannot be read (REPO[:CONFIG], TYPE:REPO, URL, data_files=...)."""


class SourceMissing(HfcacheError):
    """What a well-formed spec names is not there: no such snapshot, config, module script, or URL in a script."""


class ScriptError(HfcacheError):
    """A dataset or metric script that cannot be read or installed as the libraries would."""


class BuildError(HfcacheError):
    """The `datasets` library could not prepare a dataset from the files it was given."""
