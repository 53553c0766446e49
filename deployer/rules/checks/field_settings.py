"""Field names outside the query (required_fields, investigation_fields, overrides, ...)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from deployer.rules.checks.base import Context, article, finding, unknown_field_hint, where
from deployer.rules.findings import WARNING, Finding
from deployer.rules.loader import RuleFile

_FIELD_SETTINGS: tuple[tuple[str, ...], ...] = (
    ("timestamp_override",),
    ("timestamp_field",),
    ("tiebreaker_field",),
    ("event_category_override",),
    ("rule_name_override",),
)


def setting_fields(rule: RuleFile) -> list[tuple[tuple[Any, ...], str]]:
    """(YAML path, field name) of every field named outside the query."""
    refs: list[tuple[tuple[Any, ...], Any]] = []
    for path in _FIELD_SETTINGS:
        refs.append((path, rule.data.get(path[0])))
    required = rule.data.get("required_fields")
    if isinstance(required, list):
        for i, item in enumerate(required):
            if isinstance(item, dict):
                refs.append((("required_fields", i, "name"), item.get("name")))
    inv = rule.data.get("investigation_fields")
    if isinstance(inv, dict) and isinstance(inv.get("field_names"), list):
        refs.extend((("investigation_fields", "field_names", i), n) for i, n in enumerate(inv["field_names"]))
    sup = rule.data.get("alert_suppression")
    if isinstance(sup, dict) and isinstance(sup.get("group_by"), list):
        refs.extend((("alert_suppression", "group_by", i), n) for i, n in enumerate(sup["group_by"]))
    for key in ("severity_mapping", "risk_score_mapping"):
        items = rule.data.get(key)
        if isinstance(items, list):
            refs.extend(
                ((key, i, "field"), it.get("field")) for i, it in enumerate(items) if isinstance(it, dict)
            )
    return [(path, name) for path, name in refs if isinstance(name, str) and name]


def check_field_settings(rule: RuleFile, ctx: Context) -> Iterator[Finding]:
    """Field names outside the query (required_fields, investigation_fields, overrides, ...) exist."""
    known = ctx.fields_for(rule)
    for path, name in setting_fields(rule):
        info = known.registry.get(name)
        if info is None:
            if not known.unverified(name):
                yield finding(
                    rule,
                    rule.value_position(path),
                    "unknown-field",
                    f"{where(path)}: {known.unknown_message(name)}",
                    unknown_field_hint(known.registry, name),
                )
            continue
        if path[0] == "required_fields":
            declared = rule.data["required_fields"][path[1]].get("type")
            if isinstance(declared, str) and declared != info.type:
                yield finding(
                    rule,
                    rule.value_position((*path[:2], "type")),
                    "field-type",
                    f"required_fields[{path[1]}]: '{name}' is {info.type}, not {declared}",
                    f"type: {info.type}",
                    WARNING,
                )
        if path[0] in ("timestamp_override", "timestamp_field") and info.kind != "date":
            yield finding(
                rule,
                rule.value_position(path),
                "field-type",
                f"{path[0]}: '{name}' is {article(info.type)} field, not a date",
            )
