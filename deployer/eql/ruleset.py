"""A rule set as one program: each event goes only to the rules (and sequence steps) that can match it.

Evaluating every rule on every event costs rules × events predicate calls, although a typical
event can match a handful of the rules' steps. Here each step (an event query's condition, a
sequence step, an ``until``) gets a *guard*: a necessary condition built from the cheap selective
leaves rules share, a disjunction of atoms on one or more fields:

* ``eq``: the lower-cased value is one of a set of strings (``f : "x"``, ``f == "x"``,
  ``f in ("x", "y")``, ``f in~ (...)``, ``f like "x"``);
* ``pre`` / ``suf``: the lower-cased value starts / ends with a literal (``f : "c:\\\\windows\\\\*"``,
  ``f : "*.exe"``), up to ``KEY_MAX`` characters of it, possibly after / before a fixed number of
  ``?`` wildcards (kept in the key: ``"?:\\\\perfl"``); also the literal edges of a regex;
* ``sub``: the lower-cased value contains a literal (the longest piece of ``f : "*\\\\run\\\\*"``);
* ``num``: the value is a number equal to one of a set (``f == 4``, ``f in (88, 445)``);
* ``has``: the field has a value (``f != null``; any comparison with a constant needs one).

An ``and`` takes the guard of its most selective operand, an ``or`` the union of its operands'
guards (none when one operand has none); a step keeps the guards of its two most selective
``and`` operands and is a candidate when both hit. Per event category, the guards of the steps that category
can reach are merged into one index per field: each field is read once per event, each of its
string values lower-cased once and looked up once per table, whatever the number of rules using
it. Only the steps a lookup hits (plus the unguarded ones) are evaluated, by the rule's own
compiled condition: the guard only narrows, so the result is exactly the per-rule evaluation's.
A number value hits every guard on its field but the numeric ones it does not equal, a string
value every numeric guard (type rules let them compare equal), a boolean every guard.

A ``sample`` ignores time order and the events none of its steps keeps, so its steps are
dispatched like a sequence's and its own ``Runner`` gets only their candidate events. Rules the
dispatch cannot drive (another timestamp field, a tiebreaker) run as their own ``Runner`` fed
every event. A per-rule pre-filter (``prefilters``: Kibana exception lists applied before
sequence matching) sees each event before that rule does; an event it rejects does not exist for
that rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Mapping
from re import _constants as _re_constants  # the parsed form of a pattern
from re import _parser as _re_parser
from typing import Any

from deployer.eql import ast
from deployer.eql.engine import Match, Program, Runner, _Pipe, _Step
from deployer.eql.errors import EqlError
from deployer.eql.patterns import has_wildcard, lucene_regex
from deployer.eql.values import KEYWORD_TYPES, make_getter, parse_timestamp, values_of

__all__ = ["RuleSet", "RuleSetRunner", "guard_of", "guards_of"]

# Longest literal prefix/suffix kept in a guard key: bounds the lookups per value to 2 × KEY_MAX.
KEY_MAX = 8
# Shortest literal prefix/suffix kept: even one character narrows more than a presence test
# (the cost model weighs short keys against the other guards).
KEY_MIN = 1
# Shortest literal a contains atom keeps: shorter ones are in too many values to select anything.
SUB_MIN = 3
# Contained literals per field searched one by one; more are found through a trigram table.
SUB_LINEAR = 8
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
# Fields whose values are shared by most events of a category: a guard on them selects little.
_BROAD_FIELDS = frozenset(
    {
        "event.category",
        "event.type",
        "event.action",
        "event.code",
        "event.kind",
        "event.outcome",
        "event.module",
        "event.dataset",
        "data_stream.dataset",
        "host.os.type",
        "host.os.name",
        "host.os.family",
        "host.os.platform",
        "agent.type",
    }
)
# Category dispatch tables kept per category value (events carry a handful of categories).
_CACHE_MAX = 4096

Atom = tuple[str, str, str]  # (field path, "eq" | "pre" | "suf" | "sub" | "num" | "has", key)
Pred = Callable[[dict], bool]


def _indexable(program: Program, name: str) -> str | None:
    """The source path of ``name`` when its raw string values are its indexed values, else None."""
    ft = program._c.ftype(name)
    if ft.null_value is not None or ft.ignore_above is not None:
        return None
    if ft.declared and ft.es_type not in KEYWORD_TYPES:
        return None
    return ft.name


def _atom_share(atom: Atom) -> float:
    """A rough share of events an atom hits: what the choice between guards minimises."""
    f, kind, key = atom
    if kind == "has":
        # Most events carry the core fields, few the optional nested ones (`process.Ext.*`,
        # `*.pe.*`, hashes, signatures); a presence test is never preferred to a few eq atoms.
        parts = f.split(".")
        common = len(parts) < 3 or (len(parts) == 3 and f.startswith("process.parent."))
        share = 0.95 if common else 0.05
    elif kind == "eq":
        share = 0.003
    elif kind == "num":
        # Numbers repeat more than names (ports, pids, codes).
        share = 0.01
    elif kind == "sub":
        # Anywhere in the value: about twice as likely as at one end, and searched for rather
        # than looked up: a full-length prefix or suffix (`KEY_MAX`) is preferred.
        share = max(0.004, 2 * 0.5 ** len(key))
    else:
        # Each literal character of a prefix or suffix narrows what it hits.
        share = max(0.003, 0.5 ** len(key.strip("?")))
    return max(share, 0.9) if f in _BROAD_FIELDS else share


def _guard_cost(guard: Iterable[Atom]) -> float:
    return sum(_atom_share(a) for a in set(guard))


def guard_of(expr: ast.Expr, program: Program) -> list[Atom] | None:
    """A necessary condition of ``expr`` as a disjunction of atoms, or None when there is none cheap."""
    if isinstance(expr, ast.And):
        best: list[Atom] | None = None
        best_cost = 0.0
        for op in expr.operands:
            g = guard_of(op, program)
            if g is None:
                continue
            cost = _guard_cost(g)
            if best is None or cost < best_cost:
                best, best_cost = g, cost
        return best
    if isinstance(expr, ast.Or):
        out: list[Atom] = []
        for op in expr.operands:
            g = guard_of(op, program)
            if g is None:
                return None
            out.extend(g)
        return out
    if isinstance(expr, ast.Comparison):
        return _comparison_guard(expr, program)
    if isinstance(expr, ast.Not) and isinstance(expr.operand, ast.Comparison) and expr.operand.op == "==":
        # `not x == null` is `x != null`.
        return _comparison_guard(ast.Comparison("!=", expr.operand.left, expr.operand.right), program)
    if isinstance(expr, ast.InList) and not expr.negated:
        if not isinstance(expr.expr, ast.Field):
            return None
        path = _indexable(program, expr.expr.name)
        if path is None or not expr.values or not all(isinstance(v, ast.Literal) for v in expr.values):
            return None
        atoms = [_constant_atom(path, v.value) for v in expr.values]  # type: ignore[union-attr]
        if any(a is None for a in atoms):
            # A boolean in the list: no value of the field, no match.
            return [(path, "has", "")]
        return atoms  # type: ignore[return-value]
    if isinstance(expr, ast.PatternMatch):
        if not isinstance(expr.expr, ast.Field):
            return None
        path = _indexable(program, expr.expr.name)
        if path is None:
            return None
        atoms: list[Atom] = []
        for p in expr.patterns:
            if not isinstance(p.value, str):
                return None
            if expr.is_regex:
                atom = _regex_atom(path, p.value, expr.case_insensitive)
            else:
                atom = _pattern_atom(path, p.value, expr.case_insensitive)
            if atom is None:
                # No literal edge to index (`"*foo*"`, `"?*"`): the field must still have a value.
                return [(path, "has", "")]
            atoms.append(atom)
        return atoms or None
    return None


def _comparison_guard(expr: ast.Comparison, program: Program) -> list[Atom] | None:
    left, right = expr.left, expr.right
    if isinstance(left, ast.Literal):
        left, right = right, left
    if not isinstance(left, ast.Field) or not isinstance(right, ast.Literal):
        return None
    if expr.op == "!=" and isinstance(right, ast.NullLiteral):
        # `x != null` holds exactly when the field has a value (`must_not` of IS NULL).
        path = _indexable(program, left.name)
        return [(path, "has", "")] if path else None
    if expr.op == "!=" or isinstance(right, ast.NullLiteral):
        # `x != v` holds when x has no value; `x == null` is IS NULL.
        return None
    path = _indexable(program, left.name)
    if path is None:
        return None
    atom = _constant_atom(path, right.value) if expr.op == "==" else None
    # A comparison with a constant is false (null) on a field without a value.
    return [atom or (path, "has", "")]


def _constant_atom(path: str, value: Any) -> Atom | None:
    """The atom of ``path == value`` for a string or a number, else None."""
    if isinstance(value, str):
        # Equal strings are equal lower-cased: the case-insensitive key is a superset.
        return (path, "eq", value.lower())
    if value.__class__ is int or value.__class__ is float:
        try:
            return (path, "num", repr(float(value)))
        except OverflowError:
            return None
    return None


def guards_of(expr: ast.Expr, program: Program, most: int = 2) -> list[list[Atom]]:
    """Up to ``most`` guards of distinct ``and`` operands of ``expr``, most selective first (all necessary)."""
    found: list[list[Atom]] = []

    def collect(e: ast.Expr) -> None:
        if isinstance(e, ast.And):
            for op in e.operands:
                collect(op)
            return
        g = guard_of(e, program)
        if g is not None:
            found.append(g)

    collect(expr)
    found.sort(key=_guard_cost)
    return found[:most]


def _pattern_atom(path: str, pattern: str, insensitive: bool) -> Atom | None:
    """The most selective prefix, suffix or contains atom of a wildcard pattern, if any."""
    if not has_wildcard(pattern):
        return (path, "eq", pattern.lower())
    pieces = re.split(r"[*?]", pattern.lower() if insensitive else pattern)
    if not insensitive:
        # Only ASCII runs (see `_ascii_edge_atom`): an ASCII run of the value is one of its lower case.
        pieces = [run.lower() for piece in pieces for run in _NON_ASCII.split(piece)]
    longest = max(pieces, key=len)
    found = [_edge_atom(path, pattern, insensitive)]
    if len(longest) >= SUB_MIN:
        # Every literal piece of a match is in the (lower-cased) value.
        found.append((path, "sub", longest))
    return min((a for a in found if a is not None), key=_atom_share, default=None)


def _edge_atom(path: str, pattern: str, insensitive: bool) -> Atom | None:
    """A prefix or suffix atom of a wildcard pattern (``?`` wildcards at its ends kept as offsets)."""
    if not insensitive:
        return _ascii_edge_atom(path, _literal_prefix(pattern), _literal_suffix(pattern))
    # The matcher lower-cases the whole value and the whole pattern, as the index does, so a `?`
    # stands for one character of the lower-cased value: the index can skip it by position.
    p = pattern.lower()
    lead = len(p) - len(p.lstrip("?"))
    trail = len(p) - len(p.rstrip("?"))
    prefix = _literal_prefix(p[lead:])
    suffix = _literal_suffix(p[: len(p) - trail])
    if "*" not in p and lead + len(prefix) == len(p) - trail:
        # One literal run between `?`s: its end (a file name) tells more than its start (a drive).
        prefix = ""
    if len(prefix) > len(suffix) and len(prefix) >= KEY_MIN:
        return (path, "pre", "?" * lead + prefix[:KEY_MAX])
    if len(suffix) >= KEY_MIN:
        return (path, "suf", suffix[-KEY_MAX:] + "?" * trail)
    return None


def _literal_prefix(pattern: str) -> str:
    cuts = [i for i in (pattern.find("*"), pattern.find("?")) if i >= 0]
    return pattern[: min(cuts)] if cuts else pattern


def _literal_suffix(pattern: str) -> str:
    return pattern[max(pattern.rfind("*"), pattern.rfind("?")) + 1 :]


def _ascii_edge_atom(path: str, prefix: str, suffix: str) -> Atom | None:
    """The atom of a case-sensitive match whose value starts with ``prefix`` and ends with ``suffix``.

    The index holds lower-cased values, and lower-casing is not per character everywhere: a capital
    sigma lowers by what follows it (final sigma) and some capitals lower to two characters, so a
    prefix or suffix of a value is not always one of its lower-cased form. An ASCII character
    lowers alone, to one character: an ASCII prefix of the value, lower-cased, is a prefix of the
    lower-cased value (likewise suffixes), so only the ASCII edge of a literal is kept.
    """
    head = _ascii_head(prefix)
    tail = _ascii_head(suffix[::-1])[::-1]
    if len(head) > len(tail) and len(head) >= KEY_MIN:
        return (path, "pre", head[:KEY_MAX].lower())
    if len(tail) >= KEY_MIN:
        return (path, "suf", tail[-KEY_MAX:].lower())
    return None


def _ascii_head(text: str, unsafe: str = "") -> str:
    for i, ch in enumerate(text):
        if not ch.isascii() or ch in unsafe:
            return text[:i]
    return text


# Python's case-insensitive matching pairs `i`/`I` with `İ` and `ı`, and `s`/`S` with `ſ`, none
# of which lower-cases to an ASCII letter: a value matching such a literal may not hold its
# lower-cased form. (Every other ASCII character matches only characters that lower to its own
# lower case.)
_CASELESS_UNSAFE = "iIsS"


def _regex_atom(path: str, pattern: str, insensitive: bool) -> Atom | None:
    """A prefix or suffix atom from the literal characters a (full-match) regex starts or ends with."""
    try:
        items = _regex_items(_re_parser.parse(lucene_regex(pattern), re.DOTALL).data)
    except (EqlError, re.error, RecursionError):
        return None
    lits: list[str] = []
    for op, av in items:
        if op is not _re_constants.LITERAL:
            break
        lits.append(chr(av))
    prefix = "".join(lits)
    lits = []
    for op, av in reversed(items):
        if op is not _re_constants.LITERAL:
            break
        lits.append(chr(av))
    suffix = "".join(reversed(lits))
    if len(prefix) == len(items):
        # No operator at all: the regex is one string (the prefix and the suffix are the same).
        prefix = ""
    if not insensitive:
        return _ascii_edge_atom(path, prefix, suffix)
    head = _ascii_head(prefix, _CASELESS_UNSAFE)
    tail = _ascii_head(suffix[::-1], _CASELESS_UNSAFE)[::-1]
    return _ascii_edge_atom(path, head, tail)


def _regex_items(items: Iterable[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """The parsed regex as one sequence: non-capturing groups without flags spliced in."""
    out: list[tuple[Any, Any]] = []
    for op, av in items:
        if op is _re_constants.SUBPATTERN and not av[1] and not av[2]:
            out.extend(_regex_items(av[3].data))
        else:
            out.append((op, av))
    return out


class _Entry:
    """One dispatchable condition: a step of a rule, its until, or an event query's filter."""

    __slots__ = ("order", "member", "category", "step", "until", "guards")

    def __init__(self, member: _Member, category: str | None, step: _Step | None, until: bool) -> None:
        self.order = 0
        self.member = member
        self.category = category
        self.step = step
        self.until = until
        # Necessary conditions, most selective first: the entry is evaluated when all of them hit.
        self.guards: list[list[Atom]] = []


