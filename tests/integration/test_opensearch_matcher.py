"""Differential test: the compiled monitor alerts on exactly the entities the offline EQL engine matches.

Random event streams (ties, maxspan edges, repeated steps, two keys one of them optional and
sometimes null, steps on different key fields, several entities) are written
to a real OpenSearch, the monitor is executed, and the alerted keys are compared with the keys of
the sequences `deployer.eql.engine` finds in the same events.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from deployer.eql.engine import compile_query
from deployer.targets.opensearch import OpenSearchClient, OpenSearchTarget, deploy
from deployer.targets.opensearch_compile import NULL_KEY
from deployer.targets.opensearch_verify import (
    alerted_entities,
    bulk_index,
    clear_indices,
    deploy_templates,
    format_ts,
    replay_index,
    run_monitor_search,
)

pytestmark = pytest.mark.integration

INDEX_PATTERN = "dac-matcher-test-*"
TEMPLATE = {
    "index_templates": {
        "dac-matcher-test": {
            "index_patterns": [INDEX_PATTERN],
            "priority": 500,
            "template": {
                "settings": {"number_of_shards": 1, "number_of_replicas": 0},
                "mappings": {
                    "dynamic_templates": [
                        {"strings": {"match_mapping_type": "string", "mapping": {"type": "keyword"}}}
                    ],
                    "properties": {"@timestamp": {"type": "date"}},
                },
            },
        }
    }
}

QUERIES = {
    "three-steps": """
        sequence by process.entity_id with maxspan=30s
          [process where event.type == "start"]
          [file where file.extension : "hta"]
          [network where true]
    """,
    "repeated-step": """
        sequence by user.name with maxspan=20s
          [authentication where event.outcome == "failure"] with runs=3
          [authentication where event.outcome == "success"]
    """,
    "overlapping-steps": """
        sequence by process.entity_id with maxspan=15s
          [any where process.name : "a*"]
          [any where process.name : "*b"]
    """,
    "two-keys-one-optional": """
        sequence by host.id, ?user.name with maxspan=20s
          [process where event.type == "start"]
          [network where true]
    """,
    "tiebreaker": """
        sequence by process.entity_id with maxspan=10s
          [process where true]
          [network where true]
    """,
    "different-key-fields": """
        sequence with maxspan=30s
          [file where file.extension : "hta"] by process.entity_id
          [process where event.type == "start"] by process.parent.entity_id
          [network where true] by process.parent.entity_id
    """,
}

BASE_MS = 1_900_000_000_000


def _event(rng: random.Random, kind: str, i: int, t_s: int) -> dict[str, Any]:
    entity = rng.choice(["p1", "p2", "p3"])
    event: dict[str, Any] = {
        "@timestamp": format_ts(BASE_MS + t_s * 1000),
        # A tiebreaker that disagrees with arrival order, and is missing on some events.
        "event": {"id": f"e{i}", **({"sequence": rng.randint(0, 9)} if rng.random() < 0.8 else {})},
        "process": {"entity_id": entity, "name": rng.choice(["ab", "a", "b", "xb", "ax"])},
        "host": {"id": rng.choice(["h1", "h2"])},
    }
    # Some events carry no user at all: an optional key joins them on null.
    if rng.random() < 0.7:
        event["user"] = {"name": rng.choice(["alice", "bob"])}
    if kind == "different-key-fields":
        event["process"]["parent"] = {"entity_id": rng.choice(["p1", "p2", "p3"])}
    # The repeated-step rule needs runs of logins for one user; other rules mix all categories.
    cat = "authentication" if kind == "repeated-step" else rng.choice(["process", "file", "network"])
    event["event"]["category"] = [cat]
    if cat == "process":
        event["event"]["type"] = [rng.choice(["start", "end"])]
    elif cat == "file":
        event["file"] = {"extension": rng.choice(["HTA", "hta", "txt"])}
    elif cat == "authentication":
        event["event"]["outcome"] = rng.choice(["failure", "failure", "success"])
    return event


def _stream(rng: random.Random, kind: str) -> list[dict[str, Any]]:
    # Whole seconds over a span longer than maxspan, so ties and too-late steps both occur.
    if kind == "tiebreaker":
        # Few events crowded into few seconds, so ties decide the outcome.
        times = sorted(rng.randint(0, 3) for _ in range(rng.randint(3, 7)))
    else:
        times = sorted(rng.randint(0, 60) for _ in range(rng.randint(6, 30)))
    return [_event(rng, kind, i, t) for i, t in enumerate(times)]


@pytest.fixture(scope="module")
def client(opensearch: Any) -> Any:
    c = OpenSearchClient(opensearch.url, verify=False if opensearch.url.startswith("https") else True)
    deploy_templates(c, TEMPLATE)
    yield c
    c.close()


@pytest.mark.parametrize("kind", sorted(QUERIES))
def test_monitor_matches_offline_engine(client: OpenSearchClient, kind: str) -> None:
    rule = {
        "rule_id": f"dac-matcher-{kind}",
        "name": f"matcher {kind}",
        "type": "eql",
        "language": "eql",
        "query": QUERIES[kind],
        "index": [INDEX_PATTERN],
        "severity": "low",
        "risk_score": 1,
        "enabled": False,  # executed on demand only
        "from": "now-10m",
    }
    tiebreaker = "event.sequence" if kind == "tiebreaker" else None
    if tiebreaker:
        rule["tiebreaker_field"] = tiebreaker
    with_alerting = client.has_alerting()
    target = OpenSearchTarget(client)
    monitor_id = None
    if with_alerting:
        _plan, results = deploy(target, [rule])
        assert all(r.ok for r in results), results
        target.read_current([rule["rule_id"]])
        monitor_id = target.monitor_ids()[rule["rule_id"]]
    else:
        target.desired([rule])
    compiled = target.compiled[rule["rule_id"]]
    index = replay_index(compiled)
    program = compile_query(QUERIES[kind], tiebreaker_field=tiebreaker)
    rng = random.Random(f"{kind}-seed")
    disagreements = []
    alerted_rounds = 0
    period_end = BASE_MS + 90_000
    rounds = 100 if kind == "tiebreaker" else 25
    try:
        for round_no in range(rounds):
            events = _stream(rng, kind)
            expected = {
                tuple(NULL_KEY if k is None else str(k) for k in m.join_keys) for m in program.run(events)
            }
            clear_indices(client, [index])
            bulk_index(client, index, events)
            if monitor_id is not None:
                result = client.execute_monitor(monitor_id, period_end_ms=period_end)
                got = set(alerted_entities(result, rule["rule_id"]))
            else:
                # No Alerting plugin: the monitor's own search and trigger condition, run on the cluster.
                got = set(run_monitor_search(client, compiled, period_end))
            alerted_rounds += bool(got)
            if got != expected:
                disagreements.append((round_no, sorted(expected), sorted(got), events))
    finally:
        clear_indices(client, [index])
        if monitor_id is not None:
            client.delete_monitor(monitor_id)
    assert not disagreements, disagreements[0]
    assert 0 < alerted_rounds < rounds, (
        f"{alerted_rounds}/{rounds} rounds alerted: the streams must exercise both outcomes"
    )
