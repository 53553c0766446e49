"""Evaluate a set of rules over events offline, rules over alerts after the rules they depend on.

A rule whose `index` addresses only the Security alerts indices (`.alerts-security.alerts-*`) sees
the alert documents synthesised from the matches of its `metadata.depends_on` rules (and of their
dependencies in turn, since those alerts sit in the same index); every other rule sees the events.
A rule with both kinds of pattern sees both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from deployer.eql.values import parse_timestamp
from deployer.testing.alerts import alerts_for_matches, get_path, is_alerts_pattern

if TYPE_CHECKING:
    from deployer.exceptions.filter import RuleExceptions, TypeLookup
    from deployer.exceptions.model import Catalogue


class RuleLike(Protocol):
    """What the testing package needs from a loaded rule file."""

    rule_id: str
    kibana: dict[str, Any]
    metadata: dict[str, Any]


class EvaluationError(Exception):
    """A rule cannot be evaluated offline (bad dependency graph, query that does not compile...)."""

    def __init__(self, rule_id: str | None, message: str) -> None:
        self.rule_id = rule_id
        self.message = message
        super().__init__(f"{rule_id}: {message}" if rule_id else message)


@dataclass(frozen=True)
class Refusal:
    """A rule left out of a run because it cannot be evaluated, and why.

    ``message`` names the construct and its position in the rule file when the query has one
    (``cannot be evaluated offline: path:line:col: not supported offline: ...``).
    """

    rule_id: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule_id}: {self.message}"


Compiler = Callable[[RuleLike], Any]
Refused = Callable[[Refusal], None]
# Kibana's default `max_signals`, the EQL request `size` of a rule that does not set one.
DEFAULT_MAX_SIGNALS = 100


def depends_on(rule: RuleLike) -> list[str]:
    """The rule ids a rule's `metadata.depends_on` names (empty when none)."""
    deps = (rule.metadata or {}).get("depends_on") or []
    return [str(d) for d in deps] if isinstance(deps, list) else [str(deps)]


def index_kinds(rule: RuleLike) -> tuple[bool, bool]:
    """(reads events, reads alerts) from the rule's index patterns."""
    index = (rule.kibana or {}).get("index") or []
    if isinstance(index, str):
        index = [index]
    alerts = [p for p in index if isinstance(p, str) and is_alerts_pattern(p)]
    events = [p for p in index if not (isinstance(p, str) and is_alerts_pattern(p))]
    # A rule over alerts that does not say so in `index` still declares it through depends_on.
    if not index:
        return (not depends_on(rule), bool(depends_on(rule)))
    return bool(events), bool(alerts)


