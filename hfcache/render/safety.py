"""Rendering safety results (`verify --safety`, `inspect`): lines or a rich table, JSON, JUnit XML. Nothing here
decides; `hfcache.safety` does."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from hfcache.errors import UsageError
from hfcache.render.console import human_size, print_json
from hfcache.safety.check import FileEntry, SafetyReport
from hfcache.safety.policy import CRITICAL, SAFE, UNKNOWN, UNSAFE
from hfcache.units import counted

_MARK = {SAFE: "[green]✓[/]", UNKNOWN: "[yellow]?[/]", UNSAFE: "[red]✗[/]", CRITICAL: "[bold red]‼[/]"}
TABLE_ROWS = 50


def summary(report: SafetyReport) -> str:
    n = len(report.files)
    bad = [f"{report.count(v)} {v}" for v in (CRITICAL, UNSAFE, UNKNOWN) if report.count(v)]
    head = "safe to load" if report.ok else ", ".join(bad) or "incomplete"
    missing = f", {len(report.missing)} missing" if report.missing else ""
    pickles = sum(1 for f in report.files if f.verdict.info.get("pickles"))
    return (f"{head}{missing}: {counted(n, 'file')} ({counted(pickles, 'pickle-format file')}), "
            f"{report.read} read, {n - report.read} remembered ({human_size(report.bytes_read)} checked) "
            f"in {report.seconds:.2f} s; policy {report.policy}")


def _line(f: FileEntry) -> str:
    v = f.verdict
    where = f"{f.repo}: {f.where}" if f.repo else f.where
    extra = f" (also {', '.join(f.paths[1:])})" if len(f.paths) > 1 else ""
    return f"{v.verdict}: {where} [{v.format}]{extra}: " + "; ".join(v.reasons)


def render_safety(report: SafetyReport, as_json: bool = False) -> None:
    """Unsafe and unknown files first (with every snapshot path), then the summary."""
    if as_json:
        print_json(safety_json(report))
        return
    bad = [f for f in report.files if not f.verdict.safe]
    if bad and sys.stdout.isatty():
        _table(report, bad)
    else:
        for f in bad:
            print(_line(f))
    for m in report.missing:
        print(f"missing: {m}")
    for f in report.files:
        for note in f.verdict.notes:
            if note.startswith("review"):
                print(f"note: {f.where}: {note}")
    print(summary(report))


def _table(report: SafetyReport, bad: list[FileEntry]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"not safe to load ({report.root or 'paths'})", title_justify="left", expand=True)
    table.add_column("", width=1)
    table.add_column("verdict", no_wrap=True)
    table.add_column("file", overflow="fold", ratio=3)
    table.add_column("format", no_wrap=True)
    table.add_column("why", overflow="fold", ratio=4)
    for f in bad[:TABLE_ROWS]:
        where = "\n".join(f.paths) or (f.blob or "")
        table.add_row(_MARK[f.verdict.verdict], f.verdict.verdict, escape(where), f.verdict.format,
                      escape("\n".join(f.verdict.reasons)))
    Console(highlight=False).print(table)
    if len(bad) > TABLE_ROWS:
        print(f"… and {len(bad) - TABLE_ROWS:,} more (all of them with --json, or when the output is piped)")


def entry_json(f: FileEntry) -> dict:
    return {"repo": f.repo, "blob": f.blob, "paths": list(f.paths), "size": f.size, "remembered": f.remembered,
            **f.verdict.to_json()}


def safety_json(report: SafetyReport, every_file: bool = False) -> dict:
    """`results` lists the files that are not safe (or carry a note), as verify lists problems; `every_file` (for
    `inspect`) lists all of them with their details."""
    shown = [f for f in report.files if every_file or not f.verdict.safe or f.verdict.notes]
    return {"ok": report.ok, "cache_dir": str(report.root) if report.root else None, "policy": report.policy,
            "allowed": [{"name": n, "reason": r} for n, r in report.allowed],
            "files": len(report.files), "read": report.read, "remembered": len(report.files) - report.read,
            "bytes_read": report.bytes_read, "seconds": round(report.seconds, 3),
            "counts": {v: report.count(v) for v in (SAFE, UNKNOWN, UNSAFE, CRITICAL)},
            "missing": list(report.missing), "repos": list(report.repos),
            "results": [entry_json(f) for f in shown]}


def junit_suite(report: SafetyReport) -> ET.Element:
    """One test case per repo (per file for plain paths): it fails when a file is not safe to load."""
    groups: dict[str, list[FileEntry]] = {r: [] for r in report.repos}
    for f in report.files:
        groups.setdefault(f.repo or f.where, []).append(f)
    failed = sum(1 for files in groups.values() if any(not f.verdict.safe for f in files))
    attrs = {"tests": str(len(groups)), "failures": str(failed), "errors": "0", "time": f"{report.seconds:.3f}"}
    suite = ET.Element("testsuite", name="hfcache verify --safety", skipped="0", **attrs)
    for name, files in groups.items():
        case = ET.SubElement(suite, "testcase", classname="hfcache.safety", name=name)
        bad = [f for f in files if not f.verdict.safe]
        if bad:
            worst = max((f.verdict.verdict for f in bad), key=[UNKNOWN, UNSAFE, CRITICAL].index)
            failure = ET.SubElement(case, "failure", type=worst,
                                    message=f"{counted(len(bad), 'file')} not safe to load")
            failure.text = "\n".join(_line(f) for f in bad)
        ET.SubElement(case, "system-out").text = f"{counted(len(files), 'file')} checked; policy {report.policy}"
    return suite


def write_junit(path: Path, report: SafetyReport, verify_report=None) -> None:
    """The safety suite, after verify's own suite when both ran (one file, two test suites)."""
    if verify_report is not None:
        from hfcache.render.verify import junit_xml

        root = ET.fromstring(junit_xml(verify_report))
    else:
        root = ET.Element("testsuites", name="hfcache")
    root.append(junit_suite(report))
    ET.indent(root)
    try:
        Path(path).write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None


