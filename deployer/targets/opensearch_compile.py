"""Compile EQL rules into OpenSearch Alerting bucket-level monitors (see docs/opensearch.md).

One rule becomes one monitor:

* the search input selects the events of every step (Query DSL translated from the EQL
  conditions), scores each event with the bitmask of the steps it matches (one
  ``constant_score`` clause per distinct step, boost ``2**i``), and groups them by the join key
  with a ``composite`` aggregation named ``composite_agg``;
* per entity bucket, a ``scripted_metric`` sorts the events by (timestamp, tiebreaker, seq_no)
  and runs Elasticsearch's sequence state machine (one pending sequence per stage, newest wins,
  maxspan checked when a sequence advances), returning the number of completed sequences;
* the bucket-level trigger selects buckets whose count is above zero: one alert per entity.

Anything that cannot be expressed exactly is refused with :class:`UnsupportedConstruct`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deployer.eql import ast
from deployer.eql.errors import EqlError
from deployer.exceptions.loader import catalogue_near
from deployer.exceptions.model import Catalogue, referenced_list_ids
from deployer.exceptions.query import exception_query

# Ownership: every monitor this project writes has this name prefix and this marker in
# `ui_metadata` (the only free-form map an Alerting monitor stores; monitors have no tags).
NAME_PREFIX = "[dac] "
OWNER_KEY = "dac"
OWNER_VALUE = "dac"

COMPOSITE_AGG = "composite_agg"  # the name Alerting's bucket-level runner looks for
SEQUENCE_AGG = "dac_sequences"
# Present when a chain rule reads this monitor's alerts: the events of the completed sequences.
EVENTS_AGG = "dac_events"
# Completed sequences listed per bucket in the events aggregation (the alert document holds them).
MAX_EMITTED_SEQUENCES = 20
ALERTS_INDEX_PREFIX = ".alerts-security.alerts"

# Kibana severities onto Alerting's "1" (highest) .. "5".
SEVERITY = {"critical": "1", "high": "2", "medium": "3", "low": "4"}

# The score is a float32 sum of distinct powers of two; beyond 2**23 it is no longer exact.
MAX_DISTINCT_STEPS = 20
# Cartesian product of candidate key values tried per bucket when steps join on different fields.
MAX_KEY_COMBINATIONS = 64
DEFAULT_INTERVAL_MS = 5 * 60_000
DEFAULT_LOOKBACK_MS = 6 * 60_000

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class UnsupportedConstruct(Exception):
    """A rule uses something the OpenSearch compiler cannot express faithfully."""

    def __init__(self, rule_id: str, construct: str, detail: str, node: ast.Node | None = None) -> None:
        self.rule_id = rule_id
        self.construct = construct
        self.detail = detail
        self.line = node.line if node is not None else None
        self.column = node.column if node is not None else None
        where = f" at query line {self.line}, column {self.column}" if node is not None else ""
        # The message without the rule id, for listings that print the rule id themselves.
        self.reason = f"cannot compile for OpenSearch: {construct}{where}: {detail}"
        super().__init__(f"{rule_id}: {self.reason}")


@dataclass(frozen=True)
class CompiledRule:
    """A rule compiled to one Alerting monitor, plus what verification needs to know about it."""

    rule_id: str
    name: str
    monitor: dict[str, Any]
    indices: list[str]
    key_fields: list[list[str]]  # per join-key position, the field each stage reads
    step_queries: list[dict[str, Any]]  # per stage (runs expanded), its Query DSL
    maxspan_ms: int
    lookback_ms: int
    interval_minutes: int
    timestamp_field: str = "@timestamp"
    fingerprint: str = field(default="")
    # For a chain rule: the building blocks whose alerts its monitor reads (it has no events
    # index of its own; fixtures are replayed into the blocks' indices).
    reads_alerts_of: tuple[str, ...] = ()


# ---------------------------------------------------------------- conditions → Query DSL


def _wildcard_escape_backslash(pattern: str) -> str:
    # In EQL a backslash in `:`/`like` patterns is a literal character, while Lucene's wildcard
    # syntax treats it as an escape; Elasticsearch doubles it the same way.
    return pattern.replace("\\", "\\\\")


def _wildcard_literal(text: str) -> str:
    # A function argument (endsWith, stringContains) is literal text: escape every wildcard char.
    return re.sub(r"([\\*?])", r"\\\1", text)


def _has_wildcard(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def _term(field_name: str, value: Any, insensitive: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"value": value}
    if insensitive and isinstance(value, str):
        body["case_insensitive"] = True
    return {"term": {field_name: body}}


def _not(query: dict[str, Any]) -> dict[str, Any]:
    return {"bool": {"must_not": [query]}}


def _any_of(queries: list[dict[str, Any]]) -> dict[str, Any]:
    if len(queries) == 1:
        return queries[0]
    return {"bool": {"should": queries, "minimum_should_match": 1}}


def _all_of(queries: list[dict[str, Any]]) -> dict[str, Any]:
    # Nested pure-filter bools are spliced in: same meaning, flatter bodies.
    flat: list[dict[str, Any]] = []
    for q in queries:
        inner = q.get("bool")
        if isinstance(inner, dict) and set(inner) == {"filter"}:
            flat.extend(inner["filter"])
        elif q != MATCH_ALL:
            flat.append(q)
    if not flat:
        return MATCH_ALL
    return flat[0] if len(flat) == 1 else {"bool": {"filter": flat}}


MATCH_ALL: dict[str, Any] = {"match_all": {}}
MATCH_NONE: dict[str, Any] = {"match_none": {}}

_MIRROR = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_RANGE = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}


class ConditionCompiler:
    """Translate EQL boolean expressions to Query DSL the way Elasticsearch's EQL planner does."""

    def __init__(self, rule_id: str) -> None:
        self.rule_id = rule_id

    def refuse(self, construct: str, detail: str, node: ast.Node) -> UnsupportedConstruct:
        """Build the refusal for ``node``."""
        return UnsupportedConstruct(self.rule_id, construct, detail, node)

    def compile(self, expr: ast.Expr) -> dict[str, Any]:
        """Translate one condition."""
        if isinstance(expr, ast.And):
            return _all_of([self.compile(op) for op in expr.operands])
        if isinstance(expr, ast.Or):
            return _any_of([self.compile(op) for op in expr.operands])
        if isinstance(expr, ast.Not):
            return _not(self.compile(expr.operand))
        if isinstance(expr, ast.BooleanLiteral):
            return MATCH_ALL if expr.value else MATCH_NONE
        if isinstance(expr, ast.Field):
            # A bare field as a condition means `field == true` (Elasticsearch: term true).
            return _term(expr.name, True)
        if isinstance(expr, ast.Comparison):
            return self._comparison(expr)
        if isinstance(expr, ast.InList):
            return self._in(expr)
        if isinstance(expr, ast.PatternMatch):
            return self._pattern(expr)
        if isinstance(expr, ast.FunctionCall):
            return self._function(expr)
        if isinstance(expr, ast.Arithmetic | ast.Negate):
            raise self.refuse("arithmetic", "arithmetic needs a script; not compiled", expr)
        if isinstance(expr, ast.Literal):
            raise self.refuse(
                "constant condition", f"a bare constant {expr.value!r} is not a condition", expr
            )
        raise self.refuse(type(expr).__name__, "expression kind not supported", expr)

    def _field(self, expr: ast.Expr, context: str) -> ast.Field:
        if isinstance(expr, ast.Field):
            return expr
        if isinstance(expr, ast.FunctionCall):
            raise self.refuse(
                f"function {expr.name}()", f"a function result used in {context} needs a script", expr
            )
        if isinstance(expr, ast.Arithmetic | ast.Negate):
            raise self.refuse("arithmetic", f"arithmetic in {context} needs a script", expr)
        raise self.refuse(context, "the left-hand side must be a field", expr)

    def _comparison(self, expr: ast.Comparison) -> dict[str, Any]:
        left, op, right = expr.left, expr.op, expr.right
        if isinstance(left, ast.Literal) and not isinstance(right, ast.Literal):
            left, right, op = right, left, _MIRROR[op]
        if (
            isinstance(left, ast.FunctionCall)
            and isinstance(right, ast.BooleanLiteral)
            and op in ("==", "!=")
        ):
            positive = self._function(left)
            return positive if (op == "==") == right.value else _not(positive)
        if isinstance(right, ast.Field) and isinstance(left, ast.Field):
            raise self.refuse("field-to-field comparison", "Elasticsearch EQL rejects it too", expr)
        fld = self._field(left, f"comparison {op}")
        if not isinstance(right, ast.Literal):
            raise self.refuse(f"comparison {op}", "the right-hand side must be a constant", right)
        value = right.value
        if value is None:
            if op == "==":
                return _not({"exists": {"field": fld.name}})
            if op == "!=":
                return {"exists": {"field": fld.name}}
            raise self.refuse(f"comparison {op} null", "ordering against null is always null in EQL", expr)
        if op == "==":
            return _term(fld.name, value)
        if op == "!=":
            return _not(_term(fld.name, value))
        return {"range": {fld.name: {_RANGE[op]: value}}}

    def _in(self, expr: ast.InList) -> dict[str, Any]:
        fld = self._field(expr.expr, expr.op)
        values: list[Any] = []
        for item in expr.values:
            if not isinstance(item, ast.Literal) or isinstance(item, ast.NullLiteral):
                raise self.refuse(f"{expr.op} list", "list items must be non-null constants", item)
            values.append(item.value)
        if expr.case_insensitive:
            # `in~` is verbatim (no wildcard expansion), case-insensitive: one term per value.
            query = _any_of([_term(fld.name, v, insensitive=True) for v in values])
        else:
            query = {"terms": {fld.name: values}}
        return _not(query) if expr.negated else query

    def _pattern(self, expr: ast.PatternMatch) -> dict[str, Any]:
        fld = self._field(expr.expr, expr.op)
        patterns: list[str] = []
        for item in expr.patterns:
            if not isinstance(item, ast.StringLiteral):
                raise self.refuse(f"{expr.op} pattern", "patterns must be strings", item)
            patterns.append(item.value)
        insensitive = expr.case_insensitive
        if expr.is_regex:
            body: dict[str, Any] = {"value": "|".join(patterns)}
            if insensitive:
                body["case_insensitive"] = True
            return {"regexp": {fld.name: body}}
        queries = []
        for pattern in patterns:
            if _has_wildcard(pattern):
                wbody: dict[str, Any] = {"wildcard": _wildcard_escape_backslash(pattern)}
                if insensitive:
                    wbody["case_insensitive"] = True
                queries.append({"wildcard": {fld.name: wbody}})
            else:
                queries.append(_term(fld.name, pattern, insensitive=insensitive))
        return _any_of(queries)

    def _function(self, expr: ast.FunctionCall) -> dict[str, Any]:
        name = expr.name.lower()
        args = expr.args
        simple = (
            len(args) >= 2
            and isinstance(args[0], ast.Field)
            and all(isinstance(a, ast.StringLiteral) for a in args[1:])
        )
        label = f"function {expr.name}{'~' if expr.case_insensitive else ''}()"
        if name not in ("startswith", "endswith", "stringcontains", "cidrmatch"):
            raise self.refuse(
                label, "functions other than startsWith/endsWith/stringContains/cidrMatch need a script", expr
            )
        if not simple:
            raise self.refuse(label, "only a field and constant strings can be translated to a query", expr)
        fld = args[0].name  # type: ignore[union-attr]
        texts = [a.value for a in args[1:]]  # type: ignore[union-attr]
        if name == "cidrmatch":
            return {"terms": {fld: texts}}
        if len(texts) != 1:
            raise self.refuse(label, "takes exactly two arguments", expr)
        text = texts[0]

        def wildcard(value: str) -> dict[str, Any]:
            body: dict[str, Any] = {"wildcard": value}
            if expr.case_insensitive:
                body["case_insensitive"] = True
            return {"wildcard": {fld: body}}

        if name == "startswith":
            body: dict[str, Any] = {"value": text}
            if expr.case_insensitive:
                body["case_insensitive"] = True
            return {"prefix": {fld: body}}
        if name == "endswith":
            return wildcard("*" + _wildcard_literal(text))
        if name == "stringcontains":
            if text == "":
                # stringContains(x, "") is false in Elasticsearch, whereas "**" would match all.
                return MATCH_NONE
        return wildcard("*" + _wildcard_literal(text) + "*")