class _Member:
    """A dispatched rule: its state machine (sequences), filter (event queries) or runner (samples), and its pipes."""

    __slots__ = (
        "key",
        "program",
        "pipes",
        "stopped",
        "process",
        "flush",
        "cond",
        "prefilter",
        "ticks",
        "runner",
    )

    def __init__(self, key: Hashable, program: Program, prefilter: Pred | None) -> None:
        self.key = key
        self.program = program
        self.prefilter = prefilter
        self.pipes = [_Pipe(p) for p in program.query.pipes]
        self.stopped = any(p.head and p.left <= 0 for p in self.pipes)
        self.process: Callable[[int, dict, list[_Step], bool], list[Match]] | None = None
        self.flush: Callable[[], list[Match]] = list
        self.cond: Pred | None = None
        # A rule with missing-event steps decides held candidates as time passes, on every event.
        self.ticks = False
        # A sample ignores time order and every event no step's filter keeps, so its own runner
        # (pipes included) sees only the candidate events of its steps.
        self.runner: Runner | None = None
        if program.kind == "sequence":
            self.process, self.flush = program.sequence_core()
            self.ticks = any(program._layout)
        elif program.kind == "sample":
            self.runner = program.stream()
            self.pipes = []
            self.stopped = self.runner.stopped
        else:
            self.cond = program._cond

    def feed(self, ts: int, ev: dict, steps: list[_Step], until: bool) -> list[Match]:
        """Evaluate the event against the given candidate steps (or the filter when ``steps`` is None)."""
        if self.prefilter is not None and not self.prefilter(ev):
            if not self.ticks:
                return []
            steps, until = [], False
        if self.process is not None:
            out = self.process(ts, ev, steps, until)
        elif self.runner is not None:
            out = self.runner.push(ev, ts)
            self.stopped = self.runner.stopped
            return out
        else:
            out = [Match([ev], [])] if self.cond(ev) else []  # type: ignore[misc]
        return self._piped(out) if out and self.pipes else out

    def _piped(self, out: list[Match]) -> list[Match]:
        for pipe in self.pipes:
            out = pipe.feed(out)
            if pipe.head and pipe.left <= 0:
                self.stopped = True
        return out

    def finish(self) -> list[Match]:
        """End of input: what the state machine and the pipes held."""
        if self.runner is not None:
            return self.runner.finish()
        out = self.flush()
        for pipe in self.pipes:
            out = pipe.feed(out) + pipe.flush()
        return out


