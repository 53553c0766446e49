"""Synthesise Kibana alert documents from a rule's matches, the way Kibana's EQL executor writes them.

Per matched sequence of N events Kibana writes N building-block alerts plus one "shell" alert:
each building block copies its source event, carries `kibana.alert.building_block_type:
"default"`, `kibana.alert.group.id` (the shell's uuid) and `kibana.alert.group.index` (0..N-1);
the shell holds the fields common to all building blocks and its group id is its own uuid. A
non-sequence rule writes one alert per event. Rules over alerts (`.alerts-security.alerts-*`) are
then evaluated offline over these documents.

Two deliberate differences from a live Kibana, so that offline replays are deterministic:
`@timestamp` is the source event's time (Kibana uses the rule's execution time), and ids are
hashes of the rule id and the source events rather than of index/document ids.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

ALERTS_INDEX_PREFIX = ".alerts-security.alerts-"
SIGNAL = "signal"


def is_alerts_pattern(pattern: str) -> bool:
    """Whether an index pattern can only address the Security alerts indices."""
    p = pattern.strip()
    return (
        p.startswith(ALERTS_INDEX_PREFIX)
        or p.startswith(".internal" + ALERTS_INDEX_PREFIX)
        or p
        in (
            ".alerts-security.alerts",
            ".alerts-security.alerts*",
            ".alerts-security*",
        )
    )


def get_path(doc: dict[str, Any], dotted: str) -> Any:
    """Look up a dotted field in a document that may nest objects or use dotted keys."""
    if dotted in doc:
        return doc[dotted]
    head, sep, rest = dotted.partition(".")
    while sep:
        value = doc.get(head)
        if isinstance(value, dict):
            found = get_path(value, rest)
            if found is not None:
                return found
        nxt, sep, rest = rest.partition(".")
        head = f"{head}.{nxt}"
    return doc.get(head) if head != dotted else None


def _digest(*parts: Any) -> str:
    return hashlib.sha256(
        json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    ).hexdigest()


def event_identity(event: dict[str, Any]) -> str:
    """A stable identity for a source event: its `event.id`, else a hash of its content."""
    eid = get_path(event, "event.id")
    if isinstance(eid, str | int) and not isinstance(eid, bool):
        return f"id:{eid}"
    return "sha256:" + _digest(event)


def _set_path(doc: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = doc
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def intersect(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The fields (recursively) that every document has with an equal value."""
    if not docs:
        return {}
    first, rest = docs[0], docs[1:]
    out: dict[str, Any] = {}
    for key, value in first.items():
        others = [d.get(key, _MISSING) for d in rest]
        if isinstance(value, dict) and all(isinstance(o, dict) for o in others):
            sub = intersect([value, *others])
            if sub:
                out[key] = sub
        elif all(o == value and type(o) is type(value) for o in others):
            out[key] = value
    return out


_MISSING = object()


def rule_info(rule: Any) -> dict[str, Any]:
    """The rule fields an alert carries, from a loaded rule file."""
    kibana = rule.kibana or {}
    return {
        "rule_id": rule.rule_id,
        "name": kibana.get("name"),
        "severity": kibana.get("severity"),
        "risk_score": kibana.get("risk_score"),
        "building_block_type": kibana.get("building_block_type"),
        "type": kibana.get("type", "eql"),
        "timestamp_override": kibana.get("timestamp_override"),
        "tags": kibana.get("tags"),
        "threat": kibana.get("threat"),
    }


def _alert_depth(source: dict[str, Any]) -> int:
    depth = get_path(source, "kibana.alert.depth")
    return depth if isinstance(depth, int) and not isinstance(depth, bool) else 0


