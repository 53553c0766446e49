"""Streaming replay (`dac run`): the same results, in the same order, as the batch replay."""

from __future__ import annotations

import gc
import io
import json
import random
from pathlib import Path

import pytest

from deployer.rules.loader import load_rule_files, load_rule_text
from deployer.testing.evaluate import EvaluationError
from deployer.testing.events import EventsError, default_field_types, read_events
from deployer.testing.replay import replay
from deployer.testing.stream import replay_file

DATA = Path(__file__).resolve().parents[1] / "data" / "testing"
RULES = DATA / "rules"
CHAIN = RULES / "fixtures" / "chain.ndjson"
START_MS = 1_714_564_800_000  # 2024-05-01T12:00:00Z


def _rule(text: str):  # noqa: ANN202
    rule, findings = load_rule_text(text, "inline.yaml")
    assert rule is not None, findings
    return rule


def _inline(rule_id: str, query: str, *, index: str = "[logs-*]", extra: str = "") -> str:
    body = "\n".join("  " + line for line in query.strip().splitlines())
    return f"""
rule_id: {rule_id}
name: {rule_id}
description: Inline rule for the streaming tests.
type: eql
language: eql
query: |
{body}
index: {index}
severity: low
risk_score: 21
{extra}
metadata:
  implements: [T1204]
  platforms: [windows]
  maturity: production
"""


# Rules that exercise every path of the streaming pass: the test building blocks and the rule
# over their alerts, a rule over events and alerts at once, one ordered by the alerts'
# original_time (as the repository's chain rules are), a trailing missing event, `| tail`
# (no watermark), and a query that reads @timestamp itself.
EXTRA_RULES = [
    _inline(
        "t-mixed",
        """
sequence by process.entity_id with maxspan=1m
  [any where kibana.alert.rule.rule_id == "t-app-write-spawn"]
  [network where true]
""",
        index="[logs-*, .alerts-security.alerts-*]",
        extra="",
    ).replace("metadata:\n", "metadata:\n  depends_on: [t-app-write-spawn]\n"),
    _inline(
        "t-original-time",
        """
sequence with maxspan=2m
  [process where kibana.alert.rule.rule_id == "t-app-write-spawn"] by process.entity_id
  [network where kibana.alert.rule.rule_id == "t-child-network"] by process.entity_id
""",
        index="[.alerts-security.alerts-*]",
        extra="timestamp_field: kibana.alert.original_time",
    ).replace("metadata:\n", "metadata:\n  depends_on: [t-app-write-spawn, t-child-network]\n"),
    _inline(
        "t-trailing-missing",
        """
sequence with maxspan=30s
  [process where event.type == "start"] by process.entity_id
  ![network where true] by process.entity_id
""",
    ),
    _inline(
        "t-tail",
        """
sequence with maxspan=1m
  [file where true] by process.entity_id
  [process where true] by process.parent.entity_id
| tail 3
""",
        extra="building_block_type: default",
    ),
    _inline(
        "t-over-tail",
        """
any where kibana.alert.rule.rule_id == "t-tail"
""",
        index="[.alerts-security.alerts-*]",
    ).replace("metadata:\n", "metadata:\n  depends_on: [t-tail]\n"),
    _inline("t-reads-timestamp", 'network where @timestamp >= "2024-05-01T12:30:00Z"'),
]


def _all_rules() -> list:
    return [*load_rule_files([RULES]).rules, *(_rule(text) for text in EXTRA_RULES)]


def _random_events(seed: int, n: int) -> list[dict]:
    """Time-ordered events over a few process trees, with ties and gaps longer than the maxspans."""
    rng = random.Random(seed)
    ts = START_MS
    out = []
    for i in range(n):
        ts += rng.choice([0, 0, 1000, 5000, 20_000, 45_000, 90_000, 400_000])
        category = rng.choice(["file", "process", "network"])
        entity = rng.choice("ABCDEF")
        event: dict = {
            "@timestamp": ts if rng.random() < 0.2 else _iso(ts),
            "event": {
                "id": f"r{i}",
                "category": [category],
                "type": [{"file": "creation", "process": "start", "network": "connection"}[category]],
            },
            "process": {"entity_id": entity, "pid": str(rng.randint(1, 9))},
        }
        if category == "process":
            event["process"]["parent"] = {"entity_id": rng.choice("ABCDEF")}
            event["process"]["name"] = rng.choice(["mshta.exe", "cmd.exe"])
        out.append(event)
    return out


