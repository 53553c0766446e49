"""Detection content: rule shape, fixture realism and fixture tests of every rule under detections/."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
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


def _exceptions() -> Any:
    from deployer.exceptions.loader import load_catalogue

    catalogue, findings = load_catalogue([DETECTIONS])
    assert not [f for f in findings if str(f.severity).lower() == "error"], findings
    return catalogue


def _rules() -> list[Any]:
    loaded = load_rule_files([DETECTIONS])
    errors = [f for f in loaded.findings if str(f.severity).lower() == "error"]
    assert not errors, errors
    return loaded.rules


RULES = _rules()
EXCEPTIONS = _exceptions()
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


def rule_keys_doc(rule_id: str) -> str:
    return BY_ID[rule_id].kibana["description"]


def _tree(rule: Any) -> ast.Query:
    return parser.parse(rule.kibana["query"])


def test_content_exists() -> None:
    assert len(RULES) >= 6
    platforms = {p for r in RULES for p in r.metadata["platforms"]}
    assert platforms == {"windows", "linux", "macos"}
    implements = {i for r in RULES for i in r.metadata["implements"]}
    assert set(ANALYTICS) | set(STRATEGIES) <= implements


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_rule_has_enough_positive_and_negative_tests(rule_id: str) -> None:
    tests = BY_ID[rule_id].metadata.get("tests") or []
    matches = [t for t in tests if t["expect"] == "match"]
    misses = [t for t in tests if t["expect"] == "no_match"]
    assert len(matches) >= 3, "each rule needs at least three positive fixtures"
    assert len(misses) >= 4, "each rule needs at least four near-miss fixtures"
    for test in matches:
        assert test.get("sequences"), f"{test['name']}: a match test lists its exact sequences"
    names = [t["name"] for t in tests]
    assert len(names) == len(set(names)), "test names are unique within a rule"
    for test in tests:
        assert (BY_ID[rule_id].path.parent / test["events"]).is_file(), test["events"]


# ATT&CK v18.1 facts the content is held to (checked against MITRE's data below when present):
# analytic -> (detection strategy, platform); detection strategy -> the technique it detects.
ANALYTICS = {
    "AN1314": ("DET0478", "windows"),
    "AN0819": ("DET0294", "windows"),
    "AN0820": ("DET0294", "macos"),
    "AN0821": ("DET0294", "linux"),
}
STRATEGIES = {"DET0478": "T1204", "DET0294": "T1204.002"}
ATTACK_DATA = REPO.parent.parent / "shared" / "attack" / "enterprise-attack-18.1-subset.json.gz"


def _dependents(rule_id: str) -> list[Any]:
    return [r for r in RULES if rule_id in (r.metadata.get("depends_on") or [])]


def test_attack_facts_match_mitre_data() -> None:
    candidates = [REPO.parent / "shared", REPO.parent.parent / "shared"]
    path = next(
        (c / "attack" / ATTACK_DATA.name for c in candidates if (c / "attack" / ATTACK_DATA.name).is_file()),
        ATTACK_DATA,
    )
    if not path.is_file():
        pytest.skip(f"MITRE ATT&CK v18.1 data not found at {path}")
    import gzip

    objects = json.loads(gzip.open(path).read())["objects"]

    def ext(o: dict[str, Any]) -> str | None:
        refs = [r for r in o.get("external_references", []) if r.get("source_name") == "mitre-attack"]
        return refs[0].get("external_id") if refs else None

    by_stix = {o["id"]: o for o in objects}
    by_ext = {ext(o): o for o in objects if ext(o)}
    for an, (det, platform) in ANALYTICS.items():
        strategy = by_ext[det]
        assert by_ext[an]["id"] in strategy["x_mitre_analytic_refs"], f"{an} is an analytic of {det}"
        assert [p.lower() for p in by_ext[an]["x_mitre_platforms"]] == [platform]
    for det, technique in STRATEGIES.items():
        detects = [
            ext(by_stix[o["target_ref"]])
            for o in objects
            if o["type"] == "relationship"
            and o["source_ref"] == by_ext[det]["id"]
            and o["relationship_type"] == "detects"
        ]
        assert detects == [technique], det


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_attack_mapping_is_exact(rule_id: str) -> None:
    """A rule claims an analytic only for its whole chain, with the analytic's strategy and technique."""
    rule = BY_ID[rule_id]
    implements = set(rule.metadata["implements"])
    analytics = {i for i in implements if i.startswith("AN")}
    strategies = {i for i in implements if i.startswith("DET")}
    techniques = {i for i in implements if i.startswith("T")}
    if rule.kibana.get("building_block_type") == "default":
        # A building block holds part of a chain: its dependents claim the analytic.
        assert not analytics and not strategies, "building blocks claim no analytic"
        claimed = {i for d in _dependents(rule_id) for i in d.metadata["implements"] if i.startswith("AN")}
        assert claimed, "a building block feeds a rule that claims an analytic"
    else:
        assert len(analytics) == 1, "an alerting rule implements exactly one analytic"
    for an in analytics:
        det, platform = ANALYTICS[an]
        assert strategies == {det}, f"{an} belongs to {det}"
        assert rule.metadata["platforms"] == [platform], f"{an} is a {platform} analytic"
    expected = {STRATEGIES[d] for d in strategies} or {
        STRATEGIES[ANALYTICS[a][0]]
        for d in _dependents(rule_id)
        for a in d.metadata["implements"]
        if a.startswith("AN")
    }
    assert techniques == expected
    # threat: Execution / exactly the strategy's technique (T1204, or T1204 > T1204.002).
    assert [t["tactic"]["id"] for t in rule.kibana["threat"]] == ["TA0002"]
    mapped = rule.kibana["threat"][0]["technique"]
    assert [t["id"] for t in mapped] == ["T1204"]
    subs = {s["id"] for s in mapped[0].get("subtechnique", [])}
    assert subs == (techniques - {"T1204"})


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_rule_shape(rule_id: str) -> None:
    rule = BY_ID[rule_id]
    k, meta = rule.kibana, rule.metadata
    assert k["type"] == "eql" and k["language"] == "eql"
    assert meta["maturity"] == "production"
    assert k.get("required_fields") and k.get("investigation_fields", {}).get("field_names")
    assert k.get("false_positives"), "every rule lists its false positives"
    assert k.get("setup"), "every rule names the data it needs"
    integrations = {i["package"] for i in k.get("related_integrations") or []}
    assert "endpoint" in integrations or meta.get("depends_on"), "related_integrations names Elastic Defend"
    note = k.get("note", "")
    for word in (
        "Investigate",
        "Contain",
        "user.name",
        "host.name",
        "process.parent",
        "hash",
        "origin",
        "children",
        "network",
    ):
        assert word.lower() in note.lower(), f"triage note mentions {word}"
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
        if keys[:1] == ["host.id"]:
            # Cross-process deliveries (browser writes, Explorer/launchd starts): host and user, short window.
            assert keys == ["host.id", "user.id"], f"host-keyed sequences also join on user.id: {keys}"
            assert "host.id" in rule_keys_doc(rule_id), (
                "the description says why the rule is keyed on the host"
            )
            continue
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

    results = run_rule_tests(RULES, exceptions=EXCEPTIONS)
    failed = [f"{r.rule_id}: {r.name}: {r.status}: {r.message}" for r in results if r.status != "pass"]
    assert not failed, "\n".join(failed)
    assert len(results) == sum(len(r.metadata.get("tests") or []) for r in RULES)