def render_inspect(report: SafetyReport, as_json: bool = False) -> None:
    """Per file: format and verdict; safetensors tensors, parameters, dtypes and metadata; a pickle's imports."""
    if as_json:
        print_json(safety_json(report, every_file=True))
        return
    for f in sorted(report.files, key=lambda f: f.where):
        v, info = f.verdict, f.verdict.info
        print(f"{f.where}: {v.format}, {human_size(f.size)}, {v.verdict}")
        if len(f.paths) > 1:
            print(f"  also: {', '.join(f.paths[1:])}")
        if v.format == "safetensors" and "tensors" in info:
            dtypes = ", ".join(f"{k} x{n}" for k, n in info["dtypes"].items())
            print(f"  {info['tensors']:,} tensors, {info['parameters']:,} parameters ({dtypes})")
            for k, val in info.get("metadata", {}).items():
                print(f"  metadata {k}: {val[:200]}")
        if v.format == "gguf":
            print(f"  GGUF v{info.get('version')}, {info.get('tensors', 0):,} tensors, "
                  f"architecture {info.get('architecture')}")
        for name, grade in v.imports:
            print(f"  import {name}: {grade}")
        for r in v.reasons:
            print(f"  why: {r}")
        for n in v.notes:
            print(f"  note: {n}")
    for m in report.missing:
        print(f"missing: {m}")
    print(summary(report))


def render_tally(t) -> None:
    """One line for `scan`: pickle-format files, remembered verdicts, what was never checked."""
    if not t.files:
        return
    bad = ", ".join(f"{n} {v}" for v, n in t.verdicts.items() if n and v != SAFE)
    line = (f"Safety: {counted(t.pickle_format, 'pickle-format file')} of {counted(t.files, 'snapshot file')}; "
            f"{t.checked} checked ({bad or 'all safe'}), {t.files - t.checked} never checked")
    if t.files - t.checked:
        line += " (hfcache verify --safety)"
    print(line)
    for repo, verdict in sorted(t.unsafe_repos.items()):
        print(f"  {verdict}: {repo} (hfcache inspect {repo})")
