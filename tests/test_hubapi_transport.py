"""Which way API calls go: kept-alive `http.client` connections, or `requests` where a proxy applies (the rule
`Transfer.get` follows), with the CA bundle from the environment (`REQUESTS_CA_BUNDLE`) checked either way."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from hfcache.cache.layout import RepoRef
from hfcache.errors import EndpointError
from hfcache.fetch.hub import HubClient
from tests.stubhub import StubHub
from tests.test_hubapi import TOKEN, C, repo_answer


@pytest.fixture
def no_proxy_env(monkeypatch):
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_through_a_proxy_the_calls_go_by_requests(no_proxy_env):
    with StubHub(repo_answer) as proxy:
        no_proxy_env.setenv("http_proxy", proxy.url)
        client = HubClient("http://hub.invalid", token=TOKEN)
        assert client.resolve_revision(RepoRef("org/m"), "main") == C
        files = client.list_files(RepoRef("org/m"), C)
        client.paths_info(RepoRef("org/m"), C, ["config.json"])
        log = list(proxy.log)
    assert sorted(files) == ["config.json", "d/w.bin"]
    # a proxy gets absolute URLs: the host it must reach, and the token for that host
    assert [(r.method, r.target.split("?")[0]) for r in log] == [
        ("GET", "http://hub.invalid/api/models/org/m/revision/main"),
        ("GET", f"http://hub.invalid/api/models/org/m/tree/{C}"),
        ("GET", f"http://hub.invalid/api/models/org/m/tree/{C}"),
        ("POST", f"http://hub.invalid/api/models/org/m/paths-info/{C}")]
    assert {r.headers.get("authorization") for r in log} == {f"Bearer {TOKEN}"}
    assert log[3].body == b"paths=config.json&expand=false"


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make a certificate)")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    return str(d / "cert.pem"), str(d / "key.pem")


def test_https_checks_the_certificate_against_requests_ca_bundle(cert, no_proxy_env):
    with StubHub(lambda r: repo_answer(r, scheme="https"), tls=cert) as hub:
        with pytest.raises(EndpointError, match=rf"^cannot reach {hub.url}: .*CERTIFICATE_VERIFY_FAILED"):
            HubClient(hub.url).resolve_revision(RepoRef("org/m"), "main")
        no_proxy_env.setenv("REQUESTS_CA_BUNDLE", cert[0])
        client = HubClient(hub.url, token=TOKEN)
        assert client.resolve_revision(RepoRef("org/m"), "main") == C
        assert sorted(client.list_files(RepoRef("org/m"), C)) == ["config.json", "d/w.bin"]
        assert [r.headers.get("authorization") for r in hub.log[-3:]] == [f"Bearer {TOKEN}"] * 3
