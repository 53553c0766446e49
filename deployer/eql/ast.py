"""Abstract syntax tree of Elasticsearch EQL queries (the contract between parser and consumers).

Every node is a frozen dataclass. Positions (``line``, ``column``, ``end_line``, ``end_column``)
are 1-based and relative to the query text; the end is exclusive (the column just after the last
character). Positions are keyword-only and excluded from equality, so two trees parsed from
differently formatted text compare equal when they mean the same thing.

Shape overview::

    Query(body=EventQuery | Sequence | Sample, pipes=(Pipe, ...))
    EventQuery(category: str | None, condition: Expr)        # category None == `any`
    Sequence(by=(Field, ...), maxspan=MaxSpan | None, steps=(Step, ...), until=Step | None)
    Sample(by=(Field, ...), steps=(Step, ...))
    Step(query=EventQuery, by=(Field, ...), runs=int, missing=bool)

    Expr = Literal | Field | FunctionCall | Arithmetic | Negate | Comparison | InList
         | PatternMatch | And | Or | Not

Points to keep in mind when walking a tree:

* ``Literal`` subclasses: StringLiteral, NumberLiteral, BooleanLiteral, NullLiteral. Test the class,
  not ``type(value)``, because ``bool`` is a subclass of ``int``.
* ``x not in (...)`` is ``InList("not in")``. ``not x in (...)`` is ``Not(InList("in"))``. Both mean
  the same thing.
* As in Elasticsearch's grammar, a predicate binds to the primary before it, and a sign binds more
  loosely than that: ``-x in (1)`` is ``Negate(InList(...))``.
* ``Sequence.keys_for(step)`` gives a step's full join keys (sequence keys first).
  ``Sequence.expanded_steps()`` applies ``runs``.
* ``to_eql(node)`` prints text that parses back to an equal tree.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import ClassVar

__all__ = [
    "Node",
    "Expr",
    "Literal",
    "StringLiteral",
    "NumberLiteral",
    "BooleanLiteral",
    "NullLiteral",
    "Field",
    "FunctionCall",
    "Arithmetic",
    "Negate",
    "Comparison",
    "InList",
    "PatternMatch",
    "And",
    "Or",
    "Not",
    "EventQuery",
    "Step",
    "MaxSpan",
    "Sequence",
    "Sample",
    "Pipe",
    "Query",
    "walk",
    "field_refs",
    "to_eql",
    "COMPARISON_OPS",
    "IN_OPS",
    "PATTERN_OPS",
    "ARITHMETIC_OPS",
    "TIME_UNITS_MS",
]

COMPARISON_OPS = frozenset({"==", "!=", "<", "<=", ">", ">="})
IN_OPS = frozenset({"in", "in~", "not in", "not in~"})
PATTERN_OPS = frozenset({":", "like", "like~", "regex", "regex~"})
ARITHMETIC_OPS = frozenset({"+", "-", "*", "/", "%"})
# maxspan units Elasticsearch accepts, in milliseconds.
TIME_UNITS_MS: dict[str, int] = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


@dataclass(frozen=True, slots=True)
class Node:
    """Base of all nodes: source span, 1-based, end exclusive, ignored by ``==``."""

    line: int = field(default=1, kw_only=True, compare=False, repr=False)
    column: int = field(default=1, kw_only=True, compare=False, repr=False)
    end_line: int = field(default=1, kw_only=True, compare=False, repr=False)
    end_column: int = field(default=1, kw_only=True, compare=False, repr=False)

    # Names of the fields that hold child nodes (or tuples of them); filled per class below.
    _children: ClassVar[tuple[str, ...]] = ()

    def children(self) -> Iterator[Node]:
        """Yield the direct child nodes, in source order."""
        for name in self._children:
            value = getattr(self, name)
            if isinstance(value, Node):
                yield value
            elif isinstance(value, tuple):
                for item in value:
                    if isinstance(item, Node):
                        yield item


# ---------------------------------------------------------------- expressions


@dataclass(frozen=True, slots=True)
class Expr(Node):
    """Base of expression nodes."""


@dataclass(frozen=True, slots=True)
class Literal(Expr):
    """Base of constants; ``value`` is the Python value (str, int, float, bool or None)."""

    @property
    def value(self) -> str | int | float | bool | None:  # pragma: no cover - overridden
        """The constant's Python value."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class StringLiteral(Literal):
    """A string constant, escapes already decoded; ``raw`` is True for ``\"\"\"...\"\"\"``."""

    value: str  # type: ignore[assignment]
    raw: bool = False


