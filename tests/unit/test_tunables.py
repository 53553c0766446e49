"""Analytic tunables: the file, the markers in queries, rendering, `dac validate` and `dac tunables`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from deployer.cli import main
from deployer.config import load_config
from deployer.eql import parser
from deployer.rules.loader import load_rule_files
from deployer.rules.tunables import TunablesError, find, load_tunables, problems, render, render_file
from deployer.rules.validate import validate

REPO = Path(__file__).resolve().parents[2]

TUNABLES = """\
AN1314:
  TimeWindow:
    open_to_spawn: 5m
  HighRiskParents: ["winword.exe", "excel.exe"]
  UserPaths: ["?:\\\\Users\\\\*\\\\Downloads\\\\*", "say \\"hi\\""]
"""

RULE = """\
# yaml-language-server: $schema=../schemas/rule.schema.json
rule_id: t-tunable
name: tunable rule
description: d
type: eql
language: eql
query: |
  sequence with maxspan=/* tunable: AN1314.TimeWindow.open_to_spawn */ 9m
    [file where process.name in~ /* tunable: AN1314.HighRiskParents */ ("notepad.exe") and
      file.path : /* tunable: AN1314.UserPaths */ ("x")] by process.entity_id
    [process where process.parent.name in~ /* tunable: AN1314.HighRiskParents */ ("winword.exe", "excel.exe")
    ] by process.parent.entity_id
index: [logs-endpoint.events.*]
severity: low
risk_score: 21
metadata:
  implements: [T1204]
  platforms: [windows]
  maturity: experimental
