"""ATT&CK validation against the generated v18.1 table: threat and metadata.implements."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deployer.config import Config, ValidationConfig
from deployer.rules import attack
from deployer.rules.findings import ERROR, WARNING, Finding
from deployer.rules.validate import validate

VALID = Path(__file__).resolve().parents[1] / "data" / "rules" / "valid"
SAMPLE = "office_child_network.yaml"


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    shutil.copytree(VALID, tmp_path / "detections")
    return tmp_path / "detections"


def _run(rules_dir: Path, old: str, new: str) -> list[Finding]:
    path = rules_dir / SAMPLE
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    config = Config(root=rules_dir.parent, validation=ValidationConfig(extra_fields=None))
    return [f for f in validate([rules_dir], config) if f.code == "attack-id"]


def test_table_holds_v18_1_facts() -> None:
    table = attack.table()
    assert table.version == "18.1"
    assert list(table.tactics)[:3] == ["TA0043", "TA0042", "TA0001"]  # matrix order
    assert table.analytics["AN1314"].strategy == "DET0478"
    assert table.strategies["DET0478"].technique == "T1204"
    assert table.strategies["DET0294"].analytics == ("AN0819", "AN0820", "AN0821")
    assert table.analytics["AN0820"].platforms == ("macOS",)
    assert table.techniques["T1086"].revoked_by == "T1059.001"
    assert table.techniques["T1204.002"].parent == "T1204"
    assert "TimeWindow" in table.analytics["AN1314"].mutable


def test_revoked_technique_in_threat_names_its_replacement(rules_dir: Path) -> None:
    findings = _run(
        rules_dir,
        "from: now-9m",
        "  - framework: MITRE ATT&CK\n"
        '    tactic: {id: TA0002, name: Execution, reference: "https://attack.mitre.org/tactics/TA0002/"}\n'
        "    technique:\n"
        '      - {id: T1086, name: PowerShell, reference: "https://attack.mitre.org/techniques/T1086/"}\n'
        "from: now-9m",
    )
    assert [(f.severity, f.message) for f in findings] == [
        (
            WARNING,
            "threat[1].technique[0].id: T1086 (PowerShell) is revoked in ATT&CK v18.1, "
            "replaced by T1059.001 (PowerShell)",
        )
    ]
    assert findings[0].hint == "map T1059.001 instead"


def test_revoked_technique_in_implements(rules_dir: Path) -> None:
    findings = _run(rules_dir, "[AN1314, DET0478, T1204.002]", "[AN1314, DET0478, T1204.002, T1086]")
    assert len(findings) == 1
    assert findings[0].severity == WARNING
    assert (
        "T1086 (PowerShell) is revoked in ATT&CK v18.1, replaced by T1059.001 (PowerShell)"
        in findings[0].message
    )


def test_analytic_of_another_strategy(rules_dir: Path) -> None:
    findings = _run(rules_dir, "[AN1314, DET0478, T1204.002]", "[AN1314, DET0294, T1204.002]")
    assert [f.severity for f in findings] == [ERROR]
    assert "AN1314 belongs to detection strategy DET0478" in findings[0].message
    assert "not DET0294" in findings[0].message


def test_analytic_platforms_must_include_the_rules(rules_dir: Path) -> None:
    findings = _run(rules_dir, "platforms: [windows]", "platforms: [windows, linux]")
    assert [f.severity for f in findings] == [ERROR]
    assert "AN1314 is an analytic for Windows, but the rule runs on linux" in findings[0].message
    assert "AN1315 (Linux)" in (findings[0].hint or "")


def test_strategy_technique_must_be_in_threat(rules_dir: Path) -> None:
    # DET0294 detects T1204.002, which the sample maps; DET0001-style strategies of other
    # techniques are reported with the technique they detect.
    other = next(s for s in attack.table().strategies.values() if not s.technique.startswith("T1204"))
    findings = _run(rules_dir, "[AN1314, DET0478, T1204.002]", f"[AN1314, DET0478, {other.id}, T1204.002]")
    messages = [f.message for f in findings if f.severity == ERROR]
    assert any(
        f"{other.id} detects {other.technique}" in m and "which threat does not map" in m for m in messages
    )


def test_unknown_ids_in_implements(rules_dir: Path) -> None:
    findings = _run(
        rules_dir, "[AN1314, DET0478, T1204.002]", "[AN9999, DET0478, DET9999, T1204.002, TA0099]"
    )
    assert sorted(f.message.split(": ", 1)[1] for f in findings) == [
        "AN9999 is not an analytic in ATT&CK v18.1",
        "DET9999 is not a detection strategy in ATT&CK v18.1",
        "TA0099 is not a tactic in ATT&CK v18.1",
    ]


def test_subtechnique_in_the_technique_slot(rules_dir: Path) -> None:
    findings = _run(
        rules_dir,
        "- id: T1204\n        name: User Execution",
        "- id: T1204.002\n        name: Malicious File",
    )
    assert any("T1204.002 is a sub-technique of T1204" in f.message and f.severity == ERROR for f in findings)
