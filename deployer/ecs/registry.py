"""ECS field registry: the generated ECS data shipped in the package plus repo-declared fields."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

STRING_TYPES = frozenset({"keyword", "constant_keyword", "wildcard", "text", "match_only_text", "flattened"})
NUMERIC_TYPES = frozenset(
    {"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float", "unsigned_long"}
)
OBJECT_TYPES = frozenset({"object", "nested"})
KNOWN_TYPES = (
    STRING_TYPES
    | NUMERIC_TYPES
    | OBJECT_TYPES
    | {"ip", "date", "date_nanos", "boolean", "geo_point", "geo_shape", "point", "shape", "binary", "version"}
    # Other Elasticsearch/OpenSearch mapping types a live cluster's _field_caps may report.
    | {"alias", "histogram", "search_as_you_type", "token_count", "completion", "percolator", "join"}
    | {"rank_feature", "rank_features", "dense_vector", "sparse_vector", "knn_vector", "semantic_text"}
    | {"integer_range", "long_range", "float_range", "double_range", "date_range", "ip_range"}
    | {"aggregate_metric_double", "counted_keyword"}
)

_FIELD_NAME = re.compile(r"^[@A-Za-z0-9_][A-Za-z0-9_.@-]*(\.\*)?$")


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """What the registry knows about one field."""

    name: str
    type: str
    array: bool = False
    allowed_values: tuple[str, ...] = ()
    source: str = "ecs"  # "ecs" or the extra-fields file that declared it

    @property
    def kind(self) -> str:
        """Coarse family used by type checks: string, number, ip, date, boolean, object, other."""
        return type_kind(self.type)


class ExtraFieldsError(ValueError):
    """The extra-fields file is malformed; ``str()`` names file:line."""


def type_kind(es_type: str) -> str:
    """Map an Elasticsearch field type to a coarse family (string, number, ip, date, ...)."""
    if es_type in STRING_TYPES:
        return "string"
    if es_type in NUMERIC_TYPES:
        return "number"
    if es_type in ("date", "date_nanos"):
        return "date"
    if es_type in OBJECT_TYPES:
        return "object"
    if es_type in ("ip", "boolean"):
        return es_type
    return "other"


class FieldRegistry:
    """Lookup of field name → FieldInfo (exact names, ``prefix.*`` patterns, object sub-keys)."""

    def __init__(
        self,
        fields: dict[str, FieldInfo],
        patterns: dict[str, FieldInfo] | None = None,
        ecs_version: str = "",
        object_types: dict[str, str] | None = None,
    ) -> None:
        self._fields = fields
        self._patterns = patterns or {}  # "file.Ext." → info for declared "file.Ext.*"
        self._object_types = object_types or {}  # value type of `object` fields' sub-keys (labels.*)
        self.ecs_version = ecs_version
        self._children_cache: dict[str, frozenset[str]] | None = None
        self._parents_cache: dict[str, tuple[str, ...]] | None = None

    def get(self, name: str) -> FieldInfo | None:
        """The field's info, or None when neither ECS nor the declared extras know it."""
        info = self._fields.get(name)
        if info is not None:
            return info
        for prefix, pattern_info in self._patterns.items():
            if name.startswith(prefix):
                return FieldInfo(
                    name,
                    pattern_info.type,
                    pattern_info.array,
                    pattern_info.allowed_values,
                    pattern_info.source,
                )
        # Sub-keys of `object` fields with a declared value type (labels.*) and of `flattened`
        # fields are valid field names whose values are keywords.
        parts = name.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            parent = self._fields.get(".".join(parts[:cut]))
            if parent is None:
                continue
            if parent.type == "flattened":
                return FieldInfo(name, "keyword", True, (), parent.source)
            object_type = self._object_types.get(parent.name)
            if object_type:
                return FieldInfo(name, object_type, False, (), parent.source)
            return None
        return None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[FieldInfo]:
        return iter(self._fields.values())

    def __len__(self) -> int:
        return len(self._fields)

    def extended(self, packs: Iterable[Mapping[str, FieldInfo]]) -> FieldRegistry:
        """This registry plus the fields of ``packs``; a field this registry knows keeps its info.

        Pack entries named ``prefix.*`` become patterns.
        """
        fields: dict[str, FieldInfo] = {}
        patterns: dict[str, FieldInfo] = {}
        for pack in packs:
            for name, info in pack.items():
                if name.endswith(".*"):
                    patterns.setdefault(name[:-1], info)
                else:
                    fields.setdefault(name, info)
        fields.update(self._fields)
        patterns.update(self._patterns)
        return FieldRegistry(fields, patterns, self.ecs_version, self._object_types)

    def near_miss(self, name: str) -> str | None:
        """A known field one edit (a changed, missing, extra or swapped character) from ``name``."""
        parent, _, leaf = name.rpartition(".")
        for sibling in self._children().get(parent, ()):
            if _one_edit(leaf, sibling):
                return f"{parent}.{sibling}" if parent else sibling
        # The typo may sit in the parent path: a known parent one edit away that has this leaf.
        for known_parent in self._parents_of().get(leaf, ()):
            if known_parent != parent and _one_edit(parent, known_parent):
                return f"{known_parent}.{leaf}"
        return None

    def _children(self) -> dict[str, frozenset[str]]:
        """parent path → leaf names under it (built once, on the first unknown field)."""
        if self._children_cache is None:
            children: dict[str, set[str]] = {}
            for known in self._fields:
                parent, _, leaf = known.rpartition(".")
                children.setdefault(parent, set()).add(leaf)
            self._children_cache = {k: frozenset(v) for k, v in children.items()}
        return self._children_cache

    def _parents_of(self) -> dict[str, tuple[str, ...]]:
        """leaf name → parent paths that have it."""
        if self._parents_cache is None:
            parents: dict[str, list[str]] = {}
            for parent, leaves in self._children().items():
                for leaf in leaves:
                    parents.setdefault(leaf, []).append(parent)
            self._parents_cache = {k: tuple(v) for k, v in parents.items()}
        return self._parents_cache

    def suggest(self, name: str, limit: int = 3) -> list[str]:
        """Known field names close to ``name`` (for "did you mean" hints)."""
        head = name.split(".", 1)[0]
        # Comparing against the same top-level field set first is faster and gives better hints.
        same_set = [n for n in self._fields if n.split(".", 1)[0] == head]
        found = difflib.get_close_matches(name, same_set, n=limit, cutoff=0.75)
        if not found:
            found = difflib.get_close_matches(name, list(self._fields), n=limit, cutoff=0.8)
        return found


