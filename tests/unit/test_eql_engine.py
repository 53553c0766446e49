"""Offline evaluator semantics on ECS-shaped events (no reference files needed)."""

from __future__ import annotations

import pytest

from deployer.eql.engine import Match, compile_query
from deployer.eql.errors import EqlSyntaxError, EqlUnsupportedError
from deployer.eql.sample import SampleMatcher
from deployer.eql.sequence import MissingEventCheck, SequenceMatcher
from deployer.eql.values import parse_timestamp


def ev(ts: int, cat: str | list[str] = "process", **fields: object) -> dict:
    doc: dict = {"@timestamp": ts, "event": {"category": cat}}
    for dotted, value in fields.items():
        doc[dotted.replace("__", ".")] = value
    return doc


def ids(query: str, events: list[dict], **kw: object) -> list[list[object]]:
    program = compile_query(query, **kw)
    return [[e.get("id") if e else None for e in m.events] for m in program.run(events)]


def flat(query: str, events: list[dict], **kw: object) -> list[object]:
    return [i for m in ids(query, events, **kw) for i in m]


# ---------------------------------------------------------------- operators and case


EVENTS = [
    {
        "@timestamp": 1,
        "id": 1,
        "event": {"category": "process", "type": ["start", "process_started"]},
        "process": {"name": "CMD.EXE", "args": ["cmd.exe", "/c", "whoami"], "pid": 10},
    },
    {
        "@timestamp": 2,
        "id": 2,
        "event": {"category": ["process", "network"], "type": "end"},
        "process": {"name": "cmd.exe", "pid": 20},
        "user": {"name": "root"},
    },
    {
        "@timestamp": 3,
        "id": 3,
        "event.category": "file",
        "process.name": "explorer.exe",
        "file.path": "C:\\x\\a.txt",
    },
]


@pytest.mark.parametrize(
    "query,expected",
    [
        ('process where process.name == "cmd.exe"', [2]),
        ('process where process.name : "cmd.exe"', [1, 2]),
        ('process where process.name : "CMD.*"', [1, 2]),
        ('process where process.name like "cmd.*"', [2]),
        ('process where process.name like~ "CMD.e?e"', [1, 2]),
        ('process where process.name == "cmd*"', []),
        ('process where process.name in ("cmd.exe", "x")', [2]),
        ('process where process.name in~ ("cmd.exe", "x")', [1, 2]),
        ('process where process.name in~ ("cmd.*")', []),
        ('process where process.name regex "cmd\\\\.exe"', [2]),
        ('process where process.name regex~ "cmd\\\\.exe"', [1, 2]),
        ('process where process.name regex ".*\\\\s"', []),
        ('process where process.name regex "^cmd.exe"', []),
        ('process where startsWith(process.name, "cmd")', [2]),
        ('process where startsWith~(process.name, "cmd")', [1, 2]),
        # Arrays: any element matches.
        ('process where event.type == "start"', [1]),
        ('process where event.type : "process_*"', [1]),
        ('process where process.args == "/c"', [1]),
        ('process where process.args : "WHOAMI"', [1]),
        ("process where length(process.args) == 2", [1]),
        ('process where event.type in ("end", "nothing")', [2]),
        # Category arrays and dotted keys.
        ("network where true", [2]),
        ('file where process.name == "explorer.exe"', [3]),
        ('any where file.path : "c:\\\\x\\\\*"', [3]),
        # Negation means "no value matches": a document without the field matches.
        ('any where user.name != "root"', [1, 3]),
        ('any where not user.name == "root"', [1, 3]),
        ('any where process.args != "/c"', [2, 3]),
        ('process where not process.name : "cmd.exe"', []),
        ("any where user.name == null", [1, 3]),
        ("any where user.name != null", [2]),
        ("any where process.pid > 15", [2]),
        ("any where process.pid / 3 == 3", [1]),
        ("any where process.pid % 7 == 6", [2]),
        ("any where process.pid in (10, 20)", [1, 2]),
        ("any where ?process.nothing == null", [1, 2, 3]),
        ("any where ?process.nothing", []),
        ('any where concat(process.name, user.name) == "cmd.exeroot"', [2]),
        ("any where concat(process.name, user.name) == null", [1, 3]),
    ],
)
def test_operator_semantics(query: str, expected: list[int]) -> None:
    assert flat(query, EVENTS) == expected


