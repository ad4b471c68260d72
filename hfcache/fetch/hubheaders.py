"""`huggingface_hub.utils.build_hf_headers`, ported: the same user agent and token, without importing
`huggingface_hub.utils` (0.26 s of CPU: that package loads httpx2 and much more). tests/test_hubheaders.py
compares both, byte for byte, across the cases that decide them.

Ported as 2.4 does it off notebooks: the token from `HF_TOKEN`/`HUGGING_FACE_HUB_TOKEN`, then the token file
(`HF_TOKEN_PATH`), unless `HF_HUB_DISABLE_IMPLICIT_TOKEN`; the user agent with torch's version and the AI agent
harness (from the registry huggingface_hub keeps in HF_HOME, fetched from the endpoint at most once a day)
unless telemetry is off, and `HF_HUB_USER_AGENT_ORIGIN`. The rare cases that need the network or a notebook
(an OIDC exchange, an OAuth token near expiry to refresh, a Colab secret) are handed to huggingface_hub itself.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

REFRESH_MARGIN = 24 * 3600  # huggingface_hub refreshes an OAuth token with less than this left
REGISTRY_TTL = 24 * 3600  # the agent registry is fetched again after this long
REGISTRY_TIMEOUT = 3.0

# (url, timeout) -> the JSON body of a 2xx answer, or None; how the agent registry is fetched (None: never)
FetchJson = Callable[[str, float], object]

_registry: dict | None = None


class NoToken(Exception):
    """`token=True` and no token found (huggingface_hub's LocalTokenNotFoundError), or huggingface_hub failed
    to get one where it was handed the job (an OIDC exchange refused)."""


def build_hf_headers(*, token: bool | str | None = None, library_name: str | None = None,
                     library_version: str | None = None, fetch: FetchJson | None = None) -> dict[str, str]:
    """`build_hf_headers(token=..., library_name=..., library_version=...)` as huggingface_hub 2.4 builds it."""
    to_send = token_to_send(token)
    headers = {"user-agent": user_agent(library_name, library_version, fetch)}
    if to_send is not None:
        headers["authorization"] = f"Bearer {to_send}"
    return headers


def token_to_send(token: bool | str | None) -> str | None:
    """A string is sent as is, False sends none, True requires one, None takes the implicit one unless
    `HF_HUB_DISABLE_IMPLICIT_TOKEN`."""
    from huggingface_hub import constants

    if isinstance(token, str):
        return token
    if token is False:
        return None
    if token is True:
        found = get_token()
        if found is None:
            raise NoToken("a token is required (token=True), but none was found: set HF_TOKEN or log in")
        return found
    if constants.HF_HUB_DISABLE_IMPLICIT_TOKEN:
        return None
    return get_token()


def _clean(token: str | None) -> str | None:
    if token is None:
        return None
    return token.replace("\r", "").replace("\n", "").strip() or None


def _from_file() -> str | None:
    from huggingface_hub import constants

    try:
        return _clean(Path(constants.HF_TOKEN_PATH).read_text())
    except FileNotFoundError:
        return None


def _library_get_token() -> str | None:
    """huggingface_hub's own `get_token`, for what needs the network or a notebook."""
    from huggingface_hub.utils import get_token

    try:
        return get_token()
    except Exception as e:  # OIDCError and the like: one line, not a traceback
        lines = str(e).strip().splitlines() or [type(e).__name__]
        raise NoToken(f"cannot get the token: {lines[0]}") from None


def _needs_refresh(token: str) -> bool:
    """The token file holds an OAuth token (stored with a refresh token) that expires within a day."""
    from huggingface_hub import constants

    path = Path(constants.HF_STORED_TOKENS_PATH)
    if not path.exists():
        return False
    import configparser

    config = configparser.ConfigParser(interpolation=None)
    try:
        config.read(path, encoding="utf-8")
        stored = [dict(config.items(name)) for name in config.sections()]
    except (configparser.Error, UnicodeDecodeError):
        return False
    fields = next((f for f in stored if f.get("hf_token") == token), None)
    if fields is None or fields.get("refresh_token") is None:
        return False
    try:
        expires_at = int(fields["expires_at"])
    except (KeyError, ValueError):
        return False
    return expires_at - REFRESH_MARGIN <= time.time()


def _in_colab() -> bool:
    import builtins

    shell = getattr(builtins, "get_ipython", None)
    try:
        return shell is not None and "google.colab" in str(shell()) \
            and os.environ.get("VERTEX_PRODUCT") != "COLAB_ENTERPRISE"
    except Exception:
        return False


def get_token() -> str | None:
    """huggingface_hub's `get_token`: OIDC (handed over), `HF_TOKEN`, `HUGGING_FACE_HUB_TOKEN`, the token file
    (handed over when it must be refreshed), a Colab secret (handed over)."""
    if os.environ.get("HF_OIDC_RESOURCE"):
        return _library_get_token()
    found = _clean(os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"))
    if found is not None:
        return found
    found = _from_file()
    if found is not None:
        return _library_get_token() if _needs_refresh(found) else found
    return _library_get_token() if _in_colab() else None


# -- user agent ----------------------------------------------------------------------------------------------
def user_agent(library_name: str | None, library_version: str | None = None, fetch: FetchJson | None = None) -> str:
    """`_http_user_agent(library_name=..., library_version=...)`: library, hf_hub and python versions; torch
    and the agent harness unless telemetry is off; the origin from `HF_HUB_USER_AGENT_ORIGIN`."""
    import huggingface_hub
    from huggingface_hub import constants

    ua = f"{library_name}/{library_version}" if library_name is not None else "unknown/None"
    ua += f"; hf_hub/{huggingface_hub.__version__}"
    ua += f"; python/{sys.version.split()[0].rstrip('+')}"
    if not constants.HF_HUB_DISABLE_TELEMETRY:
        torch = _torch_version()
        if torch != "N/A":
            ua += f"; torch/{torch}"
        agent = detect_agent(fetch)
        if agent:
            ua += f"; agent/{agent}"
    origin = constants.HF_HUB_USER_AGENT_ORIGIN
    if origin is not None:
        ua += "; origin/" + origin
    return "; ".join({part.strip(): None for part in ua.split(";")})


def _torch_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "N/A"


def detect_agent(fetch: FetchJson | None = None) -> str | None:
    """huggingface_hub's `detect_agent`: the first harness whose variables match, else one named by a standard
    variable (`AI_AGENT`, `AGENT`, as the registry lists them), else "unknown" when one is set."""
    registry = _get_registry(fetch)
    standard = registry.get("standardEnvVars") or []
    harnesses = registry.get("harnesses") or {}
    if not isinstance(standard, list) or not isinstance(harnesses, dict):
        return None
    standard = [v for v in standard if isinstance(v, str)]
    for harness, info in harnesses.items():
        env_vars = (info or {}).get("envVars") if isinstance(info or {}, dict) else None
        if isinstance(env_vars, dict) and _env_vars_match(env_vars):
            return harness
        for var in standard:
            if os.environ.get(var, "").strip() == harness:
                return harness
    lowered = {str(k).lower() for k in harnesses}
    for var in standard:
        if value := os.environ.get(var, "").strip().lower():
            return value if value in lowered else "unknown"
    return None


def _env_vars_match(env_vars: dict) -> bool:
    for var, pattern in env_vars.items():
        value = os.environ.get(var) if isinstance(var, str) else None
        if value and (pattern == "*" or value == pattern):
            return True
    return False


def _get_registry(fetch: FetchJson | None) -> dict:
    global _registry
    if _registry is None:
        try:
            _registry = _load_registry(fetch)
        except Exception:
            _registry = None
        if not isinstance(_registry, dict):
            _registry = {}
    return _registry


def _load_registry(fetch: FetchJson | None) -> object:
    """A cached registry under a day old; else the endpoint's (written to the cache); else a stale one."""
    from huggingface_hub import constants

    path = constants.AGENT_HARNESSES_PATH
    cached = _read_registry(path, REGISTRY_TTL)
    if cached:
        return cached
    fetched = None
    if fetch is not None and not constants.HF_HUB_OFFLINE:
        try:
            fetched = fetch(f"{constants.ENDPOINT}/api/agent-harnesses", REGISTRY_TIMEOUT)
        except Exception:
            fetched = None
    if fetched is not None:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                json.dump(fetched, f)
        except Exception:
            pass
        return fetched
    return _read_registry(path, None) or {}


def _read_registry(path: str, max_age: float | None) -> object:
    try:
        if not os.path.exists(path):
            return None
        if max_age is not None and time.time() - os.path.getmtime(path) >= max_age:
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except Exception:
        return None