@dataclass(frozen=True, slots=True)
class NumberLiteral(Literal):
    """An integer or float constant; ``-1`` is folded into a negative literal."""

    value: int | float  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class BooleanLiteral(Literal):
    """``true`` or ``false``."""

    value: bool  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class NullLiteral(Literal):
    """``null``."""

    @property
    def value(self) -> None:
        """Always None."""
        return None


@dataclass(frozen=True, slots=True)
class Field(Expr):
    """A field reference; ``path`` holds the unescaped parts (`` `a b`.c `` → ("a b", "c"))."""

    path: tuple[str, ...]
    optional: bool = False  # written `?field`: unmapped means null instead of an error

    @property
    def name(self) -> str:
        """The dotted field name as Elasticsearch resolves it."""
        return ".".join(self.path)


@dataclass(frozen=True, slots=True)
class FunctionCall(Expr):
    """``name(args)``; ``case_insensitive`` is True for the ``name~(...)`` variant."""

    name: str  # canonical spelling from the function registry, e.g. "startsWith"
    args: tuple[Expr, ...]
    case_insensitive: bool = False
    _children: ClassVar[tuple[str, ...]] = ("args",)


@dataclass(frozen=True, slots=True)
class Arithmetic(Expr):
    """Binary arithmetic; ``op`` is one of ``+ - * / %``."""

    op: str
    left: Expr
    right: Expr
    _children: ClassVar[tuple[str, ...]] = ("left", "right")


@dataclass(frozen=True, slots=True)
class Negate(Expr):
    """Unary minus on a non-literal operand (``-field``); ``-3`` is a NumberLiteral."""

    operand: Expr
    _children: ClassVar[tuple[str, ...]] = ("operand",)


@dataclass(frozen=True, slots=True)
class Comparison(Expr):
    """``left op right`` with ``op`` one of ``== != < <= > >=`` (``==`` is case-sensitive)."""

    op: str
    left: Expr
    right: Expr
    _children: ClassVar[tuple[str, ...]] = ("left", "right")


@dataclass(frozen=True, slots=True)
class InList(Expr):
    """``expr [not] in[~] (values)``; ``op`` is one of ``in in~ "not in" "not in~"``."""

    op: str
    expr: Expr
    values: tuple[Expr, ...]
    _children: ClassVar[tuple[str, ...]] = ("expr", "values")

    @property
    def negated(self) -> bool:
        """True for ``not in`` / ``not in~``."""
        return self.op.startswith("not ")

    @property
    def case_insensitive(self) -> bool:
        """True for ``in~`` / ``not in~``."""
        return self.op.endswith("~")


@dataclass(frozen=True, slots=True)
class PatternMatch(Expr):
    """``expr op pattern`` or ``expr op (p1, p2)``; ``op`` is one of ``: like like~ regex regex~``.

    ``:`` is case-insensitive with ``*``/``?`` wildcards (same as ``like~``). Patterns are
    constants; a list means "any of". ``is_list`` records whether the parenthesised form was used.
    """

    op: str
    expr: Expr
    patterns: tuple[Literal, ...]
    is_list: bool = False
    _children: ClassVar[tuple[str, ...]] = ("expr", "patterns")

    @property
    def case_insensitive(self) -> bool:
        """True for ``:``, ``like~`` and ``regex~``."""
        return self.op == ":" or self.op.endswith("~")

    @property
    def is_regex(self) -> bool:
        """True for ``regex`` / ``regex~``."""
        return self.op.startswith("regex")


@dataclass(frozen=True, slots=True)
class And(Expr):
    """Conjunction, flattened: ``a and b and c`` is one node with three operands."""

    operands: tuple[Expr, ...]
    _children: ClassVar[tuple[str, ...]] = ("operands",)


@dataclass(frozen=True, slots=True)
class Or(Expr):
    """Disjunction, flattened like And."""

    operands: tuple[Expr, ...]
    _children: ClassVar[tuple[str, ...]] = ("operands",)


@dataclass(frozen=True, slots=True)
class Not(Expr):
    """``not operand``."""

    operand: Expr
    _children: ClassVar[tuple[str, ...]] = ("operand",)


# ---------------------------------------------------------------- queries


@dataclass(frozen=True, slots=True)
class EventQuery(Node):
    """``category where condition``; ``category`` is None for ``any where``."""

    category: str | None
    condition: Expr
    _children: ClassVar[tuple[str, ...]] = ("condition",)


@dataclass(frozen=True, slots=True)
class Step(Node):
    """One ``[...]`` term of a sequence or sample, with its own ``by`` keys.

    ``missing`` is True for ``![...]``; ``runs`` is the ``with runs=N`` count (1 when absent).
    """

    query: EventQuery
    by: tuple[Field, ...] = ()
    runs: int = 1
    missing: bool = False
    _children: ClassVar[tuple[str, ...]] = ("query", "by")


