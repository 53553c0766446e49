"""Contract tests: `dac plan` / `dac deploy` against the spec-validating Kibana contract server."""

from __future__ import annotations

import json
from pathlib import Path

from kibana_contract_fixtures import RAW_API_KEY, rule_yaml, write_rules

OWNER_TAG = "managed-by:dac"


def test_deploy_1000_rules_in_few_requests_then_idempotent(kibana, env, dac, tmp_path: Path):
    rules_dir = write_rules(tmp_path, 1000)

    first = dac("deploy", str(rules_dir), "--format", "json", env=env)
    assert first.exit_code == 0, first.stderr
    out = first.json()
    assert out["summary"] == {"ok": 1000, "failed": 0}
    assert len(kibana.rules()) == 1000
    # Reads: /api/status, one _find page (nothing owned yet), one _export to look for unowned
    # rules with the same rule_ids. Writes: everything else.
    reads = (
        kibana.count("GET", "/api/status") + kibana.count("GET", "/_find") + kibana.count("POST", "/_export")
    )
    total = len(kibana.state.requests)
    assert total - reads <= 5, [(r.method, r.path) for r in kibana.state.requests]
    assert kibana.writes == 1  # one multipart _import
    stored = kibana.rules()["gen-rule-0007"]
    assert OWNER_TAG in stored["tags"] and "implements:T1059" in stored["tags"]
    assert stored["meta"]["managed_by"] == "dac"
    assert stored["meta"]["source_path"] == "detections/windows/rule_0007.yaml"
    assert stored["enabled"] is False

    kibana.reset_counts()
    second = dac("deploy", str(rules_dir), "--format", "json", env=env)
    assert second.exit_code == 0, second.stderr
    assert kibana.writes == 0
    assert second.json()["plan"]["summary"]["unchanged"] == 1000
    # 1,000 owned rules at 100 per page: ten _find pages, one status read, no _export; and one
    # exception-list _find per namespace (single, agnostic) to see the owned lists.
    assert kibana.count("GET", "/rules/_find") == 10
    assert kibana.count("GET", "/api/exception_lists/_find") == 2
    assert kibana.count("POST", "/_export") == 0

    plan = dac("plan", str(rules_dir), env=env)
    assert plan.exit_code == 0, plan.stdout + plan.stderr
    assert "No changes" in plan.stdout


def test_plan_reports_field_diff_and_pending_exit_code(kibana, env, dac, tmp_path: Path):
    rules_dir = write_rules(tmp_path, 3)
    assert dac("deploy", str(rules_dir), env=env).exit_code == 0
    path = rules_dir / "windows" / "rule_0001.yaml"
    path.write_text(rule_yaml(1, severity="high"), encoding="utf-8")
    text = dac("plan", str(rules_dir), env=env)
    assert text.exit_code == 3
    assert "~ update" in text.stdout and 'severity: "medium" -> "high"' in text.stdout
    data = dac("plan", str(rules_dir), "--format", "json", env=env)
    assert data.exit_code == 3
    plan = data.json()
    assert plan["summary"]["update"] == 1
    (change,) = plan["changes"]
    assert change["rule_id"] == "gen-rule-0001"
    assert change["fields"] == [{"path": "severity", "before": "medium", "after": "high"}]


def test_enable_and_disable_follow_the_repository_with_bulk_action(kibana, env, dac, tmp_path: Path):
    rules_dir = write_rules(tmp_path, 4)
    assert dac("deploy", str(rules_dir), env=env).exit_code == 0
    for i in (0, 1):
        (rules_dir / "windows" / f"rule_{i:04d}.yaml").write_text(
            rule_yaml(i, enabled=True), encoding="utf-8"
        )
    kibana.reset_counts()
    run = dac("deploy", str(rules_dir), "--format", "json", env=env)
    assert run.exit_code == 0, run.stderr
    assert kibana.count("POST", "/_bulk_action") == 1
    assert kibana.count("POST", "/_import") == 0
    assert [r["action"] for r in run.json()["results"]] == ["enable", "enable"]
    assert kibana.rules()["gen-rule-0000"]["enabled"] is True
    assert kibana.rules()["gen-rule-0002"]["enabled"] is False


