"""Apply a rule's exception items to events offline, the way Kibana does for EQL rules.

Kibana turns every unexpired item of every referenced list into one Query-DSL clause, ORs them,
and puts the disjunction in the ``must_not`` of the ``_eql/search`` filter, so Elasticsearch
drops an excepted document before EQL sees it, in every sequence step alike
(docs/exceptions.md; Kibana's build_exception_filter.ts and build_eql_search_request.ts).

Query-DSL semantics, not EQL's: ``match``/``match_any`` are ``match_phrase`` (exact and
case-sensitive on keyword fields), ``wildcard`` is a case-sensitive glob with ``\\`` escapes,
an array field matches when any element does, ``excluded`` negates its entry (so a document
without the field passes an excluded entry), and an item with ``os_types`` applies only to
documents whose ``host.os.type`` (or lower-cased ``host.os.name``) is one of them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from deployer.exceptions.model import (
    MAX_VALUE_LIST_VALUES,
    PROCESSABLE_VALUE_LIST_TYPES,
    Catalogue,
    ExceptionList,
)

Predicate = Callable[[Any], bool]  # called with a _View
# Field name -> Elasticsearch type (None when unknown): the ECS registry's lookup.
TypeLookup = Callable[[str], "str | None"]


def field_values(doc: Any, dotted: str) -> list[Any]:
    """Every leaf value at ``dotted`` in a document, through nested objects, dotted keys and arrays.

    This is how Elasticsearch indexes ``_source``: arrays of objects are flattened, so
    ``a.b`` holds the ``b`` of every object in the array ``a``. Nulls are not values.
    """
    out: list[Any] = []
    _collect(doc, dotted, out)
    return out


def _collect(node: Any, dotted: str, out: list[Any]) -> None:
    if isinstance(node, list):
        for element in node:
            _collect(element, dotted, out)
        return
    if not isinstance(node, Mapping):
        return
    if dotted in node:
        _leaves(node[dotted], out)
    head, sep, rest = dotted.partition(".")
    while sep:
        if head in node:
            _collect(node[head], rest, out)
        nxt, sep, rest = rest.partition(".")
        head = f"{head}.{nxt}"


def _leaves(value: Any, out: list[Any]) -> None:
    if isinstance(value, list):
        for element in value:
            _leaves(element, out)
    elif value is not None and not isinstance(value, Mapping):
        out.append(value)


def _sub_documents(doc: Any, path: str) -> list[Mapping[str, Any]]:
    """The objects under a nested path (each is matched on its own, like a nested query)."""
    found: list[Any] = []
    _collect_objects(doc, path, found)
    return found


def _collect_objects(node: Any, dotted: str, out: list[Any]) -> None:
    if isinstance(node, list):
        for element in node:
            _collect_objects(element, dotted, out)
        return
    if not isinstance(node, Mapping):
        return
    if dotted in node:
        value = node[dotted]
        for element in value if isinstance(value, list) else [value]:
            if isinstance(element, Mapping):
                out.append(element)
    head, sep, rest = dotted.partition(".")
    while sep:
        if head in node:
            _collect_objects(node[head], rest, out)
        nxt, sep, rest = rest.partition(".")
        head = f"{head}.{nxt}"


class _View:
    """A document as exception entries read it: each field's values collected once per document."""

    __slots__ = ("doc", "_cache")

    def __init__(self, doc: Any) -> None:
        self.doc = doc
        self._cache: dict[str, list[Any]] = {}

    def values(self, name: str) -> list[Any]:
        """The field's leaf values (``field_values``), memoised."""
        found = self._cache.get(name)
        if found is None:
            found = self._cache[name] = field_values(self.doc, name)
        return found

    def objects(self, path: str) -> list[_View]:
        """The objects under a nested path, each a view of its own."""
        return [_View(sub) for sub in _sub_documents(self.doc, path)]


# ---------------------------------------------------------------- value comparison


def _equals(field_type: str) -> Callable[[Any, str], bool]:
    """How ``match_phrase`` compares a stored value with the entry's string, by field type."""
    if field_type in (
        "long",
        "integer",
        "short",
        "byte",
        "unsigned_long",
        "double",
        "float",
        "half_float",
        "scaled_float",
    ):
        return _number_equals
    if field_type == "ip":
        return _ip_equals
    if field_type == "boolean":
        return lambda stored, text: str(stored).lower() == text.strip().lower()
    if field_type in ("text", "match_only_text"):
        return _phrase_equals
    return lambda stored, text: _keyword(stored) == text


