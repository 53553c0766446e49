"""Streaming replay for `dac run`: one read of the events file feeds every rule, with bounded memory.

The batch replay (`replay.replay`) holds every event and sorts each rule's input. Recorded
telemetry is normally in time order already, so here one loop reads the events once. The rules
over events are one rule-set program (`deployer.eql.ruleset`: each event reaches only the rules
and sequence steps its category and the rules' shared selective conditions can match, each rule's
pre-filter applied first); the rules over alerts get each event after them, in dependency order.
Every rule ordered by `@timestamp` gets the value the reader has parsed already.

A rule over other rules' alerts gets the alert documents of its dependencies as they are
synthesised. Alerts come out of order (a sequence is reported when its last event arrives, its
building blocks carry the times of earlier events), so each such rule keeps a small reorder buffer
released by watermarks: a dependency with `maxspan` M promises that no alert it writes later is
older than its input time minus M (2M with missing-event steps, whose matches wait for the
trailing window). The buffer releases documents in exactly the order the batch replay would have
sorted them in, so the matches are identical; a dependency that can promise nothing (no maxspan,
`| tail`, a `timestamp_override`, another ordering field) only delays its dependents' input to
the end of the file.

Events out of time order stop the pass (`StreamBroken`); the file is then checked again, sorted
by (@timestamp, line) in runs on disk and merged into a second pass, which is the batch order
whenever every rule over events orders by @timestamp without a tiebreaker. Anything else the
streaming pass cannot reproduce exactly (an evaluation error, which the batch replay reports with
the same message; a document arriving behind the released order) makes the caller replay in
memory. Results are kept per rule until the whole file has been read, so the output order (rules
in dependency order, each rule's matches in evaluator order) and the "nothing printed on bad
input" behaviour are the batch replay's.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import pickle
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

from deployer.eql.ruleset import RuleSet
from deployer.eql.values import first_value, make_getter, parse_timestamp
from deployer.testing.alerts import alerts_for_match
from deployer.testing.evaluate import (
    Compiler,
    EvaluationError,
    Evaluator,
    Refused,
    RuleLike,
    compile_rule,
    dependencies,
    index_kinds,
    time_key,
)
from deployer.testing.events import (
    Event,
    FieldTypeLookup,
    LineParser,
    display_name,
    iter_checked_lines,
    iter_timed_events,
    read_events,
)
from deployer.testing.replay import result_for

if TYPE_CHECKING:
    from deployer.exceptions.model import Catalogue

# Events read between two progress reports.
PROGRESS_EVERY = 10_240
# Results stay in memory up to this size per rule, then spill to a temporary file.
SPOOL_BYTES = 1 << 20
# Allocations between young-generation collections during a pass (the default is 700).
GC_THRESHOLD = 20_000

_INF = float("inf")
S = TypeVar("S", bound="MatchSink")


class StreamBroken(Exception):
    """The streaming pass cannot reproduce the batch replay exactly; `disorder` when only the input order is the cause."""

    def __init__(self, message: str, *, disorder: bool = False) -> None:
        super().__init__(message)
        self.disorder = disorder


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, StreamBroken) else f"{type(exc).__name__}: {exc}"


class _Spool:
    """One rule's results, pickled in order; in memory up to SPOOL_BYTES, then on disk."""

    def __init__(self) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - closed in read()

    def write(self, result: dict[str, Any]) -> None:
        pickle.dump(result, self._file, protocol=pickle.HIGHEST_PROTOCOL)

    def read(self) -> Iterator[dict[str, Any]]:
        self._file.seek(0)
        try:
            while True:
                try:
                    yield pickle.load(self._file)
                except EOFError:
                    return
        finally:
            self._file.close()


def _lag(rule: RuleLike, program: Any, reads_events: bool, reads_alerts: bool) -> int | None:
    """How far (ms) behind its input time a rule's later alerts can be; None when nothing bounds it."""
    from deployer.eql import ast

    if (rule.kibana or {}).get("timestamp_override"):
        return None  # alert times come from an arbitrary field
    field = program.timestamp_field
    if reads_events and field != "@timestamp":
        return None
    if reads_alerts and field not in ("@timestamp", "kibana.alert.original_time"):
        return None
    query = program.query
    if any(pipe.name != "head" for pipe in query.pipes):
        return None  # `tail` holds every match to the end
    body = query.body
    if isinstance(body, ast.EventQuery):
        return 0
    span = program.span  # the maxspan, or the window that bounds it
    if not isinstance(body, ast.Sequence) or span is None:
        return None
    # A match with a trailing missing step is held until its window has passed.
    return 2 * span if any(step.missing for step in body.expanded_steps()) else span


