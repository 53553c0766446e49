"""Mapping templates: generated output is current, covers every rule field, and suits each engine."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from deployer import mappings
from deployer.eql import ast, parser
from deployer.rules.loader import load_rule_files

REPO = Path(__file__).resolve().parents[2]
ECS_DIR = REPO.parent / "shared" / "ecs"
NON_CORE_TYPES = {"wildcard", "match_only_text", "constant_keyword", "scaled_float"}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_mappings", REPO / "scripts" / "gen_mappings.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_mappings"] = module
    spec.loader.exec_module(module)
    return module


def _all_types(props: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for spec in props.values():
        if "type" in spec:
            out.add(spec["type"])
        out |= _all_types(spec.get("properties", {}))
        out |= _all_types(spec.get("fields", {}))
    return out


def _all_params(props: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for spec in props.values():
        out |= set(spec)
        out |= _all_params(spec.get("properties", {}))
        out |= _all_params(spec.get("fields", {}))
    return out


def _rule_fields() -> dict[str, set[str]]:
    """rule_id → fields its query uses, for rules over event indices (Kibana maps the alerts index)."""
    loaded = load_rule_files([REPO / "detections"])
    out = {}
    for rule in loaded.rules:
        if any(str(p).startswith(".alerts-security") for p in rule.kibana.get("index", [])):
            continue
        out[rule.rule_id] = {".".join(f.path) for f in ast.field_refs(parser.parse(rule.kibana["query"]))}
    return out


@pytest.mark.skipif(
    not (ECS_DIR / "component").is_dir(), reason="ECS reference data (../shared/ecs) not present"
)
def test_checked_in_mappings_match_the_generator() -> None:
    gen = _generator()
    files, report = gen.generate(ECS_DIR, REPO)
    stale = gen.diff(files, REPO / "mappings")
    assert not stale, f"mappings/ is out of date, run scripts/gen_mappings.py: {stale}"
    assert report["engines"]["opensearch"]["flattened -> flat_object"]
    assert report["engines"]["elasticsearch"] == {}


@pytest.mark.skipif(
    not (ECS_DIR / "component").is_dir(), reason="ECS reference data (../shared/ecs) not present"
)
def test_generator_check_mode(tmp_path: Path) -> None:
    gen = _generator()
    assert gen.main(["--ecs-dir", str(ECS_DIR), "--check"]) == 0
    assert gen.main(["--ecs-dir", str(ECS_DIR), "--out", str(tmp_path), "--check"]) == 1
    assert gen.main(["--ecs-dir", str(tmp_path / "missing")]) == 2


def test_every_field_used_by_rules_is_mapped() -> None:
    covered = mappings.covered_fields(REPO)
    for rule_id, fields in _rule_fields().items():
        missing = sorted(fields - covered)
        assert not missing, f"{rule_id}: fields not in mappings/: {missing}"


@pytest.mark.parametrize("engine", mappings.ENGINES)
def test_templates_load_and_compose(engine: str) -> None:
    templates = mappings.load_templates(REPO, engine)
    assert set(templates) == {"component_templates", "index_templates"}
    assert {"dac-events", "dac-ecs-sources"} <= set(templates["index_templates"])
    events = templates["index_templates"]["dac-events"]
    assert events["index_patterns"] == ["dac-events*"]
    assert all(c in templates["component_templates"] for c in events["composed_of"])
    sources = templates["index_templates"]["dac-ecs-sources"]["index_patterns"]
    for pattern in (
        "logs-endpoint.events.*",
        "logs-windows.sysmon_operational-*",
        "winlogbeat-*",
        "auditbeat-*",
    ):
        assert pattern in sources
    assert not any(p.startswith(".alerts") for p in sources)
    types = mappings.field_types(templates, "dac-events")
    assert types["@timestamp"] == "date"
    assert types["destination.ip"] == "ip"
    assert types["destination.port"] == "long"
    assert types["process.entity_id"] == "keyword"
    assert types["data_stream.dataset"] == "keyword", "replay indices hold several datasets"
    assert types["kibana.alert.original_time"] == "date"
    assert types["process.Ext.ancestry"] == "keyword"


def test_engine_specific_types() -> None:
    es = mappings.field_types(mappings.load_templates(REPO, "elasticsearch"))
    core = mappings.field_types(mappings.load_templates(REPO, "elasticsearch-core"))
    os_ = mappings.field_types(mappings.load_templates(REPO, "opensearch"))
    assert es["process.command_line"] == "wildcard"
    assert core["process.command_line"] == "keyword"
    assert os_["process.command_line"] == "keyword"
    assert es["process.command_line.text"] == "match_only_text"
    assert os_["process.command_line.text"] == "text"
    assert es["file.elf.imports"] == "flattened"
    assert core["file.elf.imports"] == "flattened"
    assert os_["file.elf.imports"] == "flat_object"
    for engine in ("opensearch", "elasticsearch-core"):
        templates = mappings.load_templates(REPO, engine)
        for name, body in templates["component_templates"].items():
            props = body["template"]["mappings"]["properties"]
            types = _all_types(props)
            assert not types & NON_CORE_TYPES, f"{engine}/{name}: {types & NON_CORE_TYPES}"
            assert "synthetic_source_keep" not in _all_params(props)
            if engine == "opensearch":
                assert "flattened" not in types


def test_covered_fields_is_the_intersection_of_engines(tmp_path: Path) -> None:
    for engine in ("elasticsearch", "opensearch"):
        base = tmp_path / "mappings" / engine
        (base / "component").mkdir(parents=True)
        (base / "index_template").mkdir()
        props: dict[str, Any] = {"a": {"type": "keyword"}, "n": {"properties": {"x": {"type": "long"}}}}
        if engine == "elasticsearch":
            props["only_es"] = {"type": "keyword"}
        (base / "component" / "c.json").write_text(
            json.dumps({"template": {"mappings": {"properties": props}}})
        )
        (base / "index_template" / "i.json").write_text(
            json.dumps({"index_patterns": ["x*"], "composed_of": ["c"]})
        )
    assert mappings.covered_fields(tmp_path) == {"a", "n.x"}


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(mappings.MappingsError):
        mappings.load_templates(tmp_path, "opensearch")
    with pytest.raises(mappings.MappingsError):
        mappings.normalize_engine("solr")
    assert mappings.normalize_engine("OS") == "opensearch"
    base = tmp_path / "mappings" / "opensearch" / "index_template"
    base.mkdir(parents=True)
    (base / "i.json").write_text('{"index_patterns": ["x*"], "composed_of": ["absent"]}')
    with pytest.raises(mappings.MappingsError, match="absent"):
        mappings.load_templates(tmp_path, "opensearch")
    (base / "i.json").write_text("{not json")
    with pytest.raises(mappings.MappingsError):
        mappings.load_templates(tmp_path, "opensearch")
    assert mappings.covered_fields(tmp_path / "nowhere") == set()


def test_deploy_writes_components_before_index_templates() -> None:
    calls: list[tuple[str, str]] = []
    templates = mappings.load_templates(REPO, "opensearch")
    written = mappings.deploy(lambda method, path, body: calls.append((method, path)), templates)
    assert len(written) == len(templates["component_templates"]) + len(templates["index_templates"])
    kinds = [path.split("/")[1] for _, path in calls]
    assert kinds.index("_index_template") > max(i for i, k in enumerate(kinds) if k == "_component_template")
    assert all(method == "PUT" for method, _ in calls)
    calls.clear()
    assert mappings.deploy(lambda m, p, b: calls.append((m, p)), templates, only=["dac-events"]) == [
        "dac-events"
    ]
