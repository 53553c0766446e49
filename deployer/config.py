"""Repository configuration (``dac.yaml``): validation policy and the raw deploy targets."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_FILE = "dac.yaml"
CONFIG_ENV = "DAC_CONFIG"

DEFAULT_MAX_MAXSPAN_MS = 10 * 60_000
DEFAULT_ENTITY_KEYS = ("process.entity_id", "process.parent.entity_id")
DEFAULT_EXEMPT_MATURITIES = ("experimental",)

_DURATION = re.compile(r"^\s*([0-9]+)\s*(ms|s|m|h|d)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_VALIDATION_KEYS = {
    "max_maxspan",
    "entity_keys",
    "extra_fields",
    "fixture_exempt_maturities",
    "field_packs",
    "tunables",
}

# Used when dac.yaml does not set validation.field_packs: Elastic Defend writes logs-endpoint.*.
DEFAULT_FIELD_PACKS: tuple[tuple[str, tuple[str, ...]], ...] = (("logs-endpoint.*", ("elastic-defend",)),)


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or malformed; ``str()`` names file:line."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line


@dataclass(frozen=True)
class ValidationConfig:
    """The ``validation:`` section, with defaults for every missing key."""

    max_maxspan_ms: int = DEFAULT_MAX_MAXSPAN_MS
    max_maxspan_text: str = "10m"
    entity_keys: tuple[str, ...] = DEFAULT_ENTITY_KEYS
    extra_fields: Path | None = None
    # The analytics' tunables that marked query literals are rendered from (deployer.rules.tunables).
    tunables: Path | None = None
    fixture_exempt_maturities: tuple[str, ...] = DEFAULT_EXEMPT_MATURITIES
    # (index pattern, pack references) in file order; pack references are shipped pack names or
    # paths relative to the configuration file's folder (``field_packs_base``).
    field_packs: tuple[tuple[str, tuple[str, ...]], ...] = DEFAULT_FIELD_PACKS
    field_packs_base: Path = field(default_factory=Path.cwd)


@dataclass(frozen=True)
class Config:
    """The whole configuration: where it came from, validation policy, raw ``targets``."""

    path: Path | None = None
    root: Path = field(default_factory=Path.cwd)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    targets: dict[str, Any] = field(default_factory=dict)


def parse_duration_ms(text: str) -> int:
    """Parse an EQL-style duration (``500ms``, ``30s``, ``10m``, ``1h``, ``1d``) into milliseconds."""
    match = _DURATION.match(str(text))
    if match is None:
        raise ValueError(f"expected a duration like 30s, 10m or 1h, got {text!r}")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def find_config(start: Path | None = None) -> Path | None:
    """Find ``dac.yaml`` in ``start`` (default: cwd) or a parent, stopping at a git root."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_FILE
        if candidate.is_file():
            return candidate
        if (directory / ".git").exists():
            return None
    return None


