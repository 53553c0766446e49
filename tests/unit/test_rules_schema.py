"""rules.schema.json agrees with Kibana's published rule API (names, types, required fields)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.rules.checks.schema import SCHEMA_PATH
from deployer.rules.loader import load_rule_file

REPO = Path(__file__).resolve().parents[2]
VALID_DIR = REPO / "tests" / "data" / "rules" / "valid"
# Response-only fields Kibana's create schema lists but a rule file never carries.
RESPONSE_ONLY = {"alias_purpose", "alias_target_id", "outcome"}


@pytest.fixture(scope="module")
def kibana(shared_dir: Path) -> dict[str, Any]:
    path = shared_dir / "apis" / "kibana-detections-oas.yaml"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _eql_create_properties(spec: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    props: dict[str, Any] = {}
    required: set[str] = set()
    stack = [spec["components"]["schemas"]["EqlRuleCreateProps"]]
    while stack:
        node = _resolve(spec, stack.pop())
        stack.extend(node.get("allOf", []))
        props.update(node.get("properties", {}))
        required.update(node.get("required", []))
    return props, required


def _json_type(spec: dict[str, Any] | None, node: dict[str, Any]) -> str | None:
    if spec is not None:
        node = _resolve(spec, node)
    if "type" in node:
        return node["type"]
    if "const" in node:
        return type(node["const"]).__name__.replace("str", "string")
    if "enum" in node:
        return "string"
    return None


def _ours() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def test_schema_is_valid_2020_12() -> None:
    import jsonschema

    schema = _ours()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["metadata"]["additionalProperties"] is False


def test_every_kibana_field_we_accept_exists_in_kibana(kibana: dict[str, Any]) -> None:
    kibana_props, _ = _eql_create_properties(kibana)
    ours = set(_ours()["properties"]) - {"metadata"}
    assert ours - set(kibana_props) == set()
    # And every Kibana create field a file may carry is accepted.
    assert set(kibana_props) - RESPONSE_ONLY - ours == set()


def test_types_match_kibana(kibana: dict[str, Any]) -> None:
    kibana_props, _ = _eql_create_properties(kibana)
    schema = _ours()
    for name, node in schema["properties"].items():
        if name == "metadata":
            continue
        ours_type = _json_type(
            None, node if "$ref" not in node else schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
        )
        theirs = _json_type(kibana, kibana_props[name])
        if ours_type is None or theirs is None:
            continue
        assert ours_type == theirs, name


def test_kibana_required_fields_are_required(kibana: dict[str, Any]) -> None:
    _, required = _eql_create_properties(kibana)
    assert required <= set(_ours()["required"])


def test_valid_sample_is_a_valid_kibana_create_body(kibana: dict[str, Any]) -> None:
    oas = pytest.importorskip("openapi_schema_validator")
    referencing = pytest.importorskip("referencing")
    from referencing.jsonschema import DRAFT4

    registry = referencing.Registry().with_resource(
        "urn:kbn", referencing.Resource.from_contents(kibana, default_specification=DRAFT4)
    )
    validator = oas.OAS30Validator(
        {"$ref": "urn:kbn#/components/schemas/EqlRuleCreateProps"}, registry=registry
    )
    for path in sorted(VALID_DIR.glob("*.yaml")):
        rule, findings = load_rule_file(path)
        assert rule is not None and not findings
        errors = [e.message for e in validator.iter_errors(rule.kibana)]
        assert errors == [], path