def closure(targets: Iterable[str], by_id: Mapping[str, RuleLike]) -> list[str]:
    """The targets plus every rule they depend on, transitively, in dependency order (dependencies first)."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(rule_id: str, path: list[str]) -> None:
        mark = state.get(rule_id)
        if mark == 2:
            return
        if mark == 1:
            cycle = path[path.index(rule_id) :] + [rule_id]
            raise EvaluationError(rule_id, "dependency cycle: " + " -> ".join(cycle))
        rule = by_id[rule_id]
        state[rule_id] = 1
        for dep in sorted(set(depends_on(rule))):
            if dep not in by_id:
                raise EvaluationError(
                    rule_id,
                    f"depends_on names {dep!r}, which is not among the loaded rules "
                    "(load the rule file it lives in too, or fix the rule_id)",
                )
            visit(dep, [*path, rule_id])
        state[rule_id] = 2
        order.append(rule_id)

    for target in sorted(set(targets)):
        if target not in by_id:
            raise EvaluationError(target, "no such rule among the loaded rules")
        visit(target, [])
    return order


def dependencies(rule_id: str, by_id: Mapping[str, RuleLike]) -> list[str]:
    """Every rule a rule depends on, transitively (not including itself)."""
    return [r for r in closure([rule_id], by_id) if r != rule_id]


_SEQUENCE_RE = re.compile(r"^\s*(sequence|sample)\b", re.IGNORECASE)
_COMMENT_RE = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)


def is_sequence_query(query: str) -> bool:
    """Whether a query is a sequence (or sample): Kibana writes building blocks plus a shell for those."""
    return bool(_SEQUENCE_RE.match(_COMMENT_RE.sub(" ", query)))


def compile_rule(rule: RuleLike, window: int | None = None) -> Any:
    """Compile a rule's query with its timestamp and tiebreaker settings into an evaluator program.

    `window` (ms): bound sequences to one search's span (`engine.compile_query`); None for the
    whole input, as Elasticsearch's EQL search over all the events (`dac run`).
    """
    from deployer.eql import engine

    kibana = rule.kibana or {}
    query = kibana.get("query")
    if not isinstance(query, str) or not query.strip():
        raise EvaluationError(rule.rule_id, "the rule has no query")
    # Kibana passes `timestamp_field`, `tiebreaker_field` and `event_category_override` to the EQL
    # search, and `max_signals` as its `size` (which bounds samples); `timestamp_override` only
    # moves the search window, which offline replay does not have.
    max_signals = kibana.get("max_signals")
    return engine.compile_query(
        query,
        timestamp_field=kibana.get("timestamp_field") or "@timestamp",
        tiebreaker_field=kibana.get("tiebreaker_field") or None,
        category_field=kibana.get("event_category_override") or "event.category",
        size=max_signals if isinstance(max_signals, int) and max_signals > 0 else DEFAULT_MAX_SIGNALS,
        window=window,
    )


@dataclass
class RuleOutcome:
    """A rule's matches over one input, and the alert documents Kibana would write for them."""

    rule: RuleLike
    matches: list[Any]
    alerts: list[dict[str, Any]] = field(default_factory=list)


