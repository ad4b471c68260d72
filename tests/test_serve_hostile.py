"""`hfcache serve` against hostile requests and a changing cache, checked with huggingface_hub's own client.

A 500 makes huggingface_hub retry and a wrong 404 makes it record `.no_exist`; every answer here must be the one
the Hub gives (404 + X-Error-Code, 400, 401, 416) and never wedge the event loop.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

from hfcache.cache.layout import RepoRef
from hfcache.server import catalog as catalog_module
from hfcache.server.accesslog import LineWriter
from hfcache.server.app import HubApp
from hfcache.server.catalog import Catalog
from hfcache.server.run import exposure_warning, start_in_thread
from hfcache.server.wire import parse_range
from tests.conftest import MODEL_MAIN, MODEL_V1, TOKEN, build_hub, run_cli, write_files

UNICODE = "données/模型 #1?%.json"  # not latin-1, with a space and URL-special characters
FILES = {**MODEL_MAIN, UNICODE: '{"ok": true}\n', "empty.txt": b"", "模型/a.txt": "a\n", "模型/b.txt": "b\n",
         "模型/c.txt": "c\n"}
TIMEOUT = 30  # a bound for failures, never a signal: every answer below comes in milliseconds


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = build_hub(tmp_path_factory.mktemp("hostile"), cdn_host=None, repos={("org/tiny", "model", "main"): FILES})
    yield h
    h.server.stop()


def _url(hub, path: str) -> str:
    from urllib.parse import quote

    return f"{hub.url}/org/tiny/resolve/main/{quote(path)}"


# -- item 1: names that are not latin-1 ----------------------------------------------------------------------------
def test_missing_non_latin1_file_is_a_clean_entry_not_found(hub, tmp_path):
    missing = "缺失/ファイル.json"
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/tiny", missing, cache_dir=tmp_path, endpoint=hub.url)
    assert len(hub.requests(missing)) == 1  # a 404 is final: no retry as after a 500
    # As the Hub would: the missing name is recorded under the commit the server named.
    commit = hub.commit("org/tiny")
    assert (tmp_path / "models--org--tiny" / ".no_exist" / commit / missing).is_file()
    r = requests.head(_url(hub, missing), timeout=TIMEOUT)
    assert r.status_code == 404
    assert r.headers["X-Error-Code"] == "EntryNotFound" and r.headers["X-Repo-Commit"] == commit
    assert r.headers["X-Error-Message"].isascii()


def test_existing_non_latin1_file_downloads_and_writes_no_no_exist(hub, tmp_path):
    path = hf_hub_download("org/tiny", UNICODE, cache_dir=tmp_path, endpoint=hub.url)
    assert Path(path).read_text() == FILES[UNICODE]
    assert not (tmp_path / "models--org--tiny" / ".no_exist").exists()
    assert Path(hf_hub_download("org/tiny", "empty.txt", cache_dir=tmp_path, endpoint=hub.url)).read_bytes() == b""


@pytest.mark.parametrize("path, code", [
    ("org/tiny/resolve/main/a%0D%0AX-Injected:%201", "EntryNotFound"),  # CR LF must not end a header
    ("org/tiny/resolve/%E5%88%86%E6%94%AF/config.json", "RevisionNotFound"),  # a revision not latin-1
    ("%E7%BB%84/%E5%BA%93/resolve/main/config.json", "RepoNotFound"),  # a repo id not latin-1
    ("api/models/%E7%BB%84/%E5%BA%93", "RepoNotFound"),
    ("api/models/org/tiny/tree/main/%E7%BC%BA", "EntryNotFound"),
    ("org/tiny/resolve/main/" + "%E7%BC%BA" * 3000, "EntryNotFound"),  # a long name is not echoed whole
])
def test_names_echoed_in_errors_never_break_headers(hub, path, code):
    r = requests.get(f"{hub.url}/{path}", timeout=TIMEOUT)
    assert r.status_code == 404, r.text
    assert r.headers["X-Error-Code"] == code
    assert "X-Injected" not in r.headers
    assert r.headers["X-Error-Message"].isascii() and len(r.headers["X-Error-Message"]) <= 200


def test_huggingface_hub_maps_a_unicode_revision_to_its_error(hub, tmp_path):
    before = len(hub.requests("分支"))
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/tiny", "config.json", revision="分支", cache_dir=tmp_path, endpoint=hub.url)
    assert len(hub.requests("分支")) == before + 1


def test_pages_of_a_non_latin1_folder_link_to_each_other(hub, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.setattr("hfcache.server.app.PAGE_SIZE", 1)  # the `Link` header echoes the folder's name
    entries = HfApi(endpoint=hub.url).list_repo_tree("org/tiny", path_in_repo="模型")
    assert sorted(e.path for e in entries) == ["模型/a.txt", "模型/b.txt", "模型/c.txt"]


@pytest.mark.parametrize("how", ["hf_hub_download", "snapshot_download"])  # without / with a trees/ listing
def test_a_file_the_served_cache_lacks_is_never_reported_as_missing(hub, tmp_path, how):
    """The served cache holds part of a commit: asking for the rest must not make the client record `.no_exist`
    (it would then believe, offline, that README.md does not exist at that commit)."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    served = tmp_path / "served"
    if how == "hf_hub_download":
        hf_hub_download("org/tiny", "config.json", cache_dir=served, endpoint=hub.url)
    else:
        snapshot_download("org/tiny", allow_patterns="config.json", cache_dir=served, endpoint=hub.url)
    with pytest.raises(EntryNotFoundError):  # asked upstream: huggingface_hub records the truth in `.no_exist`
        hf_hub_download("org/tiny", "gone.txt", cache_dir=served, endpoint=hub.url)
    with start_in_thread(HubApp(Catalog(served))) as server:
        client = tmp_path / "client"
        assert Path(hf_hub_download("org/tiny", "config.json", cache_dir=client, endpoint=server.url)).is_file()
        with pytest.raises(LocalEntryNotFoundError):  # not EntryNotFoundError: the commit may well hold it
            hf_hub_download("org/tiny", "README.md", cache_dir=client, endpoint=server.url)
        assert not (client / "models--org--tiny" / ".no_exist").exists()
        with pytest.raises(EntryNotFoundError):  # known absent (`.no_exist` marker, or not in trees/)
            hf_hub_download("org/tiny", "gone.txt", cache_dir=client, endpoint=server.url)
        unknown = "nope.txt"
        if how == "snapshot_download":  # the full listing says it does not exist
            with pytest.raises(EntryNotFoundError):
                hf_hub_download("org/tiny", unknown, cache_dir=client, endpoint=server.url)
        else:
            with pytest.raises(LocalEntryNotFoundError):
                hf_hub_download("org/tiny", unknown, cache_dir=client, endpoint=server.url)
        no_exist = client / "models--org--tiny" / ".no_exist" / hub.commit("org/tiny")
        assert sorted(p.name for p in no_exist.iterdir()) == (
            ["gone.txt", unknown] if how == "snapshot_download" else ["gone.txt"])
        # hfcache's own client asks paths-info: the same answer, so it records nothing either.
        r = run_cli("download", "org/tiny", "README.md", "--cache-dir", str(tmp_path / "c2"), endpoint=server.url)
        assert r.returncode == 1 and not (tmp_path / "c2" / "models--org--tiny" / ".no_exist").exists(), r.stderr


