"""Offline EQL evaluator with Elasticsearch semantics: compile a query once, run it over events.

Semantics follow Elasticsearch EQL (see docs/eql-evaluator.md): ``==`` is case-sensitive, ``:``
is case-insensitive with ``*``/``?`` wildcards, ``like~``/``in~``/``regex~`` and ``fn~`` are the
insensitive forms, a multi-valued field matches when any value matches (each leaf condition is
quantified on its own), a negated leaf means "no value matches" (so a document without the field
matches ``not`` and ``!=``), and comparisons or functions with a null operand are null (false in a
filter). Constructs that cannot be evaluated faithfully raise ``EqlUnsupportedError``.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from deployer.eql import ast
from deployer.eql.errors import EqlError, EqlSyntaxError, EqlUnsupportedError
from deployer.eql.functions import check_literal_args, lookup
from deployer.eql.patterns import regex_matcher, wildcards_matcher
from deployer.eql.sample import DEFAULT_MAX_SAMPLES_PER_KEY, DEFAULT_SIZE, SampleMatcher
from deployer.eql.sequence import MissingEventCheck, SequenceMatcher
from deployer.eql.values import (
    KEYWORD_TYPES,
    MISSING,
    FieldType,
    compare,
    equals,
    es_string,
    field_type,
    first_value,
    format_timestamp,
    java_div,
    java_mod,
    make_getter,
    parse_timestamp,
    values_of,
    version_key,
)

__all__ = ["Match", "Program", "Runner", "compile_query"]

Pred = Callable[[dict], bool]
Reader = Callable[[dict], Any]
Env = dict[str, Any]
ValueFn = Callable[[Env], Any]


@dataclass(slots=True)
class Match:
    """One result: the matched events (``None`` for a missing-event placeholder) and the join keys."""

    events: list[dict | None]
    join_keys: list[Any] = field(default_factory=list)


def _const(value: Any) -> ValueFn:
    return lambda env: value


def _sort_token(v: Any) -> tuple:
    # Orders join-key values of mixed types deterministically (None first, then by type).
    if v is None:
        return (0, 0, 0)
    if isinstance(v, bool):
        return (1, 0, v)
    if isinstance(v, int | float):
        return (1, 1, v)
    if isinstance(v, str):
        return (1, 2, v)
    return (1, 3, repr(v))


def _key_sort(key: tuple) -> tuple:
    return tuple(_sort_token(v) for v in key)


class _Compiler:
    """Turns AST nodes into closures over events (predicates) or over bound values (expressions)."""

    def __init__(self, field_types: dict[str, Any] | None, category_field: str) -> None:
        self.types: dict[str, FieldType] = {}
        for name, spec in (field_types or {}).items():
            self.types[name] = field_type(spec, name)
        self.category_field = category_field
        self._readers: dict[str, Reader] = {}

    # ---------------------------------------------------------------- fields

    def ftype(self, name: str) -> FieldType:
        """The mapping type of ``name`` with aliases followed."""
        seen = set()
        ft = self.types.get(name)
        while ft is not None and ft.alias_of and name not in seen:
            seen.add(name)
            name = ft.alias_of
            ft = self.types.get(name)
        return ft if ft is not None else FieldType(name)

    def reader(self, name: str) -> Reader:
        """Reader returning None (no value), a scalar, or a list of non-null indexed values."""
        cached = self._readers.get(name)
        if cached is not None:
            return cached
        ft = self.ftype(name)
        conv = ft.coercer()
        null_value = ft.null_value
        get = make_getter(ft.name, keep_missing=null_value is not None)

        if null_value is not None:
            nv = conv(null_value) if conv else null_value

            def read(event: dict) -> Any:
                raw = get(event)
                if raw is None:
                    # An explicit JSON null is indexed as the mapping's null_value.
                    return nv
                if raw.__class__ is list:
                    out = [nv if x is None else x for x in raw]
                    out = [conv(x) for x in values_of(out)] if conv else values_of(out)
                    return [x for x in out if x is not None]
                if raw is MISSING:
                    return None
                return conv(raw) if conv else raw

        elif conv is None:

            def read(event: dict) -> Any:
                raw = get(event)
                if raw.__class__ is list:
                    return values_of(raw)
                return raw

        else:

            def read(event: dict) -> Any:
                raw = get(event)
                if raw is None:
                    return None
                if raw.__class__ is list:
                    out = []
                    for x in values_of(raw):
                        try:
                            y = conv(x)
                        except (ValueError, TypeError):
                            y = x
                        if y is not None:
                            out.append(y)
                    return out
                try:
                    return conv(raw)
                except (ValueError, TypeError):
                    return raw

        self._readers[name] = read
        return read

    # ---------------------------------------------------------------- filter context

    def predicate(self, expr: ast.Expr) -> Pred:
        """Compile a condition as Elasticsearch filters it: true, or not (null counts as false)."""
        if isinstance(expr, ast.And):
            parts = [self.predicate(e) for e in expr.operands]
            if len(parts) == 2:
                a, b = parts
                return lambda ev: a(ev) and b(ev)

            # A plain loop: all() over a generator costs a frame switch per operand per event.
            def all_of(ev: dict) -> bool:
                for p in parts:
                    if not p(ev):
                        return False
                return True

            return all_of
        if isinstance(expr, ast.Or):
            parts = [self.predicate(e) for e in expr.operands]
            if len(parts) == 2:
                a, b = parts
                return lambda ev: a(ev) or b(ev)

            def any_of(ev: dict) -> bool:
                for p in parts:
                    if p(ev):
                        return True
                return False

            return any_of
        if isinstance(expr, ast.Not):
            inner = self.predicate(expr.operand)
            return lambda ev: not inner(ev)
        if isinstance(expr, ast.BooleanLiteral):
            value = expr.value
            return lambda ev: value
        if isinstance(expr, ast.NullLiteral):
            return lambda ev: False
        if isinstance(expr, ast.Comparison) and expr.op == "!=":
            # `a != b` is `must_not (a == b)`: true when no value equals, including no value.
            positive = self.predicate(ast.Comparison("==", expr.left, expr.right))
            return lambda ev: not positive(ev)
        if isinstance(expr, ast.InList) and expr.negated:
            positive = self.predicate(ast.InList(expr.op[4:], expr.expr, expr.values))
            return lambda ev: not positive(ev)
        fast = self._fast_leaf(expr)
        if fast is not None:
            return fast
        return self._generic_leaf(expr)

    def _fast_leaf(self, expr: ast.Expr) -> Pred | None:
        if isinstance(expr, ast.Field):
            return self._quantified(expr.name, lambda v: v is True)
        if isinstance(expr, ast.Comparison):
            left, right, op = expr.left, expr.right, expr.op
            if isinstance(left, ast.Literal) and isinstance(right, ast.Field):
                left, right = right, left
                op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)
            f = left
            if not isinstance(f, ast.Field) or not isinstance(right, ast.Literal):
                return None
            read = self.reader(f.name)
            if isinstance(right, ast.NullLiteral):
                if op != "==":
                    return lambda ev: False

                # IS NULL: the field has no indexed value.
                def is_null(ev: dict) -> bool:
                    v = read(ev)
                    return v is None or (v.__class__ is list and not v)

                return is_null
            test = self._literal_test(f.name, op, right.value)
            equal_to = right.value if op == "==" and isinstance(right.value, str) else None
            return self._quantified(f.name, test, equal_to)
        if isinstance(expr, ast.PatternMatch):
            f = expr.expr
            if not isinstance(f, ast.Field):
                return None
            match = self._pattern(expr, lucene=True)
            return self._quantified(f.name, lambda v: match(v if v.__class__ is str else es_string(v)))
        if isinstance(expr, ast.InList):
            f = expr.expr
            if not isinstance(f, ast.Field) or not all(isinstance(v, ast.Literal) for v in expr.values):
                return None
            return self._quantified(f.name, self._in_test(f.name, expr))
        return None

    def _quantified(self, name: str, test: Callable[[Any], bool], equal_to: str | None = None) -> Pred:
        ft = self.ftype(name)
        plain_keyword = ft.declared and ft.es_type in KEYWORD_TYPES and ft.ignore_above is None
        if plain_keyword and ft.null_value is None:
            # Keyword values are strings; the rare non-string source value is converted lazily.
            exact = test

            def test(v: Any) -> bool:
                return exact(v if v.__class__ is str else es_string(v))

        if (ft.coercer() is None or plain_keyword) and ft.null_value is None:
            # Untyped field: read the document directly (the hot path of most rules). The three
            # predicates below repeat their list walk on purpose: a shared helper would add a
            # call per event on the evaluator's hottest path.
            get = make_getter(ft.name)
            if equal_to is not None:
                lit = equal_to

                def pred_eq(ev: dict) -> bool:
                    v = get(ev)
                    if v.__class__ is str:
                        return v == lit
                    if v is None:
                        return False
                    if v.__class__ is list:
                        for x in values_of(v):
                            if test(x):
                                return True
                        return False
                    return test(v)

                return pred_eq

            def pred_raw(ev: dict) -> bool:
                v = get(ev)
                if v is None:
                    return False
                if v.__class__ is list:
                    for x in values_of(v):
                        if test(x):
                            return True
                    return False
                return test(v)

            return pred_raw
        read = self.reader(name)

        def pred(ev: dict) -> bool:
            v = read(ev)
            if v is None:
                return False
            if v.__class__ is list:
                for x in v:
                    if test(x):
                        return True
                return False
            return test(v)

        return pred

    def _literal_test(self, name: str, op: str, literal: Any) -> Callable[[Any], bool]:
        ft = self.ftype(name)
        lit = _convert_literal(ft, literal)
        if ft.es_type == "version" and op != "==":
            key = version_key(lit)
            cmp_ok = _CMP[op]
            return lambda v: cmp_ok((version_key(v) > key) - (version_key(v) < key))
        if op == "==":
            if lit.__class__ is str:
                return lambda v: v == lit if v.__class__ is str else equals(v, lit) is True
            return lambda v: equals(v, lit) is True
        cmp_ok = _CMP[op]

        def test(v: Any) -> bool:
            c = compare(v, lit)
            return c is not None and cmp_ok(c)

        return test

    def _in_test(self, name: str, expr: ast.InList) -> Callable[[Any], bool]:
        ft = self.ftype(name)
        ci = expr.case_insensitive
        strings: set[str] = set()
        others: list[Any] = []
        for node in expr.values:
            value = _convert_literal(ft, node.value)  # type: ignore[union-attr]
            if value is None:
                continue
            if value.__class__ is str:
                strings.add(value.lower() if ci else value)
            else:
                others.append(value)

        if not others:
            # Only string constants (the usual list of names): a string value is one set lookup.
            def strings_only(v: Any) -> bool:
                if v.__class__ is str:
                    return (v.lower() if ci else v) in strings
                return any(equals(v, s) is True for s in strings)

            return strings_only

        def test(v: Any) -> bool:
            if v.__class__ is str:
                if (v.lower() if ci else v) in strings:
                    return True
                # A numeric constant against a numeric-looking string value.
                return any(equals(v, o) is True for o in others)
            # A number against the list: numeric constants, or numeric strings parsed.
            return any(equals(v, o) is True for o in others) or any(equals(v, s) is True for s in strings)

        return test

    def _pattern(self, expr: ast.PatternMatch, lucene: bool) -> Callable[[str], bool]:
        patterns = []
        for p in expr.patterns:
            if not isinstance(p.value, str):
                raise EqlSyntaxError(
                    f"{expr.op} needs string patterns, got {es_string(p.value)}", p.line, p.column
                )
            patterns.append(p.value)
        if expr.is_regex:
            try:
                return regex_matcher(patterns, expr.case_insensitive, lucene=lucene)
            except EqlError as exc:
                if exc.line is not None:
                    raise
                # Point at the literal that cannot be run, so the report names where it is.
                culprit = expr.patterns[0]
                for literal, text in zip(expr.patterns, patterns, strict=True):
                    try:
                        regex_matcher([text], expr.case_insensitive, lucene=lucene)
                    except EqlError:
                        culprit = literal
                        break
                raise type(exc)(exc.message, culprit.line, culprit.column, exc.hint) from None
        return wildcards_matcher(patterns, expr.case_insensitive)

    def _generic_leaf(self, expr: ast.Expr) -> Pred:
        fn = self.value(expr)
        names: list[str] = []
        for ref in ast.field_refs(expr):
            if ref.name not in names:
                names.append(ref.name)
        readers = [(n, self.reader(n)) for n in names]
        if not readers:
            result = fn({}) is True
            return lambda ev: result
        if len(readers) == 1:
            ((n1, r1),) = readers

            def pred1(ev: dict) -> bool:
                v = r1(ev)
                if v.__class__ is list:
                    if not v:
                        return fn({n1: None}) is True
                    return any(fn({n1: x}) is True for x in v)
                return fn({n1: v}) is True

            return pred1

        def pred(ev: dict) -> bool:
            lists = []
            single = True
            for _, r in readers:
                v = r(ev)
                if v.__class__ is list:
                    if len(v) > 1:
                        single = False
                    v = v if v else [None]
                else:
                    v = [v]
                lists.append(v)
            if single:
                return fn({n: vals[0] for (n, _), vals in zip(readers, lists, strict=True)}) is True
            # Each field reference is quantified on its own ("some value of each").
            for combo in itertools.product(*lists):
                if fn({n: x for (n, _), x in zip(readers, combo, strict=True)}) is True:
                    return True
            return False

        return pred

    # ---------------------------------------------------------------- value context

    def value(self, expr: ast.Expr) -> ValueFn:
        """Compile an expression to a function of bound field values (three-valued)."""
        if isinstance(expr, ast.Literal):
            return _const(expr.value)
        if isinstance(expr, ast.Field):
            name = expr.name
            return lambda env: env.get(name)
        if isinstance(expr, ast.FunctionCall):
            return self._function(expr)
        if isinstance(expr, ast.Arithmetic):
            a, b = self.value(expr.left), self.value(expr.right)
            op = _ARITH[expr.op]
            return self._fold(expr, lambda env: op(a(env), b(env)))
        if isinstance(expr, ast.Negate):
            inner = self.value(expr.operand)
            return self._fold(expr, lambda env: _neg(inner(env)))
        if isinstance(expr, ast.Comparison):
            return self._comparison_value(expr)
        if isinstance(expr, ast.InList):
            target = self.value(expr.expr)
            items = [self.value(v) for v in expr.values]
            ci, neg = expr.case_insensitive, expr.negated

            def in_value(env: Env) -> Any:
                v = target(env)
                if v is None:
                    return None
                found = False
                for item in items:
                    x = item(env)
                    if ci and isinstance(v, str) and isinstance(x, str):
                        if v.lower() == x.lower():
                            found = True
                            break
                    elif equals(v, x) is True:
                        found = True
                        break
                return (not found) if neg else found

            return in_value
        if isinstance(expr, ast.PatternMatch):
            target = self.value(expr.expr)
            match = self._pattern(expr, lucene=isinstance(expr.expr, ast.Field))

            def pattern_value(env: Env) -> Any:
                v = target(env)
                if v is None:
                    return None
                return match(v if v.__class__ is str else es_string(v))

            return pattern_value
        if isinstance(expr, ast.And):
            parts = [self.value(e) for e in expr.operands]
            return lambda env: _kleene_and(p(env) for p in parts)
        if isinstance(expr, ast.Or):
            parts = [self.value(e) for e in expr.operands]
            return lambda env: _kleene_or(p(env) for p in parts)
        if isinstance(expr, ast.Not):
            inner = self.value(expr.operand)

            def not_value(env: Env) -> Any:
                v = inner(env)
                return None if v is None else not v

            return not_value
        raise EqlUnsupportedError(
            f"not supported offline: expression {type(expr).__name__}", expr.line, expr.column
        )

    def _fold(self, expr: ast.Expr, fn: ValueFn) -> ValueFn:
        if not any(True for _ in ast.field_refs(expr)):
            value = fn({})
            return _const(value)
        return fn

    def _comparison_value(self, expr: ast.Comparison) -> ValueFn:
        left, right, op = expr.left, expr.right, expr.op
        lnull = isinstance(left, ast.NullLiteral)
        rnull = isinstance(right, ast.NullLiteral)
        if (lnull or rnull) and op in ("==", "!="):
            # `x == null` is an IS NULL test (also on expressions), never null itself.
            other = self.value(right if lnull else left)
            if op == "==":
                return lambda env: other(env) is None
            return lambda env: other(env) is not None
        a, b = self.value(left), self.value(right)
        if op in ("==", "!=") and any(isinstance(x, ast.Field) and x.optional for x in (left, right)):
            return self._optional_equality(expr, a, b)
        # Typed comparisons when one side is a field with a non-keyword mapping.
        ft = None
        for side, lit in ((left, right), (right, left)):
            if isinstance(side, ast.Field) and isinstance(lit, ast.Literal):
                ft = self.ftype(side.name)
                converted = _convert_literal(ft, lit.value)
                if lit is right:
                    b = _const(converted)
                else:
                    a = _const(converted)
        if ft is not None and ft.es_type == "version":
            cmp_fn: Callable[[Any, Any], int | None] = lambda x, y: (  # noqa: E731
                None
                if x is None or y is None
                else (version_key(x) > version_key(y)) - (version_key(x) < version_key(y))
            )
        else:
            cmp_fn = compare
        if op == "==":
            # Equality is exact for every type (a version term matches its exact text).
            return self._fold(expr, lambda env: equals(a(env), b(env)))
        if op == "!=":

            def ne(env: Env) -> Any:
                r = equals(a(env), b(env))
                return None if r is None else not r

            return self._fold(expr, ne)
        ok = _CMP[op]

        def ordered(env: Env) -> Any:
            c = cmp_fn(a(env), b(env))
            return None if c is None else ok(c)

        return self._fold(expr, ordered)

    def _optional_equality(self, expr: ast.Comparison, a: ValueFn, b: ValueFn) -> ValueFn:
        # An optional field without a value stands for the literal null, so `?x == y` becomes an
        # IS NULL test of `y` (Elasticsearch: `?x == ?y` on unmapped fields is true).
        left_opt = isinstance(expr.left, ast.Field) and expr.left.optional
        right_opt = isinstance(expr.right, ast.Field) and expr.right.optional
        negate = expr.op == "!="

        def eq(env: Env) -> Any:
            x, y = a(env), b(env)
            if x is None and left_opt or y is None and right_opt:
                result: Any = x is None and y is None
            else:
                result = equals(x, y)
            if result is None:
                return None
            return (not result) if negate else result

        return eq

    def _function(self, call: ast.FunctionCall) -> ValueFn:
        spec = lookup(call.name)
        if spec is None:
            raise EqlUnsupportedError(f"not supported offline: function {call.name}", call.line, call.column)
        constants = {i: a.value for i, a in enumerate(call.args) if isinstance(a, ast.Literal)}
        problem = check_literal_args(spec, len(call.args), call.case_insensitive, constants)
        if problem:
            raise EqlSyntaxError(problem, call.line, call.column)
        args = [self.value(a) for a in call.args]
        impl, ci = spec.impl, call.case_insensitive
        if len(args) == 1:
            (f0,) = args
            fn: ValueFn = lambda env: impl(ci, f0(env))  # noqa: E731
        elif len(args) == 2:
            f0, f1 = args
            fn = lambda env: impl(ci, f0(env), f1(env))  # noqa: E731
        else:
            fn = lambda env: impl(ci, *[f(env) for f in args])  # noqa: E731
        return self._fold(call, fn)

    # ---------------------------------------------------------------- queries

    def category_test(self, category: str | None) -> Pred | None:
        """Predicate for ``category where``: a case-sensitive term on the category field (any value)."""
        if category is None:
            return None
        read = self.reader(self.category_field)

        def test(ev: dict) -> bool:
            v = read(ev)
            if v.__class__ is list:
                return category in v
            return v == category

        return test

    def event_filter(self, query: ast.EventQuery, cond: Pred | None = None) -> Pred:
        """Category plus condition (``cond``: the condition, when compiled already)."""
        if cond is None:
            cond = self.predicate(query.condition)
        cat = self.category_test(query.category)
        if cat is None:
            return cond
        return lambda ev: cat(ev) and cond(ev)

    def keys(self, fields: tuple[ast.Field, ...]) -> Callable[[dict], list[tuple]]:
        """Join-key tuples of an event: nulls drop the event unless ``?field``; arrays expand."""
        if not fields:
            empty = [()]
            return lambda ev: empty
        parts = [(self.reader(f.name), f.optional) for f in fields]
        if len(parts) == 1:
            ((read, optional),) = parts
            null_keys = [(None,)] if optional else []

            def keys1(ev: dict) -> list[tuple]:
                v = read(ev)
                if v is None:
                    return null_keys
                if v.__class__ is list:
                    if not v:
                        return null_keys
                    return [(x,) for x in _unique_sorted(v)]
                return [(v,)]

            return keys1

        def keys(ev: dict) -> list[tuple]:
            columns = []
            for read, optional in parts:
                v = read(ev)
                if v is None or (v.__class__ is list and not v):
                    if not optional:
                        return []
                    columns.append((None,))
                elif v.__class__ is list:
                    columns.append(_unique_sorted(v))
                else:
                    columns.append((v,))
            return list(itertools.product(*columns))

        return keys

    def key_formatter(self, fields: tuple[ast.Field, ...]) -> Callable[[tuple], list[Any]]:
        """Render join-key values as Elasticsearch returns them (dates as ISO strings)."""
        fmts = []
        for f in fields:
            ft = self.ftype(f.name)
            fmts.append(_format_date if ft.is_date else None)
        if not any(fmts):
            return list
        return lambda key: [
            fmt(v) if fmt is not None and v is not None else v for fmt, v in zip(fmts, key, strict=True)
        ]


def _format_date(v: Any) -> Any:
    return format_timestamp(v) if isinstance(v, int) else v


def _unique_sorted(values: list[Any]) -> list[Any]:
    # Keyword doc values are sorted and de-duplicated; keys follow that order.
    return sorted(set(values), key=_sort_token)


def _convert_literal(ft: FieldType, value: Any) -> Any:
    if value is None or not ft.declared:
        return value
    if ft.is_numeric and isinstance(value, int | float) and not isinstance(value, bool):
        # A numeric constant keeps its own precision: `long_field < 4.5` is not `< 4`.
        return value
    return ft.convert_literal(value)


_CMP: dict[str, Callable[[int], bool]] = {
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
    "==": lambda c: c == 0,
    "!=": lambda c: c != 0,
}


def _numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _arith_op(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def op(a: Any, b: Any) -> Any:
        if not _numeric(a) or not _numeric(b):
            return None
        return fn(a, b)

    return op


_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": _arith_op(lambda a, b: a + b),
    "-": _arith_op(lambda a, b: a - b),
    "*": _arith_op(lambda a, b: a * b),
    "/": _arith_op(java_div),
    "%": _arith_op(java_mod),
}


def _neg(v: Any) -> Any:
    return -v if _numeric(v) else None


def _kleene_and(values: Iterable[Any]) -> Any:
    result: Any = True
    for v in values:
        if v is False:
            return False
        if v is None:
            result = None
    return result


def _kleene_or(values: Iterable[Any]) -> Any:
    result: Any = False
    for v in values:
        if v is True:
            return True
        if v is None:
            result = None
    return result


# ---------------------------------------------------------------- programs


class _Step:
    __slots__ = ("index", "category", "cond", "keys", "missing", "positive_index")

    def __init__(
        self, index: int, category: str | None, cond: Pred, keys: Callable[[dict], list[tuple]], missing: bool
    ) -> None:
        self.index = index
        self.category = category
        self.cond = cond
        self.keys = keys
        self.missing = missing
        self.positive_index = -1


# The matcher behind a runner: one call per event (timestamp in ms, event) returning the matches
# that event completes, and one call at the end of input returning the matches held until then.
StepFn = Callable[[int, dict], list[Match]]
FlushFn = Callable[[], list[Match]]


class _Pipe:
    """One ``| head N`` or ``| tail N`` between the matcher and the caller."""

    __slots__ = ("head", "left", "kept")

    def __init__(self, pipe: ast.Pipe) -> None:
        if pipe.name not in ("head", "tail"):
            raise EqlUnsupportedError(f"not supported offline: pipe {pipe.name}", pipe.line, pipe.column)
        self.head = pipe.name == "head"
        self.left = pipe.count
        self.kept: deque[Match] = deque(maxlen=pipe.count) if not self.head else deque()

    def feed(self, matches: list[Match]) -> list[Match]:
        """Matches passed on now: the first N overall for head, none for tail (it keeps the last N)."""
        if self.head:
            if len(matches) > self.left:
                matches = matches[: max(self.left, 0)]
            self.left -= len(matches)
            return matches
        self.kept.extend(matches)
        return []

    def flush(self) -> list[Match]:
        """Matches passed on at the end of input."""
        out = list(self.kept)
        self.kept.clear()
        return out


class Runner:
    """Push-style evaluation of one Program over events in (timestamp, tiebreaker) order.

    ``push`` takes the next event and returns the matches it completes (after ``head``/``tail``);
    ``finish`` ends the input and returns the matches held until then (``| tail``, sequences that
    wait to see whether a trailing missing event follows). Memory is bounded by the live sequence
    state, not by the number of events.
    """

    __slots__ = (
        "_program",
        "_step",
        "_flush",
        "_pipes",
        "_check",
        "_tiebreak",
        "_ts_get",
        "_pos",
        "_prev_ts",
        "_prev_tb",
        "_timeless",
        "stopped",
        "finished",
    )

    def __init__(self, program: Program, *, check_order: bool = True) -> None:
        self._program = program
        self._pipes = [_Pipe(p) for p in program.query.pipes]
        self._step, self._flush = program._matcher()
        self._check = check_order
        # Only a checking runner needs the tiebreaker of each event.
        self._tiebreak = program._tiebreak if program._tb_get is not None and check_order else None
        self._ts_get = program._ts_get
        self._timeless = program._timeless
        self._pos = 0
        self._prev_ts: int | None = None
        self._prev_tb: tuple | None = None
        # True once no later event can change the result (a `head` is full, or after finish()).
        self.stopped = any(p.head and p.left <= 0 for p in self._pipes)
        self.finished = False

    def push(self, event: dict, ts: int | None = None) -> list[Match]:
        """Feed the next event (``ts``: its timestamp in epoch ms, when already parsed); return new matches.

        Raises ValueError when the event goes back in time (timestamp, then tiebreaker).
        """
        pos = self._pos
        self._pos = pos + 1
        if self.stopped:
            if self.finished:
                raise RuntimeError("push() after finish()")
            return []
        if self._timeless:
            return self._step(0 if ts is None else ts, event)
        if ts is None:
            # The common shapes (epoch ms, one ISO string) skip the general path with its messages.
            raw = self._ts_get(event)
            if raw.__class__ is int:
                ts = raw
            else:
                try:
                    ts = parse_timestamp(raw)
                except (ValueError, TypeError):
                    ts = self._program._timestamp(event, pos)  # raises with the event position
        prev = self._prev_ts
        if prev is not None and ts <= prev:
            if self._check:
                self._check_tie(event, ts, prev, pos)
        elif self._tiebreak is not None:
            self._prev_tb = self._tiebreak(event)
        self._prev_ts = ts
        out = self._step(ts, event)
        if out and self._pipes:
            for pipe in self._pipes:
                out = pipe.feed(out)
                if pipe.head and pipe.left <= 0:
                    # Nothing upstream of a full head can reach the caller any more.
                    self.stopped = True
        return out

    def _check_tie(self, event: dict, ts: int, prev: int, pos: int) -> None:
        # Same or earlier time than the previous event: the tiebreaker decides, or it is disorder.
        if ts < prev:
            raise self._program._disorder(pos, ts)
        tiebreak = self._tiebreak
        if tiebreak is not None:
            tb = tiebreak(event)
            if self._prev_tb is not None and tb < self._prev_tb:
                raise self._program._disorder(pos, ts)
            self._prev_tb = tb

    def finish(self) -> list[Match]:
        """End of input: return the matches held for ``| tail`` and trailing missing events (once)."""
        if self.finished:
            return []
        self.finished = self.stopped = True
        out = self._flush()
        for pipe in self._pipes:
            out = pipe.feed(out) + pipe.flush()
        return out


class Program:
    """A compiled query. ``run`` sorts its input; ``run_sorted`` and ``stream`` take pre-sorted input."""

    def __init__(
        self,
        query: ast.Query,
        compiler: _Compiler,
        timestamp_field: str,
        tiebreaker_field: str | None,
        size: int | None = DEFAULT_SIZE,
        max_samples_per_key: int = DEFAULT_MAX_SAMPLES_PER_KEY,
        window: int | None = None,
    ) -> None:
        self.query = query
        self.timestamp_field = timestamp_field
        self.tiebreaker_field = tiebreaker_field
        self._ts_get = make_getter(timestamp_field)
        self._tb_get = make_getter(tiebreaker_field) if tiebreaker_field else None
        self._c = compiler
        # A sample ignores time: its runner neither reads nor checks timestamps (unless windowed).
        self._timeless = isinstance(query.body, ast.Sample) and window is None
        body = query.body
        self._matcher: Callable[[], tuple[StepFn, FlushFn]]
        self._maxspan: int | None = None
        if isinstance(body, ast.Sample):
            self._setup_sample(body, size, max_samples_per_key, window)
            self._matcher = self._sample_matcher
        elif isinstance(body, ast.EventQuery):
            self._cond = compiler.predicate(body.condition)
            self._filter = compiler.event_filter(body, self._cond)
            self._matcher = self._event_matcher
        else:
            self._setup_sequence(body, window)
            self._matcher = self._sequence_matcher

    @property
    def kind(self) -> str:
        """``"event"``, ``"sequence"`` or ``"sample"``."""
        return self.query.kind

    # -- ordering

    def _timestamp(self, event: dict, position: int) -> int:
        raw = first_value(self._ts_get(event))
        if raw is None:
            raise ValueError(f"event #{position} has no {self.timestamp_field} value")
        try:
            return parse_timestamp(raw)
        except ValueError as exc:
            raise ValueError(f"event #{position}: {self.timestamp_field}: {exc}") from None

    def _disorder(self, pos: int, ts: int) -> ValueError:
        return ValueError(
            f"event #{pos} is out of order ({self.timestamp_field}={ts}); use Program.run() for unsorted input"
        )

    def _tiebreak(self, event: dict) -> tuple:
        if self._tb_get is None:
            return (0,)
        v = first_value(self._tb_get(event))
        # Events without a tiebreaker value sort after those that have one.
        return (1,) if v is None else (0, _sort_token(v))

    def stream(self) -> Runner:
        """A push-style runner over events already ordered by (timestamp, tiebreaker); see :class:`Runner`."""
        return Runner(self)

    def run(self, events: Iterable[dict]) -> Iterator[Match]:
        """Run over events in any order.

        Events are sorted by (timestamp, tiebreaker, input position) first, so the whole input is
        held in memory (one small tuple per event plus the events themselves). For large inputs
        that are already ordered, use :meth:`run_sorted` or :meth:`stream`, which stream. A sample
        ignores time: its events are taken in input order (Elasticsearch's document order) and
        need no timestamp.
        """
        if self._timeless:
            yield from self.run_sorted(events)
            return
        decorated = []
        for pos, ev in enumerate(events):
            decorated.append((self._timestamp(ev, pos), self._tiebreak(ev), pos, ev))
        decorated.sort(key=lambda t: (t[0], t[1], t[2]))
        # Sorted here, so the runner need not check the order again.
        runner = Runner(self, check_order=False)
        push = runner.push
        for ts, _, _, ev in decorated:
            out = push(ev, ts)
            if out:
                yield from out
            if runner.stopped:
                break
        yield from runner.finish()

    def run_sorted(self, events: Iterable[dict]) -> Iterator[Match]:
        """Run over events already ordered by (timestamp, tiebreaker), streaming.

        Memory stays bounded by the live sequence state (see ``deployer.eql.sequence``), not by
        the number of events. Raises ValueError at the first event that goes back in time.
        """
        runner = Runner(self)
        push = runner.push
        for ev in events:
            out = push(ev)
            if out:
                yield from out
            if runner.stopped:
                # `| head N` is full: the rest of the input is not read.
                break
        yield from runner.finish()

    # -- samples

    def _setup_sample(
        self, sample: ast.Sample, size: int | None, max_samples_per_key: int, window: int | None
    ) -> None:
        if self.query.pipes:
            pipe = self.query.pipes[0]
            raise EqlUnsupportedError("not supported offline: pipes after a sample", pipe.line, pipe.column)
        c = self._c
        self._sample_filters = [
            (c.event_filter(step.query), c.keys(sample.keys_for(step))) for step in sample.steps
        ]
        self._sample_size = size
        self._max_samples_per_key = max_samples_per_key
        self._sample_window = window

    def _sample_matcher(self) -> tuple[StepFn, FlushFn]:
        def fresh() -> SampleMatcher:
            return SampleMatcher(
                len(self._sample_filters),
                max_samples_per_key=self._max_samples_per_key,
                size=self._sample_size,
            )

        def samples(done: SampleMatcher) -> list[Match]:
            # Join keys come back as the composite aggregation returns them (dates in epoch ms).
            return [Match(list(events), list(key)) for key, events in done.samples(_key_sort)]

        matcher = fresh()
        filters = list(enumerate(self._sample_filters))
        window = self._sample_window
        current: int | None = None  # the window (ts // window) the matcher holds

        def step(ts: int, ev: dict) -> list[Match]:
            nonlocal matcher, current
            out: list[Match] = []
            if window is not None and ts // window != current:
                # A new window: the last one's samples are complete, and its hits are let go.
                if current is not None:
                    out = samples(matcher)
                    matcher = fresh()
                current = ts // window
            add = matcher.add
            for i, (keep, keys) in filters:
                if keep(ev):
                    for k in keys(ev):
                        add(i, k, ev)
            return out

        def flush() -> list[Match]:
            return samples(matcher)

        return step, flush

    # -- event queries

    def _event_matcher(self) -> tuple[StepFn, FlushFn]:
        keep = self._filter

        def step(ts: int, ev: dict) -> list[Match]:
            if keep(ev):
                return [Match([ev], [])]
            return []

        return step, list

    # -- sequences

    @property
    def span(self) -> int | None:
        """The longest span (ms) a sequence match can have: its maxspan, bounded by the window; None if unbounded."""
        return self._maxspan

    def _setup_sequence(self, seq: ast.Sequence, window: int | None) -> None:
        c = self._c
        steps_ast = seq.expanded_steps()
        self._steps: list[_Step] = []
        positives = 0
        # `with runs=N` repeats one step object: its condition is compiled once, so an event is
        # tested against it once (see `process`), not N times.
        compiled: dict[int, tuple[Pred, Callable[[dict], list[tuple]]]] = {}
        for i, step in enumerate(steps_ast):
            parts = compiled.get(id(step))
            if parts is None:
                parts = compiled[id(step)] = (c.predicate(step.query.condition), c.keys(seq.keys_for(step)))
            st = _Step(i, step.query.category, parts[0], parts[1], step.missing)
            if not step.missing:
                st.positive_index = positives
                positives += 1
            self._steps.append(st)
        if positives == 0:
            raise EqlSyntaxError(
                "a sequence needs at least one step that is not a missing event", seq.line, seq.column
            )
        self._maxspan = seq.maxspan.millis if seq.maxspan is not None else None
        self._layout = [s.missing for s in self._steps]
        self._positives = positives
        if any(self._layout) and self._maxspan is None:
            raise EqlSyntaxError("missing events ![...] need `with maxspan`", seq.line, seq.column)
        if window is not None and (self._maxspan is None or self._maxspan > window):
            # No match longer than the searched window can be found, so the window is the maxspan
            # (and partial sequences older than it are swept).
            self._maxspan = window
        self._until: tuple[Pred, Pred | None, Callable[[dict], list[tuple]]] | None = None
        if seq.until is not None:
            u = seq.until
            self._until = (
                c.predicate(u.query.condition),
                c.category_test(u.query.category),
                c.keys(seq.keys_for(u)),
            )
        first_positive = next(s for s in steps_ast if not s.missing)
        self._format_key = c.key_formatter(seq.keys_for(first_positive))
        cat_type = c.ftype(c.category_field)
        plain = cat_type.coercer() is None and cat_type.null_value is None
        self._category_read = make_getter(cat_type.name) if plain else c.reader(c.category_field)
        # Stages grouped by category, last stage first (the order the state machine needs).
        self._by_category: dict[str, list[_Step]] = {}
        self._any_steps = [s for s in reversed(self._steps) if s.category is None]
        self._dispatch_cache: dict[Any, list[_Step]] = {}

    def _steps_for(self, category: Any) -> list[_Step]:
        if category.__class__ is list:
            cache_key = category[0] if len(category) == 1 else tuple(category)
        else:
            cache_key = category
        try:
            return self._dispatch_cache[cache_key]
        except (KeyError, TypeError):
            pass
        cats = set(values_of(category)) if category.__class__ is list else {category}
        steps = [s for s in reversed(self._steps) if s.category is None or s.category in cats]
        try:
            if len(self._dispatch_cache) < 4096:
                self._dispatch_cache[cache_key] = steps
        except TypeError:
            pass
        return steps

    def _sequence_matcher(self) -> tuple[StepFn, FlushFn]:
        process, flush = self.sequence_core()
        read_cat = self._category_read
        steps_for = self._steps_for
        cache = self._dispatch_cache
        until_cat = self._until[1] if self._until is not None else None
        has_until = self._until is not None

        def step(ts: int, ev: dict) -> list[Match]:
            cat = read_cat(ev)
            steps = None
            if cat.__class__ is list:
                if len(cat) == 1:
                    steps = cache.get(cat[0])
            else:
                steps = cache.get(cat)
            if steps is None:
                steps = steps_for(cat)
            return process(ts, ev, steps, has_until and (until_cat is None or until_cat(ev)))

        return step, flush

    def sequence_core(self) -> tuple[Callable[[int, dict, list[_Step], bool], list[Match]], FlushFn]:
        """A fresh sequence state machine: ``process(ts, event, steps, until)`` and ``flush()``.

        ``steps`` are the steps whose category the event has (``steps_by_category`` order: last
        step first); ``until`` says whether the event has the until step's category. Each step's
        condition is still evaluated here, so any superset of the right steps gives the same result.
        """
        matcher = SequenceMatcher(self._positives, self._maxspan)
        missing = MissingEventCheck(self._layout, self._maxspan) if any(self._layout) else None
        until = self._until
        fmt = self._format_key
        layout = self._layout
        advance = matcher.advance
        maxspan = self._maxspan
        next_sweep: int | None = None
        emit = self._emit_missing

        def process(ts: int, ev: dict, steps: list[_Step], check_until: bool) -> list[Match]:
            nonlocal next_sweep
            if maxspan is not None:
                # Expired partial sequences are swept once per maxspan of stream time: state stays
                # within the keys seen in the last two maxspans, at O(1) amortised cost.
                if next_sweep is None:
                    next_sweep = ts + maxspan
                elif ts > next_sweep:
                    matcher.sweep(ts)
                    next_sweep = ts + maxspan
            if missing is not None:
                missing.tick(ts)
            done: list[tuple[tuple, tuple]] | None = None
            last_cond: Pred | None = None
            last_ok = False
            for st in steps:
                cond = st.cond
                if cond is not last_cond:
                    last_cond = cond
                    last_ok = cond(ev)
                if not last_ok:
                    continue
                keys = st.keys(ev)
                if st.missing:
                    for k in keys:
                        missing.observe(st.index, k, ts)  # type: ignore[union-attr]
                    continue
                pi = st.positive_index
                for k in keys:
                    items = advance(pi, k, ts, (ts, ev))
                    if items is not None:
                        if done is None:
                            done = []
                        done.append((k, items))
            if check_until and until is not None:
                cond, _, ukeys = until
                if cond(ev):
                    for k in ukeys(ev):
                        matcher.until(k)
            out: list[Match] = []
            if done is not None:
                if len(done) > 1:
                    # Several sequences ending on one event come out in join-key order.
                    done.sort(key=lambda d: _key_sort(d[0]))
                for k, items in done:
                    if missing is None:
                        out.append(Match([it[1] for it in items], fmt(k)))
                    else:
                        missing.candidate(k, items, None)
            if missing is not None:
                emit(missing, layout, fmt, out)
            return out

        def flush() -> list[Match]:
            out: list[Match] = []
            if missing is not None:
                missing.finish()
                emit(missing, layout, fmt, out)
            return out

        return process, flush

    @staticmethod
    def _emit_missing(
        missing: MissingEventCheck, layout: list[bool], fmt: Callable[[tuple], list[Any]], out: list[Match]
    ) -> None:
        for k, items, _ in missing.ready():
            it = iter(items)
            events = [None if is_missing else next(it)[1] for is_missing in layout]
            out.append(Match(events, fmt(k)))


def compile_query(
    query: ast.Query | str,
    *,
    timestamp_field: str = "@timestamp",
    tiebreaker_field: str | None = None,
    field_types: dict[str, Any] | None = None,
    category_field: str = "event.category",
    size: int | None = DEFAULT_SIZE,
    max_samples_per_key: int = DEFAULT_MAX_SAMPLES_PER_KEY,
    window: int | None = None,
) -> Program:
    """Compile EQL text or a parsed ``ast.Query`` into a runnable Program.

    ``field_types`` maps field names to Elasticsearch types (``"keyword"``, ``"ip"``, ``"date"``,
    ``"version"``, ``"long"``...) or to mapping property dicts (``{"type": "keyword",
    "null_value": "NULL"}``, ``{"type": "alias", "path": "event_type"}``, text with a keyword
    sub-field). Unlisted fields behave as keyword (strings) or as their JSON type. An optional
    ``?field`` without a value acts as the literal null in ``==``/``!=`` (``?x == ?y`` is true when
    both are absent), as an unmapped optional field does in Elasticsearch. ``size`` (None: no
    limit) and ``max_samples_per_key`` are the request parameters of the same names; they bound
    ``sample`` results only. ``window`` (ms, None: the whole input) is the span one search
    covers, as a detection rule's look-back does: a sequence without ``maxspan``, or with a longer
    one, then matches only within ``window``; a sample is taken per consecutive ``window`` of
    time (aligned on the epoch, events in time order), at most ``size`` samples each.
    """
    if isinstance(query, str):
        from deployer.eql import parser

        query = parser.parse(query)
    if not isinstance(query, ast.Query):
        raise TypeError(f"compile_query needs an ast.Query or EQL text, not {type(query).__name__}")
    compiler = _Compiler(field_types, category_field)
    ts_type = compiler.types.get(timestamp_field)
    if ts_type is None:
        compiler.types[timestamp_field] = FieldType(timestamp_field, "date", declared=True)
    try:
        return Program(query, compiler, timestamp_field, tiebreaker_field, size, max_samples_per_key, window)
    except EqlError:
        raise
    except RecursionError:
        raise EqlUnsupportedError("not supported offline: expression nested too deeply") from None