class _FieldIndex:
    """The atoms of one field in a table: lookups from a lower-cased value to guard ids."""

    __slots__ = ("eq", "pre", "suf", "sub", "num", "present", "not_num", "every")

    def __init__(self) -> None:
        self.eq: dict[str, list[int]] = {}
        # Keyed by (skip, length): the key is the lower-cased value's slice of that length after
        # (prefix) or before (suffix) `skip` characters, the `?` wildcards at the pattern's end.
        self.pre: dict[tuple[int, int], dict[str, list[int]]] = {}
        self.suf: dict[tuple[int, int], dict[str, list[int]]] = {}
        self.sub: dict[str, list[int]] = {}
        # Numeric constants by their float value (int and float values compare by number).
        self.num: dict[float, list[int]] = {}
        self.present: list[int] = []
        # Guards with an atom other than a number on this field: a number value may equal a string.
        self.not_num: list[int] = []
        self.every: list[int] = []

    def add(self, kind: str, key: str, gid: int) -> None:
        """Index one atom of guard ``gid``."""
        if kind == "has":
            table = None
            if not self.present or self.present[-1] != gid:
                self.present.append(gid)
        elif kind == "eq":
            table = self.eq
        elif kind == "sub":
            table = self.sub
        elif kind == "num":
            self.num.setdefault(float(key), []).append(gid)
            table = None
        elif kind == "pre":
            lit = key.lstrip("?")
            table = self.pre.setdefault((len(key) - len(lit), len(lit)), {})
            key = lit
        else:
            lit = key.rstrip("?")
            table = self.suf.setdefault((len(key) - len(lit), len(lit)), {})
            key = lit
        if table is not None:
            table.setdefault(key, []).append(gid)
        if kind != "num" and (not self.not_num or self.not_num[-1] != gid):
            self.not_num.append(gid)
        if not self.every or self.every[-1] != gid:
            self.every.append(gid)