def test_each_leaf_quantified_separately() -> None:
    events = [{"@timestamp": 1, "id": 1, "n": [5, 500]}]
    # 5 satisfies one side and 500 the other: two separate range queries in Elasticsearch.
    assert flat("any where n > 100 and n < 10", events) == [1]


def test_field_types_ip_version_date_null_value() -> None:
    events = [
        {"@timestamp": "2024-01-01T00:00:00Z", "id": 1, "ip": "10.1.2.3", "v": "1.10.0", "d": None},
        {"@timestamp": "2024-01-01T00:00:01.5Z", "id": 2, "ip": "192.168.0.1", "v": "1.9.0"},
    ]
    types = {"ip": "ip", "v": "version", "d": {"type": "keyword", "null_value": "NULL"}}
    assert flat('any where cidrMatch(ip, "10.0.0.0/8")', events, field_types=types) == [1]
    assert flat('any where v < "1.9.5"', events, field_types=types) == [2]
    assert flat('any where v < "1.9.5"', events) == [1, 2]  # keyword: lexicographic
    assert flat('any where d == "NULL"', events, field_types=types) == [1]
    assert flat("any where d == null", events, field_types=types) == [2]
    assert flat('any where @timestamp > "2024-01-01T00:00:01Z"', events) == [2]
    assert flat("any where @timestamp == 1704067200000", events) == [1]


def test_text_field_uses_keyword_subfield_and_ignore_above() -> None:
    events = [{"@timestamp": 1, "id": 1, "msg": "x" * 300}, {"@timestamp": 2, "id": 2, "msg": "short"}]
    types = {"msg": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}}
    assert flat('any where msg : "x*"', events, field_types=types) == []
    assert flat('any where msg == "short"', events, field_types=types) == [2]


def test_alias_field_type() -> None:
    events = [{"@timestamp": 1, "id": 1, "event_type": "process"}]
    assert flat(
        "process where true", events, field_types={"event.category": {"type": "alias", "path": "event_type"}}
    ) == [1]


def test_verifier_errors_and_unsupported() -> None:
    with pytest.raises(EqlSyntaxError):
        compile_query('any where startsWith(1, "x")')
    with pytest.raises(EqlUnsupportedError, match="not supported offline"):
        compile_query('any where x regex "a~b"')
    with pytest.raises(EqlUnsupportedError, match="not supported offline"):
        compile_query("sample by host.id [process where true] [file where true] | tail 1")


# ---------------------------------------------------------------- ordering, timestamps


def test_parse_timestamp() -> None:
    assert parse_timestamp("2024-05-04T12:00:00Z") == 1714824000000
    assert parse_timestamp("2024-05-04T12:00:00.123456Z") == 1714824000123
    assert parse_timestamp("2024-05-04T14:00:00+02:00") == 1714824000000
    assert parse_timestamp("2024-05-04T12:00:00") == 1714824000000
    assert parse_timestamp("1714824000000") == 1714824000000
    assert parse_timestamp(1714824000000) == 1714824000000
    for bad in ("yesterday", "2024-02-30T00:00:00Z", None, True, [1]):
        with pytest.raises(ValueError, match="invalid timestamp"):
            parse_timestamp(bad)


def test_timestamp_seconds_cache_stays_bounded_over_a_long_file() -> None:
    from deployer.eql import values

    base = 1714824000000
    for i in range(2 * values.SECONDS_CACHED + 10):
        text = values.format_timestamp(base + i * 1000 + 7)
        assert parse_timestamp(text) == base + i * 1000 + 7
        assert parse_timestamp(text) == base + i * 1000 + 7  # the cached path agrees
        assert len(values._SECONDS_CACHE) <= values.SECONDS_CACHED


def test_run_sorts_by_timestamp_then_tiebreaker_then_position() -> None:
    events = [ev(2, id="c", seq=1), ev(1, id="b", seq=2), ev(1, id="a", seq=1), ev(1, id="d")]
    assert flat("any where true", events, tiebreaker_field="seq") == ["a", "b", "d", "c"]
    assert flat("any where true", events) == ["b", "a", "d", "c"]


