"""`dac backtest`: how noisy would each rule have been on recorded telemetry.

One streaming pass (`deployer.testing.stream.evaluate_file`, the engine of `dac run`) feeds every
match to a per-rule summary instead of printing it: matches, the alert documents Kibana would
write, distinct hosts, users and entities, first and last match time and a per-hour histogram.
Memory is the rules' open sequence state plus these summaries (per-hour counts, distinct counts
in fixed memory: `deployer.testing.distinct`), never the events.

Alerts follow Kibana's EQL rule executor: each run of a rule writes at most `max_signals` matches
(the EQL search `size`; default 100); an event query writes one alert per match, a sequence one
building-block alert per event plus one shell alert (`deployer.testing.alerts`). Offline, runs are
consecutive windows of the rule's `interval` (default 5m) aligned on the epoch, and a match
belongs to the window of its last event (when the sequence becomes visible). Each run searches
the rule's look-back (`from`, default `now-6m`), so a sequence longer than it never alerts: one
without `maxspan` (or with a longer one) is bounded by the look-back here, and its partial
sequences expire; a sample is taken per consecutive look-back-long window. The alerts an analyst sees in the default Alerts view exclude building blocks:
shells and event alerts of rules that are not building-block rules.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from deployer.eql.values import first_value, make_getter, parse_timestamp
from deployer.testing.distinct import DistinctCounter
from deployer.testing.evaluate import (
    DEFAULT_MAX_SIGNALS,
    Refusal,
    RuleLike,
    closure,
    compile_rule,
    is_sequence_query,
)
from deployer.testing.events import FieldTypeLookup
from deployer.testing.stream import Progress, evaluate_file, seekable
from deployer.testing.workers import can_fork, run_shares, split_rules

if TYPE_CHECKING:
    from deployer.exceptions.model import Catalogue

# Kibana's default run interval and look-back (`from`; `to` is `now`) for a rule that does not set one.
DEFAULT_INTERVAL = "5m"
DEFAULT_FROM = "now-6m"
HOUR_MS = 3_600_000
# Run windows whose alert counts are kept per rule: matches come in time order, so only the
# newest matters; the rest is slack for the few that do not (samples, whose matches ignore time).
WINDOWS_KEPT = 64

_UNITS = {"s": 1000, "m": 60_000, "h": 3_600_000, "H": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_INTERVAL_RE = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
# `now`, or `now-<n><unit>`: the date math Kibana rules use for `from` and `to`.
_NOW_RE = re.compile(r"^\s*now\s*(?:-\s*(\d+)\s*([smhHdw]))?\s*$")

_host_name = make_getter("host.name")
_host_id = make_getter("host.id")
_user_name = make_getter("user.name")
_entity_id = make_getter("process.entity_id")


def interval_ms(text: Any) -> int:
    """A Kibana rule interval (`5m`, `1h`, `30s`) in milliseconds; the default when absent or unreadable."""
    m = _INTERVAL_RE.match(str(text if text else DEFAULT_INTERVAL))
    if m is None:
        m = _INTERVAL_RE.match(DEFAULT_INTERVAL)
    assert m is not None
    return int(m.group(1)) * _UNITS[m.group(2)]


def lookback_ms(kibana: dict[str, Any]) -> int | None:
    """How far back (ms) each run of a rule searches: `to` minus `from` (`now-9m` to `now`: 9 minutes).

    Kibana's defaults when absent; None when the date math is not `now` or `now-<n><unit>`, so
    nothing is bounded by a guess.
    """
    start = _NOW_RE.match(str(kibana.get("from") or DEFAULT_FROM))
    end = _NOW_RE.match(str(kibana.get("to") or "now"))
    if start is None or end is None:
        return None
    ago = [int(m.group(1)) * _UNITS[m.group(2)] if m.group(1) else 0 for m in (start, end)]
    return ago[0] - ago[1] if ago[0] > ago[1] else None


def compile_for_runs(rule: RuleLike) -> Any:
    """A rule's program as Kibana's runs see the events: sequences bounded by the rule's look-back.

    Each run of an EQL rule searches only its look-back window, so a sequence longer than that
    (one without `maxspan`, or with a longer one) can never alert; bounding it also lets its
    partial sequences expire instead of being kept for the whole file.
    """
    return compile_rule(rule, window=lookback_ms(rule.kibana or {}))


@dataclass
class RuleSummary:
    """What one rule would have done over the events."""

    rule_id: str
    name: str
    kind: str
    building_block: bool
    max_signals: int
    interval_ms: int
    timestamp_field: str = "@timestamp"
    matches: int = 0
    alerts: int = 0
    visible_alerts: int = 0
    capped: int = 0
    first: int | None = None
    last: int | None = None
    hosts: DistinctCounter = field(default_factory=DistinctCounter)
    users: DistinctCounter = field(default_factory=DistinctCounter)
    entities: DistinctCounter = field(default_factory=DistinctCounter)
    hourly: Counter[int] = field(default_factory=Counter)
    _windows: dict[int, int] = field(default_factory=dict, repr=False)

    def add(self, events: Sequence[dict[str, Any] | None], join_keys: Sequence[Any]) -> None:
        """Count one match."""
        present = [e for e in events if e is not None]
        if not present:
            return
        self.matches += 1
        at = _time(present[-1], self.timestamp_field)
        if at is not None:
            self.first = at if self.first is None or at < self.first else self.first
            self.last = at if self.last is None or at > self.last else self.last
            self.hourly[at // HOUR_MS] += 1
            window = at // self.interval_ms
        else:
            window = -1
        windows = self._windows
        written = windows.get(window, 0)
        if written >= self.max_signals:
            self.capped += 1
        else:
            windows[window] = written + 1
            if len(windows) > WINDOWS_KEPT:
                # The window first seen is the oldest: a rule's matches come in its time order.
                del windows[next(iter(windows))]
            if self.kind == "sequence":
                self.alerts += len(present) + 1
                self.visible_alerts += 0 if self.building_block else 1
            else:
                self.alerts += 1
                self.visible_alerts += 0 if self.building_block else 1
        for event in present:
            self.hosts.add(first_value(_host_name(event)) or first_value(_host_id(event)))
            self.users.add(first_value(_user_name(event)))
        if join_keys:
            self.entities.add(tuple(_hashable(k) for k in join_keys))
        else:
            for event in present:
                self.entities.add(first_value(_entity_id(event)))

    def _done(self) -> None:
        # Windows are only needed while matches arrive.
        self._windows.clear()


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _time(event: dict[str, Any], field_name: str) -> int | None:
    raw = (
        first_value(make_getter(field_name)(event)) if field_name != "@timestamp" else event.get("@timestamp")
    )
    if raw is None and field_name != "@timestamp":
        raw = event.get("@timestamp")
    try:
        return parse_timestamp(first_value(raw))
    except (ValueError, TypeError, OverflowError):
        return None


@dataclass
class Refused:
    """A rule left out of the backtest and why."""

    rule_id: str
    name: str
    message: str


@dataclass
class Backtest:
    """Per-rule summaries in dependency order, the rules refused, and the events read."""

    rules: list[RuleSummary]
    refused: list[Refused]
    events: int = 0


class _Summaries:
    """The sink of the pass: one RuleSummary per target."""

    def __init__(self, order: list[str], by_id: dict[str, RuleLike], kinds: Callable[[str], str]) -> None:
        self.summaries: dict[str, RuleSummary] = {}
        for rule_id in order:
            kibana = by_id[rule_id].kibana or {}
            self.summaries[rule_id] = RuleSummary(
                rule_id=rule_id,
                name=str(kibana.get("name") or ""),
                kind=kinds(rule_id),
                building_block=bool(kibana.get("building_block_type")),
                max_signals=_positive(kibana.get("max_signals"), DEFAULT_MAX_SIGNALS),
                interval_ms=interval_ms(kibana.get("interval")),
                timestamp_field=str(kibana.get("timestamp_field") or "@timestamp"),
            )

    def add(self, rule: RuleLike, match: Any) -> None:
        """Count one match of one rule."""
        self.summaries[rule.rule_id].add(match.events, match.join_keys)


def _positive(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


def backtest(
    rules: Sequence[RuleLike],
    path: str,
    *,
    library: Sequence[RuleLike] = (),
    field_types: FieldTypeLookup | None = None,
    stdin: IO[bytes] | None = None,
    progress: Progress | None = None,
    on_fallback: Callable[[str], None] | None = None,
    exceptions: Catalogue | None = None,
    jobs: int = 1,
) -> Backtest:
    """Summarise what each rule would have matched and alerted on over an events file.

    A rule that cannot be evaluated offline is listed in `refused`; the others are evaluated.
    `exceptions`: the exception lists the rules reference, applied as Kibana does. `jobs`: worker
    processes sharing the rules (`deployer.testing.workers`); the report is the same for any
    number. Raises `EventsError` on bad input.
    """
    shares = split_rules(rules, library, jobs) if jobs > 1 and can_fork() else [list(rules)]
    # stdin is copied once, so every worker (or the one process) reads the same file.
    with seekable(path, stdin) as source:

        def work(
            share: Sequence[RuleLike], relay: Progress | None, fallback: Callable[[str], None] | None
        ) -> Backtest:
            mine = {r.rule_id for r in share}
            others = [r for r in rules if r.rule_id not in mine]
            return _backtest(
                share,
                source,
                library=[*library, *others],
                field_types=field_types,
                progress=relay,
                on_fallback=fallback,
                exceptions=exceptions,
            )

        if len(shares) == 1:
            return work(shares[0], progress, on_fallback)
        parts = run_shares(shares, work, progress=progress, on_fallback=on_fallback)
    return _merge(parts, [*library, *rules])


def _merge(parts: Sequence[Backtest], everything: Sequence[RuleLike]) -> Backtest:
    """One report from the workers' reports, ordered as one process orders it."""
    summaries = {s.rule_id: s for part in parts for s in part.rules}
    by_id = {r.rule_id: r for r in everything}
    # Every summarised rule was evaluated, so its dependency graph is sound.
    order = [rule_id for rule_id in closure(summaries, by_id) if rule_id in summaries]
    refused = sorted((x for part in parts for x in part.refused), key=lambda x: x.rule_id)
    return Backtest([summaries[rule_id] for rule_id in order], refused, parts[0].events)


