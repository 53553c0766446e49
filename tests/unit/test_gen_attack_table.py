"""scripts/gen_attack_table.py: the shipped table matches MITRE's data; bad data is refused."""

from __future__ import annotations

import copy
import gzip
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _gen() -> Any:
    spec = importlib.util.spec_from_file_location(
        "gen_attack_table", REPO / "scripts" / "gen_attack_table.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bundle() -> dict[str, Any]:
    strategy = "x-mitre-detection-strategy--1"
    return {
        "type": "bundle",
        "objects": [
            {"type": "x-mitre-matrix", "id": "m", "tactic_refs": ["x-mitre-tactic--1"]},
            {
                "type": "x-mitre-tactic",
                "id": "x-mitre-tactic--1",
                "name": "Execution",
                "x_mitre_shortname": "execution",
                "external_references": [{"source_name": "mitre-attack", "external_id": "TA0002"}],
            },
            {
                "type": "attack-pattern",
                "id": "attack-pattern--1",
                "name": "User Execution",
                "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": "execution"}],
                "x_mitre_platforms": ["Windows"],
                "external_references": [{"source_name": "mitre-attack", "external_id": "T1204"}],
            },
            {
                "type": strategy.split("--")[0],
                "id": strategy,
                "name": "S",
                "x_mitre_analytic_refs": ["x-mitre-analytic--1"],
                "external_references": [{"source_name": "mitre-attack", "external_id": "DET0001"}],
            },
            {
                "type": "x-mitre-analytic",
                "id": "x-mitre-analytic--1",
                "x_mitre_platforms": ["Windows"],
                "external_references": [{"source_name": "mitre-attack", "external_id": "AN0001"}],
            },
            {
                "type": "relationship",
                "id": "relationship--1",
                "relationship_type": "detects",
                "source_ref": strategy,
                "target_ref": "attack-pattern--1",
            },
        ],
    }


def test_builds_a_small_bundle() -> None:
    table = _gen().build(_bundle(), "18.1")
    assert table["tactics"] == [["TA0002", "execution", "Execution"]]
    assert table["strategies"]["DET0001"] == {"name": "S", "technique": "T1204", "analytics": ["AN0001"]}
    assert table["analytics"]["AN0001"] == {"strategy": "DET0001", "platforms": ["Windows"]}


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (
            lambda b: b["objects"][2].pop("external_references"),
            "attack-pattern attack-pattern--1: no mitre-attack",
        ),
        (
            lambda b: b["objects"].append(copy.deepcopy(b["objects"][2]) | {"id": "attack-pattern--2"}),
            "T1204 appears twice",
        ),
        (lambda b: b["objects"][5].update(target_ref="attack-pattern--404"), "not in the bundle"),
        (lambda b: b["objects"].pop(5), "DET0001: detects no technique"),
        (
            lambda b: b["objects"][2].update(
                kill_chain_phases=[{"kill_chain_name": "mitre-attack", "phase_name": "nope"}]
            ),
            "unknown tactic 'nope'",
        ),
    ],
)
def test_malformed_data_is_refused(breakage: Any, message: str) -> None:
    gen = _gen()
    bundle = _bundle()
    breakage(bundle)
    with pytest.raises(gen.AttackDataError, match=message):
        gen.build(bundle, "18.1")


def test_failure_writes_nothing(tmp_path: Path) -> None:
    gen = _gen()
    bundle = _bundle()
    bundle["objects"].pop(5)
    source = tmp_path / "bundle.json.gz"
    source.write_bytes(gzip.compress(json.dumps(bundle).encode()))
    out = tmp_path / "table.json"
    out.write_text("old")
    assert gen.main(["--bundle", str(source), "--out", str(out)]) == 2
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.json.gz", "table.json"]


def test_shipped_table_is_generated_from_shared(shared_dir: Path) -> None:
    gen = _gen()
    source = shared_dir / "attack" / "enterprise-attack-18.1-subset.json.gz"
    expected = gen.render(gen.build(gen.read_bundle(source), "18.1"))
    shipped = (REPO / "deployer" / "rules" / "attack_enterprise.json").read_text(encoding="utf-8")
    assert shipped == expected, "attack_enterprise.json is stale: run scripts/gen_attack_table.py"
