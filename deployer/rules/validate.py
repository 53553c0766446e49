"""Validate rule files: schema, EQL syntax, ECS fields and types, sequence policy, ATT&CK, fixtures.

``validate(paths, config)`` loads every file and reports every problem of every rule in one
run. Each check is a small function returning findings; a check never raises for bad content.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import ipaddress
import json
import multiprocessing
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer.config import Config
from deployer.ecs import registry as ecs_registry
from deployer.ecs.registry import FieldInfo, FieldRegistry
from deployer.eql import ast
from deployer.eql.errors import EqlError
from deployer.rules import attack, fastschema
from deployer.rules.findings import ERROR, WARNING, Finding, sort_key
from deployer.rules.kibana_fields import SERVER_FIELDS
from deployer.rules.loader import RuleFile, discover_rule_files, load_rule_file

if TYPE_CHECKING:
    import jsonschema

# schemas/rule.schema.json is the one source of truth; the package links to it so an installed
# (non-editable) build carries the same file.
SCHEMA_PATH = Path(__file__).with_name("rule.schema.json")

# Index patterns of Kibana's alerts indices: rules over other rules' alerts read these.
ALERTS_INDEX_PREFIXES = (".alerts-security.alerts-", ".internal.alerts-security.alerts-")

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


@dataclass
class _Context:
    config: Config
    registry: FieldRegistry
    repo_root: Path

    @cached_property
    def covered_fields(self) -> set[str] | None:
        """Fields mapped by the repo's mappings/ templates (None when there are none)."""
        return _load_covered_fields(self.repo_root)


def validate(
    paths: Iterable[str | Path],
    config: Config | None = None,
    registry: FieldRegistry | None = None,
    jobs: int = 1,
) -> list[Finding]:
    """Load and validate every rule file under ``paths``; returns findings sorted by position.

    ``jobs`` > 1 checks files in that many forked worker processes (POSIX only; serial
    otherwise). Raises FileNotFoundError for a path that does not exist and
    ExtraFieldsError when the configured extra-fields file is malformed (both are environment
    errors, not findings).
    """
    config = config or Config()
    if registry is None:
        registry = ecs_registry.load(config.validation.extra_fields)
    files = discover_rule_files(paths)
    ctx = _Context(config, registry, config.root)
    workers = _worker_count(len(files), jobs)
    if workers > 1:
        results = _validate_parallel(files, ctx, workers)
    else:
        results = [_validate_files(files, ctx)]
    findings: list[Finding] = []
    idents: list[_Ident] = []
    for chunk_findings, chunk_idents in results:
        findings.extend(chunk_findings)
        idents.extend(chunk_idents)
    findings.extend(_duplicates(idents))
    return sorted(findings, key=sort_key)


@dataclass(frozen=True, slots=True)
class _Ident:
    """What the cross-file duplicate check needs from a rule (small, so workers can return it)."""

    path: str
    rule_id: str | None
    rule_id_line: int
    name: str | None
    name_line: int


def _ident(rule: RuleFile) -> _Ident:
    return _Ident(
        str(rule.path), rule.rule_id, rule.position(("rule_id",))[0], rule.name, rule.position(("name",))[0]
    )


def _validate_files(files: list[Path], ctx: _Context) -> tuple[list[Finding], list[_Ident]]:
    # One file at a time: each rule is dropped once checked, so memory stays flat and the
    # garbage collector never rescans thousands of live rules.
    findings: list[Finding] = []
    idents: list[_Ident] = []
    for path in files:
        rule, problems = load_rule_file(path)
        findings.extend(problems)
        if rule is not None:
            findings.extend(validate_rule(rule, ctx))
            idents.append(_ident(rule))
    return findings, idents


_WORKER_CONTEXT: _Context | None = None


def _worker_count(files: int, jobs: int) -> int:
    if jobs <= 1 or files < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if threading.active_count() > 1:
        return 1  # forking a threaded process can deadlock; stay serial
    return min(jobs, files)


