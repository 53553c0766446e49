"""`dac coverage` per detection strategy, from the ATT&CK v18.1 table: which analytics are covered."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from deployer.coverage import ANALYTICS, compute, navigator_layer, render_text
from deployer.rules import attack


def _rule(rule_id: str, implements: list[str], platforms: list[str], **kibana: Any) -> Any:
    body = {
        "rule_id": rule_id,
        "name": rule_id,
        "query": "process where true",
        "severity": "low",
        "threat": [],
    }
    body.update(kibana)
    metadata: dict[str, Any] = {"implements": implements, "platforms": platforms}
    if "depends_on" in kibana:
        metadata["depends_on"] = body.pop("depends_on")
    return SimpleNamespace(rule_id=rule_id, kibana=body, metadata=metadata, path=Path(f"{rule_id}.yaml"))


def test_hand_written_analytics_agree_with_attack() -> None:
    table = attack.table()
    for an, spec in ANALYTICS.items():
        analytic = table.analytics[an]
        assert spec["strategy"] == analytic.strategy, an
        assert spec["technique"] == table.strategies[analytic.strategy].technique, an
        assert [attack.PLATFORM_NAMES[p] for p in spec["platforms"]] == list(analytic.platforms), an


def test_a_strategy_covers_the_analytics_of_the_rule_platforms() -> None:
    report = compute(
        [_rule("win", ["DET0294", "T1204.002"], ["windows"]), _rule("lin", ["AN0821"], ["linux"])]
    )
    det = report.strategy_matrix()["DET0294"]
    assert det["technique"] == "T1204.002" and det["covered"] == 2
    assert {an: a["alerting"] for an, a in det["analytics"].items()} == {
        "AN0819": ["win"],
        "AN0820": [],
        "AN0821": ["lin"],
    }
    text = render_text(report)
    assert "DET0294 (T1204.002 Malicious File): 2 of 3 analytics covered" in text
    assert "AN0820 [macOS]: not covered" in text


def test_building_blocks_count_for_their_readers_claims_but_do_not_alert() -> None:
    block = _rule("block", ["T1204"], ["windows"], building_block_type="default")
    chain = _rule("chain", ["AN1314"], ["windows"], depends_on=["block"])
    det = compute([block, chain]).strategy_matrix()["DET0478"]
    assert det["analytics"]["AN1314"] == {
        "platforms": ["Windows"],
        "alerting": ["chain"],
        "building_blocks": ["block"],
    }
    assert det["covered"] == 1 and len(det["analytics"]) == 5


def test_navigator_layer_lists_each_analytic_on_the_strategy_technique() -> None:
    layer = navigator_layer(compute([_rule("win", ["DET0294"], ["windows"])]))
    assert layer["versions"]["attack"] == "18"
    (entry,) = [t for t in layer["techniques"] if t["techniqueID"] == "T1204.002"]
    notes = {m["name"]: m["value"] for m in entry["metadata"]}
    assert notes["DET0294 AN0819 (Windows)"] == "win"
    assert notes["DET0294 AN0820 (macOS)"] == "not covered"
    assert entry["tactic"] == "execution"
