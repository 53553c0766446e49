"""A contract test server that holds to Kibana's documented detection engine behaviour.

It is a real HTTP server (threaded, 127.0.0.1, free port, optional TLS) that:
- validates every request body and query parameter against Kibana's published OpenAPI spec
  (loaded at test time; `$ref`s resolved through a `referencing` registry, validated with
  jsonschema) and answers 400 with the `[request body]`/`[request query]` messages;
- requires `kbn-xsrf` on writes and `elastic-api-version: 2023-10-31` on detection engine routes;
- checks credentials (API key or basic) and answers 401 in Kibana's platform error shape;
- stores rules per space and answers `_find` (paged, a KQL subset), `_import` (multipart,
  overwrite, per-rule errors), `_bulk_action` (enable/disable/delete, 100-id limit, HTTP 500 on
  partial failure), `_export` (ndjson + export details), rule CRUD and `/api/status`;
- injects faults on request (429/503/... with optional Retry-After) and per-rule import errors;
- records every request so tests can count reads and writes.

Where Kibana's behaviour is not documented (e.g. the message for an unknown id in a bulk action)
the choice made here is marked "undocumented".
"""

from __future__ import annotations

import base64
import copy
import email.parser
import email.policy
import json
import re
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from jsonschema import Draft4Validator
from kibana_contract_exceptions import ExceptionRoutes, ExceptionsState
from kibana_contract_exceptions import Reply as ExceptionReply
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

API_VERSION = "2023-10-31"
DE = "/api/detection_engine"
RULES = f"{DE}/rules"
LISTS = "/api/lists"

# Fields only the server sets; accepted (and ignored) on import lines, as Kibana does. Written
# out here rather than imported from deployer.rules.kibana_fields on purpose: the contract server
# stands for Kibana, so it must not share the deployer's idea of Kibana's behaviour.
RESPONSE_ONLY = {
    "id",
    "created_at",
    "created_by",
    "updated_at",
    "updated_by",
    "revision",
    "immutable",
    "rule_source",
    "execution_summary",
}


