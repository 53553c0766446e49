"""The contract server itself keeps Kibana's documented contract (so a client passing against it means something)."""

from __future__ import annotations

import json

import pytest
import requests
from kibana_contract_fixtures import RAW_API_KEY

RULES = "/api/detection_engine/rules"


@pytest.fixture
def http(kibana):
    """A requests session with valid credentials and Kibana's headers."""
    s = requests.Session()
    s.headers.update(
        {
            "Authorization": f"ApiKey {next(iter(kibana.state.api_keys))}",
            "kbn-xsrf": "test",
            "elastic-api-version": "2023-10-31",
        }
    )
    yield s
    s.close()


def _rule(rule_id: str, **kw):
    body = {
        "rule_id": rule_id,
        "name": f"n {rule_id}",
        "description": "d",
        "type": "eql",
        "language": "eql",
        "query": "process where true",
        "risk_score": 10,
        "severity": "low",
    }
    body.update(kw)
    return body


def test_create_validates_against_the_published_schema(kibana, http):
    bad = http.post(kibana.url + RULES, json=_rule("r1", risk_score=500, severity="extreme"))
    assert bad.status_code == 400
    body = bad.json()
    assert body["statusCode"] == 400 and body["error"] == "Bad Request"
    assert body["message"].startswith("[request body]: ")
    missing = http.post(kibana.url + RULES, json={"type": "eql", "language": "eql", "query": "x"})
    assert missing.status_code == 400 and "'name' is a required property" in missing.json()["message"]
    ok = http.post(kibana.url + RULES, json=_rule("r1"))
    assert ok.status_code == 200
    created = ok.json()
    assert created["revision"] == 0 and created["enabled"] is True and created["interval"] == "5m"
    dup = http.post(kibana.url + RULES, json=_rule("r1"))
    assert dup.status_code == 409
    assert dup.json() == {"status_code": 409, "message": 'rule_id: "r1" already exists'}
    missing_rule = http.get(kibana.url + RULES, params={"rule_id": "nope"})
    assert missing_rule.status_code == 404
    assert missing_rule.json() == {"status_code": 404, "message": 'rule_id: "nope" not found'}


def test_headers_are_required(kibana, http):
    no_xsrf = requests.post(
        kibana.url + RULES,
        json=_rule("r2"),
        headers={"Authorization": http.headers["Authorization"], "elastic-api-version": "2023-10-31"},
        timeout=5,
    )
    assert (
        no_xsrf.status_code == 400 and no_xsrf.json()["message"] == "Request must contain a kbn-xsrf header."
    )
    wrong = http.get(kibana.url + RULES + "/_find", headers={"elastic-api-version": "2099-01-01"})
    assert wrong.status_code == 400 and "Available versions are: [2023-10-31]" in wrong.json()["message"]
    anonymous = requests.get(kibana.url + "/api/status", timeout=5)
    assert anonymous.status_code == 401 and anonymous.json()["statusCode"] == 401


def test_find_paginates_and_checks_query_parameters(kibana, http):
    for i in range(45):
        kibana.seed(_rule(f"r{i:02d}", tags=["a"] if i % 2 else ["b"]))
    pages = [
        http.get(kibana.url + RULES + "/_find", params={"page": p, "per_page": 20}).json() for p in (1, 2, 3)
    ]
    assert [len(p["data"]) for p in pages] == [20, 20, 5]
    assert pages[0]["total"] == 45 and pages[0]["perPage"] == 20
    filtered = http.get(
        kibana.url + RULES + "/_find", params={"filter": 'alert.attributes.tags:"a"', "per_page": 100}
    )
    assert filtered.json()["total"] == 22
    half_sort = http.get(kibana.url + RULES + "/_find", params={"sort_field": "name"})
    assert half_sort.status_code == 400
    bad_page = http.get(kibana.url + RULES + "/_find", params={"page": 0})
    assert bad_page.status_code == 400 and "[request query]" in bad_page.json()["message"]


def test_import_semantics(kibana, http):
    kibana.seed(_rule("exists"))
    lines = [
        _rule("exists", name="changed"),
        _rule("new"),
        _rule("bad", severity="nope"),
        {"exported_count": 3},
    ]
    data = "\n".join(json.dumps(x) for x in lines)
    url = kibana.url + RULES + "/_import"
    no_overwrite = http.post(url, files={"file": ("rules.ndjson", data, "application/ndjson")}).json()
    assert (
        no_overwrite["rules_count"] == 3
        and no_overwrite["success_count"] == 1
        and not no_overwrite["success"]
    )
    errors = {e["rule_id"]: e["error"] for e in no_overwrite["errors"]}
    assert errors["exists"] == {"status_code": 409, "message": 'rule_id: "exists" already exists'}
    assert errors["bad"]["status_code"] == 400
    overwrite = http.post(url, params={"overwrite": "true"}, files={"file": ("rules.ndjson", data)}).json()
    assert overwrite["success_count"] == 2
    assert kibana.rules()["exists"]["name"] == "changed" and kibana.rules()["exists"]["revision"] == 1
    wrong_ext = http.post(url, files={"file": ("rules.json", data)})
    assert wrong_ext.status_code == 400 and wrong_ext.json()["message"] == "Invalid file extension .json"


def test_bulk_action_limits_and_partial_failure(kibana, http):
    ids = [kibana.seed(_rule(f"b{i}"))["id"] for i in range(3)]
    url = kibana.url + RULES + "/_bulk_action"
    too_many = http.post(url, json={"action": "delete", "ids": [str(i) for i in range(101)]})
    assert (
        too_many.status_code == 400
        and too_many.json()["message"] == "More than 100 ids sent for bulk edit action."
    )
    both = http.post(url, json={"action": "delete", "ids": ids[:1], "query": "x"})
    assert both.status_code == 400
    bad_action = http.post(url, json={"action": "explode", "ids": ids})
    assert bad_action.status_code == 400
    partial = http.post(url, json={"action": "disable", "ids": [*ids[:2], "no-such-id"]})
    assert partial.status_code == 500
    body = partial.json()
    assert body["success"] is False and body["attributes"]["summary"]["failed"] == 1
    assert kibana.rules()["b0"]["enabled"] is False and kibana.rules()["b2"]["enabled"] is True
    gone = http.post(url, json={"action": "delete", "ids": ids})
    assert gone.status_code == 200 and kibana.rules() == {}


def test_export_lists_missing_rules_in_the_details_line(kibana, http):
    kibana.seed(_rule("e1"))
    resp = http.post(
        kibana.url + RULES + "/_export", json={"objects": [{"rule_id": "e1"}, {"rule_id": "e2"}]}
    )
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/ndjson")
    lines = [json.loads(x) for x in resp.text.splitlines()]
    assert lines[0]["rule_id"] == "e1"
    assert lines[-1]["missing_rules"] == [{"rule_id": "e2"}]


def test_faults_are_injected_and_counted(kibana, http):
    kibana.fail(429, times=1, retry_after="3")
    first = http.get(kibana.url + "/api/status")
    assert first.status_code == 429 and first.headers["Retry-After"] == "3"
    assert http.get(kibana.url + "/api/status").status_code == 200
    assert kibana.count("GET", "/api/status") == 2 and kibana.writes == 0
    assert RAW_API_KEY  # the fixture's key is the one the session sends (encoded)
