"""Sample matcher with Elasticsearch semantics: ``sample [by keys] [filter] [filter] ...``.

A sample is one event per filter, all sharing the join-key values, in filter order; time order
plays no part. Elasticsearch (SampleIterator) finds the composite join keys every filter has hits
for, walks them in ascending key order (composite-aggregation order: a null optional key first),
and for each key fetches the first ``filters + max_samples_per_key - 1`` hits of every filter.
From those lists a backtracking search picks combinations of distinct events (one event never
fills two filters of one sample), the first ``max_samples_per_key`` of them in list order. The
request's ``size`` caps the number of samples overall.

Streaming: the matcher keeps, per join key, at most that many hits of each filter (the later hits
can never be picked), so memory grows with the number of distinct keys, not with the number of
events. Samples can only be listed at the end of input, because key order decides the output.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["SampleMatcher", "match_samples", "DEFAULT_SIZE", "DEFAULT_MAX_SAMPLES_PER_KEY"]

# Elasticsearch's request defaults: `size` 10, `max_samples_per_key` 1.
DEFAULT_SIZE = 10
DEFAULT_MAX_SAMPLES_PER_KEY = 1

Key = Hashable


def match_samples(hits: list[list[Any]], limit: int) -> list[list[Any]]:
    """Up to ``limit`` combinations taking one item per list, no item twice, in backtracking order.

    Items are compared by identity (two equal documents are still two events).
    """
    count = len(hits)
    if limit <= 0 or count == 0 or any(not h for h in hits):
        return []
    out: list[list[Any]] = []
    partial: list[Any] = []
    # positions[i]: index in hits[i] of the next candidate to try for filter i.
    positions = [0] * count
    depth = 0
    while depth >= 0:
        options = hits[depth]
        pos = positions[depth]
        while pos < len(options) and any(options[pos] is p for p in partial):
            pos += 1
        if pos == len(options):
            # This filter is exhausted under the current prefix: step back one filter.
            positions[depth] = 0
            depth -= 1
            if depth >= 0:
                partial.pop()
            continue
        positions[depth] = pos + 1
        partial.append(options[pos])
        if depth == count - 1:
            out.append(list(partial))
            if len(out) == limit:
                return out
            partial.pop()
        else:
            depth += 1
    return out


class SampleMatcher:
    """Per-key hit lists of each filter; :meth:`samples` assembles the result at end of input."""

    __slots__ = ("filters", "max_samples_per_key", "size", "cap", "buckets")

    def __init__(
        self,
        filters: int,
        *,
        max_samples_per_key: int = DEFAULT_MAX_SAMPLES_PER_KEY,
        size: int | None = DEFAULT_SIZE,
    ) -> None:
        if filters < 1:
            raise ValueError("a sample needs at least one filter")
        if max_samples_per_key < 1:
            raise ValueError("max_samples_per_key must be at least 1")
        if size is not None and size < 0:
            raise ValueError("size must not be negative")
        self.filters = filters
        self.max_samples_per_key = max_samples_per_key
        self.size = size
        # Elasticsearch asks each filter for this many hits per key: enough for N distinct samples.
        self.cap = filters + max_samples_per_key - 1
        self.buckets: dict[Key, list[list[Any]]] = {}

    def add(self, index: int, key: Key, item: Any) -> None:
        """Record ``item`` as a hit of filter ``index`` under ``key`` (kept while under the cap)."""
        lists = self.buckets.get(key)
        if lists is None:
            lists = self.buckets[key] = [[] for _ in range(self.filters)]
        hits = lists[index]
        if len(hits) < self.cap:
            hits.append(item)

    def samples(self, sort_key: Callable[[Key], Any]) -> list[tuple[Key, list[Any]]]:
        """All samples in key order (``sort_key`` orders keys), at most ``size`` of them."""
        out: list[tuple[Key, list[Any]]] = []
        size = self.size
        if size == 0:
            return out
        complete = [k for k, lists in self.buckets.items() if all(lists)]
        complete.sort(key=sort_key)
        for key in complete:
            for combo in match_samples(self.buckets[key], self.max_samples_per_key):
                out.append((key, combo))
                if size is not None and len(out) >= size:
                    return out
        return out

    def key_count(self) -> int:
        """Number of join keys held (for tests and memory checks)."""
        return len(self.buckets)
