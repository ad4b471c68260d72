"""safetensors headers checked on the endpoint before a download: two range requests per file (the 8-byte length,
then the header), so a malformed file is refused before its tensors cross the network.

The full check still runs on the downloaded bytes: this is an early refusal, not a substitute. Files are picked by
name here (a listing holds no bytes yet); any file, whatever its name, is checked by its bytes after the download.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hfcache.cache.layout import FileMeta, RepoRef
from hfcache.errors import EndpointError
from hfcache.safety.policy import Policy
from hfcache.safety.result import FileVerdict, Outcome
from hfcache.safety.tensors import header_length

TIMEOUT = 30.0


@dataclass(frozen=True)
class RemoteHeader:
    path: str
    verdict: FileVerdict
    requests: int


def _range(url: str, headers: dict[str, str], start: int, length: int) -> bytes:
    import requests

    try:
        r = requests.get(url, headers={**headers, "Range": f"bytes={start}-{start + length - 1}"}, timeout=TIMEOUT,
                         allow_redirects=True)  # requests drops Authorization when a redirect leaves the host
    except requests.RequestException as e:
        raise EndpointError(f"cannot read {url}: {type(e).__name__}") from None
    if r.status_code not in (200, 206):
        raise EndpointError(f"{url}: HTTP {r.status_code} for a range request")
    body = r.content
    if r.status_code == 200:  # a server that ignores Range: the slice asked for (small: a header)
        body = body[start:start + length]
    return body


def check_remote_headers(client, repo: RepoRef, commit: str, files: Mapping[str, FileMeta],
                         policy: Policy | None = None) -> list[RemoteHeader]:
    """Each `.safetensors` of `files` (a listing at `commit`), its header read with two range requests."""
    from hfcache.safety.tensors import check_header

    out = []
    for path, meta in sorted(files.items()):
        if not path.endswith(".safetensors"):
            continue
        url = client.resolve_url(repo, commit, path)
        headers = client.headers_for(url)
        result = Outcome("safetensors", policy or Policy())
        n = header_length(_range(url, headers, 0, 8) if meta.size >= 8 else b"", meta.size)
        requests = 1
        if isinstance(n, str):
            result.flag("unsafe", f"safetensors {n}")
        else:
            check_header(_range(url, headers, 8, n) if n else b"", meta.size, result)
            requests += 1
        out.append(RemoteHeader(path, result.freeze(), requests))
    return out
