"""Elasticsearch EQL parser: query text → ``ast.Query``.

The grammar (``grammar.lark``) is parsed with lark's LALR(1) parser. Tokens come from the
tokenizer below, which follows Elasticsearch's lexical rules (EqlBase.g4) exactly and also
rejects, at the offending token, the constructs Elasticsearch recognises only to refuse them
(``join``, lineage ``of``, array indexes, unknown pipes, single-quoted and ``?"..."`` strings).
Rules Elasticsearch applies while building its plan (maxspan units, ``runs`` bounds, join key
counts, pipe arguments) are checked as each rule is reduced; the checks its verifier makes later
(function names and arity, field-to-field comparisons) run once the whole statement has parsed.
"""

from __future__ import annotations

import bisect
import difflib
import functools
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedInput, UnexpectedToken, VisitError
from lark.lexer import Lexer

from . import ast
from .errors import EqlSyntaxError
from .functions import FUNCTIONS as _FUNCTION_SPECS

__all__ = ["parse", "FUNCTIONS", "KEYWORDS"]

KEYWORDS: dict[str, str] = {
    "and": "AND",
    "any": "ANY",
    "by": "BY",
    "false": "FALSE",
    "in": "IN",
    "in~": "IN_INSENSITIVE",
    "join": "JOIN",
    "like": "LIKE",
    "like~": "LIKE_INSENSITIVE",
    "maxspan": "MAXSPAN",
    "not": "NOT",
    "null": "NULL",
    "of": "OF",
    "or": "OR",
    "regex": "REGEX",
    "regex~": "REGEX_INSENSITIVE",
    "sample": "SAMPLE",
    "sequence": "SEQUENCE",
    "true": "TRUE",
    "until": "UNTIL",
    "where": "WHERE",
    "with": "WITH",
}

# Elasticsearch's EQL function registry (the evaluator's, in `functions`): lower-case name →
# (canonical name, min args, max args or None for varargs, accepts the case-insensitive `~` variant).
FUNCTIONS: dict[str, tuple[str, int, int | None, bool]] = {
    key: (spec.name, spec.min_args, spec.max_args, spec.case_aware) for key, spec in _FUNCTION_SPECS.items()
}

# Endgame EQL functions that Elasticsearch dropped, and what to write instead.
_ENDGAME_FUNCTIONS = {
    "wildcard": 'Elasticsearch EQL matches wildcards with `:` or `like`: field : "a*"',
    "match": "Elasticsearch EQL matches regular expressions with `regex` / `regex~`",
    "matchlite": "Elasticsearch EQL matches regular expressions with `regex` / `regex~`",
    "arraycontains": "array fields match when any element matches: compare the field directly",
    "arraysearch": "array fields match when any element matches: compare the field directly",
    "arraycount": "Elasticsearch EQL has no array functions",
    "safe": "Elasticsearch EQL has no safe(); a failing function gives null",
}

_SUPPORTED_PIPES = ("head", "tail")
# Pipes Elasticsearch recognises by name but refuses to run (Endgame EQL had them).
_KNOWN_PIPES = ("count", "filter", "head", "sort", "tail", "unique", "unique_count")
_MAX_RUNS = 100
_LONG_MAX = 2**63 - 1

# ---------------------------------------------------------------------------- tokenizer

# One alternation, tried left to right; alternatives are ordered so that the first match is the
# longest one ANTLR would pick (raw strings before strings, `<=` before `<`, ...).
_TOKEN_RE = re.compile(
    r"""
    (?P<WS>[ \t\r\n]+)
  | (?P<LINE_COMMENT>//[^\r\n]*)
  | (?P<BLOCK_COMMENT>/\*)
  | (?P<RAW_STRING>"{3}[^\r\n]*?"{3}"?"?)
  | (?P<STRING>"(?:\\.|[^"\\\r\n])*")
  | (?P<LEGACY_STRING>'(?:\\.|[^'\\\r\n])*'|\?"(?:\\"|[^"\r\n])*"|\?'(?:\\'|[^'\r\n])*')
  | (?P<FIELD_PATH>(?:[A-Za-z_@][A-Za-z0-9_]*|`(?:[^`]|``)*`)(?:\.(?:[A-Za-z_@][A-Za-z0-9_]*|`(?:[^`]|``)*`))+)
  | (?P<QUOTED_IDENTIFIER>`(?:[^`]|``)*`)
  | (?P<TILDE_NAME>[A-Za-z][A-Za-z0-9_]*~)
  | (?P<NAME>[A-Za-z_@][A-Za-z0-9_]*)
  | (?P<DECIMAL_VALUE>\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)
  | (?P<INTEGER_VALUE>\d+)
  | (?P<OP>==|!=|!\[|<=|>=|[<>=:+\-*/%.,\[\]()|?])
    """,
    re.VERBOSE,
)

# A parenthesised list of plain strings and integers right after `in`, `:`, `like`, `regex` (and
# their `~` forms) is lexed as one CONSTANT_LIST token: rule queries carry long value lists, and
# one token instead of two per element makes parsing several times faster. Anything else in the
# list (raw strings, decimals, signs, comments, expressions) falls back to ordinary tokens.
_LIST_ITEM = r'(?:"(?:\\.|[^"\\\r\n])*"|\d+)'
_LIST_RE = re.compile(
    rf"[ \t\r\n]*\((?:[ \t\r\n]*{_LIST_ITEM}[ \t\r\n]*,)*[ \t\r\n]*{_LIST_ITEM}[ \t\r\n]*\)"
)
_LIST_ITEM_RE = re.compile(_LIST_ITEM)
_LIST_OPERATORS = frozenset(
    {"IN", "IN_INSENSITIVE", "SEQ", "LIKE", "LIKE_INSENSITIVE", "REGEX", "REGEX_INSENSITIVE"}
)