def _validate_in_worker(files: list[Path]) -> tuple[list[Finding], list[_Ident]]:
    assert _WORKER_CONTEXT is not None
    return _validate_files(files, _WORKER_CONTEXT)


def _validate_parallel(
    files: list[Path], ctx: _Context, workers: int
) -> list[tuple[list[Finding], list[_Ident]]]:
    global _WORKER_CONTEXT
    # Build everything shared before forking so workers inherit it instead of rebuilding it:
    # the EQL grammar, the schema validator and the mapped-field set.
    _parse("any where true")
    _validator()
    _ = ctx.covered_fields
    _WORKER_CONTEXT = ctx
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return pool.map(_validate_in_worker, [files[i::workers] for i in range(workers)])
    finally:
        _WORKER_CONTEXT = None


def validate_rule(rule: RuleFile, ctx: _Context) -> list[Finding]:
    """Every finding for one loaded rule."""
    out: list[Finding] = []
    checks: list[Callable[[RuleFile, _Context], Iterable[Finding]]] = [
        check_schema,
        check_index,
        check_query,
        check_field_settings,
        check_attack,
        check_fixtures,
    ]
    for check in checks:
        try:
            out.extend(check(rule, ctx))
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others' findings
            out.append(
                _f(
                    rule,
                    (1, 1),
                    "internal-error",
                    f"{check.__name__} failed: {exc!r}",
                    "please report this with the rule file",
                )
            )
    return out


def _f(
    rule: RuleFile,
    pos: tuple[int, int],
    code: str,
    message: str,
    hint: str | None = None,
    severity: str = ERROR,
) -> Finding:
    return Finding(str(rule.path), pos[0], pos[1], rule.rule_id, code, severity, message, hint)


# ---------------------------------------------------------------- schema


