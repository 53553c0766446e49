"""`dac run --engine opensearch` against the offline `dac run`: same lines on every fixture and on generated streams."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deployer.cli import main
from deployer.eql.engine import compile_query
from deployer.targets.base import TargetError
from deployer.targets.opensearch import OpenSearchClient
from deployer.targets.opensearch_compile import compile_rules
from deployer.targets.opensearch_run import (
    SCRATCH_PREFIX,
    StreamEvent,
    read_stream,
    repo_templates,
    run_on_opensearch,
)
from deployer.targets.opensearch_verify import format_ts

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RULE_PATHS = [REPO / "detections", REPO / "tests" / "data" / "opensearch"]


@pytest.fixture(scope="module")
def client(opensearch_alerting: Any) -> Any:
    c = OpenSearchClient(opensearch_alerting.url)
    yield c
    c.close()


def _scratch_indices(client: OpenSearchClient) -> list[str]:
    rows = client.request("GET", f"/_cat/indices/{SCRATCH_PREFIX}*", params={"format": "json"})
    return [r["index"] for r in rows or []]


def _fixture_stream() -> list[StreamEvent]:
    files = sorted({f for p in RULE_PATHS for f in p.rglob("fixtures/*.ndjson")})
    assert len(files) > 50
    return [e for f in files for e in read_stream(f)]


def test_same_matches_as_offline_on_every_fixture(client: OpenSearchClient, tmp_path: Path) -> None:
    from deployer.testing.loading import load_rules

    loaded = load_rules(RULE_PATHS)
    rules = loaded.rules
    # Chains over alerts need stored alerts: `dac run --engine opensearch` lists them as refused.
    compiled = {c.rule_id for c in compile_rules(rules).compiled if not c.reads_alerts_of}
    # Every content rule but the chains over Kibana alerts compiles, exception lists included.
    assert len(compiled) >= 9
    events = _fixture_stream()
    # Every fixture in one stream: both engines see the same events in the same order, so they must
    # agree on every sequence, also on any that cross fixtures.
    online = list(run_on_opensearch(client, rules, events, templates=repo_templates()))
    refused = {r["rule_id"] for r in online if "refused" in r}
    assert refused == {r.rule_id for r in rules} - compiled
    # The offline `dac run` path: the same file, the ECS field types (an ip exception entry with a
    # CIDR matches as Elasticsearch's term query does), the same exception lists.
    from deployer.testing.events import default_field_types
    from deployer.testing.stream import replay_file

    stream = tmp_path / "all-fixtures.ndjson"
    stream.write_text("".join(json.dumps(e.doc) + "\n" for e in events))
    offline = list(
        replay_file(
            [r for r in rules if r.rule_id in compiled],
            str(stream),
            exceptions=loaded.exceptions,
            field_types=default_field_types(),
        )
    )

    def key(r: dict[str, Any]) -> str:
        return json.dumps(r, sort_keys=True)

    matches = [r for r in online if "refused" not in r]
    assert len(offline) > 30
    assert sorted(map(key, matches)) == sorted(map(key, offline))
    assert _scratch_indices(client) == []


QUERIES = {
    "three-steps": """
        sequence by process.entity_id with maxspan=30s
          [process where event.type == "start"]
          [file where file.extension : "hta"]
          [network where true]
    """,
    "optional-key": """
        sequence by host.id, ?user.name with maxspan=20s
          [process where event.type == "start"]
          [network where true]
    """,
    "different-key-fields": """
        sequence with maxspan=30s
          [file where file.extension : "hta"] by process.entity_id
          [process where event.type == "start"] by process.parent.entity_id
          [network where true] by process.parent.entity_id
    """,
}


def _generated(rng: random.Random, count: int) -> list[StreamEvent]:
    events = []
    t = 1_900_000_000_000
    for i in range(count):
        t += rng.choice([0, 0, 1000, 3000, 9000, 40_000])
        cat = rng.choice(["process", "file", "network"])
        doc: dict[str, Any] = {
            "@timestamp": format_ts(t),
            "event": {"id": f"g{i}", "category": [cat]},
            "process": {
                "entity_id": rng.choice(["p1", "p2", "p3"]),
                "parent": {"entity_id": rng.choice(["p1", "p2", "p3"])},
            },
            "host": {"id": rng.choice(["h1", "h2"])},
        }
        if rng.random() < 0.7:
            doc["user"] = {"name": rng.choice(["alice", "bob"])}
        if cat == "process":
            doc["event"]["type"] = [rng.choice(["start", "end"])]
        elif cat == "file":
            doc["file"] = {"extension": rng.choice(["HTA", "hta", "txt"])}
        events.append(StreamEvent(doc, f"g{i}"))
    return events


@pytest.mark.parametrize("kind", sorted(QUERIES))
def test_same_matches_as_offline_on_generated_streams(client: OpenSearchClient, kind: str) -> None:
    rule = {
        "rule_id": f"dac-run-{kind}",
        "name": f"run {kind}",
        "type": "eql",
        "language": "eql",
        "query": QUERIES[kind],
        "index": ["logs-*"],
        "severity": "low",
        "risk_score": 1,
    }
    events = _generated(random.Random(kind), 3000)
    online = list(run_on_opensearch(client, [rule], events))
    got = sorted((r["event_ids"], r["join_keys"]) for r in online)
    program = compile_query(QUERIES[kind])
    want = sorted(
        ([e["event"]["id"] for e in m.events], list(m.join_keys))
        for m in program.run([e.doc for e in events])
    )
    assert len(want) > 10
    assert got == want


def test_cli_prints_the_offline_lines_and_refusals_and_cleans_up(
    client: OpenSearchClient, tmp_path: Path
) -> None:
    fixture = REPO / "tests" / "data" / "opensearch" / "fixtures"
    stream = sorted(fixture.glob("*.ndjson"))[0]
    rules = REPO / "tests" / "data" / "opensearch"
    online = CliRunner().invoke(
        main,
        [
            "run",
            "--engine",
            "opensearch",
            "--opensearch-url",
            client.url,
            "--rules",
            str(rules),
            "--events",
            str(stream),
        ],
    )
    offline = CliRunner().invoke(main, ["run", "--rules", str(rules), "--events", str(stream)])
    lines = [json.loads(line) for line in online.stdout.splitlines()]
    refused = {r["rule_id"]: r["refused"] for r in lines if "refused" in r}
    assert refused.keys() == {"dac-os-test-over-alerts", "dac-os-test-until"}
    assert "until" in refused["dac-os-test-until"]
    compiled = {r["rule_id"] for r in lines if "refused" not in r} | {
        "dac-os-test-app-spawn",
        "dac-os-test-child-network",
    }
    expected = [line for line in offline.stdout.splitlines() if json.loads(line)["rule_id"] in compiled]
    assert sorted(line for line in online.stdout.splitlines() if "refused" not in line) == sorted(expected)
    assert expected
    # Refused rules make the run incomplete: exit 1, as offline `dac run` does for a rule it cannot evaluate.
    assert online.exit_code == 1
    assert _scratch_indices(client) == []


def test_a_monitor_failing_mid_run_names_the_rule_and_leaves_no_scratch_index(
    client: OpenSearchClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deployer.targets.opensearch_run as run_mod

    real_body = run_mod.run_body

    def failing(compiled: Any, *args: Any) -> dict[str, Any]:
        body = real_body(compiled, *args)
        body["triggers"][0]["bucket_level_trigger"]["condition"]["script"]["source"] = (
            "params.sequences.nope > 0"
        )
        return body

    monkeypatch.setattr(run_mod, "run_body", failing)
    rule = {
        "rule_id": "dac-run-broken",
        "name": "broken",
        "type": "eql",
        "language": "eql",
        "query": QUERIES["three-steps"],
        "index": ["logs-*"],
        "severity": "low",
        "risk_score": 1,
    }
    with pytest.raises(TargetError, match="dac-run-broken: the monitor's search failed when it ran"):
        list(run_on_opensearch(client, [rule], _generated(random.Random(1), 200)))
    assert _scratch_indices(client) == []
