"""Alert synthesis: the documents Kibana writes for a sequence (building blocks + shell) or an event."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest

from deployer.testing.alerts import (
    alerts_for_match,
    event_identity,
    get_path,
    intersect,
    is_alerts_pattern,
)


@dataclass
class Rule:
    rule_id: str
    kibana: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


BB_RULE = Rule(
    "r-bb", {"name": "Building block", "severity": "low", "risk_score": 21, "building_block_type": "default"}
)
PLAIN_RULE = Rule("r-plain", {"name": "Plain", "severity": "high", "risk_score": 73})

E1 = {
    "@timestamp": "2024-05-01T12:00:00.000Z",
    "event": {"id": "e1", "kind": "event", "category": ["file"], "type": ["creation"]},
    "process": {"entity_id": "A", "name": "outlook.exe"},
    "host": {"name": "ws1"},
}
E2 = {
    "@timestamp": "2024-05-01T12:00:05.000Z",
    "event": {"id": "e2", "kind": "event", "category": ["process"], "type": ["start"]},
    "process": {"entity_id": "B", "name": "mshta.exe", "parent": {"entity_id": "A"}},
    "host": {"name": "ws1"},
}


def test_sequence_gives_building_blocks_then_shell() -> None:
    docs = alerts_for_match(PLAIN_RULE, [E1, E2], sequence=True)
    assert len(docs) == 3
    b0, b1, shell = docs
    for i, (doc, src) in enumerate([(b0, E1), (b1, E2)]):
        ka = doc["kibana"]["alert"]
        assert ka["rule"]["rule_id"] == "r-plain"
        assert ka["rule"]["name"] == "Plain"
        assert ka["original_time"] == src["@timestamp"]
        assert doc["@timestamp"] == src["@timestamp"]
        assert ka["group"]["index"] == i
        assert ka["group"]["id"] == shell["kibana"]["alert"]["uuid"]
        # Kibana marks every building block of a sequence, whatever the rule.
        assert ka["building_block_type"] == "default"
        assert doc["event"]["kind"] == "signal"
        assert ka["original_event"] == src["event"]
        # Source fields are copied as they were.
        assert doc["process"] == src["process"]
        assert doc["event"]["id"] == src["event"]["id"]
        assert doc["event"]["category"] == src["event"]["category"]
        assert len(ka["uuid"]) == 64
    assert b0["kibana"]["alert"]["uuid"] != b1["kibana"]["alert"]["uuid"]

    ka = shell["kibana"]["alert"]
    assert ka["group"] == {"id": ka["uuid"]}
    assert "building_block_type" not in ka  # the rule itself is not a building block
    assert ka["rule"]["rule_id"] == "r-plain"
    # The shell holds only what both events share.
    assert shell["host"] == {"name": "ws1"}
    assert "entity_id" not in shell.get("process", {})
    assert "id" not in shell["event"]
    assert shell["event"]["kind"] == "signal"
    assert shell["@timestamp"] == E2["@timestamp"]
    assert ka["original_time"] == E1["@timestamp"]
    assert [a["id"] for a in ka["ancestors"]] == ["e1", "e2"]


def test_building_block_rule_marks_shell_too() -> None:
    *_, shell = alerts_for_match(BB_RULE, [E1, E2], sequence=True)
    assert shell["kibana"]["alert"]["building_block_type"] == "default"


def test_single_event_rule_gives_one_alert() -> None:
    (doc,) = alerts_for_match(PLAIN_RULE, [E2], sequence=False)
    ka = doc["kibana"]["alert"]
    assert "group" not in ka
    assert "building_block_type" not in ka
    assert ka["original_time"] == doc["@timestamp"] == E2["@timestamp"]
    (bb,) = alerts_for_match(BB_RULE, [E2], sequence=False)
    assert bb["kibana"]["alert"]["building_block_type"] == "default"


def test_ids_are_deterministic_and_sources_untouched() -> None:
    before = copy.deepcopy([E1, E2])
    a = alerts_for_match(PLAIN_RULE, [E1, E2], sequence=True)
    b = alerts_for_match(PLAIN_RULE, [E1, E2], sequence=True)
    assert a == b
    assert [E1, E2] == before
    other = alerts_for_match(BB_RULE, [E1, E2], sequence=True)
    assert other[-1]["kibana"]["alert"]["uuid"] != a[-1]["kibana"]["alert"]["uuid"]


def test_missing_event_placeholders_are_skipped() -> None:
    docs = alerts_for_match(PLAIN_RULE, [E1, None, E2], sequence=True)
    assert [d["kibana"]["alert"].get("group", {}).get("index") for d in docs] == [0, 1, None]


def test_alert_over_alert_keeps_lineage_not_kibana_fields() -> None:
    first = alerts_for_match(PLAIN_RULE, [E1, E2], sequence=True)
    second = alerts_for_match(Rule("r-meta", {"name": "Meta"}), [first[1]], sequence=False)[0]
    ka = second["kibana"]["alert"]
    assert ka["rule"]["rule_id"] == "r-meta"
    assert "group" not in ka
    assert ka["depth"] == 2
    assert [a["type"] for a in ka["ancestors"]] == ["event", "signal"]
    assert second["event"]["id"] == "e2"  # the source event's id travels on


def test_intersect_is_recursive_and_type_strict() -> None:
    assert intersect([{"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 1, "c": 3}, "d": True}]) == {"a": {"b": 1}}
    assert intersect([]) == {}


def test_get_path_nested_and_dotted() -> None:
    doc = {"kibana.alert.rule.rule_id": "x", "process": {"entity_id": "A"}, "a": {"b.c": 1}}
    assert get_path(doc, "kibana.alert.rule.rule_id") == "x"
    assert get_path(doc, "process.entity_id") == "A"
    assert get_path(doc, "a.b.c") == 1
    assert get_path(doc, "process.missing") is None


def test_epoch_millis_become_iso_dates() -> None:
    (doc,) = alerts_for_match(PLAIN_RULE, [{**E1, "@timestamp": 1714564812000}], sequence=False)
    assert doc["@timestamp"] == doc["kibana"]["alert"]["original_time"] == "2024-05-01T12:00:12.000Z"


def test_event_identity() -> None:
    assert event_identity(E1) == "id:e1"
    assert event_identity({"x": 1}).startswith("sha256:")


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (".alerts-security.alerts-*", True),
        (".alerts-security.alerts-default", True),
        ("logs-endpoint.events.*", False),
        ("logs-*", False),
    ],
)
def test_is_alerts_pattern(pattern: str, expected: bool) -> None:
    assert is_alerts_pattern(pattern) is expected


def test_timestamp_override_sets_original_time() -> None:
    rule = Rule("r-ovr", {"name": "Override", "timestamp_override": "event.ingested"})
    src = {**E1, "event": {**E1["event"], "ingested": "2024-05-01T12:00:30Z"}}
    (doc,) = alerts_for_match(rule, [src], sequence=False)
    assert doc["kibana"]["alert"]["original_time"] == "2024-05-01T12:00:30.000Z"
    # Without the field on the event, Kibana falls back to @timestamp.
    (doc,) = alerts_for_match(rule, [E1], sequence=False)
    assert doc["kibana"]["alert"]["original_time"] == E1["@timestamp"]


def test_dotted_event_keys_are_kept_and_copied() -> None:
    flat = {"@timestamp": E1["@timestamp"], "event.id": "f1", "event.category": "file", "event.kind": "event"}
    (doc,) = alerts_for_match(PLAIN_RULE, [flat], sequence=False)
    assert doc["event"] == {"id": "f1", "category": "file", "kind": "signal"}
    assert doc["kibana"]["alert"]["original_event"] == {"id": "f1", "category": "file", "kind": "event"}


def test_rule_tags_and_threat_are_copied() -> None:
    threat = [
        {"framework": "MITRE ATT&CK", "tactic": {"id": "TA0002", "name": "Execution", "reference": "x"}}
    ]
    rule = Rule("r-t", {"name": "T", "tags": ["AN1314"], "threat": threat})
    (doc,) = alerts_for_match(rule, [E1], sequence=False)
    assert doc["kibana"]["alert"]["rule"]["tags"] == ["AN1314"]
    assert get_path(doc, "kibana.alert.rule.threat")[0]["tactic"]["id"] == "TA0002"
