"""Contract tests: `dac export` / `dac import` round trips back to rule files with no plan changes."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from kibana_contract_fixtures import write_rules

from deployer.config import Config
from deployer.rules.findings import ERROR
from deployer.rules.validate import validate


def test_export_validate_plan_round_trip_shows_no_changes(kibana, env, dac, tmp_path: Path):
    rules_dir = write_rules(tmp_path, 12)
    assert dac("deploy", str(rules_dir), env=env).exit_code == 0

    out = tmp_path / "exported"
    run = dac("export", "--owned", "--out", str(out), env=env)
    assert run.exit_code == 0, run.stderr
    files = sorted(out.glob("*.yaml"))
    assert len(files) == 12
    doc = yaml.safe_load(files[0].read_text())
    assert "id" not in doc and "revision" not in doc and "created_at" not in doc and "rule_source" not in doc
    assert "managed-by:dac" not in doc["tags"]
    assert doc["metadata"]["implements"] == ["T1059"]
    assert doc["metadata"]["platforms"] == ["windows"]

    errors = [f for f in validate([out], Config(root=tmp_path)) if f.severity == ERROR]
    assert errors == []

    kibana.reset_counts()
    plan = dac("plan", str(out), env=env)
    assert plan.exit_code == 0, plan.stdout
    assert "No changes" in plan.stdout
    deploy = dac("deploy", str(out), env=env)
    assert deploy.exit_code == 0 and kibana.writes == 0


def test_export_all_includes_foreign_rules_with_best_effort_metadata(kibana, env, dac, tmp_path: Path):
    kibana.seed(
        {
            "rule_id": "ui-made",
            "name": "Made in the UI",
            "description": "d",
            "type": "eql",
            "language": "eql",
            "query": 'process where process.name == "a.exe"',
            "index": ["logs-*"],
            "severity": "low",
            "risk_score": 5,
            "threat": [
                {
                    "framework": "MITRE ATT&CK",
                    "tactic": {
                        "id": "TA0002",
                        "name": "Execution",
                        "reference": "https://attack.mitre.org/tactics/TA0002/",
                    },
                    "technique": [
                        {
                            "id": "T1204",
                            "name": "User Execution",
                            "reference": "https://attack.mitre.org/techniques/T1204/",
                            "subtechnique": [
                                {
                                    "id": "T1204.002",
                                    "name": "Malicious File",
                                    "reference": "https://attack.mitre.org/techniques/T1204/002/",
                                }
                            ],
                        }
                    ],
                }
            ],
        }
    )
    owned = dac("export", env=env)
    assert owned.exit_code == 0 and owned.stdout == ""
    every = dac("export", "--all", env=env)
    assert every.exit_code == 0
    doc = yaml.safe_load(every.stdout)
    assert doc["rule_id"] == "ui-made"
    assert doc["metadata"] == {"implements": ["T1204.002"], "maturity": "experimental"}
    assert "metadata.platforms" in every.stderr


def test_import_converts_a_kibana_export_offline(kibana, env, dac, tmp_path: Path):
    rules_dir = write_rules(tmp_path, 3)
    assert dac("deploy", str(rules_dir), env=env).exit_code == 0
    # Take a real export file from the contract server (rules + the export details line).
    import requests

    resp = requests.post(
        f"{kibana.url}/api/detection_engine/rules/_export",
        headers={
            "kbn-xsrf": "x",
            "elastic-api-version": "2023-10-31",
            "Authorization": f"ApiKey {env['KIBANA_API_KEY']}",
        },
        timeout=10,
    )
    assert resp.status_code == 200
    ndjson = tmp_path / "rules_export.ndjson"
    ndjson.write_text(resp.text, encoding="utf-8")
    assert "exported_count" in resp.text.splitlines()[-1]

    out = tmp_path / "imported"
    run = dac("import", str(ndjson), "--out", str(out))
    assert run.exit_code == 0, run.stderr
    assert len(list(out.glob("*.yaml"))) == 3
    assert [f for f in validate([out], Config(root=tmp_path)) if f.severity == ERROR] == []
    plan = dac("plan", str(out), env=env)
    assert plan.exit_code == 0, plan.stdout

    bad = tmp_path / "bad.ndjson"
    bad.write_text(json.dumps({"exported_count": 0}) + "\n", encoding="utf-8")
    none = dac("import", str(bad))
    assert none.exit_code == 1 and "no rules found" in none.stderr
