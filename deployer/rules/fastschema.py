"""A fast yes/no check for the JSON Schema subset the rule schema uses.

``jsonschema`` builds a new validator object at every level it descends into, which makes it the
largest cost of validating a repository. Most rule files are valid, so validation first asks this
compiled check; only when it says "invalid" does ``jsonschema`` run to produce the messages. The
check must never accept what ``jsonschema`` rejects; a keyword it does not implement makes
``compile_schema`` raise, and the caller then always uses ``jsonschema``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

# Keywords that only annotate.
_IGNORED = frozenset(
    {"$schema", "$id", "title", "description", "$comment", "examples", "default", "deprecated"}
)


class UnsupportedSchema(ValueError):
    """The schema uses a keyword this module does not implement."""


def _is_type(value: Any, name: str) -> bool:
    if name == "string":
        return isinstance(value, str)
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool):
        return False  # JSON Schema keeps booleans apart from numbers
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float))
    raise UnsupportedSchema(f"type {name!r}")


def _canonical(value: Any) -> Any:
    """A hashable form in which equal JSON values are equal and 1, 1.0 and True are told apart."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", value)
    if isinstance(value, list):
        return ("a", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("o", frozenset((k, _canonical(v)) for k, v in value.items()))
    return ("s", value) if isinstance(value, str) else ("x", repr(value))


def compile_schema(schema: Any) -> Check:
    """Compile ``schema`` (local ``$ref``s already inlined) into a function value -> bool."""
    if schema is True or schema == {}:
        return lambda value: True
    if schema is False:
        return lambda value: False
    if not isinstance(schema, dict):
        raise UnsupportedSchema(repr(schema))
    checks: list[Check] = []
    for keyword, arg in schema.items():
        if keyword in _IGNORED or keyword in ("then", "else"):
            continue
        checks.append(_keyword(keyword, arg, schema))

    def check(value: Any) -> bool:
        return all(c(value) for c in checks)

    return checks[0] if len(checks) == 1 else check


def _keyword(keyword: str, arg: Any, schema: dict[str, Any]) -> Check:
    if keyword == "type":
        names = arg if isinstance(arg, list) else [arg]
        for name in names:
            _is_type(None, name)  # raises for a type name this module does not know
        return lambda value: any(_is_type(value, n) for n in names)
    if keyword == "const":
        wanted = _canonical(arg)
        return lambda value: _canonical(value) == wanted
    if keyword == "enum":
        options = {_canonical(v) for v in arg}
        return lambda value: _canonical(value) in options
    if keyword == "pattern":
        regex = re.compile(arg)
        return lambda value: not isinstance(value, str) or regex.search(value) is not None
    if keyword in ("minLength", "maxLength"):
        if keyword == "minLength":
            return lambda value: not isinstance(value, str) or len(value) >= arg
        return lambda value: not isinstance(value, str) or len(value) <= arg
    if keyword in ("minimum", "maximum"):

        def numeric(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        if keyword == "minimum":
            return lambda value: not numeric(value) or not value < arg
        return lambda value: not numeric(value) or not value > arg
    if keyword in ("minItems", "maxItems"):
        if keyword == "minItems":
            return lambda value: not isinstance(value, list) or len(value) >= arg
        return lambda value: not isinstance(value, list) or len(value) <= arg
    if keyword == "uniqueItems":
        if not arg:
            return lambda value: True
        return lambda value: not isinstance(value, list) or len({_canonical(v) for v in value}) == len(value)
    if keyword == "items":
        item = compile_schema(arg)
        return lambda value: not isinstance(value, list) or all(item(v) for v in value)
    if keyword == "required":
        names = list(arg)
        return lambda value: not isinstance(value, dict) or all(n in value for n in names)
    if keyword == "properties":
        props = {name: compile_schema(sub) for name, sub in arg.items()}

        def properties(value: Any) -> bool:
            if not isinstance(value, dict):
                return True
            for name, sub in props.items():
                if name in value and not sub(value[name]):
                    return False
            return True

        return properties
    if keyword == "additionalProperties":
        if "patternProperties" in schema:
            raise UnsupportedSchema("patternProperties")
        known = set(schema.get("properties", {}))
        extra = compile_schema(arg)
        return lambda value: (
            not isinstance(value, dict) or all(extra(v) for k, v in value.items() if k not in known)
        )
    if keyword == "anyOf":
        subs = [compile_schema(s) for s in arg]
        return lambda value: any(s(value) for s in subs)
    if keyword == "allOf":
        subs = [compile_schema(s) for s in arg]
        return lambda value: all(s(value) for s in subs)
    if keyword == "not":
        sub = compile_schema(arg)
        return lambda value: not sub(value)
    if keyword == "if":
        condition = compile_schema(arg)
        then = compile_schema(schema.get("then", True))
        otherwise = compile_schema(schema.get("else", True))
        return lambda value: then(value) if condition(value) else otherwise(value)
    raise UnsupportedSchema(keyword)
