"""One warning for a rule whose fields could not all be checked: index patterns without a field pack.

A field outside ECS, the extra fields and the packs of the rule's index patterns may come from an
index pattern no pack covers; such fields are listed in one warning per rule instead of one error
per field (a name one edit from a known field is still reported as a typo by the field checks).
"""

from __future__ import annotations

from collections.abc import Iterator

from deployer.eql import ast
from deployer.eql.errors import EqlError
from deployer.rules.checks.base import Context, finding
from deployer.rules.checks.field_settings import setting_fields
from deployer.rules.checks.query import parse_query
from deployer.rules.findings import WARNING, Finding
from deployer.rules.loader import RuleFile

_LISTED = 5  # field names quoted in the message; the rest are counted


def check_field_packs(rule: RuleFile, ctx: Context) -> Iterator[Finding]:
    """One ``field-pack`` warning when fields could not be verified for want of a pack."""
    known = ctx.fields_for(rule)
    if not known.uncovered:
        return
    names: list[str] = []
    query = rule.data.get("query")
    if isinstance(query, str) and query.strip():
        try:
            names.extend(ref.name for ref in ast.field_refs(parse_query(query)))
        except EqlError:
            pass  # reported by the query check
    names.extend(name for _, name in setting_fields(rule))
    unverified = sorted({n for n in names if known.registry.get(n) is None and known.unverified(n)})
    if not unverified:
        return
    shown = ", ".join(unverified[:_LISTED]) + (
        f" and {len(unverified) - _LISTED} more" if len(unverified) > _LISTED else ""
    )
    patterns = ", ".join(known.uncovered)
    yield finding(
        rule,
        rule.position(("index",)),
        "field-pack",
        f"no field pack for index pattern(s) {patterns}: {len(unverified)} field(s) outside ECS"
        f"{' and ' + ', '.join(known.packs) if known.packs else ''} not checked: {shown}",
        "map the pattern(s) to a pack in dac.yaml (validation.field_packs); "
        "`dac fields pull --url URL --index PATTERN --out FILE` writes one from a live cluster",
        WARNING,
    )
