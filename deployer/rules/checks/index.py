"""``index``: a non-empty list of distinct index patterns."""

from __future__ import annotations

from collections.abc import Iterator

from deployer.rules.checks.base import Context, finding, short, type_name
from deployer.rules.findings import Finding
from deployer.rules.loader import RuleFile

# Index patterns of Kibana's alerts indices: rules over other rules' alerts read these.
ALERTS_INDEX_PREFIXES = (".alerts-security.alerts-", ".internal.alerts-security.alerts-")


def check_index(rule: RuleFile, ctx: Context) -> Iterator[Finding]:
    """``index`` is a non-empty list of non-empty index patterns."""
    if "index" not in rule.data:
        yield finding(
            rule,
            rule.position(()),
            "index",
            "missing required key 'index'",
            "list the index patterns the rule searches, e.g. [logs-endpoint.events.*]",
        )
        return
    index = rule.data["index"]
    pos = rule.position(("index",))
    if not isinstance(index, list):
        yield finding(
            rule,
            pos,
            "index",
            f"index: expected a list of index patterns, got {type_name(index)}",
            f"write a list: [{index}]" if isinstance(index, str) else None,
        )
        return
    if not index:
        yield finding(
            rule,
            pos,
            "index",
            "index: is empty; the rule would search nothing",
            "list the index patterns the rule searches, e.g. [logs-endpoint.events.*]",
        )
        return
    seen: set[str] = set()
    for i, pattern in enumerate(index):
        ipos = rule.value_position(("index", i))
        if not isinstance(pattern, str) or not pattern.strip():
            yield finding(
                rule, ipos, "index", f"index[{i}]: expected a non-empty index pattern, got {short(pattern)}"
            )
        elif pattern != pattern.strip() or " " in pattern or "," in pattern:
            yield finding(
                rule,
                ipos,
                "index",
                f"index[{i}]: {pattern!r} contains spaces or commas",
                "one pattern per list item, without spaces",
            )
        elif pattern in seen:
            yield finding(rule, ipos, "index", f"index[{i}]: {pattern!r} is listed twice")
        else:
            seen.add(pattern)


def over_alerts(rule: RuleFile) -> bool:
    """Whether every index pattern of the rule is a Kibana alerts index."""
    index = rule.data.get("index")
    return (
        isinstance(index, list)
        and bool(index)
        and all(isinstance(p, str) and p.startswith(ALERTS_INDEX_PREFIXES) for p in index)
    )