@lru_cache(maxsize=1)
def rule_schema() -> dict[str, Any]:
    """The rule file JSON Schema (schemas/rule.schema.json)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _inlined_schema() -> dict[str, Any]:
    # Local "$ref"s are inlined (the schema has no recursion): resolving them through the
    # referencing registry on every rule is a large share of jsonschema's time.
    schema = rule_schema()
    return _inline_refs(schema, schema.get("$defs", {}))


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    # Imported here: jsonschema only runs for a rule the fast check rejects, and importing it
    # is a noticeable share of a clean run.
    import jsonschema

    return jsonschema.Draft202012Validator(_inlined_schema())


@lru_cache(maxsize=1)
def _fast_check() -> Callable[[Any], bool] | None:
    try:
        return fastschema.compile_schema(_inlined_schema())
    except fastschema.UnsupportedSchema:
        return None  # a keyword the fast check lacks: always use jsonschema


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref[len("#/$defs/") :]], defs)
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def _where(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "top level"


# YAML value types as messages name them; bool comes before int, its base class.
_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "list"),
    (dict, "mapping"),
)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return next((name for kind, name in _TYPE_NAMES if isinstance(value, kind)), type(value).__name__)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_PATTERN_HINTS = {
    "rule_id": "lowercase letters, digits, '-', '_' and '.', e.g. a UUID",
    "interval": "a number and a unit, e.g. 5m",
    "from": "Kibana date math, e.g. now-6m",
    "to": "Kibana date math, e.g. now",
    "implements": "AN1314, DET0294, T1204.002 or TA0002",
    "depends_on": "a rule_id: lowercase letters, digits, '-', '_' and '.'",
}


# Messages for the size and uniqueness keywords; ``{}`` is the schema's limit.
_LIMIT_MESSAGES = {
    "minItems": "must have at least {} item(s)",
    "maxItems": "must have at most {} item(s)",
    "minLength": "must not be empty",
    "maxLength": "longer than {} characters",
    "uniqueItems": "has duplicate items",
}


def check_schema(rule: RuleFile, ctx: _Context) -> Iterator[Finding]:
    """One finding per JSON Schema error, at the offending key's line."""
    fast = _fast_check()
    if fast is not None and fast(rule.data):
        return  # valid: jsonschema would only confirm it, at many times the cost
    seen: set[tuple[Any, ...]] = set()
    for error in _validator().iter_errors(rule.data):
        path = tuple(error.absolute_path)
        code = "schema"
        if path[:1] == ("index",) or (
            error.validator == "required" and "'index'" in error.message and not path
        ):
            continue  # check_index reports index problems with their own code
        if (
            path[:1] == ("threat",) or path[:2] == ("metadata", "implements")
        ) and error.validator == "pattern":
            code = "attack-id"
        where = _where(path)
        value = error.instance
        hint: str | None = None
        pos = rule.position(path)
        if error.validator == "additionalProperties":
            allowed = set(error.schema.get("properties", {}))
            for key in sorted(k for k in value if k not in allowed):
                key_hint = _unknown_key_hint(key, allowed, path)
                marker = (*path, key, "additionalProperties")
                if marker not in seen:
                    seen.add(marker)
                    yield _f(
                        rule,
                        rule.position((*path, key)),
                        code,
                        f"{where + '.' if path else ''}{key}: unknown key",
                        key_hint,
                    )
            continue
        if error.validator == "required":
            match = re.match(r"^'(.+)' is a required property", error.message)
            name = match.group(1) if match else str(error.validator_value)
            message = f"{where}: missing required key '{name}'"
            hint = (
                "every rule needs rule_id, name, description, type, language, query, index, severity, "
                "risk_score and metadata"
                if not path
                else None
            )
        elif error.validator == "type":
            expected = error.validator_value
            expected = " or ".join(expected) if isinstance(expected, list) else expected
            expected = {"object": "mapping", "array": "list"}.get(expected, expected)
            message = f"{where}: expected {expected}, got {_type_name(value)} {_short(value)}"
            if isinstance(value, str) and expected == "integer" and value.strip().isdigit():
                hint = f"remove the quotes: {value.strip()}"
            elif expected == "list" and isinstance(value, str):
                hint = f"write a list: [{value}]"
            elif expected == "string" and value is not None and not isinstance(value, (dict, list)):
                hint = f"quote the value: '{value}'"
        elif error.validator == "enum":
            options = [str(o) for o in error.validator_value]
            message = f"{where}: {_short(value)} is not one of {', '.join(options)}"
            close = difflib.get_close_matches(str(value).lower(), options, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]}?" if close else None
        elif error.validator == "const":
            message = f"{where}: must be {error.validator_value!r}, got {_short(value)}"
        elif error.validator == "pattern":
            message = f"{where}: {_short(value)} is not in the expected format"
            top = (
                path[-2]
                if path and isinstance(path[-1], int) and len(path) > 1
                else (path[-1] if path else "")
            )
            hint = _PATTERN_HINTS.get(str(top))
            if code == "attack-id":
                hint = (
                    "ATT&CK IDs look like TA0002 (tactic), T1204 (technique), T1204.002 (sub-technique)"
                    if path[:1] == ("threat",)
                    else _PATTERN_HINTS["implements"]
                )
        elif error.validator in ("minimum", "maximum"):
            bound = "at least" if error.validator == "minimum" else "at most"
            message = f"{where}: must be {bound} {error.validator_value}, got {_short(value)}"
        elif error.validator in _LIMIT_MESSAGES:
            message = f"{where}: {_LIMIT_MESSAGES[error.validator].format(error.validator_value)}"
        elif error.validator == "not" and path[:2] == ("metadata", "tests"):
            message = f"{where}: 'sequences' only applies to expect: match"
            pos = rule.position((*path, "sequences"))
        else:
            message = f"{where}: {_short(error.message, 200)}"
        marker = (*path, error.validator, message)
        if marker in seen:
            continue
        seen.add(marker)
        yield _f(rule, pos, code, message, hint)


