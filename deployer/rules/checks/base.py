"""What every check shares: the validation context and how a finding is built."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from deployer.config import Config
from deployer.ecs.registry import FieldRegistry
from deployer.rules.findings import ERROR, Finding
from deployer.rules.loader import RuleFile


@dataclass
class Context:
    """What a check may read besides the rule: the configuration, the field registry, the repo."""

    config: Config
    registry: FieldRegistry
    repo_root: Path

    @cached_property
    def covered_fields(self) -> set[str] | None:
        """Fields mapped by the repo's mappings/ templates (None when there are none)."""
        return _load_covered_fields(self.repo_root)


# A check: one rule in, its findings out. A check never raises for bad content.
Check = Callable[[RuleFile, Context], Iterable[Finding]]


def finding(
    rule: RuleFile,
    pos: tuple[int, int],
    code: str,
    message: str,
    hint: str | None = None,
    severity: str = ERROR,
) -> Finding:
    """A finding about ``rule`` at ``pos`` (line, column)."""
    return Finding(str(rule.path), pos[0], pos[1], rule.rule_id, code, severity, message, hint)


def _load_covered_fields(repo_root: Path) -> set[str] | None:
    """Fields covered by mappings/ templates, or None when there are no templates to check."""
    mappings_dir = repo_root / "mappings"
    if not mappings_dir.is_dir() or not any(mappings_dir.rglob("*.json")):
        return None
    # Resolved at call time, so a replacement deployer.mappings module (as in tests) is used.
    return importlib.import_module("deployer.mappings").covered_fields(repo_root)


def unknown_field_hint(registry: FieldRegistry, name: str) -> str:
    """A did-you-mean hint for a field the registry does not know."""
    suggestions = registry.suggest(name)
    if suggestions:
        return f"did you mean {' or '.join(suggestions)}?"
    return "use an ECS field, or declare it in the extra fields file (extra_fields.yaml)"


def article(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def where(path: tuple[Any, ...]) -> str:
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


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return next((name for kind, name in _TYPE_NAMES if isinstance(value, kind)), type(value).__name__)


def short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