def test_prune_deletes_only_owned_rules(kibana, env, dac, tmp_path: Path):
    rules_dir = write_rules(tmp_path, 5)
    assert dac("deploy", str(rules_dir), env=env).exit_code == 0
    kibana.seed(json.loads(json.dumps(_foreign_rule("someone-elses-rule"))))
    (rules_dir / "windows" / "rule_0004.yaml").unlink()

    plan = dac("plan", str(rules_dir), env=env)
    assert plan.exit_code == 0  # without --prune an orphan is reported, not deleted
    assert "? orphan" in plan.stdout and "gen-rule-0004" in plan.stdout

    kibana.reset_counts()
    run = dac("deploy", str(rules_dir), "--prune", "--format", "json", env=env)
    assert run.exit_code == 0, run.stderr
    assert [(r["action"], r["rule_id"]) for r in run.json()["results"]] == [("delete", "gen-rule-0004")]
    assert "gen-rule-0004" not in kibana.rules()
    assert "someone-elses-rule" in kibana.rules()
    assert kibana.writes == 1


def _foreign_rule(rule_id: str) -> dict:
    return {
        "rule_id": rule_id,
        "name": "Made in the Kibana UI",
        "description": "Not managed by dac.",
        "type": "eql",
        "language": "eql",
        "query": 'process where process.name == "x.exe"',
        "index": ["logs-*"],
        "severity": "low",
        "risk_score": 10,
        "tags": ["hand-made"],
    }


def test_unowned_rule_with_same_rule_id_is_refused_with_adopt_hint(kibana, env, dac, tmp_path: Path):
    rules_dir = write_rules(tmp_path, 3)
    kibana.seed(_foreign_rule("gen-rule-0002"))
    kibana.reset_counts()

    run = dac("deploy", str(rules_dir), env=env)
    assert run.exit_code == 1
    assert "not managed by dac" in run.stderr and "--adopt" in run.stderr
    assert kibana.writes == 0
    assert kibana.rules()["gen-rule-0002"]["name"] == "Made in the Kibana UI"

    plan = dac("plan", str(rules_dir), env=env)
    assert plan.exit_code == 1 and "! conflict" in plan.stdout and "--adopt" in plan.stdout

    adopted = dac("deploy", str(rules_dir), "--adopt", env=env)
    assert adopted.exit_code == 0, adopted.stderr
    assert OWNER_TAG in kibana.rules()["gen-rule-0002"]["tags"]
    assert dac("plan", str(rules_dir), env=env).exit_code == 0


def test_invalid_rule_among_fifty_means_zero_writes(kibana, env, dac, tmp_path: Path):
    rules_dir = write_rules(tmp_path, 50)
    (rules_dir / "windows" / "rule_0031.yaml").write_text(rule_yaml(31, severity="extreme"), encoding="utf-8")
    run = dac("deploy", str(rules_dir), env=env)
    assert run.exit_code == 1
    assert "rule_0031.yaml" in run.stderr and "nothing was deployed" in run.stderr
    assert kibana.writes == 0
    assert len(kibana.state.requests) == 0  # validation happens before the first request
    assert kibana.rules() == {}


def test_503_three_times_then_success(kibana, env, dac, tmp_path: Path, monkeypatch):
    delays: list[float] = []
    monkeypatch.setattr("deployer.targets.http._sleep", delays.append)
    rules_dir = write_rules(tmp_path, 5)
    kibana.fail(503, times=3, path_contains="/_import")
    run = dac("deploy", str(rules_dir), "--format", "json", env=env)
    assert run.exit_code == 0, run.stderr
    assert run.json()["summary"] == {"ok": 5, "failed": 0}
    assert kibana.count("POST", "/_import") == 4
    assert len(kibana.rules()) == 5
    # Exponential backoff with jitter: each wait is at least half its doubling ceiling.
    assert len(delays) == 3
    assert 0.25 <= delays[0] <= 0.5 and 0.5 <= delays[1] <= 1.0 and 1.0 <= delays[2] <= 2.0


def test_retry_after_is_honoured(kibana, env, dac, tmp_path: Path, monkeypatch):
    delays: list[float] = []
    monkeypatch.setattr("deployer.targets.http._sleep", delays.append)
    rules_dir = write_rules(tmp_path, 2)
    kibana.fail(429, times=1, path_contains="/_find", retry_after="7")
    run = dac("plan", str(rules_dir), env=env)
    assert run.exit_code == 3, run.stderr
    assert delays == [7.0]


