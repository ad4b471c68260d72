"""Error answers: hfcache's own API calls give the one-line errors `HubClient` gave when it went through `HfApi`.

For each answer in the table a stub server answers it; huggingface_hub's `HfApi` meets it and raises its
exception (the oracle: its class is asserted), `OLD_MAPPING` (the `_errors` of hub.py before, kept here verbatim)
turns that exception into the hfcache error users saw; hfcache's client, meeting the same answer, must raise
exactly that error. The same table runs in-process on https URLs through `hf_raise_for_status` itself (a 401 on an
https repo URL means "not found or private" there, on http not).
"""

from __future__ import annotations

import functools
import socket

import pytest

from hfcache.cache.layout import RepoRef
from hfcache.errors import (
    AuthError,
    EndpointError,
    EntryNotFound,
    OfflineCacheMiss,
    RepoNotFound,
    RevisionNotFound,
)
from hfcache.fetch import hubapi
from hfcache.fetch.hub import HubClient
from tests.stubhub import StubHub

C = "a" * 40
REPO = RepoRef("org/m")
DISABLED = "Access to this resource is disabled."

# name -> (status, headers, huggingface_hub's exception class)
TABLE = {
    "repo-not-found": (404, {"X-Error-Code": "RepoNotFound"}, "RepositoryNotFoundError"),
    "repo-not-found-401": (401, {"X-Error-Code": "RepoNotFound"}, "RepositoryNotFoundError"),
    "401-no-code": (401, {}, "HfHubHTTPError"),  # on http; on https: RepositoryNotFoundError (see below)
    "401-invalid-credentials": (401, {"X-Error-Message": "Invalid credentials in Authorization header"},
                                "HfHubHTTPError"),
    "gated": (403, {"X-Error-Code": "GatedRepo"}, "GatedRepoError"),
    "gated-401": (401, {"X-Error-Code": "GatedRepo"}, "GatedRepoError"),
    "revision-not-found": (404, {"X-Error-Code": "RevisionNotFound"}, "RevisionNotFoundError"),
    "entry-not-found": (404, {"X-Error-Code": "EntryNotFound"}, "RemoteEntryNotFoundError"),
    "forbidden": (403, {}, "HfHubHTTPError"),
    "disabled": (403, {"X-Error-Message": DISABLED}, "DisabledRepoError"),
    "disabled-not-found": (404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": DISABLED}, "DisabledRepoError"),
    "404-no-code": (404, {}, "HfHubHTTPError"),
    "bad-request": (400, {}, "BadRequestError"),
    "teapot": (418, {}, "HfHubHTTPError"),
    "too-many-requests": (429, {"Retry-After": "0"}, "HfHubHTTPError"),
    "server-error": (500, {}, "HfHubHTTPError"),
    "unavailable": (503, {}, "HfHubHTTPError"),
}
RETRIED = {429, 500, 502, 503, 504}  # listing pages retry these (in both clients): not asked of the tree here


def OLD_MAPPING(e: BaseException, endpoint: str, repo: RepoRef, revision: str) -> Exception:
    """`HubClient._errors` as it was (huggingface_hub's exception -> hfcache's error), verbatim."""
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
        raise e
    except GatedRepoError:
        return AuthError(f"{repo} is gated on {endpoint}: accept its terms and set HF_TOKEN")
    except RepositoryNotFoundError as e:
        status = e.response.status_code if e.response is not None else 404
        if status == 401:
            return AuthError(f"{repo} not found on {endpoint}, or it is private and the token "
                             "was refused (HTTP 401)")
        return RepoNotFound(f"repository {repo} not found on {endpoint}")
    except RevisionNotFoundError:
        return RevisionNotFound(f"revision {revision!r} not found in {repo}")
    except RemoteEntryNotFoundError:
        return EntryNotFound(f"entry not found in {repo} at {revision!r}")
    except OfflineModeIsEnabled:
        return OfflineCacheMiss("offline mode is on (HF_HUB_OFFLINE=1)")
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else 0
        if status in (401, 403):
            return AuthError(f"{endpoint} refused access to {repo} (HTTP {status}): check HF_TOKEN")
        return EndpointError(f"{endpoint} answered HTTP {status} for {repo}")
    except (httpx2.TransportError, OSError) as e:
        return EndpointError(f"cannot reach {endpoint}: {type(e).__name__}: {e}")
    except ValueError as e:
        return EndpointError(f"{endpoint} sent an answer hfcache cannot read: {e}")


def _raised(call) -> BaseException:
    try:
        call()
    except Exception as e:  # noqa: BLE001 - the oracle's exception, whatever it is, is what is compared
        return e
    raise AssertionError("no error raised")


def _same(ours: BaseException, expected: Exception) -> None:
    assert (type(ours), str(ours)) == (type(expected), str(expected))


@pytest.mark.parametrize("case", list(TABLE))
def test_an_error_answer_is_the_error_hfapi_led_to(case):
    from huggingface_hub import HfApi

    status, headers, hf_class = TABLE[case]
    with StubHub(lambda r: (status, headers, b'{"error": "stub"}')) as hub:
        api = HfApi(endpoint=hub.url, token=False)
        calls = {  # what HfApi does, what hfcache does, revision named
            "info": (lambda: api.repo_info("org/m", revision="main", timeout=10),
                     lambda c: c.resolve_revision(REPO, "main"), "main"),
            "paths-info": (lambda: api.get_paths_info("org/m", ["x"], revision=C),
                           lambda c: c.paths_info(REPO, C, ["x"]), C),
        }
        if status not in RETRIED:
            calls["tree"] = (lambda: list(api.list_repo_tree("org/m", revision=C, recursive=True)),
                             lambda c: c.list_files(REPO, C), C)
        for name, (theirs, ours, revision) in calls.items():
            hf_error = _raised(theirs)
            assert type(hf_error).__name__ == hf_class, (name, hf_error)
            client = HubClient(hub.url, token=False)
            client._reached = True  # the call itself, not the repo info before a listing
            _same(_raised(functools.partial(ours, client)), OLD_MAPPING(hf_error, hub.url, REPO, revision))


@pytest.mark.parametrize("url", ["https://hub.example/api/models/org/m/revision/main",
                                 "https://hub.example/api/datasets/org/m/tree/main?recursive=true&expand=false",
                                 "https://hub.example/api/kernels/org/m/revision/main",
                                 "http://hub.example/api/models/org/m/revision/main"])
@pytest.mark.parametrize("case", list(TABLE))
def test_the_mapping_follows_hf_raise_for_status_on_every_url(case, url):
    """In-process, on URLs a local server cannot have (https): `hf_raise_for_status` names the answer."""
    import httpx2
    from huggingface_hub.utils import hf_raise_for_status

    status, headers, _ = TABLE[case]
    response = httpx2.Response(status, headers=headers, content=b"{}", request=httpx2.Request("GET", url))
    expected = OLD_MAPPING(_raised(lambda: hf_raise_for_status(response)), "E", REPO, "main")
    answer = hubapi.Answer(status, {k.lower(): v for k, v in headers.items()}, url)
    _same(hubapi.status_error(answer, "E", str(REPO), "main"), expected)


def test_401_on_an_https_repo_url_is_not_found_or_private():
    answer = hubapi.Answer(401, {}, "https://hub.example/api/models/org/m/revision/main")
    assert "or it is private" in str(hubapi.status_error(answer, "E", "org/m", "main"))
    answer = hubapi.Answer(401, {}, "http://hub.example/api/models/org/m/revision/main")
    assert "refused access" in str(hubapi.status_error(answer, "E", "org/m", "main"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_and_a_silent_server_are_cannot_reach():
    from huggingface_hub import HfApi

    url = f"http://127.0.0.1:{_free_port()}"
    hf_error = _raised(lambda: HfApi(endpoint=url, token=False).repo_info("org/m", revision="main", timeout=5))
    assert type(hf_error).__name__ == "ConnectError"
    ours = _raised(lambda: HubClient(url, token=False).resolve_revision(REPO, "main"))
    assert isinstance(ours, EndpointError) and str(ours).startswith(f"cannot reach {url}: ")
    assert str(OLD_MAPPING(hf_error, url, REPO, "main")).startswith(f"cannot reach {url}: ")
    assert "Connection refused" in str(ours)

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts; nobody answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        hf_error = _raised(lambda: HfApi(endpoint=url, token=False).repo_info("org/m", revision="main", timeout=1))
        assert type(hf_error).__name__ == "ReadTimeout"
        client = HubClient(url, token=False)
        client.timeout = 1.0
        ours = _raised(lambda: client.resolve_revision(REPO, "main"))
    assert isinstance(ours, EndpointError) and str(ours) == f"cannot reach {url}: TimeoutError: timed out"


@pytest.mark.parametrize("body", [b"nope", b'{"sha": ', b"\xff\xfe"])
def test_an_unreadable_answer_is_the_same_line(body):
    from huggingface_hub import HfApi

    with StubHub(lambda r: (200, {"Content-Type": "application/json"}, body)) as hub:
        hf_error = _raised(lambda: HfApi(endpoint=hub.url, token=False).repo_info("org/m", revision="main"))
        assert isinstance(hf_error, ValueError)
        ours = _raised(lambda: HubClient(hub.url, token=False).resolve_revision(REPO, "main"))
    expected = OLD_MAPPING(hf_error, hub.url, REPO, "main")
    assert type(ours) is EndpointError and str(ours).split(": ")[0] == str(expected).split(": ")[0]
    if body == b"nope":
        _same(ours, expected)


def test_offline_asks_nothing(monkeypatch):
    from huggingface_hub import HfApi, constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with StubHub(lambda r: (200, {}, b"{}")) as hub:
        hf_error = _raised(lambda: HfApi(endpoint=hub.url, token=False).repo_info("org/m", revision="main"))
        assert type(hf_error).__name__ == "OfflineModeIsEnabled"
        client = HubClient(hub.url, token=False)
        for call in (lambda: client.resolve_revision(REPO, "main"), lambda: client.list_files(REPO, C),
                     lambda: client.paths_info(REPO, C, ["x"])):
            _same(_raised(call), OLD_MAPPING(hf_error, hub.url, REPO, "main"))
        assert hub.log == []