_PATH_PART_RE = re.compile(r"[A-Za-z_@][A-Za-z0-9_]*|`(?:[^`]|``)*`")

# `[` followed by an integer after a name is an array index (`field[0]`), never a sequence step.
_INDEX_RE = re.compile(r"[ \t\r\n]*\d")

_OPS = {
    "==": "EQ",
    "!=": "NEQ",
    "![": "MISSING_OPEN",
    "<=": "LTE",
    ">=": "GTE",
    "<": "LT",
    ">": "GT",
    "=": "ASGN",
    ":": "SEQ",
    "+": "PLUS",
    "-": "MINUS",
    "*": "ASTERISK",
    "/": "SLASH",
    "%": "PERCENT",
    ".": "DOT",
    ",": "COMMA",
    "[": "LB",
    "]": "RB",
    "(": "LP",
    ")": "RP",
    "|": "PIPE",
    "?": "QUESTION",
}

_CHAR_HINTS = {
    "&": "use `and` to combine conditions",
    "!": "use `not` to negate, or `!=` to compare",
    "'": "use double quotes for strings",
    "~": "`~` belongs right after a function name or operator, e.g. `startsWith~(...)`, `like~`",
    '"': "strings must end on the line they start; use \\n for a newline",
}


class _Positions:
    """Maps character offsets to 1-based (line, column)."""

    __slots__ = ("starts",)

    def __init__(self, text: str) -> None:
        self.starts = [0]
        if "\n" in text:
            self.starts.extend(m.end() for m in re.finditer("\n", text))

    def at(self, pos: int) -> tuple[int, int]:
        index = bisect.bisect_right(self.starts, pos) - 1
        return index + 1, pos - self.starts[index] + 1


def _error(message: str, line: int, column: int, hint: str | None = None) -> NoReturn:
    raise EqlSyntaxError(message, line, column, hint)


def _skip_block_comment(text: str, start: int, where: _Positions) -> int:
    """Return the offset after the (nestable) block comment opening at ``start``."""
    depth = 0
    pos = start
    while True:
        opening = text.find("/*", pos)
        closing = text.find("*/", pos)
        if closing < 0:
            _error("unterminated comment", *where.at(start), hint="close it with `*/`")
        if 0 <= opening < closing:
            depth += 1
            pos = opening + 2
        else:
            depth -= 1
            pos = closing + 2
            if depth == 0:
                return pos


# Token kinds that need a look at their neighbours (see the checks in _tokens).
_CHECKED = frozenset({"JOIN", "OF", "LB", "PIPE", "IDENTIFIER"})


def _tokens(text: str) -> Iterator[Token]:
    """Yield lark tokens for ``text``, raising EqlSyntaxError on what Elasticsearch rejects."""
    where = _Positions(text)
    pos = 0
    end = len(text)
    match = _TOKEN_RE.match
    # Positions are tracked incrementally: `line` and the offset where it starts.
    line = 1
    line_start = 0
    # The previous significant token: a few rejections need a little context.
    prev: Token | None = None
    first = True
    while pos < end:
        m = match(text, pos)
        if m is None:
            char = text[pos]
            hint = _CHAR_HINTS.get(char)
            if char == '"':
                _error("unterminated string", *where.at(pos), hint)
            _error(f"unexpected character {char!r}", *where.at(pos), hint)
        kind = m.lastgroup
        start = pos
        pos = m.end()
        if kind == "WS" or kind == "LINE_COMMENT" or kind == "BLOCK_COMMENT":
            if kind == "BLOCK_COMMENT":
                pos = _skip_block_comment(text, start, where)
            newlines = text.count("\n", start, pos)
            if newlines:
                line += newlines
                line_start = text.rindex("\n", start, pos) + 1
            continue
        value = m.group()
        column = start - line_start + 1
        if kind == "NAME":
            kind = KEYWORDS.get(value, "IDENTIFIER")
        elif kind == "OP":
            kind = _OPS[value]
        elif kind == "FIELD_PATH":
            # A dotted name lexed as one token (fewer tokens, faster parse). If a part is a keyword
            # (`a.in`), lex only the first part and let the grammar see the dots as usual.
            if text.startswith("~", pos) or any(part in KEYWORDS for part in _PATH_PART_RE.findall(value)):
                first_part = _PATH_PART_RE.match(value)
                assert first_part is not None
                value = first_part.group()
                pos = start + len(value)
                kind = "QUOTED_IDENTIFIER" if value.startswith("`") else KEYWORDS.get(value, "IDENTIFIER")
        elif kind == "TILDE_NAME":
            kind = KEYWORDS.get(value, "TILDE_IDENTIFIER")
        elif kind == "RAW_STRING":
            kind = "STRING"
        elif kind == "LEGACY_STRING":
            if value.startswith("?"):
                _error(
                    f'Use triple double quotes ["""] to define unescaped string literals, not [?{value[1]}]',
                    line,
                    column,
                    hint=f'write """{value[2:-1]}"""',
                )
            _error(
                "Use double quotes [\"] to define string literals, not single quotes [']",
                line,
                column,
                hint=f'write "{value[1:-1]}"',
            )
        if "\n" in value:  # only back-quoted names span lines
            token_line = line
            line += value.count("\n")
            line_start = start + value.rindex("\n") + 1
            token = Token(kind, value, start, token_line, column, line, pos - line_start + 1, pos)
        else:
            token = Token(kind, value, start, line, column, line, column + len(value), pos)

        if kind in _CHECKED:
            _check_neighbours(text, token, prev, first, pos, where)
        first = False
        prev = token
        yield token

        if kind in _LIST_OPERATORS:
            listed = _LIST_RE.match(text, pos)
            if listed is not None:
                token = _constant_list(text, listed, where)
                pos = listed.end()
                line = token.end_line  # type: ignore[assignment]
                line_start = pos - token.end_column + 1  # type: ignore[operator]
                prev = token
                yield token


