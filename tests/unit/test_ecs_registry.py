"""ECS field registry: generated data, lookups, repo-declared extra fields."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from deployer.ecs import registry
from deployer.ecs.registry import ExtraFieldsError, FieldInfo

REPO = Path(__file__).resolve().parents[2]


def test_core_fields_types_arrays_and_allowed_values() -> None:
    reg = registry.load()
    assert reg.get("process.entity_id") == FieldInfo("process.entity_id", "keyword")
    assert reg.get("destination.port").type == "long"  # type: ignore[union-attr]
    assert reg.get("source.ip").kind == "ip"  # type: ignore[union-attr]
    event_type = reg.get("event.type")
    assert event_type is not None and event_type.array and "creation" in event_type.allowed_values
    assert "process" in reg.get("event.category").allowed_values  # type: ignore[union-attr]
    assert reg.get("event.outcome").allowed_values == ("failure", "success", "unknown")  # type: ignore[union-attr]
    assert reg.get("process.args").array  # type: ignore[union-attr]
    assert reg.get("process.command_line.text").type == "match_only_text"  # type: ignore[union-attr]
    assert reg.get("process.nmae") is None
    assert reg.ecs_version == "9.3.0"


def test_object_and_flattened_sub_keys() -> None:
    reg = registry.load()
    assert reg.get("labels.team").type == "keyword"  # type: ignore[union-attr]
    assert reg.get("file.pe.imports.anything") is not None
    assert reg.get("process.name.extra") is None  # a keyword has no sub-fields


def test_suggestions_for_typos() -> None:
    assert registry.load().suggest("process.nmae")[0] == "process.name"


def test_repo_extra_fields_file() -> None:
    reg = registry.load(REPO / "extra_fields.yaml")
    ancestry = reg.get("process.Ext.ancestry")
    assert ancestry is not None and ancestry.array and ancestry.type == "keyword"
    assert reg.get("kibana.alert.group.index").type == "long"  # type: ignore[union-attr]
    assert reg.get("kibana.alert.original_time").type == "date"  # type: ignore[union-attr]
    assert reg.get("kibana.alert.building_block_type").allowed_values == ("default",)  # type: ignore[union-attr]
    assert reg.get("kibana.alert.rule.rule_id").type == "keyword"  # type: ignore[union-attr]
    assert reg.get("process.name") is not None  # ECS is still there
    assert registry.load().get("process.Ext.ancestry") is None  # only with the extra file


def test_extra_field_patterns_and_short_form(tmp_path: Path) -> None:
    path = tmp_path / "extra.yaml"
    path.write_text("custom.id: keyword\ncustom.Ext.*: {type: long}\n")
    reg = registry.load(path)
    assert reg.get("custom.id").type == "keyword"  # type: ignore[union-attr]
    assert reg.get("custom.Ext.a.b").type == "long"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a.b: {type: strng}\n", ":1: a.b: unknown type 'strng'"),
        ("a.b: keyword\nc d: keyword\n", ":2: 'c d' is not a field name"),
        ("a.b: {type: keyword, arr: true}\n", "unknown key 'arr'"),
        ("a.b: {type: keyword, array: maybe}\n", "array must be true or false"),
        ("- a\n", ":1: expected a mapping"),
        ("a: [\n", "invalid YAML"),
    ],
)
def test_malformed_extra_fields(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "extra.yaml"
    path.write_text(text)
    with pytest.raises(ExtraFieldsError, match=None) as info:
        registry.load(path)
    assert needle in str(info.value) and str(path) in str(info.value)


def test_generated_registry_matches_ecs_source(shared_dir: Path) -> None:
    source = shared_dir / "ecs" / "ecs_flat.yml"
    if not source.is_file():
        pytest.skip(f"{source} is absent")
    spec = importlib.util.spec_from_file_location(
        "gen_ecs_registry", REPO / "scripts" / "gen_ecs_registry.py"
    )
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    import yaml

    flat = yaml.load(source.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    expected = gen.render(gen.compact(flat), "9.3.0")
    shipped = (REPO / "deployer" / "ecs" / "ecs_fields.json").read_text(encoding="utf-8")
    assert shipped == expected, "deployer/ecs/ecs_fields.json is stale: run scripts/gen_ecs_registry.py"
    assert len(json.loads(shipped)["fields"]) >= len(flat)