# A field's lookups: eq table, prefix and suffix tables as (slice start, slice end, table),
# contained literals (a list, or by one of their trigrams when many), the guards its presence
# hits, numeric constants by value, the guards with one (a string may equal a number), the
# guards without one (a number may equal a string), and every guard on it.
_Spec = tuple[
    dict[str, list[int]] | None,
    list[tuple[int, int, dict[str, list[int]]]],
    list[tuple[int, int | None, dict[str, list[int]]]],
    list[tuple[str, list[int]]],
    tuple[frozenset[str], dict[str, list[tuple[str, list[int]]]]] | None,
    list[int] | None,
    dict[float, list[int]] | None,
    list[int] | None,
    list[int],
    list[int],
]


def _walk(obj: dict, tree: dict, add: Callable[[Iterable[int]], None]) -> bool:
    """Index the guarded fields of nested objects ``obj``; False when a field needs its reader.

    Without dotted keys and arrays of objects on the way, a field's value is what sits at its
    nested path (what its reader would return), so only the event's keys are visited.
    """
    for k, v in obj.items():
        entry = tree.get(k)
        if entry is None:
            if "." in k:
                return False
            continue
        spec, sub = entry
        cls = v.__class__
        if cls is dict:
            # An object is no value of the field itself.
            if sub is not None and not _walk(v, sub, add):
                return False
        elif cls is list:
            if sub is not None:
                return False
            _hit(spec, v, add)  # type: ignore[arg-type]
        elif v is not None and spec is not None:
            _hit(spec, v, add)
    return True