def test_run_sorted_streams_and_rejects_disorder() -> None:
    program = compile_query("any where true")
    out = program.run_sorted(iter([ev(1, id=1), ev(2, id=2)]))
    assert [m.events[0]["id"] for m in out] == [1, 2]
    with pytest.raises(ValueError, match="out of order"):
        list(program.run_sorted([ev(2, id=1), ev(1, id=2)]))
    with pytest.raises(ValueError, match="has no @timestamp"):
        list(program.run([{"id": 1}]))


def test_head_and_tail() -> None:
    events = [ev(i, id=i) for i in range(10)]
    assert flat("any where true | head 3", events) == [0, 1, 2]
    assert flat("any where true | tail 2", events) == [8, 9]
    assert flat("any where true | head 4 | tail 2", events) == [2, 3]


# ---------------------------------------------------------------- sequences


def test_sequence_by_entity_and_maxspan_inclusive_ms() -> None:
    events = [
        ev(1000, "process", id=1, process__entity_id="A"),
        ev(1500, "network", id=2, process__entity_id="A"),
        ev(2000, "process", id=3, process__entity_id="B"),
        ev(2501, "network", id=4, process__entity_id="B"),
    ]
    q = "sequence by process.entity_id with maxspan=500ms [process where true] [network where true]"
    program = compile_query(q)
    got = list(program.run(events))
    assert [[e["id"] for e in m.events] for m in got] == [[1, 2]]
    assert got[0] == Match([events[0], events[1]], ["A"])


def test_sequence_null_keys_dropped_unless_optional() -> None:
    events = [ev(1, "process", id=1), ev(2, "network", id=2)]
    assert ids("sequence by process.entity_id [process where true] [network where true]", events) == []
    got = list(
        compile_query("sequence by ?process.entity_id [process where true] [network where true]").run(events)
    )
    assert [m.join_keys for m in got] == [[None]]


def test_sequence_multivalued_keys_expand() -> None:
    events = [ev(1, "process", id=1, k=["a", "b", "a"]), ev(2, "network", id=2, k=["b", "a"])]
    got = list(compile_query("sequence by k [process where true] [network where true]").run(events))
    assert [m.join_keys for m in got] == [["a"], ["b"]]


def test_sequence_until() -> None:
    events = [
        ev(1, "process", id=1, pid=1),
        ev(2, "file", id=2, pid=1),
        ev(3, "network", id=3, pid=1),
        ev(4, "process", id=4, pid=2),
        ev(5, "network", id=5, pid=2),
    ]
    q = "sequence by pid [process where true] [network where true] until [file where true]"
    assert ids(q, events) == [[4, 5]]


def test_sequence_runs_and_missing_events() -> None:
    events = [ev(t, "process", id=t, host="h") for t in (1, 2, 3)] + [ev(4, "file", id=4, host="h")]
    assert ids("sequence by host [process where true] with runs=2 [file where true]", events) == [[2, 3, 4]]
    q = "sequence by host with maxspan=10ms [process where true] ![network where true] [file where true]"
    assert ids(q, events) == [[3, None, 4]]
    events.append(ev(4, "network", id=5, host="h"))
    events.append(ev(3, "network", id=6, host="h"))
    # A network event strictly between the positive events drops the candidate; one at the
    # same millisecond as an endpoint does not count.
    assert ids(q, events) == [[3, None, 4]]
    events.append(ev(3, "network", id=7, host="h"))
    events[0]["@timestamp"] = 0
    assert ids(q, events[:1] + events[3:4] + [ev(2, "network", id=8, host="h")]) == []


def test_sequence_state_bounded_by_maxspan() -> None:
    matcher = SequenceMatcher(3, maxspan=10)
    sizes = []
    for i in range(20000):
        if i % 10 == 0:
            matcher.sweep(i)  # once per maxspan of stream time, as the engine does
        matcher.advance(0, f"key-{i}", i, (i,))
        matcher.advance(1, f"key-{i - 1}", i, (i,))
        sizes.append(len(matcher.state))
    # Keys older than maxspan are swept: state tracks the live window, not the stream length.
    assert max(sizes) < 60


def test_sequence_state_without_maxspan_is_per_key() -> None:
    matcher = SequenceMatcher(2)
    for i in range(1000):
        matcher.advance(0, i % 7, i, (i,))
    assert len(matcher.state) == 7 and matcher.pending_count() == 7


