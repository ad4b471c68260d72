"""hfcache's Hub API calls (`hubapi`, `HubClient`) send what huggingface_hub's `HfApi` sends, and read what comes
back as hostile.

One stub server records the requests of both clients doing the same work (repo info, the recursive tree in two
pages, paths-info): same methods, paths, queries, form bodies and token. Then: a `Link` to another origin gets
no token, a listing that pages forever is stopped, a page answering 503 is retried as `http_backoff` retries it,
and every malformed answer (not JSON, wrong shapes, wrong types, too large, a gzip bomb) is one EndpointError.
"""

from __future__ import annotations

import gzip
import json
from urllib.parse import parse_qs, urlsplit

import pytest

from hfcache.cache.layout import RepoRef
from hfcache.errors import EndpointError, UnsafePath
from hfcache.fetch import hub as hubmod
from hfcache.fetch import hubapi
from hfcache.fetch.hub import HubClient
from tests.stubhub import Req, StubHub, json_reply

C = "a" * 40
TOKEN = "hf_stub_token_0123"
FILES = [
    {"type": "file", "path": "config.json", "size": 3, "oid": "b" * 40},
    {"type": "directory", "path": "d", "oid": "c" * 40},
    {"type": "file", "path": "d/w.bin", "size": 10, "oid": "d" * 40,
     "lfs": {"oid": "e" * 64, "size": 10, "pointerSize": 130}, "xetHash": "f" * 64},
]
PATHS = ["config.json", "d/a b.txt", "é/x+y&z=1.txt"]


def _next(req: Req, host: str | None = None, scheme: str = "http") -> str:
    path = urlsplit(req.target).path
    return f'<{scheme}://{host or req.host}{path}?recursive=true&expand=false&cursor=1>; rel="next"'


def repo_answer(req: Req, next_host: str | None = None, scheme: str = "http"):
    """A small repo: its info, its tree in two pages, paths-info."""
    parts = urlsplit(req.target)
    if "/revision/" in parts.path:
        return json_reply({"id": "org/m", "sha": C, "siblings": []})
    if "/tree/" in parts.path:
        if "cursor" not in parse_qs(parts.query):
            return json_reply(FILES[:2], headers={"Link": _next(req, next_host, scheme)})
        return json_reply(FILES[2:])
    if "/paths-info/" in parts.path:
        return json_reply(FILES[:1])
    return 404, {}, b""


def _wire(log: list[Req]) -> list[tuple]:
    return [(r.method, r.target, r.body, r.headers.get("content-type"), r.headers.get("authorization"))
            for r in log]


def _hf_calls(url: str, repo_type: str, revision: str) -> None:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=url, token=TOKEN)
    api.repo_info("org/m", revision=revision, repo_type=repo_type, timeout=10)
    list(api.list_repo_tree("org/m", revision=C, repo_type=repo_type, recursive=True))
    api.get_paths_info("org/m", PATHS, revision=C, repo_type=repo_type)


def _our_calls(url: str, repo_type: str, revision: str) -> dict:
    client, repo = HubClient(url, token=TOKEN), RepoRef("org/m", repo_type)
    assert client.resolve_revision(repo, revision) == C
    files = client.list_files(repo, C)
    client.paths_info(repo, C, PATHS)
    return files


@pytest.mark.parametrize(("repo_type", "revision"), [("model", "main"), ("dataset", "refs/pr/1"),
                                                     ("space", "v1.0 é"), ("kernel", "main")])