def _keyword(value: Any) -> str:
    # A keyword field indexes JSON true/false and numbers as their JSON text.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number_equals(stored: Any, text: str) -> bool:
    try:
        return float(stored) == float(text)
    except (TypeError, ValueError):
        return False


def _ip_equals(stored: Any, text: str) -> bool:
    # A term query on an ip field accepts CIDR notation.
    try:
        address = ipaddress.ip_address(str(stored))
        if "/" in text:
            return address in ipaddress.ip_network(text, strict=False)
        return address == ipaddress.ip_address(text)
    except ValueError:
        return False


_TOKEN = re.compile(r"\w+", re.UNICODE)


def _phrase_equals(stored: Any, text: str) -> bool:
    """``match_phrase`` on an analysed text field: the standard analyser's lower-cased tokens, in order."""
    want = [t.lower() for t in _TOKEN.findall(text)]
    have = [t.lower() for t in _TOKEN.findall(str(stored))]
    if not want:
        return False
    return any(have[i : i + len(want)] == want for i in range(len(have) - len(want) + 1))


def wildcard_regex(pattern: str) -> re.Pattern[str]:
    """Elasticsearch ``wildcard`` query: ``*`` any run, ``?`` one character, ``\\`` escapes the next one."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


# ---------------------------------------------------------------- compile


class UnprocessedItem(Exception):
    """An item Kibana leaves out of EQL rules' queries (a value list it cannot turn into clauses)."""


@dataclass
class CompiledItem:
    """One item: its name and the predicate that is True when Kibana's clause matches a document."""

    list_id: str
    item_id: str
    name: str
    test: Predicate  # on a _View
    # (field, values): an included exact match on a keyword field the item needs, so a document
    # without one of these values cannot match it (used to index the items of a rule).
    key: tuple[str, frozenset[str]] | None = None
    # (field, prefix): else an included case-sensitive wildcard on a keyword field whose pattern
    # starts with this literal text, so only values starting with it can match.
    prefix: tuple[str, str] | None = None

    def matches(self, doc: Any) -> bool:
        """True when Kibana's clause for this item matches the document."""
        return self.test(doc if isinstance(doc, _View) else _View(doc))


def _type_of(types: TypeLookup | None, name: str) -> str:
    # Unknown fields are read as keyword, the type dynamic mapping gives strings in ECS templates.
    found = types(name) if types is not None else None
    return found or "keyword"


def _entry_predicate(
    entry: Mapping[str, Any], types: TypeLookup | None, catalogue: Catalogue, type_prefix: str = ""
) -> Predicate:
    """An entry's predicate; inside ``nested`` it reads ``field`` of the nested object, typed as ``path.field``."""
    name = str(entry.get("field"))
    kind = entry.get("type")
    if kind == "nested":
        inner = [
            _entry_predicate(e, types, catalogue, type_prefix=f"{name}.")
            for e in entry.get("entries") or []
            if isinstance(e, Mapping)
        ]

        def nested(doc: _View) -> bool:
            # A nested query: one and the same nested object must satisfy every inner entry.
            return any(all(p(sub) for p in inner) for sub in doc.objects(name))

        return nested
    positive = _positive(name, _type_of(types, type_prefix + name), kind, entry, catalogue)
    if entry.get("operator") == "excluded":
        return lambda doc: not positive(doc)
    return positive


def _positive(name: str, ftype: str, kind: Any, entry: Mapping[str, Any], catalogue: Catalogue) -> Predicate:
    if kind == "exists":
        return lambda doc: bool(doc.values(name))
    if kind in ("match", "match_any"):
        raw = entry.get("value")
        wanted = [str(v) for v in (raw if isinstance(raw, list) else [raw])]
        equals = _equals(ftype)
        return lambda doc: any(equals(v, w) for v in doc.values(name) for w in wanted)
    if kind == "wildcard":
        regex = wildcard_regex(str(entry.get("value")))
        if ftype in ("text", "match_only_text"):
            # Analysed text: the pattern runs on each lower-cased term; nothing is normalised in it.
            return lambda doc: any(
                regex.fullmatch(t.lower()) for v in doc.values(name) for t in _TOKEN.findall(str(v))
            )
        return lambda doc: any(regex.fullmatch(_keyword(v)) for v in doc.values(name))
    if kind == "list":
        return _list_predicate(name, entry, ftype, catalogue)
    raise ValueError(f"unknown entry type {kind!r}")


