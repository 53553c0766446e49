"""The fast schema check agrees with jsonschema: it never accepts what jsonschema rejects."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployer.rules import fastschema
from deployer.rules.checks.schema import _fast_check, _inlined_schema, _validator

REPO = Path(__file__).resolve().parents[2]
SAMPLES = [
    yaml.safe_load(p.read_text())
    for p in sorted((REPO / "tests" / "data" / "rules" / "valid").glob("*.yaml"))
]

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 200)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(
        [
            "",
            "eql",
            "high",
            "TA0002",
            "T1204",
            "T1204.002",
            "AN1314",
            "windows",
            "match",
            "no_match",
            "MITRE ATT&CK",
            "default",
            "5m",
            "now-6m",
            "x y",
            "a",
            "https://x",
        ]
    )
    | st.text(max_size=6)
    | st.dates()
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["id", "name", "reference", "field_names", "x", "expect", "events"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_paths(value, (*prefix, i)))
    return out


@st.composite
def _mutated(draw: st.DrawFn) -> Any:
    data = copy.deepcopy(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_paths(data)))
        if not path:
            continue
        parent: Any = data
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add", "duplicate"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "tags", "maturity", "sequences", "subtechnique"]))] = draw(
                _values
            )
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
        else:
            parent[path[-1]] = draw(_values)
    return data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_fast_check_agrees_with_jsonschema(data: Any) -> None:
    fast = _fast_check()
    assert fast is not None
    assert fast(data) == _validator().is_valid(data)


def test_samples_are_valid_for_both() -> None:
    fast = _fast_check()
    assert fast is not None
    for sample in SAMPLES:
        assert fast(sample) and _validator().is_valid(sample)


@pytest.mark.parametrize(
    ("schema", "value", "expected"),
    [
        ({"type": "integer"}, 1.0, True),
        ({"type": "integer"}, True, False),
        ({"type": "number"}, False, False),
        ({"const": 1}, True, False),
        ({"uniqueItems": True}, [1, 1.0], False),
        ({"uniqueItems": True}, [1, True], True),
        ({"minimum": 0}, float("nan"), True),
        ({"type": "string"}, datetime.date(2024, 1, 1), False),
        ({"if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]}}, {"a": 1}, False),
    ],
)
def test_json_schema_corner_cases(schema: dict[str, Any], value: Any, expected: bool) -> None:
    import jsonschema

    assert fastschema.compile_schema(schema)(value) is expected
    assert jsonschema.Draft202012Validator(schema).is_valid(value) is expected


def test_unsupported_keyword_is_refused() -> None:
    with pytest.raises(fastschema.UnsupportedSchema):
        fastschema.compile_schema({"patternProperties": {"^x": {}}, "additionalProperties": False})
    with pytest.raises(fastschema.UnsupportedSchema):
        fastschema.compile_schema({"oneOf": [{}]})


def test_rule_schema_is_fully_supported() -> None:
    assert fastschema.compile_schema(_inlined_schema()) is not None
