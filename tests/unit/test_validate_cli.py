"""``dac validate`` and ``dac list`` through the CLI: output formats and exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployer.cli import main

REPO = Path(__file__).resolve().parents[2]
VALID_DIR = REPO / "tests" / "data" / "rules" / "valid"
SAMPLE = "office_child_network.yaml"


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    """A small repository: dac.yaml, extra_fields.yaml and detections/ with the valid samples."""
    shutil.copytree(VALID_DIR, tmp_path / "detections")
    shutil.copy(REPO / "extra_fields.yaml", tmp_path / "extra_fields.yaml")
    (tmp_path / "dac.yaml").write_text(
        "validation:\n  max_maxspan: 10m\n  entity_keys: [process.entity_id, process.parent.entity_id]\n"
        "  extra_fields: extra_fields.yaml\n  fixture_exempt_maturities: [experimental]\ntargets: {}\n"
    )
    return tmp_path


def _invoke(repo: Path, *args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(main, [*args, "--config", str(repo / "dac.yaml")], catch_exceptions=False)
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    return result.exit_code, result.stdout, result.stderr


def _break(repo: Path, old: str, new: str, name: str = SAMPLE) -> Path:
    path = repo / "detections" / name
    path.write_text(path.read_text().replace(old, new, 1))
    return path


def test_clean_repository_exits_0(repo: Path) -> None:
    code, out, err = _invoke(repo, "validate", str(repo / "detections"))
    assert code == 0 and out == "" and "no problems found" in err


def test_default_path_is_detections_next_to_config(repo: Path) -> None:
    _break(repo, "risk_score: 73", "risk_score: 730")
    code, out, _ = _invoke(repo, "validate")
    assert code == 1 and "risk_score: must be at most 100" in out


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("rule_id: 0f5c", "rule_id: [0f5c", "invalid YAML"),
        ('event.type == "start"', 'event.type == "created"', "did you mean creation?"),
        ("sequence with maxspan=5m", "sequence", "sequence has no maxspan"),
        ("destination.port == 443", "destination.prot == 443", "unknown field 'destination.prot'"),
        ("destination.port == 443]", "destination.port == 443 adn true]", "unexpected name `adn`"),
    ],
)
def test_findings_exit_1_with_file_line_col(repo: Path, old: str, new: str, needle: str) -> None:
    path = _break(repo, old, new)
    code, out, _ = _invoke(repo, "validate", str(repo / "detections"))
    assert code == 1
    line = next(line for line in out.splitlines() if needle in line)
    assert line.startswith(f"{path}:")
    file_line, col = (int(x) for x in line[len(str(path)) + 1 :].split(":")[:2])
    assert file_line >= 1 and col >= 1


def test_non_utf8_empty_and_list_files(repo: Path) -> None:
    det = repo / "detections"
    (det / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (det / "empty.yaml").write_text("")
    (det / "list.yaml").write_text("- a\n- b\n")
    code, out, _ = _invoke(repo, "validate", str(det))
    assert code == 1
    assert f"{det / 'latin1.yaml'}:1:10: -: file is not valid UTF-8" in out
    assert f"{det / 'empty.yaml'}:1:1: -: file is empty" in out
    assert f"{det / 'list.yaml'}:1:1: -: top level is a list" in out


def test_json_format(repo: Path) -> None:
    path = _break(repo, 'event.type == "start"', 'event.type == "created"')
    code, out, _ = _invoke(repo, "validate", "--format", "json", str(repo / "detections"))
    assert code == 1
    items = json.loads(out)
    assert len(items) == 1
    item = items[0]
    assert {k: item[k] for k in ("path", "rule_id", "code", "severity")} == {
        "path": str(path),
        "rule_id": "0f5c1d2e-7a4b-4c3d-9e8f-112233445566",
        "code": "allowed-value",
        "severity": "error",
    }
    assert item["line"] == 11 and item["column"] == 34 and item["hint"] == "did you mean creation?"


def test_json_format_clean_is_empty_array(repo: Path) -> None:
    code, out, _ = _invoke(repo, "validate", "--format", "json", str(repo / "detections"))
    assert code == 0 and json.loads(out) == []


def test_github_format(repo: Path) -> None:
    path = _break(repo, "sequence with maxspan=5m", "sequence")
    code, out, _ = _invoke(repo, "validate", "--format", "github", str(repo / "detections"))
    assert code == 1
    assert out.startswith(f"::error file={path},line=10,col=3,title=sequence-maxspan::")


def test_warnings_alone_exit_0_unless_strict(repo: Path) -> None:
    _break(repo, "[AN1314, DET0478, T1204.002]", "[AN1314, DET0478, T1204.002, T1566.001]")
    code, out, _ = _invoke(repo, "validate", str(repo / "detections"))
    assert code == 0 and "warning:" in out
    code, _, _ = _invoke(repo, "validate", "--strict", str(repo / "detections"))
    assert code == 1


def test_nonexistent_path_exits_2(repo: Path) -> None:
    code, _, err = _invoke(repo, "validate", str(repo / "nope"))
    assert code == 2 and "does not exist" in err


def test_bad_config_exits_2_naming_file_and_line(repo: Path) -> None:
    (repo / "dac.yaml").write_text("validation:\n  max_maxspan: forever\n")
    code, _, err = _invoke(repo, "validate", str(repo / "detections"))
    assert code == 2 and f"{repo / 'dac.yaml'}:2:" in err and "max_maxspan" in err


def test_bad_extra_fields_exits_2(repo: Path) -> None:
    (repo / "extra_fields.yaml").write_text("process.Ext.x: {type: strng}\n")
    code, _, err = _invoke(repo, "validate", str(repo / "detections"))
    assert code == 2 and "extra_fields.yaml:1" in err and "unknown type 'strng'" in err


def test_list_text_and_json(repo: Path) -> None:
    code, out, _ = _invoke(repo, "list", str(repo / "detections"))
    assert code == 0
    assert out.splitlines()[0].startswith("0f5c1d2e-7a4b-4c3d-9e8f-112233445566\teql\tSample - Office")
    code, out, _ = _invoke(repo, "list", "--format", "json", str(repo / "detections"))
    rows = json.loads(out)
    assert code == 0 and [r["rule_id"] for r in rows] == [
        "0f5c1d2e-7a4b-4c3d-9e8f-112233445566",
        "sample-alerts-chain",
    ]
    assert rows[0]["implements"] == ["AN1314", "DET0478", "T1204.002"]
    assert rows[0]["type"] == "eql" and rows[0]["tags"] == ["Domain: Endpoint", "OS: Windows"]
    assert rows[0]["path"].endswith(SAMPLE)


def test_list_reports_unloadable_files_and_exits_1(repo: Path) -> None:
    (repo / "detections" / "broken.yaml").write_text("rule_id: [\n")
    code, out, err = _invoke(repo, "list", str(repo / "detections"))
    assert code == 1 and len(out.splitlines()) == 2 and "broken.yaml" in err


def test_list_nonexistent_path_exits_2(repo: Path) -> None:
    code, _, _ = _invoke(repo, "list", str(repo / "nope"))
    assert code == 2