def _list_predicate(name: str, entry: Mapping[str, Any], ftype: str, catalogue: Catalogue) -> Predicate:
    ref = entry.get("list") if isinstance(entry.get("list"), Mapping) else {}
    list_id = str(ref.get("id"))
    value_list = catalogue.value_lists.get(list_id)
    if value_list is None:
        raise UnprocessedItem(f'Cannot find list: "{list_id}"')
    if value_list.type not in PROCESSABLE_VALUE_LIST_TYPES or len(value_list.values) > MAX_VALUE_LIST_VALUES:
        raise UnprocessedItem(f"value list {list_id!r} ({value_list.type}) cannot be applied to EQL rules")
    values = value_list.values
    if value_list.type == "ip_range":
        networks = [_range_or_network(v) for v in values]
        return lambda doc: any(_in_ranges(v, networks) for v in doc.values(name))
    if ftype == "ip" or value_list.type == "ip":
        return lambda doc: any(_ip_equals(v, w) for v in doc.values(name) for w in values)
    wanted = set(values)
    return lambda doc: any(_keyword(v) in wanted for v in doc.values(name))


def _range_or_network(text: str) -> tuple[Any, Any]:
    if "-" in text and "/" not in text:
        lo, hi = text.split("-", 1)
        return ipaddress.ip_address(lo.strip()), ipaddress.ip_address(hi.strip())
    net = ipaddress.ip_network(text.strip(), strict=False)
    return net[0], net[-1]


def _in_ranges(stored: Any, ranges: Sequence[tuple[Any, Any]]) -> bool:
    try:
        address = ipaddress.ip_address(str(stored))
    except ValueError:
        return False
    return any(lo.version == address.version and lo <= address <= hi for lo, hi in ranges)


def _os_predicate(os_type: str) -> Predicate:
    # transformOsType: one variant with `host.os.type: <os>`, one with `host.os.name.caseless: <os>`
    # (a keyword with a lower-casing normaliser).
    def matches(doc: _View) -> bool:
        if any(_keyword(v) == os_type for v in doc.values("host.os.type")):
            return True
        return any(_keyword(v).lower() == os_type for v in doc.values("host.os.name"))

    return matches


def parse_time(value: Any) -> datetime | None:
    """An ``expire_time`` (string or YAML timestamp) as an aware datetime; None when unreadable."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def is_expired(item: Mapping[str, Any], now: datetime) -> bool:
    """True when the item's ``expire_time`` is before ``now`` (Kibana drops it, keeps it stored)."""
    expires = parse_time(item.get("expire_time"))
    return expires is not None and expires < now


def compile_item(
    lst: ExceptionList,
    item: Mapping[str, Any],
    types: TypeLookup | None,
    catalogue: Catalogue,
) -> CompiledItem:
    """One item's clause: its entries AND-ed, then OR-ed over its ``os_types`` variants."""
    entries = [
        _entry_predicate(e, types, catalogue) for e in item.get("entries") or [] if isinstance(e, Mapping)
    ]
    os_types = [str(o) for o in item.get("os_types") or []]
    os_checks = [_os_predicate(o) for o in os_types]

    def body(doc: _View) -> bool:
        return all(p(doc) for p in entries)

    if os_checks:

        def matches(doc: _View) -> bool:
            return any(check(doc) for check in os_checks) and body(doc)

    else:
        matches = body
    key = _index_key(item, types)
    return CompiledItem(
        str(lst.list_id),
        str(item.get("item_id")),
        str(item.get("name") or ""),
        matches,
        key,
        None if key is not None else _prefix_key(item, types),
    )


_EXACT_TYPES = frozenset({"keyword", "constant_keyword", "wildcard"})