def _unknown_key_hint(key: str, allowed: set[str], path: tuple[Any, ...]) -> str:
    if not path and key in SERVER_FIELDS:
        return f"'{key}' is managed by Kibana; remove it from the rule file"
    if not path and key in rule_schema()["$defs"]["metadata"]["properties"]:
        return f"'{key}' belongs under metadata:"
    close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return "allowed keys are listed in schemas/rule.schema.json and docs/rules.md"


# ---------------------------------------------------------------- index


def check_index(rule: RuleFile, ctx: _Context) -> Iterator[Finding]:
    """``index`` is a non-empty list of non-empty index patterns."""
    if "index" not in rule.data:
        yield _f(
            rule,
            rule.position(()),
            "index",
            "missing required key 'index'",
            "list the index patterns the rule searches, e.g. [logs-endpoint.events.*]",
        )
        return
    index = rule.data["index"]
    pos = rule.position(("index",))
    if not isinstance(index, list):
        yield _f(
            rule,
            pos,
            "index",
            f"index: expected a list of index patterns, got {_type_name(index)}",
            f"write a list: [{index}]" if isinstance(index, str) else None,
        )
        return
    if not index:
        yield _f(
            rule,
            pos,
            "index",
            "index: is empty; the rule would search nothing",
            "list the index patterns the rule searches, e.g. [logs-endpoint.events.*]",
        )
        return
    seen: set[str] = set()
    for i, pattern in enumerate(index):
        ipos = rule.value_position(("index", i))
        if not isinstance(pattern, str) or not pattern.strip():
            yield _f(
                rule, ipos, "index", f"index[{i}]: expected a non-empty index pattern, got {_short(pattern)}"
            )
        elif pattern != pattern.strip() or " " in pattern or "," in pattern:
            yield _f(
                rule,
                ipos,
                "index",
                f"index[{i}]: {pattern!r} contains spaces or commas",
                "one pattern per list item, without spaces",
            )
        elif pattern in seen:
            yield _f(rule, ipos, "index", f"index[{i}]: {pattern!r} is listed twice")
        else:
            seen.add(pattern)


def _over_alerts(rule: RuleFile) -> bool:
    index = rule.data.get("index")
    return (
        isinstance(index, list)
        and bool(index)
        and all(isinstance(p, str) and p.startswith(ALERTS_INDEX_PREFIXES) for p in index)
    )


# ---------------------------------------------------------------- EQL


def _parse(query: str) -> ast.Query:
    from deployer.eql import parser  # imported here: the grammar is only built when a query is checked

    return parser.parse(query)


def check_query(rule: RuleFile, ctx: _Context) -> Iterator[Finding]:
    """EQL syntax, fields, types, allowed values, sequence policy and mapping coverage."""
    query = rule.data.get("query")
    if not isinstance(query, str) or not query.strip():
        return  # the schema check reports a missing or non-string query
    try:
        tree = _parse(query)
    except EqlError as exc:
        code = "eql-syntax" if type(exc).__name__ == "EqlSyntaxError" else "eql-unsupported"
        pos = rule.query_position(exc.line or 1, exc.column or 1)
        yield _f(rule, pos, code, f"query: {exc.message}", exc.hint)
        return
    checker = _QueryChecker(rule, ctx, tree)
    yield from checker.run()


