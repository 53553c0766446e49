"""``dac validate`` for exception lists: their files, their entries against the field registry, and
the rules' references to them.

Registered once in ``deployer.rules.validate.validate``: ``validate_exceptions`` runs after the
per-rule checks, over the same rule files, and reports findings with file:line:col.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deployer.ecs.registry import FieldInfo, FieldRegistry
from deployer.exceptions.filter import parse_time
from deployer.exceptions.loader import catalogue_for, discover_exception_files
from deployer.exceptions.model import (
    MAX_LIST_ITEMS,
    MAX_VALUE_LIST_VALUES,
    PROCESSABLE_VALUE_LIST_TYPES,
    Catalogue,
    ExceptionList,
    ValueList,
    iter_entries,
    rule_references,
)
from deployer.exceptions.schema import check_schema
from deployer.rules.findings import ERROR, WARNING, Finding
from deployer.rules.loader import RuleFile, load_rule_file

# Field types a `wildcard` query runs on (keyword family, text family, wildcard).
WILDCARD_TYPES = frozenset({"keyword", "constant_keyword", "wildcard", "text", "match_only_text"})
_NUMBER_TYPES = frozenset(
    {"long", "integer", "short", "byte", "unsigned_long", "double", "float", "half_float", "scaled_float"}
)
_VALUE_LIST_FIELD_TYPES = {"keyword": None, "ip": {"ip"}, "ip_range": {"ip"}}


def validate_exceptions(
    rule_paths: Iterable[Path],
    paths: Iterable[str | Path],
    registry: FieldRegistry,
    default_dir: Path,
    now: datetime | None = None,
    registry_for: Callable[[RuleFile], FieldRegistry] | None = None,
) -> list[Finding]:
    """Every finding about the exception lists under ``paths`` and the rules' references to them.

    A list's fields are looked up the way its rules' query fields are: ``registry_for(rule)`` (ECS,
    extra fields and the field packs of the rule's index patterns) for every rule that references
    it; a field any of them knows is known. A list no rule references uses ``registry``.
    """
    now = now or datetime.now(UTC)
    refs = list(_references(rule_paths))
    by_list: dict[str, list[FieldRegistry]] = {}
    for rule, _, ref in refs:
        if registry_for is not None and isinstance(ref.get("list_id"), str):
            try:
                found = registry_for(rule)
            except Exception:  # noqa: BLE001 - a broken field pack is reported by the rule checks
                found = registry
            if all(found is not r for r in by_list.setdefault(ref["list_id"], [])):
                by_list[ref["list_id"]].append(found)
    catalogue, findings = catalogue_for(
        paths, {r[2].get("list_id") for r in refs if isinstance(r[2].get("list_id"), str)}, default_dir
    )
    own = {p.resolve() for p in discover_exception_files(paths)}
    item_ids: dict[str, tuple[str, int]] = {}
    for doc in catalogue.files:
        if doc.file.path.resolve() not in own:
            continue  # loaded only to resolve a reference; its own run reports on it
        if isinstance(doc, ValueList):
            findings.extend(check_schema(doc.file, "value_list"))
            findings.extend(_check_values(doc))
        else:
            findings.extend(check_schema(doc.file, "list"))
            fields = _Fields(by_list.get(str(doc.list_id)) or [registry])
            findings.extend(_check_list(doc, catalogue, fields, now, item_ids))
    findings.extend(_check_references(refs, catalogue))
    return findings


class _Fields:
    """Field lookup over the registries of the rules that use a list (known to any is known)."""

    def __init__(self, registries: list[FieldRegistry]) -> None:
        self.registries = registries

    def get(self, name: str) -> FieldInfo | None:
        """The field's info from the first registry that knows it."""
        return next((info for r in self.registries if (info := r.get(name)) is not None), None)

    def suggest(self, name: str) -> list[str]:
        """Close known names, for hints."""
        return self.registries[0].suggest(name)


def _references(rule_paths: Iterable[Path]) -> Iterator[tuple[RuleFile, int, dict[str, Any]]]:
    """(rule, index, entry) for each ``exceptions_list`` entry; files are parsed only when they mention it."""
    for path in rule_paths:
        try:
            if b"exceptions_list" not in path.read_bytes():
                continue
        except OSError:
            continue  # the rule loader reports unreadable files
        rule, _ = load_rule_file(path)
        if rule is None:
            continue
        for index, ref in rule_references(rule.data):
            yield rule, index, ref


def _f(
    file: RuleFile,
    path: tuple[Any, ...],
    code: str,
    message: str,
    hint: str | None = None,
    severity: str = ERROR,
    rule_id: str | None = None,
) -> Finding:
    line, col = file.position(path)
    return Finding(str(file.path), line, col, rule_id, code, severity, message, hint)


def _check_list(
    lst: ExceptionList,
    catalogue: Catalogue,
    registry: _Fields,
    now: datetime,
    item_ids: dict[str, tuple[str, int]],
) -> Iterator[Finding]:
    file = lst.file
    items = file.data.get("items")
    if isinstance(items, list) and len(items) > MAX_LIST_ITEMS:
        yield _f(
            file,
            ("items",),
            "exceptions-limit",
            f"list {lst.list_id!r} has {len(items):,} items; Kibana refuses more than {MAX_LIST_ITEMS:,} per list",
            "split the items across several lists and reference each from the rules",
        )
    for i, item in enumerate(items if isinstance(items, list) else []):
        if not isinstance(item, dict):
            continue
        base = ("items", i)
        item_id = item.get("item_id")
        if isinstance(item_id, str):
            line = file.position((*base, "item_id"))[0]
            if item_id in item_ids:
                first_path, first_line = item_ids[item_id]
                yield _f(
                    file,
                    (*base, "item_id"),
                    "exceptions-duplicate-item",
                    f"item_id {item_id!r} is already used at {first_path}:{first_line}",
                    "item_ids are unique in a Kibana space, across all lists: rename one",
                )
            else:
                item_ids[item_id] = (str(file.path), line)
        expires = parse_time(item.get("expire_time"))
        if expires is not None and expires < now:
            yield _f(
                file,
                (*base, "expire_time"),
                "exceptions-expired",
                f"item {item_id!r} expired at {item.get('expire_time')}; rules ignore it (Kibana keeps it stored)",
                "remove the item, or move expire_time forward if it is still needed",
                WARNING,
            )
        for index_path, entry in iter_entries(item.get("entries")):
            where = (*base, "entries", index_path[0]) + (
                (("entries", index_path[1])) if len(index_path) > 1 else ()
            )
            parent = item["entries"][index_path[0]]
            prefix = f"{parent.get('field')}." if len(index_path) > 1 else ""
            parent_info = registry.get(str(parent.get("field"))) if prefix else None
            if prefix and (parent_info is None or parent_info.type != "nested"):
                continue  # the nested entry itself is reported; its inner fields would only echo it
            yield from _check_entry(file, where, entry, prefix, registry, catalogue)


def _check_entry(
    file: RuleFile,
    where: tuple[Any, ...],
    entry: dict[str, Any],
    prefix: str,
    registry: _Fields,
    catalogue: Catalogue,
) -> Iterator[Finding]:
    name = entry.get("field")
    kind = entry.get("type")
    if not isinstance(name, str) or not name:
        return  # the schema check reports it
    full = prefix + name
    info = registry.get(full)
    at = (*where, "field")
    if info is None:
        close = registry.suggest(full)
        yield _f(
            file,
            at,
            "exceptions-field",
            f"field {full!r} is not in ECS or the declared extra fields",
            f"did you mean {close[0]}?" if close else "declare it in extra_fields.yaml if your data has it",
        )
        return
    if kind == "nested":
        if info.type != "nested":
            yield _f(
                file,
                at,
                "exceptions-operator",
                f"a nested entry needs a nested field; {full!r} is {info.type}",
                "use plain entries for object and scalar fields (match, exists, ...)",
            )
        return
    if kind == "wildcard" and info.type not in WILDCARD_TYPES:
        yield _f(
            file,
            at,
            "exceptions-operator",
            f"wildcard needs a keyword, text or wildcard field; {full!r} is {info.type}",
            "use match or match_any for exact values",
        )
        return
    if kind in ("match", "match_any"):
        values = entry.get("value")
        for j, value in enumerate(values if isinstance(values, list) else [values]):
            if not isinstance(value, str):
                continue
            problem = _value_problem(info.type, value)
            if problem:
                path = (*where, "value", j) if isinstance(values, list) else (*where, "value")
                yield _f(file, path, "exceptions-value", f"{full} is {info.type}: {value!r} {problem}")
    if kind == "list":
        ref = entry.get("list") if isinstance(entry.get("list"), dict) else {}
        list_id = ref.get("id")
        value_list = catalogue.value_lists.get(list_id) if isinstance(list_id, str) else None
        if value_list is None:
            yield _f(
                file,
                (*where, "list", "id"),
                "exceptions-reference",
                f"value list {list_id!r} is not declared in the repository",
                "add a value list file (id, type, name, values) in an exceptions/ directory",
            )
            return
        if ref.get("type") != value_list.type:
            yield _f(
                file,
                (*where, "list", "type"),
                "exceptions-reference",
                f"value list {list_id!r} is {value_list.type}, not {ref.get('type')!r}",
            )
        if (
            value_list.type not in PROCESSABLE_VALUE_LIST_TYPES
            or len(value_list.values) > MAX_VALUE_LIST_VALUES
        ):
            yield _f(
                file,
                (*where, "list"),
                "exceptions-unprocessed",
                f"value list {list_id!r} ({value_list.type}, {len(value_list.values):,} values) is not applied to "
                f"EQL rules: Kibana only applies keyword, ip and ip_range lists of at most {MAX_VALUE_LIST_VALUES:,} "
                "values, and warns that the item is skipped",
                severity=WARNING,
            )
        fits = _VALUE_LIST_FIELD_TYPES.get(value_list.type)
        if fits is not None and info.type not in fits:
            yield _f(
                file,
                at,
                "exceptions-value",
                f"value list {list_id!r} holds {value_list.type} values but {full!r} is {info.type}",
            )


def _value_problem(field_type: str, value: str) -> str | None:
    """Why a match value can never equal a value of the field type (None when it can)."""
    if field_type in _NUMBER_TYPES:
        try:
            float(value)
        except ValueError:
            return "is not a number"
    elif field_type == "ip":
        try:
            ipaddress.ip_network(value, strict=False) if "/" in value else ipaddress.ip_address(value)
        except ValueError:
            return "is not an IP address or CIDR"
    elif field_type == "boolean" and value not in ("true", "false"):
        return "is not true or false"
    elif field_type in ("date", "date_nanos") and parse_time(value) is None and not value.isdigit():
        return "is not a date"
    return None


def _check_values(value_list: ValueList) -> Iterator[Finding]:
    """Each value of an ip / ip_range value list is an address / a CIDR or a dash range."""
    if value_list.type not in ("ip", "ip_range"):
        return
    for i, value in enumerate(value_list.values):
        try:
            if value_list.type == "ip":
                ipaddress.ip_address(value)
            elif "-" in value and "/" not in value:
                lo, hi = (ipaddress.ip_address(v.strip()) for v in value.split("-", 1))
                if lo.version != hi.version or lo > hi:
                    raise ValueError(value)
            else:
                ipaddress.ip_network(value, strict=False)
        except ValueError:
            want = "an IP address" if value_list.type == "ip" else "a CIDR or a range like 10.0.0.1-10.0.0.9"
            yield _f(value_list.file, ("values", i), "exceptions-value", f"{value!r} is not {want}")


def _check_references(
    refs: list[tuple[RuleFile, int, dict[str, Any]]], catalogue: Catalogue
) -> Iterator[Finding]:
    defaults: dict[str, list[str]] = {}  # rule_default list_id -> rule_ids using it
    per_rule: dict[str, list[tuple[RuleFile, int, str]]] = {}
    for rule, index, ref in refs:
        base = ("exceptions_list", index)
        list_id = ref.get("list_id")
        if not isinstance(list_id, str):
            continue
        lst = catalogue.lists.get(list_id)
        if lst is None:
            yield _f(
                rule,
                (*base, "list_id"),
                "exceptions-reference",
                f"exceptions_list[{index}]: list {list_id!r} is not declared in the repository",
                "add the list under an exceptions/ directory (docs/exceptions.md), or fix the list_id",
                rule_id=rule.rule_id,
            )
            continue
        for key, have in (("type", lst.type), ("namespace_type", lst.namespace_type)):
            if key in ref and ref[key] != have:
                yield _f(
                    rule,
                    (*base, key),
                    "exceptions-reference",
                    f"exceptions_list[{index}].{key}: {ref[key]!r}, but list {list_id!r} is {have!r}",
                    f"write {key}: {have}, or leave it out",
                    rule_id=rule.rule_id,
                )
        if lst.type == "rule_default":
            per_rule.setdefault(str(rule.path), []).append((rule, index, list_id))
            if rule.rule_id and rule.rule_id not in defaults.setdefault(list_id, []):
                defaults[list_id].append(rule.rule_id)
    for entries in per_rule.values():
        for rule, index, list_id in entries[1:]:
            yield _f(
                rule,
                ("exceptions_list", index, "list_id"),
                "exceptions-reference",
                f"more than one rule_default exception list on this rule ({entries[0][2]!r} and {list_id!r})",
                "a rule has at most one rule_default list; make the others type: detection",
                rule_id=rule.rule_id,
            )
    for list_id, rule_ids in defaults.items():
        if len(rule_ids) > 1:
            lst = catalogue.lists[list_id]
            yield _f(
                lst.file,
                ("type",),
                "exceptions-reference",
                f"rule_default list {list_id!r} is referenced by {len(rule_ids)} rules ({', '.join(rule_ids)}); "
                "Kibana refuses a second rule with 409",
                "make it type: detection to share it",
            )
