"""Streaming replay for `dac run`: one read of the events file feeds every rule, with bounded memory.

The batch replay (`replay.replay`) holds every event and sorts each rule's input. Recorded
telemetry is normally in time order already, so here every rule runs `Program.run_sorted` over the
same stream of events, read once. Each rule runs in its own thread because `run_sorted` pulls its
input: a thread can wait for the next chunk of events, a generator cannot. The threads share one
interpreter lock, so this is a fan-out, not parallelism; chunks of events keep the switching rare.

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
import queue
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from deployer.testing.alerts import alerts_for_match
from deployer.testing.evaluate import (
    EvaluationError,
    Evaluator,
    RuleLike,
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

# Events handed to the rule threads at a time, and how many such chunks may wait per rule: the
# bound on events in flight (the readers' memory), large enough that thread switches stay rare.
CHUNK_EVENTS = 512
MAX_PENDING_CHUNKS = 8
# Results stay in memory up to this size per rule, then spill to a temporary file.
SPOOL_BYTES = 1 << 20
# Allocations between young-generation collections during a pass (the default is 700).
GC_THRESHOLD = 20_000

_INF = float("inf")
_EVENTS, _ALERTS, _WATERMARK, _END, _ABORT = range(5)


class StreamBroken(Exception):
    """The streaming pass cannot reproduce the batch replay exactly; `disorder` when only the input order is the cause."""

    def __init__(self, message: str, *, disorder: bool = False) -> None:
        super().__init__(message)
        self.disorder = disorder


class _Aborted(Exception):
    """Another part of the pass failed; stop quietly."""


class _Shared:
    """The first failure of any thread, and the stages to stop when it happens."""

    def __init__(self, stages: Sequence[_Stage]) -> None:
        self.failure: BaseException | None = None
        self._stages = stages
        self._lock = threading.Lock()

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.failure is not None:
                return
            self.failure = exc
        for stage in self._stages:
            stage.inbox.put((_ABORT,))

    def check(self) -> None:
        if self.failure is not None:
            raise StreamBroken(_describe(self.failure)) from self.failure


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


class _View(dict):  # type: ignore[type-arg]
    """An event as handed to rules that only order by `@timestamp`: the parsed time in place of the text."""

    __slots__ = ("source",)


def _orders_only_by_timestamp(rule: RuleLike, program: Any) -> bool:
    """Whether `@timestamp` reaches the program only as its ordering time (the query never reads it)."""
    from deployer.eql import ast

    kibana = rule.kibana or {}
    if program.timestamp_field != "@timestamp" or kibana.get("tiebreaker_field") == "@timestamp":
        return False
    if kibana.get("event_category_override") == "@timestamp":
        return False
    return not any(
        f.name == "@timestamp" or f.name.startswith("@timestamp.") for f in ast.field_refs(program.query)
    )


class _Mapped:
    """A match whose events are the source events again (not the views the program saw)."""

    __slots__ = ("events", "join_keys")

    def __init__(self, events: list[Any], join_keys: list[Any]) -> None:
        self.events = events
        self.join_keys = join_keys


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
    if not isinstance(body, ast.Sequence) or body.maxspan is None:
        return None
    span = body.maxspan.millis
    # A match with a trailing missing step is held until its window has passed.
    return 2 * span if any(step.missing for step in body.expanded_steps()) else span


class _Stage:
    """One rule in the streaming pass: its thread, inbox, reorder buffer and results."""

    def __init__(self, evaluator: Evaluator, rule_id: str, target: bool) -> None:
        from deployer.eql.values import make_getter

        self.rule = evaluator.by_id[rule_id]
        self.rule_id = rule_id
        self.program = evaluator.program(self.rule)
        self.reads_events, self.reads_alerts = index_kinds(self.rule)
        self.sequence = getattr(self.program, "kind", None) == "sequence"
        self.lag = _lag(self.rule, self.program, self.reads_events, self.reads_alerts)
        self.inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.slots = threading.Semaphore(MAX_PENDING_CHUNKS)
        self.subscribers: list[tuple[_Stage, int]] = []
        self.ranks = 0  # how many dependencies feed alerts to this rule
        self.spool = _Spool() if target else None
        # Chunk watermarks are @timestamp values: they bound this rule's own order only then.
        self.event_times = self.program.timestamp_field == "@timestamp"
        # Every rule would parse each event's @timestamp again; the reader has parsed it already.
        # A rule that reads only events and never looks at @timestamp in its query gets a shallow
        # view holding the epoch ms (the evaluator's fast path); its matches are mapped back to
        # the events as read, so results and alerts are unchanged.
        self.views = (
            self.reads_events and not self.reads_alerts and _orders_only_by_timestamp(self.rule, self.program)
        )
        self._ts_get = make_getter(self.program.timestamp_field)
        self._sent = -_INF
        self.thread = threading.Thread(target=self._run, name=f"dac-run:{rule_id}", daemon=True)
        self.shared: _Shared | None = None

    # -- thread body

    def _run(self) -> None:
        assert self.shared is not None
        try:
            feed = self._feed_merged() if self.reads_alerts else self._feed_events()
            for match in self.program.run_sorted(feed):
                self._handle(match)
            # `| head N` stops reading early; the rest of the input still has to be taken in.
            for _ in feed:
                pass
            for sub, rank in self.subscribers:
                sub.inbox.put((_WATERMARK, rank, _INF))
        except _Aborted:
            pass
        except BaseException as exc:  # noqa: BLE001 - any failure hands the run to the batch replay
            self.shared.fail(exc)

    def _handle(self, match: Any) -> None:
        if self.views:
            match = _Mapped([None if e is None else e.source for e in match.events], match.join_keys)
        if self.spool is not None:
            self.spool.write(result_for(self.rule, match))
        if self.subscribers:
            docs = alerts_for_match(self.rule, match.events, sequence=self.sequence)
            if docs:
                for sub, rank in self.subscribers:
                    sub.inbox.put((_ALERTS, rank, docs))

    def _watermark(self, input_time: float) -> None:
        """Tell the rules reading this one's alerts how old its later alerts can be."""
        if self.lag is None or not self.subscribers:
            return
        mark = input_time - self.lag
        if mark > self._sent:
            self._sent = mark
            for sub, rank in self.subscribers:
                sub.inbox.put((_WATERMARK, rank, mark))

    # -- inputs

    def _feed_events(self) -> Iterator[dict[str, Any]]:
        get = self.inbox.get
        while True:
            msg = get()
            tag = msg[0]
            if tag == _EVENTS:
                self.slots.release()
                yield from msg[3] if self.views else msg[1]
                # The program asked for the next event: every match up to here has been handled.
                if self.event_times:
                    self._watermark(msg[2])
            elif tag == _END:
                return
            elif tag == _ABORT:
                raise _Aborted

    def _doc_time(self, doc: dict[str, Any]) -> int:
        """The document's time as the program orders it (its `timestamp_field`)."""
        from deployer.eql.values import parse_timestamp, values_of

        raw = self._ts_get(doc)
        if raw.__class__ is list:
            raw = values_of(raw)
            raw = raw[0] if raw else None
        if raw is None:
            raise StreamBroken(f"{self.rule_id}: a document without {self.program.timestamp_field}")
        try:
            return parse_timestamp(raw)
        except (ValueError, TypeError, OverflowError) as exc:
            raise StreamBroken(f"{self.rule_id}: {exc}") from None

    def _feed_merged(self) -> Iterator[dict[str, Any]]:
        """Events and/or dependency alerts in the batch replay's order, released by watermarks."""
        # The batch replay concatenates the dependencies' alert lists (each sorted by @timestamp)
        # after the events, sorts by @timestamp when events are mixed in, then by the rule's own
        # time; a key of (rule time, @timestamp, rank, arrival) or (rule time, rank, @timestamp,
        # arrival) reproduces that order.
        mixed = self.reads_events
        heap: list[tuple[Any, ...]] = []
        marks = [-_INF] * self.ranks
        events_mark = -_INF if self.reads_events else _INF
        last: tuple[Any, ...] | None = None
        arrival = 0
        get = self.inbox.get

        def push(doc: dict[str, Any], rank: int) -> None:
            nonlocal arrival
            arrival += 1
            at = self._doc_time(doc)
            tk = time_key(doc)
            key = (at, tk, rank, arrival) if mixed else (at, rank, tk, arrival)
            if last is not None and key < last:
                raise StreamBroken(
                    f"{self.rule_id}: an input document arrived after later ones were evaluated"
                )
            heapq.heappush(heap, (*key, doc))

        while True:
            release = min(min(marks, default=_INF), events_mark)
            while heap and heap[0][0] < release:
                item = heapq.heappop(heap)
                last = item[:4]
                yield item[4]
            if release == _INF:
                return
            self._watermark(release)
            msg = get()
            tag = msg[0]
            if tag == _EVENTS:
                self.slots.release()
                for event in msg[1]:
                    push(event, -1)
                if self.event_times:
                    events_mark = msg[2]
            elif tag == _ALERTS:
                for doc in msg[2]:
                    push(doc, msg[1])
            elif tag == _WATERMARK:
                if msg[2] > marks[msg[1]]:
                    marks[msg[1]] = msg[2]
            elif tag == _END:
                events_mark = _INF
            elif tag == _ABORT:
                raise _Aborted


