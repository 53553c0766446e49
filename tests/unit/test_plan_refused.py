"""`dac plan` / `dac deploy` against OpenSearch list the rules the compiler refuses, never drop them.

The cluster is the in-process model of the Alerting API from opensearch_support.py, reached
over HTTP, so the commands run exactly as they do against a real cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from opensearch_support import AlertingModel, serve_alerting

from deployer.cli import main

GOOD = """\
rule_id: dac-good
name: Script host then network
description: Compiles to a monitor.
type: eql
language: eql
query: |
  sequence by process.entity_id with maxspan=30s
    [process where event.type == "start" and process.name : "mshta.exe"]
    [network where destination.port in (80, 443)]
index: [logs-endpoint.events.*]
severity: high
risk_score: 73
metadata:
  implements: [T1204.002]
  platforms: [windows]
  maturity: experimental
"""

UNTIL = """\
rule_id: dac-until
name: Sequence with until
description: The OpenSearch compiler refuses until.
type: eql
language: eql
query: |
  sequence by process.entity_id with maxspan=1m
    [process where event.type == "start"]
    [network where true]
  until [process where event.type == "end"]
index: [logs-endpoint.events.*]
severity: low
risk_score: 21
metadata:
  implements: [T1204.002]
  platforms: [windows]
  maturity: experimental
"""


@pytest.fixture
def cluster() -> Iterator[tuple[str, AlertingModel]]:
    with serve_alerting() as served:
        yield served


def _repo(tmp_path: Path, url: str, exclude: list[str] | None = None) -> Path:
    rules = tmp_path / "detections" / "windows"
    rules.mkdir(parents=True)
    (rules / "good.yaml").write_text(GOOD)
    (rules / "until.yaml").write_text(UNTIL)
    target = {"kind": "opensearch", "url": url}
    if exclude is not None:
        target["exclude"] = exclude
    (tmp_path / "dac.yaml").write_text(json.dumps({"targets": {"os": target}}))
    return tmp_path


def _dac(repo: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        main,
        [*args, "--target", "os", "--config", str(repo / "dac.yaml"), str(repo / "detections")],
        catch_exceptions=False,
    )
    return result.exit_code, result.stdout, result.stderr


REFUSED_LINE = "refused: dac-until: cannot compile for OpenSearch: until"


def test_plan_lists_refused_rules_and_keeps_its_exit_code(cluster, tmp_path: Path) -> None:
    url, _model = cluster
    repo = _repo(tmp_path, url)
    code, out, err = _dac(repo, "plan")
    assert code == 3  # the good rule is pending; the refusal does not change plan's exit code
    assert "dac-good" in out
    lines = [line for line in err.splitlines() if line.startswith("refused: ")]
    assert len(lines) == 1 and lines[0].startswith(REFUSED_LINE), err


def test_plan_json_has_a_refused_key(cluster, tmp_path: Path) -> None:
    url, _model = cluster
    code, out, _err = _dac(_repo(tmp_path, url), "plan", "--format", "json")
    doc = json.loads(out)
    assert code == 3
    assert [c["rule_id"] for c in doc["changes"]] == ["dac-good"]
    assert [(r["rule_id"], r["construct"]) for r in doc["refused"]] == [("dac-until", "until")]
    assert doc["refused"][0]["reason"].startswith("cannot compile for OpenSearch: until")


def test_deploy_writes_the_others_and_fails_on_a_refusal(cluster, tmp_path: Path) -> None:
    url, model = cluster
    code, out, err = _dac(_repo(tmp_path, url), "deploy", "--format", "json")
    doc = json.loads(out)
    assert code == 1
    assert REFUSED_LINE in err and "were not deployed" in err
    assert [r["rule_id"] for r in doc["results"]] == ["dac-good"] and doc["results"][0]["ok"]
    assert [r["rule_id"] for r in doc["refused"]] == ["dac-until"]
    assert len(model.monitors) == 1


def test_deploy_dry_run_reports_the_refusal_too(cluster, tmp_path: Path) -> None:
    url, model = cluster
    code, out, err = _dac(_repo(tmp_path, url), "deploy", "--dry-run")
    assert code == 1 and REFUSED_LINE in err
    assert "Dry run: nothing was written." in out and model.monitors == {}


@pytest.mark.parametrize("exclude", [["dac-until"], ["detections/windows/until.yaml"]])
def test_a_rule_the_target_excludes_is_not_refused(cluster, tmp_path: Path, exclude: list[str]) -> None:
    url, model = cluster
    code, out, err = _dac(_repo(tmp_path, url, exclude=exclude), "deploy", "--format", "json")
    assert code == 0, err
    assert "refused" not in err and json.loads(out)["refused"] == []
    assert len(model.monitors) == 1


def test_prune_keeps_the_monitor_of_a_rule_that_stopped_compiling(cluster, tmp_path: Path) -> None:
    url, model = cluster
    repo = _repo(tmp_path, url)
    until = repo / "detections" / "windows" / "until.yaml"
    # First deployed while it still compiled (no `until`), then edited so it no longer does.
    until.write_text(UNTIL.replace('  until [process where event.type == "end"]\n', ""))
    assert _dac(repo, "deploy")[0] == 0 and len(model.monitors) == 2
    until.write_text(UNTIL)
    code, out, err = _dac(repo, "deploy", "--prune", "--format", "json")
    doc = json.loads(out)
    assert code == 1 and REFUSED_LINE in err
    assert doc["plan"]["summary"]["delete"] == 0 and len(model.monitors) == 2


def test_kibana_plan_json_has_an_empty_refused_key() -> None:
    from deployer.cli.kibana_cmds import _refusals

    class KibanaLike:
        """A target without a `refused` attribute takes every rule."""

    assert _refusals(KibanaLike()) == []
