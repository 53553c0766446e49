"""Property tests: the evaluator's answer does not depend on input order or on streaming."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from deployer.eql.engine import compile_query

QUERIES = [
    "sequence by host [process where true] [network where port == 443] [file where true]",
    "sequence by host with maxspan=5ms [process where true] [network where true] until [file where port == 1]",
    "sequence by ?host with maxspan=4ms [process where true] ![file where true] [network where true]",
    "sequence with maxspan=3ms [process where true] with runs=2 [network where port in (443, 80)]",
    "any where port > 100 | tail 3",
]

event = st.builds(
    lambda ts, cat, host, port: {"@timestamp": ts, "event": {"category": cat}, "host": host, "port": port},
    st.integers(0, 30),
    st.sampled_from(["process", "network", "file"]),
    st.sampled_from(["a", "b", None, ["a", "b"]]),
    st.sampled_from([80, 443, 1, None]),
)


def _ids(matches) -> list[tuple]:
    return [(tuple(None if e is None else e["seq"] for e in m.events), tuple(m.join_keys)) for m in matches]


@settings(max_examples=150, deadline=None)
@given(st.lists(event, max_size=40), st.randoms(use_true_random=False), st.sampled_from(QUERIES))
def test_order_independent_and_streaming_equivalent(events, rnd, query) -> None:
    for i, ev in enumerate(events):
        ev["seq"] = i
    program = compile_query(query, tiebreaker_field="seq")
    expected = _ids(program.run(events))
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert _ids(program.run(shuffled)) == expected
    ordered = sorted(events, key=lambda e: (e["@timestamp"], e["seq"]))
    assert _ids(program.run_sorted(iter(ordered))) == expected
