"""ATT&CK mapping: ``threat`` and ``metadata.implements`` against MITRE's ATT&CK table.

``threat``: each tactic, technique and sub-technique exists; a technique is current (a revoked
one names its replacement), sits under the mapped tactic, and a sub-technique sits under its
parent; names and reference URLs match. ``metadata.implements``: each AN/DET/T/TA exists; an
analytic runs on every platform the rule does and belongs to the strategies the rule names;
the technique a strategy (or an analytic's strategy) detects, or its parent, is in ``threat``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from deployer.rules import attack
from deployer.rules.checks.base import Context, finding, where
from deployer.rules.findings import WARNING, Finding
from deployer.rules.loader import RuleFile

_TECHNIQUE_ID = re.compile(r"T\d{4}(\.\d{3})?")


def check_attack(rule: RuleFile, ctx: Context) -> Iterator[Finding]:
    """ATT&CK mapping: ids exist and are current, tactics, sub-techniques, implements."""
    table = attack.table()
    threat = rule.data.get("threat")
    mapped: set[str] = set()
    if isinstance(threat, list):
        for i, entry in enumerate(threat):
            if isinstance(entry, dict):
                yield from _check_threat_entry(rule, table, i, entry, mapped)
    implements = rule.metadata.get("implements")
    if isinstance(implements, list):
        yield from _check_implements(rule, table, implements, mapped, isinstance(threat, list))


def _v(table: attack.AttackTable) -> str:
    return f"ATT&CK v{table.version}"


def _check_implements(
    rule: RuleFile, table: attack.AttackTable, implements: list[Any], mapped: set[str], has_threat: bool
) -> Iterator[Finding]:
    named = {item for item in implements if isinstance(item, str)}
    strategies = {item for item in named if item.startswith("DET")}
    platforms = rule.metadata.get("platforms")
    rule_platforms = [p for p in platforms if isinstance(p, str)] if isinstance(platforms, list) else []
    for i, item in enumerate(implements):
        if not isinstance(item, str):
            continue
        pos = rule.value_position(("metadata", "implements", i))
        label = f"metadata.implements[{i}]"
        if item.startswith("TA"):
            if item not in table.tactics:
                yield finding(rule, pos, "attack-id", f"{label}: {item} is not a tactic in {_v(table)}")
        elif item.startswith("DET"):
            strategy = table.strategies.get(item)
            if strategy is None:
                yield finding(
                    rule, pos, "attack-id", f"{label}: {item} is not a detection strategy in {_v(table)}"
                )
            else:
                yield from _detected_in_threat(rule, table, pos, label, item, strategy, mapped)
        elif item.startswith("AN"):
            analytic = table.analytics.get(item)
            if analytic is None:
                yield finding(rule, pos, "attack-id", f"{label}: {item} is not an analytic in {_v(table)}")
                continue
            strategy = table.strategies[analytic.strategy]
            missing = [
                p
                for p in rule_platforms
                if p in attack.PLATFORM_NAMES and attack.PLATFORM_NAMES[p] not in analytic.platforms
            ]  # an unknown platform is a schema finding
            if missing:
                yield finding(
                    rule,
                    pos,
                    "attack-id",
                    f"{label}: {item} is an analytic for {', '.join(analytic.platforms)}, "
                    f"but the rule runs on {', '.join(missing)}",
                    _sibling_hint(table, strategy, missing),
                )
            if strategies and analytic.strategy not in strategies:
                yield finding(
                    rule,
                    pos,
                    "attack-id",
                    f"{label}: {item} belongs to detection strategy {strategy.id} ({strategy.name}), "
                    f"not {', '.join(sorted(strategies))}",
                    f"add {strategy.id} to metadata.implements, or name an analytic of "
                    f"{', '.join(sorted(strategies))}",
                )
            elif analytic.strategy not in strategies:
                yield from _detected_in_threat(rule, table, pos, label, item, strategy, mapped)
        elif _TECHNIQUE_ID.fullmatch(item):
            technique = table.techniques.get(item)
            if technique is None:
                yield finding(rule, pos, "attack-id", f"{label}: {item} is not a technique in {_v(table)}")
            elif not technique.current:
                yield finding(rule, pos, "attack-id", *_stale(table, label, technique), WARNING)
            elif has_threat and item not in mapped:
                yield finding(
                    rule,
                    pos,
                    "attack-id",
                    f"{label}: names {item}, but threat does not map it",
                    "add it to threat so analysts see the mapping in Kibana",
                    WARNING,
                )


def _detected_in_threat(
    rule: RuleFile,
    table: attack.AttackTable,
    pos: tuple[int, int],
    label: str,
    item: str,
    strategy: attack.Strategy,
    mapped: set[str],
) -> Iterator[Finding]:
    """The technique ``strategy`` detects, or its parent, is mapped in ``threat``."""
    technique = table.techniques[strategy.technique]
    accepted = {technique.id} | ({technique.parent} if technique.parent else set())
    if accepted & mapped:
        return
    via = "" if item == strategy.id else f" (through {strategy.id})"
    yield finding(
        rule,
        pos,
        "attack-id",
        f"{label}: {item} detects {technique.id} ({technique.name}){via}, which threat does not map",
        f"map {technique.id} (or its parent) in threat, under tactic {', '.join(technique.tactics)}",
    )


def _sibling_hint(table: attack.AttackTable, strategy: attack.Strategy, missing: list[str]) -> str:
    """Name the analytics of the same strategy that cover the platforms the rule adds."""
    wanted = {attack.PLATFORM_NAMES.get(p) for p in missing}
    others = [
        f"{an} ({', '.join(table.analytics[an].platforms)})"
        for an in strategy.analytics
        if wanted & set(table.analytics[an].platforms)
    ]
    if others:
        return f"{strategy.id} covers those platforms with {', '.join(others)}; or narrow metadata.platforms"
    return "narrow metadata.platforms to the analytic's platforms"


def _stale(table: attack.AttackTable, label: str, technique: attack.Technique) -> tuple[str, str | None]:
    """Message and hint for a revoked or deprecated technique."""
    if technique.revoked_by:
        new = table.techniques[technique.revoked_by]
        return (
            f"{label}: {technique.id} ({technique.name}) is revoked in {_v(table)}, "
            f"replaced by {new.id} ({new.name})",
            f"map {new.id} instead",
        )
    return (
        f"{label}: {technique.id} ({technique.name}) is deprecated in {_v(table)}",
        "map a current technique instead, or drop the mapping",
    )


def _check_threat_entry(
    rule: RuleFile, table: attack.AttackTable, i: int, entry: dict[str, Any], mapped: set[str]
) -> Iterator[Finding]:
    tactic = entry.get("tactic")
    tactic_id = tactic.get("id") if isinstance(tactic, dict) else None
    if isinstance(tactic_id, str) and attack.ATTACK_ID.match(tactic_id):
        base = ("threat", i, "tactic")
        known = table.tactics.get(tactic_id)
        if known is None:
            yield finding(
                rule,
                rule.value_position((*base, "id")),
                "attack-id",
                f"threat[{i}].tactic.id: {tactic_id} is not a tactic in {_v(table)}",
            )
            tactic_id = None
        else:
            mapped.add(tactic_id)
            if (
                isinstance(tactic, dict)
                and isinstance(tactic.get("name"), str)
                and tactic["name"] != known.name
            ):
                yield finding(
                    rule,
                    rule.value_position((*base, "name")),
                    "attack-id",
                    f"threat[{i}].tactic: {tactic_id} is '{known.name}', not '{tactic['name']}'",
                    f"name: {known.name}",
                )
            yield from _check_reference(rule, (*base, "reference"), tactic, tactic_id)
    else:
        tactic_id = None
    techniques = entry.get("technique")
    if not isinstance(techniques, list):
        return
    for j, tech in enumerate(techniques):
        if not isinstance(tech, dict) or not isinstance(tech.get("id"), str):
            continue
        base = ("threat", i, "technique", j)
        tid = tech["id"]
        mapped.add(tid)
        known = table.techniques.get(tid)
        if known is not None and known.parent:
            yield finding(
                rule,
                rule.value_position((*base, "id")),
                "attack-id",
                f"{where(base)}.id: {tid} is a sub-technique of {known.parent}",
                f"map technique {known.parent} here and put {tid} in its subtechnique list",
            )
            continue
        yield from _check_technique(rule, table, base, tech, tid, tactic_id)
        subs = tech.get("subtechnique")
        if not isinstance(subs, list):
            continue
        for k, sub in enumerate(subs):
            if not isinstance(sub, dict) or not isinstance(sub.get("id"), str):
                continue
            sbase = (*base, "subtechnique", k)
            sid = sub["id"]
            mapped.add(sid)
            if re.fullmatch(r"T\d{4}\.\d{3}", sid) and not sid.startswith(tid + "."):
                yield finding(
                    rule,
                    rule.value_position((*sbase, "id")),
                    "attack-id",
                    f"{where(sbase)}.id: {sid} is not a sub-technique of {tid}",
                    f"move it under technique {sid.split('.')[0]}",
                )
                continue
            yield from _check_technique(rule, table, sbase, sub, sid, tactic_id)


def _check_technique(
    rule: RuleFile,
    table: attack.AttackTable,
    base: tuple[Any, ...],
    tech: dict[str, Any],
    tid: str,
    tactic_id: str | None,
) -> Iterator[Finding]:
    if not attack.ATTACK_ID.match(tid):
        return  # malformed IDs are reported by the schema check
    pos = rule.value_position((*base, "id"))
    known = table.techniques.get(tid)
    if known is None:
        kind = "sub-technique" if "." in tid else "technique"
        yield finding(rule, pos, "attack-id", f"{where(base)}.id: {tid} is not a {kind} in {_v(table)}")
        return
    if not known.current:
        yield finding(rule, pos, "attack-id", *_stale(table, f"{where(base)}.id", known), WARNING)
        return
    if tactic_id is not None and tactic_id not in known.tactics:
        names = ", ".join(f"{t} {table.tactics[t].name}" for t in known.tactics)
        yield finding(
            rule,
            pos,
            "attack-id",
            f"{where(base)}.id: {tid} ({known.name}) belongs to {names}, "
            f"not {tactic_id} {table.tactics[tactic_id].name}",
            f"put it in a threat entry whose tactic is {known.tactics[0]}",
        )
    if isinstance(tech.get("name"), str) and tech["name"] != known.name:
        yield finding(
            rule,
            rule.value_position((*base, "name")),
            "attack-id",
            f"{where(base)}: {tid} is '{known.name}', not '{tech['name']}'",
            f"name: {known.name}",
            WARNING,
        )
    yield from _check_reference(rule, (*base, "reference"), tech, tid)


def _check_reference(rule: RuleFile, path: tuple[Any, ...], obj: Any, attack_id: str) -> Iterator[Finding]:
    ref = obj.get("reference") if isinstance(obj, dict) else None
    if not isinstance(ref, str):
        return
    expected = (
        attack.tactic_reference(attack_id)
        if attack_id.startswith("TA")
        else attack.technique_reference(attack_id)
    )
    if ref.rstrip("/") != expected.rstrip("/"):
        yield finding(
            rule,
            rule.value_position(path),
            "attack-id",
            f"{where(path)}: {ref} does not point at {attack_id}",
            f"reference: {expected}",
            WARNING,
        )