def _oas_to_jsonschema(node: Any) -> Any:
    """Turn OpenAPI 3.0 `nullable: true` into a JSON-schema type list (the one keyword jsonschema lacks)."""
    if isinstance(node, dict):
        out = {k: _oas_to_jsonschema(v) for k, v in node.items()}
        if out.pop("nullable", False) and "type" in out:
            t = out["type"]
            out["type"] = [*t, "null"] if isinstance(t, list) else [t, "null"]
        return out
    if isinstance(node, list):
        return [_oas_to_jsonschema(v) for v in node]
    return node


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class KibanaSpec:
    """Kibana's bundled OpenAPI spec, ready to validate requests and responses."""

    URN = "urn:kibana-detections-oas"

    def __init__(self, path: Path) -> None:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        self.spec = _oas_to_jsonschema(raw)
        resource = Resource.from_contents(self.spec, default_specification=DRAFT4)
        self.registry = Registry().with_resource(self.URN, resource)
        self._validators: dict[str, Draft4Validator] = {}

    def _validator(self, pointer: str) -> Draft4Validator:
        if pointer not in self._validators:
            self._validators[pointer] = Draft4Validator(
                {"$ref": f"{self.URN}#/{pointer}"}, registry=self.registry
            )
        return self._validators[pointer]

    def errors(self, pointer: str, instance: Any) -> list[str]:
        """Return validation messages (`path: message`) for instance against the schema at pointer."""
        out = []
        for e in sorted(self._validator(pointer).iter_errors(instance), key=lambda e: list(e.path)):
            where = ".".join(str(p) for p in e.path)
            out.append(f"{where}: {e.message}" if where else e.message)
        return out

    def component(self, name: str) -> str:
        """Return the pointer of a component schema."""
        return _pointer("components", "schemas", name)

    def operation(self, path: str, method: str) -> dict[str, Any]:
        """Return the operation object of a path."""
        return self.spec["paths"][path][method]

    def body_pointer(self, path: str, method: str, content_type: str = "application/json") -> str:
        """Return the pointer of an operation's request body schema."""
        return _pointer("paths", path, method, "requestBody", "content", content_type, "schema")

    def create_schema_for(self, rule_type: Any) -> str | None:
        """Return the create-props schema pointer for a rule type (the spec's discriminator mapping)."""
        mapping = self.spec["components"]["schemas"]["RuleCreateProps"]["discriminator"]["mapping"]
        ref = mapping.get(rule_type) if isinstance(rule_type, str) else None
        return ref[2:] if ref else None

    def query_errors(self, path: str, method: str, query: dict[str, list[str]]) -> list[str]:
        """Validate query parameters (decoded from strings by their declared type)."""
        errors = []
        for i, param in enumerate(self.operation(path, method).get("parameters", [])):
            if param.get("in") != "query":
                continue
            name = param["name"]
            if name not in query:
                if param.get("required"):
                    errors.append(f"{name}: Required")
                continue
            pointer = _pointer("paths", path, method, "parameters", str(i), "schema")
            schema = self._resolve(param["schema"])
            values = query[name]
            value: Any
            if schema.get("type") == "array":
                value = [_coerce(v, self._resolve(schema.get("items", {}))) for v in values]
            else:
                value = _coerce(values[-1], schema)
            errors.extend(f"{name}: {e}" for e in self.errors(pointer, value))
        return errors

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        if not ref:
            return schema
        node: Any = self.spec
        for part in ref.lstrip("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node


def _coerce(text: str, schema: dict[str, Any]) -> Any:
    t = schema.get("type")
    if t == "integer":
        try:
            return int(text)
        except ValueError:
            return text
    if t == "boolean":
        return {"true": True, "false": False}.get(text, text)
    return text


@dataclass
class Fault:
    """Answer `status` to the next `times` matching requests."""

    status: int
    times: int = 1
    path_contains: str = ""
    method: str | None = None
    retry_after: str | None = None
    message: str = "injected fault"
    # Close the connection without answering (a network drop); the request is not processed.
    drop: bool = False
    # Process the request, then drop the connection before answering (a reply lost in flight).
    drop_after: bool = False
    # Seconds to hold the request before processing it (to make concurrent clients overlap).
    delay: float = 0.0


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    status: int = 0
    write: bool = False


@dataclass
class State:
    """Everything the server holds; tests read and change it directly."""

    version: str = "8.15.0"
    api_keys: set[str] = field(default_factory=set)
    users: dict[str, str] = field(default_factory=dict)
    rules: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # space -> rule_id -> stored
    faults: list[Fault] = field(default_factory=list)
    import_rule_errors: dict[str, tuple[int, str]] = field(default_factory=dict)
    # Spaces that exist; None means every space exists (created on first use).
    spaces: set[str] | None = None
    # Value lists (containers only) per space, and the spaces whose list data streams exist.
    value_lists: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    list_indices: set[str] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)
    spec_violations: list[str] = field(default_factory=list)
    exceptions: ExceptionsState = field(default_factory=ExceptionsState)


class _Reply(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}


def _platform_error(status: int, error: str, message: str) -> _Reply:
    return _Reply(status, {"statusCode": status, "error": error, "message": message})


def _siem_error(status: int, message: str) -> _Reply:
    return _Reply(status, {"status_code": status, "message": message})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Defaults Kibana fills into a stored rule (spec descriptions / response schema). Kept apart from
# deployer.targets.kibana_rules.DEFAULTS on purpose: were they shared, a wrong default would be
# wrong on both sides and the contract tests could not catch it.
_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "interval": "5m",
    "from": "now-6m",
    "to": "now",
    "max_signals": 100,
    "version": 1,
    "tags": [],
    "author": [],
    "false_positives": [],
    "references": [],
    "threat": [],
    "actions": [],
    "exceptions_list": [],
    "risk_score_mapping": [],
    "severity_mapping": [],
    "related_integrations": [],
    "required_fields": [],
    "setup": "",
}


