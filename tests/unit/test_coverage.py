"""`dac coverage`: seed steps, techniques and platforms derived from the rules; Navigator layer."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from deployer.cli import main
from deployer.coverage import (
    ANALYTICS,
    FILE_TYPES,
    classify_step,
    compute,
    navigator_layer,
    query_step_kinds,
    render_text,
)
from deployer.eql import parser
from deployer.rules.loader import load_rule_files

REPO = Path(__file__).resolve().parents[2]


def _rule(rule_id: str, query: str, *, implements: list[str], platforms: list[str], **extra: Any) -> Any:
    kibana = {"rule_id": rule_id, "name": rule_id, "query": query, "severity": "medium", "threat": []}
    kibana.update({k: v for k, v in extra.items() if k not in ("depends_on",)})
    metadata = {"implements": implements, "platforms": platforms}
    if "depends_on" in extra:
        metadata["depends_on"] = extra["depends_on"]
    return SimpleNamespace(rule_id=rule_id, kibana=kibana, metadata=metadata, path=Path(f"{rule_id}.yaml"))


@pytest.fixture(scope="module")
def repo_report() -> Any:
    loaded = load_rule_files([REPO / "detections"])
    return compute(loaded.rules)


def test_classify_steps() -> None:
    q = parser.parse(
        'sequence with maxspan=1m [file where file.path : "x"] by process.entity_id '
        '[process where process.parent.name == "a"] by process.parent.entity_id '
        "[network where true] by process.entity_id"
    )
    assert [classify_step(s.query) for s in q.body.steps] == [["file"], ["spawn"], ["network"]]
    any_step = parser.parse('any where event.type == "start" and process.args : "C:\\\\Users\\\\*"').body
    assert classify_step(any_step) == ["open-args"]
    assert query_step_kinds('process where process.name == "x"') == [[]]


def test_seed_steps_from_queries_and_dependencies() -> None:
    a = _rule(
        "a",
        'sequence with maxspan=5m [file where true] by process.entity_id [process where process.parent.name == "w"] by process.parent.entity_id',
        implements=["T1204"],
        platforms=["windows"],
        building_block_type="default",
    )
    b = _rule(
        "b",
        'sequence with maxspan=1m [process where process.parent.name == "w"] by process.entity_id [network where true] by process.entity_id',
        implements=["T1204"],
        platforms=["windows"],
        building_block_type="default",
    )
    c = _rule(
        "c",
        'sequence with maxspan=1m [process where kibana.alert.rule.rule_id == "a"] by process.entity_id [network where kibana.alert.rule.rule_id == "b"] by process.entity_id',
        implements=["AN1314", "DET0478", "T1204"],
        platforms=["windows"],
        depends_on=["a", "b"],
    )
    report = compute([a, b, c])
    by_id = {r.rule_id: r for r in report.rules}
    # Building blocks claim no analytic; they count toward the one their reader claims.
    assert by_id["a"].analytic_steps == {"AN1314": ["1", "2", "3"]}
    assert by_id["b"].analytic_steps == {"AN1314": ["1", "3", "4"]}
    assert by_id["c"].analytic_steps == {"AN1314": ["1", "2", "3", "4"]}
    matrix = report.analytic_matrix()
    assert matrix["AN1314"]["2"] == {"alerting": ["c"], "building_blocks": ["a"]}
    assert "AN0821 on linux: no alerting rule" in report.gaps()
    assert "file type shortcut on windows: no positive fixture of an alerting rule" in report.gaps()
    assert report.rules[-1].building_block  # building blocks listed after alerting rules


def test_missing_dependency_and_bad_query_are_reported() -> None:
    bad = _rule("bad", "sequence [", implements=["DET0294"], platforms=["linux"])
    orphan = _rule(
        "orphan",
        'sequence with maxspan=1m [process where kibana.alert.rule.rule_id == "x"] by process.entity_id [process where true] by process.entity_id',
        implements=["AN1314"],
        platforms=["windows"],
        depends_on=["x"],
    )
    report = compute([bad, orphan])
    assert any("does not parse" in e for e in report.errors)
    assert any("depends_on x" in e for e in report.errors)


def test_repository_content_covers_every_seed_step_and_platform(repo_report: Any) -> None:
    assert repo_report.errors == []
    assert repo_report.gaps() == []
    matrix = repo_report.analytic_matrix()
    for analytic, spec in ANALYTICS.items():
        for step in spec["steps"]:
            assert matrix[analytic][step]["alerting"], f"{analytic} step {step}"
    chain = next(r for r in repo_report.rules if r.rule_id == "an1314-win-app-lolbin-network-chain")
    assert chain.analytic_steps == {"AN1314": ["1", "2", "3", "4"]}
    assert not chain.building_block
    for analytic in ("AN0819", "AN0820", "AN0821"):
        assert all(repo_report.platform_matrix()[analytic].values()), analytic
    files = repo_report.file_type_matrix()
    for kind, spec in FILE_TYPES.items():
        for platform in spec["platforms"]:
            assert files[kind][platform], f"{kind} on {platform}"
    assert "T1204.002" in repo_report.technique_matrix()


def test_text_output(repo_report: Any) -> None:
    text = render_text(repo_report)
    assert (
        "AN1314 (DET0478, T1204)" in text and "AN0820 (DET0294, T1204.002)" in text and "Gaps: none" in text
    )
    assert "File types (DET0294) x platform" in text
    assert "building block" in text


def test_navigator_layer_format(repo_report: Any) -> None:
    layer = navigator_layer(repo_report)
    assert layer["versions"]["layer"] == "4.5"
    assert layer["domain"] == "enterprise-attack"
    assert set(layer["filters"]["platforms"]) == {"Windows", "Linux", "macOS"}
    by_key = {(t["techniqueID"], t.get("tactic")): t for t in layer["techniques"]}
    t = by_key[("T1204.002", "execution")]
    assert t["score"] >= 3 and t["enabled"] and "Rules:" in t["comment"]
    assert ("T1204", "execution") in by_key and ("T1566.001", "initial-access") not in by_key
    assert layer["gradient"]["maxValue"] >= t["score"]
    for item in layer["techniques"]:
        assert set(item) >= {"techniqueID", "score", "comment", "enabled", "metadata", "showSubtechniques"}


def test_cli_text_json_and_navigator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    out = tmp_path / "layer.json"
    result = runner.invoke(main, ["coverage", str(REPO / "detections"), "--navigator", str(out)])
    assert result.exit_code == 0, result.output
    assert "AN1314" in result.output and str(out) in result.output
    assert json.loads(out.read_text())["versions"]["layer"] == "4.5"
    result = runner.invoke(main, ["coverage", str(REPO / "detections"), "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["gaps"] == [] and doc["analytic_steps"]["AN1314"]["4"]["alerting"]
    monkeypatch.chdir(REPO)
    assert runner.invoke(main, ["coverage"]).exit_code == 0
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(main, ["coverage"]).exit_code == 2
    (tmp_path / "bad.yaml").write_text("rule_id: [\n")
    assert runner.invoke(main, ["coverage", str(tmp_path / "bad.yaml")]).exit_code == 1
