"""`hubheaders` (hfcache's port of `build_hf_headers`) against huggingface_hub's own, byte for byte.

Each case runs in a fresh interpreter (huggingface_hub reads its environment once, at import) with its own
HF_HOME, environment and files (token file, stored tokens, the agent harness registry, a torch distribution):
hfcache's `HubClient.hub_headers()` first, then `build_hf_headers(token=..., library_name="hfcache",
library_version=<hfcache's>)`, and the two dicts must dump to the same JSON. Every part of the user agent is
covered: library, hf_hub and python versions, torch (a stand-in distribution), the agent harness (from a cached
registry, a stale one, or fetched from the endpoint), the origin; and every source of the token.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hfcache import __version__
from tests.stubhub import Req, StubHub, json_reply

SCRIPT = """
import json, sys
token = json.loads(sys.argv[1])
from hfcache.fetch.hub import HubClient
ours = HubClient("http://127.0.0.1:9", token=token).hub_headers()
handed = "huggingface_hub.utils._auth" in sys.modules
if sys.argv[2] == "both":
    from huggingface_hub.utils import build_hf_headers
    from hfcache import __version__
    theirs = build_hf_headers(token=token, library_name="hfcache", library_version=__version__)
else:
    theirs = None
print(json.dumps({"ours": json.dumps(ours), "theirs": json.dumps(theirs), "handed": handed}))
"""
THEIRS_ONLY = """
import json, sys
from huggingface_hub.utils import build_hf_headers
from hfcache import __version__
print(json.dumps({"theirs": json.dumps(build_hf_headers(token=json.loads(sys.argv[1]), library_name="hfcache",
                                                        library_version=__version__))}))
