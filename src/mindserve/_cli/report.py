"""What a command found: findings grouped under headings, printed for people or as JSON."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

import attrs

#: Finding statuses, from harmless to wrong; only ``fail`` makes the exit status non-zero.
STATUSES = ("ok", "note", "warn", "fail")
_LABELS = {"ok": "ok", "note": "--", "warn": "WARN", "fail": "FAIL"}


@attrs.frozen
class Finding:
    """One line of a report: its heading, status, what was found, and how to fix it."""

    section: str
    status: str = attrs.field(validator=attrs.validators.in_(STATUSES))
    text: str
    fix: str | None = None
    detail: tuple[str, ...] = ()


@attrs.define
class Live:
    """Where a command run from the command line shows what it does as it goes (set by
    :func:`mindserve._cli.main.main`): ``findings`` (each line as it is found, for the text
    report) and ``progress`` (what a slow step is doing, on stderr). ``None``: at the end."""

    findings: TextIO | None = None
    progress: TextIO | None = None


#: The reports made from now on show their findings and progress there (see :class:`Live`).
LIVE = Live()


class Report:
    """The findings of one command, in order, with machine-readable ``data`` beside them."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.findings: list[Finding] = []
        self.data: dict[str, Any] = {}
        self._live = attrs.evolve(LIVE)
        self._section: str | None = None  # the heading last written

    def add(self, section: str, status: str, text: str, fix: str | None = None, detail: Any = ()) -> Finding:
        lines = tuple(detail) if not isinstance(detail, str) else tuple(detail.splitlines())
        finding = Finding(section, status, text, fix, tuple(line for line in lines if line.strip()))
        self.findings.append(finding)
        if self._live.findings is not None:
            self._write_finding(self._live.findings, finding)
            self._live.findings.flush()
        return finding

    def progress(self, text: str) -> None:
        """Say what a slow step is doing (on the command line: on stderr, as it starts)."""
        if self._live.progress is not None:
            self._live.progress.write(f"mindserve {self.command}: {text} ...\n")
            self._live.progress.flush()

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail"]

    @property
    def exit_status(self) -> int:
        return 1 if self.problems else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "ok": not self.problems,
            "problems": len(self.problems),
            "findings": [attrs.asdict(f, value_serializer=_listed) for f in self.findings],
            "data": self.data,
        }

    def write(self, as_json: bool = False, stream: TextIO | None = None) -> None:
        out = stream or sys.stdout
        if as_json:
            json.dump(self.to_json(), out, indent=2, default=str)
            out.write("\n")
            return
        if self._live.findings is None:  # else each was written as it was found
            self._section = None
            for finding in self.findings:
                self._write_finding(out, finding)
        problems = len(self.problems)
        warnings = sum(1 for f in self.findings if f.status == "warn")
        summary = "no problems" if not problems else f"{problems} problem{'s' if problems != 1 else ''}"
        if warnings:
            summary += f", {warnings} warning{'s' if warnings != 1 else ''}"
        out.write(f"\nmindserve {self.command}: {summary}.\n")

    def _write_finding(self, out: TextIO, finding: Finding) -> None:
        if finding.section != self._section:
            self._section = finding.section
            out.write(f"{finding.section}\n")
        out.write(f"  {_LABELS[finding.status]:<5} {_indent(finding.text, 8)}\n")
        for line in finding.detail:
            out.write(f"        {line}\n")
        if finding.fix:
            out.write(f"        fix: {_indent(finding.fix, 13)}\n")


def _indent(text: str, width: int) -> str:
    return text.replace("\n", "\n" + " " * width)


def _listed(instance: Any, field: Any, value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
