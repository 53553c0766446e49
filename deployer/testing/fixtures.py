"""Run each rule's fixture tests (`metadata.tests`): evaluate the rule over its events file, compare.

`expect: match` passes when the matched sequences, each named by its events' `event.id` in
sequence order, are exactly the `sequences` listed (as a multiset: order between sequences does not
matter, a duplicate match does). `expect: no_match` passes when nothing matches. A rule over other
rules' alerts is evaluated through its dependencies on the same events.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from deployer.testing.evaluate import Compiler, EvaluationError, Evaluator, RuleLike, compile_rule, event_ref
from deployer.testing.events import EventsError, FieldTypeLookup, default_field_types, read_events

if TYPE_CHECKING:
    from deployer.exceptions.model import Catalogue

Status = Literal["pass", "fail", "error"]
Seq = tuple[str | None, ...]


@dataclass
class TestResult:
    """The outcome of one fixture test of one rule."""

    __test__ = False  # not a pytest test class

    rule_id: str
    name: str
    status: Status
    path: str = ""
    events: str = ""
    expect: str = ""
    expected: list[list[str | None]] = field(default_factory=list)
    actual: list[list[str | None]] = field(default_factory=list)
    message: str = ""
    duration: float = 0.0
    line: int | None = None  # where the test entry is written in the rule file
    column: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view of the result."""
        return {
            "rule_id": self.rule_id,
            "name": self.name,
            "status": self.status,
            "path": self.path,
            "events": self.events,
            "expect": self.expect,
            "expected": self.expected,
            "actual": self.actual,
            "message": self.message,
            "duration": round(self.duration, 6),
            "line": self.line,
            "column": self.column,
        }


def _norm(value: Any) -> str | None:
    # YAML may read an unquoted id as a number; compare ids by their text.
    return None if value is None else str(value)


def _seq_text(seq: Sequence[str | None]) -> str:
    return "[" + ", ".join("null" if v is None else v for v in seq) + "]"


def describe_difference(expected: list[Seq], actual: list[Seq]) -> str:
    """A short human diff between expected and actual match lists."""
    exp, act = Counter(expected), Counter(actual)
    missing = list((exp - act).elements())
    unexpected = list((act - exp).elements())
    lines: list[str] = []
    if missing:
        lines.append("expected but not matched:")
        lines.extend(f"  - {_seq_text(s)}" for s in sorted(missing, key=_sort_key))
    if unexpected:
        lines.append("matched but not expected:")
        lines.extend(f"  + {_seq_text(s)}" for s in sorted(unexpected, key=_sort_key))
    return "\n".join(lines)


def _sort_key(seq: Seq) -> tuple[str, ...]:
    return tuple("" if v is None else v for v in seq)


class _TestSpecError(Exception):
    pass


def _expected_sequences(test: dict[str, Any]) -> tuple[str, list[Seq]]:
    expect = test.get("expect")
    if expect not in ("match", "no_match"):
        raise _TestSpecError(f"expect must be 'match' or 'no_match', got {expect!r}")
    sequences = test.get("sequences")
    if expect == "no_match":
        if sequences:
            raise _TestSpecError("a no_match test lists sequences; remove them or use expect: match")
        return expect, []
    if not isinstance(sequences, list) or not sequences:
        raise _TestSpecError(
            "expect: match needs `sequences`: the expected matches, each a list of event.id in sequence order"
        )
    out: list[Seq] = []
    for i, seq in enumerate(sequences):
        if isinstance(seq, str | int):
            seq = [seq]  # a one-event rule's match may be written as a bare id
        if not isinstance(seq, list) or not seq:
            raise _TestSpecError(f"sequences[{i}] must be a non-empty list of event.id values")
        out.append(tuple(_norm(v) for v in seq))
    return expect, out


def run_rule_tests(
    rules: Sequence[RuleLike],
    *,
    library: Sequence[RuleLike] = (),
    field_types: FieldTypeLookup | None | Literal["default"] = "default",
    on_result: Callable[[TestResult], None] | None = None,
    compiler: Compiler = compile_rule,
    exceptions: Catalogue | None = None,
) -> list[TestResult]:
    """Run every `metadata.tests` entry of the rules; `library` holds extra rules to resolve `depends_on` only.

    `exceptions` holds the exception lists the rules reference; each rule's items drop the
    events they match before its query sees them, as Kibana does.
    """
    types = default_field_types() if field_types == "default" else field_types
    evaluator = Evaluator([*rules, *library], compiler=compiler, exceptions=exceptions, field_types=types)

    def variant(**options: Any) -> Evaluator:
        # The same rules with some or all exception items left off: `suppressed_by` tests prove
        # the named items are what stops the match, not the events.
        return Evaluator(
            [*rules, *library], compiler=compiler, exceptions=exceptions, field_types=types, **options
        )

    event_cache: dict[Path, list[dict[str, Any]] | EventsError] = {}
    results: list[TestResult] = []
    for rule in rules:
        rule_path = Path(getattr(rule, "path", "") or ".")
        for index, test in enumerate(_tests_of(rule)):
            result = _run_one(rule, rule_path, index, test, evaluator, variant, event_cache, types)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def count_tests(rules: Sequence[RuleLike]) -> int:
    """How many fixture tests the rules declare (for progress display)."""
    return sum(len(_tests_of(rule)) for rule in rules)