def _literal_prefix(pattern: str) -> str:
    """The text a wildcard pattern's matches all start with (escapes resolved)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch in "*?":
            break
        if ch == "\\" and i + 1 < len(pattern):
            out.append(pattern[i + 1])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _prefix_key(item: Mapping[str, Any], types: TypeLookup | None) -> tuple[str, str] | None:
    """The first included wildcard entry on a keyword field with a literal prefix, as (field, prefix)."""
    for entry in item.get("entries") or []:
        if not isinstance(entry, Mapping) or entry.get("operator") != "included" or entry.get("type") != "wildcard":
            continue
        name = str(entry.get("field"))
        prefix = _literal_prefix(str(entry.get("value")))
        if prefix and _type_of(types, name) in _EXACT_TYPES:
            return name, prefix
    return None


def _index_key(item: Mapping[str, Any], types: TypeLookup | None) -> tuple[str, frozenset[str]] | None:
    """The first included match/match_any entry on a keyword field, as (field, values)."""
    for entry in item.get("entries") or []:
        if not isinstance(entry, Mapping) or entry.get("operator") != "included":
            continue
        name = str(entry.get("field"))
        if entry.get("type") in ("match", "match_any") and _type_of(types, name) in _EXACT_TYPES:
            raw = entry.get("value")
            return name, frozenset(str(v) for v in (raw if isinstance(raw, list) else [raw]))
    return None


class _Index:
    """A rule's items by exact keyword value, by wildcard prefix (per prefix length), and the rest."""

    def __init__(self, items: list[CompiledItem]) -> None:
        self.exact: dict[str, dict[str, list[CompiledItem]]] = {}
        self.prefixes: dict[str, dict[int, dict[str, list[CompiledItem]]]] = {}
        self.rest: list[CompiledItem] = []
        for item in items:
            if item.key is not None:
                table = self.exact.setdefault(item.key[0], {})
                for value in item.key[1]:
                    table.setdefault(value, []).append(item)
            elif item.prefix is not None:
                name, prefix = item.prefix
                by_length = self.prefixes.setdefault(name, {})
                by_length.setdefault(len(prefix), {}).setdefault(prefix, []).append(item)
            else:
                self.rest.append(item)


@dataclass
class RuleExceptions:
    """A rule's compiled exception items; ``excepts(doc)`` is True when Kibana would drop the document."""

    rule_id: str
    items: list[CompiledItem] = field(default_factory=list)
    unprocessed: list[str] = field(default_factory=list)  # names Kibana warns about and does not apply

    _indexed: tuple[list[CompiledItem], _Index] | None = field(default=None, repr=False, compare=False)

    def _index(self) -> _Index:
        # Items keyed on an exact keyword value (or a wildcard's literal prefix) are only tried for
        # documents holding such a value; the others on every document. Rebuilt when `items` changes.
        if self._indexed is None or self._indexed[0] is not self.items:
            self._indexed = (self.items, _Index(self.items))
        return self._indexed[1]

    def which(self, doc: Mapping[str, Any]) -> CompiledItem | None:
        """The first item (in index order) that excepts the document, or None."""
        view = _View(doc)
        index = self._index()
        for name, table in index.exact.items():
            for value in view.values(name):
                for item in table.get(_keyword(value), ()):
                    if item.test(view):
                        return item
        for name, by_length in index.prefixes.items():
            for value in view.values(name):
                text = _keyword(value)
                for length, table in by_length.items():
                    for item in table.get(text[:length], ()):
                        if item.test(view):
                            return item
        return next((item for item in index.rest if item.test(view)), None)

    def excepts(self, doc: Mapping[str, Any]) -> bool:
        """True when any item matches the document (items and lists are OR-ed)."""
        return self.which(doc) is not None


def for_rule(
    rule: Any,
    catalogue: Catalogue,
    types: TypeLookup | None = None,
    now: datetime | None = None,
) -> RuleExceptions | None:
    """The compiled exceptions of a rule (None when it references no list or none has a live item).

    Expired items are dropped; items with a value list Kibana cannot apply are left out and
    named in ``unprocessed``. A referenced list that is not declared raises KeyError.
    """
    from deployer.exceptions.model import referenced_list_ids

    now = now or datetime.now(UTC)
    out = RuleExceptions(str(getattr(rule, "rule_id", "")))
    for list_id in referenced_list_ids(rule):
        lst = catalogue.lists.get(list_id)
        if lst is None:
            raise KeyError(list_id)
        for item in lst.items:
            if is_expired(item, now):
                continue
            try:
                out.items.append(compile_item(lst, item, types, catalogue))
            except UnprocessedItem:
                out.unprocessed.append(str(item.get("name") or item.get("item_id")))
    return out if out.items else None


def filter_documents(docs: Iterable[Mapping[str, Any]], exceptions: RuleExceptions | None) -> list[Any]:
    """The documents a rule's EQL query sees: those no exception item matches."""
    if exceptions is None:
        return list(docs)
    return [d for d in docs if not exceptions.excepts(d)]
