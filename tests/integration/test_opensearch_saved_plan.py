"""Saved plans on a real OpenSearch with Alerting: `dac plan --out`, `dac deploy --plan`, refusals, concurrency.

Runs `dac` as separate processes against the session's OpenSearch (tests/integration/conftest.py;
Alerting comes from DAC_OPENSEARCH_PLUGIN_DIR). Where a test needs network trouble or slowness it
goes through `_Proxy`, a plain TCP-level HTTP relay in front of the real server that can hold or
drop chosen requests; every answer still comes from OpenSearch.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from deployer.targets.opensearch import OpenSearchClient, OpenSearchError, iter_owned

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

RULE = """\
rule_id: os-plan-rule-{i:04d}
name: Saved plan rule {i:04d}
description: Generated for the saved-plan tests on OpenSearch.
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
enabled: false
metadata:
  implements: [T1059]
  platforms: [windows]
  maturity: experimental
  owner: detection-engineering
"""


def _write(repo: Path, i: int, severity: str = "medium") -> None:
    d = repo / "detections" / "windows"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"rule_{i:04d}.yaml").write_text(RULE.format(i=i, severity=severity), encoding="utf-8")


class _Proxy:
    """An HTTP relay to the real server; `hold` and `drop` decide per (method, path, body)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.hold: Callable[[str, str, bytes], float] = lambda m, p, b: 0.0
        self.drop: Callable[[str, str, bytes], bool] = lambda m, p, b: False
        self.writes: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                if proxy.drop(self.command, path, body):
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                delay = proxy.hold(self.command, path, body)
                if delay:
                    time.sleep(delay)
                if self.command in ("PUT", "POST", "DELETE") and "/_plugins/_alerting/monitors" in path:
                    if not path.endswith(("_search", "_execute")):
                        proxy.writes.append((self.command, path))
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _relay  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def cluster(opensearch_alerting: Any) -> Iterator[OpenSearchClient]:
    client = OpenSearchClient(opensearch_alerting.url)
    _wipe(client)
    yield client
    _wipe(client)
    client.close()


def _wipe(client: OpenSearchClient) -> None:
    for monitor_id, _ in iter_owned(client):
        client.delete_monitor(monitor_id)
    client.request("DELETE", "/dac-deploy-lock", ok=(404,))


@pytest.fixture
def proxy(opensearch_alerting: Any) -> Iterator[_Proxy]:
    p = _Proxy(opensearch_alerting.url)
    yield p
    p.close()