def _hit(spec: _Spec, raw: Any, add: Callable[[Iterable[int]], None]) -> None:
    """Add the guards a field's raw (non-null) value hits."""
    eq, pres, sufs, subs, grams, present, nums, on_num, not_num, every = spec
    if raw.__class__ is str:
        values: Iterable[Any] = (raw,)
    elif raw.__class__ is list:
        values = values_of(raw)
        if not values:
            # No value: as absent as None (`x != null` is false).
            return
    else:
        values = (raw,)
    if present is not None:
        add(present)
    for v in values:
        cls = v.__class__
        if cls is not str:
            if nums is not None and (cls is int or cls is float):
                # Equal numbers are equal as floats; a number may still equal a string constant.
                try:
                    h = nums.get(float(v))
                except OverflowError:
                    add(every)
                    return
                if h is not None:
                    add(h)
                add(not_num)
                continue
            # A number or boolean compares by type rules the string index does not model.
            add(every)
            return
        if on_num is not None:
            # A numeric string may equal a numeric constant.
            add(on_num)
        lv = v.lower()
        if eq is not None:
            h = eq.get(lv)
            if h is not None:
                add(h)
        for start, end, table in pres:
            h = table.get(lv[start:end])
            if h is not None:
                add(h)
        for start, end, table in sufs:
            h = table.get(lv[start:end])
            if h is not None:
                add(h)
        if grams is not None:
            # Many literals: only those whose trigram is one of the value's are searched for.
            keys, by_gram = grams
            for g in keys.intersection([lv[i : i + 3] for i in range(len(lv) - 2)]):
                for sub, h in by_gram[g]:
                    if sub in lv:
                        add(h)
        else:
            for sub, h in subs:
                if sub in lv:
                    add(h)