def _check_neighbours(
    text: str, token: Token, prev: Token | None, first: bool, pos: int, where: _Positions
) -> None:
    """Rejections Elasticsearch makes as soon as it sees these tokens."""
    kind = token.type
    if kind == "JOIN" and first:
        _error(
            "join is not supported by Elasticsearch EQL",
            token.line,
            token.column,  # type: ignore[arg-type]
            hint="use `sequence` (ordered) or `sample` (unordered) instead",
        )
    if prev is None:
        return
    if kind == "OF" and prev.type == "IDENTIFIER":
        _error(
            "Process relationships are not supported",
            prev.line,
            prev.column,  # type: ignore[arg-type]
            hint=f"`{prev.value} of [...]` (lineage) is Endgame EQL; join on process.entity_id "
            "/ process.parent.entity_id with a `sequence by` instead",
        )
    if kind == "LB" and prev.type in ("IDENTIFIER", "QUOTED_IDENTIFIER", "FIELD_PATH"):
        index = _INDEX_RE.match(text, pos)
        if index is not None:
            _error(
                "Array indexes are not supported",
                *where.at(index.end() - 1),
                hint="array fields match when any element matches; compare the field directly",
            )
    if kind == "PIPE" and text.startswith("|", pos):
        _error(
            "unexpected `||`",
            token.line,
            token.column,  # type: ignore[arg-type]
            hint="use `or` to combine conditions",
        )
    if kind == "IDENTIFIER" and prev.type == "PIPE":
        _check_pipe_name(token)


class _ConstantList(Token):
    """One token for `("a", "b", 1)`; ``literals`` holds the decoded elements, with positions."""

    __slots__ = ("literals",)
    literals: tuple[ast.Literal, ...]


def _constant_list(text: str, listed: re.Match[str], where: _Positions) -> Token:
    opening = text.index("(", listed.start())
    literals: list[ast.Literal] = []
    line, column = where.at(opening)
    line_start = opening - column + 1
    previous_end = opening
    for item in _LIST_ITEM_RE.finditer(text, opening + 1, listed.end()):
        item_start = item.start()
        newlines = text.count("\n", previous_end, item_start)
        if newlines:
            line += newlines
            line_start = text.rindex("\n", previous_end, item_start) + 1
        previous_end = item.end()
        value = item.group()
        column = item_start - line_start + 1
        end_column = column + len(value)
        if value[0] == '"':
            literals.append(_decode(value, line, column, end_column))
        else:
            number = int(value)
            literals.append(
                ast.NumberLiteral(
                    number if number <= _LONG_MAX else float(number),
                    line=line,
                    column=column,
                    end_line=line,
                    end_column=end_column,
                )
            )
    closing = listed.end() - 1
    line += text.count("\n", previous_end, closing)
    if "\n" in text[previous_end:closing]:
        line_start = text.rindex("\n", previous_end, closing) + 1
    opening_line, opening_column = where.at(opening)
    token = _ConstantList(
        "CONSTANT_LIST",
        text[opening : listed.end()],
        opening,
        opening_line,
        opening_column,
        line,
        closing - line_start + 2,
        listed.end(),
    )
    token.literals = tuple(literals)
    return token


def _check_pipe_name(token: Token) -> None:
    name = token.value
    if name in _SUPPORTED_PIPES:
        return
    if name in _KNOWN_PIPES:
        _error(
            f"Pipe [{name}] is not supported",
            token.line,
            token.column,
            hint="Elasticsearch EQL runs only `| head N` and `| tail N`",
        )
    similar = difflib.get_close_matches(name, _KNOWN_PIPES, n=3, cutoff=0.6)
    message = f"Unrecognized pipe [{name}]"
    if similar:
        message += f", did you mean {similar[0] if len(similar) == 1 else 'any of ' + str(similar)}?"
    _error(message, token.line, token.column, hint="the supported pipes are `head N` and `tail N`")


class _EqlLexer(Lexer):
    """Adapter that feeds ``_tokens`` to lark's LALR parser."""

    def __init__(self, lexer_conf: Any) -> None:
        pass

    def lex(self, text: str) -> Iterator[Token]:  # type: ignore[override]
        return _tokens(text)


# ---------------------------------------------------------------------------- AST building


def _span(children: list[Any]) -> dict[str, int]:
    """Source span of a rule: from its first child's start to its last child's end."""
    first = children[0]
    last = children[-1]
    return {
        "line": first.line,
        "column": first.column,
        "end_line": last.end_line,
        "end_column": last.end_column,
    }


def _start(children: list[Any]) -> tuple[int, int]:
    return children[0].line, children[0].column


def _tspan(token: Token) -> dict[str, int]:
    return {
        "line": token.line,
        "column": token.column,
        "end_line": token.end_line,
        "end_column": token.end_column,
    }


_ESCAPES = {"t": "\t", "b": "\b", "f": "\f", "n": "\n", "r": "\r", '"': '"', "'": "'", "\\": "\\"}
_UNICODE_RE = re.compile(r"u\{([0-9A-Fa-f]*)\}")


def _decode_string(token: Token) -> ast.StringLiteral:
    return _decode(token.value, token.line, token.column, token.end_column)  # type: ignore[arg-type]