def test_the_same_requests_as_hfapi(repo_type, revision):
    with StubHub(repo_answer) as hub:
        _hf_calls(hub.url, repo_type, revision)
        theirs = _wire(hub.log)
        hub.log.clear()
        files = _our_calls(hub.url, repo_type, revision)
        ours = _wire(hub.log)
        ua = hub.log[0].headers["user-agent"]
    assert [r[0] for r in ours] == ["GET", "GET", "GET", "POST"]
    assert ours == theirs
    assert ours[3][2].startswith(b"paths=config.json&paths=d%2Fa+b.txt&") and ours[1][1].endswith(
        "?recursive=true&expand=false")
    assert sorted(files) == ["config.json", "d/w.bin"]  # the folder entry is no file
    w = files["d/w.bin"]
    assert (w.size, w.blob_id, w.lfs_sha256, w.lfs_size, w.xet_hash) == (10, "d" * 40, "e" * 64, 10, "f" * 64)
    from huggingface_hub.utils import build_hf_headers

    from hfcache import __version__

    assert ua == build_hf_headers(token=TOKEN, library_name="hfcache", library_version=__version__)["user-agent"]


def test_a_next_page_on_another_origin_gets_no_token():
    """huggingface_hub sends the token to whatever `Link: rel="next"` names; hfcache only to its endpoint."""
    with StubHub(lambda r: repo_answer(r, next_host=f"localhost:{hub.port}")) as hub:
        files = HubClient(hub.url, token=TOKEN).list_files(RepoRef("org/m"), C)
        log = list(hub.log)
    assert sorted(files) == ["config.json", "d/w.bin"]
    assert [(r.host.split(":")[0], r.headers.get("authorization")) for r in log] == [
        ("127.0.0.1", f"Bearer {TOKEN}"), ("127.0.0.1", f"Bearer {TOKEN}"), ("localhost", None)]


def test_a_redirect_keeps_the_token_on_its_origin_only():
    def answer(req: Req):
        if req.target.startswith("/api/models/old/m/"):
            return 307, {"Location": req.target.replace("/old/m/", "/org/m/")}, b""
        if "/revision/" in req.target and req.host.startswith("127."):
            return 302, {"Location": f"http://localhost:{hub.port}{req.target}"}, b""
        return repo_answer(req)

    with StubHub(answer) as hub:
        assert HubClient(hub.url, token=TOKEN).resolve_revision(RepoRef("old/m"), "main") == C
        log = list(hub.log)
    assert [(r.host.split(":")[0], r.target.split("/")[3], r.headers.get("authorization")) for r in log] == [
        ("127.0.0.1", "old", f"Bearer {TOKEN}"), ("127.0.0.1", "org", f"Bearer {TOKEN}"), ("localhost", "org", None)]


def test_a_listing_that_pages_forever_is_stopped(monkeypatch):
    def same_page(req: Req):
        if "/revision/" in req.target:
            return repo_answer(req)
        return json_reply([], headers={"Link": f'<http://{req.host}/api/models/org/m/tree/{C}?x=1>; rel="next"'})

    with StubHub(same_page) as hub:
        with pytest.raises(EndpointError, match="kept paging"):
            HubClient(hub.url).list_files(RepoRef("org/m"), C)
        assert len(hub.log) == 3  # info, the first page, the page it names (once)

    counter = iter(range(10**6))

    def new_page(req: Req):
        if "/revision/" in req.target:
            return repo_answer(req)
        return json_reply([], headers={"Link": f'<http://{req.host}/api/models/org/m/tree/{C}?c={next(counter)}>;'
                                               ' rel="next"'})

    monkeypatch.setattr(hubmod, "MAX_PAGES", 5)
    with StubHub(new_page) as hub:
        with pytest.raises(EndpointError, match="kept paging"):
            HubClient(hub.url).list_files(RepoRef("org/m"), C)
        assert len(hub.log) == 1 + 5


def test_a_listing_page_is_retried_as_http_backoff_retries_it():
    failures = {"n": 0}

    def flaky(req: Req):
        if "/tree/" in req.target and "cursor" in req.target and failures["n"] < 2:
            failures["n"] += 1
            return 503, {"Retry-After": "0"}, b"busy"
        return repo_answer(req)

    with StubHub(flaky) as hub:
        files = HubClient(hub.url).list_files(RepoRef("org/m"), C)
        assert len(hub.log) == 1 + 1 + 3
    assert sorted(files) == ["config.json", "d/w.bin"]

    with StubHub(lambda r: repo_answer(r) if "/revision/" in r.target else (503, {"Retry-After": "0"}, b"")) as hub:
        with pytest.raises(EndpointError, match=r"answered HTTP 503 for org/m$"):
            HubClient(hub.url).list_files(RepoRef("org/m"), C)
        assert len(hub.log) == 1 + 1 + hubapi.PAGE_RETRIES


