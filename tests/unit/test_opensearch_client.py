"""The OpenSearch client and target over HTTP, against a small in-process model of the Alerting API.

The model holds to what the Alerting plugin does (read in its source): monitors are stored
re-serialised (query defaults spelled out, ``range`` as from/to, ``minimum_should_match`` as a
string, trigger ``gap_policy`` added, server fields such as ``last_update_time``); ``_search``
returns the flat monitor as ``_source``; the config index does not exist before the first
monitor (404); updates honour ``if_seq_no``/``if_primary_term`` (409 otherwise). It is a model,
not Alerting: it cannot tell whether Alerting accepts a body; the integration tests do that.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from deployer.targets.http import RetryPolicy
from deployer.targets.opensearch import OpenSearchClient, OpenSearchError, OpenSearchTarget, deploy
from deployer.targets.plan import CREATE, DELETE, UNCHANGED, UPDATE

SEQ = """
sequence by process.entity_id with maxspan=30s
  [process where event.type == "start" and process.name : "mshta.exe"]
  [network where destination.port in (80, 443)]
"""


def rule(rule_id: str, **extra: Any) -> dict[str, Any]:
    body = {
        "rule_id": rule_id,
        "name": f"Rule {rule_id}",
        "type": "eql",
        "language": "eql",
        "query": SEQ,
        "index": ["logs-endpoint.events.*"],
        "severity": "high",
        "risk_score": 73,
    }
    body.update(extra)
    return body


def reserialise(node: Any) -> Any:
    """Roughly how OpenSearch prints a parsed SearchSourceBuilder back."""
    if isinstance(node, list):
        return [reserialise(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        value = reserialise(value)
        if key == "range" and isinstance(value, dict):
            value = {
                f: {
                    "from": spec.get("gte", spec.get("gt")),
                    "to": spec.get("lte", spec.get("lt")),
                    "include_lower": "gte" in spec,
                    "include_upper": "lte" in spec,
                    **({"format": spec["format"]} if "format" in spec else {}),
                    "boost": 1.0,
                }
                for f, spec in value.items()
            }
        elif key in ("term", "wildcard", "terms", "exists", "prefix", "regexp") and isinstance(value, dict):
            value = {**value, "boost": 1.0}
        elif key == "bool" and isinstance(value, dict):
            value = {**value, "adjust_pure_negative": True, "boost": 1.0}
            if "minimum_should_match" in value:
                value["minimum_should_match"] = str(value["minimum_should_match"])
        out[key] = value
    return out


class AlertingModel:
    """In-memory monitors plus request log, failure injection and auth check."""

    def __init__(self) -> None:
        self.monitors: dict[str, dict[str, Any]] = {}
        self.seq: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_next: list[int] = []
        self.require_auth: str | None = None
        self.next_id = 0

    def store(self, body: dict[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(body)
        stored.pop("type", None)
        stored["inputs"] = reserialise(stored["inputs"])
        for trig in stored["triggers"]:
            trig["bucket_level_trigger"]["condition"]["gap_policy"] = "skip"
            trig["bucket_level_trigger"]["condition"]["script"]["lang"] = "painless"
        stored.update(
            type="monitor",
            schema_version=5,
            last_update_time=1763800000000,
            enabled_time=1763800000000 if stored.get("enabled") else None,
            data_sources={"findings_enabled": False},
            owner="alerting",
        )
        return stored


class Handler(BaseHTTPRequestHandler):
    model: AlertingModel

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, kind: str, reason: str) -> None:
        self._send(
            status,
            {
                "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
                "status": status,
            },
        )

    def _handle(self, method: str) -> None:
        m = self.model
        parts = urlsplit(self.path)
        path, query = parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}
        m.requests.append((method, path))
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"null") if length else None
        if m.require_auth is not None and self.headers.get("Authorization") != m.require_auth:
            return self._error(401, "security_exception", "missing authentication credentials")
        if m.fail_next:
            return self._error(m.fail_next.pop(0), "rejected", "try again later")
        base = "/_plugins/_alerting/monitors"
        if method == "GET" and path == "/_cat/plugins":
            return self._send(
                200, [{"name": "n1", "component": "opensearch-alerting", "version": "2.19.4.0"}]
            )
        if method == "POST" and path == f"{base}/_search":
            if not m.monitors:
                return self._error(
                    404, "index_not_found_exception", "no such index [.opendistro-alerting-config]"
                )
            hits = [
                {"_id": mid, "_seq_no": m.seq[mid], "_primary_term": 1, "_source": mon}
                for mid, mon in m.monitors.items()
            ]
            return self._send(200, {"hits": {"total": {"value": len(hits)}, "hits": hits}})
        if method == "POST" and path == base:
            m.next_id += 1
            mid = f"mon{m.next_id}"
            m.monitors[mid] = m.store(body)
            m.seq[mid] = 0
            return self._send(
                201, {"_id": mid, "_version": 1, "_seq_no": 0, "_primary_term": 1, "monitor": m.monitors[mid]}
            )
        if path.startswith(base + "/"):
            mid = path[len(base) + 1 :]
            if method == "PUT":
                if mid not in m.monitors:
                    return self._error(404, "status_exception", "Monitor not found.")
                if "if_seq_no" in query and int(query["if_seq_no"]) != m.seq[mid]:
                    return self._error(
                        409, "version_conflict_engine_exception", "version conflict, current seqNo differs"
                    )
                m.monitors[mid] = m.store(body)
                m.seq[mid] += 1
                return self._send(
                    200, {"_id": mid, "_seq_no": m.seq[mid], "_primary_term": 1, "monitor": m.monitors[mid]}
                )
            if method == "DELETE":
                if m.monitors.pop(mid, None) is None:
                    return self._error(404, "status_exception", "Monitor not found.")
                return self._send(200, {"_id": mid, "result": "deleted"})
        return self._error(400, "illegal_argument_exception", f"no handler for {method} {path}")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


@pytest.fixture
def server() -> Iterator[tuple[str, AlertingModel]]:
    model = AlertingModel()
    handler = type("BoundHandler", (Handler,), {"model": model})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", model
    finally:
        httpd.shutdown()
        httpd.server_close()


def fast_retry() -> RetryPolicy:
    return RetryPolicy(retries=3, base_delay=0.01, max_delay=0.02, total_budget=5)


def writes(model: AlertingModel) -> list[tuple[str, str]]:
    return [
        r
        for r in model.requests
        if r[0] in ("PUT", "DELETE") or (r[0] == "POST" and not r[1].endswith("_search"))
    ]


def test_deploy_twice_second_writes_nothing_over_http(server: tuple[str, AlertingModel]) -> None:
    url, model = server
    client = OpenSearchClient(url, retry=fast_retry())
    rules = [rule("a"), rule("b", severity="low")]
    plan, results = deploy(OpenSearchTarget(client), rules)
    assert [c.action for c in plan.changes] == [CREATE, CREATE] and all(r.ok for r in results)
    # What came back is the re-serialised form, yet it compares equal to what was sent.
    stored = next(iter(model.monitors.values()))
    assert stored["inputs"][0]["search"]["query"]["query"]["bool"]["minimum_should_match"] == "1"
    model.requests.clear()
    plan2, results2 = deploy(OpenSearchTarget(client), rules)
    assert {c.action for c in plan2.changes} == {UNCHANGED}
    assert results2 == [] and writes(model) == []


def test_update_uses_optimistic_concurrency(server: tuple[str, AlertingModel]) -> None:
    url, model = server
    client = OpenSearchClient(url, retry=fast_retry())
    deploy(OpenSearchTarget(client), [rule("a")])
    plan, results = deploy(OpenSearchTarget(client), [rule("a", severity="critical")])
    assert [c.action for c in plan.changes] == [UPDATE] and results[0].ok
    # A concurrent edit between read and write: the write fails for that rule, nothing is overwritten.
    target = OpenSearchTarget(client)
    desired = target.desired([rule("a", severity="low")])
    current = target.read_current(desired)
    mid = next(iter(model.monitors))
    model.seq[mid] += 1
    from deployer.targets.plan import build_plan

    results = target.apply(build_plan(desired, current, owned=target.owned))
    assert len(results) == 1 and not results[0].ok and results[0].status_code == 409


def test_prune_deletes_owned_only_over_http(server: tuple[str, AlertingModel]) -> None:
    url, model = server
    client = OpenSearchClient(url, retry=fast_retry())
    deploy(OpenSearchTarget(client), [rule("a"), rule("b")])
    foreign = copy.deepcopy(next(iter(model.monitors.values())))
    foreign["name"] = "SOC monitor"
    foreign.pop("ui_metadata")
    model.monitors["hand-made"] = foreign
    model.seq["hand-made"] = 0
    plan, results = deploy(OpenSearchTarget(client), [rule("a")], prune=True)
    assert [(c.action, c.rule_id) for c in plan.changes if c.action != UNCHANGED] == [(DELETE, "b")]
    assert all(r.ok for r in results)
    assert "hand-made" in model.monitors and len(model.monitors) == 2


def test_transient_errors_are_retried(server: tuple[str, AlertingModel]) -> None:
    url, model = server
    client = OpenSearchClient(url, retry=fast_retry())
    model.fail_next = [429, 503]
    assert "opensearch-alerting" in client.plugins()
    assert len([r for r in model.requests if r[1] == "/_cat/plugins"]) == 3


def test_bad_credentials_fail_fast_without_leaking(server: tuple[str, AlertingModel]) -> None:
    url, model = server
    model.require_auth = "Basic " + base64.b64encode(b"deployer:right-secret").decode()
    good = OpenSearchClient.from_env(
        url, env={"OPENSEARCH_USERNAME": "deployer", "OPENSEARCH_PASSWORD": "right-secret"}
    )
    assert good.plugins()
    bad = OpenSearchClient(url, username="deployer", password="wrong-secret", retry=fast_retry())
    model.requests.clear()
    with pytest.raises(OpenSearchError) as info:
        bad.plugins()
    assert info.value.status_code == 401
    assert "wrong-secret" not in str(info.value) and "OPENSEARCH_PASSWORD" in str(info.value.hint)
    assert len(model.requests) == 1  # never retried


def test_unreachable_cluster_is_a_target_error() -> None:
    from deployer.targets.base import TargetError

    client = OpenSearchClient("http://127.0.0.1:9", retry=fast_retry())
    with pytest.raises(TargetError, match="cannot reach OpenSearch"):
        client.plugins()