def _spawn(repo: Path, url: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENSEARCH_URL": url}
    for var in ("DAC_CONFIG", "DAC_TARGET", "KIBANA_URL"):
        env.pop(var, None)
    return subprocess.Popen(
        [sys.executable, "-c", "from deployer.cli import main; main()", *args, "--opensearch-url", url],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _dac(repo: Path, url: str, *args: str) -> tuple[int, str, str]:
    proc = _spawn(repo, url, *args)
    out, err = proc.communicate(timeout=180)
    return proc.returncode, out, err


def _monitors_by_rule(client: OpenSearchClient) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for _id, monitor in iter_owned(client):
        out.setdefault(monitor["ui_metadata"]["dac"]["rule_id"], []).append(monitor)
    return out


def _planned_repo(tmp_path: Path, url: str) -> Path:
    """Rules 0 and 1 deployed; then rule 0 edited and rule 2 added, and the plan saved."""
    repo = tmp_path / "repo"
    for i in (0, 1):
        _write(repo, i)
    code, out, err = _dac(repo, url, "deploy")
    assert code == 0, out + err
    _write(repo, 0, severity="high")
    _write(repo, 2)
    code, out, err = _dac(repo, url, "plan", "--out", "plan.json")
    assert code == 3, out + err
    return repo


def test_plan_deploy_plan_shows_no_changes(
    cluster: OpenSearchClient, opensearch_alerting: Any, tmp_path: Path
):
    url = opensearch_alerting.url
    repo = _planned_repo(tmp_path, url)
    doc = json.loads((repo / "plan.json").read_text())
    changes = {c["id"]: c for c in doc["changes"]}
    assert {(c["id"], c["action"], c["kind"]) for c in doc["changes"]} == {
        ("os-plan-rule-0000", "update", "monitor"),
        ("os-plan-rule-0002", "create", "monitor"),
    }
    observed = changes["os-plan-rule-0000"]["observed"]
    assert isinstance(observed["seq_no"], int) and isinstance(observed["primary_term"], int)
    assert changes["os-plan-rule-0002"]["desired"]["name"] == "[dac] Saved plan rule 0002"
    code, out, err = _dac(repo, url, "deploy", "--plan", "plan.json")
    assert code == 0, out + err
    assert "Deployed: 2 ok, 0 failed." in out
    code, out, err = _dac(repo, url, "plan")
    assert code == 0, out + err
    assert "No changes" in out
    assert sorted(_monitors_by_rule(cluster)) == [
        "os-plan-rule-0000",
        "os-plan-rule-0001",
        "os-plan-rule-0002",
    ]


def test_refuses_when_a_monitor_changed_since_the_plan(
    cluster: OpenSearchClient, opensearch_alerting: Any, tmp_path: Path
):
    url = opensearch_alerting.url
    repo = _planned_repo(tmp_path, url)
    hit = next(h for h in cluster.search_monitors() if h["monitor"]["name"] == "[dac] Saved plan rule 0000")
    edited = {**hit["monitor"], "enabled": True}
    cluster.update_monitor(hit["_id"], edited)  # someone enables it in OpenSearch Dashboards
    code, out, err = _dac(repo, url, "deploy", "--plan", "plan.json")
    assert code == 1, out + err
    assert "monitor os-plan-rule-0000: changed in the target since the plan (seq_no" in err
    assert "nothing was written" in err
    assert "os-plan-rule-0002" not in _monitors_by_rule(cluster)


def test_refuses_when_a_monitor_to_create_now_exists(
    cluster: OpenSearchClient, opensearch_alerting: Any, tmp_path: Path
):
    url = opensearch_alerting.url
    repo = _planned_repo(tmp_path, url)
    code, out, err = _dac(repo, url, "deploy")  # a deploy that did not go through the plan
    assert code == 0, out + err
    code, out, err = _dac(repo, url, "deploy", "--plan", "plan.json")
    assert code == 1
    assert "monitor os-plan-rule-0002: the plan creates it, but it now exists in the target" in err
    assert [len(v) for v in _monitors_by_rule(cluster).values()] == [1, 1, 1]


def test_refuses_a_damaged_edited_or_foreign_plan(
    cluster: OpenSearchClient, opensearch_alerting: Any, tmp_path: Path
):
    url = opensearch_alerting.url
    repo = _planned_repo(tmp_path, url)
    good = (repo / "plan.json").read_text()
    (repo / "plan.json").write_text(good[:-200])
    assert "not valid JSON" in _dac(repo, url, "deploy", "--plan", "plan.json")[2]
    edited = json.loads(good)
    edited["changes"][0]["desired"]["enabled"] = True
    (repo / "plan.json").write_text(json.dumps(edited, indent=2))
    assert "integrity digest does not match" in _dac(repo, url, "deploy", "--plan", "plan.json")[2]
    (repo / "plan.json").write_text(good)
    code, _, err = _dac(repo, "http://127.0.0.1:9", "deploy", "--plan", "plan.json")
    assert code == 1 and "made for another target (URL" in err
    _write(repo, 1, severity="low")
    code, _, err = _dac(repo, url, "deploy", "--plan", "plan.json")
    assert code == 1 and "detections/windows/rule_0001.yaml: changed since the plan" in err
    assert "os-plan-rule-0002" not in _monitors_by_rule(cluster)


def test_opensearch_refuses_an_update_against_a_stale_seq_no(cluster: OpenSearchClient, tmp_path: Path):
    # The guarantee `dac deploy --plan` builds on: OpenSearch itself refuses a stale conditional update.
    from deployer.rules.loader import load_rule_file
    from deployer.targets.opensearch_compile import compile_rule

    _write(tmp_path, 5)
    rule, _ = load_rule_file(tmp_path / "detections" / "windows" / "rule_0005.yaml")
    assert rule is not None
    body = compile_rule(rule.data, rule_id=rule.rule_id).monitor
    monitor_id = cluster.create_monitor(body)
    hit = next(h for h in cluster.search_monitors() if h["_id"] == monitor_id)
    cluster.update_monitor(monitor_id, {**body, "enabled": True}, hit["_seq_no"], hit["_primary_term"])
    with pytest.raises(OpenSearchError) as err:
        cluster.update_monitor(monitor_id, {**body, "enabled": False}, hit["_seq_no"], hit["_primary_term"])
    assert err.value.status_code == 409


def test_two_deploys_of_the_same_plan_at_once_only_one_writes(
    cluster: OpenSearchClient, proxy: _Proxy, tmp_path: Path
):
    repo = _planned_repo(tmp_path, proxy.url)
    proxy.writes.clear()
    # Monitor writes take 1.5 s, so without the lock both runs would pass their checks first.
    proxy.hold = lambda m, p, b: (
        1.5
        if m in ("POST", "PUT") and p.startswith("/_plugins/_alerting/monitors") and not p.endswith("_search")
        else 0.0
    )
    procs = [_spawn(repo, proxy.url, "deploy", "--plan", "plan.json") for _ in range(2)]
    results = sorted(((p.wait(timeout=180), *p.communicate()) for p in procs), key=lambda r: r[0])
    (ok_code, ok_out, _), (lost_code, _, lost_err) = results
    assert (ok_code, lost_code) == (0, 1), results
    assert "Deployed: 2 ok, 0 failed." in ok_out
    assert "the target changed since the plan was made" in lost_err
    assert len(proxy.writes) == 2  # one create, one update: the second run wrote nothing
    assert [len(v) for v in _monitors_by_rule(cluster).values()] == [1, 1, 1]  # no duplicate monitor


def test_two_overlapping_plans_at_once_only_one_writes(
    cluster: OpenSearchClient, proxy: _Proxy, tmp_path: Path
):
    repos = [tmp_path / "a", tmp_path / "b"]
    for repo in repos:
        for i in (0, 1):
            _write(repo, i)
    code, out, err = _dac(repos[0], proxy.url, "deploy")
    assert code == 0, out + err
    _write(repos[0], 0, severity="high")
    _write(repos[1], 0, severity="low")
    _write(repos[1], 3)
    for repo in repos:
        assert _dac(repo, proxy.url, "plan", "--out", "plan.json")[0] == 3
    proxy.writes.clear()
    proxy.hold = lambda m, p, b: (
        1.5
        if m in ("POST", "PUT") and p.startswith("/_plugins/_alerting/monitors") and not p.endswith("_search")
        else 0.0
    )
    procs = [_spawn(repo, proxy.url, "deploy", "--plan", "plan.json") for repo in repos]
    results = [(p.wait(timeout=180), *p.communicate()) for p in procs]
    assert sorted(r[0] for r in results) == [0, 1], results
    loser = 0 if results[0][0] == 1 else 1
    assert "monitor os-plan-rule-0000: changed in the target since the plan (seq_no" in results[loser][2]
    severity = {"high": "2", "low": "4"}  # the compiler's trigger severities for high / low
    stored = _monitors_by_rule(cluster)
    trigger = stored["os-plan-rule-0000"][0]["triggers"][0]
    inner = trigger.get("bucket_level_trigger", trigger)
    assert str(inner["severity"]) == severity["low" if loser == 0 else "high"]
    assert ("os-plan-rule-0003" in stored) == (loser == 0)


def test_connection_drop_mid_apply_reports_what_was_applied(
    cluster: OpenSearchClient, proxy: _Proxy, tmp_path: Path
):
    repo = _planned_repo(tmp_path, proxy.url)
    # The create goes through; every request updating the edited monitor loses its connection.
    proxy.drop = lambda m, p, b: (
        m == "PUT" and p.startswith("/_plugins/_alerting/monitors/") and b"rule 0000" in b
    )
    code, out, err = _dac(repo, proxy.url, "deploy", "--plan", "plan.json", "--format", "json")
    assert code == 1, out + err
    report = json.loads(out)
    assert {(r["rule_id"], r["action"], r["ok"]) for r in report["results"]} == {
        ("os-plan-rule-0002", "create", True),
        ("os-plan-rule-0000", "update", False),
    }
    assert "run `dac plan` to see what remains" in err
    proxy.drop = lambda m, p, b: False
    code, out, err = _dac(repo, proxy.url, "plan", "--format", "json")
    assert code == 3, out + err
    assert [(c["action"], c["rule_id"]) for c in json.loads(out)["changes"]] == [
        ("update", "os-plan-rule-0000")
    ]
