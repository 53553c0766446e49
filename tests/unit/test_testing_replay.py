"""replay(): one dict per match with exactly the documented keys, placeholders and unnamed events."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.rules.loader import load_rule_files, load_rule_text
from deployer.testing.evaluate import EvaluationError
from deployer.testing.events import read_events
from deployer.testing.replay import RESULT_KEYS, replay

DATA = Path(__file__).resolve().parents[1] / "data" / "testing"
CHAIN = DATA / "rules" / "fixtures" / "chain.ndjson"

MISSING_RULE = """
rule_id: t-missing
name: File write, no network in between, then a spawn
description: Uses a missing-event step.
type: eql
language: eql
query: |
  sequence with maxspan=1m
    [file where true] by process.entity_id
    ![network where true] by process.entity_id
    [process where true] by process.parent.entity_id
index: [logs-*]
severity: low
risk_score: 21
metadata:
  implements: [T1204]
  platforms: [windows]
  maturity: production
"""


def _rule(text: str):  # noqa: ANN202
    rule, findings = load_rule_text(text, "inline.yaml")
    assert rule is not None, findings
    return rule


def test_keys_and_order_exactly() -> None:
    rules = load_rule_files([DATA / "rules"]).rules
    results = list(replay(rules, read_events(CHAIN)))
    assert results
    assert all(tuple(r) == RESULT_KEYS for r in results)
    assert RESULT_KEYS == ("rule_id", "name", "implements", "event_ids", "join_keys")


def test_missing_event_placeholder_is_null() -> None:
    (result,) = replay([_rule(MISSING_RULE)], read_events(CHAIN))
    assert result == {
        "rule_id": "t-missing",
        "name": "File write, no network in between, then a spawn",
        "implements": ["T1204"],
        "event_ids": ["e1", None, "e2"],
        "join_keys": ["A"],
    }


def test_event_without_id_is_named_by_its_line(tmp_path: Path) -> None:
    lines = CHAIN.read_text().splitlines()
    events_file = tmp_path / "ev.ndjson"
    # Drop e2's event.id (line 2).
    events_file.write_text("\n".join([lines[0], lines[1].replace('"id": "e2", ', ""), *lines[2:]]) + "\n")
    (result,) = replay([_rule(MISSING_RULE)], read_events(events_file))
    assert result["event_ids"] == ["e1", None, "line:2"]


def test_bad_graph_fails_before_any_result() -> None:
    rules = load_rule_files([DATA / "rules" / "single.yaml", DATA / "missing_dep"]).rules
    it = replay(rules, read_events(CHAIN))
    with pytest.raises(EvaluationError, match="t-nowhere"):
        next(it)


def test_query_that_does_not_compile_is_reported_against_the_rule() -> None:
    bad = _rule(MISSING_RULE.replace("[file where true]", "[file where ]"))
    with pytest.raises(EvaluationError) as info:
        list(replay([bad], read_events(CHAIN)))
    assert info.value.rule_id == "t-missing"
    assert "does not compile" in str(info.value)
