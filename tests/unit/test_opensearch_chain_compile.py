"""Compiling rules over building-block alerts into a monitor over Alerting's alert documents."""

from __future__ import annotations

from typing import Any

import pytest

from deployer.targets.opensearch_chain import ALERT_INDICES, compile_chain
from deployer.targets.opensearch_compile import (
    COMPOSITE_AGG,
    EVENTS_AGG,
    SEQUENCE_AGG,
    UnsupportedConstruct,
    compile_rules,
    trigger_id,
)

FILE_THEN_SPAWN = """sequence with maxspan=5m
  [file where event.type == "creation" and process.name : "winword.exe"] by process.entity_id
  [process where event.type == "start" and process.name : "cmd.exe"] by process.parent.entity_id"""
SPAWN_THEN_NET = """sequence with maxspan=1m
  [process where event.type == "start" and process.name : "cmd.exe"] by process.entity_id
  [network where destination.port == 443] by process.entity_id"""
CHAIN = """sequence with maxspan=1m
  [process where kibana.alert.rule.rule_id == "a" and event.type == "start"] by process.entity_id
  [network where kibana.alert.rule.rule_id == "b"] by process.entity_id"""


def rule(rid: str, query: str, **extra: Any) -> dict[str, Any]:
    body = {
        "rule_id": rid,
        "name": rid,
        "type": "eql",
        "language": "eql",
        "query": query,
        "index": ["logs-*"],
    }
    body.update(extra)
    return body


def chain_rule(query: str = CHAIN) -> dict[str, Any]:
    return rule(
        "c",
        query,
        index=[".alerts-security.alerts-*"],
        metadata={"depends_on": ["a", "b"]},
        required_fields=[{"name": "process.parent.entity_id", "type": "keyword"}],
    )


def compiled(*rules: dict[str, Any]):
    report = compile_rules(list(rules))
    return {c.rule_id: c for c in report.compiled}, {r.rule_id: r for r in report.refused}


def metric(monitor: dict[str, Any], name: str) -> dict[str, Any]:
    aggs = monitor["inputs"][0]["search"]["query"]["aggregations"][COMPOSITE_AGG]["aggregations"]
    return aggs[name]["scripted_metric"]


def test_chain_reads_the_blocks_alerts_by_trigger_id_and_takes_the_implied_stages():
    ok, refused = compiled(rule("a", FILE_THEN_SPAWN), rule("b", SPAWN_THEN_NET), chain_rule())
    assert not refused
    chain = ok["c"]
    assert chain.reads_alerts_of == ("a", "b")
    search = chain.monitor["inputs"][0]["search"]
    assert search["indices"] == ALERT_INDICES
    assert search["query"]["query"]["bool"]["filter"][0] == {
        "terms": {"trigger_id": sorted([trigger_id("a"), trigger_id("b")])}
    }
    params = metric(chain.monitor, SEQUENCE_AGG)["params"]
    # Step 1 takes a's spawn stage (index 1), not its file stage; step 2 takes b's network stage.
    assert params["steps"] == {trigger_id("a"): {"1": 1}, trigger_id("b"): {"1": 2}}
    assert params["kf"] == ["process.entity_id", "process.parent.entity_id"]
    assert "emit" not in params and metric(chain.monitor, EVENTS_AGG)["params"]["emit"] > 0
    # Every sequence of 1 minute fits in a window: from (6m default) vs interval 5m + 1m.
    assert chain.lookback_ms == 360_000


def test_blocks_record_the_fields_the_chain_joins_on():
    ok, _ = compiled(rule("a", FILE_THEN_SPAWN), rule("b", SPAWN_THEN_NET), chain_rule())
    assert "emit" not in metric(ok["a"].monitor, SEQUENCE_AGG)["params"]
    rec = metric(ok["a"].monitor, EVENTS_AGG)["params"]
    assert rec["kf"] == ["process.entity_id", "process.parent.entity_id"]
    # Without a chain reading it, a rule's monitor has no events aggregation.
    alone, _ = compiled(rule("a", FILE_THEN_SPAWN))
    assert EVENTS_AGG not in str(alone["a"].monitor)


def test_chain_over_a_refused_block_is_refused_with_the_blocks_reason():
    _, refused = compiled(
        rule("a", FILE_THEN_SPAWN),
        rule("b", SPAWN_THEN_NET, exceptions_list=[{"list_id": "x"}]),
        chain_rule(),
    )
    assert refused["c"].construct == "building block"
    assert "b is not compiled" in refused["c"].detail and "exceptions_list" in refused["c"].detail


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            CHAIN.replace('kibana.alert.rule.rule_id == "b"', "destination.port == 443"),
            "exactly one building block",
        ),
        (CHAIN.replace('event.type == "start"', 'process.name : "x"'), "only `field == constant`"),
        (CHAIN.replace('event.type == "start"', 'user.name == "x"'), "cannot tell whether a's stage 2"),
        (CHAIN.replace("[network where", "[dns where"), "no stage of b"),
    ],
)
def test_undecidable_or_impossible_steps_are_refused(query: str, message: str):
    _, refused = compiled(rule("a", FILE_THEN_SPAWN), rule("b", SPAWN_THEN_NET), chain_rule(query))
    assert message in str(refused["c"])


def test_a_chain_without_its_blocks_names_the_missing_block():
    with pytest.raises(UnsupportedConstruct, match="a is not compiled for OpenSearch"):
        compile_chain(chain_rule(), "c", {})
    with pytest.raises(UnsupportedConstruct, match="together with its building-block rules"):
        from deployer.targets.opensearch_compile import compile_rule

        compile_rule(chain_rule())


def test_alert_indices_are_patterns_so_a_fresh_cluster_accepts_the_chain_monitor() -> None:
    # Real Alerting 2.19.4.0 answers 404 "Configured indices are not found" for a concrete index that
    # does not exist yet; the alerts index appears only with the first alert.
    assert all("*" in index for index in ALERT_INDICES)
