"""Print `name==X` for every `name>=X` lower bound pyproject.toml declares (dependencies and the dev extras), so
CI can install the lowest versions the project claims to support (`pip install -c`).

`lowest.py pyproject.toml --check` instead checks that the running environment holds exactly those versions."""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: pip carries a copy of its predecessor
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

def _key(version: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", version)]


args = [a for a in sys.argv[1:] if not a.startswith("--")]
project = tomllib.loads(Path(args[0] if args else "pyproject.toml").read_text())["project"]
reqs = list(project["dependencies"])
for items in project.get("optional-dependencies", {}).values():
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
if "--check" not in sys.argv:
    for name, version in sorted(pins.items()):
        print(f"{name}=={version}{markers[name]}")
    sys.exit(0)

from importlib.metadata import PackageNotFoundError, version  # noqa: E402

from packaging.markers import Marker  # noqa: E402
from packaging.version import Version  # noqa: E402

wrong = []
for name, low in sorted(pins.items()):
    if markers[name] and not Marker(markers[name].lstrip("; ")).evaluate():
        continue
    try:
        got = version(name)
    except PackageNotFoundError:
        got = "absent"
    if got == "absent" or Version(got) != Version(low):
        wrong.append(f"{name}: {got}, not {low}")
    else:
        print(f"{name}=={got}")
if wrong:
    sys.exit("not the lowest versions: " + "; ".join(wrong))