# ---------------------------------------------------------------- painless: the sequence matcher

# Per document: [timestamp ms, step bitmask (the score), tiebreaker or null, _seq_no, key values...].
_MAP_SCRIPT = """
int m = (int) Math.round(_score);
if (m == 0 || doc[params.ts].size() == 0) { return; }
List e = new ArrayList();
e.add(doc[params.ts].value.toInstant().toEpochMilli());
e.add(m);
def tb = null;
if (params.containsKey('tb') && doc.containsKey(params.tb) && doc[params.tb].size() > 0) { tb = doc[params.tb].value; }
e.add(tb);
e.add(doc['_seq_no'].size() > 0 ? doc['_seq_no'].value : 0L);
for (f in params.kf) {
  List vs = new ArrayList();
  if (doc.containsKey(f)) { for (v in doc[f]) { vs.add(v); } }
  e.add(vs);
}
state.ev.add(e);
""".strip()

# Elasticsearch's matcher: per key, one pending sequence per stage (a newer one overwrites it);
# an event of stage k takes the stage k-1 sequence (removing it), checks maxspan against the
# sequence's first event, then moves it to stage k or completes it. Stages are visited from last
# to first so one event can advance one sequence and start another. With `params.collect` it
# returns the completed sequences as lists of `_seq_no` (for `dac run --engine opensearch`)
# instead of their number; with `params.emit` (the `dac_events` aggregation chains read) as lists
# of {t, s (stage), recorded fields}, at most `emit` sequences. With `params.dk` (chain monitors
# over alert documents, where one document holds many events) the bucket's key candidates come
# from each event's document key set, stored after its fields.
_REDUCE_SCRIPT = """
List ev = new ArrayList();
for (s in states) { if (s != null) { ev.addAll(s); } }
boolean collect = params.containsKey('collect');
boolean emit = params.containsKey('emit');
List out = new ArrayList();
if (ev.isEmpty()) { return (collect || emit) ? out : 0; }
ev.sort((a, b) -> {
  int c = Long.compare((long) a[0], (long) b[0]);
  if (c != 0) { return c; }
  def x = a[2]; def y = b[2];
  if (x != null || y != null) {
    if (x == null) { return 1; }
    if (y == null) { return -1; }
    c = x.compareTo(y);
    if (c != 0) { return c; }
  }
  return Long.compare((long) a[3], (long) b[3]);
});
int n = params.bits.size();
int np = params.upos.size();
List cands = new ArrayList();
long combos = 1;
for (int j = 0; j < np; j++) {
  Set inter = null;
  for (e in ev) {
    Set u = new HashSet();
    if (params.containsKey('dk')) { u.addAll(e[4 + params.kf.size() + j]); }
    else { for (def i : params.upos[j]) { u.addAll(e[4 + (int) i]); } }
    if (inter == null) { inter = u; } else { inter.retainAll(u); }
  }
  List c = new ArrayList(inter);
  cands.add(c);
  combos *= c.size();
}
if (combos == 0) { return (collect || emit) ? out : 0; }
int limit = emit ? (int) params.emit : Integer.MAX_VALUE;
if (combos > params.maxcombos) { combos = params.maxcombos; }
long total = 0;
for (long ci = 0; ci < combos; ci++) {
  List pick = new ArrayList();
  long r = ci;
  for (int j = 0; j < np; j++) {
    int sz = cands[j].size();
    pick.add(cands[j][(int) (r % sz)]);
    r = r / sz;
  }
  long[] start = new long[n];
  boolean[] has = new boolean[n];
  List[] pend = new List[n];
  for (e in ev) {
    long t = (long) e[0];
    int m = (int) e[1];
    for (int k = n - 1; k >= 0; k--) {
      if ((m & (int) params.bits[k]) == 0) { continue; }
      boolean ok = true;
      for (int j = 0; j < np; j++) {
        if (!e[4 + (int) params.upos[j][k]].contains(pick[j])) { ok = false; break; }
      }
      if (!ok) { continue; }
      def item = null;
      if (collect) { item = e[3]; }
      else if (emit) {
        Map o = new HashMap();
        o.put('t', t);
        o.put('s', k);
        for (int f = 0; f < params.kf.size(); f++) { o.put(params.kf[f], e[4 + f]); }
        item = o;
      }
      if (k == 0) {
        List sq = new ArrayList();
        if (item != null) { sq.add(item); }
        if (n == 1) { total++; if (item != null && out.size() < limit) { out.add(sq); } }
        else { start[0] = t; has[0] = true; pend[0] = sq; }
      } else if (has[k - 1]) {
        has[k - 1] = false;
        long st = start[k - 1];
        if (t - st <= params.maxspan) {
          List sq = pend[k - 1];
          if (item != null) { sq = new ArrayList(sq); sq.add(item); }
          if (k == n - 1) { total++; if (item != null && out.size() < limit) { out.add(sq); } }
          else { start[k] = st; has[k] = true; pend[k] = sq; }
        }
      }
    }
  }
}
return (collect || emit) ? out : total;
""".strip()

