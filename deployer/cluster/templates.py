"""Plan and apply component/index templates on an Elasticsearch or OpenSearch cluster.

Idempotency: every template written carries `_meta.dac_hash`, the SHA-256 of its canonical
desired body. A template whose stored hash matches is unchanged and is not written again; one
that exists with another hash (or none) is updated; a missing one is created.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from deployer.cluster.errors import ClusterError

CREATE, UPDATE, UNCHANGED = "create", "update", "unchanged"
KINDS = (
    ("component_templates", "_component_template", "component_template"),
    ("index_templates", "_index_template", "index_template"),
)
RETRY_STATUSES = (429, 502, 503, 504)


@dataclass
class Change:
    """One template and what deploying it does."""

    kind: str
    name: str
    action: str
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the change as a JSON-ready dict."""
        out: dict[str, Any] = {"kind": self.kind, "name": self.name, "action": self.action}
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class TemplatePlan:
    """The changes a deploy makes, in write order (component templates first)."""

    url: str
    changes: list[Change] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        """Return the number of templates per action."""
        counts = {CREATE: 0, UPDATE: 0, UNCHANGED: 0}
        for change in self.changes:
            counts[change.action] = counts.get(change.action, 0) + 1
        return counts


def template_hash(body: Mapping[str, Any]) -> str:
    """Return the SHA-256 of a template body's canonical JSON, ignoring any previous dac_hash."""
    clean = copy.deepcopy(dict(body))
    meta = dict(clean.get("_meta") or {})
    meta.pop("dac_hash", None)
    if meta:
        clean["_meta"] = meta
    else:
        clean.pop("_meta", None)
    canonical = json.dumps(clean, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def with_hash(body: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of `body` whose `_meta` records its hash and that dac manages it."""
    out = copy.deepcopy(dict(body))
    meta = dict(out.get("_meta") or {})
    meta.setdefault("managed_by", "dac")
    meta["dac_hash"] = template_hash(body)
    out["_meta"] = meta
    return out


class ClusterHttp:
    """A minimal JSON-over-HTTP client with retries on 429/5xx and connection errors."""

    def __init__(
        self,
        url: str,
        *,
        auth: tuple[str, str] | None = None,
        api_key: str | None = None,
        verify: bool | str = True,
        timeout: float = 30.0,
        retries: int = 4,
    ) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.verify = verify
        if auth:
            self.session.auth = auth
        if api_key:
            self.session.headers["Authorization"] = f"ApiKey {api_key}"
        self.timeout = timeout
        self.retries = retries

    def request(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = ()) -> tuple[int, Any]:
        """Send a request; return (status, parsed body); raise ClusterError on failure."""
        delay = 0.5
        for attempt in range(self.retries + 1):
            try:
                resp = self.session.request(method, self.url + path, json=body, timeout=self.timeout)
            except requests.RequestException as exc:
                if attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
                    continue
                raise ClusterError(
                    f"{method} {self.url}{path} failed: {exc}",
                    hint="check that the cluster is up (dac cluster status) and the URL",
                ) from exc
            if resp.status_code in RETRY_STATUSES and attempt < self.retries:
                time.sleep(delay)
                delay *= 2
                continue
            try:
                data = resp.json() if resp.content else None
            except ValueError:
                data = resp.text
            if resp.status_code < 300 or resp.status_code in ok:
                return resp.status_code, data
            reason = data
            if isinstance(data, dict) and isinstance(data.get("error"), dict):
                reason = data["error"].get("reason") or data["error"]
            raise ClusterError(f"{method} {path} returned {resp.status_code}: {reason}")
        raise AssertionError("unreachable")


def _stored_hash(kind_key: str, data: Any) -> str | None:
    entries = (data or {}).get(f"{kind_key}s") or []
    if not entries:
        return None
    body = entries[0].get(kind_key) or {}
    meta = body.get("_meta") or {}
    value = meta.get("dac_hash")
    return str(value) if value else ""


def plan_templates(http: ClusterHttp, templates: Mapping[str, Mapping[str, Any]]) -> TemplatePlan:
    """Compare the desired templates with the cluster's and return the plan (nothing is written)."""
    plan = TemplatePlan(http.url)
    for group, endpoint, kind_key in KINDS:
        for name, body in sorted((templates.get(group) or {}).items()):
            status, data = http.request("GET", f"/{endpoint}/{name}", ok=(404,))
            if status == 404:
                action = CREATE
            else:
                action = UNCHANGED if _stored_hash(kind_key, data) == template_hash(body) else UPDATE
            plan.changes.append(Change(kind_key, name, action))
    return plan


def apply_templates(
    http: ClusterHttp, templates: Mapping[str, Mapping[str, Any]], plan: TemplatePlan | None = None
) -> TemplatePlan:
    """Write every template the plan creates or updates (component templates first)."""
    plan = plan or plan_templates(http, templates)
    bodies = {kind_key: templates.get(group) or {} for group, _, kind_key in KINDS}
    endpoints = {kind_key: endpoint for _, endpoint, kind_key in KINDS}
    for change in plan.changes:
        if change.action == UNCHANGED:
            continue
        try:
            http.request(
                "PUT", f"/{endpoints[change.kind]}/{change.name}", with_hash(bodies[change.kind][change.name])
            )
        except ClusterError as exc:
            change.error = exc.message
            # Index templates compose the component ones: stop at the first failure so nothing
            # is written on top of a missing or stale component.
            break
    return plan
