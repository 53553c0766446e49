"""The rule file against schemas/rule.schema.json, with messages people can act on."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer.rules import fastschema
from deployer.rules.checks.base import Context, finding, short, type_name, where
from deployer.rules.findings import Finding
from deployer.rules.kibana_fields import SERVER_FIELDS
from deployer.rules.loader import RuleFile

if TYPE_CHECKING:
    import jsonschema

# schemas/rule.schema.json is the one source of truth; the package links to it so an installed
# (non-editable) build carries the same file.
SCHEMA_PATH = Path(__file__).parents[1] / "rule.schema.json"


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


def check_schema(rule: RuleFile, ctx: Context) -> Iterator[Finding]:
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
        at = where(path)
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
                    yield finding(
                        rule,
                        rule.position((*path, key)),
                        code,
                        f"{at + '.' if path else ''}{key}: unknown key",
                        key_hint,
                    )
            continue
        if error.validator == "required":
            match = re.match(r"^'(.+)' is a required property", error.message)
            name = match.group(1) if match else str(error.validator_value)
            message = f"{at}: missing required key '{name}'"
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
            message = f"{at}: expected {expected}, got {type_name(value)} {short(value)}"
            if isinstance(value, str) and expected == "integer" and value.strip().isdigit():
                hint = f"remove the quotes: {value.strip()}"
            elif expected == "list" and isinstance(value, str):
                hint = f"write a list: [{value}]"
            elif expected == "string" and value is not None and not isinstance(value, (dict, list)):
                hint = f"quote the value: '{value}'"
        elif error.validator == "enum":
            options = [str(o) for o in error.validator_value]
            message = f"{at}: {short(value)} is not one of {', '.join(options)}"
            close = difflib.get_close_matches(str(value).lower(), options, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]}?" if close else None
        elif error.validator == "const":
            message = f"{at}: must be {error.validator_value!r}, got {short(value)}"
        elif error.validator == "pattern":
            message = f"{at}: {short(value)} is not in the expected format"
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
            message = f"{at}: must be {bound} {error.validator_value}, got {short(value)}"
        elif error.validator in _LIMIT_MESSAGES:
            message = f"{at}: {_LIMIT_MESSAGES[error.validator].format(error.validator_value)}"
        elif error.validator == "not" and path[:2] == ("metadata", "tests"):
            message = f"{at}: 'sequences' only applies to expect: match"
            pos = rule.position((*path, "sequences"))
        else:
            message = f"{at}: {short(error.message, 200)}"
        marker = (*path, error.validator, message)
        if marker in seen:
            continue
        seen.add(marker)
        yield finding(rule, pos, code, message, hint)


def _unknown_key_hint(key: str, allowed: set[str], path: tuple[Any, ...]) -> str:
    if not path and key in SERVER_FIELDS:
        return f"'{key}' is managed by Kibana; remove it from the rule file"
    if not path and key in rule_schema()["$defs"]["metadata"]["properties"]:
        return f"'{key}' belongs under metadata:"
    close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return "allowed keys are listed in schemas/rule.schema.json and docs/rules.md"


def warm_up() -> None:
    """Build the schema validators now (before forking workers, so they inherit them)."""
    _fast_check()
    _validator()