class _Admitted:
    """A runner fed only the documents the rule's pre-filter admits (`Evaluator.admits`: exceptions)."""

    def __init__(self, runner: Any, admits: Callable[[Any], bool]) -> None:
        self._runner = runner
        self._admits = admits

    def push(self, doc: Any, *args: Any) -> list[Any]:
        """Feed one document unless an exception item drops it."""
        return self._runner.push(doc, *args) if self._admits(doc) else []

    def finish(self) -> list[Any]:
        """Flush the runner."""
        return self._runner.finish()


class _Stage:
    """One rule in the streaming pass: its runner, its reorder buffer (rules over alerts) and results."""

    def __init__(self, evaluator: Evaluator, rule_id: str, sink: MatchSink | None) -> None:
        self.rule = evaluator.by_id[rule_id]
        self.rule_id = rule_id
        self.program = evaluator.program(self.rule)
        self.reads_events, self.reads_alerts = index_kinds(self.rule)
        # Kibana wraps samples like sequences (they come back in `hits.sequences`).
        self.sequence = getattr(self.program, "kind", None) in ("sequence", "sample")
        self.lag = _lag(self.rule, self.program, self.reads_events, self.reads_alerts)
        self.runner = self.program.stream()
        if self.reads_alerts:
            # Rules over events get their pre-filter inside the rule set (`_prefilters`); a rule
            # over alerts is fed here, so its runner applies the same `Evaluator.admits`.
            admits = evaluator.admits(rule_id)
            if admits is not None:
                self.runner = _Admitted(self.runner, admits)
        self.subscribers: list[tuple[_Stage, int]] = []
        self.sink = sink
        # The reader's parsed @timestamp is this rule's ordering time only when it orders by it.
        self.event_times = self.program.timestamp_field == "@timestamp"
        self._ts_get = make_getter(self.program.timestamp_field)
        self._sent = -_INF
        # Reorder buffer of a rule over alerts: (rule time, ..., arrival, document) entries.
        self._heap: list[tuple[Any, ...]] = []
        self._marks: list[float] = []
        self._events_mark = -_INF if self.reads_events else _INF
        self._last: tuple[Any, ...] | None = None
        self._arrival = 0
        self._dirty = False

    def subscribe(self, sub: _Stage, rank: int) -> None:
        """`sub` reads this rule's alerts as its dependency number `rank`."""
        self.subscribers.append((sub, rank))
        sub._marks.append(-_INF)

    @property
    def on_event(self) -> Callable[[Event, int], None]:
        """What a rule over alerts does with each event of the file (in dependency order)."""
        if self.reads_events:
            return self._merge_event
        return self._release_if_dirty

    # -- every rule

    def _handle(self, matches: list[Any]) -> None:
        for match in matches:
            if self.sink is not None:
                self.sink.add(self.rule, match)
            if self.subscribers:
                docs = alerts_for_match(self.rule, match.events, sequence=self.sequence)
                if docs:
                    for sub, rank in self.subscribers:
                        for doc in docs:
                            sub._add(doc, rank)

    def _watermark(self, input_time: float) -> None:
        """Tell the rules reading this one's alerts how old its later alerts can be."""
        if self.lag is None or not self.subscribers:
            return
        mark = input_time - self.lag
        if mark > self._sent:
            self._sent = mark
            for sub, rank in self.subscribers:
                sub._mark(rank, mark)

    def finish(self) -> None:
        """End of the file: release what is buffered, flush the runner, free the rules reading this one."""
        self._events_mark = _INF
        if self.reads_alerts:
            self._release()
        matches = self.runner.finish()
        if matches:
            self._handle(matches)
        for sub, rank in self.subscribers:
            sub._mark(rank, _INF)

    # -- rules over alerts: the reorder buffer

    def _doc_time(self, doc: dict[str, Any]) -> int:
        """The document's time as the program orders it (its `timestamp_field`)."""
        raw = first_value(self._ts_get(doc))
        if raw is None:
            raise StreamBroken(f"{self.rule_id}: a document without {self.program.timestamp_field}")
        try:
            return parse_timestamp(raw)
        except (ValueError, TypeError, OverflowError) as exc:
            raise StreamBroken(f"{self.rule_id}: {exc}") from None

    def _add(self, doc: dict[str, Any], rank: int) -> None:
        # The batch replay concatenates the dependencies' alert lists (each sorted by @timestamp)
        # after the events, sorts by @timestamp when events are mixed in, then by the rule's own
        # time; a key of (rule time, @timestamp, rank, arrival) or (rule time, rank, @timestamp,
        # arrival) reproduces that order.
        self._arrival += 1
        at = self._doc_time(doc)
        tk = time_key(doc)
        key = (at, tk, rank, self._arrival) if self.reads_events else (at, rank, tk, self._arrival)
        if self._last is not None and key < self._last:
            raise StreamBroken(f"{self.rule_id}: an input document arrived after later ones were evaluated")
        heapq.heappush(self._heap, (*key, doc))
        self._dirty = True

    def _mark(self, rank: int, mark: float) -> None:
        if mark > self._marks[rank]:
            self._marks[rank] = mark
            self._dirty = True

    def _merge_event(self, event: Event, ts: int) -> None:
        self._add(event, -1)
        if self.event_times:
            self._events_mark = ts
        self._release()

    def _release_if_dirty(self, event: Event, ts: int) -> None:
        if self._dirty:
            self._release()

    def _release(self) -> None:
        """Evaluate the buffered documents no input can come before any more, in the batch order."""
        self._dirty = False
        release = min(min(self._marks, default=_INF), self._events_mark)
        heap = self._heap
        push = self.runner.push
        while heap and heap[0][0] < release:
            item = heapq.heappop(heap)
            self._last = item[:4]
            matches = push(item[4], item[0])
            if matches:
                self._handle(matches)
        if release != _INF:
            self._watermark(release)


