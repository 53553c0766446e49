"""The EQL query: syntax, fields, types, allowed values, sequence policy, mapping coverage."""

from __future__ import annotations

import difflib
import fnmatch
import ipaddress
import json
from collections.abc import Iterator
from datetime import datetime
from functools import lru_cache

from deployer.ecs.registry import FieldInfo
from deployer.eql import ast
from deployer.eql.errors import EqlError
from deployer.rules.checks.base import Context, article, finding, short, type_name, unknown_field_hint
from deployer.rules.checks.index import over_alerts
from deployer.rules.findings import ERROR, WARNING, Finding
from deployer.rules.loader import RuleFile

# Common wrong spellings of ECS allowed values (past tense, plurals) → the ECS value.
_VALUE_SYNONYMS = {
    "created": "creation",
    "create": "creation",
    "deleted": "deletion",
    "delete": "deletion",
    "modified": "change",
    "modification": "change",
    "changed": "change",
    "started": "start",
    "stopped": "end",
    "ended": "end",
    "exit": "end",
    "connected": "connection",
    "connect": "connection",
    "installed": "installation",
    "install": "installation",
    "accessed": "access",
    "denial": "denied",
    "failed": "failure",
    "fail": "failure",
    "succeeded": "success",
    "successful": "success",
    "processes": "process",
    "files": "file",
    "networks": "network",
    "alerts": "alert",
}

_STRING_FUNCTIONS = frozenset(
    {
        "startsWith",
        "endsWith",
        "stringContains",
        "wildcard",
        "length",
        "substring",
        "indexOf",
        "between",
        "number",
    }
)
_NUMERIC_FUNCTIONS = frozenset({"add", "subtract", "multiply", "divide", "modulo"})


@lru_cache(maxsize=8)
def parse_query(query: str) -> ast.Query:
    """Parse an EQL query with the one shared parser."""
    from deployer.eql import parser  # imported here: the grammar is only built when a query is checked

    return parser.parse(query)


def check_query(rule: RuleFile, ctx: Context) -> Iterator[Finding]:
    """EQL syntax, fields, types, allowed values, sequence policy and mapping coverage."""
    query = rule.data.get("query")
    if not isinstance(query, str) or not query.strip():
        return  # the schema check reports a missing or non-string query
    try:
        tree = parse_query(query)
    except EqlError as exc:
        code = "eql-syntax" if type(exc).__name__ == "EqlSyntaxError" else "eql-unsupported"
        pos = rule.query_position(exc.line or 1, exc.column or 1)
        yield finding(rule, pos, code, f"query: {exc.message}", exc.hint)
        return
    checker = _QueryChecker(rule, ctx, tree)
    yield from checker.run()