# -- item 2: cursor, Range, Bearer ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cursor", ["abc", "-1", "1e3", "٣", "9" * 40])
def test_a_cursor_that_is_not_ours_is_400(hub, cursor):
    r = requests.get(f"{hub.url}/api/models/org/tiny/tree/main", params={"cursor": cursor}, timeout=TIMEOUT)
    assert r.status_code == 400, r.text
    ok = requests.get(f"{hub.url}/api/models/org/tiny/tree/main", params={"cursor": "1"}, timeout=TIMEOUT)
    assert ok.status_code == 200 and len(ok.json()) > 0


@pytest.mark.parametrize("name", ["config.json", "big.bin"])  # served from memory / streamed by Starlette
@pytest.mark.parametrize("header, expect", [
    ("bytes=10-5", "full"), ("bytes=abc", "full"), ("bytes=-", "full"), ("bytes=0-1,4-5", "full"),
    ("items=0-1", "full"), ("bytes=2-5", (2, 5)), ("bytes=3-", (3, None)), ("bytes=-4", (-4, None)),
    ("bytes=1-99999999999999999999999", (1, None)), ("bytes=99999999999999999999999-", 416), ("bytes=-0", 416),
    ("bytes=END-", 416),
])
def test_range_follows_rfc_9110(hub, name, header, expect):
    data = FILES[name].encode() if isinstance(FILES[name], str) else FILES[name]
    header = header.replace("END", str(len(data)))
    r = requests.get(_url(hub, name), headers={"Range": header}, timeout=TIMEOUT)
    if expect == "full":
        assert r.status_code == 200 and r.content == data
    elif expect == 416:
        assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"
    else:
        start, end = expect
        part = data[start:end + 1 if end is not None else None]
        assert r.status_code == 206 and r.content == part
        first = start % len(data)
        assert r.headers["Content-Range"] == f"bytes {first}-{first + len(part) - 1}/{len(data)}"