def test_chain_rules_alert_once_per_chain() -> None:
    from deployer.testing.fixtures import run_rule_tests

    chain_rules = [r for r in RULES if r.metadata.get("depends_on") and "AN1314" in r.metadata["implements"]]
    assert chain_rules
    for rule in chain_rules:
        for result in run_rule_tests([rule], library=RULES, exceptions=EXCEPTIONS):
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
        if "exceptions" in path.parts:
            continue
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


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def test_declared_file_types_are_what_the_fixture_delivers() -> None:
    """A positive test's `file_type` must show in its fixture: a path with one of the type's extensions,
    or (executables without an extension) a file written and then started as a process."""
    from deployer.coverage import FILE_TYPES

    for rule in RULES:
        for test in rule.metadata.get("tests") or []:
            kind = test.get("file_type")
            if kind is None:
                continue
            assert test["expect"] == "match", f"{rule.rule_id}: {test['name']}: file_type on a near miss"
            events = _events(rule.path.parent / test["events"])
            suffixes = tuple("." + e for e in FILE_TYPES[kind]["extensions"])
            named = any(
                s.lower().rstrip('"').endswith(suffixes)
                or any(f"{x}\\" in s.lower() or f"{x}/" in s.lower() for x in suffixes)
                for doc in events
                for key in ("file", "process")
                for s in _strings(doc.get(key, {}))
            )
            written = {_get(d, "file.path") for d in events if "file" in (_get(d, "event.category") or [])}
            started = {
                _get(d, "process.executable") for d in events if "start" in (_get(d, "event.type") or [])
            }
            assert named or (kind == "executable" and written & started), (
                f"{rule.rule_id}: {test['name']}: no {kind} ({', '.join(suffixes)}) in {test['events']}"
            )
            platform = _get(events[0], "host.os.type")
            assert platform in FILE_TYPES[kind]["platforms"], (
                f"{rule.rule_id}: {test['name']}: {kind} on {platform}"
            )
