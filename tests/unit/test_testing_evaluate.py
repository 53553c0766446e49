"""Dependency order, cycles and missing dependencies of rules over other rules' alerts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from deployer.testing.evaluate import (
    EvaluationError,
    Evaluator,
    closure,
    index_kinds,
    is_sequence_query,
)


@dataclass
class Rule:
    rule_id: str
    kibana: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def _events_rule(rule_id: str) -> Rule:
    return Rule(rule_id, {"name": rule_id, "index": ["logs-*"], "query": "any where true"})


def _alerts_rule(rule_id: str, *deps: str) -> Rule:
    return Rule(
        rule_id,
        {"name": rule_id, "index": [".alerts-security.alerts-*"], "query": "any where true"},
        {"depends_on": list(deps)},
    )


@dataclass
class FakeMatch:
    events: list[dict | None]
    join_keys: list = field(default_factory=list)


class EveryDoc:
    """A stand-in program: every input document is a one-event match; records what it saw."""

    def __init__(self, rule_id: str, seen: dict[str, list[dict]]) -> None:
        self.rule_id = rule_id
        self.seen = seen

    def run(self, events):  # noqa: ANN001, ANN201
        docs = list(events)
        self.seen[self.rule_id] = docs
        return iter([FakeMatch([d]) for d in docs])


def _by_id(*rules: Rule) -> dict[str, Rule]:
    return {r.rule_id: r for r in rules}


def test_closure_puts_dependencies_first() -> None:
    rules = _by_id(_alerts_rule("c", "b", "a"), _alerts_rule("b", "a"), _events_rule("a"), _events_rule("z"))
    assert closure(["c"], rules) == ["a", "b", "c"]
    assert closure(["z", "c"], rules) == ["a", "b", "c", "z"]


def test_cycle_is_a_clear_error() -> None:
    rules = _by_id(_alerts_rule("a", "b"), _alerts_rule("b", "c"), _alerts_rule("c", "a"))
    with pytest.raises(EvaluationError) as info:
        closure(["a"], rules)
    assert "dependency cycle: a -> b -> c -> a" in str(info.value)


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(EvaluationError, match="dependency cycle: a -> a"):
        closure(["a"], _by_id(_alerts_rule("a", "a")))


def test_missing_dependency_is_a_clear_error() -> None:
    with pytest.raises(EvaluationError) as info:
        closure(["a"], _by_id(_alerts_rule("a", "ghost")))
    assert info.value.rule_id == "a"
    assert "depends_on names 'ghost'" in str(info.value)


def test_index_kinds() -> None:
    assert index_kinds(_events_rule("a")) == (True, False)
    assert index_kinds(_alerts_rule("b", "a")) == (False, True)
    both = Rule("c", {"index": ["logs-*", ".alerts-security.alerts-default"]}, {"depends_on": ["a"]})
    assert index_kinds(both) == (True, True)


def test_rules_over_alerts_see_their_dependencies_alerts_only() -> None:
    seen: dict[str, list[dict]] = {}
    rules = [_alerts_rule("c", "b"), _alerts_rule("b", "a"), _events_rule("a"), _events_rule("other")]
    ev = Evaluator(rules, compiler=lambda r: EveryDoc(r.rule_id, seen))
    events = [{"@timestamp": 1, "event": {"id": "e1"}}, {"@timestamp": 2, "event": {"id": "e2"}}]
    outcomes = list(ev.evaluate(["c"], events))
    assert [o.rule.rule_id for o in outcomes] == ["c"]
    assert seen["a"] == events
    assert "other" not in seen
    # b reads a's alerts; c reads a's and b's (they share the alerts index).
    assert {d["kibana"]["alert"]["rule"]["rule_id"] for d in seen["b"]} == {"a"}
    assert {d["kibana"]["alert"]["rule"]["rule_id"] for d in seen["c"]} == {"a", "b"}
    assert all(d["event"]["kind"] == "signal" for d in seen["c"])


def test_compile_errors_name_the_rule() -> None:
    def broken(rule: Rule) -> Any:
        raise ValueError("unexpected token")

    ev = Evaluator([_events_rule("a")], compiler=broken)
    with pytest.raises(EvaluationError) as info:
        ev.prepare(["a"])
    assert str(info.value) == "a: query does not compile: ValueError: unexpected token"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sequence by x [any where true] [any where true]", True),
        ("  // comment\n  SEQUENCE with maxspan=1m [a where true] [b where true]", True),
        ("/* sequence */ process where true", False),
        ("sample by x [a where true] [b where true]", True),
        ("process where process.name == 'sequence'", False),
    ],
)
def test_is_sequence_query(query: str, expected: bool) -> None:
    assert is_sequence_query(query) is expected


def test_duplicate_rule_ids_are_an_error_not_a_silent_pick() -> None:
    seen: dict[str, list[dict]] = {}
    a1, a2 = _events_rule("a"), _events_rule("a")
    ev = Evaluator([a1, a2], compiler=lambda r: EveryDoc(r.rule_id, seen))
    with pytest.raises(EvaluationError, match="more than one loaded rule file has this rule_id"):
        list(ev.evaluate(["a"], []))


def test_rule_over_alerts_without_depends_on_is_an_error() -> None:
    ev = Evaluator([_alerts_rule("a")], compiler=lambda r: EveryDoc(r.rule_id, {}))
    with pytest.raises(EvaluationError, match="has no metadata.depends_on"):
        ev.prepare(["a"])


def test_sample_rule_is_evaluated_with_max_signals_as_size() -> None:
    def event(i: int, cat: str, host: str) -> dict:
        return {
            "@timestamp": f"2024-01-01T00:00:0{i}Z",
            "event": {"category": cat, "id": str(i)},
            "host": {"id": host},
        }

    query = "sample by host.id [process where true] [file where true]"
    sample = Rule("s", {"name": "s", "index": ["logs-*"], "query": query, "max_signals": 1})
    chain = _alerts_rule("c", "s")
    events = [
        event(1, "file", "b"),
        event(2, "process", "b"),
        event(3, "process", "a"),
        event(4, "file", "a"),
    ]
    outcomes = {o.rule.rule_id: o for o in Evaluator([sample, chain]).evaluate(["s", "c"], events)}
    # Key order ("a" < "b"), not time order, and `max_signals: 1` keeps one sample.
    assert [[e["event"]["id"] for e in m.events] for m in outcomes["s"].matches] == [["3", "4"]]
    # Kibana wraps samples like sequences: building blocks plus one shell alert.
    assert len(outcomes["s"].alerts) == 3


def test_triage_keeps_every_rule_but_the_refused_and_their_dependents() -> None:
    good = _events_rule("good")
    bad = Rule("bad", {"name": "bad", "index": ["logs-*"], "query": 'any where x regex "a~b"'})
    over_bad = _alerts_rule("over-bad", "bad")
    orphan = _alerts_rule("orphan", "nowhere")
    ev = Evaluator([good, bad, over_bad, orphan])
    kept, refused = ev.triage(["good", "bad", "over-bad", "orphan"])
    assert kept == ["good"]
    reasons = {r.rule_id: r.message for r in refused}
    assert reasons["bad"].startswith("cannot be evaluated offline: ")
    assert "not supported offline" in reasons["bad"]
    assert reasons["over-bad"].startswith("depends on bad, which cannot be evaluated: ")
    assert "'nowhere'" in reasons["orphan"]


def test_evaluate_reports_a_failing_rule_and_its_dependents_and_goes_on() -> None:
    seen: dict[str, list[dict]] = {}

    class Failing:
        def run(self, events):  # noqa: ANN001, ANN201
            raise ValueError("boom")

    def compiler(rule: Rule) -> object:
        return Failing() if rule.rule_id == "b" else EveryDoc(rule.rule_id, seen)

    rules = [_events_rule("a"), _events_rule("b"), _alerts_rule("c", "b"), _alerts_rule("d", "a")]
    ev = Evaluator(rules, compiler=compiler)
    refused = []
    done = [o.rule.rule_id for o in ev.evaluate(["a", "b", "c", "d"], [{"x": 1}], on_refused=refused.append)]
    assert done == ["a", "d"]
    assert [(r.rule_id, r.message) for r in refused] == [
        ("b", "evaluation failed: ValueError: boom"),
        ("c", "depends on b, which cannot be evaluated: evaluation failed: ValueError: boom"),
    ]
    with pytest.raises(EvaluationError, match="boom"):
        list(ev.evaluate(["b"], [{"x": 1}]))