class Evaluator:
    """Evaluates rules over one set of events, compiling each rule once and caching dependency results."""

    def __init__(
        self,
        rules: Sequence[RuleLike],
        *,
        compiler: Compiler = compile_rule,
        exceptions: Catalogue | None = None,
        field_types: TypeLookup | None = None,
        apply_exceptions: bool = True,
        without_items: Collection[str] = (),
    ) -> None:
        self.by_id: dict[str, RuleLike] = {}
        self._duplicates: set[str] = set()
        for rule in rules:
            if rule.rule_id in self.by_id and self.by_id[rule.rule_id] is not rule:
                # Two files with one rule_id: evaluating either could silently run the other's query.
                self._duplicates.add(rule.rule_id)
            self.by_id.setdefault(rule.rule_id, rule)
        self._compiler = compiler
        self._programs: dict[str, Any] = {}
        self._catalogue = exceptions
        self._field_types = field_types
        self._apply_exceptions = apply_exceptions
        self._without_items = frozenset(without_items)  # item_ids left out (fixture tests' suppressed_by)
        self._exceptions: dict[str, RuleExceptions | None] = {}

    def admits(self, rule_id: str) -> Callable[[Mapping[str, Any]], bool] | None:
        """The rule's event pre-filter: the one place that decides whether a document reaches its program.

        Kibana puts a rule's exception items in the `must_not` of the EQL search filter, so an
        excepted document is gone before any sequence step sees it (deployer.exceptions.filter).
        Returns None when every document is fed (no exceptions); both the batch replay
        (`evaluate`) and the streaming pass (`deployer.testing.stream`) call it per rule.
        """
        compiled = self.exceptions_of(rule_id)
        if compiled is None or not self._apply_exceptions:
            return None
        excepts = compiled.excepts
        return lambda doc: not excepts(doc)

    def exceptions_of(self, rule_id: str) -> RuleExceptions | None:
        """The rule's compiled exception items (None without any); raises on an undeclared list."""
        if rule_id not in self._exceptions:
            from deployer.exceptions import filter as exceptions_filter
            from deployer.exceptions.model import Catalogue, referenced_list_ids

            rule = self.by_id[rule_id]
            catalogue = self._catalogue or Catalogue()
            missing = [lid for lid in referenced_list_ids(rule) if lid not in catalogue.lists]
            if missing:
                raise EvaluationError(
                    rule_id,
                    f"exceptions_list names {missing[0]!r}, which no exception list file declares "
                    "(exception lists live in exceptions/ directories beside the rules)",
                )
            compiled = exceptions_filter.for_rule(rule, catalogue, self._field_types)
            if compiled is not None and self._without_items:
                compiled.items = [i for i in compiled.items if i.item_id not in self._without_items]
            self._exceptions[rule_id] = compiled if compiled is None or compiled.items else None
        return self._exceptions[rule_id]

    def program(self, rule: RuleLike) -> Any:
        """The compiled program for a rule (compiled once)."""
        prog = self._programs.get(rule.rule_id)
        if prog is None:
            try:
                prog = self._compiler(rule)
            except EvaluationError:
                raise
            except Exception as exc:  # noqa: BLE001 - any compile failure is reported against the rule
                raise EvaluationError(rule.rule_id, _compile_message(rule, exc)) from exc
            self._programs[rule.rule_id] = prog
        return prog

    def triage(self, targets: Iterable[str]) -> tuple[list[str], list[Refusal]]:
        """Split the targets into those that can be evaluated and those refused, with the reason.

        A target is refused when its own query does not compile offline, or when something it
        depends on cannot be evaluated (bad dependency graph, a dependency refused in turn). Every
        other target is kept, so one bad rule never stops the rest.
        """
        kept: list[str] = []
        refused: list[Refusal] = []
        for target in sorted(set(targets)):
            try:
                self.prepare([target])
            except EvaluationError as exc:
                refused.append(self.refusal(target, exc))
            else:
                kept.append(target)
        return kept, refused

    def refusal(self, target: str, exc: EvaluationError) -> Refusal:
        """The refusal of ``target`` for an error raised while preparing or evaluating it (or a dependency)."""
        rule = self.by_id.get(target)
        path = str(getattr(rule, "path", "") or "")
        if exc.rule_id is None or exc.rule_id == target:
            return Refusal(target, path, exc.message)
        return Refusal(target, path, f"depends on {exc.rule_id}, which cannot be evaluated: {exc.message}")

    def prepare(self, targets: Iterable[str]) -> None:
        """Check the dependency graph and compile every rule the targets need, before any evaluation."""
        for rule_id in self.order(targets):
            self.program(self.by_id[rule_id])
            self.admits(rule_id)

    def order(self, targets: Iterable[str]) -> list[str]:
        """The targets and what they depend on, dependencies first; raises `EvaluationError` on a bad graph."""
        order = closure(targets, self.by_id)
        for rule_id in order:
            if rule_id in self._duplicates:
                raise EvaluationError(rule_id, "more than one loaded rule file has this rule_id")
            rule = self.by_id[rule_id]
            if index_kinds(rule)[1] and not depends_on(rule):
                # Kibana would show it every alert in the space; offline there is no such set, and
                # an empty input would pass every no_match test silently.
                raise EvaluationError(
                    rule_id,
                    "reads the alerts index but has no metadata.depends_on; name the rules whose "
                    "alerts it reads so they can be evaluated first",
                )
        return order

    def evaluate(
        self, targets: Iterable[str], events: Sequence[dict[str, Any]], *, on_refused: Refused | None = None
    ) -> Iterator[RuleOutcome]:
        """Evaluate the targets (and what they depend on) over the events; yield outcomes in dependency order.

        A rule that fails while it runs raises `EvaluationError`, unless ``on_refused`` is given:
        then that rule, and every target that depends on it, is reported there and the others go on.
        """
        wanted = set(targets)
        order = self.order(wanted)
        # Alerts are synthesised only for rules something else reads them from.
        feeds = {dep for rule_id in order for dep in depends_on(self.by_id[rule_id])}
        outcomes: dict[str, RuleOutcome] = {}
        failed: dict[str, EvaluationError] = {}
        for rule_id in order:
            if on_refused is not None:
                cause = next((failed[d] for d in dependencies(rule_id, self.by_id) if d in failed), None)
                if cause is not None:
                    failed[rule_id] = cause
                    if rule_id in wanted:
                        on_refused(self.refusal(rule_id, cause))
                    continue
                try:
                    outcome = self._evaluate_one(rule_id, events, outcomes, feeds)
                except EvaluationError as exc:
                    failed[rule_id] = exc
                    if rule_id in wanted:
                        on_refused(self.refusal(rule_id, exc))
                    continue
            else:
                outcome = self._evaluate_one(rule_id, events, outcomes, feeds)
            outcomes[rule_id] = outcome
            if rule_id in wanted:
                yield outcome

    def _evaluate_one(
        self,
        rule_id: str,
        events: Sequence[dict[str, Any]],
        outcomes: dict[str, RuleOutcome],
        feeds: set[str],
    ) -> RuleOutcome:
        """One rule over the events and its dependencies' alerts (already in ``outcomes``)."""
        rule = self.by_id[rule_id]
        reads_events, reads_alerts = index_kinds(rule)
        stream: list[dict[str, Any]] = list(events) if reads_events else []
        if reads_alerts:
            for dep in dependencies(rule_id, self.by_id):
                stream.extend(outcomes[dep].alerts)
            if reads_events:
                # Events and alerts share one time line; a stable sort keeps file order on ties.
                stream.sort(key=time_key)
        program = self.program(rule)
        if getattr(program, "kind", None) == "sample":
            # A sample picks hits in document order, which offline is time order (file order on
            # ties): the order the streaming replay feeds it, even when the file is not sorted.
            stream.sort(key=time_key)
        admits = self.admits(rule_id)
        if admits is not None:
            stream = [doc for doc in stream if admits(doc)]
        try:
            matches = list(program.run(stream))
        except EvaluationError:
            raise
        except Exception as exc:  # noqa: BLE001 - an evaluator failure is reported against the rule
            raise EvaluationError(rule_id, f"evaluation failed: {type(exc).__name__}: {exc}") from exc
        outcome = RuleOutcome(rule, matches)
        if rule_id in feeds:
            kind = getattr(self.program(rule), "kind", None)
            sequence = (
                kind in ("sequence", "sample")
                if kind
                else is_sequence_query(str(rule.kibana.get("query", "")))
            )
            try:
                outcome.alerts = alerts_for_matches(rule, matches, sequence=sequence)
            except Exception as exc:  # noqa: BLE001 - as above: reported against the rule
                raise EvaluationError(
                    rule_id, f"alert synthesis failed: {type(exc).__name__}: {exc}"
                ) from exc
            outcome.alerts.sort(key=time_key)
        return outcome