def _decode(value: str, line: int, column: int, end_column: int) -> ast.StringLiteral:
    """Decode a string token's text (strings never span lines)."""
    body = value[1:-1]
    if "\\" not in body and not value.startswith('"""'):
        return ast.StringLiteral(body, False, line=line, column=column, end_line=line, end_column=end_column)
    span = {"line": line, "column": column, "end_line": line, "end_column": end_column}
    if value.startswith('"""'):
        return ast.StringLiteral(value[3:-3], raw=True, **span)
    out: list[str] = []
    i = 0
    n = len(body)
    while i < n:
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        nxt = body[i + 1]  # the tokenizer guarantees a character after a backslash
        where = column + 1 + i
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        if nxt == "u":
            m = _UNICODE_RE.match(body, i + 1)
            if m is None:
                _error("invalid unicode escape", line, where, hint="write \\u{XXXX} with 2 to 8 hex digits")
            digits = m.group(1)
            if not 2 <= len(digits) <= 8:
                _error(
                    f"Unicode sequence should use [2-8] hex digits, [\\u{{{digits}}}] has [{len(digits)}]",
                    line,
                    where,
                )
            code = int(digits, 16)
            if 0xD800 <= code <= 0xDFFF:
                _error(f"Invalid unicode character code, [{digits}] is a surrogate code", line, where)
            if code > 0x10FFFF:
                _error(f"Invalid unicode character code [{digits}]", line, where)
            out.append(chr(code))
            i = m.end()
            continue
        _error(
            f"invalid escape sequence [\\{nxt}] in string",
            line,
            where,
            hint="escapes are \\n \\r \\t \\b \\f \\\" \\' \\\\ and \\u{XXXX}; write \\\\ for a backslash "
            'or use a raw string """..."""',
        )
    return ast.StringLiteral("".join(out), **span)


def _number(token: Token) -> ast.NumberLiteral:
    span = _tspan(token)
    if token.type == "INTEGER_VALUE":
        value = int(token.value)
        # Elasticsearch quietly reads integers too large for a long as doubles.
        return ast.NumberLiteral(value if value <= _LONG_MAX else float(value), **span)
    number = float(token.value)
    if number in (float("inf"), float("-inf")):
        _error(f"Number [{token.value}] is too large", token.line, token.column)
    return ast.NumberLiteral(number, **span)


def _has_field(node: ast.Node) -> ast.Field | None:
    """First non-optional field reference under ``node`` (an unmapped ``?field`` folds to null)."""
    if isinstance(node, ast.Literal):
        return None
    for item in ast.walk(node):
        if isinstance(item, ast.Field) and not item.optional:
            return item
    return None


class _Keys:
    """Join keys of a ``by`` clause, with the clause span for error messages."""

    __slots__ = ("fields", "line", "column", "end_line", "end_column")

    def __init__(self, fields: tuple[ast.Field, ...], children: list[Any]) -> None:
        self.fields = fields
        span = _span(children)
        self.line = span["line"]
        self.column = span["column"]
        self.end_line = span["end_line"]
        self.end_column = span["end_column"]


class _Pred:
    """A predicate (`in (...)`, `: "x"`, `like (...)`) waiting for its left-hand side."""

    __slots__ = ("op", "values", "is_list", "end_line", "end_column")

    def __init__(self, op: str, values: tuple[ast.Expr, ...], is_list: bool, end: Any) -> None:
        self.op = op
        self.values = values
        self.is_list = is_list
        self.end_line = end.end_line
        self.end_column = end.end_column


class _Subquery:
    __slots__ = ("query", "missing", "token", "end_line", "end_column")

    def __init__(self, query: ast.EventQuery, missing: bool, token: Token, close: Token) -> None:
        self.query = query
        self.missing = missing
        self.token = token
        self.end_line = close.end_line
        self.end_column = close.end_column

    @property
    def line(self) -> int:
        return self.token.line  # type: ignore[return-value]

    @property
    def column(self) -> int:
        return self.token.column  # type: ignore[return-value]


class _Term:
    """A built step plus what its parent rule must check (``with runs`` written, opening token)."""

    __slots__ = ("step", "runs_given", "opening", "line", "column", "end_line", "end_column")

    def __init__(self, step: ast.Step, runs_given: bool, opening: Token) -> None:
        self.step = step
        self.runs_given = runs_given
        self.opening = opening
        self.line, self.column = step.line, step.column
        self.end_line, self.end_column = step.end_line, step.end_column


class _Until:
    __slots__ = ("term", "line", "column", "end_line", "end_column")

    def __init__(self, token: Token, term: _Term) -> None:
        self.term = term
        self.line, self.column = token.line, token.column
        self.end_line, self.end_column = term.end_line, term.end_column


