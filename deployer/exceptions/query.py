"""A rule's exception items as the Query-DSL clause Kibana builds, for engines that filter in the search.

The shape follows Kibana's build_exception_filter.ts: one clause per item (entries AND-ed in
``bool.filter``, one variant per ``os_types`` value), the items OR-ed in ``bool.should``; the
caller puts the result in ``must_not`` so an excepted document never reaches the sequence logic,
exactly as Kibana's ``_eql/search`` filter does. Expired items are left out (as of ``now``), and
so are items with a value list Kibana cannot apply to EQL rules.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from deployer.exceptions.filter import is_expired
from deployer.exceptions.model import (
    MAX_VALUE_LIST_VALUES,
    PROCESSABLE_VALUE_LIST_TYPES,
    Catalogue,
    referenced_list_ids,
)


class Unprocessed(Exception):
    """An item Kibana leaves out of EQL rules (a value list it cannot turn into clauses)."""


def _should(clauses: list[dict[str, Any]]) -> dict[str, Any]:
    return {"bool": {"minimum_should_match": 1, "should": clauses}}


def _match(field: str, value: str) -> dict[str, Any]:
    return _should([{"match_phrase": {field: value}}])


def _entry(entry: Mapping[str, Any], catalogue: Catalogue, prefix: str = "") -> dict[str, Any]:
    field = prefix + str(entry.get("field"))
    kind = entry.get("type")
    if kind == "nested":
        inner = [_entry(e, catalogue, prefix=f"{field}.") for e in entry.get("entries") or []]
        query = inner[0] if len(inner) == 1 else {"bool": {"filter": inner}}
        return {"nested": {"path": field, "query": query, "score_mode": "none"}}
    if kind == "match":
        clause = _match(field, str(entry.get("value")))
    elif kind == "match_any":
        values = [str(v) for v in entry.get("value") or []]
        clause = _match(field, values[0]) if len(values) == 1 else _should([_match(field, v) for v in values])
    elif kind == "exists":
        clause = _should([{"exists": {"field": field}}])
    elif kind == "wildcard":
        clause = {"bool": {"filter": {"wildcard": {field: str(entry.get("value"))}}}}
    elif kind == "list":
        clause = _list(field, entry, catalogue)
        # Kibana puts the negation of a list entry inside the bool it builds.
        if entry.get("operator") == "excluded":
            return {"bool": {"must_not": clause["bool"]["filter"]}}
        return clause
    else:
        raise ValueError(f"unknown entry type {kind!r}")
    if entry.get("operator") == "excluded":
        return {"bool": {"must_not": clause}}
    return clause


def _list(field: str, entry: Mapping[str, Any], catalogue: Catalogue) -> dict[str, Any]:
    ref = entry.get("list") if isinstance(entry.get("list"), Mapping) else {}
    value_list = catalogue.value_lists.get(str(ref.get("id")))
    if value_list is None:
        raise Unprocessed(f'Cannot find list: "{ref.get("id")}"')
    values = value_list.values
    if value_list.type not in PROCESSABLE_VALUE_LIST_TYPES or len(values) > MAX_VALUE_LIST_VALUES:
        raise Unprocessed(f"value list {value_list.id!r} cannot be applied to EQL rules")
    if value_list.type == "ip_range":
        ranges = [v for v in values if "-" in v and "/" not in v]
        if len(ranges) > 200:
            raise Unprocessed(f"value list {value_list.id!r} has more than 200 dash ranges")
        clauses: list[dict[str, Any]] = [
            {"range": {field: {"gte": lo.strip(), "lte": hi.strip()}}} for lo, hi in (r.split("-", 1) for r in ranges)
        ]
        cidrs = [str(ipaddress.ip_network(v, strict=False)) for v in values if v not in ranges]
        if cidrs:
            clauses.append({"terms": {field: cidrs}})
        return {"bool": {"filter": _should(clauses)}}
    return {"bool": {"filter": {"terms": {field: values}}}}


def item_clauses(item: Mapping[str, Any], catalogue: Catalogue) -> list[dict[str, Any]]:
    """One item's clauses: its entries AND-ed, one variant per ``os_types`` value (OR-ed by the caller)."""
    entries = [_entry(e, catalogue) for e in item.get("entries") or [] if isinstance(e, Mapping)]
    os_types = [str(o) for o in item.get("os_types") or []]
    if not os_types:
        return [entries[0] if len(entries) == 1 else {"bool": {"filter": entries}}]
    out = []
    for os_type in os_types:
        for field in ("host.os.type", "host.os.name.caseless"):
            out.append({"bool": {"filter": [_match(field, os_type), *entries]}})
    return out


def exception_query(rule: Any, catalogue: Catalogue, now: datetime | None = None) -> dict[str, Any] | None:
    """The disjunction of a rule's live items (for ``must_not``), None when none applies.

    Raises KeyError with the list_id when a referenced list is not declared.
    """
    now = now or datetime.now(UTC)
    clauses: list[dict[str, Any]] = []
    for list_id in referenced_list_ids(rule):
        lst = catalogue.lists.get(list_id)
        if lst is None:
            raise KeyError(list_id)
        for item in lst.items:
            if is_expired(item, now):
                continue
            try:
                clauses.extend(item_clauses(item, catalogue))
            except Unprocessed:
                continue
    return {"bool": {"should": clauses}} if clauses else None