@dataclass(frozen=True, slots=True)
class MaxSpan(Node):
    """``maxspan=<n><unit>``; ``text`` as written, ``millis`` the span in milliseconds."""

    text: str
    amount: int
    unit: str
    millis: int


@dataclass(frozen=True, slots=True)
class Sequence(Node):
    """``sequence [by keys] [with maxspan=...] steps [until step]``."""

    by: tuple[Field, ...]
    maxspan: MaxSpan | None
    steps: tuple[Step, ...]
    until: Step | None = None
    _children: ClassVar[tuple[str, ...]] = ("by", "maxspan", "steps", "until")

    def keys_for(self, step: Step) -> tuple[Field, ...]:
        """Join keys of ``step``: the sequence-level keys first, then the step's own."""
        return self.by + step.by

    def expanded_steps(self) -> tuple[Step, ...]:
        """The steps with ``runs=N`` expanded into N copies (``until`` excluded)."""
        out: list[Step] = []
        for step in self.steps:
            out.extend([step] * step.runs)
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Sample(Node):
    """``sample [by keys] steps`` (time order ignored)."""

    by: tuple[Field, ...]
    steps: tuple[Step, ...]
    _children: ClassVar[tuple[str, ...]] = ("by", "steps")

    def keys_for(self, step: Step) -> tuple[Field, ...]:
        """Join keys of ``step``: the sample-level keys first, then the step's own."""
        return self.by + step.by


@dataclass(frozen=True, slots=True)
class Pipe(Node):
    """``| head N`` or ``| tail N`` (the only pipes Elasticsearch runs)."""

    name: str
    count: int


@dataclass(frozen=True, slots=True)
class Query(Node):
    """A whole EQL statement: the query body and its pipes, in order."""

    body: EventQuery | Sequence | Sample
    pipes: tuple[Pipe, ...] = ()
    _children: ClassVar[tuple[str, ...]] = ("body", "pipes")

    @property
    def kind(self) -> str:
        """``"event"``, ``"sequence"`` or ``"sample"``."""
        if isinstance(self.body, Sequence):
            return "sequence"
        if isinstance(self.body, Sample):
            return "sample"
        return "event"


# ---------------------------------------------------------------- traversal


