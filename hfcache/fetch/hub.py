"""The Hub client: which commit a revision names, which files a commit holds, and where their bytes live.

Metadata goes through `huggingface_hub.HfApi` (endpoint, token, user agent and error codes handled as users
expect); its exceptions become hfcache's one-line errors here, and nowhere else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from urllib.parse import quote, urlsplit

from hfcache.cache.layout import RepoRef, is_commit, safe_relpath
from hfcache.cache.meta import FileMeta
from hfcache.errors import (
    AuthError,
    EndpointError,
    EntryNotFound,
    OfflineCacheMiss,
    RepoNotFound,
    RevisionNotFound,
    UnsafePath,
)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def same_origin(a: str, b: str) -> bool:
    """Scheme, host and port all equal: the only case where a token may follow a URL."""
    return _origin(a) == _origin(b)


class HubClient:
    """Talks to one endpoint (`HF_ENDPOINT` by default) with one token (`HF_TOKEN` or the stored one)."""

    def __init__(self, endpoint: str | None = None, token: str | bool | None = None,
                 headers: dict[str, str] | None = None) -> None:
        from huggingface_hub import constants  # light; HfApi (0.3 s of imports) waits for the first API call

        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        self.token = token
        self._api = None
        # `headers`: the Hub headers another HubClient built for the same endpoint and token (a fan-out worker
        # gets its parent's, so it never imports huggingface_hub's HTTP helpers only to build them again)
        self._headers: dict[str, str] | None = dict(headers) if headers is not None else None
        self._reached = False
        # huggingface_hub's API calls wait forever by default: a server that accepts and never answers would
        # hang every command. The first call (which every listing follows) waits this long, as for a HEAD.
        self.timeout = float(constants.HF_HUB_ETAG_TIMEOUT)

    @property
    def api(self):
        """`huggingface_hub.HfApi`, made on first use: transfers alone (a fan-out worker) never need it."""
        if self._api is None:
            from huggingface_hub import HfApi

            self._api = HfApi(endpoint=self.endpoint, token=self.token)
        return self._api

    # -- metadata ----------------------------------------------------------------------------------------------
    def resolve_revision(self, repo: RepoRef, revision: str) -> str:
        """The commit a branch, tag or `refs/pr/N` points to; a full commit sha is returned as is."""
        if is_commit(revision):
            return revision
        info = self._info(repo, revision)
        if not info.sha or not is_commit(info.sha):
            raise EndpointError(f"{self.endpoint} did not say which commit {revision!r} of {repo} is")
        return info.sha

    def _info(self, repo: RepoRef, revision: str):
        """`repo_info`, bounded by `self.timeout`; a success shows the endpoint answers."""
        with self._errors(repo, revision):
            info = self.api.repo_info(repo.repo_id, revision=revision, repo_type=repo.repo_type, timeout=self.timeout)
        self._reached = True
        return info

    def _reach(self, repo: RepoRef, revision: str) -> None:
        """One plain request before the first listing: huggingface_hub retries a refused connection for ~25 s
        inside listings (with a warning per try), where a user wants one line at once."""
        if not self._reached:
            self._info(repo, revision)

    def list_files(self, repo: RepoRef, commit: str) -> dict[str, FileMeta]:
        """Every file at a commit (recursive tree listing, paginated by the library)."""
        self._reach(repo, commit)
        with self._errors(repo, commit):
            entries = list(self.api.list_repo_tree(repo.repo_id, revision=commit, repo_type=repo.repo_type,
                                                    recursive=True))
        return self._to_meta(entries, f"{self.endpoint}'s listing of {repo}@{commit[:12]}")

    def paths_info(self, repo: RepoRef, commit: str, paths: Iterable[str]) -> dict[str, FileMeta]:
        """Metadata for a few files without listing the whole repo; missing paths are simply absent."""
        self._reach(repo, commit)
        with self._errors(repo, commit):
            entries = self.api.get_paths_info(repo.repo_id, list(paths), revision=commit,
                                              repo_type=repo.repo_type)
        return self._to_meta(entries, f"{self.endpoint}'s file info for {repo}@{commit[:12]}")

    @staticmethod
    def _to_meta(entries: Iterable[object], source: str) -> dict[str, FileMeta]:
        """Each name a server gives is checked here, before any path is made from it: a listing naming
        `../../models--other--private/blobs/f` or `.` as a blob, or `../x` as a file, is refused whole."""
        from huggingface_hub.hf_api import RepoFile

        files: dict[str, FileMeta] = {}
        for e in entries:
            if not isinstance(e, RepoFile):
                continue
            try:
                path = safe_relpath(e.path)
                if path in files:
                    raise UnsafePath(f"{path!r} is named twice")
                files[path] = FileMeta.checked(
                    size=e.size,
                    blob_id=e.blob_id,
                    lfs_sha256=e.lfs.sha256 if e.lfs is not None else None,
                    lfs_size=e.lfs.size if e.lfs is not None else None,
                    xet_hash=e.xet_hash,
                )
            except UnsafePath as err:
                raise UnsafePath(f"{source}: {err}; nothing was fetched") from None
        return files

    # -- transfers ---------------------------------------------------------------------------------------------
    def resolve_url(self, repo: RepoRef, commit: str, filename: str) -> str:
        """`hf_hub_url(...)` with this endpoint, built here: importing `huggingface_hub.file_download` for it
        costs 0.15 s of CPU per process (tests/test_compat* compare the two)."""
        from huggingface_hub import constants

        prefix = constants.REPO_TYPES_URL_PREFIXES.get(repo.repo_type, "")
        return f"{self.endpoint}/{prefix}{repo.repo_id}/resolve/{quote(commit, safe='')}/{quote(filename)}"

    def hub_headers(self) -> dict[str, str]:
        """Hub headers (user agent, token) for the endpoint's own origin, built once."""
        if self._headers is None:
            from huggingface_hub.utils import build_hf_headers

            self._headers = build_hf_headers(token=self.token, library_name="hfcache")
        return dict(self._headers)

    def headers_for(self, url: str) -> dict[str, str]:
        """Hub headers (user agent, token); the token only for the endpoint's own origin, never a CDN."""
        headers = self.hub_headers()
        if not url.startswith(self.endpoint + "/") and not same_origin(url, self.endpoint):
            headers.pop("authorization", None)
            headers.pop("Authorization", None)
        return headers

    # -- errors ------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, repo: RepoRef, revision: str) -> Iterator[None]:
        import httpx2
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            OfflineModeIsEnabled,
            RemoteEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            yield
        except GatedRepoError:
            raise AuthError(f"{repo} is gated on {self.endpoint}: accept its terms and set HF_TOKEN") from None
        except RepositoryNotFoundError as e:
            status = e.response.status_code if e.response is not None else 404
            if status == 401:
                raise AuthError(f"{repo} not found on {self.endpoint}, or it is private and the token "
                                "was refused (HTTP 401)") from None
            raise RepoNotFound(f"repository {repo} not found on {self.endpoint}") from None
        except RevisionNotFoundError:
            raise RevisionNotFound(f"revision {revision!r} not found in {repo}") from None
        except RemoteEntryNotFoundError:
            raise EntryNotFound(f"entry not found in {repo} at {revision!r}") from None
        except OfflineModeIsEnabled:
            raise OfflineCacheMiss("offline mode is on (HF_HUB_OFFLINE=1)") from None
        except HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else 0
            if status in (401, 403):
                raise AuthError(f"{self.endpoint} refused access to {repo} (HTTP {status}): "
                                "check HF_TOKEN") from None
            raise EndpointError(f"{self.endpoint} answered HTTP {status} for {repo}") from None
        except (httpx2.TransportError, OSError) as e:
            raise EndpointError(f"cannot reach {self.endpoint}: {type(e).__name__}: {e}") from None
        except ValueError as e:
            raise EndpointError(f"{self.endpoint} sent an answer hfcache cannot read: {e}") from None