class _QueryChecker:
    """Checks over a parsed query; positions are mapped from the query text into the file."""

    def __init__(self, rule: RuleFile, ctx: Context, tree: ast.Query) -> None:
        self.rule = rule
        self.ctx = ctx
        self.tree = tree
        self.known = ctx.fields_for(rule)
        self.registry = self.known.registry
        self.category_override = rule.data.get("event_category_override")

    def at(self, node: ast.Node) -> tuple[int, int]:
        return self.rule.query_position(node.line, node.column)

    def finding(
        self, node: ast.Node, code: str, message: str, hint: str | None = None, severity: str = ERROR
    ) -> Finding:
        return finding(self.rule, self.at(node), code, message, hint, severity)

    def run(self) -> Iterator[Finding]:
        # One traversal serves every check (ast.field_refs is the same walk, filtered).
        self.nodes = list(ast.walk(self.tree))
        self.refs = [n for n in self.nodes if isinstance(n, ast.Field)]
        yield from self.fields()
        for node in self.nodes:
            if isinstance(node, ast.EventQuery):
                yield from self.category(node)
            elif isinstance(node, ast.Comparison):
                yield from self.comparison(node)
            elif isinstance(node, ast.InList):
                yield from self.in_list(node)
            elif isinstance(node, ast.PatternMatch):
                yield from self.pattern(node)
            elif isinstance(node, ast.FunctionCall):
                yield from self.function(node)
            elif isinstance(node, ast.Arithmetic):
                yield from self.arithmetic(node)
        if isinstance(self.tree.body, ast.Sequence):
            yield from self.sequence(self.tree.body)
        yield from self.mapping_coverage()

    # -- fields

    def info(self, expr: ast.Expr) -> FieldInfo | None:
        if isinstance(expr, ast.Field):
            return self.registry.get(expr.name)
        return None

    def fields(self) -> Iterator[Finding]:
        reported: set[tuple[str, int, int]] = set()
        for ref in self.refs:
            info = self.registry.get(ref.name)
            key = (ref.name, ref.line, ref.column)
            if key in reported:
                continue
            reported.add(key)
            if info is None:
                if self.known.unverified(ref.name):
                    continue  # reported once per rule by check_field_packs
                hint = unknown_field_hint(self.registry, ref.name)
                severity = WARNING if ref.optional else ERROR
                message = self.known.unknown_message(ref.name)
                if ref.optional:
                    message += " (written ?field, so Elasticsearch reads it as null)"
                yield self.finding(ref, "unknown-field", message, hint, severity)
            elif info.kind == "object":
                yield self.finding(
                    ref,
                    "field-type",
                    f"'{ref.name}' is an {info.type} field, not a value",
                    "compare one of its leaf fields",
                )

    # -- event categories

    def category(self, node: ast.EventQuery) -> Iterator[Finding]:
        if node.category is None or self.category_override:
            return
        info = self.registry.get("event.category")
        if info is None or not info.allowed_values or node.category in info.allowed_values:
            return
        yield self.finding(
            node,
            "allowed-value",
            f"event category '{node.category}' is not an ECS event.category value",
            _value_hint(node.category, info.allowed_values),
        )

    # -- comparisons and literals

    def comparison(self, node: ast.Comparison) -> Iterator[Finding]:
        left, right = node.left, node.right
        if isinstance(right, ast.Field) and not isinstance(left, ast.Field):
            left, right = right, left
        if not isinstance(left, ast.Field):
            return
        info = self.info(left)
        if info is None:
            return
        if isinstance(right, ast.Field):
            other = self.info(right)
            if other is not None and _incompatible(info.kind, other.kind):
                yield self.finding(
                    node,
                    "field-type",
                    f"compares {info.type} field '{left.name}' with {other.type} field '{right.name}'",
                )
            return
        if isinstance(right, ast.Literal):
            yield from self.literal(left, info, right, case_sensitive=True, equality=node.op in ("==", "!="))

    def literal(
        self,
        fld: ast.Field,
        info: FieldInfo,
        lit: ast.Literal,
        *,
        case_sensitive: bool,
        equality: bool,
    ) -> Iterator[Finding]:
        if isinstance(lit, ast.NullLiteral):
            return
        kind = info.kind
        value = lit.value
        name, ftype = fld.name, info.type
        if kind == "number":
            if isinstance(lit, ast.StringLiteral):
                suggestion = value if _is_number(value) else "a number"
                yield self.finding(
                    lit,
                    "field-type",
                    f"'{name}' is {article(ftype)} field; compared with the string {json.dumps(value)}",
                    f"compare with a number: {name} == {suggestion}",
                )
            elif isinstance(lit, ast.BooleanLiteral):
                yield self.finding(
                    lit, "field-type", f"'{name}' is {article(ftype)} field; compared with a boolean"
                )
        elif kind == "string":
            if isinstance(lit, ast.NumberLiteral):
                # Elasticsearch accepts a number against a keyword field and compares its decimal
                # string form (the evaluator does the same): `zone_identifier == 3` matches "3".
                # Only an ordering comparison is a trap, because strings order digit by digit.
                if not equality:
                    yield self.finding(
                        lit,
                        "field-type",
                        f"'{name}' is {article(ftype)} field, so it is compared with {value!r} as a "
                        f'string: "10" sorts before "9"',
                        "compare with an explicit list of values, or use a numeric field",
                        WARNING,
                    )
            elif isinstance(lit, ast.BooleanLiteral):
                yield self.finding(
                    lit,
                    "field-type",
                    f"'{name}' is {article(ftype)} field; compared with {type_name(value)} {value!r}",
                    f'quote the value: {name} == "{str(value).lower() if isinstance(value, bool) else value}"',
                )
            elif isinstance(lit, ast.StringLiteral) and equality and info.allowed_values:
                yield from self.allowed(lit, name, info, value, case_sensitive)
        elif kind == "boolean":
            if not isinstance(lit, ast.BooleanLiteral):
                yield self.finding(
                    lit,
                    "field-type",
                    f"'{name}' is a boolean field; compared with {short(value)}",
                    f"compare with true or false: {name} == true",
                )
        elif kind == "ip":
            if isinstance(lit, ast.StringLiteral):
                if not _is_ip(value):
                    hint = (
                        f'for a range use cidrMatch({name}, "{value}")'
                        if "/" in value or "*" in value
                        else "write a full IPv4 or IPv6 address"
                    )
                    yield self.finding(
                        lit,
                        "field-type",
                        f"'{name}' is an ip field; {json.dumps(value)} is not an IP address",
                        hint,
                    )
            else:
                yield self.finding(
                    lit,
                    "field-type",
                    f"'{name}' is an ip field; compared with {type_name(value)}",
                    'quote the address: "10.0.0.1"',
                )
        elif kind == "date":
            if isinstance(lit, ast.StringLiteral) and not _is_date(value):
                yield self.finding(
                    lit,
                    "field-type",
                    f"'{name}' is a date field; {json.dumps(value)} is not an ISO-8601 date",
                    'write e.g. "2024-01-31T12:00:00Z" or epoch milliseconds',
                )
            elif isinstance(lit, ast.BooleanLiteral):
                yield self.finding(lit, "field-type", f"'{name}' is a date field; compared with a boolean")

    def allowed(
        self,
        lit: ast.Node,
        name: str,
        info: FieldInfo,
        value: str,
        case_sensitive: bool,
        wildcard: bool = False,
    ) -> Iterator[Finding]:
        options = info.allowed_values
        if wildcard and ("*" in value or "?" in value):
            if any(fnmatch.fnmatchcase(o.lower(), value.lower()) for o in options):
                return
        elif (value in options) or (not case_sensitive and value.lower() in options):
            return
        message = f"{json.dumps(value)} is not an allowed value of {name}"
        if case_sensitive and value.lower() in options:
            message += " (== is case-sensitive and ECS values are lowercase)"
        yield self.finding(lit, "allowed-value", message, _value_hint(value, options))

    def in_list(self, node: ast.InList) -> Iterator[Finding]:
        info = self.info(node.expr)
        if info is None or not isinstance(node.expr, ast.Field):
            return
        for value in node.values:
            if isinstance(value, ast.Literal):
                yield from self.literal(
                    node.expr, info, value, case_sensitive=not node.case_insensitive, equality=True
                )

    def pattern(self, node: ast.PatternMatch) -> Iterator[Finding]:
        info = self.info(node.expr)
        if info is None or not isinstance(node.expr, ast.Field):
            return
        name = node.expr.name
        if info.kind != "string":
            if info.kind == "ip":
                first = next(
                    (p.value for p in node.patterns if isinstance(p, ast.StringLiteral)), "10.0.0.0/8"
                )
                cidr = _wildcard_to_cidr(str(first))
                hint = f'use cidrMatch({name}, "{cidr}")'
            else:
                hint = f"compare with == instead: {name} == ..."
            yield self.finding(
                node,
                "field-type",
                f"'{node.op}' matches strings, but '{name}' is {article(info.type)} field",
                hint,
            )
            return
        if info.allowed_values and not node.is_regex:
            for lit in node.patterns:
                if isinstance(lit, ast.StringLiteral):
                    yield from self.allowed(
                        lit, name, info, lit.value, case_sensitive=not node.case_insensitive, wildcard=True
                    )

    def function(self, node: ast.FunctionCall) -> Iterator[Finding]:
        if not node.args:
            return
        first = node.args[0]
        info = self.info(first)
        if info is None or not isinstance(first, ast.Field):
            return
        name = first.name
        if node.name in _STRING_FUNCTIONS and info.kind not in ("string", "other"):
            yield self.finding(
                node,
                "field-type",
                f"{node.name}() works on strings, but '{name}' is {article(info.type)} field",
                "cidrMatch() for IP ranges" if info.kind == "ip" else None,
            )
        elif node.name == "cidrMatch" and info.kind not in ("ip", "string", "other"):
            yield self.finding(
                node,
                "field-type",
                f"cidrMatch() needs an ip field, but '{name}' is {article(info.type)} field",
            )
        elif node.name in _NUMERIC_FUNCTIONS:
            for arg in node.args:
                arg_info = self.info(arg)
                if arg_info is not None and arg_info.kind != "number" and isinstance(arg, ast.Field):
                    yield self.finding(
                        arg,
                        "field-type",
                        f"{node.name}() needs numbers, but '{arg.name}' is {article(arg_info.type)} field",
                    )

    def arithmetic(self, node: ast.Arithmetic) -> Iterator[Finding]:
        for side in (node.left, node.right):
            info = self.info(side)
            if info is not None and isinstance(side, ast.Field) and info.kind != "number":
                yield self.finding(
                    side,
                    "field-type",
                    f"arithmetic needs numbers, but '{side.name}' is {article(info.type)} field",
                )

    # -- sequences

    def sequence(self, seq: ast.Sequence) -> Iterator[Finding]:
        policy = self.ctx.config.validation
        limit_ms, limit_text = policy.max_maxspan_ms, policy.max_maxspan_text
        if seq.maxspan is None:
            yield self.finding(
                seq,
                "sequence-maxspan",
                # Kibana bounds such a sequence only by the rule's look-back; `dac run` over a
                # day of telemetry has no look-back at all, so the two would disagree.
                "sequence has no maxspan: Kibana joins events anywhere in the rule's look-back "
                f"(from: {self.rule.data.get('from') or 'now-6m'}), an offline replay across the whole input",
                f"add 'with maxspan=...' after the join keys (at most {limit_text})",
            )
        elif seq.maxspan.millis > limit_ms:
            yield self.finding(
                seq.maxspan,
                "sequence-maxspan",
                f"maxspan={seq.maxspan.text} is longer than the allowed {limit_text}",
                f"use maxspan={limit_text} or less (validation.max_maxspan in dac.yaml)",
            )
        elif seq.maxspan.millis <= 0:
            yield self.finding(seq.maxspan, "sequence-maxspan", "maxspan must be positive")
        yield from self.sequence_keys(seq, set(policy.entity_keys))

    def sequence_keys(self, seq: ast.Sequence, entity: set[str]) -> Iterator[Finding]:
        steps = list(seq.steps)
        keys = [seq.keys_for(step) for step in steps]
        entity_text = ", ".join(sorted(entity))
        counts = {len(k) for k in keys}
        if len(counts) > 1:
            yield self.finding(
                seq,
                "sequence-key",
                "steps have different numbers of join keys; every step needs the same number",
                "give each step the same 'by' keys (sequence-level keys count for every step)",
            )
            return
        width = counts.pop() if counts else 0
        if width == 0:
            yield self.finding(
                seq,
                "sequence-key",
                "sequence is not joined on any key; unrelated events would match",
                f"join on an entity key: sequence by {sorted(entity)[0]} ...",
            )
            return
        # A key position joins on an entity when every step names an entity key there; one such
        # position ties the whole chain to one process lineage. Other keys (host.id, user.name)
        # may narrow it further.
        scores = [sum(1 for k in keys if k[i].name in entity) for i in range(width)]
        best = max(range(width), key=lambda i: scores[i])
        if scores[best] == len(steps):
            return
        if scores[best] == 0:
            names = sorted({f.name for k in keys for f in k})
            where: ast.Node = seq.by[0] if seq.by else keys[0][0]
            yield self.finding(
                where,
                "sequence-key",
                f"sequence is joined only on {', '.join(names)}, not on an entity key",
                f"join every step on one of: {entity_text} (other keys may be added beside it)",
            )
            return
        for step_keys in keys:
            key = step_keys[best]
            if key.name not in entity:
                yield self.finding(
                    key,
                    "sequence-key",
                    f"this step joins on '{key.name}' where the other steps join on an entity key",
                    f"use one of: {entity_text}",
                )

    # -- mapping coverage

    def mapping_coverage(self) -> Iterator[Finding]:
        if over_alerts(self.rule):
            return  # Kibana owns the alerts index mappings
        covered = self.ctx.covered_fields
        if covered is None:
            return
        reported: set[str] = set()
        for ref in self.refs:
            if ref.name in reported or ref.optional or self.registry.get(ref.name) is None:
                continue  # unknown fields are already reported as unknown-field
            if ref.name not in covered:
                reported.add(ref.name)
                yield self.finding(
                    ref,
                    "mapping-coverage",
                    f"'{ref.name}' is not mapped by the index templates in mappings/",
                    "regenerate mappings/ (dac mappings) or add the field to its template",
                )


def _wildcard_to_cidr(pattern: str) -> str:
    """``10.*`` → ``10.0.0.0/8``; other patterns are returned unchanged."""
    if "/" in pattern or "*" not in pattern:
        return pattern
    head = [p for p in pattern.split("*", 1)[0].split(".") if p]
    if not all(p.isdigit() for p in head) or len(head) > 3:
        return "10.0.0.0/8"
    return ".".join(head + ["0"] * (4 - len(head))) + f"/{8 * len(head)}"


def _incompatible(a: str, b: str) -> bool:
    return a != b and "other" not in (a, b)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_date(text: str) -> bool:
    if text.isdigit():
        return True
    try:
        datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return False
    return True


def _value_hint(value: str, options: tuple[str, ...]) -> str:
    low = value.lower()
    if low in options:
        return f"did you mean {low}?"
    synonym = _VALUE_SYNONYMS.get(low)
    if synonym in options:
        return f"did you mean {synonym}?"
    close = difflib.get_close_matches(low, options, n=2, cutoff=0.6)
    if close:
        return f"did you mean {' or '.join(close)}?"
    return f"allowed values: {', '.join(options)}"