"""

REGISTRY = {"standardEnvVars": ["AI_AGENT", "AGENT"],
            "harnesses": {"claude-code": {"envVars": {"CLAUDECODE": "1"}}, "cursor": {"envVars": {"CURSOR_X": "*"}},
                          "Codex": {}}}
DAY = 24 * 3600


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp: Path, extra: dict[str, str]) -> dict[str, str]:
    drop = ("HF_", "HUGGING_FACE", "AI_AGENT", "AGENT", "CLAUDECODE", "CURSOR", "DO_NOT_TRACK", "DISABLE_TELEMETRY")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update({"HF_HOME": str(tmp / "home"), "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"})
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v.format(T=tmp)
    return env


def _run(tmp: Path, env: dict[str, str], token: object, script: str = SCRIPT, mode: str = "both") -> dict:
    p = subprocess.run([sys.executable, "-c", script, json.dumps(token), mode], capture_output=True, text=True,
                       env=env, timeout=120, cwd=tmp)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _stored(tmp: Path, token: str, **fields: str) -> None:
    extra = "".join(f"{k} = {v}\n" for k, v in fields.items())
    (tmp / "home" / "stored_tokens").write_text(f"[mine]\nhf_token = {token}\n{extra}")


def _torch(tmp: Path) -> None:
    dist = tmp / "site" / "torch-9.8.7.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 9.8.7\n")


def _registry(tmp: Path, age: float = 0) -> None:
    path = tmp / "home" / ".agent_harnesses.json"
    path.write_text(json.dumps(REGISTRY))
    os.utime(path, (time.time() - age, time.time() - age))


TELEMETRY = {"HF_HUB_DISABLE_TELEMETRY": None}
# name -> (environment, files to make, token argument, handed over to huggingface_hub's get_token)
CASES = {
    "no-token": ({}, [], None, False),
    "env-token": ({"HF_TOKEN": "hf_env"}, [], None, False),
    "legacy-env-token": ({"HUGGING_FACE_HUB_TOKEN": "hf_legacy"}, [], None, False),
    "env-token-before-file": ({"HF_TOKEN": "hf_env"}, ["file"], None, False),
    "blank-env-token-then-file": ({"HF_TOKEN": "  \n"}, ["file"], None, False),
    "token-file": ({}, ["file"], None, False),
    "token-path": ({"HF_TOKEN_PATH": "{T}/elsewhere/tok"}, ["path"], None, False),
    "implicit-token-disabled": ({"HF_HUB_DISABLE_IMPLICIT_TOKEN": "1", "HF_TOKEN": "hf_env"}, ["file"], None, False),
    "disabled-but-explicit": ({"HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}, ["file"], "hf_explicit", False),
    "explicit-token": ({"HF_TOKEN": "hf_env"}, ["file"], "hf_explicit", False),
    "token-false": ({"HF_TOKEN": "hf_env"}, ["file"], False, False),
    "token-true": ({"HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}, ["file"], True, False),
    "stored-token-not-oauth": ({}, ["file", "stored"], None, False),
    "stored-oauth-far-from-expiry": ({}, ["file", "oauth-fresh"], None, False),
    "stored-oauth-expiring": ({}, ["file", "oauth-expiring"], None, True),
    "telemetry-no-agent": (TELEMETRY, ["registry"], None, False),
    "telemetry-agent-by-its-variable": ({**TELEMETRY, "CLAUDECODE": "1"}, ["registry"], None, False),
    "telemetry-agent-by-pattern": ({**TELEMETRY, "CURSOR_X": "yes"}, ["registry"], None, False),
    "telemetry-agent-by-standard-variable": ({**TELEMETRY, "AI_AGENT": "Codex"}, ["registry"], None, False),
    "telemetry-agent-lowercase": ({**TELEMETRY, "AGENT": "CODEX"}, ["registry"], None, False),
    "telemetry-unknown-agent": ({**TELEMETRY, "AGENT": "someone"}, ["registry"], None, False),
    "telemetry-stale-registry": ({**TELEMETRY, "CLAUDECODE": "1"}, ["stale-registry"], None, False),
    "telemetry-no-registry": ({**TELEMETRY, "AI_AGENT": "x"}, [], None, False),
    "telemetry-torch": ({**TELEMETRY, "PYTHONPATH": "{T}/site"}, ["torch", "registry"], None, False),
    "do-not-track": ({**TELEMETRY, "DO_NOT_TRACK": "1", "PYTHONPATH": "{T}/site", "AI_AGENT": "x"},
                     ["torch", "registry"], None, False),
    "origin": ({"HF_HUB_USER_AGENT_ORIGIN": f"my-app; hfcache/{__version__}"}, [], "hf_x", False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_headers_are_build_hf_headers_byte_for_byte(case, tmp_path):
    extra, files, token, handed = CASES[case]
    (tmp_path / "home").mkdir()
    for f in files:
        if f == "file":
            (tmp_path / "home" / "token").write_text("  hf_\r\nfile\r\n")  # huggingface_hub drops CR/LF within
        elif f == "path":
            (tmp_path / "elsewhere").mkdir()
            (tmp_path / "elsewhere" / "tok").write_text("hf_path\n")
        elif f == "stored":
            _stored(tmp_path, "hf_file")
        elif f == "oauth-fresh":
            _stored(tmp_path, "hf_file", refresh_token="r", expires_at=str(int(time.time()) + 10 * DAY))
        elif f == "oauth-expiring":
            _stored(tmp_path, "hf_file", refresh_token="r", expires_at=str(int(time.time()) + 60))
        elif f == "torch":
            _torch(tmp_path)
        elif f == "registry":
            _registry(tmp_path)
        elif f == "stale-registry":
            _registry(tmp_path, age=2 * DAY)
    out = _run(tmp_path, _env(tmp_path, extra), token)
    assert out["ours"] == out["theirs"]
    assert out["handed"] is handed  # huggingface_hub's token code loaded only to refresh an OAuth token
    ours = json.loads(out["ours"])
    assert ours["user-agent"].startswith(f"hfcache/{__version__}; hf_hub/")
    if "torch" in files and "do-not-track" not in case:
        assert "; torch/9.8.7" in ours["user-agent"]
    if "agent-by" in case or "stale" in case:
        assert "; agent/" in ours["user-agent"] and "; agent/unknown" not in ours["user-agent"]


def test_the_agent_registry_is_fetched_as_huggingface_hub_fetches_it(tmp_path):
    """No cached registry: both ask `{HF_ENDPOINT}/api/agent-harnesses` once and keep the answer in HF_HOME."""
    def answer(req: Req):
        return json_reply(REGISTRY) if req.target == "/api/agent-harnesses" else (404, {}, b"")

    got = {}
    with StubHub(answer) as hub:
        for who in ("ours", "theirs"):
            tmp = tmp_path / who
            (tmp / "home").mkdir(parents=True)
            env = _env(tmp, {**TELEMETRY, "CLAUDECODE": "1", "HF_ENDPOINT": hub.url})
            out = _run(tmp, env, None, *((SCRIPT, "ours") if who == "ours" else (THEIRS_ONLY, "")))
            got[who] = (out[who], json.loads((tmp / "home" / ".agent_harnesses.json").read_text()),
                        [(r.method, r.target) for r in hub.log])
            hub.log.clear()
    assert got["ours"] == got["theirs"]
    assert "; agent/claude-code" in json.loads(got["ours"][0])["user-agent"]
    assert got["ours"][2] == [("GET", "/api/agent-harnesses")]


def test_patterns_are_filter_repo_objects():
    """`patterns.filter_names` (behind --include/--exclude) keeps what huggingface_hub's own filter keeps."""
    from huggingface_hub.utils import filter_repo_objects

    from hfcache.fetch.patterns import filter_names

    names = ["config.json", "model.safetensors", "sub/model.safetensors", "sub/deep/x.bin", "README.md",
             ".gitattributes", "a\\b.txt", "Sub/Y.TXT", "onnx/model.onnx", "onnx", "[x].txt", "x.txt"]
    patterns = [None, "*.json", ["*.safetensors"], ["sub/"], ["sub/*"], ["*/model.*"], ["a/b.txt"], ["a\\b.txt"],
                ["*.TXT"], ["onnx/", "*.md"], ["[x].txt"], ["[[]x].txt"], ["?.txt"], [], "*"]
    for allow in patterns:
        for ignore in patterns:
            theirs = list(filter_repo_objects(names, allow_patterns=allow, ignore_patterns=ignore))
            assert list(filter_names(names, allow, ignore)) == theirs, (allow, ignore)


def test_a_token_huggingface_hub_cannot_get_is_one_line(tmp_path):
    """OIDC is handed to huggingface_hub; its refusal (no id token outside CI) is one line, exit 1."""
    from tests.conftest import run_cli

    (tmp_path / "home").mkdir()
    env = _env(tmp_path, {"HF_OIDC_RESOURCE": "org/m", "GITHUB_ACTIONS": None,
                          "ACTIONS_ID_TOKEN_REQUEST_URL": None})
    r = run_cli("download", "org/tiny", "config.json", "--cache-dir", str(tmp_path / "c"), env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "cannot get the token" in lines[0], r.stderr