def walk(node: Node) -> Iterator[Node]:
    """Yield ``node`` and every node below it, depth-first, parents before children."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        kids = list(current.children())
        kids.reverse()
        stack.extend(kids)


def field_refs(node: Node) -> Iterator[Field]:
    """Yield every field reference under ``node`` (conditions and join keys), in source order."""
    for item in walk(node):
        if isinstance(item, Field):
            yield item


# ---------------------------------------------------------------- formatting

_KEYWORDS = frozenset(
    {
        "and",
        "any",
        "by",
        "false",
        "in",
        "join",
        "like",
        "maxspan",
        "not",
        "null",
        "of",
        "or",
        "regex",
        "sample",
        "sequence",
        "true",
        "until",
        "where",
        "with",
    }
)
_PLAIN_NAME = re.compile(r"[A-Za-z_@][A-Za-z0-9_]*\Z")
_STRING_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}

# Binding strength of each expression kind when printed (higher binds tighter).
_OR, _AND, _NOT, _CMP, _ADD, _MUL, _UNARY, _PRIMARY = range(1, 9)


def to_eql(node: Node) -> str:
    """Render a node as EQL text that parses back to an equal node."""
    if isinstance(node, Query):
        return to_eql(node.body) + "".join(f" | {pipe.name} {pipe.count}" for pipe in node.pipes)
    if isinstance(node, Sequence):
        head = "sequence" + _by(node.by)
        if node.maxspan is not None:
            head += f" with maxspan={node.maxspan.amount}{node.maxspan.unit}"
        lines = [head, *(f"  {to_eql(step)}" for step in node.steps)]
        if node.until is not None:
            lines.append(f"until {to_eql(node.until)}")
        return "\n".join(lines)
    if isinstance(node, Sample):
        return "\n".join(["sample" + _by(node.by), *(f"  {to_eql(step)}" for step in node.steps)])
    if isinstance(node, Step):
        text = ("![" if node.missing else "[") + to_eql(node.query) + "]" + _by(node.by)
        return text + (f" with runs={node.runs}" if node.runs != 1 else "")
    if isinstance(node, EventQuery):
        if node.category is None:
            category = "any"
        elif _PLAIN_NAME.match(node.category) and node.category not in _KEYWORDS:
            category = node.category
        else:
            category = _string(node.category, raw=False)
        return f"{category} where {to_eql(node.condition)}"
    if isinstance(node, MaxSpan):
        return f"{node.amount}{node.unit}"
    if isinstance(node, Pipe):
        return f"{node.name} {node.count}"
    if isinstance(node, Expr):
        return _expr(node, 0)
    raise TypeError(f"cannot format {type(node).__name__}")


def _by(keys: tuple[Field, ...]) -> str:
    return (" by " + ", ".join(_expr(key, 0) for key in keys)) if keys else ""


def _string(value: str, raw: bool) -> str:
    if raw and '"""' not in value and "\n" not in value and "\r" not in value:
        return f'"""{value}"""'
    out = []
    for char in value:
        if char in _STRING_ESCAPES:
            out.append(_STRING_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{{{ord(char):02x}}}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _name(part: str) -> str:
    if _PLAIN_NAME.match(part) and part not in _KEYWORDS:
        return part
    return "`" + part.replace("`", "``") + "`"


def _strength(node: Expr) -> int:
    if isinstance(node, Or):
        return _OR
    if isinstance(node, And):
        return _AND
    if isinstance(node, Not):
        return _NOT
    if isinstance(node, Comparison):
        return _CMP
    if isinstance(node, Arithmetic):
        return _ADD if node.op in "+-" else _MUL
    if isinstance(node, Negate):
        return _UNARY
    if isinstance(node, NumberLiteral) and node.value < 0:
        return _UNARY  # printed with a leading minus, which the grammar reads as unary
    if isinstance(node, InList | PatternMatch):
        return _UNARY  # a predicate binds to a primary but prints after it
    return _PRIMARY


def _expr(node: Expr, needed: int) -> str:
    text = _expr_text(node)
    return f"({text})" if _strength(node) < needed else text


def _expr_text(node: Expr) -> str:
    if isinstance(node, StringLiteral):
        return _string(node.value, node.raw)
    if isinstance(node, BooleanLiteral):
        return "true" if node.value else "false"
    if isinstance(node, NullLiteral):
        return "null"
    if isinstance(node, NumberLiteral):
        return repr(node.value)
    if isinstance(node, Field):
        return ("?" if node.optional else "") + ".".join(_name(part) for part in node.path)
    if isinstance(node, FunctionCall):
        args = ", ".join(_expr(arg, 0) for arg in node.args)
        return f"{node.name}{'~' if node.case_insensitive else ''}({args})"
    if isinstance(node, Or):
        return " or ".join(_expr(item, _AND) for item in node.operands)
    if isinstance(node, And):
        return " and ".join(_expr(item, _NOT) for item in node.operands)
    if isinstance(node, Not):
        return "not " + _expr(node.operand, _NOT)
    if isinstance(node, Comparison):
        return f"{_expr(node.left, _ADD)} {node.op} {_expr(node.right, _ADD)}"
    if isinstance(node, Arithmetic):
        level = _strength(node)
        return f"{_expr(node.left, level)} {node.op} {_expr(node.right, level + 1)}"
    if isinstance(node, Negate):
        return "-" + _expr(node.operand, _UNARY)
    if isinstance(node, InList):
        values = ", ".join(_expr(value, 0) for value in node.values)
        return f"{_expr(node.expr, _PRIMARY)} {node.op} ({values})"
    if isinstance(node, PatternMatch):
        patterns = ", ".join(_expr(value, _PRIMARY) for value in node.patterns)
        if node.is_list or len(node.patterns) != 1:
            patterns = f"({patterns})"
        return f"{_expr(node.expr, _PRIMARY)} {node.op} {patterns}"
    raise TypeError(f"cannot format {type(node).__name__}")


def _check_children_declared() -> None:
    # Guard against a node class that holds children but forgot to declare them in _children,
    # which would silently hide nodes from walk().
    for cls in list(globals().values()):
        if isinstance(cls, type) and issubclass(cls, Node) and cls.__dataclass_fields__:
            for f in fields(cls):
                if f.name in ("line", "column", "end_line", "end_column"):
                    continue
                annotation = str(f.type)
                holds_node = any(
                    name in annotation
                    for name in (
                        "Expr",
                        "Field",
                        "Step",
                        "EventQuery",
                        "MaxSpan",
                        "Pipe",
                        "Literal",
                        "Sequence",
                        "Sample",
                    )
                )
                if holds_node and f.name not in cls._children:
                    raise AssertionError(f"{cls.__name__}.{f.name} missing from _children")


_check_children_declared()
