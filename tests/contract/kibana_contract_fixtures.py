"""Shared values and rule-file generators for the Kibana contract tests."""

from __future__ import annotations

from pathlib import Path

# An API key as `id:key`; what a user exports is its base64 form. Tests grep output for both.
RAW_API_KEY = "dacTestKeyId:s3cr3t-Contract-K3y-9f2b"
PASSWORD = "Sup3r-Secret-Pa55word"


def rule_yaml(
    i: int, *, prefix: str = "gen", enabled: bool = False, severity: str = "medium", extra: str = ""
) -> str:
    """Return a valid rule file for rule number i."""
    return f"""\
rule_id: {prefix}-rule-{i:04d}
name: Generated rule {prefix} {i:04d}
description: Generated for the Kibana contract tests.
type: eql
language: eql
query: |
  sequence by process.entity_id with maxspan=1m
    [process where event.type == "start" and process.name == "tool{i:04d}.exe"]
    [network where event.type == "connection"]
index:
  - logs-endpoint.events.*
severity: {severity}
risk_score: 47
tags:
  - generated
threat:
  - framework: MITRE ATT&CK
    tactic:
      id: TA0002
      name: Execution
      reference: https://attack.mitre.org/tactics/TA0002/
    technique:
      - id: T1059
        name: Command and Scripting Interpreter
        reference: https://attack.mitre.org/techniques/T1059/
enabled: {str(enabled).lower()}
{extra}metadata:
  implements: [T1059]
  platforms: [windows]
  maturity: experimental
  owner: detection-engineering
"""


def write_rules(root: Path, n: int, **kw: object) -> Path:
    """Write n rule files under root/detections/windows and return the detections directory."""
    d = root / "detections" / "windows"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (d / f"rule_{i:04d}.yaml").write_text(rule_yaml(i, **kw), encoding="utf-8")  # type: ignore[arg-type]
    return root / "detections"