class KibanaContractServer:
    """Start with `start()`, stop with `stop()`; `url` is the base URL."""

    def __init__(
        self,
        spec: KibanaSpec,
        *,
        ssl_context: ssl.SSLContext | None = None,
        lists_spec: KibanaSpec | None = None,
        exceptions_spec: KibanaSpec | None = None,
    ) -> None:
        self.spec = spec
        self.lists_spec = lists_spec
        self.state = State()
        # Exception lists and items (routes held to the exceptions spec; absent without it).
        self.exceptions = (
            ExceptionRoutes(exceptions_spec, self.state.exceptions, self.state.spec_violations, _now)
            if exceptions_spec is not None
            else None
        )
        self.lock = threading.RLock()
        server = self
        handler = type("Handler", (_Handler,), {"server_ref": server})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if ssl_context is not None:
            self.httpd.socket = ssl_context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.port = self.httpd.server_address[1]
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> KibanaContractServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="kibana-contract", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- test helpers --------------------------------------------------------------------------

    def add_api_key(self, raw: str) -> str:
        """Accept an API key (`id:key`); returns its encoded form as Elasticsearch hands it out."""
        encoded = base64.b64encode(raw.encode()).decode()
        self.state.api_keys.add(encoded)
        return encoded

    def fail(self, status: int, times: int = 1, **kw: Any) -> None:
        """Answer `status` to the next `times` matching requests."""
        with self.lock:
            self.state.faults.append(Fault(status, times, **kw))

    def rules(self, space: str = "default") -> dict[str, dict[str, Any]]:
        """Return the stored rules of a space by rule_id."""
        return self.state.rules.setdefault(space, {})

    def seed(self, body: dict[str, Any], space: str = "default") -> dict[str, Any]:
        """Store a rule directly (as if created by someone else) and return its response form."""
        with self.lock:
            return self._store(space, body, existing=None)

    def edit(self, rule_id: str, space: str = "default", **changes: Any) -> dict[str, Any]:
        """Change a stored rule as a person in the Kibana UI would (a full update: revision + 1)."""
        with self.lock:
            existing = self.rules(space)[rule_id]
            body = {k: v for k, v in existing.items() if k not in RESPONSE_ONLY}
            return self._store(space, {**body, **changes}, existing)

    def count(self, method: str | None = None, path_contains: str = "") -> int:
        """Count recorded requests by method and path fragment."""
        return sum(
            1
            for r in self.state.requests
            if (method is None or r.method == method) and path_contains in r.path
        )

    @property
    def writes(self) -> int:
        """Number of requests that change (or would change) stored rules."""
        return sum(1 for r in self.state.requests if r.write)

    def reset_counts(self) -> None:
        """Forget the recorded requests."""
        with self.lock:
            self.state.requests.clear()

    # -- storage -------------------------------------------------------------------------------

    def _store(self, space: str, body: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
        now = _now()
        stored = {k: copy.deepcopy(v) for k, v in body.items() if k not in RESPONSE_ONLY}
        for k, v in _DEFAULTS.items():
            stored.setdefault(k, copy.deepcopy(v))
        stored["rule_id"] = body.get("rule_id") or str(uuid.uuid4())
        stored["required_fields"] = [
            {**f, "ecs": f.get("name", "").startswith(("process.", "event.", "host.", "user."))}
            for f in stored["required_fields"]
        ]
        stored.update(
            id=existing["id"] if existing else str(uuid.uuid4()),
            created_at=existing["created_at"] if existing else now,
            created_by=existing["created_by"] if existing else "elastic",
            updated_at=now,
            updated_by="elastic",
            revision=(existing["revision"] + 1) if existing else 0,
            immutable=False,
            rule_source={"type": "internal"},
        )
        self.rules(space)[stored["rule_id"]] = stored
        errors = self.spec.errors(self.spec.component("RuleResponse"), stored)
        if errors:
            self.state.spec_violations.append(f"response for {stored['rule_id']}: {errors[:3]}")
        return copy.deepcopy(stored)

    def _by_id(self, space: str) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in self.rules(space).values()}


_KQL_TERM = re.compile(r'^\s*alert\.attributes\.([A-Za-z_.]+)\s*:\s*(\(.*\)|"[^"]*"|\S+)\s*$')


def _kql_match(expr: str, rule: dict[str, Any]) -> bool:
    """A subset of KQL over rule attributes: `field:value`, `field:("a" OR "b")`, joined by AND/OR."""
    expr = expr.strip()
    for op in (" OR ", " AND "):
        parts = _split_top(expr, op)
        if len(parts) > 1:
            results = (_kql_match(p, rule) for p in parts)
            return any(results) if op == " OR " else all(results)
    if expr.startswith("NOT "):
        return not _kql_match(expr[4:], rule)
    m = _KQL_TERM.match(expr)
    if not m:
        raise _platform_error(400, "Bad Request", f"Invalid filter: unsupported KQL {expr!r}")
    fld, raw = m.group(1), m.group(2)
    values = (
        [v.strip().strip('"') for v in raw.strip("()").split(" OR ")]
        if raw.startswith("(")
        else [raw.strip('"')]
    )
    attr = {"params.ruleId": "rule_id", "createdBy": "created_by", "updatedBy": "updated_by"}.get(fld, fld)
    have = rule.get(attr)
    for v in values:
        if isinstance(have, list) and v in have:
            return True
        if isinstance(have, bool) and v in ("true", "false") and have == (v == "true"):
            return True
        if isinstance(have, str) and have == v:
            return True
    return False