"""


def _repo(tmp_path: Path, tunables: str = TUNABLES, rule: str = RULE) -> Path:
    (tmp_path / "tunables.yaml").write_text(tunables, encoding="utf-8")
    (tmp_path / "dac.yaml").write_text("validation:\n  tunables: tunables.yaml\n", encoding="utf-8")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(rule, encoding="utf-8")
    return tmp_path


def test_load_flattens_names_and_keeps_lines(tmp_path: Path) -> None:
    table = load_tunables(_repo(tmp_path) / "tunables.yaml")
    assert table["AN1314.TimeWindow.open_to_spawn"].value == "5m"
    assert table["AN1314.HighRiskParents"].value == ("winword.exe", "excel.exe")
    assert table["AN1314.UserPaths"].value == ("?:\\Users\\*\\Downloads\\*", 'say "hi"')
    assert table["AN1314.HighRiskParents"].line == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("AN1314:\n  TimeWindow: 5 minutes\n", "tunables.yaml:2: AN1314.TimeWindow: expected a duration"),
        ("AN1314:\n  L: []\n", "tunables.yaml:2: AN1314.L: a list tunable is a non-empty list"),
        ("AN1314:\n  L: [a, 3]\n", "non-empty strings"),
        ("AN1314:\n  L: [a, a]\n", "listed twice: a"),
        ("AN1314:\n  L: [a]\n  L: [b]\n", "tunables.yaml:3: 'L' is defined twice"),
        ("AN1314: [a]\n", "an analytic maps element names to values"),
        ("AN1314:\n  L: {}\n", "AN1314.L is empty"),
        ("- a\n", "expected a mapping of analytics"),
        ("AN9999:\n  L: [a]\n", "AN9999 is not an ATT&CK analytic"),
        ("AN1314:\n  L: [a\n", "invalid YAML"),
    ],
)
def test_malformed_tunables_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tunables.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TunablesError, match="tunables.yaml") as info:
        load_tunables(path)
    assert message in str(info.value)


def test_find_reads_marked_lists_and_durations() -> None:
    query = 'sequence with maxspan=/* tunable: A.W */ 5m [x where a in~ /* tunable: A.L */ ("p\\\\q", "r")]'
    found = find(query)
    assert [(o.name, o.value) for o in found] == [("A.W", "5m"), ("A.L", ("p\\q", "r"))]
    assert query[found[1].start : found[1].end] == '("p\\\\q", "r")'
    assert find("x where a : /* tunable: A.L */ process.name")[0].value is None


def test_render_rewrites_marked_literals_and_is_idempotent(tmp_path: Path) -> None:
    table = load_tunables(_repo(tmp_path) / "tunables.yaml")
    query = RULE.split("query: |\n", 1)[1].split("index:", 1)[0]
    rendered = render(query, table)
    assert "maxspan=/* tunable: AN1314.TimeWindow.open_to_spawn */ 5m" in rendered
    assert '("winword.exe", "excel.exe") and' in rendered
    assert '("?:\\\\Users\\\\*\\\\Downloads\\\\*", "say \\"hi\\"")' in rendered
    assert render(rendered, table) == rendered
    assert not list(problems(rendered, table))
    parser.parse(rendered)  # still EQL


def test_long_lists_wrap_under_the_marker_line() -> None:
    from deployer.rules.tunables import Tunable, literal

    text = literal(Tunable("A.L", tuple(f"process-{i:02d}.exe" for i in range(20)), 1), 4)
    lines = text.split("\n")
    assert lines[0] == "(" and lines[-1] == "    )"
    assert all(line.startswith("      ") and len(line) <= 110 for line in lines[1:-1])


def test_problems_name_unknown_malformed_wrong_kind_and_stale(tmp_path: Path) -> None:
    table = load_tunables(_repo(tmp_path) / "tunables.yaml")
    query = (
        "sequence with maxspan=/* tunable: AN1314.HighRiskParents */ 5m "
        '[a where b in /* tunable: AN1314.Nope */ ("x")] [a where c : /* tunable: AN1314.UserPaths */ d] '
        '[a where e in /* tunable: AN1314.HighRiskParents */ ("excel.exe", "winword.exe")]'
    )
    messages = [m for _o, m, _h in problems(query, table)]
    assert "is a list in the tunables file" in messages[0]
    assert "'AN1314.Nope' is not defined" in messages[1]
    assert "marks no literal" in messages[2]
    assert "differs from the tunables file (line 4)" in messages[3]  # order matters


def test_validate_reports_a_stale_literal_at_its_marker(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    config = load_config(repo / "dac.yaml")
    findings = [f for f in validate([repo / "rules"], config) if f.code == "tunables"]
    assert [(f.line, f.column) for f in findings] == [(8, 25), (9, 34), (10, 19)]
    assert "AN1314.TimeWindow.open_to_spawn" in findings[0].message
    assert "dac tunables --write" in (findings[0].hint or "")


def test_validate_without_a_tunables_file_reports_marked_rules(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "dac.yaml").write_text("validation: {}\n", encoding="utf-8")
    findings = [f for f in validate([repo / "rules"], load_config(repo / "dac.yaml")) if f.code == "tunables"]
    assert len(findings) == 1 and "no tunables file is configured" in findings[0].message


def test_render_file_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    table = load_tunables(repo / "tunables.yaml")
    rule = load_rule_files([repo / "rules"]).rules[0]
    new = render_file(rule.source, rule.data["query"], rule.query_position, table)
    assert new is not None
    assert new.split("query: |")[0] == RULE.split("query: |")[0]
    assert new.split("index:")[1] == RULE.split("index:")[1]
    (repo / "rules" / "r.yaml").write_text(new, encoding="utf-8")
    again = load_rule_files([repo / "rules"]).rules[0]
    assert again.data["query"] == render(rule.data["query"], table)
    assert render_file(again.source, again.data["query"], again.query_position, table) is None


def test_cli_checks_then_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _repo(tmp_path)
    monkeypatch.chdir(repo)
    runner = CliRunner()
    stale = runner.invoke(main, ["tunables", "rules"])
    assert stale.exit_code == 1, stale.output
    assert "differs from the tunables file" in stale.output
    assert "AN1314.HighRiskParents [ATT&CK] (tunables.yaml:4): t-tunable" in stale.output
    written = runner.invoke(main, ["tunables", "rules", "--write"])
    assert written.exit_code == 0, written.output
    assert "rendered" in written.output
    assert runner.invoke(main, ["tunables", "rules"]).exit_code == 0
    (repo / "dac.yaml").write_text("validation: {}\n", encoding="utf-8")
    assert runner.invoke(main, ["tunables", "rules"]).exit_code == 2


def test_repository_queries_are_rendered_from_the_tunables_file() -> None:
    config = load_config(REPO / "dac.yaml")
    assert config.validation.tunables == (REPO / "tunables.yaml").resolve()
    table = load_tunables(config.validation.tunables)
    used: set[str] = set()
    for rule in load_rule_files([REPO / "detections"]).rules:
        query = rule.data["query"]
        assert not list(problems(query, table)), rule.rule_id
        used |= {o.name for o in find(query)}
    assert used == set(table), f"tunables no rule uses: {sorted(set(table) - used)}"
    for analytic in ("AN1314", "AN0819", "AN0820", "AN0821"):
        assert any(name.startswith(f"{analytic}.TimeWindow") for name in used), analytic


def test_every_attack_tunable_element_of_the_content_analytics_is_configured() -> None:
    """Each analytic's own tunable elements live in tunables.yaml or, for allow-lists, in an exception
    list tagged with the element's name; QuarantineRequired is documented as LaunchPaths."""
    from deployer.exceptions.loader import load_catalogue
    from deployer.rules import attack

    table = load_tunables(REPO / "tunables.yaml")
    elements = {tuple(name.split(".")[:2]) for name in table}
    catalogue, findings = load_catalogue([REPO / "detections"])
    assert not findings
    tags = {
        tag
        for path in (REPO / "detections" / "exceptions").glob("*.yaml")
        for tag in yaml.safe_load(path.read_text(encoding="utf-8")).get("tags", [])
    }
    assert catalogue is not None
    text = (REPO / "tunables.yaml").read_text(encoding="utf-8")
    for analytic in ("AN1314", "AN0819", "AN0820", "AN0821"):
        for element in attack.table().analytics[analytic].mutable:
            if element.endswith("AllowList"):
                assert element in tags, f"{analytic}.{element}: no exception list tagged {element}"
            elif element == "QuarantineRequired":
                assert "QuarantineRequired" in text
            else:
                assert (analytic, element) in elements, f"{analytic}.{element} is not in tunables.yaml"
