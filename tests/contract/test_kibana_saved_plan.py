"""Contract tests: saved plans (`dac plan --out`, `dac show`, `dac deploy --plan`) against the Kibana contract server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kibana_contract_fixtures import rule_yaml, write_rules


def _setup(kibana, env, dac, tmp_path: Path) -> tuple[Path, Path]:
    """Three deployed rules; then one edited, one added, one removed: a plan with each action."""
    rules_dir = write_rules(tmp_path, 3)
    assert dac("deploy", str(rules_dir), env=env).exit_code == 0
    win = rules_dir / "windows"
    (win / "rule_0001.yaml").write_text(rule_yaml(1, severity="high"), encoding="utf-8")
    (win / "rule_0005.yaml").write_text(rule_yaml(5), encoding="utf-8")
    (win / "rule_0002.yaml").unlink()
    plan_file = tmp_path / "plan.json"
    run = dac("plan", str(rules_dir), "--prune", "--out", str(plan_file), env=env)
    assert run.exit_code == 3, run.stdout + run.stderr
    assert plan_file.is_file()
    kibana.reset_counts()
    return rules_dir, plan_file


def test_plan_file_records_target_repository_bodies_and_observed_state(kibana, env, dac, tmp_path: Path):
    _, plan_file = _setup(kibana, env, dac, tmp_path)
    doc = json.loads(plan_file.read_text())
    assert doc["format"] == "dac-plan/1" and doc["dac_version"]
    assert doc["target"]["kind"] == "kibana" and doc["target"]["url"] == kibana.url
    assert doc["target"]["space"] is None
    files = doc["repository"]["files"]
    assert sorted(files) == [
        "detections/windows/rule_0000.yaml",
        "detections/windows/rule_0001.yaml",
        "detections/windows/rule_0005.yaml",
    ]
    assert all(v.startswith("sha256:") for v in files.values())
    assert doc["repository"]["digest"].startswith("sha256:")
    by_id = {c["id"]: c for c in doc["changes"]}
    assert {(c["id"], c["action"], c["kind"]) for c in doc["changes"]} == {
        ("gen-rule-0001", "update", "rule"),
        ("gen-rule-0005", "create", "rule"),
        ("gen-rule-0002", "delete", "rule"),
    }
    create, update, delete = by_id["gen-rule-0005"], by_id["gen-rule-0001"], by_id["gen-rule-0002"]
    assert create["observed"] is None and create["desired"]["rule_id"] == "gen-rule-0005"
    stored = kibana.rules()["gen-rule-0001"]
    assert update["observed"]["revision"] == stored["revision"] == 0
    assert update["observed"]["updated_at"] == stored["updated_at"]
    assert update["observed"]["id"] == stored["id"]
    assert update["desired"]["severity"] == "high"
    assert update["fields"] == [{"path": "severity", "before": "medium", "after": "high"}]
    assert delete["desired"] is None and delete["observed"]["id"] == kibana.rules()["gen-rule-0002"]["id"]
    text = plan_file.read_text()
    assert env["KIBANA_API_KEY"] not in text and "s3cr3t" not in text  # no secrets


def test_happy_path_plan_deploy_plan_shows_no_changes(kibana, env, dac, tmp_path: Path):
    rules_dir, plan_file = _setup(kibana, env, dac, tmp_path)
    run = dac("deploy", "--plan", str(plan_file), "--format", "json", env=env)
    assert run.exit_code == 0, run.stdout + run.stderr
    out = run.json()
    assert out["summary"] == {"ok": 3, "failed": 0}
    assert kibana.rules()["gen-rule-0001"]["severity"] == "high"
    assert "gen-rule-0005" in kibana.rules() and "gen-rule-0002" not in kibana.rules()
    again = dac("plan", str(rules_dir), "--prune", env=env)
    assert again.exit_code == 0, again.stdout
    assert "No changes" in again.stdout
    # The same plan applied twice: its creates exist now, its update's revision moved.
    kibana.reset_counts()
    twice = dac("deploy", "--plan", str(plan_file), env=env)
    assert twice.exit_code == 1
    assert "gen-rule-0005: the plan creates it, but it now exists" in twice.stderr
    assert kibana.writes == 0


def test_deploy_plan_applies_the_plans_bodies_not_the_working_tree(kibana, env, dac, tmp_path: Path):
    # A change in a file the plan did not read (a fixture) is not part of the digest.
    rules_dir, plan_file = _setup(kibana, env, dac, tmp_path)
    fixtures = rules_dir / "windows" / "fixtures"
    fixtures.mkdir()
    (fixtures / "x.yaml").write_text("not: a rule\n", encoding="utf-8")
    run = dac("deploy", "--plan", str(plan_file), env=env)
    assert run.exit_code == 0, run.stderr
    assert "Deployed: 3 ok, 0 failed." in run.stdout


def test_refuses_when_a_planned_rule_changed_in_kibana(kibana, env, dac, tmp_path: Path):
    _, plan_file = _setup(kibana, env, dac, tmp_path)
    kibana.edit("gen-rule-0001", description="edited in the Kibana UI")  # revision 0 -> 1
    kibana.reset_counts()
    run = dac("deploy", "--plan", str(plan_file), env=env)
    assert run.exit_code == 1
    assert "rule gen-rule-0001: changed in the target since the plan (revision 0 -> 1" in run.stderr
    assert "nothing was written" in run.stderr and "plan again" in run.stderr
    assert kibana.writes == 0
    assert kibana.rules()["gen-rule-0001"]["description"] == "edited in the Kibana UI"
    assert "gen-rule-0005" not in kibana.rules()


def test_refuses_when_a_rule_was_only_disabled_in_kibana(kibana, env, dac, tmp_path: Path):
    # Enabling/disabling does not move `revision`; `updated_at` does.
    _, plan_file = _setup(kibana, env, dac, tmp_path)
    stored = kibana.rules()["gen-rule-0002"]
    stored["enabled"] = True
    stored["updated_at"] = "2030-01-01T00:00:00.000Z"
    run = dac("deploy", "--plan", str(plan_file), env=env)
    assert run.exit_code == 1
    assert "rule gen-rule-0002: changed in the target since the plan (updated_at" in run.stderr
    assert kibana.writes == 0


def test_refuses_when_an_object_to_create_now_exists(kibana, env, dac, tmp_path: Path):
    _, plan_file = _setup(kibana, env, dac, tmp_path)
    kibana.seed(
        {
            "rule_id": "gen-rule-0005",
            "name": "Someone was faster",
            "description": "x",
            "type": "eql",
            "language": "eql",
            "query": "process where true",
            "index": ["logs-*"],
            "severity": "low",
            "risk_score": 1,
        }
    )
    kibana.reset_counts()
    run = dac("deploy", "--plan", str(plan_file), env=env)
    assert run.exit_code == 1
    assert "rule gen-rule-0005: the plan creates it, but it now exists in the target" in run.stderr
    assert kibana.writes == 0
    assert kibana.rules()["gen-rule-0005"]["name"] == "Someone was faster"


def test_refuses_when_the_repository_differs_from_the_digest(kibana, env, dac, tmp_path: Path):
    rules_dir, plan_file = _setup(kibana, env, dac, tmp_path)
    win = rules_dir / "windows"
    (win / "rule_0000.yaml").write_text(rule_yaml(0, severity="low"), encoding="utf-8")
    (win / "rule_0009.yaml").write_text(rule_yaml(9), encoding="utf-8")
    run = dac("deploy", "--plan", str(plan_file), env=env)
    assert run.exit_code == 1
    assert "the repository differs from the plan's digest (2 file(s)); nothing was written" in run.stderr
    assert "detections/windows/rule_0000.yaml: changed since the plan" in run.stderr
    assert "detections/windows/rule_0009.yaml: added since the plan" in run.stderr
    assert len(kibana.state.requests) == 0  # refused before the first request


def test_truncated_plan_file(kibana, env, dac, tmp_path: Path):
    _, plan_file = _setup(kibana, env, dac, tmp_path)
    text = plan_file.read_text()
    plan_file.write_text(text[: len(text) // 2])
    run = dac("deploy", "--plan", str(plan_file), env=env)
    assert run.exit_code == 1
    assert (
        "not valid JSON" in run.stderr and "truncated" in run.stderr and "nothing was written" in run.stderr
    )
    assert len(kibana.state.requests) == 0
    shown = dac("show", str(plan_file))
    assert shown.exit_code == 1 and "truncated" in shown.stderr


def test_hand_edited_plan_file(kibana, env, dac, tmp_path: Path):
    _, plan_file = _setup(kibana, env, dac, tmp_path)
    doc = json.loads(plan_file.read_text())
    for c in doc["changes"]:
        if c["id"] == "gen-rule-0001":
            c["desired"]["severity"] = "critical"
    plan_file.write_text(json.dumps(doc, indent=2))
    run = dac("deploy", "--plan", str(plan_file), env=env)
    assert run.exit_code == 1
    assert "integrity digest does not match" in run.stderr and "nothing was written" in run.stderr
    assert len(kibana.state.requests) == 0
    assert kibana.rules()["gen-rule-0001"]["severity"] == "medium"


def _reseal(doc: dict) -> str:
    from deployer.targets.saved_plan import SavedPlan

    return SavedPlan(doc).dumps()


def test_plan_from_another_dac_version(kibana, env, dac, tmp_path: Path):
    _, plan_file = _setup(kibana, env, dac, tmp_path)
    doc = json.loads(plan_file.read_text())
    doc["dac_version"] = "0.0.1"
    plan_file.write_text(_reseal(doc))
    run = dac("deploy", "--plan", str(plan_file), env=env)
    assert run.exit_code == 1
    assert "written by dac 0.0.1" in run.stderr and "nothing was written" in run.stderr
    assert len(kibana.state.requests) == 0


def test_plan_for_another_target(kibana, env, dac, tmp_path: Path):
    _, plan_file = _setup(kibana, env, dac, tmp_path)
    run = dac("deploy", "--plan", str(plan_file), "--space", "secops", env=env)
    assert run.exit_code == 1
    assert "made for another target (space default vs secops)" in run.stderr
    other = dac("deploy", "--plan", str(plan_file), env={**env, "KIBANA_URL": "http://127.0.0.1:9"})
    assert other.exit_code == 1 and "made for another target (URL" in other.stderr
    assert len(kibana.state.requests) == 0


def test_space_that_no_longer_exists(kibana, env, dac, tmp_path: Path):
    rules_dir = write_rules(tmp_path, 2)
    plan_file = tmp_path / "plan.json"
    assert dac("plan", str(rules_dir), "--space", "secops", "--out", str(plan_file), env=env).exit_code == 3
    kibana.state.spaces = {"default"}  # the secops space was deleted
    kibana.reset_counts()
    run = dac("deploy", "--plan", str(plan_file), "--space", "secops", env=env)
    assert run.exit_code == 2
    assert "Kibana space 'secops' does not exist" in run.stderr
    assert kibana.writes == 0 and kibana.rules("secops") == {}


def test_connection_drop_mid_apply_reports_what_was_applied(kibana, env, dac, tmp_path: Path, monkeypatch):
    monkeypatch.setattr("deployer.targets.http._sleep", lambda _s: None)
    rules_dir, plan_file = _setup(kibana, env, dac, tmp_path)
    # The import (create + update) goes through; every delete request loses its connection.
    kibana.fail(0, times=100, path_contains="/_bulk_action", drop=True)
    run = dac("deploy", "--plan", str(plan_file), "--format", "json", env=env)
    assert run.exit_code == 1
    out = run.json()
    results = {(r["rule_id"], r["action"]): r["ok"] for r in out["results"]}
    assert results == {
        ("gen-rule-0005", "create"): True,
        ("gen-rule-0001", "update"): True,
        ("gen-rule-0002", "delete"): False,
    }
    assert out["summary"] == {"ok": 2, "failed": 1}
    assert "run `dac plan` to see what remains" in run.stderr
    kibana.state.faults.clear()
    replan = dac("plan", str(rules_dir), "--prune", "--format", "json", env=env)
    assert replan.exit_code == 3
    assert [(c["action"], c["rule_id"]) for c in replan.json()["changes"]] == [("delete", "gen-rule-0002")]


def test_show_text_json_and_markdown(kibana, env, dac, tmp_path: Path):
    _, plan_file = _setup(kibana, env, dac, tmp_path)
    text = dac("show", str(plan_file))
    assert text.exit_code == 0
    assert "Plan for " in text.stdout and "repository digest sha256:" in text.stdout
    assert 'severity: "medium" -> "high"' in text.stdout
    assert "Plan: 1 to create, 1 to update, 1 to delete, 1 unchanged." in text.stdout
    as_json = dac("show", str(plan_file), "--format", "json")
    assert json.loads(as_json.stdout) == json.loads(plan_file.read_text())
    md = dac("show", str(plan_file), "--format", "markdown").stdout
    assert md.startswith("<!-- dac-plan -->\n")
    assert "**1 to create, 1 to update, 1 to delete**, 1 unchanged" in md
    assert "| ~ update | rule | `gen-rule-0001` | Generated rule gen 0001 | `severity` |" in md
    assert "<details><summary>~ <code>gen-rule-0001</code>" in md
    assert '| `severity` | `"medium"` | `"high"` |' in md
    live = dac("plan", "--prune", "--format", "markdown", env=env)
    assert live.exit_code == 3
    assert live.stdout.split("<sub>")[0] == md.split("<sub>")[0]


# ---------------------------------------------------------------- concurrency (two processes)

_REPO = Path(__file__).resolve().parents[2]


def _spawn(cwd: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    """Start `dac ARGS` as its own process (the package under test first on the path)."""
    full = {**os.environ, **env, "PYTHONPATH": str(_REPO)}
    full.pop("DAC_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-c", "from deployer.cli import main; main()", *args],
        cwd=cwd,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def test_two_deploys_of_the_same_plan_at_once_only_one_writes(kibana, env, dac, tmp_path: Path):
    _, plan_file = _setup(kibana, env, dac, tmp_path)
    # Hold every import for a while, so without the lock both runs would pass their checks first.
    kibana.fail(0, times=2, path_contains="/_import", delay=1.5)
    procs = [_spawn(tmp_path, env, "deploy", "--plan", str(plan_file)) for _ in range(2)]
    results = sorted((_finish(p) for p in procs), key=lambda r: r[0])
    (ok_code, ok_out, _), (lost_code, _, lost_err) = results
    assert (ok_code, lost_code) == (0, 1), results
    assert "Deployed: 3 ok, 0 failed." in ok_out
    assert "the target changed since the plan was made" in lost_err
    assert "rule gen-rule-0005: the plan creates it, but it now exists in the target" in lost_err
    assert kibana.count("POST", "/_import") == 1
    assert kibana.count("POST", "/_bulk_action") == 1
    assert kibana.state.value_lists.get("default") == {}  # the lock was released


def test_two_overlapping_plans_at_once_only_one_writes(kibana, env, tmp_path: Path):
    repos = []
    for name in ("a", "b"):
        repo = tmp_path / name
        write_rules(repo, 3)
        repos.append(repo)
    first = _finish(_spawn(repos[0], env, "deploy"))
    assert first[0] == 0, first
    win_a, win_b = (r / "detections" / "windows" for r in repos)
    (win_a / "rule_0001.yaml").write_text(rule_yaml(1, severity="high"), encoding="utf-8")
    (win_b / "rule_0001.yaml").write_text(rule_yaml(1, severity="low"), encoding="utf-8")
    (win_b / "rule_0007.yaml").write_text(rule_yaml(7), encoding="utf-8")
    for repo in repos:
        code, out, err = _finish(_spawn(repo, env, "plan", "--out", "plan.json"))
        assert code == 3, out + err
    kibana.reset_counts()
    kibana.fail(0, times=2, path_contains="/_import", delay=1.5)
    procs = [_spawn(repo, env, "deploy", "--plan", "plan.json") for repo in repos]
    results = [_finish(p) for p in procs]
    assert sorted(r[0] for r in results) == [0, 1], results
    winner = 0 if results[0][0] == 0 else 1
    assert (
        "rule gen-rule-0001: changed in the target since the plan (revision 0 -> 1" in results[1 - winner][2]
    )
    assert kibana.count("POST", "/_import") == 1
    assert kibana.rules()["gen-rule-0001"]["severity"] == ("high" if winner == 0 else "low")
    assert ("gen-rule-0007" in kibana.rules()) == (winner == 1)


def test_a_held_lock_makes_deploy_wait_then_give_up(kibana, env, dac, tmp_path: Path):
    _, plan_file = _setup(kibana, env, dac, tmp_path)
    kibana.state.list_indices.add("default")
    kibana.state.value_lists["default"] = {
        "dac-deploy-lock": {
            "id": "dac-deploy-lock",
            "meta": {
                "holder": "ci-runner:42",
                "acquired_at": "2030-01-01T00:00:00Z",
                "expires_at": "2999-01-01T00:00:00Z",
            },
        }
    }
    run = dac("deploy", "--plan", str(plan_file), "--lock-wait", "0", env=env)
    assert run.exit_code == 2
    assert (
        "another deploy holds the lock of this space (ci-runner:42 since 2030-01-01T00:00:00Z)" in run.stderr
    )
    assert kibana.writes == 0
    # A lock past its expiry (a crashed run) is taken over.
    kibana.state.value_lists["default"]["dac-deploy-lock"]["meta"]["expires_at"] = "2020-01-01T00:00:00Z"
    run = dac("deploy", "--plan", str(plan_file), "--lock-wait", "0", env=env)
    assert run.exit_code == 0, run.stderr
    assert kibana.state.value_lists["default"] == {}


# ---------------------------------------------------------------- exception lists in saved plans

EXCEPTION_LIST = """\
list_id: approved-tools
name: Approved tools
description: Tools the admins run on purpose
items:
  - item_id: tool-0001-admin
    name: tool0001 run by the admin
    description: scheduled maintenance
    entries:
      - {field: user.name, type: match, operator: included, value: admin}
