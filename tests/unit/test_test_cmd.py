"""`dac test`: pass/fail table, diffs on a wrong expectation, JSON and JUnit output, exit codes."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployer.cli import main

DATA = Path(__file__).resolve().parents[1] / "data" / "testing"
RULES = DATA / "rules"


def _test(*args: str):  # noqa: ANN202
    return CliRunner().invoke(main, ["test", *args])


def test_all_pass_exits_zero_with_a_table() -> None:
    result = _test(str(RULES))
    assert result.exit_code == 0, result.output
    out = result.stdout
    for rule_id in ("t-app-write-spawn", "t-child-network", "t-chain", "t-single"):
        assert rule_id in out
    assert "8 tests in 4 rules: 8 passed, 0 failed, 0 errors" in out
    assert "FAIL" not in out


def test_wrong_expectation_fails_with_a_useful_diff() -> None:
    result = _test(str(DATA / "wrong"))
    assert result.exit_code == 1
    out = result.stdout
    assert "FAIL t-wrong :: names the wrong event" in out
    assert "expected but not matched:" in out and "- [e1]" in out
    assert "matched but not expected:" in out and "+ [e2]" in out
    assert "FAIL t-wrong :: expects silence but mshta starts" in out
    assert "expected no match, got 1" in out
    assert "ERROR t-wrong :: points at a missing file" in out
    assert "events file not found" in out
    assert "3 tests in 1 rules: 0 passed, 2 failed, 1 errors" in out


def test_json_format(tmp_path: Path) -> None:
    result = _test("--format", "json", str(DATA / "wrong"))
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["summary"]["tests"] == 3
    assert doc["summary"]["failed"] == 2
    first = doc["results"][0]
    assert first["rule_id"] == "t-wrong"
    assert first["status"] == "fail"
    assert first["expected"] == [["e1"]]
    assert first["actual"] == [["e2"]]
    assert set(first) >= {"rule_id", "name", "status", "expected", "actual", "duration", "message"}


def test_junit_file_parses_back(tmp_path: Path) -> None:
    out = tmp_path / "junit.xml"
    result = _test("--junit", str(out), str(RULES), str(DATA / "wrong"))
    assert result.exit_code == 1
    root = ET.parse(out).getroot()
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"t-app-write-spawn", "t-child-network", "t-chain", "t-single", "t-wrong"}
    assert suites["t-wrong"].get("failures") == "2"
    assert suites["t-wrong"].get("errors") == "1"
    assert suites["t-chain"].get("failures") == "0"
    assert len(suites["t-chain"].findall("testcase")) == 2


def test_rule_over_alerts_evaluated_through_its_dependencies() -> None:
    # Only the rule over alerts is named; its dependencies are resolved from the same directory.
    result = _test(
        "--format",
        "json",
        str(RULES / "chain.yaml"),
        str(RULES / "app_write_spawn.yaml"),
        str(RULES / "child_network.yaml"),
    )
    assert result.exit_code == 0, result.output
    chain = [r for r in json.loads(result.stdout)["results"] if r["rule_id"] == "t-chain"]
    assert [r["status"] for r in chain] == ["pass", "pass"]
    assert chain[0]["actual"] == [["e2", "e3"]]


def test_missing_dependency_is_a_test_error() -> None:
    result = _test("--format", "json", str(DATA / "missing_dep"))
    assert result.exit_code == 1
    (res,) = json.loads(result.stdout)["results"]
    assert res["status"] == "error"
    assert "t-nowhere" in res["message"]


def test_cycle_is_a_test_error() -> None:
    result = _test("--format", "json", str(DATA / "cycle"))
    assert result.exit_code == 1
    results = json.loads(result.stdout)["results"]
    assert {r["status"] for r in results} == {"error"}
    assert all("dependency cycle" in r["message"] for r in results)


def test_dependency_outside_the_paths_comes_from_detections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(RULES, tmp_path / "detections")
    monkeypatch.chdir(tmp_path)
    result = _test("--format", "json", "detections/chain.yaml")
    assert result.exit_code == 0, result.output
    assert {r["rule_id"] for r in json.loads(result.stdout)["results"]} == {"t-chain"}


def test_default_path_is_detections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(RULES, tmp_path / "detections")
    monkeypatch.chdir(tmp_path)
    result = _test()
    assert result.exit_code == 0, result.output
    assert "8 passed" in result.stdout


def test_usage_errors_exit_two(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _test("/no/such/path").exit_code == 2
    assert _test("--format", "xml", str(RULES)).exit_code == 2
    monkeypatch.chdir(tmp_path)
    assert _test().exit_code == 2  # no detections/ here


def test_unloadable_rule_file_fails_the_run(tmp_path: Path) -> None:
    shutil.copytree(RULES, tmp_path / "rules")
    (tmp_path / "rules" / "broken.yaml").write_text("rule_id: [unclosed\n")
    result = _test(str(tmp_path / "rules"))
    assert result.exit_code == 1
    assert "broken.yaml:2:1:" in result.stdout and "invalid YAML" in result.stdout
    assert "1 rule files not loaded" in result.stdout


def test_duplicate_rule_id_is_reported(tmp_path: Path) -> None:
    shutil.copytree(RULES, tmp_path / "rules")
    shutil.copy(tmp_path / "rules" / "single.yaml", tmp_path / "rules" / "single_copy.yaml")
    result = _test(str(tmp_path / "rules"))
    assert result.exit_code == 1
    assert "duplicate rule_id 't-single'" in result.stdout


def test_github_annotations_point_at_the_test_entry() -> None:
    result = _test("--format", "github", str(DATA / "wrong"))
    assert result.exit_code == 1
    lines = [line for line in result.stdout.splitlines() if line.startswith("::error ")]
    assert len(lines) == 3
    path = str(DATA / "wrong" / "wrong_expectation.yaml").replace(":", "%3A").replace(",", "%2C")
    assert lines[0].startswith(f"::error file={path},line=16,col=7,title=dac test fail%3A t-wrong::")
    assert "::names the wrong event: expected but not matched:%0A  - [e1]" in lines[0]


def test_a_rule_that_cannot_be_evaluated_errors_its_tests_and_the_others_run(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    text = (rules / "single.yaml").read_text()
    (rules / "unsupported.yaml").write_text(
        text.replace("rule_id: t-single", "rule_id: t-unsupported").replace(
            'process.name : "MSHTA.EXE"', 'process.name regex "a~b"'
        )
    )
    result = _test(str(rules))
    # Contract: every other rule's tests run and pass; the refused rule's tests are errors naming
    # the construct and its position in the rule file; the exit is 1.
    assert result.exit_code == 1
    out = result.stdout
    assert "10 tests in 5 rules: 8 passed, 0 failed, 2 errors" in out
    assert "ERROR t-unsupported :: mshta starts" in out
    doc = json.loads(_test("--format", "json", str(rules)).stdout)
    errors = [r for r in doc["results"] if r["status"] == "error"]
    assert {r["rule_id"] for r in errors} == {"t-unsupported"}
    for r in errors:
        assert (
            f"cannot be evaluated offline: {rules / 'unsupported.yaml'}:7:62: not supported offline"
            in r["message"]
        )
