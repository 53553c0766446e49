"""Exception lists and value lists as loaded from the repository, and the catalogue of both."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployer.rules.loader import RuleFile

ENTRY_TYPES = ("match", "match_any", "exists", "wildcard", "nested", "list")
OPERATORS = ("included", "excluded")
NESTED_ENTRY_TYPES = ("match", "match_any", "exists")
OS_TYPES = ("windows", "linux", "macos")
# Value-list types Kibana can turn into query clauses; items using any other type are skipped
# ("unprocessed") when an EQL rule runs.
PROCESSABLE_VALUE_LIST_TYPES = ("keyword", "ip", "ip_range")
MAX_VALUE_LIST_VALUES = 65_536  # larger value lists are unprocessed too
MAX_LIST_ITEMS = 10_000  # MAX_EXCEPTION_LIST_SIZE: Kibana refuses the 10,001st item
DEFAULT_NAMESPACE = "single"


@dataclass
class ExceptionList:
    """One exception list file: the list container and its items, with positions for findings."""

    file: RuleFile

    @property
    def data(self) -> dict[str, Any]:
        """The raw mapping read from the file."""
        return self.file.data

    @property
    def path(self) -> Path:
        """Where the list is written."""
        return self.file.path

    @property
    def list_id(self) -> str | None:
        """The list's stable ``list_id`` when it is a string."""
        value = self.data.get("list_id")
        return value if isinstance(value, str) else None

    @property
    def type(self) -> str:
        """``detection`` (shared) unless the file says otherwise."""
        value = self.data.get("type")
        return value if isinstance(value, str) else "detection"

    @property
    def namespace_type(self) -> str:
        """``single`` (one space) unless the file says ``agnostic``."""
        value = self.data.get("namespace_type")
        return value if isinstance(value, str) else DEFAULT_NAMESPACE

    @property
    def items(self) -> list[dict[str, Any]]:
        """The item mappings (non-mappings are left to the schema check)."""
        items = self.data.get("items")
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


@dataclass
class ValueList:
    """One value list file (Kibana's Lists API): an id, an ES type and its values."""

    file: RuleFile

    @property
    def id(self) -> str | None:
        """The value list id that ``list`` entries name."""
        value = self.file.data.get("id")
        return value if isinstance(value, str) else None

    @property
    def type(self) -> str:
        """The Elasticsearch type of its values (keyword, ip, ip_range, ...)."""
        return str(self.file.data.get("type") or "")

    @property
    def values(self) -> list[str]:
        """Its values as strings."""
        values = self.file.data.get("values")
        return [str(v) for v in values] if isinstance(values, list) else []


@dataclass
class Catalogue:
    """Every exception list and value list the repository declares, by id."""

    lists: dict[str, ExceptionList] = field(default_factory=dict)
    value_lists: dict[str, ValueList] = field(default_factory=dict)
    # Every file loaded, in order, including those without a usable or unique id (for validation).
    files: list[ExceptionList | ValueList] = field(default_factory=list)

    def add(self, other: Catalogue) -> None:
        """Add what ``other`` declares and this one does not (first declaration wins)."""
        for key, lst in other.lists.items():
            self.lists.setdefault(key, lst)
        for key, vl in other.value_lists.items():
            self.value_lists.setdefault(key, vl)

    def lists_of(self, rule: Any) -> list[ExceptionList]:
        """The declared lists a rule references in ``exceptions_list`` (unknown ones skipped)."""
        return [self.lists[ref] for ref in referenced_list_ids(rule) if ref in self.lists]


def rule_references(rule_data: Mapping[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(index, entry) for every mapping in a rule's ``exceptions_list``."""
    refs = rule_data.get("exceptions_list")
    if not isinstance(refs, list):
        return []
    return [(i, r) for i, r in enumerate(refs) if isinstance(r, dict)]


def referenced_list_ids(rule: Any) -> list[str]:
    """The ``list_id`` values a rule (a RuleFile or a mapping) references, in order."""
    data = rule.kibana if hasattr(rule, "kibana") else rule
    out: list[str] = []
    for _, ref in rule_references(data or {}):
        lid = ref.get("list_id")
        if isinstance(lid, str) and lid not in out:
            out.append(lid)
    return out


def iter_entries(entries: Any) -> Iterable[tuple[tuple[int, ...], dict[str, Any]]]:
    """(index path, entry) for each entry mapping, nested entries after their parent."""
    if not isinstance(entries, list):
        return
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        yield (i,), entry
        if entry.get("type") == "nested" and isinstance(entry.get("entries"), list):
            for j, inner in enumerate(entry["entries"]):
                if isinstance(inner, dict):
                    yield (i, j), inner
