"""Rendering `verify` and `lock` results: a summary and a rich table on a terminal, plain lines in a pipe, JSON for
machines, JUnit XML for CI (each repo a test case). The work lives in `verify.py`; nothing here decides."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

from hfcache.errors import UsageError
from hfcache.render.console import human_size, print_json
from hfcache.units import counted
from hfcache.verify.report import ERROR, Problem, VerifyReport


def summary(report: VerifyReport) -> str:
    snaps = sum(len(r.snapshots) for r in report.repos)
    verdict = "intact" if report.ok else counted(len(report.errors), "problem")
    warn = f", {counted(len(report.warnings), 'warning')}" if report.warnings else ""
    return (f"{verdict}{warn}: {counted(report.files, 'file')} in {counted(len(report.repos), 'repo')} "
            f"({counted(snaps, 'snapshot')}), {counted(report.blobs, 'blob')}, {human_size(report.bytes)} hashed "
            f"in {report.seconds:.2f} s ({report.gib_per_s:.2f} GiB/s, {counted(report.jobs, 'job')})")


def _short(p: Problem, text: str | None) -> str:
    """Paths without their repo folder: the repo is in its own column."""
    if text is None:
        return ""
    rtype, _, rid = p.repo.rpartition(":")
    folder = f"{rtype or 'model'}s--{rid.replace('/', '--')}/"
    return text.removeprefix(folder)


def render_report(report: VerifyReport, repaired=(), as_json: bool = False) -> None:
    if as_json:
        print_json(report_json(report, repaired))
        return
    for r in repaired:
        print(f"repaired: {r.action} {r.path}" + (f" ({human_size(r.bytes)})" if r.bytes else ""))
    if report.problems and sys.stdout.isatty():
        _table(report)
    else:
        for p in report.problems:
            print(f"{p.severity}: {p.repo}: {p.describe()}")
    print(summary(report))


TABLE_ROWS = 50
_HEX = re.compile(r"\b([0-9a-f]{12})[0-9a-f]{28}(?:[0-9a-f]{24})?\b")


def _abbrev(text: str | None) -> str:
    """Commits and blob hashes cut to 12 hex digits, as git shows them; --json has them whole."""
    return _HEX.sub(r"\1…", text or "")


def _table(report: VerifyReport) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"problems in {report.cache_dir}", title_justify="left", expand=True)
    table.add_column("", width=1)
    table.add_column("kind", no_wrap=True)
    table.add_column("repo", overflow="fold", ratio=1, min_width=8)
    table.add_column("where", overflow="fold", ratio=4)
    table.add_column("expected", overflow="fold", ratio=2)
    table.add_column("got", overflow="fold", ratio=2)
    table.add_column("per", no_wrap=True)
    shown = report.problems[:TABLE_ROWS]  # a terminal is for reading; --json and piped output list all
    for p in shown:
        where = [_short(p, p.blob)] * bool(p.blob) + [("← " if p.blob else "") + _short(p, x) for x in p.paths]
        table.add_row("[red]✗[/]" if p.severity == ERROR else "[yellow]![/]", p.kind, escape(p.repo),
                      escape(_abbrev("\n".join(where))), escape(_abbrev(p.expected)), escape(_abbrev(p.actual)),
                      "+".join(p.sources))
    Console(highlight=False).print(table)
    if len(report.problems) > len(shown):
        print(f"… and {len(report.problems) - len(shown):,} more problems (all of them with --json, or when "
              "the output is piped)")


class HashProgress:
    """Bytes, speed and files hashed, on stderr; only made when stderr is a terminal."""

    def __init__(self, label: str = "verify") -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        from hfcache.render.console import stderr_console

        self._p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                           TransferSpeedColumn(), TimeRemainingColumn(), console=stderr_console(), transient=True)
        self._label, self._task, self._files, self._done = label, None, 0, 0

    def start(self, files: int, total_bytes: int) -> None:
        self._files = files
        self._p.start()
        self._task = self._p.add_task(f"{self._label} 0/{counted(files, 'file')}", total=total_bytes)

    def advance(self, nbytes: int) -> None:
        self._p.advance(self._task, nbytes)

    def file_done(self, path: str, size: int, fetched: bool) -> None:
        self._done += 1
        self._p.update(self._task, description=f"{self._label} {self._done}/{counted(self._files, 'file')}")

    def stop(self) -> None:
        self._p.stop()


def report_json(report: VerifyReport, repaired=()) -> dict:
    return {
        "ok": report.ok, "cache_dir": str(report.cache_dir), "files": report.files, "blobs": report.blobs,
        "bytes": report.bytes, "seconds": round(report.seconds, 3), "gib_per_s": round(report.gib_per_s, 3),
        "jobs": report.jobs, "online": report.online, "lock": report.lock,
        "errors": len(report.errors), "warnings": len(report.warnings),
        "repos": [{"repo_id": r.repo_id, "repo_type": r.repo_type, "ok": r.ok, "snapshots": list(r.snapshots),
                   "files": r.files, "blobs": r.blobs, "bytes": r.bytes, "problems": len(r.problems)}
                  for r in report.repos],
        "problems": [dataclasses.asdict(p) for p in report.problems],
        "repaired": [dataclasses.asdict(r) for r in repaired],
    }


def junit_xml(report: VerifyReport) -> bytes:
    """One test suite; each repo a test case that fails on its errors (warnings go to system-out)."""
    import xml.etree.ElementTree as ET

    failed = sum(1 for r in report.repos if not r.ok)
    attrs = {"tests": str(len(report.repos)), "failures": str(failed), "errors": "0",
             "time": f"{report.seconds:.3f}"}
    suites = ET.Element("testsuites", name="hfcache verify", **attrs)
    suite = ET.SubElement(suites, "testsuite", name="hfcache verify", skipped="0", **attrs)
    for r in report.repos:
        case = ET.SubElement(suite, "testcase", classname=f"hfcache.verify.check.{r.repo_type}", name=r.name)
        errors = [p for p in r.problems if p.severity == ERROR]
        warnings = [p for p in r.problems if p.severity != ERROR]
        if errors:
            kinds = ", ".join(sorted({p.kind for p in errors}))
            failure = ET.SubElement(case, "failure", type=errors[0].kind,
                                    message=f"{counted(len(errors), 'problem')}: {kinds}")
            failure.text = "\n".join(p.describe() for p in errors)
        out = [f"{counted(r.files, 'file')}, {counted(r.blobs, 'blob')}, {counted(r.bytes, 'byte')} hashed; "
               f"snapshots: {', '.join(r.snapshots)}"]
        out += [f"warning: {p.describe()}" for p in warnings]
        ET.SubElement(case, "system-out").text = "\n".join(out)
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit(path: Path, report: VerifyReport) -> None:
    try:
        Path(path).write_bytes(junit_xml(report))
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None


def render_lock(lock, path: str, as_json: bool) -> None:
    rows = [{"repo_id": e.repo.repo_id, "repo_type": e.repo.repo_type, "revision": e.revision, "commit": e.commit,
             "files": len(e.files), "bytes": sum(f.size for f in e.files.values())} for e in lock.repos]
    if as_json:
        print_json({"path": path, "repos": rows})
        return
    for e, row in zip(lock.repos, rows, strict=True):
        print(f"{e.repo}@{e.revision} → {e.commit}: {counted(row['files'], 'file')}, {human_size(row['bytes'])}")
    print(f"wrote {path}")