class _Builder(Transformer):
    """Builds ``ast`` nodes bottom-up while lark reduces (no parse tree is materialised)."""

    # ---- statement

    def start(self, children: list[Any]) -> ast.Query:
        body, *pipes = children
        query = ast.Query(body, tuple(pipes), **_span(children))
        _verify(query)
        return query

    def pipe(self, children: list[Any]) -> ast.Pipe:
        name_token = children[1]
        name = name_token.value
        args = [c for c in children[2:] if not isinstance(c, Token)]
        if len(args) != 1:
            _error(
                f"Pipe [{name}] expects exactly one argument but found [{len(args)}]",
                *_start(children),
                hint=f"write `| {name} 10`",
            )
        arg = args[0]
        if not (isinstance(arg, ast.NumberLiteral) and isinstance(arg.value, int) and arg.value >= 0):
            _error(
                f"Pipe [{name}] expects a positive integer", arg.line, arg.column, hint=f"write `| {name} 10`"
            )
        return ast.Pipe(name, arg.value, **_span(children))  # type: ignore[arg-type]

    # ---- queries

    def event_filter(self, children: list[Any]) -> ast.EventQuery:
        head, _where, condition = children
        category = None if head.type == "ANY" else str(head)
        return ast.EventQuery(category, condition, **_span(children))

    def event_value(self, children: list[Any]) -> Token:
        (token,) = children
        if token.type == "STRING":
            return Token.new_borrow_pos("EVENT_VALUE", _decode_string(token).value, token)
        return Token.new_borrow_pos("EVENT_VALUE", token.value, token)

    def subquery(self, children: list[Any]) -> _Subquery:
        opening, query, close = children
        return _Subquery(query, opening.type == "MISSING_OPEN", opening, close)

    def join_keys(self, children: list[Any]) -> _Keys:
        keys: list[ast.Field] = []
        for child in children[1:]:
            if isinstance(child, Token):
                continue
            if not isinstance(child, ast.Field):
                _error(
                    "Unsupported join key",
                    child.line,
                    child.column,
                    hint="join keys must be field names (no functions or arithmetic)",
                )
            keys.append(child)
        return _Keys(tuple(keys), children)

    def term_params(self, children: list[Any]) -> Token:
        _with, name, _asgn, number = children
        if name.value != "runs":
            _error(
                f"Unrecognized sequence term parameter [{name.value}]",
                name.line,
                name.column,
                hint="the only parameter of a sequence step is `with runs=N`",
            )
        if number.type != "INTEGER_VALUE":
            _error(
                f"Decimal runs value [{number.value}] not supported; use a positive integer",
                number.line,
                number.column,
            )
        runs = int(number.value)
        if not 1 <= runs <= _MAX_RUNS:
            _error(
                f"A runs value between 1 and {_MAX_RUNS} is required; found [{runs}]",
                number.line,
                number.column,
            )
        return Token.new_borrow_pos("RUNS", str(runs), number)

    def sequence_term(self, children: list[Any]) -> _Term:
        sub: _Subquery = children[0]
        keys: tuple[ast.Field, ...] = ()
        runs = 1
        runs_given = False
        for child in children[1:]:
            if isinstance(child, _Keys):
                keys = child.fields
            else:
                runs = int(child)
                runs_given = True
        step = ast.Step(sub.query, keys, runs, sub.missing, **_span(children))
        return _Term(step, runs_given, sub.token)

    def until_clause(self, children: list[Any]) -> _Until:
        return _Until(children[0], children[1])

    def sequence_params(self, children: list[Any]) -> ast.MaxSpan:
        return children[3]

    def time_unit(self, children: list[Any]) -> ast.MaxSpan:
        number = children[0]
        unit = children[1] if len(children) > 1 else None
        if number.type != "INTEGER_VALUE":
            _error(
                f"Decimal time interval [{number.value}] not supported; please use an positive integer",
                number.line,
                number.column,
                hint="e.g. `maxspan=1500ms` instead of `maxspan=1.5s`",
            )
        amount = int(number.value)
        if amount <= 0:
            _error(f"A positive maxspan value is required; found [{amount}]", number.line, number.column)
        if unit is None:
            _error(
                f"No time unit specified, did you mean [s] as in [{amount}s]?",
                number.line,
                number.column,
                hint="units are ms, s, m, h, d",
            )
        if unit.value not in ast.TIME_UNITS_MS:
            _error(
                f"Unrecognized time unit [{unit.value}] in [{amount}{unit.value}], "
                "please specify one of [ms, s, m, h, d]",
                unit.line,
                unit.column,
            )
        text = f"{number.value}{unit.value}"
        return ast.MaxSpan(
            text, amount, unit.value, amount * ast.TIME_UNITS_MS[unit.value], **_span(children)
        )

    def sequence(self, children: list[Any]) -> ast.Sequence:
        keys: _Keys | None = None
        maxspan: ast.MaxSpan | None = None
        steps: list[ast.Step] = []
        until: _Until | None = None
        for child in children[1:]:
            if isinstance(child, _Keys):
                keys = child
            elif isinstance(child, ast.MaxSpan):
                maxspan = child
            elif isinstance(child, _Term):
                steps.append(child.step)
            elif isinstance(child, _Until):
                until = child
        by = keys.fields if keys else ()
        _check_key_counts(by, steps + ([until.term.step] if until else []))
        expanded = sum(step.runs for step in steps)
        if expanded < 2:
            _error(
                f"A sequence requires a minimum of 2 queries, found [{expanded}]",
                *_start(children),
                hint="add a second `[...]` step, or use an event query",
            )
        missing = [step for step in steps if step.missing]
        if missing:
            if maxspan is None:
                first = missing[0]
                _error(
                    "Missing events (![...]) require `with maxspan`",
                    first.line,
                    first.column,
                    hint="write `sequence with maxspan=1m` (by keys go before `with`)",
                )
            if len(missing) == len(steps):
                _error("A sequence requires at least one positive (non-missing) step", *_start(children))
        until_step = None
        if until is not None:
            until_step = until.term.step
            if until_step.missing:
                _error(
                    "`until` cannot be a missing event", until.term.opening.line, until.term.opening.column
                )
            if until.term.runs_given:
                _error("`until` does not take `with runs`", until_step.line, until_step.column)
        return ast.Sequence(by, maxspan, tuple(steps), until_step, **_span(children))

    def sequence_by_after_with(self, children: list[Any]) -> NoReturn:
        keys = next(c for c in children if isinstance(c, _Keys))
        _error(
            "Please specify sequence [by] before [with] not after",
            keys.line,
            keys.column,
            hint="write `sequence by <keys> with maxspan=...`",
        )

    def sample(self, children: list[Any]) -> ast.Sample:
        keys: _Keys | None = None
        steps: list[ast.Step] = []
        for child in children[1:]:
            if isinstance(child, _Keys):
                keys = child
            elif isinstance(child, _Term):
                if child.step.missing:
                    _error(
                        "Missing events (![...]) are not allowed in a sample",
                        child.opening.line,
                        child.opening.column,
                    )
                if child.runs_given:
                    _error("`with runs` is not allowed in a sample", child.step.line, child.step.column)
                steps.append(child.step)
        by = keys.fields if keys else ()
        _check_key_counts(by, steps)
        return ast.Sample(by, tuple(steps), **_span(children))

    # ---- boolean expressions

    def boolean_chain(self, children: list[Any]) -> ast.Expr:
        # `and` binds tighter than `or`: split on `or`, join each group with `and`. A leading
        # operand that is already an And/Or (from parentheses) is merged, as left-nesting would.
        groups: list[list[Any]] = [[children[0]]]
        for index in range(1, len(children), 2):
            if children[index].type == "OR":
                groups.append([children[index + 1]])
            else:
                groups[-1].append(children[index + 1])
        terms = [_flatten(ast.And, group) for group in groups]
        return _flatten(ast.Or, terms)

    def not_(self, children: list[Any]) -> ast.Not:
        return ast.Not(children[1], **_span(children))

    def operator_chain(self, children: list[Any]) -> ast.Expr:
        return _arrange(children)

    def unary(self, children: list[Any]) -> ast.Expr:
        op, operand = children
        if op.type == "PLUS":
            return operand  # Elasticsearch drops a unary plus
        span = _span(children)
        if isinstance(operand, ast.NumberLiteral):
            return ast.NumberLiteral(-operand.value, **span)
        return ast.Negate(operand, **span)

    # ---- predicates

    def in_predicate(self, children: list[Any]) -> _Pred:
        negated = children[0].type == "NOT"
        op_token = children[1] if negated else children[0]
        values = _list_values(children)
        op = ("not " if negated else "") + op_token.value
        return _Pred(op, values, True, children[-1])

    def pattern_one(self, children: list[Any]) -> _Pred:
        op, constant = children
        return _Pred(op.value, (constant,), False, children[-1])

    def pattern_list(self, children: list[Any]) -> _Pred:
        op = children[0]
        return _Pred(op.value, _list_values(children[1:]), True, children[-1])

    def predicated(self, children: list[Any]) -> ast.Expr:
        expr, pred = children
        span = {
            "line": expr.line,
            "column": expr.column,
            "end_line": pred.end_line,
            "end_column": pred.end_column,
        }
        if pred.op in ast.IN_OPS:
            return ast.InList(pred.op, expr, pred.values, **span)
        return ast.PatternMatch(pred.op, expr, pred.values, pred.is_list, **span)  # type: ignore[arg-type]

    # ---- primaries

    def paren(self, children: list[Any]) -> ast.Expr:
        return children[1]

    def function_call(self, children: list[Any]) -> ast.FunctionCall:
        name_token = children[0]
        args = tuple(c for c in children[1:] if not isinstance(c, Token))
        written = name_token.value
        insensitive = written.endswith("~")
        bare = written[:-1] if insensitive else written
        entry = FUNCTIONS.get(bare.lower())
        # Unknown names are kept as written; _verify reports them once the statement has parsed.
        canonical = entry[0] if entry else bare
        return ast.FunctionCall(canonical, args, insensitive, **_span(children))

    def qualified_name(self, children: list[Any]) -> ast.Field:
        optional = children[0].type == "QUESTION"
        path: list[str] = []
        for child in children:
            if child.type == "FIELD_PATH":
                path.extend(_name_text(part) for part in _PATH_PART_RE.findall(child.value))
            elif child.type in ("IDENTIFIER", "QUOTED_IDENTIFIER"):
                path.append(_name_text(child))
        return ast.Field(tuple(path), optional, **_span(children))

    def constant(self, children: list[Any]) -> ast.Literal:
        (item,) = children
        kind = item.type
        if kind in ("INTEGER_VALUE", "DECIMAL_VALUE"):
            return _number(item)
        span = _tspan(item)
        if kind == "STRING":
            return _decode_string(item)
        if kind == "NULL":
            return ast.NullLiteral(**span)
        return ast.BooleanLiteral(kind == "TRUE", **span)

    def number(self, children: list[Any]) -> Token:
        # The token itself: maxspan and runs must tell integers from decimals.
        return children[0]


