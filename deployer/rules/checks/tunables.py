"""``tunables``: every marked literal in the query matches the analytics' tunables file."""

from __future__ import annotations

from collections.abc import Iterator

from deployer.rules.checks.base import Context, finding
from deployer.rules.findings import Finding
from deployer.rules.loader import RuleFile
from deployer.rules.tunables import MARKER, TunablesError, problems


def check_tunables(rule: RuleFile, ctx: Context) -> Iterator[Finding]:
    """Markers name a defined tunable and the literal after each equals the tunables file's value."""
    query = rule.data.get("query")
    if not isinstance(query, str) or not MARKER.search(query):
        return
    try:
        tunables = ctx.tunables
    except TunablesError as exc:
        yield finding(rule, rule.position(("query",)), "tunables", str(exc), "fix the tunables file")
        return
    if tunables is None:
        yield finding(
            rule,
            rule.position(("query",)),
            "tunables",
            "the query marks tunables but no tunables file is configured",
            "set validation.tunables in dac.yaml",
        )
        return
    for occ, message, hint in problems(query, tunables):
        line = query.count("\n", 0, occ.marker_start) + 1
        column = occ.marker_start - (query.rfind("\n", 0, occ.marker_start) + 1) + 1
        yield finding(rule, rule.query_position(line, column), "tunables", message, hint)
