"""AN1314's chain on real Alerting: what a composite workflow answers, and the design that works.

Neither is deployed by `dac deploy` (docs/opensearch.md, "AN1314's chain on OpenSearch"); these
tests pin the real plugin's answers the design rests on.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest

from deployer.rules.loader import load_rule_files
from deployer.targets.opensearch import OpenSearchClient
from deployer.targets.opensearch_compile import COMPOSITE_AGG, compile_rule
from deployer.targets.opensearch_verify import (
    active_alerts,
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


@pytest.fixture
def blocks(opensearch_alerting: Any) -> Any:
    """The two building blocks' monitors (block 1 also reports its spawn events' child ids) and the replayed fixture."""
    client = OpenSearchClient(opensearch_alerting.url)
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
    clear_indices(client, [index])
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


def test_a_bucket_level_monitor_over_the_blocks_alerts_raises_one_alert_per_chain(blocks: Any) -> None:
    client, (m1, m2), rules, events = blocks
    for monitor_id in (m1, m2):
        client.execute_monitor(monitor_id)
    time.sleep(1)
    chain = {
        "type": "monitor",
        "monitor_type": "bucket_level_monitor",
        "name": "chain test over alerts",
        "enabled": False,
        "schedule": {"period": {"interval": 1, "unit": "MINUTES"}},
        "inputs": [
            {
                "search": {
                    "indices": [".opendistro-alerting-alerts"],
                    "query": {
                        "size": 0,
                        "query": {
                            "bool": {
                                "filter": [
                                    {"terms": {"monitor_id": [m1, m2]}},
                                    {"term": {"state": "ACTIVE"}},
                                    {
                                        "range": {
                                            "start_time": {
                                                "gte": "{{period_end}}||-16m",
                                                "lte": "{{period_end}}",
                                                "format": "epoch_millis",
                                            }
                                        }
                                    },
                                ]
                            }
                        },
                        "aggregations": {
                            COMPOSITE_AGG: {
                                "composite": {
                                    "sources": [
                                        {
                                            "child": {
                                                "terms": {
                                                    "script": {
                                                        "lang": "painless",
                                                        # Block 1's alert carries its children (dynamic mapping of
                                                        # agg_alert_content.bucket); block 2's is keyed on the child.
                                                        "source": "doc['monitor_id'].value == params.m1 ? "
                                                        "doc['agg_alert_content.bucket.dac_link.ids.buckets.key.keyword'] : "
                                                        "doc['agg_alert_content.bucket_keys.keyword']",
                                                        "params": {"m1": m1},
                                                    }
                                                }
                                            }
                                        }
                                    ]
                                },
                                "aggregations": {
                                    "b1": {
                                        "filter": {"term": {"monitor_id": m1}},
                                        "aggregations": {
                                            "app": {
                                                "terms": {"field": "agg_alert_content.bucket_keys.keyword"}
                                            }
                                        },
                                    },
                                    "b2": {"filter": {"term": {"monitor_id": m2}}},
                                },
                            }
                        },
                    },
                }
            }
        ],
        "triggers": [
            {
                "bucket_level_trigger": {
                    "name": "chain",
                    "severity": "1",
                    "condition": {
                        "parent_bucket_path": COMPOSITE_AGG,
                        "buckets_path": {"c1": "b1._count", "c2": "b2._count"},
                        "script": {"lang": "painless", "source": "params.c1 > 0 && params.c2 > 0"},
                    },
                    "actions": [],
                }
            }
        ],
    }
    chain_id = client.create_monitor(chain)
    try:
        result = client.execute_monitor(chain_id)
        buckets = next(iter(result["trigger_results"].values()))["agg_result_buckets"]
        found = {
            key: [b["key"] for b in content["agg_alert_content"]["bucket"]["b1"]["app"]["buckets"]]
            for key, content in buckets.items()
        }
        # One chain alert per chain, keyed on the child, with its app: what the Kibana chain rule finds.
        assert set(found) == _offline_chains(events)
        assert all(len(apps) == 1 for apps in found.values())
        stored = active_alerts(client, chain_id)
        assert sorted(a["agg_alert_content"]["bucket_keys"][0] for a in stored.values()) == sorted(found)
    finally:
        client.delete_monitor(chain_id)
