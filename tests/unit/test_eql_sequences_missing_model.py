"""Differential test: streaming missing-event checks against the batch rules of Elasticsearch.

The batch model follows Elasticsearch's TumblingWindow: candidates come from the positive steps
only; then, with the whole input in view, an in-between missing event (timestamp strictly between
its neighbours) drops a candidate, and leading/trailing hits are judged against maxspan. The
streaming evaluator (bounded buffers, deadlines, ordered release) must agree.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from deployer.eql.engine import Match, compile_query

LAYOUTS = [
    ("P", "M", "P"),
    ("M", "P"),
    ("P", "M"),
    ("M", "P", "M"),
    ("P", "P", "M", "P"),
    ("M", "P", "P", "M"),
]
POSITIVE = {0: "process", 1: "network", 2: "file"}


def _query(layout: tuple[str, ...], maxspan: int, positive_only: bool) -> str:
    terms = []
    p = 0
    for kind in layout:
        if kind == "P":
            terms.append(f"[{POSITIVE[p]} where true]")
            p += 1
        elif not positive_only:
            terms.append("![dns where true]")
    return f"sequence by k with maxspan={maxspan}ms " + " ".join(terms)


def model(events, layout, maxspan) -> list[list[int | None]]:
    if layout.count("P") == 1:
        # A single positive step: every matching event is a candidate.
        candidates = [
            Match([e], [e["k"]])
            for e in events
            if e["event"]["category"] == POSITIVE[0] and e["k"] is not None
        ]
    else:
        candidates = list(compile_query(_query(layout, maxspan, positive_only=True)).run_sorted(events))
    misses = [e for e in events if e["event"]["category"] == "dns" and e["k"] is not None]
    positives = [i for i, kind in enumerate(layout) if kind == "P"]
    first, last = positives[0], positives[-1]
    out = []
    for cand in candidates:
        evs = cand.events
        key = cand.join_keys[0]
        same_key = [m["@timestamp"] for m in misses if m["k"] == key]
        dropped = False
        for i, kind in enumerate(layout):
            if kind == "M" and first < i < last:
                j = sum(1 for p in positives if p < i) - 1
                lo, hi = evs[j]["@timestamp"], evs[j + 1]["@timestamp"]
                if any(lo < t < hi for t in same_key):
                    dropped = True
        if dropped:
            continue
        t0, tn = evs[0]["@timestamp"], evs[-1]["@timestamp"]
        lead_missing, trail_missing = first > 0, last < len(layout) - 1
        leading = max((t for t in same_key if t < t0), default=None) if lead_missing else None
        trailing = min((t for t in same_key if t > tn), default=None) if trail_missing else None
        keep = (
            (leading is None and trailing is None)
            or (lead_missing and leading is None)
            or (trail_missing and trailing is None)
            or (lead_missing and trail_missing and trailing - leading > maxspan)
            or (lead_missing and not trail_missing and tn - leading > maxspan)
            or (trail_missing and not lead_missing and trailing - t0 > maxspan)
        )
        if keep:
            it = iter(evs)
            out.append([next(it)["id"] if kind == "P" else None for kind in layout])
    return out


event = st.tuples(
    st.integers(0, 3), st.sampled_from(["process", "network", "file", "dns"]), st.sampled_from(["a", "b"])
)


@settings(max_examples=300, deadline=None)
@given(st.lists(event, max_size=50), st.sampled_from(LAYOUTS), st.integers(1, 10))
def test_streaming_missing_events_equal_batch_rules(raw, layout, maxspan) -> None:
    ts = 0
    events = []
    for i, (step, cat, key) in enumerate(raw):
        ts += step
        events.append({"@timestamp": ts, "event": {"category": cat}, "k": key, "id": i})
    program = compile_query(_query(layout, maxspan, positive_only=False))
    got = [[None if e is None else e["id"] for e in m.events] for m in program.run_sorted(events)]
    assert got == model(events, layout, maxspan)
