"""The Xet path of one fetch run: which files take it, their CAS sessions, the chunk index, the publishing.

A file takes it when its listing names a Xet hash and HF_HUB_DISABLE_XET is unset (huggingface_hub's rule). The
token route is the one huggingface_hub builds from a tree listing (`/api/{type}s/{repo}/xet-read-token/{commit}`);
when the endpoint has none (an older server, `hfcache serve`, a mirror), the repo's files go the plain HTTP way
as before, and so does every later file of that repo in this run.
"""

from __future__ import annotations

import threading
from pathlib import Path

from hfcache.cache.layout import HubCache, RepoRef
from hfcache.cache.meta import FileMeta
from hfcache.errors import IntegrityError
from hfcache.fetch.transfer import OnBytes, Transfer
from hfcache.xet import store
from hfcache.xet.cas import CasSession, NoXet
from hfcache.xet.download import XetOutcome, rebuild
from hfcache.xet.index import ChunkIndex, read_rows


def xet_enabled() -> bool:
    from huggingface_hub import constants

    return not constants.HF_HUB_DISABLE_XET


def token_url(endpoint: str, repo: RepoRef, revision: str) -> str:
    return f"{endpoint.rstrip('/')}/api/{repo.repo_type}s/{repo.repo_id}/xet-read-token/{revision}"


class XetPath:
    def __init__(self, cache: HubCache, transfer: Transfer) -> None:
        self.cache, self.transfer = cache, transfer
        self.index = ChunkIndex(cache.xet_index_path())
        self._sessions: dict[tuple[RepoRef, str], CasSession] = {}
        self._no_xet: set[tuple[RepoRef, str]] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        self.index.close()

    def session(self, repo: RepoRef, commit: str) -> CasSession:
        with self._lock:
            s = self._sessions.get((repo, commit))
            if s is None:
                url = token_url(self.transfer.client.endpoint, repo, commit)
                s = self._sessions[(repo, commit)] = CasSession(self.transfer, url)
            return s

    def link_existing(self, blob: Path, meta: FileMeta) -> bool:
        return meta.xet_hash is not None and xet_enabled() and store.link_existing(self.cache, blob, meta)

    def fetch(self, repo: RepoRef, commit: str, meta: FileMeta, on_bytes: OnBytes | None = None) -> XetOutcome | None:
        """Rebuild, check and publish `blobs/<sha256>`; None when this file must take the HTTP path. The caller
        holds the blob's lock."""
        key = (repo, commit)
        if meta.xet_hash is None or meta.lfs_sha256 is None or not xet_enabled() or key in self._no_xet:
            return None
        paths = self.cache.xet_partial_paths(repo, meta.etag)
        session = self.session(repo, commit)
        for attempt in range(2):  # corruption in transit may be transient: once more from what was checked
            try:
                outcome = rebuild(session, self.index, paths, meta, on_bytes)
                break
            except NoXet:
                self._no_xet.add(key)
                return None
            except IntegrityError:
                if attempt:
                    raise
        final = store.publish(self.cache, paths, meta)
        self.index.add_file(final, meta.xet_hash, read_rows(paths.record))
        paths.record.unlink(missing_ok=True)
        return outcome
