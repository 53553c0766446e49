"""Exception lists as code against the Kibana contract server (requests held to Kibana's exceptions spec)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kibana_contract_fixtures import rule_yaml, write_rules

from deployer.targets.kibana import KibanaClient
from deployer.targets.kibana_rules import OWNER_TAG

LIST = """\
list_id: approved-tools
name: Approved tools
description: Tools the admins run on purpose
items:
  - item_id: tool-0001-admin
    name: tool0001 run by the admin
    description: scheduled maintenance
    entries:
      - {field: user.name, type: match, operator: included, value: admin}
    comments: [{comment: approved in CHG-1}]
  - item_id: tool-0001-backup-host
    name: backup host
    description: backup server
    entries:
      - {field: host.name, type: match_any, operator: included, value: [bk-01, bk-02]}
    expire_time: "2099-01-01T00:00:00Z"
"""
REF = "exceptions_list:\n  - list_id: approved-tools\n"


def _repo(tmp_path: Path, n: int = 2) -> Path:
    rules = write_rules(tmp_path, n)
    (rules / "windows" / "rule_0001.yaml").write_text(rule_yaml(1, extra=REF), encoding="utf-8")
    (rules / "exceptions").mkdir()
    (rules / "exceptions" / "approved.yaml").write_text(LIST, encoding="utf-8")
    return rules


def _lists(kibana) -> dict:
    return kibana.state.exceptions.lists.get(("default", "single"), {})


def _items(kibana) -> dict:
    return kibana.state.exceptions.items.get(("default", "single"), {})


def test_deploy_lists_items_and_rules_then_nothing(kibana, env, dac, tmp_path: Path) -> None:
    rules = _repo(tmp_path)
    first = dac("deploy", str(rules), "--format", "json", env=env)
    assert first.exit_code == 0, first.stderr
    assert first.json()["summary"] == {"ok": 5, "failed": 0}  # 2 rules, 1 list, 2 items
    stored_list = _lists(kibana)["approved-tools"]
    assert OWNER_TAG in stored_list["tags"] and stored_list["meta"]["managed_by"] == "dac"
    assert set(_items(kibana)) == {"tool-0001-admin", "tool-0001-backup-host"}
    # The rule's reference now holds the stored list's id (Kibana's import rewrites it).
    ref = kibana.rules()["gen-rule-0001"]["exceptions_list"]
    assert ref == [
        {
            "id": stored_list["id"],
            "list_id": "approved-tools",
            "type": "detection",
            "namespace_type": "single",
        }
    ]
    # Lists were written before the rules: one POST per list and item, then one _import.
    order = [r.path for r in kibana.state.requests if r.write]
    assert order == [
        "/api/exception_lists",
        *["/api/exception_lists/items"] * 2,
        "/api/detection_engine/rules/_import",
    ]

    kibana.reset_counts()
    second = dac("deploy", str(rules), "--format", "json", env=env)
    assert second.exit_code == 0, second.stderr
    assert kibana.writes == 0
    assert second.json()["plan"]["summary"]["unchanged"] == 5
    plan = dac("plan", str(rules), env=env)
    assert plan.exit_code == 0 and "No changes" in plan.stdout, plan.stdout + plan.stderr


def test_one_changed_item_is_one_write_and_keeps_its_comments(kibana, env, dac, tmp_path: Path) -> None:
    rules = _repo(tmp_path)
    assert dac("deploy", str(rules), env=env).exit_code == 0
    comment_id = _items(kibana)["tool-0001-admin"]["comments"][0]["id"]
    path = rules / "exceptions" / "approved.yaml"
    path.write_text(LIST.replace("value: admin}", "value: svc-admin}"), encoding="utf-8")
    plan = dac("plan", str(rules), env=env)
    assert plan.exit_code == 3 and "~ update   exception-item:tool-0001-admin" in plan.stdout, plan.stdout
    kibana.reset_counts()
    assert dac("deploy", str(rules), env=env).exit_code == 0
    assert [(r.method, r.path) for r in kibana.state.requests if r.write] == [
        ("PUT", "/api/exception_lists/items")
    ]
    item = _items(kibana)["tool-0001-admin"]
    assert item["entries"][0]["value"] == "svc-admin"
    assert [c["id"] for c in item["comments"]] == [comment_id]


def test_removed_list_is_pruned_only_when_owned(kibana, env, dac, tmp_path: Path) -> None:
    rules = _repo(tmp_path)
    assert dac("deploy", str(rules), env=env).exit_code == 0
    # Someone else's list in the same space: never listed, never touched.
    kibana.exceptions.list_post(
        "default", {}, {"list_id": "soc-manual", "name": "manual", "description": "ui", "type": "detection"}
    )
    (rules / "exceptions" / "approved.yaml").unlink()
    (rules / "windows" / "rule_0001.yaml").write_text(rule_yaml(1), encoding="utf-8")
    plan = dac("plan", str(rules), "--format", "json", env=env)
    actions = {c["rule_id"]: c["action"] for c in plan.json()["changes"]}
    assert actions == {
        "gen-rule-0001": "update",
        "exception-list:approved-tools": "orphan",
        "exception-item:tool-0001-admin": "orphan",
        "exception-item:tool-0001-backup-host": "orphan",
    }
    kibana.reset_counts()
    result = dac("deploy", str(rules), "--prune", "--format", "json", env=env)
    assert result.exit_code == 0, result.stderr
    assert set(_lists(kibana)) == {"soc-manual"} and _items(kibana) == {}
    # One _import for the rule, one DELETE for the list (its items go with it).
    assert [(r.method, r.path) for r in kibana.state.requests if r.write] == [
        ("POST", "/api/detection_engine/rules/_import"),
        ("DELETE", "/api/exception_lists"),
    ]
    # The rule stopped referencing the list before the list went away.
    assert kibana.rules()["gen-rule-0001"]["exceptions_list"] == []


def test_unowned_list_with_the_same_list_id_is_a_conflict(kibana, env, dac, tmp_path: Path) -> None:
    rules = _repo(tmp_path)
    kibana.exceptions.list_post(
        "default", {}, {"list_id": "approved-tools", "name": "x", "description": "ui", "type": "detection"}
    )
    result = dac("deploy", str(rules), "--format", "json", env=env)
    assert result.exit_code == 1
    assert kibana.writes == 0
    assert "exception-list:approved-tools" in result.stdout + result.stderr


def test_too_many_items_deploys_nothing(kibana, env, dac, tmp_path: Path) -> None:
    rules = _repo(tmp_path)
    items = "".join(
        f"  - {{item_id: i{n}, name: i{n}, description: d, entries: "
        f"[{{field: user.name, type: match, operator: included, value: u{n}}}]}}\n"
        for n in range(10_001)
    )
    (rules / "exceptions" / "approved.yaml").write_text(LIST + items, encoding="utf-8")
    result = dac("deploy", str(rules), env=env)
    assert result.exit_code == 1
    assert "10,003 items" in result.stderr and "approved.yaml:4:1" in result.stderr
    assert kibana.writes == 0


def test_reference_removed_by_import_is_a_failure(kibana, env) -> None:
    client = KibanaClient(kibana.url, auth=("elastic", "Sup3r-Secret-Pa55word"))
    body = json.loads(
        json.dumps(
            {
                "rule_id": "r-dangling",
                "name": "n",
                "description": "d",
                "type": "eql",
                "language": "eql",
                "query": "process where true",
                "index": ["logs-*"],
                "severity": "low",
                "risk_score": 1,
                "exceptions_list": [
                    {"id": "nope", "list_id": "nope", "type": "detection", "namespace_type": "single"}
                ],
            }
        )
    )
    outcome = client.import_rules([body])
    status, message = outcome["r-dangling"]
    assert status == 400 and "Reference has been removed" in message


def test_contract_server_answers_like_kibana(kibana) -> None:
    http = KibanaClient(kibana.url, auth=("elastic", "Sup3r-Secret-Pa55word")).http
    ok = (200, 400, 404, 409)
    lst = {"list_id": "l1", "name": "n", "description": "d", "type": "detection"}
    assert http.request("POST", "/api/exception_lists", json=lst, ok=ok).status_code == 200
    dup = http.request("POST", "/api/exception_lists", json=lst, ok=ok)
    assert dup.status_code == 409 and 'exception list id: "l1" already exists' in dup.json()["message"]
    item = {
        "list_id": "l1",
        "item_id": "i1",
        "type": "simple",
        "name": "n",
        "description": "d",
        "entries": [{"field": "user.name", "type": "match", "operator": "included", "value": "x"}],
    }
    assert http.request("POST", "/api/exception_lists/items", json=item, ok=ok).status_code == 200
    assert http.request("POST", "/api/exception_lists/items", json=item, ok=ok).status_code == 409
    missing = http.request(
        "POST", "/api/exception_lists/items", json={**item, "item_id": "i2", "list_id": "nope"}, ok=ok
    )
    assert missing.status_code == 404
    bad = http.request(
        "POST",
        "/api/exception_lists/items",
        json={
            **item,
            "item_id": "i3",
            "entries": [{"field": "x", "type": "regex", "operator": "included", "value": "x"}],
        },
        ok=ok,
    )
    assert bad.status_code == 400 and "[request body]" in bad.json()["message"]
    # The 10,001st item of a list is refused.
    store = kibana.state.exceptions.items.setdefault(("default", "single"), {})
    for n in range(3, 10_002):
        store[f"seed{n}"] = {**store["i1"], "item_id": f"seed{n}", "id": f"seed{n}"}
    full = http.request("POST", "/api/exception_lists/items", json={**item, "item_id": "last"}, ok=ok)
    assert full.status_code == 400 and "exceed max size of 10000" in full.json()["message"]
    assert (
        http.request(
            "GET", "/api/exception_lists", params={"list_id": "gone", "namespace_type": "single"}, ok=ok
        ).status_code
        == 404
    )


@pytest.mark.parametrize("n", [1])
def test_export_carries_lists_and_items(kibana, env, dac, tmp_path: Path, n: int) -> None:
    rules = _repo(tmp_path, n + 1)
    assert dac("deploy", str(rules), env=env).exit_code == 0
    client = KibanaClient(kibana.url, auth=("elastic", "Sup3r-Secret-Pa55word"))
    resp = client.http.request(
        "POST",
        "/api/detection_engine/rules/_export",
        params={"exclude_export_details": "false"},
        json={"objects": [{"rule_id": "gen-rule-0001"}]},
    )
    lines = [json.loads(x) for x in resp.text.splitlines() if x.strip()]
    assert [("rule_id" in x, "item_id" in x, "list_id" in x and "item_id" not in x) for x in lines[:4]] == [
        (True, False, False),
        (False, False, True),
        (False, True, False),
        (False, True, False),
    ]
    assert (
        lines[-1]["exported_exception_list_count"] == 1
        and lines[-1]["exported_exception_list_item_count"] == 2
    )


def _events(path: Path) -> Path:
    """Two chains of tool0001.exe: one by the admin (excepted), one by bob (a true positive)."""
    docs = []
    for n, (user, entity) in enumerate((("admin", "p-admin"), ("bob", "p-bob"))):
        base = {
            "user": {"name": user},
            "host": {"name": "ws-1"},
            "process": {"entity_id": entity, "name": "tool0001.exe"},
        }
        docs.append(
            {
                **base,
                "@timestamp": f"2026-01-01T00:00:0{2 * n}Z",
                "event": {"id": f"{user}-1", "category": ["process"], "type": ["start"]},
            }
        )
        docs.append(
            {
                **base,
                "@timestamp": f"2026-01-01T00:00:0{2 * n + 1}Z",
                "event": {"id": f"{user}-2", "category": ["network"], "type": ["connection"]},
            }
        )
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def test_export_import_validate_plan_round_trip_with_lists(kibana, env, dac, tmp_path: Path) -> None:
    from deployer.config import Config
    from deployer.rules.findings import ERROR
    from deployer.rules.validate import validate

    rules = _repo(tmp_path)
    assert dac("deploy", str(rules), env=env).exit_code == 0

    # Live export: rule files plus the lists they reference under exceptions/.
    live = tmp_path / "live"
    run = dac("export", "--owned", "--out", str(live), env=env)
    assert run.exit_code == 0, run.stderr
    exported = live / "exceptions" / "approved_tools.yaml"
    text = exported.read_text()
    assert "list_id: approved-tools" in text and "managed-by:dac" not in text and "tie_breaker_id" not in text
    assert [f for f in validate([live], Config(root=tmp_path)) if f.severity == ERROR] == []
    kibana.reset_counts()
    plan = dac("plan", str(live), env=env)
    assert plan.exit_code == 0 and "No changes" in plan.stdout, plan.stdout + plan.stderr

    # Kibana's own export file (rules, list lines, item lines, details line) converted offline.
    client = KibanaClient(kibana.url, auth=("elastic", "Sup3r-Secret-Pa55word"))
    ndjson = tmp_path / "export.ndjson"
    ndjson.write_text(
        client.http.request(
            "POST", "/api/detection_engine/rules/_export", params={"exclude_export_details": "false"}
        ).text
    )
    imported = tmp_path / "imported"
    run = dac("import", str(ndjson), "--out", str(imported))
    assert run.exit_code == 0, run.stderr
    assert "Wrote 1 exception list file(s)" in run.stderr
    assert [f for f in validate([imported], Config(root=tmp_path)) if f.severity == ERROR] == []
    plan = dac("plan", str(imported), env=env)
    assert plan.exit_code == 0 and "No changes" in plan.stdout, plan.stdout + plan.stderr

    # The imported rules and lists are applied offline with no further step.
    ran = dac("run", "--rules", str(imported), "--events", str(_events(tmp_path / "e.ndjson")))
    assert ran.exit_code == 0, ran.stderr
    assert [json.loads(x)["event_ids"] for x in ran.stdout.splitlines()] == [["bob-1", "bob-2"]]