def stream_pass(
    evaluator: Evaluator,
    targets: Sequence[str],
    events: Iterable[tuple[Event, int]],
    *,
    name: str,
    sink: MatchSink,
) -> None:
    """Evaluate the targets over time-ordered (event, epoch ms) pairs in one pass, each match to `sink`.

    Raises `EventsError` on bad input and `StreamBroken` when only the batch replay can give the
    answer (the sink then holds part of the answer: use a fresh one). The rules must have been
    prepared (`Evaluator.prepare`).
    """
    order = evaluator.order(targets)
    wanted = set(targets)
    stages = {rule_id: _Stage(evaluator, rule_id, sink if rule_id in wanted else None) for rule_id in order}
    for stage in stages.values():
        if stage.reads_alerts:
            for rank, dep in enumerate(dependencies(stage.rule_id, evaluator.by_id)):
                stages[dep].subscribe(stage, rank)
    # Dependency order: a rule's alerts reach the rules over them within the same event.
    all_stages = list(stages.values())
    # Rules over events only are one rule-set program (each event reaches only the rules it can
    # match); they depend on nothing, so they go first. Rules over alerts follow in dependency order.
    over_events = [s for s in all_stages if not s.reads_alerts]
    marking = [s for s in over_events if s.subscribers and s.lag is not None]
    ruleset = RuleSet(
        {s.rule_id: s.program for s in over_events},
        prefilters=_prefilters(evaluator, over_events),
    ).stream()
    steps = [stage.on_event for stage in all_stages if stage.reads_alerts]
    # The reader sees @timestamp; rules ordered by another field check their own order.
    ordered_by_timestamp = any(s.event_times for s in all_stages if s.reads_events)
    # Events are acyclic JSON that die young, but the default collector thresholds make it walk the
    # live sequence state thousands of times per million events; modules, rules and the field
    # registry are long-lived and frozen out of collections for the pass.
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, threshold[1], threshold[2])
    try:
        previous = -_INF
        for event, ts in events:
            if ts < previous and ordered_by_timestamp:
                raise StreamBroken(f"{name}:{event.line}: @timestamp goes back in time", disorder=True)
            previous = ts
            try:
                for rule_id, match in ruleset.push(event, ts):
                    stages[rule_id]._handle([match])
                for stage in marking:
                    stage._watermark(ts)
                for step in steps:
                    step(event, ts)
            except StreamBroken:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure hands the run to the batch replay
                raise StreamBroken(_describe(exc)) from exc
        try:
            for rule_id, match in ruleset.finish():
                stages[rule_id]._handle([match])
            for stage in all_stages:
                stage.finish()
        except StreamBroken:
            raise
        except Exception as exc:  # noqa: BLE001 - as above
            raise StreamBroken(_describe(exc)) from exc
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def _prefilters(evaluator: Evaluator, stages: Sequence[_Stage]) -> dict[str, Callable[[Any], bool]]:
    """Each rule's event pre-filter (its exception items), for the rules that have one."""
    out = {}
    for stage in stages:
        keep = evaluator.admits(stage.rule_id)
        if keep is not None:
            out[stage.rule_id] = keep
    return out


# Text held in memory per sorted run when out-of-order input is sorted on disk.
RUN_BYTES = 32 << 20

