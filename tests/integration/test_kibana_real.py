"""Integration tests against a real Kibana (docker-compose.yml, or any Kibana you point them at).

Set KIBANA_URL and credentials (KIBANA_API_KEY, or KIBANA_USERNAME/KIBANA_PASSWORD); optional
KIBANA_CA_CERT / KIBANA_INSECURE. Each test run works in a fresh Kibana space it creates and
deletes, so it never touches existing rules.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from click.testing import CliRunner

pytestmark = [
    pytest.mark.kibana,
    pytest.mark.skipif(
        not os.environ.get("KIBANA_URL"),
        reason="KIBANA_URL is not set: no real Kibana to test against (see docker-compose.yml and docs/deploy.md)",
    ),
]


def _session() -> requests.Session:
    s = requests.Session()
    key = os.environ.get("KIBANA_API_KEY")
    if key:
        s.headers["Authorization"] = f"ApiKey {key}"
    else:
        s.auth = (os.environ.get("KIBANA_USERNAME", ""), os.environ.get("KIBANA_PASSWORD", ""))
    s.headers.update({"kbn-xsrf": "dac-tests", "elastic-api-version": "2023-10-31"})
    if os.environ.get("KIBANA_INSECURE", "").lower() in ("1", "true"):
        s.verify = False
    elif os.environ.get("KIBANA_CA_CERT"):
        s.verify = os.environ["KIBANA_CA_CERT"]
    return s


@pytest.fixture(scope="module")
def space() -> str:
    """A fresh Kibana space for this module, deleted afterwards."""
    url = os.environ["KIBANA_URL"].rstrip("/")
    space_id = f"dac-it-{uuid.uuid4().hex[:8]}"
    with _session() as s:
        resp = s.post(f"{url}/api/spaces/space", json={"id": space_id, "name": space_id}, timeout=30)
        assert resp.status_code == 200, resp.text
        yield space_id
        s.delete(f"{url}/api/spaces/space/{space_id}", timeout=60)


def _rule(i: int, severity: str = "medium") -> str:
    return f"""\
rule_id: dac-it-rule-{i:03d}
name: dac integration rule {i:03d}
description: Created by the dac integration tests.
type: eql
language: eql
query: |
  sequence by process.entity_id with maxspan=1m
    [process where event.type == "start" and process.name == "it{i:03d}.exe"]
    [network where event.type == "connection"]
index:
  - logs-endpoint.events.*
severity: {severity}
risk_score: 47
tags:
  - dac-integration
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
enabled: false
metadata:
  implements: [T1059]
  platforms: [windows]
  maturity: experimental
