"""`scan --html`: one self-contained page (inline CSS and SVG, no script, no network) showing where the bytes
are as a treemap (areas, then repos / prepared datasets / modules inside them), the problem list, the largest
repos and what `prune` and `dedup` would reclaim."""

from __future__ import annotations

import html
from collections.abc import Sequence

from hfcache.render.scan import ago, human_size
from hfcache.scan.model import CacheScan

WIDTH, HEIGHT = 1200, 640
COLORS = {"hub": "#f4b942", "datasets": "#5aa9e6", "modules": "#9d7bd8", "xet": "#58c48a", "assets": "#e58fb1",
          "metrics": "#e07a5f", "evaluate": "#81b29a"}
OTHER_COLOR = "#b8b8b8"
MAX_CHILDREN = 80

Rect = tuple[float, float, float, float]


def _worst(row: Sequence[float], side: float) -> float:
    s = sum(row)
    return max(max(side * side * r / (s * s), (s * s) / (side * side * r)) for r in row)


def squarify(values: Sequence[float], x: float, y: float, w: float, h: float) -> list[Rect]:
    """Squarified treemap (Bruls, Huizing, van Wijk): rectangles for `values` (sorted, largest first) that
    tile the box, each with area proportional to its value and aspect ratios kept near 1."""
    total = sum(values)
    if total <= 0 or w <= 0 or h <= 0:
        return [(x, y, 0.0, 0.0) for _ in values]
    scaled = [v * w * h / total for v in values]
    rects: list[Rect] = []
    i = 0
    while i < len(scaled):
        side = min(w, h)
        row = [scaled[i]]
        i += 1
        while i < len(scaled) and _worst([*row, scaled[i]], side) <= _worst(row, side):
            row.append(scaled[i])
            i += 1
        s = sum(row)
        if w >= h:
            cw = s / h if h else 0
            yy = y
            for r in row:
                rh = r / cw if cw else 0
                rects.append((x, yy, cw, rh))
                yy += rh
            x, w = x + cw, w - cw
        else:
            rh = s / w if w else 0
            xx = x
            for r in row:
                rw = r / rh if rh else 0
                rects.append((xx, y, rw, rh))
                xx += rw
            y, h = y + rh, h - rh
    return rects


def _children(scan: CacheScan, area: str) -> list[tuple[str, int]]:
    if area == "hub":
        items = [(r.cache_id, r.bytes) for r in scan.hub.repos]
    elif area == "datasets":
        items = [(f"{p.builder}/{p.config}/{p.fingerprint[:8]}", p.bytes) for p in scan.datasets.prepared]
        items += [(f"download {d.url or d.path}", d.bytes) for d in scan.datasets.downloads]
        items += [(f"extracted {d.path.rsplit('/', 1)[-1][:12]}", d.bytes) for d in scan.datasets.extracted]
    elif area == "modules":
        items = [(f"{m.group}/{m.name}", m.bytes) for m in scan.modules]
    else:
        items = []
    items = sorted((i for i in items if i[1] > 0), key=lambda i: -i[1])
    if len(items) > MAX_CHILDREN:
        rest = items[MAX_CHILDREN:]
        items = items[:MAX_CHILDREN] + [(f"{len(rest):,} more", sum(b for _, b in rest))]  # grey, last
    return items


