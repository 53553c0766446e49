"""JSON Schema check of exception list and value list files, one finding per error at its line."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from deployer.rules import fastschema
from deployer.rules.findings import ERROR, Finding
from deployer.rules.loader import RuleFile

# schemas/*.schema.json are the source of truth; the package links to them (like rule.schema.json).
_HERE = Path(__file__).parent
SCHEMAS = {"list": _HERE / "exception_list.schema.json", "value_list": _HERE / "value_list.schema.json"}

_WHEN = {
    "match": "a match entry",
    "match_any": "a match_any entry",
    "wildcard": "a wildcard entry",
    "exists": "an exists entry",
    "list": "a list entry",
    "nested": "a nested entry",
}


@lru_cache(maxsize=2)
def _schema(kind: str) -> dict[str, Any]:
    # Local "$ref"s inlined (the schemas do not recurse), as the fast check needs.
    schema = json.loads(SCHEMAS[kind].read_text(encoding="utf-8"))
    return _inline(schema, schema.get("$defs", {}))


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref[len("#/$defs/") :]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


@lru_cache(maxsize=2)
def _validator(kind: str) -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(_schema(kind))


@lru_cache(maxsize=2)
def _fast(kind: str) -> Any:
    # jsonschema costs ~1.5 ms per item; a 10,000-item list is checked by the compiled yes/no
    # test first, and jsonschema only runs to word the errors of a file that has some.
    try:
        return fastschema.compile_schema(_schema(kind))
    except fastschema.UnsupportedSchema:
        return None


def _where(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "top level"


def check_schema(file: RuleFile, kind: str) -> Iterator[Finding]:
    """Schema findings for an exception list (``kind="list"``) or value list (``"value_list"``) file."""
    fast = _fast(kind)
    if fast is not None and fast(file.data):
        return
    seen: set[str] = set()
    for error in sorted(
        _validator(kind).iter_errors(file.data), key=lambda e: list(map(str, e.absolute_path))
    ):
        path = tuple(error.absolute_path)
        where = _where(path)
        value = error.instance
        hint: str | None = None
        pos = file.position(path)
        entry_type = value.get("type") if isinstance(value, dict) else None
        what = _WHEN.get(str(entry_type), "this entry")
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            for key in sorted(k for k in value if k not in allowed):
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                yield _f(
                    file,
                    file.position((*path, key)),
                    f"{where + '.' if path else ''}{key}: unknown key",
                    f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(allowed)}",
                )
            continue
        if error.validator == "required":
            match = re.match(r"^'(.+)' is a required property", error.message)
            name = match.group(1) if match else str(error.validator_value)
            message = f"{where}: missing required key '{name}'"
            if entry_type in _WHEN and "entries" in path[-2:-1] + path[-4:-3]:
                message += f" ({what} needs it)"
        elif error.validator == "enum":
            options = [str(o) for o in error.validator_value]
            key = path[-1] if path else ""
            label = {"type": "entry type", "operator": "operator"}.get(str(key), "value")
            if "entries" not in path:
                label = "value"
            message = f"{where}: unknown {label} {value!r}; expected one of {', '.join(options)}"
            close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]}?" if close else None
        elif error.validator == "type":
            expected = error.validator_value
            expected = " or ".join(expected) if isinstance(expected, list) else expected
            expected = {"object": "mapping", "array": "list"}.get(expected, expected)
            message = f"{where}: expected {expected}, got {type(value).__name__} {value!r:.60}"
        elif error.validator == "anyOf" and path[-1:] == ("value",):
            message = f"{where}: expected a string or a non-empty list of strings, got {value!r:.60}"
        elif error.validator == "not":
            if entry_type == "exists":
                message, pos = f"{where}: an exists entry takes no value", file.position((*path, "value"))
            elif entry_type == "nested":
                message = f"{where}: a nested entry takes no operator (its inner entries have one)"
                pos = file.position((*path, "operator"))
            else:
                message = f"{where}: {error.message:.200}"
        elif error.validator == "const":
            message = f"{where}: must be {error.validator_value!r}, got {value!r:.60}"
        elif error.validator == "pattern" and path[-1:] == ("expire_time",):
            message = f"{where}: {value!r:.60} is not an ISO 8601 date-time"
            hint = "e.g. 2027-01-31T00:00:00Z"
        elif error.validator == "pattern":
            message = f"{where}: {value!r:.60} may only hold letters, digits, '_', '.', ':' and '-'"
        elif error.validator == "minItems":
            message = f"{where}: must have at least {error.validator_value} item(s)"
        elif error.validator == "minLength":
            message = f"{where}: must not be empty"
        elif error.validator == "uniqueItems":
            message = f"{where}: has duplicate items"
        else:
            message = f"{where}: {error.message:.200}"
        if message in seen:
            continue
        seen.add(message)
        yield _f(file, pos, message, hint)


def _f(file: RuleFile, pos: tuple[int, int], message: str, hint: str | None) -> Finding:
    return Finding(str(file.path), pos[0], pos[1], None, "exceptions-schema", ERROR, message, hint)
