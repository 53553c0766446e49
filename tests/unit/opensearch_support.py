"""Shared by the OpenSearch unit tests: a minimal EQL rule body and an in-process Alerting API.

The model holds to what the Alerting plugin does (read in its source and checked against the
2.19.4.0 plugin in the integration tests): ``_search`` returns ``ui_metadata`` only to a
User-Agent containing ``OpenSearch-Dashboards``; errors are ``alerting_exception`` envelopes
(404 "Monitor with <id> is not found", 409 version conflict); monitors are stored
re-serialised (query defaults spelled out, ``range`` as from/to, ``minimum_should_match`` as a
string, trigger ``gap_policy`` added, server fields such as ``last_update_time``); ``_search``
returns the flat monitor as ``_source``; the config index does not exist before the first
monitor (404); updates honour ``if_seq_no``/``if_primary_term`` (409 otherwise). It is a model,
not Alerting: it cannot tell whether Alerting accepts a body; the integration tests do that.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


def eql_rule(rule_id: str, query: str, **extra: Any) -> dict[str, Any]:
    """A Kibana EQL rule body named ``Rule <rule_id>``; ``extra`` adds or overrides fields."""
    body = {
        "rule_id": rule_id,
        "name": f"Rule {rule_id}",
        "type": "eql",
        "language": "eql",
        "query": query,
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
            # The real plugin returns ui_metadata only to a User-Agent naming OpenSearch-Dashboards.
            dashboards = "OpenSearch-Dashboards" in (self.headers.get("User-Agent") or "")
            hits = [
                {
                    "_id": mid,
                    "_seq_no": m.seq[mid],
                    "_primary_term": 1,
                    "_source": mon if dashboards else {k: v for k, v in mon.items() if k != "ui_metadata"},
                }
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
                    return self._error(404, "alerting_exception", f"Monitor with {mid} is not found")
                if "if_seq_no" in query and int(query["if_seq_no"]) != m.seq[mid]:
                    return self._error(
                        409,
                        "alerting_exception",
                        f"[{mid}]: version conflict, required seqNo [{query['if_seq_no']}], primary term "
                        f"[1]. current document has seqNo [{m.seq[mid]}] and primary term [1]",
                    )
                m.monitors[mid] = m.store(body)
                m.seq[mid] += 1
                return self._send(
                    200, {"_id": mid, "_seq_no": m.seq[mid], "_primary_term": 1, "monitor": m.monitors[mid]}
                )
            if method == "DELETE":
                if m.monitors.pop(mid, None) is None:
                    return self._error(404, "alerting_exception", f"Monitor with {mid} is not found")
                return self._send(200, {"_id": mid, "_version": m.seq[mid] + 2})
        return self._error(400, "illegal_argument_exception", f"no handler for {method} {path}")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


@contextmanager
def serve_alerting() -> Iterator[tuple[str, AlertingModel]]:
    """Serve a fresh AlertingModel on a free local port; yield its base URL and the model."""
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
