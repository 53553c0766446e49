"""The push-style runner (`Program.stream`): same answers as `run_sorted`, end-of-input and order rules."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployer.eql.engine import Match, compile_query
from deployer.eql.values import format_timestamp

QUERIES = [
    "sequence by host [process where true] [network where port == 443] [file where true]",
    "sequence by host with maxspan=5ms [process where true] [network where true] until [file where port == 1]",
    "sequence by ?host with maxspan=4ms [process where true] ![file where true] [network where true]",
    "sequence by host with maxspan=4ms [process where true] [network where true] ![file where true]",
    "sequence with maxspan=3ms [process where true] with runs=2 [network where port in (443, 80)]",
    "any where port > 100 | tail 3",
    "any where port > 100 | head 2",
    "sequence by host [process where true] [network where true] | tail 2 | head 1",
    "sequence by host [process where true] [network where true] | head 3 | tail 2",
    "network where port == 443 | head 0",
]


def _random_events(rnd: random.Random, n: int) -> list[dict]:
    events = []
    ts = 0
    for i in range(n):
        ts += rnd.choice([0, 0, 1, 1, 2, 5])
        events.append(
            {
                "@timestamp": ts,
                "event": {"category": rnd.choice(["process", "network", "file"])},
                "host": rnd.choice(["a", "b", None, ["a", "b"]]),
                "port": rnd.choice([80, 443, 1, None]),
                "seq": i,
            }
        )
    return events


def _ids(matches: list[Match]) -> list[tuple]:
    return [(tuple(None if e is None else e["seq"] for e in m.events), tuple(m.join_keys)) for m in matches]


def _pushed(program, events: list[dict], *, parsed: bool) -> list[Match]:
    runner = program.stream()
    out: list[Match] = []
    for ev in events:
        out.extend(runner.push(ev, ev["@timestamp"] if parsed else None))
    out.extend(runner.finish())
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from(QUERIES), st.integers(0, 60))
def test_push_equals_run_sorted_and_run(seed: int, query: str, n: int) -> None:
    events = _random_events(random.Random(seed), n)
    program = compile_query(query, tiebreaker_field="seq")
    expected = _ids(list(program.run_sorted(iter(events))))
    assert _ids(_pushed(program, events, parsed=False)) == expected
    assert _ids(_pushed(program, events, parsed=True)) == expected
    assert _ids(list(program.run(list(reversed(events))))) == expected


def test_iso_timestamps_or_parsed_ms_give_the_same_matches() -> None:
    base = 1_700_000_000_000
    events = _random_events(random.Random(3), 200)
    iso = [{**ev, "@timestamp": format_timestamp(base + ev["@timestamp"])} for ev in events]
    program = compile_query(QUERIES[1])
    runner = program.stream()
    parsed: list[Match] = []
    for ev, raw in zip(iso, events, strict=True):
        parsed.extend(runner.push(ev, base + raw["@timestamp"]))
    parsed.extend(runner.finish())
    assert _ids(parsed) == _ids(list(program.run_sorted(iso)))
    assert parsed


def test_push_returns_matches_as_they_complete() -> None:
    runner = compile_query("sequence by host [process where true] [network where true]").stream()
    assert runner.push({"@timestamp": 1, "event": {"category": "process"}, "host": "a", "seq": 0}) == []
    out = runner.push({"@timestamp": 2, "event": {"category": "network"}, "host": "a", "seq": 1})
    assert _ids(out) == [((0, 1), ("a",))]
    assert runner.finish() == []


def test_finish_releases_a_sequence_waiting_for_a_trailing_missing_event() -> None:
    runner = compile_query(
        "sequence by host with maxspan=10ms [process where true] [network where true] ![file where true]"
    ).stream()
    runner.push({"@timestamp": 1, "event": {"category": "process"}, "host": "a", "seq": 0})
    # Complete on the positive steps, but a file event could still arrive within maxspan.
    assert runner.push({"@timestamp": 2, "event": {"category": "network"}, "host": "a", "seq": 1}) == []
    assert _ids(runner.finish()) == [((0, 1, None), ("a",))]
    assert runner.finish() == []
    assert runner.finished


def test_finish_releases_tail_and_head_stops_early() -> None:
    tail = compile_query("any where true | tail 2").stream()
    for i in range(5):
        assert tail.push({"@timestamp": i, "seq": i}) == []
    assert _ids(tail.finish()) == [((3,), ()), ((4,), ())]

    head = compile_query("any where true | head 2").stream()
    assert _ids(head.push({"@timestamp": 1, "seq": 0})) == [((0,), ())]
    assert _ids(head.push({"@timestamp": 2, "seq": 1})) == [((1,), ())]
    assert head.stopped
    # A full head reads nothing more, as run_sorted stops reading its input.
    assert head.push({"@timestamp": 0, "seq": 2}) == []
    assert head.finish() == []


def test_out_of_order_event_raises_as_run_sorted_does() -> None:
    program = compile_query("any where true", tiebreaker_field="seq")
    runner = program.stream()
    runner.push({"@timestamp": 5, "seq": 1})
    runner.push({"@timestamp": 5, "seq": 2})
    with pytest.raises(ValueError, match=r"event #2 is out of order \(@timestamp=5\)"):
        runner.push({"@timestamp": 5, "seq": 1})
    with pytest.raises(ValueError, match=r"event #1 is out of order \(@timestamp=4\)"):
        list(program.run_sorted([{"@timestamp": 5, "seq": 1}, {"@timestamp": 4, "seq": 1}]))
    late = program.stream()
    late.push({"@timestamp": 5}, 5)
    with pytest.raises(ValueError, match=r"event #1 is out of order \(@timestamp=4\)"):
        late.push({"@timestamp": 5}, 4)


def test_event_without_timestamp_is_named_by_position() -> None:
    runner = compile_query("any where true").stream()
    runner.push({"@timestamp": 1})
    with pytest.raises(ValueError, match="event #1 has no @timestamp"):
        runner.push({"id": 1})


def test_push_after_finish_is_an_error() -> None:
    runner = compile_query("any where true").stream()
    runner.finish()
    with pytest.raises(RuntimeError):
        runner.push({"@timestamp": 1})