def _iso(ms: int) -> str:
    from deployer.eql.values import format_timestamp

    return format_timestamp(ms)


def _write(tmp_path: Path, events: list[dict], name: str = "events.ndjson") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def _batch(rules: list, path: Path) -> list[dict]:
    return list(replay(rules, read_events(path, field_types=default_field_types())))


def _stream(rules: list, path: Path | str, **kw: object) -> tuple[list[dict], list[str]]:
    fallbacks: list[str] = []
    results = list(
        replay_file(
            rules,
            str(path),
            field_types=default_field_types(),
            on_fallback=fallbacks.append,
            **kw,  # type: ignore[arg-type]
        )
    )
    return results, fallbacks


def test_fixture_chain_streams_and_equals_the_batch_replay() -> None:
    rules = load_rule_files([RULES]).rules
    results, fallbacks = _stream(rules, CHAIN)
    assert fallbacks == []
    assert results == _batch(rules, CHAIN)
    assert [r["rule_id"] for r in results].index("t-chain") > 0


def test_random_time_ordered_streams_equal_the_batch_replay(tmp_path: Path) -> None:
    rules = _all_rules()
    covered: set[str] = set()
    for seed in range(8):
        path = _write(tmp_path, _random_events(seed, 400), f"events-{seed}.ndjson")
        results, fallbacks = _stream(rules, path)
        assert fallbacks == [], seed
        expected = _batch(rules, path)
        assert results == expected, seed
        covered |= {r["rule_id"] for r in expected}
    assert covered == {r.rule_id for r in rules}


def test_out_of_order_input_is_sorted_on_disk_then_streamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deployer.testing.stream as stream

    monkeypatch.setattr(stream, "RUN_BYTES", 4096)  # many sorted runs to merge
    rules = _all_rules()
    events = _random_events(3, 300)
    events[100], events[200] = events[200], events[100]
    random.Random(9).shuffle(events[250:])
    path = _write(tmp_path, events)
    results, fallbacks = _stream(rules, path)
    assert len(fallbacks) == 1 and "goes back in time" in fallbacks[0] and "on disk" in fallbacks[0]
    assert results == _batch(rules, path)


def test_copies_of_a_file_stream_after_sorting(tmp_path: Path) -> None:
    # The same events three times over (as when fixtures are concatenated): ties everywhere.
    rules = _all_rules()
    path = _write(tmp_path, _random_events(7, 150) * 3)
    results, fallbacks = _stream(rules, path)
    assert fallbacks and "on disk" in fallbacks[0]
    assert results == _batch(rules, path)


def test_out_of_order_with_a_tiebreaker_rule_is_replayed_in_memory(tmp_path: Path) -> None:
    tiebreak = _rule(_inline("t-tiebreak", "process where true", extra="tiebreaker_field: process.pid"))
    rules = [*_all_rules(), tiebreak]
    events = _random_events(8, 200)
    events.reverse()
    path = _write(tmp_path, events)
    results, fallbacks = _stream(rules, path)
    assert len(fallbacks) == 1 and "in memory" in fallbacks[0]
    assert results == _batch(rules, path)


def test_bad_line_in_out_of_order_input_is_reported(tmp_path: Path) -> None:
    events = _random_events(2, 100)
    events.reverse()
    path = _write(tmp_path, events)
    with path.open("a") as out:
        out.write('{"@timestamp": "2024-05-01T12:00:00Z", "destination": {"ip": "nope"}}\n')
    with pytest.raises(EventsError) as info:
        _stream(_all_rules(), path)
    assert info.value.line == 101