def _compile_message(rule: RuleLike, exc: Exception) -> str:
    """Why a query does not compile, pointing into the rule file when the error has a position."""
    from deployer.eql.errors import EqlError, EqlUnsupportedError

    what = "cannot be evaluated offline" if isinstance(exc, EqlUnsupportedError) else "query does not compile"
    if not isinstance(exc, EqlError):
        # Not a query error but a failure inside the compiler: name it so it can be reported.
        return f"{what}: {type(exc).__name__}: {exc}"
    if exc.line is not None and hasattr(rule, "query_position"):
        try:
            line, col = rule.query_position(exc.line, exc.column or 1)
        except Exception:  # noqa: BLE001 - a position is a convenience; the message stands without it
            return f"{what}: {exc}"
        tail = f" (hint: {exc.hint})" if exc.hint else ""
        return f"{what}: {getattr(rule, 'path', '')}:{line}:{col}: {exc.message}{tail}"
    return f"{what}: {exc}"


def time_key(doc: dict[str, Any]) -> Any:
    """How events and alerts are merged onto one time line: `@timestamp` in epoch ms (0 when unparsable)."""
    try:
        return parse_timestamp(doc.get("@timestamp"))
    except (ValueError, TypeError, OverflowError):
        return 0


def event_ref(doc: dict[str, Any] | None) -> str | int | None:
    """How a matched document is named in results: its `event.id` (an alert carries its source's)."""
    if doc is None:
        return None
    eid = get_path(doc, "event.id")
    if eid is not None:
        return eid
    # A shell alert holds only the fields its events share, so usually no event.id: name it by uuid.
    uuid = get_path(doc, "kibana.alert.uuid")
    if uuid is not None:
        return uuid
    line = getattr(doc, "line", None)
    return f"line:{line}" if line is not None else None