def _svg(scan: CacheScan) -> str:
    e = html.escape
    areas = [(a.name, a.bytes, COLORS.get(a.name, OTHER_COLOR)) for a in scan.areas if a.bytes > 0]
    areas += [(f"other: {a.name}", a.bytes, OTHER_COLOR) for a in scan.others if a.bytes > 0]
    areas.sort(key=lambda a: -a[1])
    parts = [f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="treemap of the cache">']
    if not areas:
        parts.append('<text x="20" y="40">The caches are empty.</text></svg>')
        return "".join(parts)
    for (name, nbytes, color), (x, y, w, h) in zip(areas, squarify([a[1] for a in areas], 0, 0, WIDTH, HEIGHT),
                                                   strict=True):
        parts.append(f'<g><title>{e(name)}: {human_size(nbytes)}</title>'
                     f'<rect class="area" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{color}"/>')
        head = 18 if h > 40 and w > 60 else 0
        if head:
            parts.append(f'<text class="area-label" x="{x + 4:.1f}" y="{y + 14:.1f}">{e(name)} '
                         f'{human_size(nbytes)}</text>')
        kids = _children(scan, name)
        if kids and h - head > 10:
            inner = squarify([k[1] for k in kids], x + 2, y + head, w - 4, h - head - 2)
            for (label, kb), (cx, cy, cw, ch) in zip(kids, inner, strict=True):
                fill = OTHER_COLOR if label.endswith(" more") else color
                parts.append(f'<g><title>{e(label)}: {human_size(kb)}</title><rect class="item" x="{cx:.1f}" '
                             f'y="{cy:.1f}" width="{cw:.1f}" height="{ch:.1f}" fill="{fill}"/>')
                chars = int((cw - 4) / 6)
                if chars >= 4 and ch > 15:
                    short = label if len(label) <= chars else "…" + label[-(chars - 1):]  # the name is at the end
                    parts.append(f'<text x="{cx + 3:.1f}" y="{cy + 12:.1f}">{e(short)}</text>')
                if chars >= 6 and ch > 28:
                    parts.append(f'<text class="size" x="{cx + 3:.1f}" y="{cy + 25:.1f}">{human_size(kb)}</text>')
                parts.append("</g>")
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px}
svg{width:100%;height:auto;background:#fff;border:1px solid #ddd}
rect.area{stroke:#fff;stroke-width:2} rect.item{stroke:#fff;stroke-width:1;fill-opacity:.55}
svg text{font-size:10px;fill:#111;pointer-events:none} text.area-label{font-weight:600;font-size:12px}
text.size{fill:#333}
table{border-collapse:collapse;background:#fff} td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums} .muted{color:#777} code{font-size:12px}
"""


def render_html(scan: CacheScan, limit: int = 30) -> str:
    e, now = html.escape, scan.scanned_at
    r = scan.reclaimable
    rows_areas = "".join(
        f"<tr><td>{e(a.name)}</td><td><code>{e(a.path)}</code></td><td class=n>{a.files:,}</td>"
        f"<td class=n>{human_size(a.bytes)}</td></tr>" for a in (*scan.areas, *scan.others) if a.exists)
    repos = sorted(scan.hub.repos, key=lambda x: -x.size_on_disk)[:limit]
    rows_repos = "".join(
        f"<tr><td>{e(x.cache_id)}</td><td class=n>{len(x.revisions)}</td><td class=n>{x.nb_files:,}</td>"
        f"<td class=n>{human_size(x.size_on_disk)}</td><td>{ago(x.last_accessed, now)}</td>"
        f"<td>{e(' '.join(x.refs))}</td></tr>" for x in repos)
    rows_problems = "".join(
        f"<tr><td>{e(p.kind)}</td><td><code>{e(p.path)}</code></td><td class=n>{human_size(p.bytes)}</td>"
        f"<td>{e(p.fix or '-')}</td><td>{e(p.detail)}</td></tr>" for g in scan.problems for p in g.examples)
    more = sum(g.count - len(g.examples) for g in scan.problems)
    problems = (f"<table><tr><th>kind</th><th>path</th><th>bytes</th><th>fix</th><th>detail</th></tr>"
                f"{rows_problems}</table>" + (f"<p class=muted>… and {more:,} more.</p>" if more else "")
                if scan.problems else "<p>No problems found.</p>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hfcache scan: {e(scan.roots['home'])}</title>
<style>{CSS}</style></head><body>
<h1>{e(scan.roots['home'])}: {human_size(scan.bytes)}</h1>
<p class=muted>Scanned {len(scan.hub.repos):,} hub repos in {scan.seconds:.2f} s.
Token file: {"present (not read)" if scan.token_file else "none"}.</p>
<h2>Where the bytes are</h2>{_svg(scan)}
<h2>Areas</h2><table><tr><th>area</th><th>path</th><th>files</th><th>size</th></tr>{rows_areas}</table>
<h2>Reclaimable</h2><p><code>hfcache prune</code> ~{human_size(r.prune)} (detached revisions
{human_size(r.detached)}, orphan blobs {human_size(r.orphans)}, leftovers {human_size(r.leftovers)});
<code>hfcache dedup</code> ~{human_size(r.dedup)}.</p>
<h2>Problems ({sum(g.count for g in scan.problems):,})</h2>{problems}
<h2>Largest repos</h2><table><tr><th>repo</th><th>revisions</th><th>files</th><th>size</th><th>accessed</th>
<th>refs</th></tr>{rows_repos}</table>
</body></html>
"""