def test_stdin_is_copied_so_the_fallback_can_read_it_again(tmp_path: Path) -> None:
    rules = _all_rules()
    events = _random_events(4, 200)
    events.reverse()
    path = _write(tmp_path, events)
    results, fallbacks = _stream(rules, "-", stdin=io.BytesIO(path.read_bytes()))
    assert fallbacks
    assert results == _batch(rules, path)


def test_bad_line_is_an_error_before_any_result(tmp_path: Path) -> None:
    rules = load_rule_files([RULES]).rules
    lines = CHAIN.read_text().splitlines()
    bad = tmp_path / "bad.ndjson"
    bad.write_text(
        "\n".join([*lines, '{"@timestamp": "2024-05-01T12:00:30Z", "process": {"pid": "x"}}']) + "\n"
    )
    it = replay_file(rules, str(bad), field_types=default_field_types())
    with pytest.raises(EventsError) as info:
        next(it)
    assert info.value.line == len(lines) + 1
    assert "process.pid" in info.value.message


def test_bad_line_wins_over_a_rule_that_does_not_compile(tmp_path: Path) -> None:
    broken = _rule(_inline("t-broken", "process where "))
    bad = tmp_path / "bad.ndjson"
    bad.write_text(CHAIN.read_text() + "[]\n")
    with pytest.raises(EventsError):
        list(replay_file([broken], str(bad)))
    with pytest.raises(EvaluationError, match="t-broken"):
        list(replay_file([broken], str(CHAIN)))


def test_evaluation_error_is_the_batch_replays(tmp_path: Path) -> None:
    rule = _rule(_inline("t-created", "process where true", extra="timestamp_field: event.created"))
    events = _random_events(5, 50)
    for i, event in enumerate(events):
        event["event"]["created"] = _iso(START_MS + i)
    del events[30]["event"]["created"]
    path = _write(tmp_path, events)
    with pytest.raises(EvaluationError) as batch:
        _batch([rule], path)
    with pytest.raises(EvaluationError) as streamed:
        _stream([rule], path)
    assert str(streamed.value) == str(batch.value)


def test_event_without_id_is_still_named_by_its_line(tmp_path: Path) -> None:
    rules = load_rule_files([RULES]).rules
    lines = CHAIN.read_text().splitlines()
    path = tmp_path / "ev.ndjson"
    path.write_text("\n".join([lines[0], lines[1].replace('"id": "e2", ', ""), *lines[2:]]) + "\n")
    results, _ = _stream(rules, path)
    assert results == _batch(rules, path)
    assert ["e1", "line:2"] in [r["event_ids"] for r in results]


def test_collector_settings_are_restored(tmp_path: Path) -> None:
    before = gc.get_threshold()
    _stream(load_rule_files([RULES]).rules, CHAIN)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_alert_behind_the_released_order_hands_over_to_the_batch_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deployer.testing.stream as stream

    # A dependency that promises far too much: its watermarks run ahead of the alerts it writes
    # later, so a rule over alerts sees a document older than what it has already evaluated.
    monkeypatch.setattr(stream, "_lag", lambda *args: -(10**12))
    rules = _all_rules()
    path = _write(tmp_path, _random_events(6, 600))
    results, fallbacks = _stream(rules, path)
    assert fallbacks and "arrived after later ones" in fallbacks[0]
    assert results == _batch(rules, path)


def test_lag_bounds() -> None:
    from deployer.testing.evaluate import Evaluator, index_kinds
    from deployer.testing.stream import _lag

    rules = _all_rules()
    evaluator = Evaluator(rules)
    lags = {
        r.rule_id: _lag(r, evaluator.program(r), *index_kinds(r))
        for r in rules
        if r.rule_id in {"t-app-write-spawn", "t-single", "t-trailing-missing", "t-tail", "t-original-time"}
    }
    assert lags == {
        "t-app-write-spawn": 60_000,
        "t-single": 0,
        "t-trailing-missing": 60_000,
        "t-tail": None,
        "t-original-time": 120_000,
    }