def _by_trigram(subs: dict[str, list[int]]) -> tuple[frozenset[str], dict[str, list[tuple[str, list[int]]]]]:
    """Contained literals by one of their trigrams (any: a value holding the literal holds all)."""
    by_gram: dict[str, list[tuple[str, list[int]]]] = {}
    for sub, gids in sorted(subs.items()):
        # The last trigram: literals often share a leading path or a common word.
        by_gram.setdefault(sub[-3:], []).append((sub, gids))
    return frozenset(by_gram), by_gram


class _Table:
    """The merged guards of the steps one event category reaches: per field, lookups to guard ids.

    Identical guards of different steps share one id. An event first collects the ids of the
    guards it hits; a step is then a candidate when its primary guard and its secondary guard (if
    any) were both hit.
    """

    __slots__ = ("always", "fields", "tree", "by_primary")

    def __init__(self, entries: list[_Entry]) -> None:
        self.always = [e.order for e in entries if not e.guards]
        ids: dict[frozenset[Atom], int] = {}
        self.by_primary: dict[int, list[tuple[int, int]]] = {}
        by_field: dict[str, _FieldIndex] = {}
        for e in entries:
            if not e.guards:
                continue
            gids = []
            for guard in e.guards:
                key = frozenset(guard)
                gid = ids.get(key)
                if gid is None:
                    gid = ids[key] = len(ids)
                    for path, kind, value in sorted(key):
                        index = by_field.get(path)
                        if index is None:
                            index = by_field[path] = _FieldIndex()
                        index.add(kind, value, gid)
                gids.append(gid)
            secondary = gids[1] if len(gids) > 1 else -1
            self.by_primary.setdefault(gids[0], []).append((e.order, secondary))
        self.fields: list[tuple[Callable[[dict], Any], _Spec]] = []
        # The guarded paths as a tree of their parts: {part: (spec or None, subtree or None)}.
        self.tree: dict[str, tuple[_Spec | None, dict | None]] = {}
        for path, ix in by_field.items():
            spec: _Spec = (
                ix.eq or None,
                [(skip, skip + n, table) for (skip, n), table in sorted(ix.pre.items())],
                [(-(skip + n), -skip or None, table) for (skip, n), table in sorted(ix.suf.items())],
                sorted(ix.sub.items()),
                _by_trigram(ix.sub) if len(ix.sub) > SUB_LINEAR else None,
                ix.present or None,
                ix.num or None,
                sorted({g for gids in ix.num.values() for g in gids}) or None,
                ix.not_num,
                ix.every,
            )
            self.fields.append((make_getter(path), spec))
            node = self.tree
            *inner, last = path.split(".")
            for part in inner:
                leaf, sub = node.get(part, (None, None))
                if sub is None:
                    sub = {}
                    node[part] = (leaf, sub)
                node = sub
            node[last] = (spec, node.get(last, (None, None))[1])

    def candidates(self, ev: dict) -> set[int]:
        """Orders of the entries this event may satisfy (a superset of those it does)."""
        hit: set[int] = set()
        if not _walk(ev, self.tree, hit.update):
            # A dotted key or an array of objects: each field through its reader, which merges
            # every spelling as Elasticsearch does.
            for get, spec in self.fields:
                raw = get(ev)
                if raw is not None:
                    _hit(spec, raw, hit.update)
        out = set(self.always)
        by_primary = self.by_primary
        for gid in hit:
            steps = by_primary.get(gid)
            if steps is not None:
                for order, secondary in steps:
                    if secondary < 0 or secondary in hit:
                        out.add(order)
        return out