# Told (events read, characters read) every PROGRESS_EVERY events and at the end of the input;
# characters None when unknown.
Progress = Callable[[int, "int | None"], None]


class MatchSink(Protocol):
    """Where a pass puts each match of a target rule, in the rule's match order."""

    def add(self, rule: RuleLike, match: Any) -> None:
        """Take one match of one rule."""


class _Spools:
    """The results of `dac run`: per rule, result objects pickled in order (on disk past SPOOL_BYTES)."""

    def __init__(self, order: Sequence[str]) -> None:
        self._spools = {rule_id: _Spool() for rule_id in order}

    def add(self, rule: RuleLike, match: Any) -> None:
        """Spool the result object of one match."""
        self._spools[rule.rule_id].write(result_for(rule, match))

    def results(self) -> Iterator[dict[str, Any]]:
        """Every result, rules in dependency order, each rule's matches in evaluator order."""
        for spool in self._spools.values():
            yield from spool.read()


def replay_file(
    rules: Sequence[RuleLike],
    path: str,
    *,
    library: Sequence[RuleLike] = (),
    field_types: FieldTypeLookup | None = None,
    stdin: IO[bytes] | None = None,
    progress: Progress | None = None,
    on_fallback: Callable[[str], None] | None = None,
    on_refused: Refused | None = None,
    exceptions: Catalogue | None = None,
) -> Iterator[dict[str, Any]]:
    """Replay an events file (`-` for stdin) through the rules, streaming; out-of-order input is sorted first.

    Yields the same results, in the same order, as `replay.replay` over the whole file; raises
    `EventsError` on bad input. Nothing is yielded before the whole file has been read.
    `on_fallback` hears why the single streaming pass was not enough. A rule that cannot be
    evaluated (its query does not compile offline, a bad dependency, a failure while it runs) is
    left out and handed to `on_refused` (without it, the first such rule raises `EvaluationError`
    once the file has been checked); every other rule is evaluated.
    """
    spools = evaluate_file(
        rules,
        path,
        _Spools,
        library=library,
        field_types=field_types,
        stdin=stdin,
        progress=progress,
        on_fallback=on_fallback,
        on_refused=on_refused,
        exceptions=exceptions,
    )
    yield from spools.results()


def evaluate_file(
    rules: Sequence[RuleLike],
    path: str,
    new_sink: Callable[[list[str]], S],
    *,
    library: Sequence[RuleLike] = (),
    field_types: FieldTypeLookup | None = None,
    stdin: IO[bytes] | None = None,
    progress: Progress | None = None,
    on_fallback: Callable[[str], None] | None = None,
    on_refused: Refused | None = None,
    exceptions: Catalogue | None = None,
    compiler: Compiler = compile_rule,
) -> S:
    """Evaluate the rules over an events file (`-` for stdin); return the sink that saw every match.

    `new_sink(order)` makes a sink for the evaluated rules in dependency order; a pass that cannot
    finish exactly (out-of-order input, see the module docstring) is retried with a fresh sink.
    Raises `EventsError` on bad input. Refused rules go to `on_refused` once the file is known to
    be good (without it, the first refusal raises `EvaluationError`); the others are evaluated.
    `exceptions`: the exception lists the rules reference (each rule's pre-filter). `compiler`:
    how a rule becomes a program (`dac backtest` bounds sequences by the rule's look-back).
    """
    name = display_name(path)
    evaluator = Evaluator(
        [*rules, *library], compiler=compiler, exceptions=exceptions, field_types=field_types
    )
    targets, refused = evaluator.triage(r.rule_id for r in rules)
    with seekable(path, stdin) as source:

        def report() -> None:
            # Refusals are reported only once the file is known to be good (bad input wins).
            if on_refused is not None:
                for refusal in refused:
                    on_refused(refusal)

        wanted = set(targets)
        order = [rule_id for rule_id in evaluator.order(targets) if rule_id in wanted]
        strict = bool(refused) and on_refused is None
        if strict or not targets:
            # Nothing to evaluate, or stopping at the first refusal: the file is still checked
            # first, so a bad line wins over a rule problem.
            for _ in _read_counted(source, field_types, name, progress):
                pass
            if strict:
                raise EvaluationError(refused[0].rule_id, refused[0].message)
            report()
            return new_sink(order)
        try:
            sink = new_sink(order)
            stream_pass(
                evaluator, targets, _read_counted(source, field_types, name, progress), name=name, sink=sink
            )
            report()
            return sink
        except StreamBroken as exc:
            broken = exc
        if broken.disorder and _sortable(evaluator, targets):
            if on_fallback is not None:
                on_fallback(f"{broken}; sorting by @timestamp on disk")
            try:
                sink = new_sink(order)
                with tempfile.TemporaryDirectory(prefix="dac-run-sort-") as workdir:
                    events = _counted(_sorted_events(source, name, field_types, Path(workdir)), progress)
                    stream_pass(evaluator, targets, events, name=name, sink=sink)
                report()
                return sink
            except StreamBroken as exc:
                broken = exc
        if on_fallback is not None:
            on_fallback(f"{broken}; replaying in memory")
        # The batch replay, whole file in memory: the reference the streaming passes reproduce.
        sink = new_sink(order)
        batch = read_events(source, field_types=field_types, name=name)
        if progress is not None:
            progress(len(batch), None)
        report()
        for outcome in evaluator.evaluate(targets, batch, on_refused=on_refused):
            for match in outcome.matches:
                sink.add(outcome.rule, match)
        return sink


