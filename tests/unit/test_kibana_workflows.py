"""The GitHub workflows pass actionlint, and docker-compose.yml keeps what the Kibana integration needs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ACTIONLINT_INSTALL = 'GOBIN="${DAC_CACHE_DIR:-$HOME/.cache/dac}/bin" go install github.com/rhysd/actionlint/cmd/actionlint@v1.7.7'


def _actionlint() -> str | None:
    cache = Path(os.environ.get("DAC_CACHE_DIR", Path.home() / ".cache" / "dac"))
    candidate = cache / "bin" / "actionlint"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("actionlint")


def test_workflows_pass_actionlint(repo_root: Path):
    binary = _actionlint()
    if binary is None:
        pytest.skip(f"actionlint is not installed; build it with: {ACTIONLINT_INSTALL}")
    workflows = sorted((repo_root / ".github" / "workflows").glob("*.yml"))
    assert {p.name for p in workflows} >= {"integration.yml", "pull-request.yml", "deploy.yml"}
    proc = subprocess.run(
        [binary, "-no-color", *map(str, workflows)],
        capture_output=True,
        text=True,
        cwd=repo_root,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflows_use_the_documented_commands(repo_root: Path):
    wf = repo_root / ".github" / "workflows"
    pr = (wf / "pull-request.yml").read_text()
    assert "dac validate --format github" in pr and "dac test --junit" in pr
    assert "GITHUB_STEP_SUMMARY" in pr
    deploy = yaml.safe_load((wf / "deploy.yml").read_text())
    assert deploy[True]["push"]["branches"] == ["main"]  # YAML 1.1 reads the `on` key as True
    assert deploy["concurrency"]["cancel-in-progress"] is False
    integration = (wf / "integration.yml").read_text()
    assert "docker compose up" in integration and "-m kibana" in integration


def _runs(workflow: dict) -> list[str]:
    return [str(s.get("run", "")) for job in workflow["jobs"].values() for s in job["steps"]]


def test_workflows_use_the_saved_plan_flow(repo_root: Path):
    wf = repo_root / ".github" / "workflows"
    pr = yaml.safe_load((wf / "pull-request.yml").read_text())
    steps = pr["jobs"]["validate-test-plan"]["steps"]
    plan_run = " ".join(_runs(pr))
    # The pull request plans the deploy target, saves the plan and renders it for reviewers.
    assert "--out dac-plan.json --format markdown" in plan_run
    upload = next(s for s in steps if s.get("with", {}).get("name") == "dac-plan")
    assert upload["with"]["path"] == "dac-plan.json"
    assert pr["jobs"]["validate-test-plan"]["env"]["DAC_TARGET"] == "${{ vars.DAC_DEPLOY_TARGET || 'prod' }}"
    deploy = yaml.safe_load((wf / "deploy.yml").read_text())
    deploy_run = " ".join(_runs(deploy))
    # The merge deploys that artefact, never a plan made afresh.
    assert "gh run download" in deploy_run and "--name dac-plan" in deploy_run
    assert 'dac deploy --target "${DAC_TARGET}" --plan .dac-plan/dac-plan.json' in deploy_run
    assert "--prune" not in deploy_run  # prune is part of the reviewed plan
    assert deploy["permissions"]["actions"] == "read"


def test_workflows_hold_no_inline_python(repo_root: Path):
    for path in sorted((repo_root / ".github" / "workflows").glob("*.yml")):
        for run in _runs(yaml.safe_load(path.read_text())):
            for line in run.splitlines():
                words = line.split()
                if words[:1] in (["python"], ["python3"]) or "| python" in line:
                    # Installing and running the test suite is fine; programs in the YAML are not.
                    assert words[1:3] in (["-m", "pip"], ["-m", "pytest"]), f"{path.name}: {line.strip()}"


def test_compose_has_security_encryption_key_healthchecks_and_setup(repo_root: Path):
    compose = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    services = compose["services"]
    es, kibana, setup = services["elasticsearch"], services["kibana"], services["setup"]
    assert es["environment"]["xpack.security.enabled"] == "true"
    assert "XPACK_ENCRYPTEDSAVEDOBJECTS_ENCRYPTIONKEY" in kibana["environment"]
    assert es["healthcheck"]["test"] and kibana["healthcheck"]["test"]
    assert "kibana_system/_password" in " ".join(setup["command"])
    assert kibana["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    assert kibana["environment"]["ELASTICSEARCH_USERNAME"] == "kibana_system"


def test_compose_has_an_opensearch_with_alerting_for_the_e2e_job(repo_root: Path):
    compose = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    os_service = compose["services"]["opensearch"]
    assert os_service["image"].startswith("opensearchproject/opensearch:")
    assert os_service["image"].endswith("2.19.4}") or os_service["image"].endswith(":2.19.4")
    # Behind a profile: a plain `docker compose up` would otherwise fight Elasticsearch for 9200.
    assert os_service["profiles"] == ["opensearch"]
    env = os_service["environment"]
    assert env["discovery.type"] == "single-node" and env["DISABLE_SECURITY_PLUGIN"] == "true"
    assert env["OPENSEARCH_INITIAL_ADMIN_PASSWORD"] and "-Xmx" in env["OPENSEARCH_JAVA_OPTS"]
    assert "_cluster/health" in " ".join(os_service["healthcheck"]["test"])
    jobs = yaml.safe_load((repo_root / ".github" / "workflows" / "integration.yml").read_text())["jobs"]
    steps = jobs["opensearch"]["steps"]
    run = " ".join(str(s.get("run", "")) for s in steps)
    assert "--profile opensearch up" in run and "tests/integration/test_opensearch_e2e.py" in run
    e2e = next(s for s in steps if "test_opensearch_e2e.py" in str(s.get("run", "")))
    assert e2e["env"]["DAC_TEST_OPENSEARCH_URL"] == "http://localhost:9200"
    assert "-m integration" in e2e["run"]
