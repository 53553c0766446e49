"""`sample` queries: Elasticsearch's key order, per-key hit lists, distinct events and limits."""

from __future__ import annotations

import pytest

from deployer.eql.engine import compile_query
from deployer.eql.errors import EqlUnsupportedError
from deployer.eql.sample import SampleMatcher, match_samples


def ev(i: int, cat: str, **fields) -> dict:
    return {"id": i, "event": {"category": cat}, **fields}


def ids(matches) -> list[list[int]]:
    return [[e["id"] for e in m.events] for m in matches]


def test_backtracking_picks_distinct_documents_in_list_order() -> None:
    d = [{"d": i} for i in range(6)]
    # The example of Elasticsearch's SampleIterator: one document never fills two filters.
    assert match_samples([[d[1], d[2], d[3]], [d[4], d[5]], [d[4], d[5], d[3]]], 1) == [[d[1], d[4], d[5]]]
    assert match_samples([[d[1], d[1]], [d[1], d[1], d[1]], [d[1], d[1], d[3]]], 1) == []
    assert match_samples([[d[1], d[2]], [d[3], d[4]]], 3) == [[d[1], d[3]], [d[1], d[4]], [d[2], d[3]]]
    assert match_samples([[d[1]], []], 1) == []


def test_equal_documents_are_still_two_events() -> None:
    a, b = {"x": 1}, {"x": 1}
    assert match_samples([[a, b], [a, b]], 1) == [[a, b]]


def test_matcher_keeps_only_the_hits_elasticsearch_fetches() -> None:
    m = SampleMatcher(2, max_samples_per_key=1)
    for i in range(5):
        m.add(0, ("k",), {"i": i})
    # filters + max_samples_per_key - 1 hits per filter and key; later ones can never be picked.
    assert len(m.buckets[("k",)][0]) == 2
    assert m.samples(lambda k: k) == []
    m.add(1, ("k",), {"i": 9})
    assert [[e["i"] for e in s] for _, s in m.samples(lambda k: k)] == [[0, 9]]


def test_time_order_is_ignored_and_events_come_in_filter_order() -> None:
    program = compile_query("sample by host [a where true] [b where true]")
    events = [ev(2, "b", host="h"), ev(1, "a", host="h")]  # no @timestamp needed
    matches = list(program.run(events))
    assert ids(matches) == [[1, 2]]
    assert matches[0].join_keys == ["h"]


def test_samples_are_sorted_by_key_with_null_first() -> None:
    program = compile_query("sample by ?os, host [a where true] [b where true]")
    events = [
        ev(1, "a", host="doom", os="win"),
        ev(2, "b", host="doom", os="win"),
        ev(3, "a", host="doom"),
        ev(4, "b", host="doom"),
        ev(5, "a", host="GTA", os="win"),
        ev(6, "b", host="GTA", os="win"),
    ]
    matches = list(program.run(events))
    # Composite-aggregation order: null first, then byte order ("GTA" < "doom").
    assert [m.join_keys for m in matches] == [[None, "doom"], ["win", "GTA"], ["win", "doom"]]
    assert ids(matches) == [[3, 4], [5, 6], [1, 2]]


def test_a_missing_non_optional_key_drops_the_event() -> None:
    program = compile_query("sample by host [a where true] [b where true]")
    assert list(program.run([ev(1, "a"), ev(2, "b")])) == []


def test_per_filter_keys_follow_the_sample_keys() -> None:
    program = compile_query("sample by host [a where true] by os [b where true] by op_sys")
    events = [
        ev(1, "a", host="h", os="x"),
        ev(2, "b", host="h", op_sys="y"),
        ev(3, "b", host="h", op_sys="x"),
    ]
    matches = list(program.run(events))
    assert ids(matches) == [[1, 3]]
    assert matches[0].join_keys == ["h", "x"]


def test_size_caps_the_number_of_samples() -> None:
    text = "sample by host [a where true] [b where true]"
    events = [ev(i * 2 + j, "ab"[j], host=f"h{i}") for i in range(4) for j in range(2)]
    assert len(list(compile_query(text).run(events))) == 4
    assert [m.join_keys for m in compile_query(text, size=2).run(events)] == [["h0"], ["h1"]]
    assert list(compile_query(text, size=0).run(events)) == []


def test_max_samples_per_key() -> None:
    text = "sample by os [a where true] [b where true]"
    events = [ev(1, "a", os="w"), ev(2, "a", os="w"), ev(3, "b", os="w"), ev(4, "a", os="w")]
    assert ids(compile_query(text).run(events)) == [[1, 3]]
    assert ids(compile_query(text, max_samples_per_key=2).run(events)) == [[1, 3], [2, 3]]
    assert ids(compile_query(text, max_samples_per_key=5).run(events)) == [[1, 3], [2, 3], [4, 3]]


def test_one_event_matching_two_filters_fills_only_one() -> None:
    program = compile_query("sample by host [any where true] [any where true]")
    assert list(program.run([ev(1, "a", host="h")])) == []
    assert ids(program.run([ev(1, "a", host="h"), ev(2, "a", host="h")])) == [[1, 2]]


def test_multi_valued_keys_give_one_bucket_per_value() -> None:
    program = compile_query("sample by user [a where true] [b where true]")
    events = [ev(1, "a", user=["x", "y"]), ev(2, "b", user="y"), ev(3, "b", user="x")]
    assert ids(program.run(events)) == [[1, 3], [1, 2]]


def test_streaming_interface_yields_at_finish() -> None:
    program = compile_query("sample by host [a where true] [b where true]")
    assert program.kind == "sample"
    runner = program.stream()
    assert runner.push(ev(1, "b", host="h")) == []
    assert runner.push(ev(2, "a", host="h")) == []
    assert ids(runner.finish()) == [[2, 1]]
    assert runner.finish() == []


def test_pipes_after_a_sample_are_refused_with_their_position() -> None:
    with pytest.raises(EqlUnsupportedError) as info:
        compile_query("sample by host [a where true] [b where true] | head 1")
    assert "pipes after a sample" in str(info.value)
    assert info.value.line == 1
