"""The progress callbacks every long task reports through (fetch, verify, import, export).

The work calls them; a renderer implements them (a rich bar on a terminal). The default does nothing, which is
what library callers want.
"""

from __future__ import annotations


class Progress:
    """Callbacks the renderer implements; the default does nothing."""

    def start(self, files: int, total_bytes: int) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def file_done(self, path: str, size: int, fetched: bool) -> None: ...
    def waiting(self, path: str) -> None:
        """The file's lock is held by another process (downloading it): this one waits for it."""