def stream_replay(
    evaluator: Evaluator,
    targets: Sequence[str],
    events: Iterable[tuple[Event, int]],
    *,
    name: str,
    progress: Callable[[int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Evaluate the targets over time-ordered (event, epoch ms) pairs in one pass; results in batch order.

    Raises `EventsError` on bad input and `StreamBroken` when only the batch replay can give the
    answer. The rules must have been prepared (`Evaluator.prepare`). Everything is read before the
    first result is returned.
    """
    order = evaluator.order(targets)
    wanted = set(targets)
    stages = {rule_id: _Stage(evaluator, rule_id, rule_id in wanted) for rule_id in order}
    for stage in stages.values():
        if stage.reads_alerts:
            deps = dependencies(stage.rule_id, evaluator.by_id)
            stage.ranks = len(deps)
            for rank, dep in enumerate(deps):
                stages[dep].subscribers.append((stage, rank))
    all_stages = list(stages.values())
    readers = [s for s in all_stages if s.reads_events]
    shared = _Shared(all_stages)
    # The reader sees @timestamp; rules ordered by another field check their own order.
    ordered_by_timestamp = any(s.event_times for s in readers)
    for stage in all_stages:
        stage.shared = shared
        stage.thread.start()
    # Events are acyclic JSON that die young, but the default collector thresholds make it walk the
    # events in flight thousands of times per million events; modules, rules and the field
    # registry are long-lived and frozen out of collections for the pass.
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, threshold[1], threshold[2])

    use_views = any(s.views for s in readers)

    def send(chunk: list[Any], times: list[int]) -> None:
        views: list[_View] = []
        if use_views:
            for event, ts in zip(chunk, times, strict=True):
                view = _View(event)
                view["@timestamp"] = ts
                view.source = event
                views.append(view)
        message = (_EVENTS, chunk, times[-1], views)
        for stage in readers:
            while not stage.slots.acquire(timeout=0.2):
                shared.check()
            stage.inbox.put(message)

    try:
        chunk: list[Any] = []
        times: list[int] = []
        previous = -_INF
        count = 0
        for event, ts in events:
            if ts < previous and ordered_by_timestamp:
                raise StreamBroken(f"{name}:{event.line}: @timestamp goes back in time", disorder=True)
            previous = ts
            chunk.append(event)
            times.append(ts)
            if len(chunk) >= CHUNK_EVENTS:
                send(chunk, times)
                chunk, times = [], []
                shared.check()
                count += CHUNK_EVENTS
                if progress is not None and count % (CHUNK_EVENTS * 20) == 0:
                    progress(count)
        if chunk:
            send(chunk, times)
        for stage in readers:
            stage.inbox.put((_END,))
        for stage in all_stages:
            stage.thread.join()
        shared.check()
    except BaseException as exc:
        shared.fail(exc if isinstance(exc, Exception) else StreamBroken("interrupted"))
        for stage in all_stages:
            stage.thread.join()
        raise
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
    for rule_id in order:
        spool = stages[rule_id].spool
        if spool is not None:
            yield from spool.read()


_DONE = object()
# Text held in memory per sorted run when out-of-order input is sorted on disk.
RUN_BYTES = 32 << 20


def replay_file(
    rules: Sequence[RuleLike],
    path: str,
    *,
    library: Sequence[RuleLike] = (),
    field_types: FieldTypeLookup | None = None,
    stdin: IO[bytes] | None = None,
    progress: Callable[[int], None] | None = None,
    on_fallback: Callable[[str], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Replay an events file (`-` for stdin) through the rules, streaming; out-of-order input is sorted first.

    Yields the same results, in the same order, as `replay.replay` over the whole file; raises
    `EventsError` (bad input, reported before any rule problem, as when the file was read first)
    or `EvaluationError`. Nothing is yielded before the whole file has been read. `on_fallback`
    hears why the single streaming pass was not enough.
    """
    name = display_name(path)
    evaluator = Evaluator([*rules, *library])
    targets = [r.rule_id for r in rules]
    with _seekable(path, stdin) as source:
        try:
            evaluator.prepare(targets)
        except EvaluationError:
            # The file used to be read before the rules compiled: a bad line still wins.
            for _ in iter_timed_events(source, field_types=field_types, name=name):
                pass
            raise
        try:
            yield from _first_then_rest(
                stream_replay(
                    evaluator,
                    targets,
                    iter_timed_events(source, field_types=field_types, name=name),
                    name=name,
                    progress=progress,
                )
            )
            return
        except StreamBroken as exc:
            broken = exc
        if broken.disorder and _sortable(evaluator, targets):
            if on_fallback is not None:
                on_fallback(f"{broken}; sorting by @timestamp on disk")
            try:
                with tempfile.TemporaryDirectory(prefix="dac-run-sort-") as workdir:
                    events = _sorted_events(source, name, field_types, Path(workdir))
                    yield from _first_then_rest(
                        stream_replay(evaluator, targets, events, name=name, progress=progress)
                    )
                return
            except StreamBroken as exc:
                broken = exc
        if on_fallback is not None:
            on_fallback(f"{broken}; replaying in memory")
        # The batch replay, whole file in memory: the reference the streaming passes reproduce.
        batch = read_events(source, field_types=field_types, name=name)
        for outcome in evaluator.evaluate(targets, batch):
            for match in outcome.matches:
                yield result_for(outcome.rule, match)


def _first_then_rest(results: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Run the pass to its first result before yielding anything, so a `StreamBroken` comes out first."""
    first = next(results, _DONE)
    if first is _DONE:
        return
    yield first
    yield from results


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
def _seekable(path: str, stdin: IO[bytes] | None) -> Iterator[str]:
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
