"""Findings: every problem the tool reports about a rule file, and their output formats."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

ERROR = "error"
WARNING = "warning"

FORMATS = ("text", "json", "github")


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem at ``path:line:column`` (1-based) with a stable ``code``."""

    path: str
    line: int
    column: int
    rule_id: str | None
    code: str
    severity: str
    message: str
    hint: str | None = None

    def format_text(self) -> str:
        """``path:line:col: rule_id: message (hint: ...)``, the form editors and terminals link."""
        rid = self.rule_id if self.rule_id else "-"
        tail = f" (hint: {self.hint})" if self.hint else ""
        level = "" if self.severity == ERROR else f"{self.severity}: "
        return f"{self.path}:{self.line}:{self.column}: {rid}: {level}{self.message}{tail} [{self.code}]"

    def to_dict(self) -> dict[str, object]:
        """The JSON object for ``--format json``."""
        return asdict(self)

    def format_github(self) -> str:
        """A GitHub Actions workflow command that annotates the line in a pull request."""
        level = "error" if self.severity == ERROR else "warning"
        text = self.message if not self.hint else f"{self.message} (hint: {self.hint})"
        if self.rule_id:
            text = f"{self.rule_id}: {text}"
        props = (
            f"file={_gh_property(self.path)},line={self.line},col={self.column},"
            f"title={_gh_property(self.code)}"
        )
        return f"::{level} {props}::{_gh_data(text)}"


def _gh_data(value: str) -> str:
    # Escapes GitHub's workflow-command parser requires in the message part.
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_property(value: str) -> str:
    # Property values additionally must not contain the ':' and ',' separators.
    return _gh_data(value).replace(":", "%3A").replace(",", "%2C")


def sort_key(finding: Finding) -> tuple[str, int, int, str, str]:
    """Stable order: by file, position, code, message."""
    return (finding.path, finding.line, finding.column, finding.code, finding.message)


def has_errors(findings: Iterable[Finding]) -> bool:
    """True when any finding is an error (warnings alone do not fail a run)."""
    return any(f.severity == ERROR for f in findings)


def format_findings(findings: Iterable[Finding], fmt: str = "text") -> str:
    """Render findings as ``text``, ``json`` (an array) or ``github`` annotations."""
    items = sorted(findings, key=sort_key)
    if fmt == "json":
        return json.dumps([f.to_dict() for f in items], indent=2, ensure_ascii=False)
    if fmt == "github":
        return "\n".join(f.format_github() for f in items)
    if fmt == "text":
        return "\n".join(f.format_text() for f in items)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