def _read_counted(
    source: str, field_types: FieldTypeLookup | None, name: str, progress: Progress | None
) -> Iterator[tuple[Event, int]]:
    """The file's (event, epoch ms) pairs, telling `progress` how many events and characters were read."""
    if progress is None:
        yield from iter_timed_events(source, field_types=field_types, name=name)
        return
    count = chars = 0
    for event, ts, text in iter_checked_lines(source, field_types=field_types, name=name):
        count += 1
        chars += len(text) + 1
        if count % PROGRESS_EVERY == 0:
            progress(count, chars)
        yield event, ts
    progress(count, chars)


def _counted(events: Iterable[tuple[Event, int]], progress: Progress | None) -> Iterator[tuple[Event, int]]:
    """The pairs, telling `progress` how many were read (characters unknown)."""
    if progress is None:
        yield from events
        return
    count = 0
    for count, pair in enumerate(events, 1):
        if count % PROGRESS_EVERY == 0:
            progress(count, None)
        yield pair
    progress(count, None)


def _sortable(evaluator: Evaluator, targets: Sequence[str]) -> bool:
    """Whether sorting the events by (@timestamp, line) gives every rule over events its batch order."""
    for rule_id in evaluator.order(targets):
        rule = evaluator.by_id[rule_id]
        if not index_kinds(rule)[0]:
            continue
        program = evaluator.program(rule)
        # The batch replay orders by (timestamp field, tiebreaker, file position).
        if program.timestamp_field != "@timestamp" or program.tiebreaker_field:
            return False
    return True


def _sorted_events(
    source: str, name: str, field_types: FieldTypeLookup | None, workdir: Path
) -> Iterator[tuple[Event, int]]:
    """Check the whole file, then yield its events sorted by (@timestamp, line): sorted runs on disk, merged."""
    runs: list[Path] = []
    buffer: list[tuple[int, int, str]] = []
    size = 0

    def spill() -> None:
        buffer.sort()
        path = workdir / f"run-{len(runs):05d}"
        with path.open("wb") as out:
            for ts, line, text in buffer:
                out.write(b"%d\t%d\t%s\n" % (ts, line, text.encode("utf-8")))
        runs.append(path)
        buffer.clear()

    # Every line is checked before any is evaluated, as in the single pass.
    for event, ts, text in iter_checked_lines(source, field_types=field_types, name=name):
        buffer.append((ts, event.line, text))
        size += len(text) + 64
        if size >= RUN_BYTES:
            spill()
            size = 0
    buffer.sort()
    parse = LineParser(field_types, name)
    for ts, line, text in heapq.merge(*(_read_run(run) for run in runs), iter(buffer)):
        event, _ = parse(text, line)
        yield event, ts


def _read_run(path: Path) -> Iterator[tuple[int, int, str]]:
    with path.open("rb") as run:
        for raw in run:
            ts, line, text = raw.rstrip(b"\n").split(b"\t", 2)
            yield int(ts), int(line), text.decode("utf-8")


@contextlib.contextmanager
def seekable(path: str, stdin: IO[bytes] | None) -> Iterator[str]:
    """A path that can be read twice: the file itself, or stdin copied to a temporary file."""
    if str(path) != "-":
        yield str(path)
        return
    raw = stdin if stdin is not None else sys.stdin.buffer
    # The fallback to the batch replay needs a second read; stdin cannot be rewound. The copy
    # costs disk, not memory.
    with tempfile.NamedTemporaryFile(prefix="dac-run-", suffix=".ndjson") as copy:
        shutil.copyfileobj(raw, copy, 1 << 20)
        copy.flush()
        yield copy.name