def test_persistent_503_gives_up_after_bounded_retries(kibana, env, dac, tmp_path: Path, monkeypatch):
    delays: list[float] = []
    monkeypatch.setattr("deployer.targets.http._sleep", delays.append)
    rules_dir = write_rules(tmp_path, 2)
    kibana.fail(503, times=100, path_contains="/api/status")
    run = dac("plan", str(rules_dir), env=env)
    assert run.exit_code == 2
    assert "HTTP 503" in run.stderr
    assert kibana.count("GET", "/api/status") == 5  # first try + 4 retries
    assert sum(delays) < 60


def test_400_for_one_rule_in_a_bulk_reports_it_and_applies_the_others(kibana, env, dac, tmp_path: Path):
    rules_dir = write_rules(tmp_path, 10)
    message = "params.query: a made-up reason Kibana gives for this one rule"
    kibana.state.import_rule_errors["gen-rule-0004"] = (400, message)
    run = dac("deploy", str(rules_dir), env=env)
    assert run.exit_code == 1
    assert f"FAILED create  gen-rule-0004: {message}" in run.stdout
    assert "Deployed: 9 ok, 1 failed." in run.stdout
    assert len(kibana.rules()) == 9

    as_json = dac("deploy", str(rules_dir), "--format", "json", env=env)
    assert as_json.exit_code == 1
    (failed,) = [r for r in as_json.json()["results"] if not r["ok"]]
    assert failed == {
        "rule_id": "gen-rule-0004",
        "action": "create",
        "ok": False,
        "message": message,
        "status_code": 400,
    }


def test_spaces_use_the_s_prefix(kibana, env, dac, tmp_path: Path):
    rules_dir = write_rules(tmp_path, 2)
    run = dac("deploy", str(rules_dir), "--space", "secops", env=env)
    assert run.exit_code == 0, run.stderr
    assert len(kibana.rules("secops")) == 2 and kibana.rules("default") == {}
    assert all(r.path.startswith("/s/secops/") for r in kibana.state.requests if "detection_engine" in r.path)


def test_dry_run_writes_nothing(kibana, env, dac, tmp_path: Path):
    rules_dir = write_rules(tmp_path, 3)
    run = dac("deploy", str(rules_dir), "--dry-run", env=env)
    assert run.exit_code == 0
    assert "Dry run" in run.stdout and "+ create" in run.stdout
    assert kibana.writes == 0


def test_basic_auth_and_target_from_dac_yaml(kibana, dac, tmp_path: Path):
    rules_dir = write_rules(tmp_path, 2)
    (tmp_path / "dac.yaml").write_text(
        f"""targets:
  staging:
    kind: kibana
    url: {kibana.url}
    space: staging
    tags: [generated]
    auth:
      username_env: STAGING_USER
      password_env: STAGING_PASSWORD
""",
        encoding="utf-8",
    )
    env = {"STAGING_USER": "elastic", "STAGING_PASSWORD": "Sup3r-Secret-Pa55word"}
    run = dac("deploy", "--target", "staging", env=env)
    assert run.exit_code == 0, run.stderr
    assert len(kibana.rules("staging")) == 2
    assert rules_dir.is_dir()


def test_target_rule_selection_by_glob(kibana, env, dac, tmp_path: Path):
    write_rules(tmp_path, 2)
    linux = tmp_path / "detections" / "linux"
    linux.mkdir()
    (linux / "l.yaml").write_text(rule_yaml(99, prefix="linux"), encoding="utf-8")
    (tmp_path / "dac.yaml").write_text(
        f"targets:\n  win:\n    url: {kibana.url}\n    rules: ['detections/windows/**']\n", encoding="utf-8"
    )
    run = dac("deploy", "--target", "win", env={"KIBANA_API_KEY": env["KIBANA_API_KEY"]})
    assert run.exit_code == 0, run.stderr
    assert sorted(kibana.rules()) == ["gen-rule-0000", "gen-rule-0001"]


def test_api_key_file_and_raw_id_key_form(kibana, dac, tmp_path: Path):
    rules_dir = write_rules(tmp_path, 1)
    key_file = tmp_path / "kibana.key"
    key_file.write_text(RAW_API_KEY + "\n", encoding="utf-8")
    run = dac("plan", str(rules_dir), "--kibana-url", kibana.url, "--api-key-file", str(key_file))
    assert run.exit_code == 3, run.stderr
