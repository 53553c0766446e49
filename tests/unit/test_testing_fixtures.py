"""The fixture runner: exact comparison of matched sequences, test definition errors, real rules end to end."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deployer.rules.loader import load_rule_files
from deployer.testing.fixtures import describe_difference, run_rule_tests

DATA = Path(__file__).resolve().parents[1] / "data" / "testing"
RULES = DATA / "rules"


@dataclass
class Rule:
    rule_id: str
    path: Path
    kibana: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeMatch:
    events: list[dict | None]
    join_keys: list = field(default_factory=list)


class Scripted:
    """A stand-in program that returns fixed matches, by event.id, over whatever it is given."""

    def __init__(self, sequences: list[list[str | None]]) -> None:
        self.sequences = sequences

    def run(self, events):  # noqa: ANN001, ANN201
        by_id = {e["event"]["id"]: e for e in events}
        return iter([FakeMatch([None if i is None else by_id[i] for i in seq]) for seq in self.sequences])


def _events_file(tmp_path: Path, ids: list[str]) -> Path:
    path = tmp_path / "fixtures" / "ev.ndjson"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        "".join(
            json.dumps({"@timestamp": 1714564800000 + i, "event": {"id": e}}) + "\n"
            for i, e in enumerate(ids)
        )
    )
    return path


def _rule(tmp_path: Path, tests: list[dict]) -> Rule:
    return Rule(
        "r",
        tmp_path / "r.yaml",
        {"name": "r", "index": ["logs-*"], "query": "any where true"},
        {"tests": tests},
    )


def _run(rule: Rule, sequences: list[list[str | None]]):  # noqa: ANN202
    return run_rule_tests([rule], compiler=lambda r: Scripted(sequences), field_types=None)


def test_exact_match_passes_in_any_order(tmp_path: Path) -> None:
    _events_file(tmp_path, ["a", "b", "c"])
    rule = _rule(
        tmp_path,
        [
            {
                "name": "t",
                "events": "fixtures/ev.ndjson",
                "expect": "match",
                "sequences": [["b", "c"], ["a", "b"]],
            }
        ],
    )
    (res,) = _run(rule, [["a", "b"], ["b", "c"]])
    assert res.status == "pass", res.message
    assert res.rule_id == "r" and res.name == "t"
    assert res.expected == [["b", "c"], ["a", "b"]]
    assert res.actual == [["a", "b"], ["b", "c"]]
    assert res.duration >= 0


@pytest.mark.parametrize(
    ("actual", "needles"),
    [
        ([["a", "b"]], ["expected but not matched:", "- [b, c]"]),
        ([["a", "b"], ["b", "c"], ["a", "c"]], ["matched but not expected:", "+ [a, c]"]),
        ([["a", "b"], ["b", "c"], ["b", "c"]], ["+ [b, c]"]),  # a duplicate match fails
        ([["b", "a"], ["b", "c"]], ["- [a, b]", "+ [b, a]"]),  # order inside a sequence matters
    ],
)
def test_mismatches_fail_with_a_diff(tmp_path: Path, actual: list, needles: list[str]) -> None:
    _events_file(tmp_path, ["a", "b", "c"])
    rule = _rule(
        tmp_path,
        [
            {
                "name": "t",
                "events": "fixtures/ev.ndjson",
                "expect": "match",
                "sequences": [["a", "b"], ["b", "c"]],
            }
        ],
    )
    (res,) = _run(rule, actual)
    assert res.status == "fail"
    for needle in needles:
        assert needle in res.message


def test_no_match(tmp_path: Path) -> None:
    _events_file(tmp_path, ["a"])
    rule = _rule(tmp_path, [{"name": "t", "events": "fixtures/ev.ndjson", "expect": "no_match"}])
    assert _run(rule, [])[0].status == "pass"
    res = _run(rule, [["a"]])[0]
    assert res.status == "fail"
    assert res.message.startswith("expected no match, got 1")


def test_missing_event_placeholder_is_null(tmp_path: Path) -> None:
    _events_file(tmp_path, ["a", "b"])
    rule = _rule(
        tmp_path,
        [{"name": "t", "events": "fixtures/ev.ndjson", "expect": "match", "sequences": [["a", "b"]]}],
    )
    res = _run(rule, [["a", None, "b"]])[0]
    assert res.actual == [["a", None, "b"]]
    assert "+ [a, null, b]" in res.message


@pytest.mark.parametrize(
    ("test", "needle"),
    [
        ({"name": "t", "events": "fixtures/ev.ndjson", "expect": "maybe"}, "expect must be"),
        ({"name": "t", "events": "fixtures/ev.ndjson", "expect": "match"}, "expect: match needs `sequences`"),
        (
            {"name": "t", "events": "fixtures/ev.ndjson", "expect": "no_match", "sequences": [["a"]]},
            "no_match test lists sequences",
        ),
        ({"name": "t", "expect": "no_match"}, "events must name an ndjson file"),
        ({"name": "t", "events": "fixtures/none.ndjson", "expect": "no_match"}, "events file not found"),
        ("not a mapping", "a test must be a mapping"),
    ],
)
def test_bad_definitions_are_errors(tmp_path: Path, test: Any, needle: str) -> None:
    _events_file(tmp_path, ["a"])
    (res,) = _run(_rule(tmp_path, [test]), [])
    assert res.status == "error"
    assert needle in res.message


def test_bad_events_file_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = _events_file(tmp_path, ["a"])
    path.write_text(path.read_text() + "[1]\n")
    (res,) = _run(_rule(tmp_path, [{"name": "t", "events": "fixtures/ev.ndjson", "expect": "no_match"}]), [])
    assert res.status == "error"
    assert f"{tmp_path / 'fixtures' / 'ev.ndjson'}:2: expected a JSON object" in res.message


def test_duplicate_event_ids_are_an_error(tmp_path: Path) -> None:
    _events_file(tmp_path, ["a", "b", "a"])
    (res,) = _run(_rule(tmp_path, [{"name": "t", "events": "fixtures/ev.ndjson", "expect": "no_match"}]), [])
    assert res.status == "error"
    assert "duplicate event.id 'a' (first on line 1)" in res.message
    assert ":3:" in res.message


def test_numeric_ids_in_yaml_compare_as_text(tmp_path: Path) -> None:
    _events_file(tmp_path, ["1", "2"])
    rule = _rule(
        tmp_path, [{"name": "t", "events": "fixtures/ev.ndjson", "expect": "match", "sequences": [[1, 2]]}]
    )
    assert _run(rule, [["1", "2"]])[0].status == "pass"


def test_difference_text() -> None:
    assert describe_difference([("a",)], [("a",)]) == ""


# ---------------------------------------------------------------- with the real evaluator


def test_real_rules_pass_including_the_rule_over_alerts() -> None:
    loaded = load_rule_files([RULES])
    assert not loaded.findings
    results = run_rule_tests(loaded.rules)
    assert [(r.rule_id, r.status) for r in results if r.status != "pass"] == []
    chain = [r for r in results if r.rule_id == "t-chain"]
    assert [r.actual for r in chain] == [[["e2", "e3"]], []]


def test_rule_over_alerts_needs_its_dependencies() -> None:
    loaded = load_rule_files([RULES / "chain.yaml"])
    results = run_rule_tests(loaded.rules)
    assert {r.status for r in results} == {"error"}
    assert "depends_on names 't-app-write-spawn'" in results[0].message
    # Given as a library, the dependencies are evaluated but not tested.
    library = load_rule_files([RULES / "app_write_spawn.yaml", RULES / "child_network.yaml"]).rules
    results = run_rule_tests(loaded.rules, library=library)
    assert [(r.rule_id, r.status) for r in results] == [("t-chain", "pass"), ("t-chain", "pass")]