# Composite source for a key position whose field differs between steps: every value of every
# field the steps read at that position; the reduce script then checks each stage's own field.
_UNION_KEY_SCRIPT = """
List out = new ArrayList();
for (f in params.fields) {
  if (doc.containsKey(f)) { for (v in doc[f]) { if (!out.contains(v)) { out.add(v); } } }
}
return out;
""".strip()

# Composite source for an optional key (`?field`): its values, or NULL_KEY when it has none.
# Alerting turns every bucket key into a string and fails on a null one ("Cannot invoke
# Object.toString() because it is null"), so `missing_bucket` cannot be used.
_OPTIONAL_KEY_SCRIPT = """
List out = new ArrayList();
if (doc.containsKey(params.field)) { for (v in doc[params.field]) { out.add(v); } }
if (out.isEmpty()) { out.add(params.null_key); }
return out;
""".strip()
# The bucket key of an optional join key that is null (EQL joins null with null).
NULL_KEY = "(null)"


# ---------------------------------------------------------------- rules → monitors


def parse_duration_ms(text: str) -> int:
    """Parse ``5m``/``30s``/``1h`` (and Kibana's ``now-6m``) into milliseconds."""
    value = text.strip()
    if value.startswith("now-"):
        value = value[4:]
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def canonical_json(value: Any) -> str:
    """Stable JSON text (sorted keys, no spaces) used for hashing and comparisons."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(monitor: Mapping[str, Any]) -> str:
    """Hash of everything in a monitor body except its own ownership metadata."""
    body = {k: v for k, v in monitor.items() if k != "ui_metadata"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()[:16]


def _is_alert_rule(rule: Mapping[str, Any]) -> bool:
    indices = rule.get("index") or []
    meta = rule.get("metadata") or {}
    return bool(meta.get("depends_on")) or any(str(i).startswith(ALERTS_INDEX_PREFIX) for i in indices)


def _parse_query(rule_id: str, text: str) -> ast.Query:
    from deployer.eql import parser

    try:
        return parser.parse(text)
    except EqlError as exc:
        raise UnsupportedConstruct(rule_id, "EQL", f"query does not parse: {exc}") from exc


def compile_rule(
    rule: Mapping[str, Any],
    *,
    rule_id: str | None = None,
    exceptions: Catalogue | None = None,
    record: Sequence[str] | None = None,
) -> CompiledRule:
    """Compile one rule (its YAML mapping: Kibana fields plus ``metadata``) into a monitor.

    The rule's exception items (from ``exceptions``) go into the search's ``must_not`` the way
    Kibana puts them in the ``_eql/search`` filter: an excepted event never reaches the sequence.
    ``record`` (fields) adds the ``dac_events`` aggregation, which lists each completed
    sequence's events with those fields, for chain rules that read this monitor's alerts.
    """
    rid = str(rule_id or rule.get("rule_id") or "<no rule_id>")
    if rule.get("type", "eql") != "eql" or rule.get("language", "eql") != "eql":
        raise UnsupportedConstruct(rid, f"rule type {rule.get('type')!r}", "only EQL rules are compiled")
    if _is_alert_rule(rule):
        raise UnsupportedConstruct(
            rid,
            "rule over other rules' alerts",
            "it reads Kibana's .alerts-security.alerts-* index, which OpenSearch does not have; it "
            "compiles only together with its building-block rules (compile_rules), into a monitor "
            "over their alerts",
        )
    if rule.get("filters"):
        raise UnsupportedConstruct(
            rid, "filters", "Kibana applies these on top of the query; the monitor would not, so it is refused"
        )
    try:
        excepted = exception_query(rule, exceptions or Catalogue())
    except KeyError as exc:
        raise UnsupportedConstruct(
            rid, "exceptions_list", f"the exception list {exc.args[0]!r} is not declared in the repository"
        ) from None
    query = _parse_query(rid, str(rule.get("query", "")))
    if query.pipes:
        pipe = query.pipes[0]
        raise UnsupportedConstruct(
            rid,
            f"pipe | {pipe.name}",
            "head/tail limit the result set, which a monitor cannot reproduce",
            pipe,
        )
    body = query.body
    if isinstance(body, ast.Sample):
        raise UnsupportedConstruct(rid, "sample", "unordered samples are not compiled", body)
    if isinstance(body, ast.EventQuery):
        raise UnsupportedConstruct(
            rid,
            "event query",
            "only sequences joined on an entity key are compiled (one alert per entity)",
            body,
        )
    assert isinstance(body, ast.Sequence)
    return _compile_sequence(rid, rule, body, excepted, record)


def _compile_sequence(
    rid: str,
    rule: Mapping[str, Any],
    seq: ast.Sequence,
    excepted: dict[str, Any] | None = None,
    record: Sequence[str] | None = None,
) -> CompiledRule:
    if seq.until is not None:
        raise UnsupportedConstruct(
            rid, "until", "the terminating condition needs per-sequence state between events", seq.until
        )
    for step in seq.steps:
        if step.missing:
            raise UnsupportedConstruct(rid, "missing event ![...]", "absence checks are not compiled", step)
    if seq.maxspan is None:
        raise UnsupportedConstruct(
            rid, "sequence without maxspan", "a monitor looks back over a bounded window", seq
        )
    stages = seq.expanded_steps()
    keys = [seq.keys_for(s) for s in stages]
    if not keys or not keys[0]:
        raise UnsupportedConstruct(rid, "sequence without join key", "alerts are raised per entity key", seq)
    width = len(keys[0])
    if any(len(k) != width for k in keys):
        raise UnsupportedConstruct(rid, "join keys", "every step must have the same number of keys", seq)

    conditions = ConditionCompiler(rid)
    category_field = str(rule.get("event_category_override") or "event.category")
    ts_field = str(rule.get("timestamp_field") or "@timestamp")
    range_field = str(rule.get("timestamp_override") or ts_field)
    tiebreaker = rule.get("tiebreaker_field")

    step_queries: list[dict[str, Any]] = []
    for step in stages:
        parts: list[dict[str, Any]] = []
        if step.query.category is not None:
            parts.append(_term(category_field, step.query.category))
        parts.append(conditions.compile(step.query.condition))
        step_queries.append(_all_of(parts))

    # One score bit per distinct step query (runs=N repeats share a bit).
    distinct: list[str] = []
    bits: list[int] = []
    for q in step_queries:
        text = canonical_json(q)
        if text not in distinct:
            distinct.append(text)
        bits.append(1 << distinct.index(text))
    if len(distinct) > MAX_DISTINCT_STEPS:
        raise UnsupportedConstruct(
            rid, "sequence length", f"more than {MAX_DISTINCT_STEPS} distinct steps", seq
        )

    # Join keys: a position read from the same field by every stage is a plain terms source;
    # otherwise a script source emits the values of all its fields and the reduce script checks
    # each stage against its own field.
    sources: list[dict[str, Any]] = []
    key_fields: list[list[str]] = []
    union_fields: list[str] = []
    union_positions: list[list[int]] = []
    for pos in range(width):
        fields_at = [k[pos] for k in keys]
        names = [f.name for f in fields_at]
        key_fields.append(names)
        optional = {f.optional for f in fields_at}
        if len(optional) > 1:
            raise UnsupportedConstruct(
                rid,
                "optional join key",
                "a key must be optional (?field) in every step or in none",
                fields_at[0],
            )
        if len(set(names)) == 1:
            terms: dict[str, Any] = {"field": names[0]}
            if optional == {True}:
                # EQL: an optional key may be null, and null joins with null.
                terms = {
                    "script": {
                        "lang": "painless",
                        "source": _OPTIONAL_KEY_SCRIPT,
                        "params": {"field": names[0], "null_key": NULL_KEY},
                    }
                }
            sources.append({f"k{pos}": {"terms": terms}})
            continue
        if optional == {True}:
            raise UnsupportedConstruct(
                rid, "optional join key", "optional keys must use one field across steps", fields_at[0]
            )
        unique = list(dict.fromkeys(names))
        for name in unique:
            if name not in union_fields:
                union_fields.append(name)
        union_positions.append([union_fields.index(n) for n in names])
        sources.append(
            {
                f"k{pos}": {
                    "terms": {
                        "script": {
                            "lang": "painless",
                            "source": _UNION_KEY_SCRIPT,
                            "params": {"fields": unique},
                        }
                    }
                }
            }
        )

    interval_ms = parse_duration_ms(str(rule.get("interval") or "5m"))
    interval_minutes = max(1, -(-interval_ms // 60_000))
    from_ms = parse_duration_ms(str(rule.get("from") or "now-6m"))
    maxspan_ms = seq.maxspan.millis
    # Every sequence no longer than maxspan must lie whole inside at least one run's window.
    lookback_ms = max(from_ms, interval_minutes * 60_000 + maxspan_ms)
    lookback_s = -(-lookback_ms // 1000)

    search = {
        "size": 0,
        "query": {
            "bool": {
                "filter": [
                    {
                        "range": {
                            range_field: {
                                "gte": f"{{{{period_end}}}}||-{lookback_s}s",
                                "lte": "{{period_end}}",
                                "format": "epoch_millis",
                            }
                        }
                    }
                ],
                "should": [
                    {"constant_score": {"filter": json.loads(text), "boost": float(1 << i)}}
                    for i, text in enumerate(distinct)
                ],
                "minimum_should_match": 1,
                **({"must_not": [excepted]} if excepted is not None else {}),
            }
        },
        "aggregations": {
            COMPOSITE_AGG: {
                "composite": {"size": 500, "sources": sources},
                "aggregations": {
                    SEQUENCE_AGG: {
                        "scripted_metric": {
                            "init_script": {"lang": "painless", "source": "state.ev = new ArrayList();"},
                            "map_script": {"lang": "painless", "source": _MAP_SCRIPT},
                            "combine_script": {"lang": "painless", "source": "return state.ev;"},
                            "reduce_script": {"lang": "painless", "source": _REDUCE_SCRIPT},
                            "params": {
                                "ts": ts_field,
                                "kf": union_fields,
                                "bits": bits,
                                "upos": union_positions,
                                "maxspan": maxspan_ms,
                                "maxcombos": MAX_KEY_COMBINATIONS,
                            },
                        }
                    }
                },
            }
        },
    }
    # Alerting renders the whole search as a mustache template; rule text containing `{{` would
    # be taken for a template tag and silently change the query.
    if canonical_json(search).count("{{") != 2:
        raise UnsupportedConstruct(
            rid,
            "'{{' in the query",
            "Alerting renders searches as mustache templates, which would alter it",
            seq,
        )
    if tiebreaker:
        # Only set when present: OpenSearch rejects null script parameters.
        metric = search["aggregations"][COMPOSITE_AGG]["aggregations"][SEQUENCE_AGG]["scripted_metric"]
        metric["params"]["tb"] = str(tiebreaker)
    if record is not None:
        # Same matcher, emitting mode: the extra fields go after the key fields, so the key
        # positions the reduce script reads are unchanged.
        seq_agg = search["aggregations"][COMPOSITE_AGG]["aggregations"]
        metric = json.loads(canonical_json(seq_agg[SEQUENCE_AGG]["scripted_metric"]))
        kf = metric["params"]["kf"]
        for name in [*dict.fromkeys(f.name for k in keys for f in k), *record]:
            if name not in kf:
                kf.append(name)
        metric["params"]["emit"] = MAX_EMITTED_SEQUENCES
        seq_agg[EVENTS_AGG] = {"scripted_metric": metric}
    indices = [str(i) for i in (rule.get("index") or [])]
    if not indices:
        raise UnsupportedConstruct(rid, "index", "the rule names no index patterns")
    name = str(rule.get("name") or rid)
    monitor, fp = bucket_monitor(rid, rule, indices, search, interval_minutes)
    return CompiledRule(
        rule_id=rid,
        name=name,
        monitor=monitor,
        indices=indices,
        key_fields=key_fields,
        step_queries=step_queries,
        maxspan_ms=maxspan_ms,
        lookback_ms=lookback_s * 1000,
        interval_minutes=interval_minutes,
        timestamp_field=ts_field,
        fingerprint=fp,
    )


def bucket_monitor(
    rid: str,
    rule: Mapping[str, Any],
    indices: list[str],
    search: dict[str, Any],
    interval_minutes: int,
    **ownership: Any,
) -> tuple[dict[str, Any], str]:
    """A rule's bucket-level monitor (trigger on any completed sequence) with its ownership marks.

    Returns the body and its fingerprint; `ownership` adds keys to the marks.
    """
    name = str(rule.get("name") or rid)
    monitor: dict[str, Any] = {
        "type": "monitor",
        "monitor_type": "bucket_level_monitor",
        "name": NAME_PREFIX + name,
        "enabled": bool(rule.get("enabled", True)),
        "schedule": {"period": {"interval": interval_minutes, "unit": "MINUTES"}},
        "inputs": [{"search": {"indices": indices, "query": search}}],
        "triggers": [
            {
                "bucket_level_trigger": {
                    "id": trigger_id(rid),
                    "name": name,
                    "severity": SEVERITY.get(str(rule.get("severity", "medium")).lower(), "3"),
                    "condition": {
                        "parent_bucket_path": COMPOSITE_AGG,
                        "buckets_path": {"sequences": f"{SEQUENCE_AGG}.value"},
                        "script": {"lang": "painless", "source": "params.sequences > 0"},
                    },
                    "actions": [],
                }
            }
        ],
    }
    fp = fingerprint(monitor)
    monitor["ui_metadata"] = {
        OWNER_KEY: {
            "managed_by": OWNER_VALUE,
            "rule_id": rid,
            "rule_version": rule.get("version"),
            "fingerprint": fp,
            **ownership,
        }
    }
    return monitor, fp


def trigger_id(rule_id: str) -> str:
    """The trigger id the compiled monitor of ``rule_id`` carries."""
    # A stable trigger id makes `_execute` results and alerts addressable across redeploys.
    return "dac-" + hashlib.sha256(rule_id.encode()).hexdigest()[:20]


@dataclass
class CompileReport:
    """Outcome of compiling many rules: the monitors and the refusals, rule by rule."""

    compiled: list[CompiledRule] = field(default_factory=list)
    refused: list[UnsupportedConstruct] = field(default_factory=list)


def compile_rules(rules: Sequence[Any], exceptions: Catalogue | None = None) -> CompileReport:
    """Compile rules (``RuleFile`` objects or plain mappings); refusals are collected, not raised.

    Without ``exceptions``, the lists are looked up in the ``exceptions/`` directories beside the
    rule files that reference any. Chain rules over building-block alerts are compiled after
    their blocks (``opensearch_chain``); the blocks then record the fields the chains join on.
    """
    from deployer.targets import opensearch_chain as chain

    report = CompileReport()
    if exceptions is None:
        exceptions = catalogue_near(
            [rule.path for rule in rules if getattr(rule, "path", None) and referenced_list_ids(rule)]
        )
    items = [(getattr(r, "data", r), getattr(r, "rule_id", None)) for r in rules]
    record: dict[str, list[str]] = {}
    chains: list[tuple[Mapping[str, Any], str]] = []
    for data, rid in items:
        if not chain.is_chain_rule(data):
            continue
        rid = str(rid or data.get("rule_id") or "<no rule_id>")
        chains.append((data, rid))
        try:
            for block in chain.step_blocks(rid, data):
                fields = record.setdefault(block, [])
                fields.extend(f for f in chain.recorded_fields(rid, data) if f not in fields)
        except UnsupportedConstruct:
            pass  # reported when the chain itself is compiled below
    blocks: dict[str, tuple[Mapping[str, Any], CompiledRule]] = {}
    refused: dict[str, UnsupportedConstruct] = {}
    for data, rid in items:
        if chain.is_chain_rule(data):
            continue
        key = str(rid or data.get("rule_id") or "")
        try:
            compiled = compile_rule(data, rule_id=rid, exceptions=exceptions, record=record.get(key))
        except UnsupportedConstruct as exc:
            report.refused.append(exc)
            refused[key] = exc
            continue
        report.compiled.append(compiled)
        blocks[compiled.rule_id] = (data, compiled)
    for data, rid in chains:
        try:
            report.compiled.append(chain.compile_chain(data, rid, blocks, refused))
        except UnsupportedConstruct as exc:
            report.refused.append(exc)
    return report


def is_owned(monitor: Mapping[str, Any]) -> bool:
    """True when a stored monitor carries this project's name prefix and ownership marker."""
    meta = (monitor.get("ui_metadata") or {}).get(OWNER_KEY) or {}
    return str(monitor.get("name", "")).startswith(NAME_PREFIX) and meta.get("managed_by") == OWNER_VALUE


def owned_rule_id(monitor: Mapping[str, Any]) -> str | None:
    """The rule id recorded in an owned monitor, else None."""
    if not is_owned(monitor):
        return None
    rid = monitor["ui_metadata"][OWNER_KEY].get("rule_id")
    return str(rid) if rid else None