def test_a_gzip_answer_is_read():
    def zipped(req: Req):
        status, headers, body = repo_answer(req)
        return status, {**headers, "Content-Encoding": "gzip"}, gzip.compress(body)

    with StubHub(zipped) as hub:
        files = HubClient(hub.url).list_files(RepoRef("org/m"), C)
        assert hub.log[0].headers["accept-encoding"] == "gzip"
    assert sorted(files) == ["config.json", "d/w.bin"]


# name -> the tree's first page (as JSON unless bytes), a listing hfcache cannot read
BAD_PAGES = {
    "not-json": b"<html>busy</html>",
    "an-object": {"files": FILES},
    "a-string-entry": ["config.json"],
    "no-type": [{"path": "x", "size": 3, "oid": "b" * 40}],
    "size-is-text": [{"type": "file", "path": "x", "size": "3", "oid": "b" * 40}],
    "size-is-bool": [{"type": "file", "path": "x", "size": True, "oid": "b" * 40}],
    "size-is-float": [{"type": "file", "path": "x", "size": 3.0, "oid": "b" * 40}],
    "path-is-int": [{"type": "file", "path": 5, "size": 3, "oid": "b" * 40}],
    "no-oid": [{"type": "file", "path": "x", "size": 3}],
    "oid-is-list": [{"type": "file", "path": "x", "size": 3, "oid": ["b"]}],
    "lfs-is-text": [{"type": "file", "path": "x", "size": 3, "oid": "b" * 40, "lfs": "yes"}],
    "lfs-oid-is-int": [{"type": "file", "path": "x", "size": 3, "oid": "b" * 40, "lfs": {"oid": 1, "size": 3}}],
    "lfs-without-size": [{"type": "file", "path": "x", "size": 3, "oid": "b" * 40, "lfs": {"oid": "e" * 64}}],
    "xethash-is-int": [{"type": "file", "path": "x", "size": 3, "oid": "b" * 40, "xetHash": 7}],
    "deeply-nested": b"[" * 100_000 + b"]" * 100_000,
}


def _serve_page(page):
    def answer(req: Req):
        if "/revision/" in req.target:
            return repo_answer(req)
        return 200, {"Content-Type": "application/json"}, page if isinstance(page, bytes) else json.dumps(page)
    return answer


@pytest.mark.parametrize("case", list(BAD_PAGES))
def test_a_malformed_listing_is_one_endpoint_error(case):
    with StubHub(_serve_page(BAD_PAGES[case])) as hub:
        client = HubClient(hub.url)
        with pytest.raises(EndpointError) as err:
            client.list_files(RepoRef("org/m"), C)
        with pytest.raises(EndpointError) as err2:  # paths-info reads entries the same way
            client.paths_info(RepoRef("org/m"), C, ["x"])
    for e in (err, err2):
        line = str(e.value)
        assert line.startswith(f"{hub.url} sent an answer hfcache cannot read") and "\n" not in line, line


@pytest.mark.parametrize(("info", "needle"), [([], "cannot read"), ("null", "cannot read"),
                                              ({"sha": 5}, "did not say which commit"),
                                              ({"sha": "../../x"}, "did not say which commit")])
def test_a_malformed_repo_info_is_one_endpoint_error(info, needle):
    answer = (lambda r: json_reply(info)) if info != "null" else (lambda r: (200, {}, b"null"))
    with StubHub(answer) as hub, pytest.raises(EndpointError, match=needle):
        HubClient(hub.url).resolve_revision(RepoRef("org/m"), "main")


