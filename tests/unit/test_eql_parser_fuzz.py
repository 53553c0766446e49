"""Property tests: the EQL parser never fails with anything but an EQL error."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from deployer.eql import ast
from deployer.eql.errors import EqlSyntaxError, EqlUnsupportedError
from deployer.eql.parser import parse

VALID = [
    'process where process.name == "cmd.exe"',
    'process where process.name : ("cmd.exe", "pwsh*") and not process.args_count > 3',
    'any where ?host.name in~ ("A", "b") or user.name like~ "adm*"',
    'file where startsWith~(file.path, "C:\\\\Users") and length(file.name) >= 4 | head 5',
    'network where destination.port % 2 == 1 and -source.port < -1 and cidrMatch(source.ip, "10.0.0.0/8")',
    'process where process.command_line regex~ """.*-enc(odedcommand)?.*""" | tail 3 | head 1',
    '"my-category" where `odd field`.`x``y` != null and @timestamp >= 0',
    "sequence by process.entity_id with maxspan=30s\n"
    '  [process where event.type == "start"] by process.parent.entity_id\n'
    "  [network where true] by process.entity_id with runs=2\n"
    'until [process where event.type == "end"] by process.entity_id',
    'sequence with maxspan=1m [process where true] ![file where file.name : "*.tmp"] [network where true]',
    "sample by host.id [process where true] [network where true]",
    'process where concat(a, "-", string(b)) == "x-1" /* block /* nested */ comment */ // line comment',
]

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# Characters that matter to the lexer and the grammar, plus some that never appear in EQL.
ALPHABET = st.sampled_from(
    list("abcdefgwhereinotlkxyzANDOR_@0123456789 \t\n.,:;=!<>+-*/%()[]{}|?~`'\"\\#&^$é\u00a0")
)
TOKENS = st.sampled_from(
    [
        "process",
        "where",
        "any",
        "sequence",
        "sample",
        "by",
        "with",
        "maxspan",
        "=",
        "runs",
        "until",
        "[",
        "]",
        "![",
        "(",
        ")",
        ",",
        "|",
        "head",
        "tail",
        "and",
        "or",
        "not",
        "in",
        "in~",
        "like",
        "like~",
        "regex",
        "regex~",
        ":",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "+",
        "-",
        "*",
        "/",
        "%",
        "?",
        "x",
        "a.b",
        "`q`",
        '"s"',
        '"""r"""',
        "'x'",
        "1",
        "2.5",
        "1e3",
        "10s",
        "true",
        "false",
        "null",
        "startsWith~",
        "length",
        "concat",
        "of",
        "join",
        "descendant",
        "[0]",
        "/*",
        "*/",
        "//",
    ]
)


def _check(text: str) -> None:
    try:
        query = parse(text)
    except (EqlSyntaxError, EqlUnsupportedError) as exc:
        assert isinstance(exc.message, str) and exc.message
        if isinstance(exc, EqlSyntaxError):
            assert exc.line >= 1 and exc.column >= 1
        return
    assert isinstance(query, ast.Query)
    for node in ast.walk(query):
        assert node.line >= 1 and node.column >= 1
    # Whatever parses can be printed back and reparsed to the same tree.
    assert parse(ast.to_eql(query)) == query


@SETTINGS
@given(st.text(ALPHABET, max_size=80))
@example("")
@example("process where")
@example('process where x == "\\u{d800}"')
@example('process where x == "\\u{110000}"')
@example('process where x == "\\u{}"')
@example("process where x[")
def test_random_text_only_raises_eql_errors(text: str) -> None:
    _check(text)


@SETTINGS
@given(st.lists(TOKENS, max_size=25))
def test_random_token_sequences_only_raise_eql_errors(tokens: list[str]) -> None:
    _check(" ".join(tokens))


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "token"]))
        if action == "insert":
            text = text[:position] + draw(ALPHABET) + text[position:]
        elif action == "delete":
            width = draw(st.integers(1, 6))
            text = text[:position] + text[position + width :]
        elif action == "replace":
            text = text[:position] + draw(ALPHABET) + text[position + 1 :]
        else:
            text = text[:position] + " " + draw(TOKENS) + " " + text[position:]
    return text


@SETTINGS
@given(mutated())
def test_mutated_valid_queries_only_raise_eql_errors(text: str) -> None:
    _check(text)


def test_corpus_is_valid() -> None:
    for text in VALID:
        assert isinstance(parse(text), ast.Query)


@SETTINGS
@given(
    value=st.text(max_size=30),
    raw=st.booleans(),
    path=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=3),
    optional=st.booleans(),
    category=st.one_of(st.none(), st.text(max_size=10).filter(lambda c: "\n" not in c and "\r" not in c)),
)
def test_any_string_and_field_name_round_trips(
    value: str, raw: bool, path: list[str], optional: bool, category: str | None
) -> None:
    condition = ast.Comparison("==", ast.Field(tuple(path), optional), ast.StringLiteral(value, raw))
    query = ast.Query(ast.EventQuery(category, condition))
    text = ast.to_eql(query)
    reparsed = parse(text)
    expected_raw = raw and '"""' not in value and "\n" not in value and "\r" not in value
    assert reparsed == ast.Query(
        ast.EventQuery(
            category,
            ast.Comparison("==", ast.Field(tuple(path), optional), ast.StringLiteral(value, expected_raw)),
        )
    )


# ------------------------------------------------------------------ generated trees

