"""What every check shares: the validation context and how a finding is built."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from deployer.config import Config
from deployer.ecs.packs import FieldPack, load_pack, packs_for
from deployer.ecs.registry import FieldRegistry
from deployer.rules.findings import ERROR, Finding
from deployer.rules.loader import RuleFile


@dataclass(frozen=True)
class RuleFields:
    """The fields one rule may use: ECS, the extra fields and the packs of its index patterns."""

    registry: FieldRegistry
    packs: tuple[str, ...]
    uncovered: tuple[str, ...]  # the rule's index patterns no pack covers

    def unverified(self, name: str) -> bool:
        """An unknown field that may come from an uncovered index pattern (and is no typo).

        A name one edit from a known field is a typo even there, so it stays an error.
        """
        return bool(self.uncovered) and self.registry.near_miss(name) is None

    def unknown_message(self, name: str) -> str:
        """Why ``name`` is unknown: the sources it was looked up in."""
        packs = f" or field pack {', '.join(self.packs)}" if self.packs else ""
        return f"unknown field '{name}': not in ECS {self.registry.ecs_version}, the extra fields{packs}"


@dataclass
class Context:
    """What a check may read besides the rule: the configuration, the field registry, the repo."""

    config: Config
    registry: FieldRegistry  # ECS plus the extra fields; packs are added per rule
    repo_root: Path
    _by_packs: dict[tuple[str, ...], FieldRegistry] = field(default_factory=dict, init=False, repr=False)
    _by_index: dict[tuple[str, ...], RuleFields] = field(default_factory=dict, init=False, repr=False)

    @cached_property
    def covered_fields(self) -> set[str] | None:
        """Fields mapped by the repo's mappings/ templates (None when there are none)."""
        return _load_covered_fields(self.repo_root)

    @cached_property
    def tunables(self) -> dict[str, Any] | None:
        """The tunables file validation.tunables names, loaded (raises TunablesError when it is bad)."""
        from deployer.rules.tunables import load_tunables

        path = self.config.validation.tunables
        return load_tunables(path) if path is not None else None

    @cached_property
    def packs(self) -> dict[str, FieldPack]:
        """Every pack validation.field_packs names, loaded (raises FieldPackError when one is bad)."""
        policy = self.config.validation
        return {
            ref: load_pack(ref, policy.field_packs_base) for _, refs in policy.field_packs for ref in refs
        }

    def fields_for(self, rule: RuleFile) -> RuleFields:
        """The fields ``rule`` may use, from its index patterns."""
        index = rule.data.get("index")
        patterns = tuple(p for p in index if isinstance(p, str)) if isinstance(index, list) else ()
        found = self._by_index.get(patterns)
        if found is None:
            refs, uncovered = packs_for(patterns, self.config.validation.field_packs)
            registry = self._by_packs.get(refs)
            if registry is None:
                registry = (
                    self.registry.extended(self.packs[r].fields for r in refs) if refs else self.registry
                )
                self._by_packs[refs] = registry
            found = self._by_index[patterns] = RuleFields(registry, refs, uncovered)
        return found


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
    close = registry.near_miss(name)
    suggestions = [close] if close else registry.suggest(name)
    if suggestions:
        return f"did you mean {' or '.join(suggestions)}?"
    return (
        "use an ECS field, or add it to a field pack mapped to the rule's index patterns "
        "(validation.field_packs in dac.yaml) or to the extra fields file"
    )


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