class RuleSet:
    """Compiled programs evaluated together over one event stream (see the module docstring)."""

    def __init__(
        self,
        programs: Mapping[Hashable, Program],
        *,
        prefilters: Mapping[Hashable, Pred] | None = None,
        timestamp_field: str = "@timestamp",
    ) -> None:
        self.programs = dict(programs)
        self.prefilters = dict(prefilters or {})
        self.timestamp_field = timestamp_field
        self.dispatched: list[Hashable] = []
        self.own_runner: list[Hashable] = []
        for key, program in self.programs.items():
            if self._dispatchable(program):
                self.dispatched.append(key)
            else:
                self.own_runner.append(key)

    def _dispatchable(self, program: Program) -> bool:
        if program.timestamp_field != self.timestamp_field or program.tiebreaker_field:
            return False
        body = program.query.body
        if isinstance(body, ast.EventQuery):
            return hasattr(program, "_cond")
        if isinstance(body, ast.Sample):
            return True
        return isinstance(body, ast.Sequence) and hasattr(program, "sequence_core")

    def stream(self) -> RuleSetRunner:
        """A push-style runner over events in timestamp order."""
        return RuleSetRunner(self)


class RuleSetRunner:
    """Push-style evaluation of a RuleSet: ``push`` returns (rule key, Match) pairs, ``finish`` the rest."""

    def __init__(self, ruleset: RuleSet) -> None:
        self._ts_field = ruleset.timestamp_field
        self._ts_get = make_getter(ruleset.timestamp_field)
        self._members: list[_Member] = []
        self._entries: list[_Entry] = []
        self._by_field: dict[Hashable, list[_Entry]] = {}
        self._readers: dict[Hashable, Callable[[dict], Any]] = {}
        for key in ruleset.dispatched:
            program = ruleset.programs[key]
            member = _Member(key, program, ruleset.prefilters.get(key))
            self._members.append(member)
            self._add_entries(member)
        for order, entry in enumerate(self._entries):
            entry.order = order
        self._tickers = [m for m in self._members if m.ticks]
        self._tables: dict[Hashable, dict[Hashable, _Table]] = {f: {} for f in self._by_field}
        self._runners: list[tuple[Hashable, Runner, Pred | None, bool]] = []
        for key in ruleset.own_runner:
            program = ruleset.programs[key]
            same_time = program.timestamp_field == self._ts_field
            self._runners.append((key, program.stream(), ruleset.prefilters.get(key), same_time))
        self._prev: int | None = None
        self._pos = 0
        self.finished = False

    def _add_entries(self, member: _Member) -> None:
        program = member.program
        c = program._c
        ft = c.ftype(c.category_field)
        # Rules read their category through their mapping (an alias, a null_value...): rules that
        # read it alike share one dispatch.
        cat_field = (c.category_field, ft.name, ft.es_type, ft.declared, ft.null_value, ft.ignore_above)
        if cat_field not in self._readers:
            self._readers[cat_field] = c.reader(c.category_field)
        entries = self._by_field.setdefault(cat_field, [])
        body = program.query.body
        if isinstance(body, ast.EventQuery):
            e = _Entry(member, body.category, None, False)
            e.guards = guards_of(body.condition, program)
            entries.append(e)
            self._entries.append(e)
            return
        if isinstance(body, ast.Sample):
            for step in body.steps:
                e = _Entry(member, step.query.category, None, False)
                e.guards = guards_of(step.query.condition, program)
                entries.append(e)
                self._entries.append(e)
            return
        assert isinstance(body, ast.Sequence)
        steps_ast = body.expanded_steps()
        # Entry order within a rule is the state machine's: last step first, then until.
        for st in reversed(program._steps):
            e = _Entry(member, st.category, st, False)
            e.guards = guards_of(steps_ast[st.index].query.condition, program)
            entries.append(e)
            self._entries.append(e)
        if body.until is not None:
            e = _Entry(member, body.until.query.category, None, True)
            e.guards = guards_of(body.until.query.condition, program)
            entries.append(e)
            self._entries.append(e)

    def _table(self, cat_field: Hashable, category: Any) -> _Table:
        tables = self._tables[cat_field]
        if category.__class__ is list:
            key: Hashable = category[0] if len(category) == 1 else tuple(category)
        else:
            key = category
        try:
            table = tables.get(key)
        except TypeError:
            key, table = None, None
        if table is not None:
            return table
        cats = set(values_of(category)) if category.__class__ is list else {category}
        table = _Table([e for e in self._by_field[cat_field] if e.category is None or e.category in cats])
        if key is not None and len(tables) < _CACHE_MAX:
            tables[key] = table
        return table

    def push(self, event: dict, ts: int | None = None) -> list[tuple[Hashable, Match]]:
        """Feed the next event (``ts``: its timestamp in epoch ms, when parsed); return (rule key, Match) pairs.

        Raises ValueError when the event goes back in time.
        """
        if self.finished:
            raise RuntimeError("push() after finish()")
        pos = self._pos
        self._pos = pos + 1
        if ts is None:
            ts = self._timestamp(event, pos)
        if self._prev is not None and ts < self._prev and self._members:
            raise ValueError(f"event #{pos} is out of order ({self._ts_field}={ts}); sort the input first")
        self._prev = ts
        out: list[tuple[Hashable, Match]] = []
        orders: set[int] = set()
        for cat_field, read in self._readers.items():
            orders |= self._table(cat_field, read(event)).candidates(event)
        entries = self._entries
        touched: set[int] = set()
        member: _Member | None = None
        steps: list[_Step] = []
        until = False
        for order in sorted(orders):
            e = entries[order]
            if e.member is not member:
                if member is not None:
                    self._feed(member, ts, event, steps, until, out)
                member = e.member
                touched.add(id(member))
                steps, until = [], False
            if e.until:
                until = True
            elif e.step is not None:
                steps.append(e.step)
        if member is not None:
            self._feed(member, ts, event, steps, until, out)
        for m in self._tickers:
            if id(m) not in touched and not m.stopped:
                for match in m.feed(ts, event, [], False):
                    out.append((m.key, match))
        for key, runner, prefilter, same_time in self._runners:
            if runner.stopped or (prefilter is not None and not prefilter(event)):
                continue
            for match in runner.push(event, ts if same_time else None):
                out.append((key, match))
        return out

    @staticmethod
    def _feed(
        member: _Member,
        ts: int,
        event: dict,
        steps: list[_Step],
        until: bool,
        out: list[tuple[Hashable, Match]],
    ) -> None:
        if member.stopped:
            return
        for match in member.feed(ts, event, steps, until):
            out.append((member.key, match))

    def _timestamp(self, event: dict, pos: int) -> int:
        raw = self._ts_get(event)
        if raw.__class__ is list:
            flat = values_of(raw)
            raw = flat[0] if flat else None
        if raw is None:
            raise ValueError(f"event #{pos} has no {self._ts_field} value")
        try:
            return parse_timestamp(raw)
        except ValueError as exc:
            raise ValueError(f"event #{pos}: {self._ts_field}: {exc}") from None

    def finish(self) -> list[tuple[Hashable, Match]]:
        """End of input: the matches every rule held (``| tail``, trailing missing events)."""
        if self.finished:
            return []
        self.finished = True
        out: list[tuple[Hashable, Match]] = []
        for m in self._members:
            for match in m.finish():
                out.append((m.key, match))
        for key, runner, _, _ in self._runners:
            for match in runner.finish():
                out.append((key, match))
        return out