"""


def _dac(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str):
    from deployer.cli import main

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def test_kibana_has_an_encryption_key_and_a_supported_version():
    from deployer.targets.config import resolve_target
    from deployer.targets.kibana import client_from_config

    client = client_from_config(resolve_target(None, env=os.environ))
    try:
        version = client.check_version()
    finally:
        client.close()
    assert version
    with _session() as s:
        priv = s.get(
            f"{os.environ['KIBANA_URL'].rstrip('/')}/api/detection_engine/privileges", timeout=30
        ).json()
    assert priv.get("has_encryption_key") is True, "set xpack.encryptedSavedObjects.encryptionKey in Kibana"


def test_deploy_plan_update_prune_export_round_trip(
    space: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    rules = tmp_path / "detections" / "windows"
    rules.mkdir(parents=True)
    for i in range(25):
        (rules / f"r{i:03d}.yaml").write_text(_rule(i), encoding="utf-8")

    first = _dac(tmp_path, monkeypatch, "deploy", "detections", "--space", space, "--format", "json")
    assert first.exit_code == 0, first.output
    assert yaml.safe_load(first.stdout)["summary"] == {"ok": 25, "failed": 0}

    again = _dac(tmp_path, monkeypatch, "deploy", "detections", "--space", space, "--format", "json")
    assert again.exit_code == 0, again.output
    assert yaml.safe_load(again.stdout)["results"] == []  # nothing written the second time

    plan = _dac(tmp_path, monkeypatch, "plan", "detections", "--space", space)
    assert plan.exit_code == 0, plan.output

    (rules / "r003.yaml").write_text(_rule(3, severity="high"), encoding="utf-8")
    (rules / "r024.yaml").unlink()
    pending = _dac(
        tmp_path, monkeypatch, "plan", "detections", "--space", space, "--prune", "--format", "json"
    )
    assert pending.exit_code == 3, pending.output
    summary = yaml.safe_load(pending.stdout)["summary"]
    assert (summary["update"], summary["delete"]) == (1, 1)
    applied = _dac(tmp_path, monkeypatch, "deploy", "detections", "--space", space, "--prune")
    assert applied.exit_code == 0, applied.output
    assert _dac(tmp_path, monkeypatch, "plan", "detections", "--space", space, "--prune").exit_code == 0

    out = tmp_path / "exported"
    exported = _dac(tmp_path, monkeypatch, "export", "--space", space, "--out", str(out))
    assert exported.exit_code == 0, exported.output
    assert len(list(out.glob("*.yaml"))) == 24
    round_trip = _dac(tmp_path, monkeypatch, "plan", str(out), "--space", space)
    assert round_trip.exit_code == 0, round_trip.output


def test_value_list_create_is_create_if_absent(space: str):
    # The deploy lock rests on this: a second create of the same value-list id is refused (409).
    url = f"{os.environ['KIBANA_URL'].rstrip('/')}/s/{space}"
    body = {"id": "dac-it-lock-probe", "name": "probe", "description": "probe", "type": "keyword"}
    with _session() as s:
        s.post(f"{url}/api/lists/index", timeout=30)  # 200, or 409 when it exists
        first = s.post(f"{url}/api/lists", json=body, timeout=30)
        second = s.post(f"{url}/api/lists", json=body, timeout=30)
        s.delete(f"{url}/api/lists", params={"id": "dac-it-lock-probe"}, timeout=30)
    assert first.status_code == 200, first.text
    assert second.status_code == 409, second.text


def test_saved_plan_applies_once_and_refuses_when_kibana_moved(
    space: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    rules = tmp_path / "detections" / "windows"
    rules.mkdir(parents=True)
    for i in range(100, 103):
        (rules / f"r{i:03d}.yaml").write_text(_rule(i), encoding="utf-8")
    saved = _dac(tmp_path, monkeypatch, "plan", "detections", "--space", space, "--out", "plan.json")
    assert saved.exit_code == 3, saved.output
    applied = _dac(tmp_path, monkeypatch, "deploy", "--plan", "plan.json", "--space", space)
    assert applied.exit_code == 0, applied.output
    assert _dac(tmp_path, monkeypatch, "plan", "detections", "--space", space).exit_code == 0
    twice = _dac(tmp_path, monkeypatch, "deploy", "--plan", "plan.json", "--space", space)
    assert twice.exit_code == 1
    assert "the plan creates it, but it now exists in the target" in twice.output

    (rules / "r101.yaml").write_text(_rule(101, severity="high"), encoding="utf-8")
    assert (
        _dac(tmp_path, monkeypatch, "plan", "detections", "--space", space, "--out", "plan.json").exit_code
        == 3
    )
    url = f"{os.environ['KIBANA_URL'].rstrip('/')}/s/{space}/api/detection_engine/rules"
    with _session() as s:  # someone edits the rule in Kibana after the review
        resp = s.patch(url, json={"rule_id": "dac-it-rule-101", "description": "edited by hand"}, timeout=30)
        assert resp.status_code == 200, resp.text
    stale = _dac(tmp_path, monkeypatch, "deploy", "--plan", "plan.json", "--space", space)
    assert stale.exit_code == 1
    assert "rule dac-it-rule-101: changed in the target since the plan (revision" in stale.output


_LIST = """\
list_id: dac-it-allow
name: dac integration allow-list
description: Created by the dac integration tests.
items:
  - item_id: dac-it-allow-admin
    name: admin
    description: the admin's maintenance runs
    entries:
      - {field: user.name, type: match, operator: included, value: admin}
    comments: [{comment: created by the integration tests}]
  - item_id: dac-it-allow-updater
    name: updater path
    description: the updater
    expire_time: "2099-01-01T00:00:00Z"
    entries:
      - {field: process.executable, type: wildcard, operator: included, value: 'C:\\\\Program Files\\\\Updater\\\\*'}
"""


def test_exception_lists_deploy_twice_prune_and_round_trip(
    space: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    rules = tmp_path / "detections" / "windows"
    rules.mkdir(parents=True)
    (rules / "r100.yaml").write_text(
        _rule(100).replace("severity:", "exceptions_list:\n  - list_id: dac-it-allow\nseverity:", 1), encoding="utf-8"
    )
    (tmp_path / "detections" / "exceptions").mkdir()
    (tmp_path / "detections" / "exceptions" / "allow.yaml").write_text(_LIST, encoding="utf-8")

    first = _dac(tmp_path, monkeypatch, "deploy", "detections", "--space", space, "--format", "json")
    assert first.exit_code == 0, first.output
    assert yaml.safe_load(first.stdout)["summary"] == {"ok": 4, "failed": 0}
    again = _dac(tmp_path, monkeypatch, "deploy", "detections", "--space", space, "--format", "json")
    assert again.exit_code == 0, again.output
    assert yaml.safe_load(again.stdout)["results"] == []  # Kibana's stored forms compare equal

    out = tmp_path / "exported"
    exported = _dac(tmp_path, monkeypatch, "export", "--space", space, "--out", str(out))
    assert exported.exit_code == 0, exported.output
    assert (out / "exceptions").is_dir()
    assert _dac(tmp_path, monkeypatch, "plan", str(out), "--space", space).exit_code == 0

    (tmp_path / "detections" / "exceptions" / "allow.yaml").unlink()
    (rules / "r100.yaml").write_text(_rule(100), encoding="utf-8")
    pruned = _dac(tmp_path, monkeypatch, "deploy", "detections", "--space", space, "--prune", "--format", "json")
    assert pruned.exit_code == 0, pruned.output
    with _session() as s:
        gone = s.get(
            f"{os.environ['KIBANA_URL'].rstrip('/')}/s/{space}/api/exception_lists",
            params={"list_id": "dac-it-allow", "namespace_type": "single"},
            timeout=30,
        )
    assert gone.status_code == 404