def test_window_bounds_sequences_without_or_with_a_longer_maxspan() -> None:
    events = [ev(0, id=1, host="h"), ev(5_000, "network", id=2, host="h")]
    free = "sequence by host [process where true] [network where true]"
    long = "sequence by host with maxspan=1h [process where true] [network where true]"
    short = "sequence by host with maxspan=1s [process where true] [network where true]"
    # The whole input (Elasticsearch's EQL search, `dac run`): the 5 s sequence matches.
    assert ids(free, events) == [[1, 2]] and ids(long, events) == [[1, 2]]
    # A 4 s window (a rule's look-back) cannot hold it; a 5 s one can (the span is inclusive).
    assert ids(free, events, window=4_000) == [] and ids(long, events, window=4_000) == []
    assert ids(free, events, window=5_000) == [[1, 2]]
    # A shorter maxspan stays the bound.
    assert ids(short, events, window=4_000) == [] and compile_query(short, window=4_000).span == 1_000
    assert compile_query(free).span is None and compile_query(free, window=4_000).span == 4_000
    assert compile_query("process where true", window=4_000).span is None


def test_window_takes_samples_per_window_and_lets_hits_go(monkeypatch: pytest.MonkeyPatch) -> None:
    q = "sample by host [process where true] [network where true]"
    events = [
        ev(0, id=1, host="a"),
        ev(500, "network", id=2, host="a"),
        ev(900, id=3, host="b"),
        ev(1_100, "network", id=4, host="b"),  # b's hits straddle the 1 s windows
        ev(1_200, id=5, host="c"),
        ev(1_300, "network", id=6, host="c"),
    ]
    # The whole input (Elasticsearch over an index): one sample per key.
    assert ids(q, events) == [[1, 2], [3, 4], [5, 6]]
    # Per 1 s window: b's events never share one.
    assert ids(q, events, window=1_000) == [[1, 2], [5, 6]]
    # Shuffled input is sorted by time first, as for sequences.
    assert ids(q, events[::-1], window=1_000) == [[1, 2], [5, 6]]
    # Held hits are dropped at each window: 1,000 keys over 100 s stay a window's worth.
    from deployer.eql import engine

    made: list[SampleMatcher] = []

    class Recording(SampleMatcher):
        def __init__(self, *args: object, **kw: object) -> None:
            super().__init__(*args, **kw)  # type: ignore[arg-type]
            made.append(self)

    monkeypatch.setattr(engine, "SampleMatcher", Recording)
    runner = compile_query(q, window=1_000).stream()
    for i in range(1_000):
        runner.push(ev(i * 100, id=i, host=f"h{i}"))
        assert len(made[-1].buckets) <= 10
    assert len(made) == 100


def test_window_lets_partial_sequences_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    from deployer.eql import engine

    made: list[SequenceMatcher] = []

    class Recording(SequenceMatcher):
        def __init__(self, *args: object, **kw: object) -> None:
            super().__init__(*args, **kw)  # type: ignore[arg-type]
            made.append(self)

    monkeypatch.setattr(engine, "SequenceMatcher", Recording)
    q = "sequence by process.entity_id [process where true] [network where true]"
    # One process every 10 ms starts a sequence that never completes: 10,000 keys over 100 s.
    events = [ev(i * 10, process__entity_id=f"p{i}") for i in range(10_000)]
    for window, most in ((None, 10_000), (1_000, 250)):
        made.clear()
        runner = compile_query(q, window=window).stream()
        peak = 0
        for e in events:
            runner.push(e)
            peak = max(peak, len(made[0].state))
        assert (peak == most) if window is None else (peak <= most), (window, peak)


def test_missing_event_buffers_bounded_by_maxspan() -> None:
    check = MissingEventCheck([False, True, False], maxspan=10)
    for i in range(20000):
        check.tick(i)
        check.observe(1, f"key-{i % 500}", i)
    sizes = sum(len(times) for times in check.buffers[1].values())
    assert sizes < 40


