"""Unit tests for rule body conversion, the Kibana normal form and export to rule files."""

from __future__ import annotations

import yaml

from deployer.targets import kibana_rules as kr

KIBANA = {
    "rule_id": "r1",
    "name": "Office app spawns a script host",
    "description": "d",
    "type": "eql",
    "language": "eql",
    "query": "sequence by process.entity_id with maxspan=1m\n  [process where true]\n  [network where true]\n",
    "index": ["logs-endpoint.events.*"],
    "severity": "high",
    "risk_score": 73,
    "tags": ["Domain: Endpoint"],
    "enabled": False,
}
METADATA = {
    "implements": ["AN1314", "T1204.002"],
    "platforms": ["windows"],
    "maturity": "production",
    "tests": [{"name": "x"}],
}

SERVER_RESPONSE_EXTRAS = {
    "id": "7b0c",
    "created_at": "2026-11-22T12:00:00.000Z",
    "created_by": "elastic",
    "updated_at": "2026-11-22T12:00:00.000Z",
    "updated_by": "elastic",
    "revision": 3,
    "immutable": False,
    "rule_source": {"type": "internal"},
    "execution_summary": {"last_execution": {"status": "succeeded"}},
}


def _body():
    return kr.to_body(KIBANA, METADATA, "r1", "detections/windows/r1.yaml")


def test_to_body_adds_ownership_marker_and_implements_tags():
    body = _body()
    assert body["tags"] == ["Domain: Endpoint", kr.OWNER_TAG, "implements:AN1314", "implements:T1204.002"]
    assert body["meta"] == {
        "managed_by": "dac",
        "source_path": "detections/windows/r1.yaml",
        "implements": ["AN1314", "T1204.002"],
        "platforms": ["windows"],
        "maturity": "production",
    }
    assert "tests" not in body["meta"] and "metadata" not in body
    assert kr.owned(body)
    assert body["interval"] == "5m" and body["from"] == "now-6m" and body["max_signals"] == 100
    assert body["enabled"] is False  # the repository's value, not Kibana's default


def test_normalise_makes_a_server_response_equal_to_the_desired_body():
    desired = _body()
    response = {**desired, **SERVER_RESPONSE_EXTRAS}
    response["required_fields"] = []
    response["threat"] = []
    assert kr.normalise(response) == desired


def test_normalise_drops_server_computed_subfields_and_empty_lists():
    body = kr.normalise(
        {
            **KIBANA,
            "required_fields": [{"name": "process.entity_id", "type": "keyword", "ecs": True}],
            "actions": [{"id": "c1", "action_type_id": ".webhook", "params": {}, "uuid": "u-1"}],
            "threat": [{"framework": "MITRE ATT&CK", "tactic": {"id": "TA0002"}, "technique": []}],
            "output_index": "",
            "throttle": "no_actions",
        }
    )
    assert body["required_fields"] == [{"name": "process.entity_id", "type": "keyword"}]
    assert body["actions"] == [{"id": "c1", "action_type_id": ".webhook", "params": {}}]
    assert body["threat"] == [{"framework": "MITRE ATT&CK", "tactic": {"id": "TA0002"}}]
    assert "output_index" not in body and "throttle" not in body


def test_owned_by_tag_or_meta():
    assert kr.owned({"tags": [kr.OWNER_TAG]})
    assert kr.owned({"tags": [], "meta": {"managed_by": "dac"}})  # tag removed by hand, meta kept
    assert not kr.owned({"tags": ["x"], "meta": {"managed_by": "someone"}})
    assert not kr.owned({})


def test_export_round_trip_is_lossless():
    response = {**_body(), **SERVER_RESPONSE_EXTRAS}
    doc = kr.to_rule_document(response)
    for key in (
        "id",
        "revision",
        "created_at",
        "rule_source",
        "execution_summary",
        "interval",
        "max_signals",
        "setup",
    ):
        assert key not in doc
    assert doc["enabled"] is False and doc["version"] == 1
    assert doc["tags"] == ["Domain: Endpoint"]
    assert doc["metadata"] == {
        "implements": ["AN1314", "T1204.002"],
        "platforms": ["windows"],
        "maturity": "production",
    }
    assert list(doc)[:6] == ["rule_id", "name", "description", "type", "language", "query"]
    text = kr.dump_rule_yaml(doc, "../../schemas/rule.schema.json")
    assert text.startswith("# yaml-language-server: $schema=../../schemas/rule.schema.json\n")
    assert "query: |" in text  # multi-line query as a block scalar
    loaded = yaml.safe_load(text)
    meta = loaded.pop("metadata")
    again = kr.to_body(loaded, meta, loaded["rule_id"], "detections/windows/r1.yaml")
    assert again == _body()


def test_export_keeps_user_meta_and_recovers_implements_from_tags():
    response = {**_body(), "meta": {"team": "blue"}}
    doc = kr.to_rule_document(response)
    assert doc["meta"] == {"team": "blue"}
    assert doc["metadata"]["implements"] == ["AN1314", "T1204.002"]


def test_parse_ndjson_keeps_rules_only():
    text = "\n".join(
        [
            '{"rule_id":"a","severity":"low","risk_score":1,"name":"a"}',
            '{"list_id":"l","type":"detection","name":"exceptions"}',
            '{"exported_count":1,"missing_rules":[]}',
            "",
        ]
    )
    assert [r["rule_id"] for r in kr.parse_ndjson(text)] == ["a"]


def test_rule_filename_is_unique():
    taken = set()
    a = kr.rule_filename({"name": "Office: spawns Shell!", "rule_id": "x1"}, taken)
    taken.add(a)
    b = kr.rule_filename({"name": "Office: spawns Shell!", "rule_id": "x2"}, taken)
    assert a == "office_spawns_shell.yaml" and b == "office_spawns_shell_x2.yaml"