def _split_top(expr: str, op: str) -> list[str]:
    parts, depth, quoted, start, i = [], 0, False, 0, 0
    while i < len(expr):
        ch = expr[i]
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and expr.startswith(op, i):
            parts.append(expr[start:i])
            i += len(op)
            start = i
            continue
        i += 1
    parts.append(expr[start:])
    return parts


class _Handler(BaseHTTPRequestHandler):
    server_ref: KibanaContractServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean; requests are recorded in state instead

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    # -- plumbing ------------------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        srv = self.server_ref
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        space, path = "default", parts.path
        m = re.match(r"^/s/([a-z0-9_-]+)(/.*)$", path)
        if m:
            space, path = m.group(1), m.group(2)
        rec = Request(method, parts.path, query)
        with srv.lock:
            srv.state.requests.append(rec)
        try:
            with srv.lock:
                fault = self._fault(method, parts.path)
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
            if fault is not None and fault.drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault is not None and fault.status:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                raise _Reply(
                    fault.status,
                    {
                        "statusCode": fault.status,
                        "error": self.responses.get(fault.status, ("Error",))[0],
                        "message": fault.message,
                    },
                    headers,
                )
            self._authenticate()
            if srv.state.spaces is not None and space not in srv.state.spaces:
                # undocumented: the spaces plugin's answer for a space that does not exist
                raise _platform_error(404, "Not Found", f"Saved object [space/{space}] not found")
            if path.startswith(DE) or path.startswith("/api/exception_lists"):
                self._check_headers(method)
            with srv.lock:
                status, body, headers = self._route(method, path, space, query, raw, rec)
            if fault is not None and fault.drop_after:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
        except _Reply as r:
            status, body, headers = r.status, r.body, r.headers
        except Exception as e:  # a bug in this server must fail the test, not look like a network error
            srv.state.spec_violations.append(f"contract server error on {method} {parts.path}: {e!r}")
            status, body, headers = 500, {"message": "Internal Server Error", "status_code": 500}, {}
        rec.status = status
        self._send(status, body, headers)

    def _fault(self, method: str, path: str) -> Fault | None:
        for f in self.server_ref.state.faults:
            if f.times > 0 and f.path_contains in path and (f.method is None or f.method == method):
                f.times -= 1
                return f
        return None

    def _authenticate(self) -> None:
        st = self.server_ref.state
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme == "ApiKey" and value in st.api_keys:
            return
        if scheme == "Basic":
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except ValueError:
                user, password = "", None
            if st.users.get(user) == password and password is not None:
                return
        raise _platform_error(
            401,
            "Unauthorized",
            "[security_exception\n\tRoot causes:\n\t\tsecurity_exception: unable to authenticate user for REST request "
            "[/_security/_authenticate]]: unable to authenticate user for REST request [/_security/_authenticate]",
        )

    def _check_headers(self, method: str) -> None:
        if method not in ("GET", "HEAD") and not (
            self.headers.get("kbn-xsrf") or self.headers.get("kbn-version")
        ):
            raise _platform_error(400, "Bad Request", "Request must contain a kbn-xsrf header.")
        version = self.headers.get("elastic-api-version")
        if version is None:
            # Kibana would fall back to its default; this server insists so clients always pin it.
            raise _platform_error(
                400, "Bad Request", "Please specify a version via elastic-api-version header."
            )
        if version != API_VERSION:
            raise _platform_error(
                400,
                "Bad Request",
                f'No version "{version}" available for [{method.lower()}] [{urlsplit(self.path).path}]. '
                f"Available versions are: [{API_VERSION}]",
            )

    def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
        if isinstance(body, bytes | str):
            data = body.encode() if isinstance(body, str) else body
            ctype = headers.pop("Content-Type", "application/ndjson")
        else:
            data = json.dumps(body).encode()
            ctype = "application/json; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("elastic-api-version", API_VERSION)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _json_body(
        self, raw: bytes, pointer: str | None, *, required: bool = True, spec: KibanaSpec | None = None
    ) -> Any:
        if not raw:
            if required:
                raise _platform_error(400, "Bad Request", "[request body]: Expected object, received null")
            return None
        if "application/json" not in (self.headers.get("Content-Type") or ""):
            raise _platform_error(415, "Unsupported Media Type", "Unsupported Media Type")
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as e:
            raise _platform_error(400, "Bad Request", f"[request body]: Invalid JSON: {e.msg}") from None
        if pointer is not None:
            errors = (spec or self.server_ref.spec).errors(pointer, body)
            if errors:
                raise _platform_error(400, "Bad Request", "[request body]: " + ", ".join(errors[:5]))
        return body

    def _query(self, path: str, method: str, query: dict[str, list[str]]) -> None:
        errors = self.server_ref.spec.query_errors(path, method, query)
        if errors:
            raise _platform_error(400, "Bad Request", "[request query]: " + ", ".join(errors))

    # -- routes --------------------------------------------------------------------------------

    def _route(
        self, method: str, path: str, space: str, query: dict[str, list[str]], raw: bytes, rec: Request
    ) -> tuple[int, Any, dict[str, str]]:
        srv = self.server_ref
        spec = srv.spec
        if path == "/api/status" and method == "GET":
            return 200, self._status_body(), {}
        if path in (LISTS, f"{LISTS}/index") and srv.lists_spec is not None:
            return self._lists(method, path, space, query, raw)
        if srv.exceptions is not None and srv.exceptions.handles(path):
            body = self._json_body(raw, None) if method in ("POST", "PUT") else None
            rec.write = method != "GET"
            try:
                status, answer = srv.exceptions.route(method, path, space, query, body)
            except ExceptionReply as r:
                raise _Reply(r.status, r.body) from None
            return status, answer, {}
        if path == RULES:
            self._query(path, method.lower(), query)
            if method == "POST":
                rec.write = True
                body = self._json_body(raw, None)
                # Follow the spec's discriminator on `type` so messages name the failing field.
                pointer = spec.create_schema_for(body.get("type") if isinstance(body, dict) else None)
                errors = spec.errors(pointer or spec.component("RuleCreateProps"), body)
                if errors:
                    raise _platform_error(400, "Bad Request", "[request body]: " + ", ".join(errors[:5]))
                if body.get("rule_id") in srv.rules(space):
                    raise _siem_error(409, f'rule_id: "{body["rule_id"]}" already exists')
                return 200, srv._store(space, body, None), {}
            if method in ("GET", "DELETE"):
                rule = self._lookup(space, query)
                if method == "DELETE":
                    rec.write = True
                    del srv.rules(space)[rule["rule_id"]]
                return 200, rule, {}
            if method == "PUT":
                rec.write = True
                body = self._json_body(raw, spec.component("RuleUpdateProps"))
                rule = self._lookup(space, {k: [v] for k, v in body.items() if k in ("id", "rule_id")})
                return 200, srv._store(space, {**body, "rule_id": rule["rule_id"]}, rule), {}
        if path == f"{RULES}/_find" and method == "GET":
            return 200, self._find(space, query), {}
        if path == f"{RULES}/_import" and method == "POST":
            rec.write = True
            self._query(path, "post", query)
            return 200, self._import(space, query, raw), {}
        if path == f"{RULES}/_bulk_action" and method == "POST":
            self._query(path, "post", query)
            body = self._json_body(raw, spec.body_pointer(path, "post"))
            rec.write = body.get("action") != "export" and query.get("dry_run", ["false"])[-1] != "true"
            return self._bulk(space, body, query)
        if path == f"{RULES}/_export" and method == "POST":
            self._query(path, "post", query)
            body = self._json_body(raw, spec.body_pointer(path, "post"), required=False)
            return self._export(space, body, query)
        raise _platform_error(404, "Not Found", "Not Found")

    def _lists(
        self, method: str, path: str, space: str, query: dict[str, list[str]], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """Value-list containers: `POST/GET/DELETE /api/lists` and `POST /api/lists/index`."""
        srv = self.server_ref
        spec = srv.lists_spec
        assert spec is not None
        st = srv.state
        stream = f".lists-{space}"
        if path == f"{LISTS}/index":
            if method != "POST":
                raise _platform_error(404, "Not Found", "Not Found")
            if space in st.list_indices:
                raise _siem_error(
                    409, f'data stream: "{stream}" and "{stream.replace("lists", "items")}" already exists'
                )
            st.list_indices.add(space)
            return 200, {"acknowledged": True}, {}
        errors = spec.query_errors(path, method.lower(), query)
        if errors:
            raise _platform_error(400, "Bad Request", "[request query]: " + ", ".join(errors))
        lists = st.value_lists.setdefault(space, {})
        if method == "POST":
            body = self._json_body(raw, spec.body_pointer(path, "post"), spec=spec)
            if space not in st.list_indices:
                raise _siem_error(
                    400,
                    f'To create a list, the data stream must exist first. Data stream "{stream}" does not exist',
                )
            lid = body.get("id") or str(uuid.uuid4())
            # Kibana stores the list with Elasticsearch's `create`: a second create of an id is a 409.
            if lid in lists:
                raise _siem_error(409, f'list id: "{lid}" already exists')
            now = _now()
            stored = {
                "_version": "WzAsMV0=",
                "@timestamp": now,
                "id": lid,
                "type": body["type"],
                "name": body["name"],
                "description": body["description"],
                "immutable": False,
                "version": body.get("version", 1),
                "tie_breaker_id": str(uuid.uuid4()),
                "created_at": now,
                "created_by": "elastic",
                "updated_at": now,
                "updated_by": "elastic",
                **({"meta": body["meta"]} if "meta" in body else {}),
            }
            problems = spec.errors(spec.component("List"), stored)
            if problems:
                st.spec_violations.append(f"list response: {problems[:3]}")
            lists[lid] = stored
            return 200, copy.deepcopy(stored), {}
        lid = query.get("id", [""])[-1]
        if lid not in lists:
            raise _siem_error(404, f'list id: "{lid}" not found')
        if method == "GET":
            return 200, copy.deepcopy(lists[lid]), {}
        if method == "DELETE":
            return 200, lists.pop(lid), {}
        raise _platform_error(404, "Not Found", "Not Found")

    def _status_body(self) -> dict[str, Any]:
        return {
            "name": "kibana-contract",
            "uuid": "00000000-0000-0000-0000-000000000000",
            "version": {
                "number": self.server_ref.state.version,
                "build_hash": "0" * 40,
                "build_number": 1,
                "build_snapshot": False,
            },
            "status": {"overall": {"level": "available", "summary": "All services are available"}},
        }

    def _lookup(self, space: str, query: dict[str, list[str]]) -> dict[str, Any]:
        srv = self.server_ref
        if "id" in query:
            rule = srv._by_id(space).get(query["id"][-1])
            if rule is None:
                raise _siem_error(404, f'id: "{query["id"][-1]}" not found')
            return copy.deepcopy(rule)
        if "rule_id" in query:
            rule = srv.rules(space).get(query["rule_id"][-1])
            if rule is None:
                raise _siem_error(404, f'rule_id: "{query["rule_id"][-1]}" not found')
            return copy.deepcopy(rule)
        raise _siem_error(400, "either 'id' or 'rule_id' must be set")

    def _find(self, space: str, query: dict[str, list[str]]) -> dict[str, Any]:
        self._query(f"{RULES}/_find", "get", query)
        if ("sort_field" in query) != ("sort_order" in query):
            raise _platform_error(
                400,
                "Bad Request",
                '[request query]: when "sort_order" and "sort_field" must exist together or not at all',
            )
        page = int(query.get("page", ["1"])[-1])
        per_page = int(query.get("per_page", ["20"])[-1])
        rules = list(self.server_ref.rules(space).values())
        kql = query.get("filter", [""])[-1]
        if kql:
            rules = [r for r in rules if _kql_match(kql, r)]
        if "sort_field" in query:
            key = {"createdAt": "created_at", "updatedAt": "updated_at", "riskScore": "risk_score"}.get(
                query["sort_field"][-1], query["sort_field"][-1]
            )
            rules.sort(
                key=lambda r: (str(r.get(key, "")), r["id"]), reverse=query["sort_order"][-1] == "desc"
            )
        start = (page - 1) * per_page
        return {
            "page": page,
            "perPage": per_page,
            "total": len(rules),
            "data": [copy.deepcopy(r) for r in rules[start : start + per_page]],
        }

    def _import(self, space: str, query: dict[str, list[str]], raw: bytes) -> dict[str, Any]:
        srv = self.server_ref
        ctype = self.headers.get("Content-Type") or ""
        if not ctype.startswith("multipart/form-data"):
            raise _platform_error(415, "Unsupported Media Type", "Unsupported Media Type")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + raw
        )
        files = [p for p in msg.iter_parts() if p.get_param("name", header="content-disposition") == "file"]
        if not files:
            raise _platform_error(400, "Bad Request", "[request body]: file: Required")
        part = files[0]
        filename = part.get_param("filename", header="content-disposition") or ""
        if not filename.endswith(".ndjson"):
            ext = Path(filename).suffix or "(none)"
            raise _platform_error(400, "Bad Request", f"Invalid file extension {ext}")
        overwrite = query.get("overwrite", ["false"])[-1] == "true"
        lines = [ln for ln in part.get_payload(decode=True).decode("utf-8").splitlines() if ln.strip()]
        errors: list[dict[str, Any]] = []
        success = 0
        rules_count = 0
        seen: dict[str, int] = {}
        parsed: list[dict[str, Any]] = []
        for ln in lines:
            obj = json.loads(ln)
            if "exported_count" in obj or "list_id" in obj or obj.get("type") == "action":
                continue  # export details, exception lists and connectors are not rules
            rules_count += 1
            parsed.append(obj)
            rid = obj.get("rule_id")
            if isinstance(rid, str):
                seen[rid] = seen.get(rid, 0) + 1
        for obj in parsed:
            rid = obj.get("rule_id")
            if not isinstance(rid, str):
                errors.append({"error": {"status_code": 400, "message": "rule_id: Required"}})
                continue
            if seen[rid] > 1:
                errors.append(
                    {
                        "rule_id": rid,
                        "error": {
                            "status_code": 400,
                            "message": f'More than one rule with rule-id: "{rid}" found',
                        },
                    }
                )
                continue
            create = {k: v for k, v in obj.items() if k not in RESPONSE_ONLY}
            pointer = srv.spec.create_schema_for(create.get("type"))
            problems = (
                srv.spec.errors(pointer, create)
                if pointer
                else [f"type: Invalid discriminator value {create.get('type')!r}"]
            )
            if problems:
                errors.append(
                    {"rule_id": rid, "error": {"status_code": 400, "message": ", ".join(problems[:5])}}
                )
                continue
            if rid in srv.state.import_rule_errors:
                status, message = srv.state.import_rule_errors[rid]
                errors.append({"rule_id": rid, "error": {"status_code": status, "message": message}})
                continue
            existing = srv.rules(space).get(rid)
            if existing is not None and not overwrite:
                errors.append(
                    {
                        "rule_id": rid,
                        "error": {"status_code": 409, "message": f'rule_id: "{rid}" already exists'},
                    }
                )
                continue
            removed = self._resolve_references(space, create)
            srv._store(space, create, existing)
            success += 1
            for list_id in removed:
                # Kibana imports the rule without the reference and reports it (success: false).
                errors.append(
                    {
                        "rule_id": rid,
                        "error": {
                            "status_code": 400,
                            "message": f'Rule with rule_id: "{rid}" references a non existent exception list '
                            f'of list_id: "{list_id}". Reference has been removed.',
                        },
                    }
                )
        body = {
            "success": not errors,
            "success_count": success,
            "rules_count": rules_count,
            "errors": errors,
            "exceptions_success": True,
            "exceptions_success_count": 0,
            "exceptions_errors": [],
            "action_connectors_success": True,
            "action_connectors_success_count": 0,
            "action_connectors_errors": [],
            "action_connectors_warnings": [],
        }
        pointer = _pointer(
            "paths", f"{RULES}/_import", "post", "responses", "200", "content", "application/json", "schema"
        )
        problems = srv.spec.errors(pointer, body)
        if problems:
            srv.state.spec_violations.append(f"_import response: {problems[:3]}")
        return body

    def _resolve_references(self, space: str, rule: dict[str, Any]) -> list[str]:
        """Rewrite each exceptions_list `id` to the stored list's (looked up by list_id, type and
        namespace); drop references to lists that do not exist and return their list_ids."""
        exceptions = self.server_ref.exceptions
        refs = rule.get("exceptions_list") or []
        if exceptions is None or not refs:
            return []
        kept, removed = [], []
        for ref in refs:
            resolved = exceptions.resolve_reference(space, ref)
            if resolved is None:
                removed.append(ref.get("list_id"))
            else:
                kept.append(resolved)
        rule["exceptions_list"] = kept
        return removed

    def _bulk(
        self, space: str, body: dict[str, Any], query: dict[str, list[str]]
    ) -> tuple[int, Any, dict[str, str]]:
        srv = self.server_ref
        action = body["action"]
        if "ids" in body and "query" in body:
            raise _siem_error(
                400, "Both query and ids are sent. Define either ids or query in request payload."
            )
        if action not in ("enable", "disable", "delete"):
            raise _siem_error(400, f"action {action!r} is not implemented by the contract server")
        dry_run = query.get("dry_run", ["false"])[-1] == "true"
        by_id = srv._by_id(space)
        if "ids" in body:
            if len(body["ids"]) > 100:
                raise _siem_error(400, "More than 100 ids sent for bulk edit action.")
            targets = body["ids"]
        else:
            targets = [r["id"] for r in srv.rules(space).values() if _kql_match(body.get("query", ""), r)]
        results: dict[str, list[Any]] = {"updated": [], "created": [], "deleted": [], "skipped": []}
        errors: list[dict[str, Any]] = []
        for oid in targets:
            rule = by_id.get(oid)
            if rule is None:
                # undocumented: the exact message Kibana gives for an unknown id
                errors.append({"message": "Rule not found", "status_code": 404, "rules": [{"id": oid}]})
                continue
            if dry_run:
                results["updated"].append(copy.deepcopy(rule))
                continue
            if action == "delete":
                del srv.rules(space)[rule["rule_id"]]
                results["deleted"].append(copy.deepcopy(rule))
            else:
                want = action == "enable"
                if rule["enabled"] == want:
                    results["skipped"].append(
                        {"id": oid, "name": rule["name"], "skip_reason": "RULE_NOT_MODIFIED"}
                    )
                    continue
                rule["enabled"] = want
                rule["updated_at"] = _now()
                results["updated"].append(copy.deepcopy(rule))
        ok = sum(len(v) for k, v in results.items() if k != "skipped")
        out: dict[str, Any] = {
            "success": not errors,
            "rules_count": len(targets),
            "attributes": {
                "results": results,
                "summary": {
                    "total": len(targets),
                    "succeeded": ok,
                    "skipped": len(results["skipped"]),
                    "failed": len(errors),
                },
                "errors": errors,
            },
        }
        problems = srv.spec.errors(srv.spec.component("BulkEditActionResponse"), out)
        if problems:
            srv.state.spec_violations.append(f"_bulk_action response: {problems[:3]}")
        if errors:
            out.update(status_code=500, message="Bulk edit partially failed")
            return 500, out, {}
        return 200, out, {}

    def _export(self, space: str, body: Any, query: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
        rules = self.server_ref.rules(space)
        if body is None:
            chosen, missing = list(rules.values()), []
        else:
            if len(body["objects"]) > 10_000:
                raise _siem_error(400, "Can't export more than 10000 rules")
            ids = [o["rule_id"] for o in body["objects"]]
            chosen = [rules[r] for r in ids if r in rules]
            missing = [{"rule_id": r} for r in ids if r not in rules]
        lines = [json.dumps({k: v for k, v in r.items() if k != "execution_summary"}) for r in chosen]
        # Every exported rule's lists follow with all their items (Kibana skips endpoint_list).
        exported_lists = exported_items = 0
        if self.server_ref.exceptions is not None:
            refs = [ref for r in chosen for ref in r.get("exceptions_list") or []]
            objects, exported_lists, exported_items = self.server_ref.exceptions.export_lines(space, refs)
            lines.extend(json.dumps(o) for o in objects)
        if query.get("exclude_export_details", ["false"])[-1] != "true":
            lines.append(
                json.dumps(
                    {
                        "exported_count": len(chosen) + exported_lists + exported_items,
                        "exported_rules_count": len(chosen),
                        "missing_rules": missing,
                        "missing_rules_count": len(missing),
                        "exported_exception_list_count": exported_lists,
                        "exported_exception_list_item_count": exported_items,
                        "missing_exception_list_item_count": 0,
                        "missing_exception_list_items": [],
                        "missing_exception_lists": [],
                        "missing_exception_lists_count": 0,
                        "exported_action_connector_count": 0,
                        "missing_action_connection_count": 0,
                        "missing_action_connections": [],
                        "excluded_action_connection_count": 0,
                        "excluded_action_connections": [],
                    }
                )
            )
        name = query.get("file_name", ["export.ndjson"])[-1]
        return (
            200,
            "\n".join(lines) + "\n",
            {
                "Content-Type": "application/ndjson",
                "Content-Disposition": f'attachment; filename="{name}"',
            },
        )