"""


def _exceptions_repo(tmp_path: Path) -> Path:
    rules = write_rules(tmp_path, 2)
    ref = "exceptions_list:\n  - list_id: approved-tools\n"
    (rules / "windows" / "rule_0001.yaml").write_text(rule_yaml(1, extra=ref), encoding="utf-8")
    (rules / "exceptions").mkdir()
    (rules / "exceptions" / "approved.yaml").write_text(EXCEPTION_LIST, encoding="utf-8")
    return rules


def test_exception_lists_and_items_are_change_records_of_their_own_kind(kibana, env, dac, tmp_path: Path):
    rules = _exceptions_repo(tmp_path)
    assert dac("deploy", str(rules), env=env).exit_code == 0
    listing = rules / "exceptions" / "approved.yaml"
    listing.write_text(
        EXCEPTION_LIST.replace("scheduled maintenance", "nightly maintenance"), encoding="utf-8"
    )
    plan_file = tmp_path / "plan.json"
    run = dac("plan", str(rules), "--out", str(plan_file), env=env)
    assert run.exit_code == 3, run.stdout + run.stderr
    doc = json.loads(plan_file.read_text())
    assert "detections/exceptions/approved.yaml" in doc["repository"]["files"]
    (change,) = doc["changes"]
    assert (change["kind"], change["id"], change["action"]) == (
        "exception_item",
        "exception-item:tool-0001-admin",
        "update",
    )
    stored = kibana.state.exceptions.items[("default", "single")]["tool-0001-admin"]
    assert change["observed"]["_version"] == stored["_version"]
    md = dac("show", str(plan_file), "--format", "markdown").stdout
    assert "| ~ update | exception_item | `exception-item:tool-0001-admin` |" in md

    # Someone edits the item in Kibana: its _version moves, the plan is refused.
    stored["description"] = "edited in Kibana"
    stored["_version"] = kibana.state.exceptions.next_version()
    kibana.reset_counts()
    refused = dac("deploy", "--plan", str(plan_file), env=env)
    assert refused.exit_code == 1
    assert (
        "exception_item exception-item:tool-0001-admin: changed in the target since the plan (_version"
        in refused.stderr
    )
    assert kibana.writes == 0

    replanned = dac("plan", str(rules), "--out", str(plan_file), env=env)
    assert replanned.exit_code == 3
    applied = dac("deploy", "--plan", str(plan_file), env=env)
    assert applied.exit_code == 0, applied.stdout + applied.stderr
    item = kibana.state.exceptions.items[("default", "single")]["tool-0001-admin"]
    assert item["description"] == "nightly maintenance"
    assert dac("plan", str(rules), env=env).exit_code == 0


def test_an_exception_list_read_from_outside_the_planned_paths_is_in_the_digest(
    kibana, env, dac, tmp_path: Path
):
    rules = _exceptions_repo(tmp_path)
    plan_file = tmp_path / "plan.json"
    # Only detections/windows is planned; the list its rule references lives in detections/exceptions.
    assert dac("plan", str(rules / "windows"), "--out", str(plan_file), env=env).exit_code == 3
    assert "detections/exceptions/approved.yaml" in json.loads(plan_file.read_text())["repository"]["files"]
    listing = rules / "exceptions" / "approved.yaml"
    listing.write_text(EXCEPTION_LIST.replace("admin}", "root}"), encoding="utf-8")
    run = dac("deploy", "--plan", str(plan_file), env=env)
    assert run.exit_code == 1
    assert "detections/exceptions/approved.yaml: changed since the plan" in run.stderr
    assert kibana.writes == 0


def test_a_plan_with_conflicts_is_saved_for_review_but_never_applied(kibana, env, dac, tmp_path: Path):
    rules_dir = write_rules(tmp_path, 2)
    kibana.seed(
        {
            "rule_id": "gen-rule-0001",
            "name": "Made in the Kibana UI",
            "description": "Not managed by dac.",
            "type": "eql",
            "language": "eql",
            "query": 'process where process.name == "x.exe"',
            "index": ["logs-*"],
            "severity": "low",
            "risk_score": 10,
        }
    )
    plan_file = tmp_path / "plan.json"
    run = dac("plan", str(rules_dir), "--out", str(plan_file), "--format", "markdown", env=env)
    assert run.exit_code == 1  # conflicts, as for any plan
    assert "| ! conflict | rule | `gen-rule-0001` |" in run.stdout and "--adopt" in run.stdout
    kibana.reset_counts()
    refused = dac("deploy", "--plan", str(plan_file), env=env)
    assert refused.exit_code == 1
    assert "the plan has 1 conflict(s) with objects dac does not own; nothing was written" in refused.stderr
    assert len(kibana.state.requests) == 0
    assert kibana.rules()["gen-rule-0001"]["name"] == "Made in the Kibana UI"