def _flatten(kind: type[ast.And] | type[ast.Or], operands: list[Any]) -> Any:
    if len(operands) == 1:
        return operands[0]
    first = operands[0]
    merged = (first.operands if isinstance(first, kind) else (first,)) + tuple(operands[1:])
    return kind(merged, **_span(operands))


_PRECEDENCE = {"*": 3, "/": 3, "%": 3, "+": 2, "-": 2, "==": 1, "!=": 1, "<": 1, "<=": 1, ">": 1, ">=": 1}


def _arrange(items: list[Any]) -> ast.Expr:
    """Build the tree of ``operand (op operand)+`` by precedence (left-associative, comparisons don't chain)."""
    position = 0

    def climb(minimum: int) -> ast.Expr:
        nonlocal position
        left = items[position]
        position += 1
        compared = False
        while position < len(items):
            op = items[position]
            level = _PRECEDENCE[op.value]
            if level < minimum:
                break
            if level == 1 and compared:
                _error(
                    f"unexpected `{op.value}`",
                    op.line,
                    op.column,
                    hint="comparisons do not chain; combine them with `and`",
                )
            position += 1
            right = climb(level + 1)
            span = _span([left, right])
            if level == 1:
                left = ast.Comparison(op.value, left, right, **span)
                compared = True
            else:
                left = ast.Arithmetic(op.value, left, right, **span)
        return left

    return climb(1)


