"""metadata.platforms inferred for imported rules: query, then OS tags, then index patterns."""

from __future__ import annotations

from deployer.rules.platforms import infer_platforms
from deployer.targets.kibana_rules import to_rule_document


def test_query_wins() -> None:
    query = 'process where host.os.type == "linux" and process.name == "chflags"'
    assert infer_platforms(query, ["OS: Linux", "OS: macOS"], ["auditbeat-*"]) == ["linux"]
    assert infer_platforms('any where host.os.type in ("windows", "macos")', [], []) == ["windows", "macos"]
    assert infer_platforms('any where host.os.type : "Windows"', [], []) == ["windows"]
    seq = 'sequence by host.id [process where host.os.type == "windows"] [file where true]'
    assert infer_platforms(seq, [], []) == ["windows"]


def test_negated_os_is_not_a_platform() -> None:
    assert infer_platforms('process where not host.os.type == "windows"', ["OS: Linux"], []) == ["linux"]


def test_tags_then_index() -> None:
    assert infer_platforms('process where process.name == "x"', ["OS: Windows", "Domain: Endpoint"], []) == [
        "windows"
    ]
    assert infer_platforms(
        'process where process.name == "x"', [], ["winlogbeat-*", "logs-endpoint.events.*"]
    ) == ["windows"]
    assert infer_platforms('process where process.name == "x"', [], ["logs-endpoint.events.*"]) == []
    assert infer_platforms("not eql (", ["OS: Linux"], []) == ["linux"]


def test_import_fills_platforms_and_keeps_an_explicit_one() -> None:
    body = {
        "rule_id": "r1",
        "name": "n",
        "description": "d",
        "type": "eql",
        "language": "eql",
        "query": 'process where host.os.type == "windows"',
        "index": ["logs-endpoint.events.process-*"],
        "severity": "low",
        "risk_score": 21,
        "tags": ["OS: Windows"],
    }
    assert to_rule_document(body)["metadata"]["platforms"] == ["windows"]
    body["meta"] = {"platforms": ["linux"]}
    assert to_rule_document(body)["metadata"]["platforms"] == ["linux"]
