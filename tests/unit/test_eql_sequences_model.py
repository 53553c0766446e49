"""Differential test: the streaming slot matcher against a list-based model of Elasticsearch's matcher.

The model keeps, per stage and key, every in-flight sequence (as Elasticsearch's KeyToSequences
does). An event matching stage k takes the latest sequence of stage k-1 that ends strictly before
it, removes it and every older one, then applies maxspan (a span equal to maxspan passes) and the
until check (the nearest until event strictly before the event, if it lies at or after the
sequence's last event, rejects). The streaming matcher must give the same sequences in the same
order, with its periodic expiry sweeps.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from deployer.eql.engine import compile_query

STAGES = ["process", "file", "network"]


def model(events: list[dict], stages: int, maxspan: int | None, until_cat: str | None) -> list[list[int]]:
    lists: list[dict[str, list[tuple[int, int, list[int]]]]] = [{} for _ in range(stages)]
    untils: dict[str, list[int]] = {}
    out: list[list[int]] = []
    for ordinal, ev in enumerate(events):
        key, ts, cat = ev["k"], ev["@timestamp"], ev["event"]["category"]
        if key is None:
            continue
        for stage in reversed(range(stages)):
            if STAGES[stage] != cat:
                continue
            if stage == 0:
                seq = (ts, ordinal, [ev["id"]])
                if stages == 1:
                    out.append(seq[2])
                else:
                    lists[0].setdefault(key, []).append(seq)
                continue
            group = [s for s in lists[stage - 1].get(key, []) if s[1] < ordinal]
            if not group:
                continue
            latest = max(group, key=lambda s: s[1])
            lists[stage - 1][key] = [s for s in lists[stage - 1][key] if s[1] > latest[1]]
            start, last, ids = latest
            if maxspan is not None and ts - start > maxspan:
                continue
            before = [u for u in untils.get(key, []) if u < ordinal]
            if before and last <= max(before):
                continue
            seq = (start, ordinal, ids + [ev["id"]])
            if stage == stages - 1:
                out.append(seq[2])
            else:
                lists[stage].setdefault(key, []).append(seq)
        if until_cat is not None and cat == until_cat:
            untils.setdefault(key, []).append(ordinal)
    return out


event = st.tuples(st.integers(0, 4), st.sampled_from(STAGES + ["dns"]), st.sampled_from(["a", "b", None]))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(event, max_size=60),
    st.integers(2, 3),  # Elasticsearch needs two or more terms
    st.one_of(st.none(), st.integers(1, 12)),  # maxspan must be positive
    st.sampled_from([None, "dns", "file"]),
)
def test_streaming_matcher_equals_list_model(raw, stages, maxspan, until_cat) -> None:
    ts = 0
    events = []
    for i, (step, cat, key) in enumerate(raw):
        ts += step
        events.append({"@timestamp": ts, "event": {"category": cat}, "k": key, "id": i})
    if until_cat is not None and until_cat in STAGES[:stages]:
        until_cat = "dns"
    terms = " ".join(f"[{c} where true]" for c in STAGES[:stages])
    span = f" with maxspan={maxspan}ms" if maxspan is not None else ""
    until = f" until [{until_cat} where true]" if until_cat else ""
    query = f"sequence by k{span} {terms}{until}"
    program = compile_query(query)
    got = [[e["id"] for e in m.events] for m in program.run_sorted(events)]
    assert got == model(events, stages, maxspan, until_cat), query
