"""What a safety check says about one file (`FileVerdict`) and the builder the format checkers fill (`Outcome`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hfcache.safety.pickles import PickleScan
from hfcache.safety.policy import CRITICAL, RANK, SAFE, UNKNOWN, UNSAFE, Policy


@dataclass(frozen=True)
class FileVerdict:
    """One physical file's verdict: `safe`, `unknown`, `unsafe` or `critical`, and why.

    `imports` lists every import its pickles make (`module.name`), graded; what a user stuck on
    `torch.load(weights_only=True)` needs to know. `info` holds format details (tensors, dtypes, metadata...).
    """

    format: str
    verdict: str
    reasons: tuple[str, ...] = ()
    imports: tuple[tuple[str, str], ...] = ()  # (module.name, grade), sorted
    notes: tuple[str, ...] = ()  # for review or information, not a reason to fail (a GGUF chat template)
    info: dict = field(default_factory=dict, compare=False)

    @property
    def safe(self) -> bool:
        return self.verdict == SAFE

    def to_json(self) -> dict:
        return {"format": self.format, "verdict": self.verdict, "reasons": list(self.reasons),
                "imports": [{"name": n, "grade": g} for n, g in self.imports], "notes": list(self.notes),
                "info": self.info}

    @classmethod
    def from_json(cls, data: dict) -> FileVerdict:
        return cls(str(data["format"]), str(data["verdict"]), tuple(data.get("reasons", ())),
                   tuple((i["name"], i["grade"]) for i in data.get("imports", ())), tuple(data.get("notes", ())),
                   dict(data.get("info", {})))


class Outcome:
    """Filled while one file is read; `freeze()` gives its verdict."""

    def __init__(self, fmt: str, policy: Policy) -> None:
        self.format, self.policy = fmt, policy
        self.grade = SAFE
        self.reasons: list[str] = []
        self.imports: dict[str, str] = {}
        self.notes: list[str] = []
        self.info: dict = {}

    def flag(self, grade: str, reason: str) -> None:
        if RANK[grade] > RANK[self.grade]:
            self.grade = grade
        if reason not in self.reasons:
            self.reasons.append(reason)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def add_pickle(self, scan: PickleScan, where: str = "") -> None:
        """Grade every import; an error or a name that cannot be resolved is never safe."""
        at = f" in {where}" if where else ""
        for imp in scan.imports:
            grade = self.policy.grade(imp.full)
            self.imports[imp.full] = grade
            if grade != SAFE:
                self.flag(grade, f"{grade} import {imp.full} ({imp.opcode} at byte {imp.offset}{at})")
        for u in scan.unresolved:
            self.flag(UNSAFE, f"unresolvable import: {u}{at}")
        if scan.error:
            self.flag(UNSAFE, f"malformed pickle{at}: {scan.error} (a loader runs what came before)")
        for n in scan.notes:
            self.note(f"{n}{at}")
        self.info["pickles"] = self.info.get("pickles", 0) + scan.pickles

    def freeze(self) -> FileVerdict:
        return FileVerdict(self.format, self.grade, tuple(self.reasons), tuple(sorted(self.imports.items())),
                           tuple(self.notes), self.info)


__all__ = ["CRITICAL", "SAFE", "UNKNOWN", "UNSAFE", "FileVerdict", "Outcome"]