def _backtest(
    rules: Sequence[RuleLike],
    path: str,
    *,
    library: Sequence[RuleLike] = (),
    field_types: FieldTypeLookup | None = None,
    progress: Progress | None = None,
    on_fallback: Callable[[str], None] | None = None,
    exceptions: Catalogue | None = None,
) -> Backtest:
    """The backtest in this process."""
    by_id = {r.rule_id: r for r in [*library, *rules]}
    refused: list[Refused] = []
    counter = _EventCounter(progress)

    def on_refused(refusal: Refusal) -> None:
        rule = by_id.get(refusal.rule_id)
        name = str(((rule.kibana or {}).get("name") if rule is not None else "") or "")
        refused.append(Refused(refusal.rule_id, name, refusal.message))

    def kinds(rule_id: str) -> str:
        query = str((by_id[rule_id].kibana or {}).get("query") or "")
        return "sequence" if is_sequence_query(query) else "event"

    sink = evaluate_file(
        rules,
        path,
        lambda order: _Summaries(order, by_id, kinds),
        library=library,
        field_types=field_types,
        progress=counter,
        on_fallback=on_fallback,
        on_refused=on_refused,
        exceptions=exceptions,
        compiler=compile_for_runs,
    )
    summaries = list(sink.summaries.values())
    for summary in summaries:
        summary._done()
    return Backtest(summaries, refused, counter.events)


class _EventCounter:
    """Passes progress on and remembers the last count (the pass reports every PROGRESS_EVERY events)."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self.events = 0

    def __call__(self, count: int, chars: int | None) -> None:
        self.events = count
        if self._progress is not None:
            self._progress(count, chars)