def load_config(path: str | Path | None = None) -> Config:
    """Load ``path`` (or ``$DAC_CONFIG``, or the nearest ``dac.yaml``); defaults when none exists.

    An explicitly named file that does not exist, or any malformed value, raises ConfigError.
    """
    explicit = path if path is not None else os.environ.get(CONFIG_ENV) or None
    if explicit is not None:
        config_path = Path(explicit)
        if not config_path.is_file():
            raise ConfigError("configuration file not found", config_path)
    else:
        found = find_config()
        if found is None:
            return Config()
        config_path = found
    try:
        text = config_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", config_path) from exc
    loader = yaml.SafeLoader(text)
    try:
        # One parse: the node tree gives the key lines for messages, and the data is built from it.
        root_node = loader.get_single_node()
        raw = loader.construct_document(root_node) if root_node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ConfigError(
            f"invalid YAML: {exc.problem}", config_path, mark.line + 1 if mark else None
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", config_path) from exc
    finally:
        loader.dispose()
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("top level must be a mapping (validation:, targets:)", config_path, 1)
    lines = _key_lines(root_node)
    base = config_path.resolve().parent
    validation = _validation(raw.get("validation"), config_path, base, lines)
    targets = raw.get("targets") or {}
    if not isinstance(targets, dict):
        raise ConfigError(
            "targets: must be a mapping of target name to settings", config_path, lines.get(("targets",))
        )
    return Config(path=config_path, root=base, validation=validation, targets=targets)


def _validation(raw: Any, path: Path, base: Path, lines: dict[tuple[str, ...], int]) -> ValidationConfig:
    if raw is None:
        return ValidationConfig(field_packs_base=base)
    if not isinstance(raw, dict):
        raise ConfigError("validation: must be a mapping", path, lines.get(("validation",)))

    def line(key: str) -> int | None:
        return lines.get(("validation", key), lines.get(("validation",)))

    unknown = sorted(set(raw) - _VALIDATION_KEYS)
    if unknown:
        raise ConfigError(
            f"validation.{unknown[0]}: unknown setting (known: {', '.join(sorted(_VALIDATION_KEYS))})",
            path,
            line(str(unknown[0])),
        )
    values: dict[str, Any] = {}
    if "max_maxspan" in raw:
        try:
            values["max_maxspan_ms"] = parse_duration_ms(raw["max_maxspan"])
        except ValueError as exc:
            raise ConfigError(f"validation.max_maxspan: {exc}", path, line("max_maxspan")) from exc
        values["max_maxspan_text"] = str(raw["max_maxspan"]).strip()
    for key in ("entity_keys", "fixture_exempt_maturities"):
        if key in raw:
            items = raw[key]
            if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
                raise ConfigError(f"validation.{key}: must be a list of non-empty strings", path, line(key))
            if key == "entity_keys" and not items:
                raise ConfigError("validation.entity_keys: must name at least one field", path, line(key))
            values[key] = tuple(items)
    if raw.get("extra_fields") is not None:
        extra = raw["extra_fields"]
        if not isinstance(extra, str) or not extra:
            raise ConfigError("validation.extra_fields: must be a file path", path, line("extra_fields"))
        values["extra_fields"] = (base / extra).resolve()
    if raw.get("tunables") is not None:
        tunables = raw["tunables"]
        if not isinstance(tunables, str) or not tunables:
            raise ConfigError("validation.tunables: must be a file path", path, line("tunables"))
        values["tunables"] = (base / tunables).resolve()
    if "field_packs" in raw:
        values["field_packs"] = _field_packs(raw["field_packs"], path, line("field_packs"))
    values["field_packs_base"] = base
    return ValidationConfig(**values)


def _field_packs(raw: Any, path: Path, line: int | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``{index pattern: pack or [packs]}`` → ((pattern, (pack, ...)), ...)."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ConfigError(
            "validation.field_packs: must map index patterns to packs, e.g. {logs-endpoint.*: [elastic-defend]}",
            path,
            line,
        )
    out = []
    for pattern, refs in raw.items():
        if isinstance(refs, str):
            refs = [refs]
        if not isinstance(pattern, str) or not pattern or not isinstance(refs, list) or not refs:
            raise ConfigError(
                f"validation.field_packs: {pattern!r}: expected a pack name or file, or a list of them",
                path,
                line,
            )
        if not all(isinstance(r, str) and r for r in refs):
            raise ConfigError(
                f"validation.field_packs: {pattern}: pack references must be non-empty strings", path, line
            )
        out.append((pattern, tuple(refs)))
    return tuple(out)


def _key_lines(node: yaml.Node | None, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """1-based line of every mapping key (two levels deep is all the error messages need)."""
    out: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode) and len(prefix) < 2:
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = (*prefix, str(key_node.value))
                out[key] = key_node.start_mark.line + 1
                out.update(_key_lines(value_node, key))
    return out