NAMES = st.sampled_from(["a", "b", "process.name", "x.y.z", "my field", "in", "@timestamp", "a`b"])
STRINGS = st.text(alphabet=st.sampled_from(list('ab*?"\\\n\t é')), max_size=6)
PATTERN_CONSTANTS = st.one_of(
    st.builds(ast.StringLiteral, STRINGS, st.booleans()),
    st.builds(ast.NumberLiteral, st.integers(0, 10**6)),
    st.builds(ast.NumberLiteral, st.floats(0, 1e6, allow_nan=False, allow_infinity=False)),
    st.builds(ast.BooleanLiteral, st.booleans()),
    st.just(ast.NullLiteral()),
)
CONSTANTS = st.one_of(PATTERN_CONSTANTS, st.builds(ast.NumberLiteral, st.integers(-(10**6), -1)))
FIELDS = st.builds(
    lambda parts, optional: ast.Field(tuple(parts), optional),
    st.lists(NAMES, min_size=1, max_size=2),
    st.booleans(),
)


def _valid_raw(literal: ast.Literal) -> ast.Literal:
    # The printer falls back to an escaped string when a raw one cannot hold the value.
    if (
        isinstance(literal, ast.StringLiteral)
        and literal.raw
        and ('"""' in literal.value or "\n" in literal.value or "\r" in literal.value)
    ):
        return ast.StringLiteral(literal.value, False)
    return literal


# Expressions without (non-optional) fields: the right-hand side of comparisons and `in` lists.
CONSTANT_EXPRESSIONS = st.recursive(
    CONSTANTS,
    lambda inner: st.one_of(
        st.builds(ast.Arithmetic, st.sampled_from(["+", "-", "*"]), inner, inner),
        st.builds(
            lambda args: ast.FunctionCall("concat", tuple(args)), st.lists(inner, min_size=1, max_size=2)
        ),
    ),
    max_leaves=3,
)


def _extend(children: st.SearchStrategy[ast.Expr]) -> st.SearchStrategy[ast.Expr]:
    return st.one_of(
        st.builds(ast.Arithmetic, st.sampled_from(["+", "-", "*", "/", "%"]), children, children),
        st.builds(ast.Negate, children),
        st.builds(
            ast.Comparison, st.sampled_from(sorted(ast.COMPARISON_OPS)), children, CONSTANT_EXPRESSIONS
        ),
        st.builds(
            ast.InList,
            st.sampled_from(sorted(ast.IN_OPS)),
            children,
            st.lists(CONSTANT_EXPRESSIONS, min_size=1, max_size=3).map(tuple),
        ),
        st.builds(
            lambda op, expr, pats: ast.PatternMatch(op, expr, tuple(pats), len(pats) > 1),
            st.sampled_from(sorted(ast.PATTERN_OPS)),
            children,
            st.lists(PATTERN_CONSTANTS, min_size=1, max_size=3),
        ),
        st.builds(ast.Not, children),
        st.lists(children, min_size=2, max_size=3).map(lambda ops: ast.And(tuple(ops))),
        st.lists(children, min_size=2, max_size=3).map(lambda ops: ast.Or(tuple(ops))),
        st.builds(
            lambda name, args, ci: ast.FunctionCall(name, tuple(args), ci),
            st.sampled_from(["startsWith", "endsWith", "stringContains"]),
            st.lists(children, min_size=2, max_size=2),
            st.booleans(),
        ),
        st.builds(
            lambda args: ast.FunctionCall("concat", tuple(args)), st.lists(children, min_size=1, max_size=3)
        ),
    )


EXPRESSIONS = st.recursive(st.one_of(CONSTANTS, FIELDS), _extend, max_leaves=8)


def _canonical(node: ast.Expr) -> ast.Expr:
    """The tree as the parser builds it: signs folded into numbers, leading And/Or merged, and
    raw strings that cannot be written raw printed escaped."""
    if isinstance(node, ast.Literal):
        return _valid_raw(node)
    if isinstance(node, ast.PatternMatch):
        return ast.PatternMatch(
            node.op, _canonical(node.expr), tuple(_valid_raw(p) for p in node.patterns), node.is_list
        )
    if isinstance(node, ast.Comparison | ast.Arithmetic):
        return type(node)(node.op, _canonical(node.left), _canonical(node.right))
    if isinstance(node, ast.InList):
        return ast.InList(node.op, _canonical(node.expr), tuple(_canonical(v) for v in node.values))
    if isinstance(node, ast.Negate):
        operand = _canonical(node.operand)
        if isinstance(operand, ast.NumberLiteral):
            return ast.NumberLiteral(-operand.value)
        return ast.Negate(operand)
    if isinstance(node, ast.Not):
        return ast.Not(_canonical(node.operand))
    if isinstance(node, ast.And | ast.Or):
        operands = [_canonical(o) for o in node.operands]
        if isinstance(operands[0], type(node)):
            operands = list(operands[0].operands) + operands[1:]  # type: ignore[attr-defined]
        return type(node)(tuple(operands))
    if isinstance(node, ast.FunctionCall):
        return ast.FunctionCall(node.name, tuple(_canonical(a) for a in node.args), node.case_insensitive)
    return node


@SETTINGS
@given(EXPRESSIONS)
def test_generated_expressions_round_trip(expression: ast.Expr) -> None:
    # Precedence and associativity: printing then parsing gives back the same tree.
    query = ast.Query(ast.EventQuery("process", expression))
    expected = ast.Query(ast.EventQuery("process", _canonical(expression)))
    assert parse(ast.to_eql(query)) == expected
