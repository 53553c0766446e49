"""ATT&CK mapping: ``threat`` and ``metadata.implements`` against the ATT&CK table."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from deployer.rules import attack
from deployer.rules.checks.base import Context, finding, where
from deployer.rules.findings import WARNING, Finding
from deployer.rules.loader import RuleFile


def check_attack(rule: RuleFile, ctx: Context) -> Iterator[Finding]:
    """ATT&CK mapping: tactic names, technique ↔ tactic, sub-technique ↔ technique, implements."""
    threat = rule.data.get("threat")
    mapped: set[str] = set()
    if isinstance(threat, list):
        for i, entry in enumerate(threat):
            if isinstance(entry, dict):
                yield from _check_threat_entry(rule, i, entry, mapped)
    implements = rule.metadata.get("implements")
    if isinstance(implements, list):
        for i, item in enumerate(implements):
            if not isinstance(item, str):
                continue
            pos = rule.value_position(("metadata", "implements", i))
            if re.fullmatch(r"TA\d{4}", item) and item not in attack.TACTICS:
                yield finding(
                    rule, pos, "attack-id", f"metadata.implements: {item} is not an ATT&CK Enterprise tactic"
                )
            elif re.fullmatch(r"T\d{4}(\.\d{3})?", item) and isinstance(threat, list) and item not in mapped:
                yield finding(
                    rule,
                    pos,
                    "attack-id",
                    f"metadata.implements names {item}, but threat does not map it",
                    "add it to threat so analysts see the mapping in Kibana",
                    WARNING,
                )


def _check_threat_entry(rule: RuleFile, i: int, entry: dict[str, Any], mapped: set[str]) -> Iterator[Finding]:
    tactic = entry.get("tactic")
    tactic_id = tactic.get("id") if isinstance(tactic, dict) else None
    if isinstance(tactic_id, str) and attack.ATTACK_ID.match(tactic_id):
        base = ("threat", i, "tactic")
        if tactic_id not in attack.TACTICS:
            yield finding(
                rule,
                rule.value_position((*base, "id")),
                "attack-id",
                f"threat[{i}].tactic.id: {tactic_id} is not an ATT&CK Enterprise tactic",
            )
            tactic_id = None
        else:
            mapped.add(tactic_id)
            expected = attack.TACTICS[tactic_id]
            if (
                isinstance(tactic, dict)
                and isinstance(tactic.get("name"), str)
                and tactic["name"] != expected
            ):
                yield finding(
                    rule,
                    rule.value_position((*base, "name")),
                    "attack-id",
                    f"threat[{i}].tactic: {tactic_id} is '{expected}', not '{tactic['name']}'",
                    f"name: {expected}",
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
        yield from _check_technique(rule, base, tech, tid, tactic_id)
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
            yield from _check_technique(rule, sbase, sub, sid, tactic_id)


def _check_technique(
    rule: RuleFile, base: tuple[Any, ...], tech: dict[str, Any], tid: str, tactic_id: str | None
) -> Iterator[Finding]:
    if not attack.ATTACK_ID.match(tid):
        return  # malformed IDs are reported by the schema check
    known = attack.TECHNIQUES.get(tid)
    if known is None:
        yield finding(
            rule,
            rule.value_position((*base, "id")),
            "attack-id",
            f"{where(base)}.id: {tid} is not in the project's ATT&CK table, so its tactic is not verified",
            "add it with its tactic(s) to deployer/rules/attack.py",
            WARNING,
        )
        return
    name, tactics = known
    if tactic_id is not None and tactic_id not in tactics:
        names = ", ".join(f"{t} {attack.TACTICS[t]}" for t in tactics)
        yield finding(
            rule,
            rule.value_position((*base, "id")),
            "attack-id",
            f"{where(base)}.id: {tid} ({name}) belongs to {names}, not {tactic_id} {attack.TACTICS[tactic_id]}",
            f"put it in a threat entry whose tactic is {tactics[0]}",
        )
    if isinstance(tech.get("name"), str) and tech["name"] != name:
        yield finding(
            rule,
            rule.value_position((*base, "name")),
            "attack-id",
            f"{where(base)}: {tid} is '{name}', not '{tech['name']}'",
            f"name: {name}",
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
