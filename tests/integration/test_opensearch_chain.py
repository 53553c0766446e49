"""AN1314's chains on the real OpenSearch Alerting plugin (docs/opensearch.md, "Chains over building-block alerts").

First the real plugin's answer that ruled out a composite workflow: one chained alert per run, with
no entity. Then the compiled design: every fixture of the two chain rules is replayed (timestamps
shifted to now), the building blocks' monitors run and store their alerts, the chain's monitor runs
over Alerting's alert indices, and its alerts are read back from the Alerting API: one per chain,
for the right child and app, none for the near misses.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from deployer.rules.loader import load_rule_files
from deployer.targets import opensearch_chain_run as chain_run
from deployer.targets import opensearch_verify as ov
from deployer.targets.opensearch import OpenSearchClient
from deployer.targets.opensearch_compile import (
    COMPOSITE_AGG,
    CompiledRule,
    compile_rule,
    compile_rules,
    is_owned,
)
from deployer.targets.opensearch_verify import (
    bulk_index,
    clear_indices,
    replay_index,
    shift_events,
)
from deployer.testing.events import read_events
from deployer.testing.replay import replay

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BLOCK1, BLOCK2, CHAIN = (
    "an1314-win-app-file-then-lolbin",
    "an1314-win-app-lolbin-network",
    "an1314-win-app-lolbin-network-chain",
)
FIXTURE = REPO / "detections" / "windows" / "fixtures" / "an1314_two_hosts_two_chains.ndjson"


def _fresh_replay_index(client: OpenSearchClient, index: str) -> None:
    """Write the mapping templates and drop the replay index, so it is re-created with their mapping.

    An index another test created before the templates existed maps the entity ids as text, on
    which the monitors' scripts fail; re-created, it is the data stream the templates declare.
    """
    ov.deploy_templates(client, ov.load_engine_templates(REPO))
    client.request("DELETE", f"/_data_stream/{index}", ok=(404,))
    client.request("DELETE", f"/{index}", ok=(404,))


@pytest.fixture
def blocks(opensearch_alerting: Any) -> Any:
    """The two building blocks' monitors (block 1 also reports its spawn events' child ids) and the replayed fixture."""
    from deployer.targets.opensearch_verify import deploy_templates, load_engine_templates

    client = OpenSearchClient(opensearch_alerting.url)
    # The ECS templates make the replayed fields keywords; a fresh cluster would map them as text.
    deploy_templates(client, load_engine_templates(REPO))
    rules = {r.rule_id: r for r in load_rule_files([REPO / "detections"]).rules}
    ids, compiled = [], {}
    for rid in (BLOCK1, BLOCK2):
        data = copy.deepcopy(rules[rid].data)
        # The blocks' Kibana exception lists do not touch this fixture; the monitors compile without them.
        data.pop("exceptions_list", None)
        compiled[rid] = compile_rule(data, rule_id=rid)
        body = copy.deepcopy(compiled[rid].monitor)
        body.pop("ui_metadata")
        body["name"] = f"chain test {rid}"
        body["enabled"] = False
        if rid == BLOCK1:
            # Its last step is the spawn event (joined on the parent): its process.entity_id is the child.
            aggs = body["inputs"][0]["search"]["query"]["aggregations"][COMPOSITE_AGG]["aggregations"]
            aggs["dac_link"] = {
                "filter": compiled[rid].step_queries[-1],
                "aggregations": {"ids": {"terms": {"field": "process.entity_id", "size": 100}}},
            }
        ids.append(client.create_monitor(body))
    index = replay_index(compiled[BLOCK1])
    events = [dict(e) for e in read_events(FIXTURE)]
    shifted, _ = shift_events(events, int(time.time() * 1000))
    _fresh_replay_index(client, index)
    bulk_index(client, index, shifted)
    try:
        yield client, ids, rules, events
    finally:
        for monitor_id in ids:
            client.delete_monitor(monitor_id)
        clear_indices(client, [index])
        client.close()


def _offline_chains(events: list[dict[str, Any]]) -> set[str]:
    """The child ids the Kibana chain rule alerts on, by the offline engine (exception lists applied)."""
    from deployer.testing.loading import load_rules

    loaded = load_rules([REPO / "detections"])
    chain = [r for r in loaded.rules if r.rule_id == CHAIN]
    library = [r for r in loaded.rules if r.rule_id != CHAIN]
    return {r["join_keys"][0] for r in replay(chain, events, library=library, exceptions=loaded.exceptions)}


def test_a_composite_workflow_raises_one_alert_without_an_entity(blocks: Any) -> None:
    client, (m1, m2), rules, events = blocks
    assert len(_offline_chains(events)) == 2
    workflow = {
        "name": "chain test workflow",
        "workflow_type": "composite",
        "enabled": False,
        "schedule": {"period": {"interval": 1, "unit": "MINUTES"}},
        "inputs": [
            {
                "composite_input": {
                    "sequence": {
                        "delegates": [{"order": 1, "monitor_id": m1}, {"order": 2, "monitor_id": m2}]
                    }
                }
            }
        ],
        "triggers": [
            {
                "chained_alert_trigger": {
                    "id": "chain",
                    "name": "chain",
                    "severity": "1",
                    "condition": {
                        "script": {"source": f"monitor[id={m1}] && monitor[id={m2}]", "lang": "painless"}
                    },
                    "actions": [],
                }
            }
        ],
    }
    workflow_id = client.request("POST", "/_plugins/_alerting/workflows", workflow)["_id"]
    try:
        client.request(
            "POST", f"/_plugins/_alerting/workflows/{workflow_id}/_execute", params={"dryrun": "false"}
        )
        alerts = client.request(
            "GET", "/_plugins/_alerting/workflows/alerts", params={"workflowIds": workflow_id}
        )["alerts"]
        # Two chains, one chained alert: the trigger is a boolean over "did each delegate alert".
        assert len(alerts) == 1
        assert alerts[0]["monitor_id"] == "" and "agg_alert_content" not in alerts[0]
        assert len(alerts[0]["associated_alert_ids"]) == 4
    finally:
        client.request("DELETE", f"/_plugins/_alerting/workflows/{workflow_id}", ok=(404,))


# ---------------------------------------------------------------- the compiled chain

RULES_DIR = REPO / "detections" / "windows"
CHAINS = [CHAIN, "an1314-win-app-lolbin-descendant-network-chain"]


def _rules() -> list[Any]:
    # As loaded: the network blocks' egress exception list is compiled into their monitors.
    return [r for r in load_rule_files([RULES_DIR]).rules if r.rule_id and r.rule_id.startswith("an1314-")]


def _rules_by_id() -> dict[str, Any]:
    return {r.rule_id: r for r in _rules()}


def _cases() -> list[tuple[str, dict[str, Any]]]:
    by_id = {r.rule_id: r for r in _rules()}
    return [(rid, case) for rid in CHAINS for case in by_id[rid].metadata["tests"]]


@pytest.fixture(scope="module")
def setup(opensearch_alerting) -> dict[str, Any]:
    client = OpenSearchClient(opensearch_alerting.url)
    report = compile_rules(_rules())
    assert not report.refused, [str(r) for r in report.refused]
    _fresh_replay_index(client, ov.replay_index(next(c for c in report.compiled if not c.reads_alerts_of)))
    return {"client": client, "compiled": {c.rule_id: c for c in report.compiled}}


def _fresh_monitors(
    client: OpenSearchClient, compiled: dict[str, CompiledRule], rids: list[str]
) -> dict[str, str]:
    # The chain selects its blocks' alerts by trigger id, which is the same for every monitor of a
    # rule: deleting the earlier monitors turns their alerts DELETED, which the chain ignores.
    for hit in client.search_monitors():
        if is_owned(hit["monitor"]):
            client.delete_monitor(hit["_id"])
    return {rid: client.create_monitor(compiled[rid].monitor) for rid in rids}


def _event(events: list[dict[str, Any]], event_id: str) -> dict[str, Any]:
    return next(e for e in events if e["event"]["id"] == event_id)


@pytest.mark.parametrize(("chain_id", "case"), _cases(), ids=lambda v: v if isinstance(v, str) else v["name"])
def test_chain_alerts_once_per_chain_with_child_and_app(setup, chain_id: str, case: dict[str, Any]) -> None:
    client: OpenSearchClient = setup["client"]
    compiled: dict[str, CompiledRule] = setup["compiled"]
    chain = compiled[chain_id]
    ids = _fresh_monitors(client, compiled, [*chain_run.blocks_of(chain), chain_id])
    events = [
        json.loads(line) for line in (RULES_DIR / case["events"]).read_text().splitlines() if line.strip()
    ]
    ov.replay_fixture(client, compiled[chain_run.blocks_of(chain)[0]], events)

    keys = chain_run.run_chain(client, chain, ids)
    alerts = chain_run.chain_alerts(client, ids[chain_id])

    if case["expect"] == "no_match":
        assert keys == [] and alerts == []
        return
    key_field = chain.key_fields[0][0]
    expected = {}
    for seq in case["sequences"]:
        first = _event(events, seq[0])
        key = first
        for part in key_field.split("."):
            key = key[part]
        expected[(key,)] = first["process"]["parent"]["entity_id"]
    assert sorted(keys) == sorted(expected)
    # Exactly one stored alert per chain, for the right child, naming the app on its first event.
    assert sorted(a.key for a in alerts) == sorted(expected)
    for alert in alerts:
        assert alert.state == "ACTIVE" and alert.alert_id
        assert alert.values("process.parent.entity_id", 0) == [expected[alert.key]]
        assert alert.values(chain.key_fields[0][1], 1) == [alert.key[0]]


def test_dac_verify_checks_both_chains_on_stored_alerts(setup) -> None:
    client: OpenSearchClient = setup["client"]
    for hit in client.search_monitors():
        if is_owned(hit["monitor"]):
            client.delete_monitor(hit["_id"])
    rules = _rules()
    report = ov.verify(client, rules, scheduled_timeout=0)
    assert not report.refused
    chain_outcomes = [o for o in report.outcomes if o.rule_id in CHAINS]
    assert len(chain_outcomes) == len(_cases())
    failures = [f"{o.rule_id} / {o.name}: {o.message}" for o in chain_outcomes if not o.ok]
    assert not failures, "\n".join(failures)
    for o in chain_outcomes:
        # One stored chain alert per expected chain, read back from the Alerting API.
        assert len(o.alert_ids) == len(o.expected) and set(o.persisted) == set(o.expected), o


def test_the_job_scheduler_raises_the_chain_alert(setup) -> None:
    """Not `_execute`: the blocks and the chain on a 1-minute schedule; the chain alerts on its own."""
    client: OpenSearchClient = setup["client"]
    compiled: dict[str, CompiledRule] = setup["compiled"]
    chain = compiled[CHAIN]
    for hit in client.search_monitors():
        if is_owned(hit["monitor"]):
            client.delete_monitor(hit["_id"])
    ids = {}
    for rid in [*chain_run.blocks_of(chain), CHAIN]:
        body = copy.deepcopy(compiled[rid].monitor)
        body["enabled"] = True
        body["schedule"] = {"period": {"interval": 1, "unit": "MINUTES"}}
        ids[rid] = client.create_monitor(body)
    try:
        case = next(t for t in _rules_by_id()[CHAIN].metadata["tests"] if t["expect"] == "match")
        events = [json.loads(x) for x in (RULES_DIR / case["events"]).read_text().splitlines() if x.strip()]
        ov.replay_fixture(client, compiled[chain_run.blocks_of(chain)[0]], events)
        child = _event(events, case["sequences"][0][0])["process"]["entity_id"]
        deadline = time.monotonic() + 300
        alerts: list[chain_run.ChainAlert] = []
        while not alerts and time.monotonic() < deadline:
            time.sleep(5)
            alerts = chain_run.chain_alerts(client, ids[CHAIN])
        assert [a.key for a in alerts] == [(child,)], "no chain alert from the job scheduler within 300 s"
    finally:
        for monitor_id in ids.values():
            client.delete_monitor(monitor_id)