def _name_text(part: str) -> str:
    """A field name part; back-quoted names lose their quotes and `` `` `` stands for one back-quote."""
    if not part.startswith("`"):
        return str(part)
    return part[1:-1].replace("``", "`")


def _list_values(children: list[Any]) -> tuple[Any, ...]:
    """The list elements of a predicate, whether lexed as one CONSTANT_LIST token or one by one."""
    last = children[-1]
    if isinstance(last, _ConstantList):
        return last.literals
    return tuple(c for c in children if not isinstance(c, Token))


def _check_key_counts(by: tuple[ast.Field, ...], steps: list[ast.Step]) -> None:
    expected: int | None = None
    for step in steps:
        if expected is None:
            expected = len(step.by)
        elif len(step.by) != expected:
            _error(
                f"Inconsistent number of join keys specified; expected [{expected}] but found [{len(step.by)}]",
                step.line,
                step.column,
                hint="every step (and `until`) needs the same number of `by` keys",
            )


def _verify(query: ast.Query) -> None:
    """Checks Elasticsearch makes after parsing: functions first, then field-to-field comparisons."""
    functions: list[ast.FunctionCall] = []
    comparisons: list[ast.Comparison | ast.InList] = []
    stack: list[ast.Node] = [query]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Literal | ast.Field):
            continue  # leaves; skipping them early keeps long value lists cheap
        if isinstance(node, ast.FunctionCall):
            functions.append(node)
        elif isinstance(node, ast.Comparison | ast.InList):
            comparisons.append(node)
        stack.extend(node.children())
    # Report the first problem in reading order.
    for call in sorted(functions, key=_position):
        _verify_function(call)
    for node in sorted(comparisons, key=_position):
        if isinstance(node, ast.Comparison):
            if _has_field(node.left) is not None:
                offender = _has_field(node.right)
                if offender is not None:
                    _field_comparison_error(offender, node.op)
        else:
            for value in node.values:
                offender = _has_field(value)
                if offender is not None:
                    _field_comparison_error(offender, node.op)


def _position(node: ast.Node) -> tuple[int, int]:
    return node.line, node.column


def _verify_function(call: ast.FunctionCall) -> None:
    entry = FUNCTIONS.get(call.name.lower())
    written = call.name + ("~" if call.case_insensitive else "")
    if entry is None:
        similar = difflib.get_close_matches(call.name.lower(), list(FUNCTIONS), n=1, cutoff=0.6)
        hint = _ENDGAME_FUNCTIONS.get(call.name.lower())
        if hint is None:
            hint = (
                f"did you mean {FUNCTIONS[similar[0]][0]}?"
                if similar
                else "see the Elasticsearch EQL function reference"
            )
        _error(f"Unknown function [{written}]", call.line, call.column, hint=hint)
    canonical, least, most, case_aware = entry
    if call.case_insensitive and not case_aware:
        _error(
            f"Function [{canonical}] has no case-insensitive [~] variant",
            call.line,
            call.column,
            hint="only between~, endsWith~, indexOf~, startsWith~ and stringContains~ exist",
        )
    count = len(call.args)
    if count < least or (most is not None and count > most):
        if least == most:
            expected = str(least)
        elif most is None:
            expected = f"{least} or more"
        else:
            expected = f"{least} to {most}"
        _error(
            f"Function [{canonical}] expects {expected} arguments, found [{count}]", call.line, call.column
        )


def _field_comparison_error(offender: ast.Field, op: str) -> NoReturn:
    _error(
        f"Comparisons against fields are not supported; offender [{offender.name}] in [{op}]",
        offender.line,
        offender.column,
        hint="Elasticsearch EQL compares a field only with constants",
    )


# ---------------------------------------------------------------------------- entry point

_TERMINAL_NAMES: dict[str, str] = {
    **{kind: f"`{word}`" for word, kind in KEYWORDS.items()},
    **{kind: f"`{op}`" for op, kind in _OPS.items()},
    "STRING": "a string",
    "INTEGER_VALUE": "an integer",
    "DECIMAL_VALUE": "a number",
    "IDENTIFIER": "a name",
    "QUOTED_IDENTIFIER": "a `quoted` name",
    "TILDE_IDENTIFIER": "a function~ name",
    "FIELD_PATH": "a field name",
    "CONSTANT_LIST": "`(`",
    "$END": "end of query",
}

_parser: Lark | None = None
_parser_lock = threading.Lock()


def _get_parser() -> Lark:
    global _parser
    if _parser is None:
        with _parser_lock:
            if _parser is None:
                grammar = (Path(__file__).with_name("grammar.lark")).read_text(encoding="utf-8")
                _parser = Lark(
                    grammar,
                    parser="lalr",
                    lexer=_EqlLexer,
                    maybe_placeholders=False,
                    transformer=_Builder(),
                )
    return _parser


def parse(text: str) -> ast.Query:
    """Parse Elasticsearch EQL ``text`` into an ``ast.Query`` or raise EqlSyntaxError."""
    if not isinstance(text, str):
        raise TypeError(f"EQL query must be a str, not {type(text).__name__}")
    return _parse_cached(text)


# Validation, fixture tests and compilation each parse the same rule queries; trees are immutable,
# so a parsed query can be shared. Errors are not cached.
@functools.lru_cache(maxsize=512)
def _parse_cached(text: str) -> ast.Query:
    try:
        return _get_parser().parse(text)  # type: ignore[return-value]
    except EqlSyntaxError:
        raise
    except VisitError as exc:  # defensive: lark versions that wrap callback exceptions
        if isinstance(exc.orig_exc, EqlSyntaxError):
            raise exc.orig_exc from None
        raise
    except UnexpectedToken as exc:
        raise _unexpected_token(text, exc) from None
    except UnexpectedInput as exc:  # pragma: no cover - the tokenizer reports bad characters itself
        raise EqlSyntaxError(str(exc).splitlines()[0], exc.line or 1, exc.column or 1) from None