def test_trailing_missing_waits_then_keeps_in_order() -> None:
    events = [
        ev(0, "process", id=1, k="a"),
        ev(1, "process", id=2, k="b"),
        ev(3, "network", id=3, k="b"),  # trailing hit for b within maxspan: b is dropped
        ev(50, "file", id=4, k="a"),
    ]
    q = "sequence by k with maxspan=10ms [process where true] ![network where true]"
    program = compile_query(q)
    assert [[e and e["id"] for e in m.events] for m in program.run_sorted(events)] == [[1, None]]


def test_optional_fields_act_as_null_literal_in_equality() -> None:
    events = [{"@timestamp": 1, "id": 1}, {"@timestamp": 2, "id": 2, "y": "b"}]
    assert flat("any where ?x == ?y", events) == [1]
    assert flat("any where ?x != ?y", events) == [2]
    assert flat('any where ?x == "b"', events) == []
    assert flat('any where ?y == "b"', events) == [2]


def test_objects_are_not_values_and_arrays_of_objects_contribute_values() -> None:
    events = [
        {
            "@timestamp": 1,
            "id": 1,
            "event": {"category": "process"},
            "process": [{"pid": 1}, {"pid": 2}],
            "obj": [{"a": 1}],
        },
        {"@timestamp": 2, "id": 2, "event": {"category": "network"}, "process": {"pid": 2}, "obj": {"a": 1}},
    ]
    assert ids("sequence by process.pid [process where true] [network where true]", events) == [[1, 2]]
    assert ids("sequence by obj [process where true] [network where true]", events) == []
    assert flat("any where obj == null", events) == [1, 2]


def test_keyword_field_holding_numbers_compares_as_strings() -> None:
    events = [{"@timestamp": 1, "id": 1, "code": 5}, {"@timestamp": 2, "id": 2, "code": [50, True]}]
    types = {"code": "keyword"}
    assert flat('any where code == "5"', events, field_types=types) == [1]
    assert flat('any where code : "5*"', events, field_types=types) == [1, 2]
    assert flat('any where code == "true"', events, field_types=types) == [2]
    assert flat("any where code == 5", events, field_types=types) == [1]


def test_package_never_imports_the_eql_library() -> None:
    # The `eql` library (AGPLv3) is only a benchmark comparison, installed outside the project.
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "deployer"
    pattern = re.compile(r"^\s*(import eql\b|from eql\b)", re.MULTILINE)
    offenders = [str(p) for p in root.rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


@pytest.mark.parametrize(
    "doc, found",
    [
        ({"process": {"parent": {"name": "x"}}}, True),
        ({"process.parent": {"name": "x"}}, True),
        ({"process": {"parent.name": "x"}}, True),
        ({"process.parent.name": "x"}, True),
        ({"process": [{"parent": {"name": "x"}}]}, True),
        ({"process": {"pid": 1}, "process.parent.name": "x"}, True),
        ({"process": {"parent": {"pid": 1}, "parent.name": "x"}}, True),
        ({"process": {"parent": {"pid": 1}}, "process.parent": {"name": "x"}}, True),
        ({"process": {"parent": {"name": None}}}, False),
        ({"process": {"parent": {"pid": 1}}}, False),
        ({"process": {"parent": None}}, False),
        ({"process": {"name": "x"}}, False),
        ({"process": "x"}, False),
        ({}, False),
    ],
)
def test_deep_field_found_in_any_spelling_and_absent_fast(doc: dict, found: bool) -> None:
    for query, expected in (
        ('any where process.parent.name == "x"', found),
        ('any where process.parent.name : "X"', found),
        ("any where process.parent.name == null", not found),
        ('any where process.parent.name != "x"', not found),
    ):
        assert bool(flat(query, [{"@timestamp": 1, "id": 1, **doc}])) is expected, (query, doc)


@pytest.mark.parametrize(
    "doc, found",
    [
        ({"process": {"pe": {"original_file_name": "x"}}}, True),
        ({"process": {"pe.original_file_name": "x"}}, True),
        ({"process": {"pe": {"original_file_name": ["y", "x"]}}}, True),
        ({"process.pe.original_file_name": "x"}, True),
        ({"process": {"pe": {"company": "x"}}}, False),
        ({"process": {"name": "x"}}, False),
    ],
)
def test_four_part_field_found_in_any_spelling(doc: dict, found: bool) -> None:
    assert (
        bool(flat('any where process.pe.original_file_name == "x"', [{"@timestamp": 1, "id": 1, **doc}]))
        is found
    )