def test_names_are_still_checked_after_the_shapes():
    page = [{"type": "file", "path": "../x", "size": 3, "oid": "b" * 40}]
    with StubHub(_serve_page(page)) as hub, pytest.raises(UnsafePath, match=r"'\.\./x'.*nothing was fetched"):
        HubClient(hub.url).list_files(RepoRef("org/m"), C)


def test_an_answer_over_the_bound_and_a_gzip_bomb_are_refused(monkeypatch):
    monkeypatch.setattr(hubapi, "BODY_LIMIT", 64 * 1024)
    big = json.dumps([FILES[0]] * 2000)  # ~150 kB
    too_big = pytest.raises(EndpointError, match="cannot read: an answer over 65536 bytes")
    with StubHub(_serve_page(big.encode())) as hub, too_big:
        HubClient(hub.url).list_files(RepoRef("org/m"), C)

    bomb = gzip.compress(b"[" + b" " * (50 * 1024 * 1024) + b"]")  # 50 MB of JSON in ~50 kB

    def answer(req: Req):
        if "/revision/" in req.target:
            return repo_answer(req)
        return 200, {"Content-Encoding": "gzip"}, bomb

    too_big = pytest.raises(EndpointError, match="cannot read: an answer over 65536 bytes")
    with StubHub(answer) as hub, too_big:
        HubClient(hub.url).list_files(RepoRef("org/m"), C)


def test_the_cli_says_one_line_for_a_malformed_listing(tmp_path):
    from tests.conftest import run_cli

    with StubHub(_serve_page(BAD_PAGES["lfs-is-text"])) as hub:
        r = run_cli("snapshot", "org/m", "--cache-dir", str(tmp_path), endpoint=hub.url)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "cannot read" in lines[0] and "Traceback" not in r.stderr


@pytest.mark.parametrize("where", ["redirect", "next page"])
@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x", "http://127.0.0.1:99999/x"])
def test_a_redirect_or_next_page_to_a_non_http_url_is_one_endpoint_error(where, target):
    """httpx refuses such a URL (UnsupportedProtocol, InvalidURL); here it was an AttributeError or a
    ValueError out of the client, which the CLI showed as an internal error."""

    def answer(req: Req):
        if "/revision/" in req.target:
            return json_reply({"sha": C, "siblings": []})
        if where == "redirect":
            return 302, {"Location": target}, b""
        return json_reply([], headers={"Link": f'<{target}>; rel="next"'})

    with StubHub(answer) as hub, pytest.raises(EndpointError, match="cannot read"):
        HubClient(hub.url, token="hf_secret").list_files(RepoRef("org/x"), C)


@pytest.mark.parametrize("target", ["file:///etc/passwd", "http://127.0.0.1:99999/x"])
def test_a_file_s_redirect_to_a_non_http_url_is_one_endpoint_error(tmp_path, target):
    """The same rule for a file's bytes (`Transfer`): an AttributeError or ValueError escaped before."""
    from hfcache.cache.layout import HubCache
    from hfcache.fetch.fetcher import Fetcher

    entry = {"type": "file", "path": "f.txt", "size": 3, "oid": "b" * 40}

    def answer(req: Req):
        if "/revision/" in req.target:
            return json_reply({"sha": C, "siblings": [{"rfilename": "f.txt"}]})
        if "/tree/" in req.target or "/paths-info/" in req.target:
            return json_reply([entry])
        return 302, {"Location": target, "X-Repo-Commit": C, "ETag": '"' + "b" * 40 + '"'}, b""

    with StubHub(answer) as hub, pytest.raises(EndpointError, match="a redirect"):
        Fetcher(HubCache(tmp_path / "c"), client=HubClient(hub.url), processes=1).snapshot(RepoRef("org/x"))
    assert not list((tmp_path / "c").glob("*/blobs/*")) and not list((tmp_path / "c").glob("*/snapshots/*/*"))