def _tests_of(rule: RuleLike) -> list[Any]:
    """A rule's `metadata.tests` entries (none when the value is not a list)."""
    tests = (rule.metadata or {}).get("tests") or []
    return tests if isinstance(tests, list) else []


def _run_one(
    rule: RuleLike,
    rule_path: Path,
    index: int,
    test: Any,
    evaluator: Evaluator,
    variant: Callable[..., Evaluator],
    cache: dict[Path, list[dict[str, Any]] | EventsError],
    types: FieldTypeLookup | None,
) -> TestResult:
    started = time.perf_counter()
    name = str(test.get("name") or f"test {index + 1}") if isinstance(test, dict) else f"test {index + 1}"
    result = TestResult(rule_id=rule.rule_id, name=name, status="error", path=str(rule_path))
    position = getattr(rule, "position", None)
    if position is not None:
        try:
            result.line, result.column = position(("metadata", "tests", index))
        except Exception:  # noqa: BLE001 - a position only decorates the report
            pass
    try:
        if not isinstance(test, dict):
            raise _TestSpecError("a test must be a mapping with name, events, expect")
        result.expect, expected = _expected_sequences(test)
        result.expected = [list(s) for s in expected]
        events_rel = test.get("events")
        if not isinstance(events_rel, str) or not events_rel:
            raise _TestSpecError("events must name an ndjson file relative to the rule file")
        events_path = (rule_path.parent / events_rel).resolve()
        result.events = events_rel
        events = _load(events_path, rule_path.parent / events_rel, cache, types)
        _check_unique_ids(events, rule_path.parent / events_rel)
        actual: list[Seq] = []
        for outcome in evaluator.evaluate([rule.rule_id], events):
            for match in outcome.matches:
                actual.append(tuple(_norm(event_ref(e)) for e in match.events))
        result.actual = [list(s) for s in actual]
        suppressed = _suppressed_by(test)
        if suppressed and not actual:
            problem = _check_suppression(rule, suppressed, events, evaluator, variant)
            if problem:
                result.status = "fail"
                result.message = problem
                result.duration = time.perf_counter() - started
                return result
        if Counter(actual) == Counter(expected):
            result.status = "pass"
        else:
            result.status = "fail"
            if result.expect == "no_match":
                result.message = f"expected no match, got {len(actual)}:\n" + describe_difference([], actual)
            else:
                result.message = describe_difference(expected, actual)
    except _TestSpecError as exc:
        result.message = f"bad test definition: {exc}"
    except EventsError as exc:
        result.message = str(exc)
    except EvaluationError as exc:
        result.message = str(exc)
    except Exception as exc:  # noqa: BLE001 - one test's failure never stops the others
        result.message = f"cannot run this test: {type(exc).__name__}: {exc}"
    result.duration = time.perf_counter() - started
    return result


def _suppressed_by(test: dict[str, Any]) -> list[str]:
    names = test.get("suppressed_by")
    if names is None:
        return []
    if test.get("expect") != "no_match":
        raise _TestSpecError("suppressed_by applies to expect: no_match (the exception stops the match)")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise _TestSpecError("suppressed_by must be a list of exception item_ids")
    return names


def _check_suppression(
    rule: RuleLike,
    names: list[str],
    events: Sequence[dict[str, Any]],
    evaluator: Evaluator,
    variant: Callable[..., Evaluator],
) -> str | None:
    """Why the named exception items are not what suppresses the rule's match (None when they are).

    The rule must match the events with its exceptions left off, and again with all but any one
    of the named items: each of them is needed.
    """
    compiled = evaluator.exceptions_of(rule.rule_id)
    live = {item.item_id for item in (compiled.items if compiled else [])}
    unknown = [n for n in names if n not in live]
    if unknown:
        return (
            f"suppressed_by names {unknown[0]!r}, which is not a live exception item of this rule "
            f"(its items: {', '.join(sorted(live)) or 'none'})"
        )

    def matches(ev: Evaluator) -> bool:
        return any(o.matches for o in ev.evaluate([rule.rule_id], events))

    if not matches(variant(apply_exceptions=False)):
        return "the rule does not match these events even without its exceptions; the test proves nothing"
    for name in names:
        if not matches(variant(without_items=[name])):
            return f"exception item {name!r} is not needed: the rule stays silent without it"
    return None


def _load(
    resolved: Path,
    shown: Path,
    cache: dict[Path, list[dict[str, Any]] | EventsError],
    types: FieldTypeLookup | None,
) -> list[dict[str, Any]]:
    cached = cache.get(resolved)
    if cached is None:
        if not resolved.is_file():
            cached = EventsError(
                str(shown), None, "events file not found (paths are relative to the rule file)"
            )
        else:
            try:
                cached = list(read_events(resolved, field_types=types))
            except EventsError as exc:
                exc.source = str(shown)
                cached = exc
        cache[resolved] = cached
    if isinstance(cached, EventsError):
        raise cached
    return cached


def _check_unique_ids(events: Sequence[dict[str, Any]], shown: Path) -> None:
    seen: dict[str, int] = {}
    for event in events:
        ref = event_ref(event)
        if ref is None or str(ref).startswith("line:"):
            continue
        key = str(ref)
        line = getattr(event, "line", 0)
        if key in seen:
            raise EventsError(
                str(shown),
                line,
                f"duplicate event.id {key!r} (first on line {seen[key]}); tests name events by event.id",
            )
        seen[key] = line
