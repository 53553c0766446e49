"""Streaming sequence matcher with Elasticsearch semantics, plus the missing-event (``![...]``) check.

The matcher is fed events already in order (timestamp, tiebreaker, input position). Items are
opaque to it except that ``item[0]`` is the item's timestamp in epoch milliseconds.

State machine (Elasticsearch's documented model, which reproduces its matcher specs): every join
key has one pending slot per stage; a newer pending sequence in a slot overwrites the older one.
An event matching stage k > 0 takes the sequence waiting in slot k-1 (removing it), drops it if the
span from its first event exceeds ``maxspan`` (a span equal to maxspan is allowed), and otherwise
moves it to slot k or completes it. An event matching stage 0 starts a new sequence. Callers visit
the stages an event matches from last to first, so one event can both advance a sequence and
start another.

Memory: with ``maxspan`` a partial sequence whose first event is older than maxspan relative to the
newest event seen can never complete; a periodic sweep removes it (and keys left with nothing
pending), so state is bounded by the keys active within the live window. Without ``maxspan``
nothing expires: state is at most one partial sequence per stage per join key that started one,
kept until it is overwritten, advanced or cut by ``until``. It grows with the number of distinct
keys, not with the number of events.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Hashable, Iterator
from typing import Any

__all__ = ["SequenceMatcher", "MissingEventCheck"]

Key = Hashable
Item = Any  # a tuple whose first element is the timestamp in ms


class SequenceMatcher:
    """Per-key, per-stage state machine over the positive stages of a sequence."""

    __slots__ = ("stages", "maxspan", "state")

    def __init__(self, stages: int, maxspan: int | None = None) -> None:
        if stages < 1:
            raise ValueError("a sequence needs at least one stage")
        self.stages = stages
        self.maxspan = maxspan
        # key -> list of pending slots, one per stage but the last: (first_ts, items)
        self.state: dict[Key, list[tuple[int, tuple[Item, ...]] | None]] = {}

    def advance(self, stage: int, key: Key, ts: int, item: Item) -> tuple[Item, ...] | None:
        """Feed ``item`` as a match of ``stage`` under ``key``; return the completed sequence, if any."""
        last = self.stages - 1
        if stage == 0:
            if last == 0:
                return (item,)
            slots = self.state.get(key)
            if slots is None:
                slots = self.state[key] = [None] * last
            slots[0] = (ts, (item,))
            return None
        slots = self.state.get(key)
        if slots is None:
            return None
        pending = slots[stage - 1]
        if pending is None:
            return None
        # Taken out before the maxspan test: an over-long candidate is dropped, not kept.
        slots[stage - 1] = None
        first_ts, items = pending
        if self.maxspan is not None and ts - first_ts > self.maxspan:
            return None
        items = items + (item,)
        if stage == last:
            return items
        slots[stage] = (first_ts, items)
        return None

    def until(self, key: Key) -> None:
        """An ``until`` event for ``key``: every pending sequence of that key is abandoned."""
        self.state.pop(key, None)

    def sweep(self, now: int) -> None:
        """Drop partial sequences that can no longer complete within maxspan of ``now``.

        The caller decides when (the engine sweeps once per maxspan of stream time).
        """
        if self.maxspan is None:
            return
        horizon = now - self.maxspan
        dead = []
        for key, slots in self.state.items():
            alive = False
            for i, pending in enumerate(slots):
                if pending is not None:
                    if pending[0] < horizon:
                        slots[i] = None
                    else:
                        alive = True
            if not alive:
                dead.append(key)
        for key in dead:
            del self.state[key]

    def pending_count(self) -> int:
        """Number of partial sequences held (for tests and memory checks)."""
        return sum(1 for slots in self.state.values() for p in slots if p is not None)


class _Candidate:
    __slots__ = ("key", "items", "payload", "leading", "decided", "keep", "reference")

    def __init__(self, key: Key, items: tuple[Item, ...], payload: Any) -> None:
        self.key = key
        self.items = items
        self.payload = payload
        self.leading: int | None = None
        self.decided = False
        self.keep = False
        self.reference = 0


class MissingEventCheck:
    """Decides which positive-stage candidates survive the ``![...]`` stages (Elasticsearch rules).

    ``layout`` lists every stage (after ``runs`` expansion) as True when it is a missing stage.
    Missing-stage events are reported with :meth:`observe` (timestamps only are kept, per key,
    within ``maxspan`` of the newest event); completed positive candidates with :meth:`candidate`.
    Kept candidates come out of :meth:`ready` in completion order; a candidate that needs to know
    whether a trailing missing event follows waits until one arrives or until maxspan has passed.
    """

    def __init__(self, layout: list[bool], maxspan: int) -> None:
        positives = [i for i, missing in enumerate(layout) if not missing]
        if not positives:
            raise ValueError("a sequence needs at least one positive stage")
        self.maxspan = maxspan
        self.layout = layout
        first, last = positives[0], positives[-1]
        self.leading_stages = [i for i in range(first)]
        self.trailing_stages = [i for i in range(last + 1, len(layout))]
        # Missing stage -> index (among positives) of the positive stage just before it.
        self.between: dict[int, int] = {}
        for i, missing in enumerate(layout):
            if missing and first < i < last:
                self.between[i] = sum(1 for p in positives if p < i) - 1
        self.buffers: dict[int, dict[Key, list[int]]] = {
            i: {} for i, missing in enumerate(layout) if missing and i <= last
        }
        self.trailing_set = frozenset(self.trailing_stages)
        self._queue: deque[_Candidate] = deque()
        self._waiting: dict[Key, list[_Candidate]] = {}
        self._deadlines: list[tuple[int, int, _Candidate]] = []
        self._counter = 0
        self._last_trim: int | None = None

    # -- input

    def observe(self, stage: int, key: Key, ts: int) -> None:
        """A missing-stage event under ``key`` at ``ts``."""
        if stage in self.trailing_set:
            waiting = self._waiting.get(key)
            if waiting:
                rest = []
                for cand in waiting:
                    if cand.decided:
                        continue
                    if ts > cand.items[-1][0]:
                        # Events arrive in order, so this is the earliest trailing hit.
                        self._decide(cand, ts - cand.reference > self.maxspan)
                    else:
                        rest.append(cand)
                if rest:
                    self._waiting[key] = rest
                else:
                    del self._waiting[key]
            return
        per_key = self.buffers[stage]
        times = per_key.get(key)
        if times is None:
            per_key[key] = [ts]
        else:
            times.append(ts)

    def candidate(self, key: Key, items: tuple[Item, ...], payload: Any) -> None:
        """A completed positive-stage sequence (``items`` in stage order) for ``key``."""
        cand = _Candidate(key, items, payload)
        self._queue.append(cand)
        for stage, gap in self.between.items():
            times = self.buffers[stage].get(key)
            if times:
                lo, hi = items[gap][0], items[gap + 1][0]
                # Strictly between, on timestamps only (not tiebreakers), as Elasticsearch does.
                idx = bisect_right(times, lo)
                if idx < len(times) and times[idx] < hi:
                    self._decide(cand, False)
                    return
        first_ts, last_ts = items[0][0], items[-1][0]
        leading = None
        for stage in self.leading_stages:
            times = self.buffers[stage].get(key)
            if times:
                idx = bisect_left(times, first_ts) - 1
                if idx >= 0 and (leading is None or times[idx] > leading):
                    leading = times[idx]
        cand.leading = leading
        if not self.trailing_stages:
            self._decide(cand, leading is None or last_ts - leading > self.maxspan)
            return
        if self.leading_stages and leading is None:
            self._decide(cand, True)
            return
        cand.reference = leading if self.leading_stages else first_ts
        self._waiting.setdefault(key, []).append(cand)
        self._counter += 1
        heapq.heappush(self._deadlines, (cand.reference + self.maxspan, self._counter, cand))

    def tick(self, now: int) -> None:
        """Advance time: candidates past their deadline are kept; old buffered times are trimmed."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] < now:
            _, _, cand = heapq.heappop(deadlines)
            if not cand.decided:
                # Any trailing event from now on is more than maxspan away: the candidate stays.
                self._decide(cand, True)
                self._forget_waiting(cand)
        if self._last_trim is None:
            self._last_trim = now
        elif now - self._last_trim > self.maxspan:
            self._trim(now)

    def finish(self) -> None:
        """End of input: candidates still waiting for a trailing event had none, so they stay."""
        for cand in self._queue:
            if not cand.decided:
                self._decide(cand, True)
        self._waiting.clear()
        self._deadlines.clear()

    # -- output

    def ready(self) -> Iterator[tuple[Key, tuple[Item, ...], Any]]:
        """Yield kept candidates whose fate and all earlier candidates' fates are known, in order."""
        queue = self._queue
        while queue and queue[0].decided:
            cand = queue.popleft()
            if cand.keep:
                yield cand.key, cand.items, cand.payload

    # -- internals

    def _decide(self, cand: _Candidate, keep: bool) -> None:
        cand.decided = True
        cand.keep = keep

    def _forget_waiting(self, cand: _Candidate) -> None:
        waiting = self._waiting.get(cand.key)
        if waiting is not None:
            rest = [c for c in waiting if c is not cand and not c.decided]
            if rest:
                self._waiting[cand.key] = rest
            else:
                del self._waiting[cand.key]

    def _trim(self, now: int) -> None:
        # A leading/in-between hit older than maxspan before the newest event cannot change any
        # future decision (see the rules in candidate()), so it is forgotten.
        horizon = now - self.maxspan
        for per_key in self.buffers.values():
            dead = []
            for key, times in per_key.items():
                if times[-1] < horizon:
                    dead.append(key)
                elif times[0] < horizon:
                    del times[: bisect_left(times, horizon)]
            for key in dead:
                del per_key[key]
        self._last_trim = now