def _base_alert(source: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """One alert built from one source document: the source copied, `event.kind: signal`, rule fields."""
    # Alert documents share the source's nested values instead of copying them (nothing mutates
    # events or alerts once read); only the top level and `event` are new objects.
    doc = dict(source)
    # An alert built from an alert does not inherit the source alert's kibana.* fields; Kibana
    # records the lineage in `kibana.alert.ancestors` instead.
    doc.pop("kibana", None)
    for key in [k for k in doc if k.startswith("kibana.")]:
        del doc[key]
    # The source's event.* (nested or written as dotted keys) is kept on the alert and copied to
    # kibana.alert.original_event.*; only event.kind changes.
    original_event: dict[str, Any] = {}
    nested = source.get("event")
    if isinstance(nested, dict):
        original_event.update(nested)
    for key in [k for k in doc if k.startswith("event.")]:
        original_event[key[len("event.") :]] = doc.pop(key)
    doc["event"] = {**original_event, "kind": SIGNAL}
    # Kibana takes the original time from the rule's timestamp_override when the event has it.
    original = source.get("@timestamp")
    if info.get("timestamp_override"):
        overridden = get_path(source, info["timestamp_override"])
        if overridden is not None:
            original = overridden
    ts = alert_time(original)
    alert: dict[str, Any] = {
        "rule": {
            k: v
            for k, v in (
                ("rule_id", info["rule_id"]),
                ("name", info["name"]),
                ("type", info["type"]),
                # Rules over alerts often select by tag or ATT&CK tactic; Kibana copies both.
                ("tags", info.get("tags")),
                ("threat", info.get("threat")),
            )
            if v is not None
        },
        "severity": info["severity"],
        "risk_score": info["risk_score"],
        "status": "active",
        "workflow_status": "open",
        "original_time": ts,
        "depth": _alert_depth(source) + 1,
        "ancestors": _ancestors(source),
    }
    if original_event:
        alert["original_event"] = original_event
    doc["kibana"] = {"alert": {k: v for k, v in alert.items() if v is not None}}
    doc["@timestamp"] = ts
    return doc


def alert_time(value: Any) -> Any:
    """A source timestamp as Kibana writes alert dates (ISO-8601, UTC, milliseconds)."""
    from deployer.eql.values import format_timestamp, parse_timestamp

    try:
        return format_timestamp(parse_timestamp(value))
    except (ValueError, TypeError, OverflowError, OSError):
        return value


def _ancestors(source: dict[str, Any]) -> list[dict[str, Any]]:
    prior = get_path(source, "kibana.alert.ancestors")
    chain = list(prior) if isinstance(prior, list) else []
    is_alert = get_path(source, "kibana.alert.uuid") is not None
    chain.append(
        {
            "id": get_path(source, "kibana.alert.uuid") if is_alert else get_path(source, "event.id"),
            "type": SIGNAL if is_alert else "event",
            "depth": _alert_depth(source),
        }
    )
    return chain


def alerts_for_match(
    rule: Any, events: Sequence[dict[str, Any] | None], *, sequence: bool
) -> list[dict[str, Any]]:
    """The alert documents Kibana writes for one match: one alert, or N building blocks plus a shell."""
    info = rule_info(rule)
    present = [e for e in events if e is not None]
    if not present:
        return []
    if not sequence:
        doc = _base_alert(present[0], info)
        uuid = _digest("alert", info["rule_id"], event_identity(present[0]))
        doc["kibana"]["alert"]["uuid"] = uuid
        if info["building_block_type"]:
            doc["kibana"]["alert"]["building_block_type"] = info["building_block_type"]
        return [doc]

    identities = [event_identity(e) for e in present]
    group_id = _digest("group", info["rule_id"], identities)
    blocks: list[dict[str, Any]] = []
    # Missing-event placeholders (`![...]`) have no document; the group index counts the events
    # that exist, in sequence order.
    for index, event in enumerate(present):
        doc = _base_alert(event, info)
        ka = doc["kibana"]["alert"]
        ka["uuid"] = _digest("building_block", info["rule_id"], group_id, index, identities[index])
        ka["building_block_type"] = "default"
        ka["group"] = {"id": group_id, "index": index}
        blocks.append(doc)

    shell = intersect(blocks)
    ka_shell = shell.setdefault("kibana", {}).setdefault("alert", {})
    ka_shell["uuid"] = group_id
    ka_shell["group"] = {"id": group_id}
    ka_shell["ancestors"] = [a for b in blocks for a in b["kibana"]["alert"]["ancestors"]]
    ka_shell["depth"] = max(b["kibana"]["alert"]["depth"] for b in blocks)
    # The shell is a building block only when the rule itself is one; its building blocks always are.
    if info["building_block_type"]:
        ka_shell["building_block_type"] = info["building_block_type"]
    else:
        ka_shell.pop("building_block_type", None)
    # The sequence exists once its last event has happened: that is the shell's time offline.
    ka_shell["original_time"] = alert_time(present[0].get("@timestamp"))
    shell["@timestamp"] = alert_time(present[-1].get("@timestamp"))
    _set_path(shell, "event.kind", SIGNAL)
    return [*blocks, shell]


def alerts_for_matches(rule: Any, matches: Iterable[Any], *, sequence: bool) -> list[dict[str, Any]]:
    """All alert documents for a rule's matches, in match order (building blocks before their shell)."""
    out: list[dict[str, Any]] = []
    for match in matches:
        out.extend(alerts_for_match(rule, match.events, sequence=sequence))
    return out


__all__ = [
    "ALERTS_INDEX_PREFIX",
    "alerts_for_match",
    "alerts_for_matches",
    "event_identity",
    "get_path",
    "intersect",
    "is_alerts_pattern",
    "rule_info",
]
