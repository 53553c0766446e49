"""Detection content: rule shape, fixture realism and fixture tests of every rule under detections/."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.eql import ast, parser
from deployer.rules.loader import load_rule_files

REPO = Path(__file__).resolve().parents[2]
DETECTIONS = REPO / "detections"
ENTITY_KEYS = {"process.entity_id", "process.parent.entity_id"}
ALERT_INDEX = ".alerts-security.alerts-"
RAW_INDEXES = {
    "windows": {"logs-endpoint.events.*", "logs-windows.sysmon_operational-*", "winlogbeat-*"},
    "linux": {"logs-endpoint.events.*", "auditbeat-*"},
    "macos": {"logs-endpoint.events.*", "auditbeat-*"},
}
ISO_8601 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


def _rules() -> list[Any]:
    loaded = load_rule_files([DETECTIONS])
    errors = [f for f in loaded.findings if str(f.severity).lower() == "error"]
    assert not errors, errors
    return loaded.rules


RULES = _rules()
RULE_IDS = [r.rule_id for r in RULES]
BY_ID = {r.rule_id: r for r in RULES}


def _get(doc: dict[str, Any], dotted: str) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return doc.get(dotted)
        node = node[part]
    return node


def _fixture_files() -> list[Path]:
    return sorted(DETECTIONS.rglob("fixtures/*.ndjson"))


def _events(path: Path) -> list[dict[str, Any]]:
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        assert line.strip(), f"{path}:{number}: blank line"
        doc = json.loads(line)
        assert isinstance(doc, dict), f"{path}:{number}: not a JSON object"
        out.append(doc)
    return out


def _over_alerts(rule: Any) -> bool:
    return any(str(p).startswith(ALERT_INDEX) for p in rule.kibana.get("index", []))


def _tree(rule: Any) -> ast.Query:
    return parser.parse(rule.kibana["query"])


def test_content_exists() -> None:
    assert len(RULES) >= 6
    platforms = {p for r in RULES for p in r.metadata["platforms"]}
    assert platforms == {"windows", "linux", "macos"}
    implements = {i for r in RULES for i in r.metadata["implements"]}
    assert {"AN1314", "DET0294", "T1204.002"} <= implements


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_rule_has_enough_positive_and_negative_tests(rule_id: str) -> None:
    tests = BY_ID[rule_id].metadata.get("tests") or []
    matches = [t for t in tests if t["expect"] == "match"]
    misses = [t for t in tests if t["expect"] == "no_match"]
    assert len(matches) >= 2, "each rule needs at least two positive fixtures"
    assert len(misses) >= 3, "each rule needs at least three near-miss fixtures"
    for test in matches:
        assert test.get("sequences"), f"{test['name']}: a match test lists its exact sequences"
    names = [t["name"] for t in tests]
    assert len(names) == len(set(names)), "test names are unique within a rule"
    for test in tests:
        assert (BY_ID[rule_id].path.parent / test["events"]).is_file(), test["events"]


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_rule_shape(rule_id: str) -> None:
    rule = BY_ID[rule_id]
    k, meta = rule.kibana, rule.metadata
    assert k["type"] == "eql" and k["language"] == "eql"
    assert meta["maturity"] == "production"
    assert {"AN1314", "DET0294"} & set(meta["implements"])
    assert "T1204.002" in meta["implements"]
    assert k.get("required_fields") and k.get("investigation_fields", {}).get("field_names")
    assert k.get("false_positives"), "every rule lists its false positives"
    note = k.get("note", "")
    for word in ("Investigate", "Contain", "user.name", "host.name", "process.parent"):
        assert word in note, f"triage note mentions {word}"
    # ATT&CK: Execution / User Execution / Malicious File on every rule.
    by_tactic = {t["tactic"]["id"]: t for t in k["threat"]}
    assert "TA0002" in by_tactic
    techniques = {t["id"]: t for t in by_tactic["TA0002"]["technique"]}
    assert "T1204" in techniques
    assert "T1204.002" in {s["id"] for s in techniques["T1204"].get("subtechnique", [])}
    # Severity and risk score agree with Kibana's bands.
    bands = {"low": range(0, 22), "medium": range(22, 48), "high": range(48, 74), "critical": range(74, 101)}
    assert k["risk_score"] in bands[k["severity"]]
    if k.get("building_block_type") == "default":
        assert k["severity"] == "low"
    assert "maxspan" in k["description"] or "maxspan" in k["query"]


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_sequences_join_on_entity_ids_with_maxspan(rule_id: str) -> None:
    body = _tree(BY_ID[rule_id]).body
    assert isinstance(body, ast.Sequence), "every rule is a sequence"
    assert body.maxspan is not None and body.maxspan.millis <= 10 * 60 * 1000
    for step in body.steps:
        keys = [".".join(f.path) for f in body.keys_for(step)]
        assert keys and keys[0] in ENTITY_KEYS, f"step keyed on {keys}"


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_index_patterns(rule_id: str) -> None:
    rule = BY_ID[rule_id]
    index = set(rule.kibana["index"])
    if rule.metadata.get("depends_on"):
        assert index == {".alerts-security.alerts-*"}
        assert rule.kibana.get("timestamp_field") == "kibana.alert.original_time"
        for dep in rule.metadata["depends_on"]:
            assert dep in BY_ID, f"depends_on {dep} is a rule in this repository"
            assert f'"{dep}"' in rule.kibana["query"], "the query filters on the dependency's rule_id"
    else:
        for platform in rule.metadata["platforms"]:
            assert RAW_INDEXES[platform] <= index


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_required_and_investigation_fields_are_known(rule_id: str) -> None:
    from deployer.ecs import registry

    reg = registry.load(REPO / "extra_fields.yaml")
    rule = BY_ID[rule_id]
    for item in rule.kibana["required_fields"]:
        info = reg.get(item["name"])
        assert info is not None, f"required field {item['name']} is not ECS or a declared extra field"
        assert info.type == item["type"], (
            f"{item['name']}: required_fields says {item['type']}, registry {info.type}"
        )
    for name in rule.kibana["investigation_fields"]["field_names"]:
        assert reg.get(name) is not None, name
    used = {".".join(f.path) for f in ast.field_refs(_tree(rule))}
    for name in used:
        assert reg.get(name) is not None, f"query field {name} is not ECS or a declared extra field"


def test_fixtures_are_valid_ndjson_shaped_like_endpoint_telemetry() -> None:
    files = _fixture_files()
    assert files
    seen_ids: Counter[str] = Counter()
    for path in files:
        for doc in _events(path):
            where = f"{path.name}: {_get(doc, 'event.id')}"
            eid = _get(doc, "event.id")
            assert isinstance(eid, str) and eid, f"{path.name}: every event has event.id"
            seen_ids[eid] += 1
            assert _get(doc, "process.entity_id"), f"{where}: every event has process.entity_id"
            ts = doc.get("@timestamp")
            assert isinstance(ts, str) and ISO_8601.match(ts), f"{where}: ISO-8601 @timestamp"
            datetime.fromisoformat(ts.replace("Z", "+00:00"))
            category, etype = _get(doc, "event.category"), _get(doc, "event.type")
            assert isinstance(category, list) and isinstance(etype, list), f"{where}: ECS arrays"
            assert _get(doc, "event.action"), where
            assert _get(doc, "host.os.type") in ("windows", "linux", "macos"), where
            assert _get(doc, "host.id") and _get(doc, "user.name"), where
            has_parent = isinstance(_get(doc, "process.parent"), dict) or any(
                k.startswith("process.parent.") for k in doc
            )
            if has_parent:
                assert "process" in category and "start" in etype, (
                    f"{where}: process.parent.* only on process start events"
                )
            if "network" in category:
                assert not has_parent, f"{where}: network/DNS events carry only the acting process"
                assert _get(doc, "dns.question.name") or _get(doc, "destination.ip"), where
            if "file" in category:
                assert _get(doc, "file.path") and _get(doc, "file.name"), where
    duplicates = [i for i, n in seen_ids.items() if n > 1]
    assert not duplicates, f"event.id values reused across fixtures: {duplicates}"


def test_every_fixture_is_used_by_a_test() -> None:
    used = {(r.path.parent / t["events"]).resolve() for r in RULES for t in r.metadata.get("tests") or []}
    unused = [p for p in _fixture_files() if p.resolve() not in used]
    assert not unused, unused


def test_expected_sequences_name_events_of_their_fixture() -> None:
    for rule in RULES:
        for test in rule.metadata.get("tests") or []:
            ids = {_get(e, "event.id") for e in _events(rule.path.parent / test["events"])}
            for seq in test.get("sequences") or []:
                assert set(seq) <= ids, f"{rule.rule_id}: {test['name']}: {seq}"


def test_fixture_tests_pass_offline() -> None:
    from deployer.testing.fixtures import run_rule_tests

    results = run_rule_tests(RULES)
    failed = [f"{r.rule_id}: {r.name}: {r.status}: {r.message}" for r in results if r.status != "pass"]
    assert not failed, "\n".join(failed)
    assert len(results) == sum(len(r.metadata.get("tests") or []) for r in RULES)


def test_chain_rules_alert_once_per_chain() -> None:
    from deployer.testing.fixtures import run_rule_tests

    chain_rules = [r for r in RULES if r.metadata.get("depends_on") and "AN1314" in r.metadata["implements"]]
    assert chain_rules
    for rule in chain_rules:
        for result in run_rule_tests([rule], library=RULES):
            assert result.status == "pass", result.message
            # One alert per expected chain: no duplicates, and each chain's events are distinct entities' steps.
            assert len(result.actual) == len({tuple(s) for s in result.actual}), result.name
            assert len(result.actual) == len(result.expected), result.name


def test_building_blocks_feed_a_chain_rule() -> None:
    dependencies = {d for r in RULES for d in r.metadata.get("depends_on") or []}
    for rule in RULES:
        if rule.kibana.get("building_block_type") == "default":
            assert rule.rule_id in dependencies, f"{rule.rule_id}: a building block nobody reads"


def test_validator_reports_no_errors() -> None:
    from deployer.config import load_config
    from deployer.rules.validate import validate

    config = load_config(REPO / "dac.yaml")
    findings = validate([DETECTIONS], config)
    errors = [f for f in findings if str(f.severity).lower() == "error"]
    assert not errors, [f.format_text() if hasattr(f, "format_text") else str(f) for f in errors]


def test_rule_files_start_with_schema_comment() -> None:
    for path in sorted(DETECTIONS.rglob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        assert yaml.safe_load(path.read_text(encoding="utf-8"))["rule_id"]


def test_an1314_spawn_and_network_steps_stay_identical_across_rules() -> None:
    """A and B describe the same spawn; B and E the same network activity: edits must go to both."""
    a = _tree(BY_ID["an1314-win-app-file-then-lolbin"]).body
    b = _tree(BY_ID["an1314-win-app-lolbin-network"]).body
    e = _tree(BY_ID["an1314-win-lolbin-grandchild-network"]).body
    assert ast.to_eql(a.steps[1].query) == ast.to_eql(b.steps[0].query)
    assert ast.to_eql(b.steps[1].query) == ast.to_eql(e.steps[1].query)