class _QueryChecker:
    """Checks over a parsed query; positions are mapped from the query text into the file."""

    def __init__(self, rule: RuleFile, ctx: _Context, tree: ast.Query) -> None:
        self.rule = rule
        self.ctx = ctx
        self.tree = tree
        self.registry = ctx.registry
        self.category_override = rule.data.get("event_category_override")

    def at(self, node: ast.Node) -> tuple[int, int]:
        return self.rule.query_position(node.line, node.column)

    def finding(
        self, node: ast.Node, code: str, message: str, hint: str | None = None, severity: str = ERROR
    ) -> Finding:
        return _f(self.rule, self.at(node), code, message, hint, severity)

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
                hint = _unknown_field_hint(self.registry, ref.name)
                severity = WARNING if ref.optional else ERROR
                message = (
                    f"unknown field '{ref.name}': not in ECS {self.registry.ecs_version} or the extra fields"
                )
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
                    f"'{name}' is {_a(ftype)} field; compared with the string {json.dumps(value)}",
                    f"compare with a number: {name} == {suggestion}",
                )
            elif isinstance(lit, ast.BooleanLiteral):
                yield self.finding(
                    lit, "field-type", f"'{name}' is {_a(ftype)} field; compared with a boolean"
                )
        elif kind == "string":
            if isinstance(lit, (ast.NumberLiteral, ast.BooleanLiteral)):
                yield self.finding(
                    lit,
                    "field-type",
                    f"'{name}' is {_a(ftype)} field; compared with {_type_name(value)} {value!r}",
                    f'quote the value: {name} == "{str(value).lower() if isinstance(value, bool) else value}"',
                )
            elif isinstance(lit, ast.StringLiteral) and equality and info.allowed_values:
                yield from self.allowed(lit, name, info, value, case_sensitive)
        elif kind == "boolean":
            if not isinstance(lit, ast.BooleanLiteral):
                yield self.finding(
                    lit,
                    "field-type",
                    f"'{name}' is a boolean field; compared with {_short(value)}",
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
                    f"'{name}' is an ip field; compared with {_type_name(value)}",
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
                f"'{node.op}' matches strings, but '{name}' is {_a(info.type)} field",
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
                f"{node.name}() works on strings, but '{name}' is {_a(info.type)} field",
                "cidrMatch() for IP ranges" if info.kind == "ip" else None,
            )
        elif node.name == "cidrMatch" and info.kind not in ("ip", "string", "other"):
            yield self.finding(
                node, "field-type", f"cidrMatch() needs an ip field, but '{name}' is {_a(info.type)} field"
            )
        elif node.name in _NUMERIC_FUNCTIONS:
            for arg in node.args:
                arg_info = self.info(arg)
                if arg_info is not None and arg_info.kind != "number" and isinstance(arg, ast.Field):
                    yield self.finding(
                        arg,
                        "field-type",
                        f"{node.name}() needs numbers, but '{arg.name}' is {_a(arg_info.type)} field",
                    )

    def arithmetic(self, node: ast.Arithmetic) -> Iterator[Finding]:
        for side in (node.left, node.right):
            info = self.info(side)
            if info is not None and isinstance(side, ast.Field) and info.kind != "number":
                yield self.finding(
                    side,
                    "field-type",
                    f"arithmetic needs numbers, but '{side.name}' is {_a(info.type)} field",
                )

    # -- sequences

    def sequence(self, seq: ast.Sequence) -> Iterator[Finding]:
        policy = self.ctx.config.validation
        limit_ms, limit_text = policy.max_maxspan_ms, policy.max_maxspan_text
        if seq.maxspan is None:
            yield self.finding(
                seq,
                "sequence-maxspan",
                "sequence has no maxspan; it would join events hours apart",
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
        if _over_alerts(self.rule):
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


def _load_covered_fields(repo_root: Path) -> set[str] | None:
    """Fields covered by mappings/ templates, or None when there are no templates to check."""
    mappings_dir = repo_root / "mappings"
    if not mappings_dir.is_dir() or not any(mappings_dir.rglob("*.json")):
        return None
    # Resolved at call time, so a replacement deployer.mappings module (as in tests) is used.
    return importlib.import_module("deployer.mappings").covered_fields(repo_root)


def _unknown_field_hint(registry: FieldRegistry, name: str) -> str:
    suggestions = registry.suggest(name)
    if suggestions:
        return f"did you mean {' or '.join(suggestions)}?"
    return "use an ECS field, or declare it in the extra fields file (extra_fields.yaml)"


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


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


# ---------------------------------------------------------------- other field settings


_FIELD_SETTINGS: tuple[tuple[str, ...], ...] = (
    ("timestamp_override",),
    ("timestamp_field",),
    ("tiebreaker_field",),
    ("event_category_override",),
    ("rule_name_override",),
)


def check_field_settings(rule: RuleFile, ctx: _Context) -> Iterator[Finding]:
    """Field names outside the query (required_fields, investigation_fields, overrides, ...) exist."""
    refs: list[tuple[tuple[Any, ...], Any]] = []
    for path in _FIELD_SETTINGS:
        refs.append((path, rule.data.get(path[0])))
    required = rule.data.get("required_fields")
    if isinstance(required, list):
        for i, item in enumerate(required):
            if isinstance(item, dict):
                refs.append((("required_fields", i, "name"), item.get("name")))
    inv = rule.data.get("investigation_fields")
    if isinstance(inv, dict) and isinstance(inv.get("field_names"), list):
        refs.extend((("investigation_fields", "field_names", i), n) for i, n in enumerate(inv["field_names"]))
    sup = rule.data.get("alert_suppression")
    if isinstance(sup, dict) and isinstance(sup.get("group_by"), list):
        refs.extend((("alert_suppression", "group_by", i), n) for i, n in enumerate(sup["group_by"]))
    for key in ("severity_mapping", "risk_score_mapping"):
        items = rule.data.get(key)
        if isinstance(items, list):
            refs.extend(
                ((key, i, "field"), it.get("field")) for i, it in enumerate(items) if isinstance(it, dict)
            )
    for path, name in refs:
        if not isinstance(name, str) or not name:
            continue
        info = ctx.registry.get(name)
        if info is None:
            yield _f(
                rule,
                rule.value_position(path),
                "unknown-field",
                f"{_where(path)}: unknown field '{name}'",
                _unknown_field_hint(ctx.registry, name),
            )
            continue
        if path[0] == "required_fields":
            declared = rule.data["required_fields"][path[1]].get("type")
            if isinstance(declared, str) and declared != info.type:
                yield _f(
                    rule,
                    rule.value_position((*path[:2], "type")),
                    "field-type",
                    f"required_fields[{path[1]}]: '{name}' is {info.type}, not {declared}",
                    f"type: {info.type}",
                    WARNING,
                )
        if path[0] in ("timestamp_override", "timestamp_field") and info.kind != "date":
            yield _f(
                rule,
                rule.value_position(path),
                "field-type",
                f"{path[0]}: '{name}' is {_a(info.type)} field, not a date",
            )


# ---------------------------------------------------------------- ATT&CK


def check_attack(rule: RuleFile, ctx: _Context) -> Iterator[Finding]:
    """ATT&CK mapping: tactic names, technique ↔ tactic, sub-technique ↔ technique, implements."""
    threat = rule.data.get("threat")
    mapped: set[str] = set()
    if isinstance(threat, list):
        for i, entry in enumerate(threat):
            if isinstance(entry, dict):
                yield from _check_threat_entry(rule, i, entry, mapped)
    implements = rule.metadata.get("implements")
    if isinstance(implements, list):
        for i, item in enumerate(implements):
            if not isinstance(item, str):
                continue
            pos = rule.value_position(("metadata", "implements", i))
            if re.fullmatch(r"TA\d{4}", item) and item not in attack.TACTICS:
                yield _f(
                    rule, pos, "attack-id", f"metadata.implements: {item} is not an ATT&CK Enterprise tactic"
                )
            elif re.fullmatch(r"T\d{4}(\.\d{3})?", item) and isinstance(threat, list) and item not in mapped:
                yield _f(
                    rule,
                    pos,
                    "attack-id",
                    f"metadata.implements names {item}, but threat does not map it",
                    "add it to threat so analysts see the mapping in Kibana",
                    WARNING,
                )


def _check_threat_entry(rule: RuleFile, i: int, entry: dict[str, Any], mapped: set[str]) -> Iterator[Finding]:
    tactic = entry.get("tactic")
    tactic_id = tactic.get("id") if isinstance(tactic, dict) else None
    if isinstance(tactic_id, str) and attack.ATTACK_ID.match(tactic_id):
        base = ("threat", i, "tactic")
        if tactic_id not in attack.TACTICS:
            yield _f(
                rule,
                rule.value_position((*base, "id")),
                "attack-id",
                f"threat[{i}].tactic.id: {tactic_id} is not an ATT&CK Enterprise tactic",
            )
            tactic_id = None
        else:
            mapped.add(tactic_id)
            expected = attack.TACTICS[tactic_id]
            if (
                isinstance(tactic, dict)
                and isinstance(tactic.get("name"), str)
                and tactic["name"] != expected
            ):
                yield _f(
                    rule,
                    rule.value_position((*base, "name")),
                    "attack-id",
                    f"threat[{i}].tactic: {tactic_id} is '{expected}', not '{tactic['name']}'",
                    f"name: {expected}",
                )
            yield from _check_reference(rule, (*base, "reference"), tactic, tactic_id)
    else:
        tactic_id = None
    techniques = entry.get("technique")
    if not isinstance(techniques, list):
        return
    for j, tech in enumerate(techniques):
        if not isinstance(tech, dict) or not isinstance(tech.get("id"), str):
            continue
        base = ("threat", i, "technique", j)
        tid = tech["id"]
        mapped.add(tid)
        yield from _check_technique(rule, base, tech, tid, tactic_id)
        subs = tech.get("subtechnique")
        if not isinstance(subs, list):
            continue
        for k, sub in enumerate(subs):
            if not isinstance(sub, dict) or not isinstance(sub.get("id"), str):
                continue
            sbase = (*base, "subtechnique", k)
            sid = sub["id"]
            mapped.add(sid)
            if re.fullmatch(r"T\d{4}\.\d{3}", sid) and not sid.startswith(tid + "."):
                yield _f(
                    rule,
                    rule.value_position((*sbase, "id")),
                    "attack-id",
                    f"{_where(sbase)}.id: {sid} is not a sub-technique of {tid}",
                    f"move it under technique {sid.split('.')[0]}",
                )
                continue
            yield from _check_technique(rule, sbase, sub, sid, tactic_id)


def _check_technique(
    rule: RuleFile, base: tuple[Any, ...], tech: dict[str, Any], tid: str, tactic_id: str | None
) -> Iterator[Finding]:
    if not attack.ATTACK_ID.match(tid):
        return  # malformed IDs are reported by the schema check
    known = attack.TECHNIQUES.get(tid)
    if known is None:
        yield _f(
            rule,
            rule.value_position((*base, "id")),
            "attack-id",
            f"{_where(base)}.id: {tid} is not in the project's ATT&CK table, so its tactic is not verified",
            "add it with its tactic(s) to deployer/rules/attack.py",
            WARNING,
        )
        return
    name, tactics = known
    if tactic_id is not None and tactic_id not in tactics:
        names = ", ".join(f"{t} {attack.TACTICS[t]}" for t in tactics)
        yield _f(
            rule,
            rule.value_position((*base, "id")),
            "attack-id",
            f"{_where(base)}.id: {tid} ({name}) belongs to {names}, not {tactic_id} {attack.TACTICS[tactic_id]}",
            f"put it in a threat entry whose tactic is {tactics[0]}",
        )
    if isinstance(tech.get("name"), str) and tech["name"] != name:
        yield _f(
            rule,
            rule.value_position((*base, "name")),
            "attack-id",
            f"{_where(base)}: {tid} is '{name}', not '{tech['name']}'",
            f"name: {name}",
            WARNING,
        )
    yield from _check_reference(rule, (*base, "reference"), tech, tid)


def _check_reference(rule: RuleFile, path: tuple[Any, ...], obj: Any, attack_id: str) -> Iterator[Finding]:
    ref = obj.get("reference") if isinstance(obj, dict) else None
    if not isinstance(ref, str):
        return
    expected = (
        attack.tactic_reference(attack_id)
        if attack_id.startswith("TA")
        else attack.technique_reference(attack_id)
    )
    if ref.rstrip("/") != expected.rstrip("/"):
        yield _f(
            rule,
            rule.value_position(path),
            "attack-id",
            f"{_where(path)}: {ref} does not point at {attack_id}",
            f"reference: {expected}",
            WARNING,
        )


# ---------------------------------------------------------------- fixtures


def check_fixtures(rule: RuleFile, ctx: _Context) -> Iterator[Finding]:
    """Fixture tests exist, and non-exempt rules have a positive and a negative test."""
    meta = rule.metadata
    tests = meta.get("tests")
    maturity = meta.get("maturity")
    exempt = maturity in ctx.config.validation.fixture_exempt_maturities
    if tests is not None and not isinstance(tests, list):
        return  # reported by the schema check
    tests = tests or []
    expects: set[str] = set()
    names: set[str] = set()
    for i, test in enumerate(tests):
        if not isinstance(test, dict):
            continue
        base = ("metadata", "tests", i)
        if isinstance(test.get("expect"), str):
            expects.add(test["expect"])
        name = test.get("name")
        if isinstance(name, str):
            if name in names:
                yield _f(
                    rule,
                    rule.value_position((*base, "name")),
                    "fixture",
                    f"metadata.tests[{i}]: test name '{name}' is used twice",
                    "give each test its own name",
                    WARNING,
                )
            names.add(name)
        events = test.get("events")
        if not isinstance(events, str) or not events:
            continue
        pos = rule.value_position((*base, "events"))
        if Path(events).is_absolute():
            yield _f(
                rule,
                pos,
                "fixture",
                f"metadata.tests[{i}].events: '{events}' is an absolute path",
                "write it relative to the rule file, e.g. fixtures/<name>.ndjson",
            )
            continue
        target = rule.path.parent / events
        if not target.is_file():
            yield _f(
                rule,
                pos,
                "fixture",
                f"metadata.tests[{i}].events: fixture file '{events}' not found",
                f"the path is relative to the rule file ({rule.path.parent / events})",
            )
    if exempt or "maturity" not in meta or not expects <= {"match", "no_match"}:
        return  # an invalid expect value is already a schema finding; counting would only echo it
    missing = [e for e in ("match", "no_match") if e not in expects]
    if missing:
        where = ("metadata", "tests") if "tests" in meta else ("metadata",)
        what = " and ".join(f"expect: {m}" for m in missing)
        yield _f(
            rule,
            rule.position(where),
            "fixture",
            f"{maturity} rule needs at least one test with {what}",
            f"add fixture tests under metadata.tests, or set maturity to one of "
            f"{', '.join(ctx.config.validation.fixture_exempt_maturities) or '(none exempt)'}",
        )


# ---------------------------------------------------------------- across files


def _duplicates(idents: list[_Ident]) -> list[Finding]:
    """rule_id and name are unique across files; each file in a clash is told about the others."""
    out: list[Finding] = []
    for label, hint in (
        ("rule_id", "rule_id must be unique: generate a new UUID for the copy"),
        ("name", "give each rule a distinct name so analysts can tell alerts apart"),
    ):
        line = f"{label}_line"  # _Ident holds each value's line beside it
        groups: dict[str, list[_Ident]] = {}
        for ident in idents:
            value = getattr(ident, label)
            if value:
                # Names clash regardless of case and surrounding spaces; rule_ids exactly.
                groups.setdefault(value if label == "rule_id" else value.strip().lower(), []).append(ident)
        for group in groups.values():
            if len(group) < 2:
                continue
            for ident in group:
                others = ", ".join(
                    f"{o.path}:{getattr(o, line)}"
                    for o in sorted(group, key=lambda g: g.path)
                    if o is not ident
                )
                out.append(
                    Finding(
                        ident.path,
                        getattr(ident, line),
                        1,
                        ident.rule_id,
                        "duplicate",
                        ERROR,
                        f"{label} {getattr(ident, label)!r} is also used by {others}",
                        hint,
                    )
                )
    return out