def _describe(token: Token) -> str:
    if token.type == "$END":
        return "end of query"
    if token.type in ("IDENTIFIER", "TILDE_IDENTIFIER", "QUOTED_IDENTIFIER"):
        return f"name `{token.value}`"
    if token.type == "STRING":
        return f"string {token.value}"
    if token.type in ("INTEGER_VALUE", "DECIMAL_VALUE"):
        return f"number {token.value}"
    return f"`{token.value}`"


def _end_position(text: str) -> tuple[int, int]:
    stripped = text.rstrip(" \t\r\n")
    where = _Positions(text)
    if not stripped:
        return 1, 1
    return where.at(len(stripped) - 1)[0], where.at(len(stripped) - 1)[1] + 1


# Groups of terminals summarised as one phrase in "expected ..." messages.
_EXPECTED_GROUPS: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "a field, value or function call",
        frozenset(
            {
                "IDENTIFIER",
                "QUOTED_IDENTIFIER",
                "FIELD_PATH",
                "TILDE_IDENTIFIER",
                "QUESTION",
                "STRING",
                "INTEGER_VALUE",
                "DECIMAL_VALUE",
                "TRUE",
                "FALSE",
                "NULL",
            }
        ),
    ),
    (
        "a comparison (==, !=, <, <=, >, >=, :, like, regex, in, ...)",
        frozenset(
            {
                "EQ",
                "NEQ",
                "LT",
                "LTE",
                "GT",
                "GTE",
                "SEQ",
                "LIKE",
                "LIKE_INSENSITIVE",
                "REGEX",
                "REGEX_INSENSITIVE",
                "IN",
                "IN_INSENSITIVE",
            }
        ),
    ),
    ("an arithmetic operator", frozenset({"PLUS", "MINUS", "ASTERISK", "SLASH", "PERCENT"})),
    ("`and`, `or`", frozenset({"AND", "OR"})),
)


def _acceptable(exc: UnexpectedToken) -> set[str]:
    """Terminals the parser would really accept here (LALR lookahead sets over-approximate)."""
    expected = {name for name in exc.expected if not name.startswith("__")}
    interactive = getattr(exc, "interactive_parser", None)
    if interactive is None:
        return expected
    accepted: set[str] = set()
    for name in expected:
        probe = interactive.copy()
        try:
            probe.feed_token(Token(name, "", 0, 1, 1, 1, 1, 0))
        except UnexpectedToken:
            continue
        except Exception:  # noqa: BLE001 - a builder check fired: the parser did take the token
            pass
        accepted.add(name)
    return accepted or expected


def _summarize(expected: set[str]) -> list[str]:
    remaining = set(expected)
    phrases: list[str] = []
    for phrase, members in _EXPECTED_GROUPS:
        hits = remaining & members
        if len(hits) >= 3:
            if members is _EXPECTED_GROUPS[0][1] and "IDENTIFIER" not in hits:
                phrase = "a constant (string, number, true, false or null)"
            phrases.append(phrase)
            remaining -= members
    phrases.extend(sorted({_TERMINAL_NAMES.get(name, name) for name in remaining if name != "$END"}))
    if "$END" in remaining:
        phrases.append("end of query")
    return phrases


def _unexpected_token(text: str, exc: UnexpectedToken) -> EqlSyntaxError:
    token: Token = exc.token
    expected = _acceptable(exc)
    if token.type == "$END":
        line, column = _end_position(text)
    else:
        line, column = token.line, token.column
    message = f"unexpected {_describe(token)}"
    phrases = _summarize(expected)
    if phrases:
        message += "; expected " + (
            phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " or " + phrases[-1]
        )
    return EqlSyntaxError(message, line, column, _hint(text, token, expected))


def _hint(text: str, token: Token, expected: set[str]) -> str | None:
    value = token.value if token.type != "$END" else ""
    if token.type == "ASGN":
        return "`=` is not an operator: use `==` to compare (or `:` for a case-insensitive match)"
    if token.type in ("IDENTIFIER", "TILDE_IDENTIFIER") and value.lower() in KEYWORDS:
        return f"keywords are lowercase: write `{value.lower()}`"
    if token.type == "MAXSPAN":
        return "`with maxspan=...` goes right after `sequence` and its `by` keys: `sequence by k with maxspan=5m`"
    expects_operand = "IDENTIFIER" in expected or "QUOTED_IDENTIFIER" in expected
    if token.type in ("AND", "OR") and expects_operand:
        return f"a condition is missing before `{value}`"
    if token.type in KEYWORDS.values() and token.type not in expected and expects_operand:
        return f"`{value}` is a reserved word; quote a field with that name in back-quotes: `{value}`"
    if token.type == "LB" and "LP" in expected:
        return 'lists are written in parentheses: ("a", "b")'
    if expected and expected <= {"LP", "CONSTANT_LIST"}:
        return 'write a parenthesised list, e.g. `in ("a", "b")`'

    if "WHERE" in expected and len(expected) <= 2:
        return "an event query is `<category> where <condition>`; `any where` matches every category"
    if token.type == "STRING" and "IDENTIFIER" in expected and "STRING" not in expected:
        return "field names are not quoted; use back-quotes for unusual names: `my-field`"
    if token.type == "$END" and "RB" in expected:
        return "a `[` is not closed"
    if token.type == "$END" and "RP" in expected:
        return "a `(` is not closed"
    if token.type == "$END" and ("LB" in expected or "MISSING_OPEN" in expected):
        return "a sequence needs its steps: `[category where condition]`"
    return None