def test_an_if_range_that_does_not_match_serves_the_whole_file(hub):
    r = requests.get(_url(hub, "config.json"), headers={"Range": "bytes=2-5", "If-Range": '"stale"'}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.content == FILES["config.json"].encode()


def test_parse_range_on_an_empty_body():
    assert parse_range("bytes=0-", 0) == "unsatisfiable"
    assert parse_range("bytes=-5", 0) == "unsatisfiable"
    assert parse_range("bytes=5-1", 0) is None


@pytest.fixture(scope="module")
def private_hub(tmp_path_factory):
    h = build_hub(tmp_path_factory.mktemp("private"), cdn_host=None, token=TOKEN,
                  repos={("org/tiny", "model", "main"): MODEL_V1})
    yield h
    h.server.stop()


@pytest.mark.parametrize("value", ["Bearer ñandú".encode("latin-1"), "Bearer 日本".encode(), b"Bearer \xff\xfe",
                                   f"Bearer {TOKEN}\u00e9".encode()])
def test_a_non_ascii_bearer_is_401(private_hub, value):
    r = requests.get(f"{private_hub.url}/api/models/org/tiny", headers={"Authorization": value}, timeout=TIMEOUT)
    assert r.status_code == 401 and r.headers["X-Error-Code"] == "Unauthorized"
    ok = requests.get(f"{private_hub.url}/api/models/org/tiny", headers={"Authorization": f"Bearer {TOKEN}"},
                      timeout=TIMEOUT)
    assert ok.status_code == 200


def test_a_non_ascii_token_works_when_sent_as_utf8(tmp_path):
    catalog = Catalog()
    catalog.add_folder(RepoRef("org/x"), write_files(tmp_path / "src", {"a.txt": "a\n"}))
    with start_in_thread(HubApp(catalog, token="tökén")) as server:
        r = requests.get(f"{server.url}/api/models/org/x", headers={"Authorization": "Bearer tökén".encode()},
                         timeout=TIMEOUT)
        assert r.status_code == 200


# -- item 3: a cache that changes under the server -----------------------------------------------------------------
@pytest.fixture
def served_cache(hub, tmp_path):
    """A cache written by huggingface_hub, served by hfcache; yields (cache, commit, url, catalog)."""
    cache = tmp_path / "cache"
    snapshot_download("org/tiny", cache_dir=cache, endpoint=hub.url)
    catalog = Catalog(cache)
    with start_in_thread(HubApp(catalog)) as server:
        yield cache, hub.commit("org/tiny"), server.url, catalog


def test_a_file_added_to_a_served_snapshot_is_served(served_cache, monkeypatch):
    cache, commit, url, catalog = served_cache
    snap = cache / "models--org--tiny" / "snapshots" / commit
    assert requests.get(f"{url}/org/tiny/resolve/main/new.txt", timeout=TIMEOUT).status_code == 404
    reads = []
    real_read = Catalog._read_cached
    monkeypatch.setattr(Catalog, "_read_cached", lambda self, repo: reads.append(repo) or real_read(self, repo))
    # Misses for files that are not there cost no re-read (a client cannot make the server re-index at will).
    for i in range(20):
        assert requests.get(f"{url}/org/tiny/resolve/main/nope{i}.txt", timeout=TIMEOUT).status_code == 404
    assert reads == []
    (snap / "new.txt").write_text("new\n")  # directly in the snapshot folder
    (snap / "nested" / "deep" / "dir" / "added.txt").write_text("added\n")  # in a folder that already existed
    for name, text in (("new.txt", "new\n"), ("nested/deep/dir/added.txt", "added\n")):
        r = requests.get(f"{url}/org/tiny/resolve/main/{name}", timeout=TIMEOUT)
        assert r.status_code == 200 and r.text == text
    listing = requests.get(f"{url}/api/models/org/tiny/tree/main", params={"recursive": "true"}, timeout=TIMEOUT)
    assert "new.txt" in {e["path"] for e in listing.json()}
    # A file removed (link and blob) from a folder that stays: a clean 404 no client records as `.no_exist`.
    link = snap / "tokenizer" / "vocab.txt"
    link.resolve().unlink()
    link.unlink()
    r = requests.get(f"{url}/org/tiny/resolve/main/tokenizer/vocab.txt", timeout=TIMEOUT)
    assert r.status_code == 404 and r.headers["X-Error-Code"] == "EntryNotCached"


def test_a_ref_rewritten_in_place_is_followed(served_cache):
    cache, commit, url, _catalog = served_cache
    other = "f" * 40
    shutil.copytree(cache / "models--org--tiny" / "snapshots" / commit,
                    cache / "models--org--tiny" / "snapshots" / other, symlinks=True)
    info = requests.get(f"{url}/api/models/org/tiny/revision/main", timeout=TIMEOUT).json()
    assert info["sha"] == commit
    ref = cache / "models--org--tiny" / "refs" / "main"
    with open(ref, "r+") as f:  # in place, as huggingface_hub writes refs: no folder's mtime moves
        f.write(other)
    info = requests.get(f"{url}/api/models/org/tiny/revision/main", timeout=TIMEOUT).json()
    assert info["sha"] == other


# -- item 4: hashing never blocks the event loop -------------------------------------------------------------------
def test_indexing_a_repo_that_needs_hashing_does_not_block_other_requests(hub, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    snapshot_download("org/tiny", cache_dir=cache, endpoint=hub.url)
    snap = cache / "models--org--tiny" / "snapshots" / hub.commit("org/tiny")
    (snap / "unlisted.bin").write_bytes(b"x" * 1000)  # in no `trees/` listing, not a link to a named blob: hashed
    catalog = Catalog(cache)
    catalog.add_folder(RepoRef("org/other"), write_files(tmp_path / "src", {"a.txt": "a\n"}))
    hashing, release = threading.Event(), threading.Event()
    real_meta = catalog_module.file_meta

    def slow_meta(path, rel):
        hashing.set()
        release.wait(TIMEOUT * 4)  # hashing a huge file, until the test has made its probe (or gave up)
        return real_meta(path, rel)

    monkeypatch.setattr(catalog_module, "file_meta", slow_meta)
    with start_in_thread(HubApp(catalog)) as server:
        first: list = []
        t = threading.Thread(target=lambda: first.append(
            requests.get(f"{server.url}/api/models/org/tiny/revision/main", timeout=TIMEOUT * 5)))
        t.start()
        try:
            assert hashing.wait(TIMEOUT)
            probe = requests.get(f"{server.url}/api/models/org/other/revision/main", timeout=TIMEOUT)
            assert probe.status_code == 200
        finally:
            release.set()
            t.join(TIMEOUT * 5)
        assert first and first[0].status_code == 200


# -- item 5: exposure warning --------------------------------------------------------------------------------------
def test_exposure_warning():
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        assert exposure_warning(host, None) is None
    for host in ("0.0.0.0", "::", "192.168.1.10", "myhost.example"):
        assert "--token" in exposure_warning(host, None)
        assert exposure_warning(host, "secret") is None


class _Served:
    """`hfcache serve` in a subprocess, its stderr read by a thread so that every wait is bounded."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "hfcache", "serve", "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def stderr_until(self, needle: str, limit: int = 50) -> list[str]:
        """stderr lines up to the first containing `needle` (the server prints them as events happen)."""
        seen: list[str] = []
        for _ in range(limit):
            line = self.lines.get(timeout=TIMEOUT)
            if line is None:
                break
            seen.append(line)
            if needle in line:
                return seen
        raise AssertionError(f"{needle!r} not in {seen}")

    def __enter__(self) -> _Served:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(TIMEOUT)


def test_serve_warns_once_on_a_public_address_without_token(tmp_path):
    src = write_files(tmp_path / "src", {"a.txt": "a\n"})
    for host, token, warned in (("0.0.0.0", None, True), ("0.0.0.0", "t", False), ("127.0.0.1", None, False)):
        with _Served("--host", host, "--repo", f"org/x={src}", *(["--token", token] if token else [])) as served:
            lines = served.stderr_until("serving 1 repo")
            warnings = [ln for ln in lines if "warning" in ln]
            assert len(warnings) == (1 if warned else 0), lines
            if warned:
                assert warnings[0].startswith("hfcache: warning: serving on 0.0.0.0 without --token")


# -- item 6: one log line per request ------------------------------------------------------------------------------
def test_one_access_log_line_per_request_with_status_and_bytes(tmp_path):
    catalog = Catalog()
    big = FILES["big.bin"]
    catalog.add_folder(RepoRef("org/x"), write_files(tmp_path / "src", {"a.txt": "hello\n", "big.bin": big}))
    lines: list[str] = []
    with start_in_thread(HubApp(catalog, token=TOKEN, access_log=lines.append)) as server:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        requests.get(f"{server.url}/org/x/resolve/main/a.txt", headers=auth, timeout=TIMEOUT)
        requests.head(f"{server.url}/org/x/resolve/main/a.txt", headers=auth, timeout=TIMEOUT)
        requests.get(f"{server.url}/org/x/resolve/main/big.bin", headers=auth, timeout=TIMEOUT)
        requests.get(f"{server.url}/org/x/resolve/main/big.bin", headers={**auth, "Range": "bytes=10-19"},
                     timeout=TIMEOUT)
        requests.get(f"{server.url}/org/x/resolve/main/%E7%BC%BA%0A.txt?sig=secret", headers=auth, timeout=TIMEOUT)
        requests.get(f"{server.url}/org/x/resolve/main/a.txt", headers={"Authorization": "Bearer wrong"},
                     timeout=TIMEOUT)
    assert [ln.rsplit(" ", 1)[0] for ln in lines] == [
        "127.0.0.1 GET /org/x/resolve/main/a.txt 200",
        "127.0.0.1 HEAD /org/x/resolve/main/a.txt 200",
        "127.0.0.1 GET /org/x/resolve/main/big.bin 200",
        "127.0.0.1 GET /org/x/resolve/main/big.bin 206",
        "127.0.0.1 GET /org/x/resolve/main/%E7%BC%BA%0A.txt 404",  # as sent: a name cannot forge a line
        "127.0.0.1 GET /org/x/resolve/main/a.txt 401",
    ]
    sent = [int(ln.rsplit(" ", 1)[1]) for ln in lines]
    assert sent[:4] == [6, 0, len(big), 10] and sent[4] > 0 and sent[5] > 0
    assert not any(TOKEN in ln or "secret" in ln or "wrong" in ln for ln in lines)


def test_serve_command_logs_each_request_on_stderr(tmp_path):
    src = write_files(tmp_path / "src", {"a.txt": "hello\n"})
    with _Served("--repo", f"org/x={src}") as served:
        url = served.proc.stdout.readline().strip()
        served.stderr_until("serving 1 repo")
        for _ in range(3):
            assert requests.get(f"{url}/org/x/resolve/main/a.txt", timeout=TIMEOUT).text == "hello\n"
        lines = [served.stderr_until("a.txt")[-1] for _ in range(3)]
        assert lines == ["hfcache: 127.0.0.1 GET /org/x/resolve/main/a.txt 200 6"] * 3


def test_a_log_reader_that_stalls_never_blocks_the_server():
    """`hfcache serve 2>pipe` where nobody reads the pipe: lines are dropped (and the drop said), never waited on."""
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    sink = LineWriter(stream, prefix="hfcache: ", limit=100)
    pushed = threading.Thread(target=lambda: [sink("x" * 100) for _ in range(20_000)])  # ~2 MB: pipes hold 64 KB
    pushed.start()
    pushed.join(TIMEOUT)
    assert not pushed.is_alive()
    seen, got_last = bytearray(), threading.Event()

    def drain(reader) -> None:
        for chunk in iter(lambda: reader.read1(1 << 16), b""):
            seen.extend(chunk)
            if seen.endswith(b"hfcache: last\n"):
                got_last.set()

    with os.fdopen(read_end, "rb") as reader:  # the reader wakes up: lines flow again, the drop is reported
        drainer = threading.Thread(target=drain, args=(reader,), daemon=True)
        drainer.start()
        assert sink.wait_drained(TIMEOUT)  # the writer took every waiting line...
        sink("last")  # ...so this one has room, and is written
        assert got_last.wait(TIMEOUT), bytes(seen[-200:])
        stream.close()  # the reader sees the end: the drain thread ends
        drainer.join(TIMEOUT)
    assert seen.count(b"log lines dropped") >= 1 and len(seen) < 20_000 * 100  # what could not wait was dropped


def test_serve_quiet_logs_no_request(tmp_path):
    src = write_files(tmp_path / "src", {"a.txt": "hello\n"})
    served = _Served("--quiet", "--repo", f"org/x={src}")
    with served:
        url = served.proc.stdout.readline().strip()
        served.stderr_until("serving 1 repo")
        assert requests.get(f"{url}/org/x/resolve/main/a.txt", timeout=TIMEOUT).text == "hello\n"
    rest = []
    while (line := served.lines.get(timeout=TIMEOUT)) is not None:  # all of stderr, up to the exit
        rest.append(line)
    assert not [ln for ln in rest if "a.txt" in ln], rest
