"""Pattern matchers: EQL wildcards (``:``/``like``) and Lucene/Java regular expressions (``regex``).

Matchers take a string and return a bool. Case-insensitive matchers compare lower-cased text
(Java ``toLowerCase(Locale.ROOT)`` is closer to ``str.lower()`` than to ``casefold()``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from deployer.eql.errors import EqlUnsupportedError

__all__ = ["wildcard_matcher", "wildcards_matcher", "lucene_regex", "regex_matcher", "has_wildcard"]

Matcher = Callable[[str], bool]


def has_wildcard(pattern: str) -> bool:
    """True when ``pattern`` contains ``*`` or ``?`` (the only EQL wildcards; no escape exists)."""
    return "*" in pattern or "?" in pattern


def _wildcard_regex(pattern: str) -> str:
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return "".join(out)


def wildcard_matcher(pattern: str, case_insensitive: bool) -> Matcher:
    """Whole-value wildcard match; ``*`` is any run of characters and ``?`` exactly one."""
    p = pattern.lower() if case_insensitive else pattern
    core = p.strip("*")
    # The common shapes avoid the regex engine entirely.
    if not has_wildcard(p):
        test: Matcher = p.__eq__
    elif "?" not in core and "*" not in core and core:
        lead, trail = p.startswith("*"), p.endswith("*")
        if lead and trail:
            test = lambda s: core in s  # noqa: E731
        elif lead:
            test = lambda s: s.endswith(core)  # noqa: E731
        else:
            test = lambda s: s.startswith(core)  # noqa: E731
    elif p and set(p) == {"*"}:
        test = lambda s: True  # noqa: E731
    else:
        rx = re.compile(_wildcard_regex(p), re.DOTALL)
        fm = rx.fullmatch
        test = lambda s: fm(s) is not None  # noqa: E731
    if case_insensitive:
        return lambda s: test(s.lower())
    return test


def wildcards_matcher(patterns: Sequence[str], case_insensitive: bool) -> Matcher:
    """Any-of several wildcard patterns.

    Rules list dozens of paths in one condition; each shape is tested for all patterns at once
    (a set of exact values, ``startswith``/``endswith`` of a tuple, one literal alternation for
    ``*x*``, one regex alternation for the rest), on a value lower-cased once.
    """
    if len(patterns) == 1:
        return wildcard_matcher(patterns[0], case_insensitive)
    exact: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    infixes: list[str] = []
    rest: list[str] = []
    for pattern in patterns:
        p = pattern.lower() if case_insensitive else pattern
        core = p.strip("*")
        if not has_wildcard(p):
            exact.add(p)
        elif not core:
            return _anything  # `*` matches every value
        elif "?" not in core and "*" not in core:
            if p.startswith("*") and p.endswith("*"):
                infixes.append(core)
            elif p.startswith("*"):
                suffixes.append(core)
            else:
                prefixes.append(core)
        else:
            rest.append(p)
    tests: list[Matcher] = []
    if exact:
        tests.append(frozenset(exact).__contains__)
    if prefixes:
        starts = tuple(prefixes)
        tests.append(lambda s: s.startswith(starts))
    if suffixes:
        ends = tuple(suffixes)
        tests.append(lambda s: s.endswith(ends))
    if infixes:
        # A search for an alternation of literals finds one exactly when some literal occurs.
        search = re.compile("|".join(re.escape(c) for c in infixes)).search
        tests.append(lambda s: search(s) is not None)
    if rest:
        # A full match of an alternation exists exactly when one alternative matches in full.
        full = re.compile("(?:" + "|".join(_wildcard_regex(p) for p in rest) + ")", re.DOTALL).fullmatch
        tests.append(lambda s: full(s) is not None)
    if len(tests) == 1:
        (test,) = tests
    else:

        def test(s: str) -> bool:
            for t in tests:
                if t(s):
                    return True
            return False

    if case_insensitive:
        return lambda s: test(s.lower())
    return test


def _anything(s: str) -> bool:
    return True


_QUANT_START = "*+?{"


def lucene_regex(pattern: str) -> str:
    """Translate a Lucene ``regexp`` (all operators enabled, as Elasticsearch sends it) to Python.

    Lucene has no anchors (``^``/``$`` are ordinary characters) and no ``\\s``-style classes:
    a backslash makes the next character literal. ``@`` is any string and ``#`` the empty
    language; complement ``~``, intersection ``&`` and numeric intervals ``<n-m>`` are rejected.
    """
    out: list[str] = []
    # Index in `out` where the last atom starts, to wrap it when quantifiers stack.
    atom_start: int | None = None
    quantified = False
    i, n = 0, len(pattern)

    def unsupported(what: str) -> EqlUnsupportedError:
        return EqlUnsupportedError(f"not supported offline: regex {what} in {pattern!r}")

    group_stack: list[int] = []
    while i < n:
        ch = pattern[i]
        if ch in "*+?" or (ch == "{" and re.match(r"\{\d+(,\d*)?\}", pattern[i:])):
            if atom_start is None:
                raise unsupported("quantifier without an operand")
            if ch == "{":
                m = re.match(r"\{\d+(,\d*)?\}", pattern[i:])
                assert m is not None
                token = m.group(0)
                i += len(token)
            else:
                token = ch
                i += 1
            if quantified:
                # Lucene reads `x*?` as `(x*)?`; Python would read it as a lazy or possessive
                # quantifier, so the already-quantified atom is grouped first.
                out.insert(atom_start, "(?:")
                out.append(")")
            out.append(token)
            quantified = True
            continue
        quantified = False
        if ch == "\\":
            if i + 1 >= n:
                raise unsupported("trailing backslash")
            atom_start = len(out)
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif ch == '"':
            end = pattern.find('"', i + 1)
            if end < 0:
                raise unsupported("unterminated quoted string")
            atom_start = len(out)
            out.append("(?:" + re.escape(pattern[i + 1 : end]) + ")")
            i = end + 1
        elif ch == ".":
            atom_start = len(out)
            out.append(".")
            i += 1
        elif ch == "@":
            atom_start = len(out)
            out.append("(?:.*)")
            i += 1
        elif ch == "#":
            atom_start = len(out)
            out.append("(?!)")
            i += 1
        elif ch == "(":
            group_stack.append(len(out))
            out.append("(?:")
            atom_start = None
            i += 1
        elif ch == ")":
            if not group_stack:
                raise unsupported("unbalanced parenthesis")
            atom_start = group_stack.pop()
            out.append(")")
            i += 1
        elif ch == "|":
            out.append("|")
            atom_start = None
            i += 1
        elif ch == "[":
            j, cls = _char_class(pattern, i, unsupported)
            atom_start = len(out)
            out.append(cls)
            i = j
        elif ch in "~&":
            raise unsupported("complement/intersection operators")
        elif ch == "<":
            raise unsupported("numeric interval <n-m>")
        else:
            atom_start = len(out)
            out.append(re.escape(ch))
            i += 1
    if group_stack:
        raise unsupported("unbalanced parenthesis")
    return "".join(out)


def _char_class(pattern: str, i: int, unsupported: Callable[[str], Exception]) -> tuple[int, str]:
    j = i + 1
    parts = ["["]
    if j < len(pattern) and pattern[j] == "^":
        parts.append("^")
        j += 1
    first = True
    while j < len(pattern):
        ch = pattern[j]
        if ch == "]" and not first:
            parts.append("]")
            return j + 1, "".join(parts)
        if ch == "\\" and j + 1 < len(pattern):
            parts.append(re.escape(pattern[j + 1]))
            j += 2
        elif ch == "-" and not first and j + 1 < len(pattern) and pattern[j + 1] != "]":
            parts.append("-")
            j += 1
        else:
            parts.append(re.escape(ch) if ch in "\\]^[-&~|" else ch)
            j += 1
        first = False
    raise unsupported("unterminated character class")


def regex_matcher(patterns: Sequence[str], case_insensitive: bool, lucene: bool) -> Matcher:
    """Whole-value match against any of ``patterns`` (Lucene syntax on fields, Java in scripts)."""
    sources = [lucene_regex(p) if lucene else p for p in patterns]
    flags = re.DOTALL | (re.IGNORECASE if case_insensitive else 0)
    try:
        rx = re.compile("|".join(f"(?:{s})" for s in sources), flags)
    except re.error as exc:
        raise EqlUnsupportedError(f"not supported offline: regex {list(patterns)!r}: {exc}") from None
    fm = rx.fullmatch
    return lambda s: fm(s) is not None
