"""EQL parser: AST shapes, Elasticsearch's accept/reject rules, error positions and hints."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from deployer.eql import ast
from deployer.eql.ast import (
    And,
    Arithmetic,
    BooleanLiteral,
    Comparison,
    EventQuery,
    Field,
    FunctionCall,
    InList,
    Negate,
    Not,
    NullLiteral,
    NumberLiteral,
    Or,
    PatternMatch,
    Sample,
    Sequence,
    StringLiteral,
)
from deployer.eql.errors import EqlError, EqlSyntaxError, EqlUnsupportedError
from deployer.eql.parser import parse


def cond(text: str) -> ast.Expr:
    """The condition of ``process where <text>``."""
    body = parse(f"process where {text}").body
    assert isinstance(body, EventQuery)
    return body.condition


def f(*path: str, optional: bool = False) -> Field:
    return Field(tuple(path), optional)


def s(value: str, raw: bool = False) -> StringLiteral:
    return StringLiteral(value, raw)


def n(value: float) -> NumberLiteral:
    return NumberLiteral(value)


# ------------------------------------------------------------------ queries


def test_event_query() -> None:
    query = parse('process where process.name == "cmd.exe"')
    assert query.kind == "event"
    assert query.pipes == ()
    assert query.body == EventQuery("process", Comparison("==", f("process", "name"), s("cmd.exe")))


def test_any_and_string_categories() -> None:
    assert parse("any where true").body == EventQuery(None, BooleanLiteral(True))
    assert parse('"my-category" where true').body == EventQuery("my-category", BooleanLiteral(True))
    # A quoted "any" is an ordinary category name, not the keyword.
    assert parse('"any" where true').body.category == "any"  # type: ignore[union-attr]


def test_sequence_keys_maxspan_runs_until_missing() -> None:
    query = parse(
        "sequence by host.id with maxspan=30s\n"
        "  [process where true] by process.entity_id with runs=2\n"
        "  ![file where true] by process.entity_id\n"
        "  [network where true] by process.entity_id\n"
        "until [process where false] by process.entity_id\n"
        "| tail 3"
    )
    assert query.kind == "sequence"
    seq = query.body
    assert isinstance(seq, Sequence)
    assert seq.by == (f("host", "id"),)
    assert seq.maxspan is not None
    assert (seq.maxspan.text, seq.maxspan.amount, seq.maxspan.unit, seq.maxspan.millis) == (
        "30s",
        30,
        "s",
        30_000,
    )
    assert [step.runs for step in seq.steps] == [2, 1, 1]
    assert [step.missing for step in seq.steps] == [False, True, False]
    assert [step.query.category for step in seq.steps] == ["process", "file", "network"]
    assert all(step.by == (f("process", "entity_id"),) for step in seq.steps)
    assert seq.keys_for(seq.steps[0]) == (f("host", "id"), f("process", "entity_id"))
    assert len(seq.expanded_steps()) == 4
    assert seq.until is not None and seq.until.query.condition == BooleanLiteral(False)
    assert [(pipe.name, pipe.count) for pipe in query.pipes] == [("tail", 3)]


@pytest.mark.parametrize(
    ("span", "millis"),
    [("500ms", 500), ("10s", 10_000), ("2m", 120_000), ("1h", 3_600_000), ("1d", 86_400_000)],
)
def test_maxspan_units(span: str, millis: int) -> None:
    seq = parse(f"sequence with maxspan={span} [a where true] [b where true]").body
    assert isinstance(seq, Sequence) and seq.maxspan is not None
    assert seq.maxspan.millis == millis
    assert seq.maxspan.text == span


def test_sequence_without_keys_or_maxspan() -> None:
    seq = parse("sequence [a where true] [b where true]").body
    assert isinstance(seq, Sequence)
    assert (seq.by, seq.maxspan, seq.until) == ((), None, None)


def test_sample() -> None:
    query = parse("sample by host.id [process where true] by user.id [network where true] by user.id")
    assert query.kind == "sample"
    sample = query.body
    assert isinstance(sample, Sample)
    assert sample.by == (f("host", "id"),)
    assert sample.keys_for(sample.steps[1]) == (f("host", "id"), f("user", "id"))


def test_pipes_chain() -> None:
    query = parse("process where true | head 5 | tail 2 | head 0")
    assert [(p.name, p.count) for p in query.pipes] == [("head", 5), ("tail", 2), ("head", 0)]


# ------------------------------------------------------------------ operators


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
def test_comparison_operators_are_distinct(op: str) -> None:
    assert cond(f"x {op} 1") == Comparison(op, f("x"), n(1))


@pytest.mark.parametrize("op", [":", "like", "like~", "regex", "regex~"])
def test_pattern_operators_single_and_list(op: str) -> None:
    assert cond(f'x {op} "a*"') == PatternMatch(op, f("x"), (s("a*"),), is_list=False)
    assert cond(f'x {op} ("a*", "b")') == PatternMatch(op, f("x"), (s("a*"), s("b")), is_list=True)


def test_pattern_flags() -> None:
    assert cond('x : "a"').case_insensitive  # type: ignore[attr-defined]
    assert not cond('x like "a"').case_insensitive  # type: ignore[attr-defined]
    assert cond('x regex~ "a"').is_regex  # type: ignore[attr-defined]


@pytest.mark.parametrize("op", ["in", "in~", "not in", "not in~"])
def test_membership_operators(op: str) -> None:
    node = cond(f'x {op} ("a", 1, null)')
    assert node == InList(op, f("x"), (s("a"), n(1), NullLiteral()))
    assert isinstance(node, InList)
    assert node.negated == op.startswith("not")
    assert node.case_insensitive == op.endswith("~")


def test_boolean_precedence_and_flattening() -> None:
    a, b, c = (Comparison("==", f(name), n(1)) for name in "abc")
    assert cond("a == 1 or b == 1 and c == 1") == Or((a, And((b, c))))
    assert cond("a == 1 and b == 1 and c == 1") == And((a, b, c))
    assert cond("(a == 1 or b == 1) and c == 1") == And((Or((a, b)), c))
    assert cond("not a == 1 and b == 1") == And((Not(a), b))
    assert cond("not not a == 1") == Not(Not(a))


def test_arithmetic_precedence_and_unary_minus() -> None:
    assert cond("a + b * 2 - c % 3 == 1") == Comparison(
        "==",
        Arithmetic(
            "-", Arithmetic("+", f("a"), Arithmetic("*", f("b"), n(2))), Arithmetic("%", f("c"), n(3))
        ),
        n(1),
    )
    assert cond("x / 2 == 41") == Comparison("==", Arithmetic("/", f("x"), n(2)), n(41))
    # A minus before a number folds into the literal; before anything else it is Negate.
    assert cond("x > -1") == Comparison(">", f("x"), n(-1))
    assert cond("-x < 5") == Comparison("<", Negate(f("x")), n(5))
    assert cond("+x < 5") == Comparison("<", f("x"), n(5))
    # As in Elasticsearch's grammar, a predicate binds to the primary before the unary minus.
    assert cond("-x in (1, 2)") == Negate(InList("in", f("x"), (n(1), n(2))))


def test_functions_and_case_insensitive_variant() -> None:
    assert cond('startsWith~(process.name, "cmd")') == FunctionCall(
        "startsWith", (f("process", "name"), s("cmd")), case_insensitive=True
    )
    # Names match case-insensitively and are stored in the registry's spelling.
    assert cond('CONCAT(a, "") == "x"') == Comparison("==", FunctionCall("concat", (f("a"), s(""))), s("x"))
    assert cond("length(a) > 0") == Comparison(">", FunctionCall("length", (f("a"),)), n(0))


def test_field_references() -> None:
    assert cond("?x.y") == f("x", "y", optional=True)
    assert cond("@timestamp >= 0") == Comparison(">=", f("@timestamp"), n(0))
    assert cond("`my field`.`a``b` == 1") == Comparison("==", f("my field", "a`b"), n(1))
    assert f("a", "b").name == "a.b"


def test_literals() -> None:
    assert cond('x == "a\\tb\\"c\\\\d\\u{41}\\\'"') == Comparison("==", f("x"), s("a\tb\"c\\dA'"))
    assert cond('x == """C:\\raw\\s+"""') == Comparison("==", f("x"), s("C:\\raw\\s+", raw=True))
    # Up to two extra quotes close a raw string and belong to the value, as in Elasticsearch.
    assert cond('x == """a""""') == Comparison("==", f("x"), s('a"', raw=True))
    assert cond("x == 1.5") == Comparison("==", f("x"), n(1.5))
    assert cond("x == 2e3") == Comparison("==", f("x"), n(2000.0))
    assert cond("x == .5") == Comparison("==", f("x"), n(0.5))
    assert cond("x == true") == Comparison("==", f("x"), BooleanLiteral(True))
    assert cond("x == null") == Comparison("==", f("x"), NullLiteral())
    big = cond("x == 99999999999999999999")
    assert isinstance(big, Comparison) and isinstance(big.right.value, float)  # type: ignore[attr-defined]
    assert isinstance(cond("x == 5").right.value, int)  # type: ignore[attr-defined]


def test_comments() -> None:
    query = parse("process where /* a /* nested */ comment */ x == 1 // trailing\n and y == 2")
    assert query.body.condition == And(  # type: ignore[union-attr]
        (Comparison("==", f("x"), n(1)), Comparison("==", f("y"), n(2)))
    )


def test_optional_fields_may_be_compared() -> None:
    # Unmapped optional fields fold to null, so Elasticsearch accepts this.
    assert cond("?x == ?y") == Comparison("==", f("x", optional=True), f("y", optional=True))


# ------------------------------------------------------------------ positions, walk, contract


def test_positions_are_one_based_and_relative_to_query() -> None:
    text = 'sequence by user.id\n  [process where process.name : "a"]\n  [file where ?file.path != null]'
    query = parse(text)
    fields = list(ast.field_refs(query))
    assert [(x.name, x.line, x.column, x.end_line, x.end_column) for x in fields] == [
        ("user.id", 1, 13, 1, 20),
        ("process.name", 2, 18, 2, 30),
        ("file.path", 3, 15, 3, 25),
    ]
    seq = query.body
    assert isinstance(seq, Sequence)
    assert (seq.steps[1].line, seq.steps[1].column) == (3, 3)
    assert (query.line, query.column, query.end_line, query.end_column) == (1, 1, 3, 34)


def test_positions_inside_multi_line_value_lists() -> None:
    query = parse('process where x in (\n  "a", "bb",\n   7\n ) and\n  y : ("q")')
    spans = [
        (type(node).__name__, node.line, node.column, node.end_line, node.end_column)
        for node in ast.walk(query)
    ]
    assert spans[3:] == [
        ("InList", 1, 15, 4, 3),
        ("Field", 1, 15, 1, 16),
        ("StringLiteral", 2, 3, 2, 6),
        ("StringLiteral", 2, 8, 2, 12),
        ("NumberLiteral", 3, 4, 3, 5),
        ("PatternMatch", 5, 3, 5, 12),
        ("Field", 5, 3, 5, 4),
        ("StringLiteral", 5, 8, 5, 11),
    ]


def test_value_lists_parse_the_same_with_or_without_the_fast_path() -> None:
    # Lists of plain strings/integers are lexed as one token; other lists take the general path.
    assert cond('x in ("a", 1)') == InList("in", f("x"), (s("a"), n(1)))
    assert cond('x in ("a", 1.5, -2, """r""", ?y)') == InList(
        "in", f("x"), (s("a"), n(1.5), n(-2), s("r", raw=True), f("y", optional=True))
    )
    assert cond('x : ("a" /* c */, "b")') == PatternMatch(":", f("x"), (s("a"), s("b")), is_list=True)
    with pytest.raises(EqlSyntaxError) as caught:
        parse('process where x in ("a", "b\\q")')
    assert (caught.value.line, caught.value.column) == (1, 28)


def test_walk_visits_every_node_parents_first() -> None:
    query = parse('sequence by a [x where b == 1 and c : "z"] by d [y where startsWith(e, "q")] by g')
    kinds = [type(node).__name__ for node in ast.walk(query)]
    assert kinds[:3] == ["Query", "Sequence", "Field"]
    assert [x.name for x in ast.field_refs(query)] == ["a", "b", "c", "d", "e", "g"]
    assert kinds.count("Step") == 2


def test_equality_ignores_positions_and_nodes_are_frozen() -> None:
    one = parse("process where x == 1")
    other = parse("process   where\n  x ==   1")
    assert one == other and hash(one) == hash(other)
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.body.category = "file"  # type: ignore[misc, union-attr]


def test_to_eql_round_trips() -> None:
    text = (
        'sequence by a with maxspan=5m [process where x : ("a", "b*") and not y in~ ("Q")] by b with runs=3 '
        '![file where -z * (1 + 2) > -3 and `odd name` != """r\\aw"""] by c '
        '[any where startsWith~(w, "c") or ?v like "x"] by `d e` until ["my cat" where true] by f | head 3'
    )
    query = parse(text)
    assert parse(ast.to_eql(query)) == query


def test_package_import_is_light() -> None:
    code = "import sys, deployer.eql, deployer.eql.ast, deployer.eql.errors; print('lark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_error_classes() -> None:
    error = EqlSyntaxError("bad", 2, 5, hint="fix it")
    assert (error.message, error.line, error.column, error.hint) == ("bad", 2, 5, "fix it")
    assert str(error) == "line 2, column 5: bad (hint: fix it)"
    assert isinstance(error, EqlError) and isinstance(error, ValueError)
    unsupported = EqlUnsupportedError("not supported offline: sample")
    assert unsupported.line is None and str(unsupported) == "not supported offline: sample"
    import pickle

    assert pickle.loads(pickle.dumps(error)).hint == "fix it"


def test_non_string_input() -> None:
    with pytest.raises(TypeError):
        parse(b"process where true")  # type: ignore[arg-type]


# ------------------------------------------------------------------ rejections

REJECTED = [
    # (query, line, column, message fragment, hint fragment or None)
    ("process where x == 'a'", 1, 20, "Use double quotes", 'write "a"'),
    ('process where x == ?"a"', 1, 20, "Use triple double quotes", '"""a"""'),
    ("process where x = 1", 1, 17, "unexpected `=`", "use `==`"),
    ("process where x == 1 AND y == 2", 1, 22, "unexpected name `AND`", "keywords are lowercase"),
    ("process x == 1", 1, 9, "expected `where`", "<category> where <condition>"),
    ("process where x == 1 || y == 2", 1, 22, "unexpected `||`", "use `or`"),
    ("process where x == 1 && y == 2", 1, 22, "unexpected character '&'", "use `and`"),
    ("process where !x", 1, 15, "unexpected character '!'", "`not`"),
    ("process where in == 1", 1, 15, "unexpected `in`", "reserved word"),
    ("process where x < y < 3", 1, 21, "unexpected `<`", None),
    ("process where (x == 1", 1, 22, "unexpected end of query", "`(` is not closed"),
    ("sequence [a where true] [b where true", 1, 38, "unexpected end of query", "`[` is not closed"),
    ("", 1, 1, "unexpected end of query", None),
    ('process where x == "abc', 1, 20, "unterminated string", None),
    ("process where x == 1 /* open", 1, 22, "unterminated comment", None),
    ('process where x == "\\w"', 1, 21, "invalid escape sequence [\\w]", 'raw string """..."""'),
    ('process where x == "\\u{1}"', 1, 21, "[2-8] hex digits", None),
    ('process where x == "\\u{d800}"', 1, 21, "surrogate", None),
    # Pipes
    ("process where true | filter x == 1", 1, 22, "Pipe [filter] is not supported", "head N"),
    ("process where true | unique a b", 1, 22, "Pipe [unique] is not supported", None),
    ("process where true | tial 2", 1, 22, "Unrecognized pipe [tial], did you mean tail?", None),
    ("process where true | head", 1, 20, "expects exactly one argument", None),
    ("process where true | head -1", 1, 27, "expects a positive integer", None),
    ("process where true | head 2.5", 1, 27, "expects a positive integer", None),
    # Constructs Elasticsearch does not support
    ("join by a [x where true] [y where true]", 1, 1, "join is not supported", "`sequence`"),
    ("process where descendant of [file where true]", 1, 15, "Process relationships are not supported", None),
    ("process where x.y[0] == 1", 1, 19, "Array indexes are not supported", None),
    ("process where arrayContains(x, 1)", 1, 15, "Unknown function [arrayContains]", None),
    ("process where lenght(x) > 1", 1, 15, "Unknown function [lenght]", "did you mean length?"),
    ("process where length~(x) > 1", 1, 15, "has no case-insensitive [~] variant", None),
    ("process where startsWith(x) == true", 1, 15, "expects 2 arguments, found [1]", None),
    ("process where substring(x) == 1", 1, 15, "expects 2 to 3 arguments", None),
    (
        "process where a == b",
        1,
        20,
        "Comparisons against fields are not supported; offender [b] in [==]",
        None,
    ),
    ("process where length(a) < length(b)", 1, 34, "offender [b] in [<]", None),
    ("process where a in (b, 1)", 1, 21, "offender [b] in [in]", None),
    ("process where x : ?y", 1, 19, "unexpected `?`", None),
    # Sequences
    ("sequence [a where true]", 1, 1, "minimum of 2 queries", None),
    ("sequence with maxspan=1.5s [a where true] [b where true]", 1, 23, "Decimal time interval", "1500ms"),
    ("sequence with maxspan=0s [a where true] [b where true]", 1, 23, "positive maxspan value", None),
    ("sequence with maxspan=10 [a where true] [b where true]", 1, 23, "No time unit specified", None),
    ("sequence with maxspan=10y [a where true] [b where true]", 1, 25, "Unrecognized time unit [y]", None),
    (
        "sequence with maxspan=1s by k [a where true] [b where true]",
        1,
        26,
        "specify sequence [by] before [with]",
        None,
    ),
    ("sequence by k [a where true] by j [b where true]", 1, 35, "Inconsistent number of join keys", None),
    (
        "sequence [a where true] by k [b where true] by k until [c where true]",
        1,
        56,
        "Inconsistent number",
        None,
    ),
    ("sequence by k * 2 [a where true] [b where true]", 1, 13, "Unsupported join key", None),
    ("sequence [a where true] [b where true] with runs=0", 1, 50, "between 1 and 100", None),
    ("sequence [a where true] [b where true] with runs=101", 1, 50, "between 1 and 100", None),
    (
        "sequence [a where true] [b where true] with fork=2",
        1,
        45,
        "Unrecognized sequence term parameter [fork]",
        None,
    ),
    ("sequence [a where true] ![b where true]", 1, 25, "require `with maxspan`", None),
    ("sequence with maxspan=1s ![a where true] ![b where true]", 1, 1, "at least one positive", None),
    (
        "sequence [a where true] [b where true] until ![c where true]",
        1,
        46,
        "`until` cannot be a missing event",
        None,
    ),
    ("sample [a where true] ![b where true]", 1, 23, "not allowed in a sample", None),
    ("sample [a where true] [b where true] with runs=2", 1, 23, "not allowed in a sample", None),
    ("sample with maxspan=1s [a where true] [b where true]", 1, 8, "unexpected `with`", None),
    # Hints for common mistakes
    (
        "sequence [a where true] [b where true] with maxspan=5m",
        1,
        45,
        "unexpected `maxspan`",
        "right after `sequence`",
    ),
    ('process where x in "a"', 1, 20, "expected `(`", "parenthesised list"),
    ('process where x : ["a"]', 1, 19, "expected a constant", "lists are written in parentheses"),
    ("process where x == 1 or or y == 2", 1, 25, "unexpected `or`", "a condition is missing"),
    ('process where wildcard(x, "a*")', 1, 15, "Unknown function [wildcard]", "`:` or `like`"),
    # Multi-line position
    ("sequence\n  [process where true]\n  [file where x = 1]", 3, 17, "unexpected `=`", "use `==`"),
]


@pytest.mark.parametrize(
    ("text", "line", "column", "message", "hint"), REJECTED, ids=[r[0] for r in REJECTED]
)
def test_rejections_point_at_the_offending_token(
    text: str, line: int, column: int, message: str, hint: str | None
) -> None:
    with pytest.raises(EqlSyntaxError) as caught:
        parse(text)
    error = caught.value
    assert message in error.message
    assert (error.line, error.column) == (line, column), str(error)
    if hint is not None:
        assert error.hint is not None and hint in error.hint
