"""Print `name==X` for every `name>=X` lower bound pyproject.toml declares (dependencies and the dev extras), so
CI can install the lowest versions the project claims to support (`pip install -c`)."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

def _key(version: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", version)]


project = tomllib.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml").read_text())["project"]
reqs = list(project["dependencies"])
for extra, items in project.get("optional-dependencies", {}).items():
    reqs += [r for r in items if not r.startswith(project["name"])]
pins: dict[str, str] = {}
markers: dict[str, str] = {}
for r in reqs:
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*([^;]*)(;.*)?$", r)
    if not m:
        continue
    low = re.search(r">=\s*([0-9][^,\s]*)", m.group(2))
    if low:
        name = m.group(1).lower().replace("_", "-")
        pins[name] = max(pins.get(name, low.group(1)), low.group(1), key=_key)
        markers[name] = m.group(3) or ""
for name, version in sorted(pins.items()):
    print(f"{name}=={version}{markers[name]}")