def _one_edit(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` differ by exactly one substitution, insertion, deletion or swap."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        return (
            len(diffs) == 2
            and diffs[1] == diffs[0] + 1
            and a[diffs[0]] == b[diffs[1]]
            and a[diffs[1]] == b[diffs[0]]
        )
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = next((k for k in range(len(short)) if short[k] != long_[k]), len(short))
    return short[i:] == long_[i + 1 :]


@lru_cache(maxsize=1)
def _ecs_fields() -> tuple[dict[str, FieldInfo], dict[str, str], str]:
    """ECS fields, the value types of ECS `object` fields (the data file's object_type), version."""
    raw = json.loads(resources.files("deployer.ecs").joinpath("ecs_fields.json").read_text(encoding="utf-8"))
    fields: dict[str, FieldInfo] = {}
    object_types: dict[str, str] = {}
    for name, spec in raw["fields"].items():
        if isinstance(spec, str):
            fields[name] = FieldInfo(name, spec)
            continue
        fields[name] = FieldInfo(name, spec["type"], bool(spec.get("array")), tuple(spec.get("allowed", ())))
        if spec.get("object_type"):
            object_types[name] = spec["object_type"]
    return fields, object_types, raw.get("ecs_version", "")


def load(extra_fields_path: str | Path | None = None) -> FieldRegistry:
    """The ECS registry, plus the fields declared in ``extra_fields_path`` when given."""
    ecs, object_types, version = _ecs_fields()
    if extra_fields_path is None:
        return FieldRegistry(ecs, ecs_version=version, object_types=object_types)
    extra, patterns = _load_extra(Path(extra_fields_path))
    merged = dict(ecs)
    merged.update(extra)
    return FieldRegistry(merged, patterns, ecs_version=version, object_types=object_types)


def load_extra_fields(path: str | Path) -> dict[str, FieldInfo]:
    """The fields declared in an extra-fields file (patterns keyed by their ``prefix.*`` name)."""
    exact, patterns = _load_extra(Path(path))
    out = dict(exact)
    out.update({f"{prefix}*": info for prefix, info in patterns.items()})
    return out


def _load_extra(path: Path) -> tuple[dict[str, FieldInfo], dict[str, FieldInfo]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExtraFieldsError(f"{path}: cannot read extra fields file: {exc}") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ExtraFieldsError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if root is None:
        return {}, {}
    if not isinstance(root, yaml.MappingNode):
        raise ExtraFieldsError(f"{path}:1: expected a mapping of field name to type")
    exact: dict[str, FieldInfo] = {}
    patterns: dict[str, FieldInfo] = {}
    source = str(path)
    lines: dict[str, int] = {}
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + 1
        name = str(key_node.value)
        if not _FIELD_NAME.match(name):
            raise ExtraFieldsError(f"{path}:{line}: {name!r} is not a field name")
        if name in lines:
            raise ExtraFieldsError(f"{path}:{line}: {name} is listed twice (first on line {lines[name]})")
        lines[name] = line
        spec: Any = yaml.safe_load(yaml.serialize(value_node))
        info = _extra_info(name, spec, source, f"{path}:{line}")
        if name.endswith(".*"):
            patterns[name[:-1]] = info
        else:
            exact[name] = info
    return exact, patterns


def _extra_info(name: str, spec: Any, source: str, where: str) -> FieldInfo:
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ExtraFieldsError(f"{where}: {name}: expected a type name or {{type: ..., array: ...}}")
    unknown = set(spec) - {"type", "array", "allowed_values", "description"}
    if unknown:
        raise ExtraFieldsError(f"{where}: {name}: unknown key {sorted(unknown)[0]!r}")
    if spec["type"] not in KNOWN_TYPES:
        raise ExtraFieldsError(f"{where}: {name}: unknown type {spec['type']!r}")
    allowed = spec.get("allowed_values") or []
    if not isinstance(allowed, list) or not all(isinstance(v, str) for v in allowed):
        raise ExtraFieldsError(f"{where}: {name}: allowed_values must be a list of strings")
    if not isinstance(spec.get("array", False), bool):
        raise ExtraFieldsError(f"{where}: {name}: array must be true or false")
    return FieldInfo(name, spec["type"], bool(spec.get("array", False)), tuple(allowed), source)
