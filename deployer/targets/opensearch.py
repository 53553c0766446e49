"""OpenSearch deploy target: an opensearch-py client for the Alerting API and the planner contract.

Rules compile to bucket-level monitors (``deployer.targets.opensearch_compile``). Ownership: every
monitor this project writes is named ``[dac] <rule name>`` and carries
``ui_metadata.dac = {managed_by: dac, rule_id, rule_version, fingerprint}``; only monitors with
both are ever updated or pruned. Credentials come from ``OPENSEARCH_USERNAME`` /
``OPENSEARCH_PASSWORD`` (names configurable in dac.yaml) and are never printed; TLS verification is
on unless turned off explicitly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deployer.targets.base import ProgressCallback, Result, TargetError
from deployer.targets.http import RETRY_STATUSES, RetryPolicy, safe_url
from deployer.targets.opensearch_compile import (
    NAME_PREFIX,
    OWNER_KEY,
    CompiledRule,
    UnsupportedConstruct,
    canonical_json,
    compile_rules,
    is_owned,
)
from deployer.targets.saved_plan import sha256_of

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from deployer.targets.config import TargetConfig
    from deployer.targets.plan import Plan

ALERTING = "/_plugins/_alerting"
# Alerting returns a monitor's `ui_metadata` (where dac keeps its ownership marker) only to
# clients whose User-Agent contains "OpenSearch-Dashboards" (RestHandlerUtils.context in the
# plugin); every other client gets the monitor with that field cut out.
UI_METADATA_USER_AGENT = "dac (reads monitor ui_metadata as OpenSearch-Dashboards does)"


class OpenSearchError(TargetError):
    """A non-success answer from OpenSearch, with the server's reason."""

    def __init__(self, message: str, *, status_code: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.status_code = status_code


def _reason(info: Any) -> str:
    # OpenSearch error envelope: {"error": {"root_cause": [...], "type": ..., "reason": ...}, "status": N}
    if isinstance(info, Mapping):
        err = info.get("error", info)
        if isinstance(err, Mapping):
            causes = err.get("root_cause") or []
            reason = err.get("reason") or err.get("type")
            if causes and isinstance(causes[0], Mapping) and causes[0].get("reason") not in (None, reason):
                return f"{reason}: {causes[0].get('reason')}"
            return str(reason)
        return str(err)
    return str(info)[:300]


class OpenSearchClient:
    """Thin opensearch-py wrapper: auth from the environment, TLS on, retries with backoff."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_cert: str | None = None,
        verify: bool = True,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        from opensearchpy import OpenSearch

        self.url = safe_url(url)
        self.retry = retry or RetryPolicy()
        kwargs: dict[str, Any] = {
            "hosts": [self.url],
            "timeout": timeout,
            "max_retries": 0,  # retries happen in request(), with backoff
            "verify_certs": verify,
            "ssl_show_warn": verify,
        }
        if ca_cert:
            kwargs["ca_certs"] = ca_cert
        if username:
            kwargs["http_auth"] = (username, password or "")
        self.raw: OpenSearch = OpenSearch(**kwargs)

    @classmethod
    def from_env(
        cls,
        url: str,
        *,
        username_env: str = "OPENSEARCH_USERNAME",
        password_env: str = "OPENSEARCH_PASSWORD",
        ca_cert: str | None = None,
        insecure: bool = False,
        timeout: float = 30.0,
        retries: int = 4,
        env: Mapping[str, str] | None = None,
    ) -> OpenSearchClient:
        """Build a client whose credentials come from environment variables (optional on plain HTTP)."""
        env = os.environ if env is None else env
        username = env.get(username_env) or None
        password = env.get(password_env) or None
        if username and not password:
            raise TargetError(f"{username_env} is set but {password_env} is not")
        return cls(
            url,
            username=username,
            password=password,
            ca_cert=ca_cert or env.get("OPENSEARCH_CA_CERT") or None,
            verify=not insecure,
            timeout=timeout,
            retry=RetryPolicy(retries=retries),
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        *,
        ok: Collection[int] = (),
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
    ) -> Any:
        """Send one request; retry 429/5xx/timeouts with backoff; raise OpenSearchError otherwise.

        A non-idempotent request (a monitor create) is retried only when the server cannot have
        acted on it (connection refused, 429, 503), so a lost answer never makes a second monitor.
        """
        from opensearchpy import exceptions as ex

        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return self.raw.transport.perform_request(
                    method, path, body=body, params=dict(params or {}), headers=dict(headers or {}) or None
                )
            except ex.SSLError as exc:
                raise TargetError(
                    f"TLS verification failed for {self.url}",
                    hint="set OPENSEARCH_CA_CERT to the cluster's CA, or turn verification off explicitly",
                ) from exc
            except ex.TransportError as exc:
                status = exc.status_code if isinstance(exc.status_code, int) else None
                if status in ok:
                    return exc.info
                transient = status in RETRY_STATUSES or isinstance(exc, ex.ConnectionTimeout)
                if not idempotent and (status in (502, 504) or isinstance(exc, ex.ConnectionTimeout)):
                    transient = False
                refused = isinstance(exc, ex.ConnectionError) and not isinstance(exc, ex.ConnectionTimeout)
                limit = self.retry.connect_retries if refused else self.retry.retries
                budget_left = self.retry.total_budget - (time.monotonic() - started)
                if (transient or refused) and attempt < limit and budget_left > 0:
                    time.sleep(min(self.retry.backoff(attempt), max(budget_left, 0)))
                    attempt += 1
                    continue
                if refused or isinstance(exc, ex.ConnectionTimeout):
                    raise TargetError(
                        f"cannot reach OpenSearch at {self.url}",
                        hint="is the cluster up? (dac cluster status)",
                    ) from exc
                if status in (401, 403):
                    raise OpenSearchError(
                        f"OpenSearch refused the credentials ({status}) for {method} {path}",
                        status_code=status,
                        hint="check OPENSEARCH_USERNAME/OPENSEARCH_PASSWORD and the user's Alerting permissions",
                    ) from exc
                raise OpenSearchError(
                    f"{method} {path} failed ({status}): {_reason(exc.info)}", status_code=status
                ) from exc

    # ------------------------------------------------------------ cluster

    def info(self) -> dict[str, Any]:
        """Cluster name and version."""
        return dict(self.request("GET", "/"))

    def plugins(self) -> set[str]:
        """Names of the plugins installed on any node."""
        rows = self.request("GET", "/_cat/plugins", params={"format": "json"})
        return {str(r.get("component")) for r in rows or []}

    def has_alerting(self) -> bool:
        """True when a node has the Alerting plugin."""
        return any("alerting" in p for p in self.plugins())

    def require_alerting(self) -> None:
        """Raise a clear TargetError when the Alerting plugin is missing."""
        if not self.has_alerting():
            raise TargetError(
                f"the OpenSearch cluster at {self.url} has no Alerting plugin",
                hint="install opensearch-alerting (bundled in the full distribution)",
            )

    # ------------------------------------------------------------ monitors

    def search_monitors(self) -> list[dict[str, Any]]:
        """Every monitor: dicts with ``_id``, ``_seq_no``, ``_primary_term`` and ``monitor``."""
        body = {"query": {"exists": {"field": "monitor.name"}}, "size": 1000, "seq_no_primary_term": True}
        data = self.request(
            "POST",
            f"{ALERTING}/monitors/_search",
            body,
            ok=(404,),
            headers={"user-agent": UI_METADATA_USER_AGENT},
        )
        out = []
        for hit in ((data or {}).get("hits") or {}).get("hits") or []:
            source = hit.get("_source") or {}
            monitor = source.get("monitor", source)
            if monitor.get("type", "monitor") != "monitor":
                continue
            out.append(
                {
                    "_id": hit.get("_id"),
                    "_seq_no": hit.get("_seq_no"),
                    "_primary_term": hit.get("_primary_term"),
                    "monitor": monitor,
                }
            )
        return out

    def create_monitor(self, body: Mapping[str, Any]) -> str:
        """Create a monitor and return its id."""
        data = self.request(
            "POST", f"{ALERTING}/monitors", body, params={"refresh": "true"}, idempotent=False
        )
        return str(data["_id"])

    def update_monitor(
        self,
        monitor_id: str,
        body: Mapping[str, Any],
        seq_no: int | None = None,
        primary_term: int | None = None,
    ) -> None:
        """Replace a monitor (optimistic concurrency when seq_no/primary_term are known)."""
        params: dict[str, Any] = {"refresh": "true"}
        if seq_no is not None and primary_term is not None:
            params.update(if_seq_no=seq_no, if_primary_term=primary_term)
        self.request("PUT", f"{ALERTING}/monitors/{monitor_id}", body, params=params)

    def delete_monitor(self, monitor_id: str) -> None:
        """Delete a monitor (already gone is fine)."""
        self.request("DELETE", f"{ALERTING}/monitors/{monitor_id}", params={"refresh": "true"}, ok=(404,))

    def execute_monitor(
        self, monitor_id: str, *, dryrun: bool = False, period_end_ms: int | None = None
    ) -> dict[str, Any]:
        """Run a saved monitor now; without dryrun its alerts are persisted."""
        params: dict[str, Any] = {"dryrun": "true" if dryrun else "false"}
        if period_end_ms is not None:
            params["period_end"] = f"{period_end_ms}ms"
        return dict(self.request("POST", f"{ALERTING}/monitors/{monitor_id}/_execute", params=params))

    def alerts(self, monitor_id: str, state: str = "ALL") -> list[dict[str, Any]]:
        """Alerts of one monitor."""
        params = {"monitorId": monitor_id, "alertState": state, "size": 1000}
        data = self.request("GET", f"{ALERTING}/monitors/alerts", params=params)
        return list(data.get("alerts") or [])

    def close(self) -> None:
        """Release connections."""
        self.raw.close()


# ---------------------------------------------------------------- normal form


def normalise(monitor: Mapping[str, Any]) -> dict[str, Any]:
    """The comparable form of a monitor, the same for a compiled body and a stored one.

    OpenSearch stores the search input re-serialised (defaults spelled out, ``range`` rewritten
    as from/to, numbers as strings), so the query itself is compared through the fingerprint
    ``dac`` wrote into ``ui_metadata`` with it; every other field is compared as stored.
    """
    inputs = monitor.get("inputs") or [{}]
    search = (inputs[0] or {}).get("search") or {}
    triggers = []
    for trig in monitor.get("triggers") or []:
        inner = trig.get("bucket_level_trigger", trig)
        cond = inner.get("condition") or {}
        script = cond.get("script") or {}
        triggers.append(
            {
                "id": inner.get("id"),
                "name": inner.get("name"),
                "severity": str(inner.get("severity")),
                "parent_bucket_path": cond.get("parent_bucket_path"),
                "buckets_path": dict(cond.get("buckets_path") or {}),
                "script": script.get("source"),
                "actions": len(inner.get("actions") or []),
            }
        )
    schedule = (monitor.get("schedule") or {}).get("period") or {}
    meta = dict((monitor.get("ui_metadata") or {}).get(OWNER_KEY) or {})
    return {
        "name": monitor.get("name"),
        "enabled": bool(monitor.get("enabled")),
        "monitor_type": monitor.get("monitor_type"),
        "schedule": {"interval": schedule.get("interval"), "unit": str(schedule.get("unit", "")).upper()},
        "indices": list(search.get("indices") or []),
        "triggers": triggers,
        "ui_metadata": {OWNER_KEY: meta},
    }


# ---------------------------------------------------------------- target


@dataclass
class _Stored:
    monitor_id: str
    seq_no: int | None
    primary_term: int | None
    monitor: dict[str, Any]


class OpenSearchTarget:
    """The OpenSearch Alerting target for ``dac plan``/``dac deploy`` (see deployer.targets.base)."""

    kind = "opensearch"
    # The rule version is informational: a change to it alone does not rewrite a monitor.
    compare_ignore: Collection[str] = ("ui_metadata.dac.rule_version",)

    def __init__(self, client: OpenSearchClient, name: str = "") -> None:
        self.client = client
        self.name = name or client.url
        self.refused: list[UnsupportedConstruct] = []
        self.compiled: dict[str, CompiledRule] = {}
        self._bodies: dict[str, dict[str, Any]] = {}
        self._stored: dict[str, _Stored] = {}
        self._checked = False

    def describe(self) -> str:
        """One line: kind and URL (never credentials)."""
        return f"opensearch {self.client.url}"

    def desired(self, rules: Sequence[Any], exceptions: Any = None) -> dict[str, dict[str, Any]]:
        """Compile the rules (their exception items in each monitor's search); refusals are kept in
        ``self.refused`` (one per rule) and left out."""
        report = compile_rules(rules, exceptions)
        self.refused = report.refused
        out: dict[str, dict[str, Any]] = {}
        for compiled in report.compiled:
            self.compiled[compiled.rule_id] = compiled
            self._bodies[compiled.rule_id] = compiled.monitor
            out[compiled.rule_id] = normalise(compiled.monitor)
        return out

    def read_current(self, rule_ids: Collection[str] = ()) -> dict[str, dict[str, Any]]:
        """Owned monitors, plus any monitor claiming one of ``rule_ids``, normalised, keyed by rule_id."""
        wanted = set(rule_ids)
        out: dict[str, dict[str, Any]] = {}
        self._stored = {}
        if not self._checked:
            # Without Alerting every monitor call fails with "no handler"; say what is missing.
            self.client.require_alerting()
            self._checked = True
        hits = self.client.search_monitors()
        # Owned monitors first, so a hand-made copy carrying the same rule_id never shadows ours.
        hits.sort(key=lambda h: (not is_owned(h["monitor"]), str(h["_id"])))
        for hit in hits:
            monitor = hit["monitor"]
            meta = (monitor.get("ui_metadata") or {}).get(OWNER_KEY) or {}
            rid = meta.get("rule_id")
            owned = is_owned(monitor)
            if not rid or not (owned or rid in wanted):
                continue
            rid = str(rid)
            if rid in self._stored:
                if not owned:
                    continue
                # A second owned monitor for one rule (e.g. an interrupted create): give it its
                # own key so the plan lists it as an orphan and --prune removes it.
                rid = f"{rid}#duplicate:{hit['_id']}"
            self._stored[rid] = _Stored(str(hit["_id"]), hit["_seq_no"], hit["_primary_term"], monitor)
            out[rid] = normalise(monitor)
        return out

    def owned(self, body: Mapping[str, Any]) -> bool:
        """True when the (normalised or raw) monitor carries the name prefix and the marker."""
        return is_owned(body)

    def object_kind(self, key: str) -> str:
        """What a plan key names here: always a monitor."""
        return "monitor"

    def payload(self, rule_id: str) -> dict[str, Any]:
        """The exact monitor body ``apply`` sends for a rule (after ``desired``)."""
        return self._bodies[rule_id]

    def load_payloads(self, bodies: Mapping[str, Mapping[str, Any]]) -> None:
        """Use these bodies (a saved plan's) instead of compiling rules."""
        self._bodies.update({rid: dict(body) for rid, body in bodies.items()})

    def observed(self, rule_id: str) -> dict[str, Any] | None:
        """The monitor's state as last read: id, seq_no, primary_term and a digest; None when absent."""
        stored = self._stored.get(rule_id)
        if stored is None:
            return None
        return {
            "id": stored.monitor_id,
            "seq_no": stored.seq_no,
            "primary_term": stored.primary_term,
            "digest": sha256_of(normalise(stored.monitor)),
        }

    def lock(self, holder: str, *, wait: float) -> AbstractContextManager[None]:
        """Hold the cluster's dac deploy lock (a document created with op_type=create)."""
        from deployer.targets.opensearch_lock import OpenSearchDeployLock

        return OpenSearchDeployLock(self.client).hold(holder, wait=wait)

    def apply(self, plan: Plan, progress: ProgressCallback | None = None) -> list[Result]:
        """Create, update and delete monitors as the plan says; per-rule failures become Results."""
        from deployer.targets.plan import CREATE, DELETE, UPDATE

        results: list[Result] = []
        unreachable: str | None = None
        for change in plan.writes:
            rid = change.rule_id
            if unreachable is not None:
                # The cluster went away (a restart, say): every write is whole or absent, so the
                # rest are reported as not attempted and a later deploy picks them up.
                results.append(Result(rid, change.action, False, f"not attempted: {unreachable}"))
                continue
            try:
                if change.action == CREATE:
                    monitor_id = self.client.create_monitor(self._bodies[rid])
                    results.append(Result(rid, CREATE, True, f"monitor {monitor_id}"))
                elif change.action == UPDATE:
                    stored = self._stored[rid]
                    self.client.update_monitor(
                        stored.monitor_id, self._bodies[rid], stored.seq_no, stored.primary_term
                    )
                    results.append(Result(rid, UPDATE, True, f"monitor {stored.monitor_id}"))
                elif change.action == DELETE:
                    stored = self._stored[rid]
                    if not is_owned(stored.monitor):
                        # Defence in depth: the planner never deletes unowned rules.
                        results.append(Result(rid, DELETE, False, "not owned by dac; left alone"))
                    else:
                        self.client.delete_monitor(stored.monitor_id)
                        results.append(Result(rid, DELETE, True, f"monitor {stored.monitor_id}"))
            except OpenSearchError as exc:
                results.append(Result(rid, change.action, False, str(exc), exc.status_code))
            except TargetError as exc:
                unreachable = exc.message
                results.append(Result(rid, change.action, False, exc.message))
            except KeyError as exc:
                results.append(Result(rid, change.action, False, f"nothing known to write: {exc}"))
            if progress is not None:
                progress(1)
        return results

    def monitor_ids(self) -> dict[str, str]:
        """rule_id → monitor id of the owned monitors (after read_current)."""
        return {rid: s.monitor_id for rid, s in self._stored.items() if "#duplicate:" not in rid}

    def close(self) -> None:
        """Release connections."""
        self.client.close()


def from_config(cfg: TargetConfig) -> OpenSearchTarget:
    """Build the target from a resolved dac.yaml/flags/environment configuration."""
    username_env = cfg.username_env if cfg.username_env != "KIBANA_USERNAME" else "OPENSEARCH_USERNAME"
    password_env = cfg.password_env if cfg.password_env != "KIBANA_PASSWORD" else "OPENSEARCH_PASSWORD"
    client = OpenSearchClient.from_env(
        cfg.url,
        username_env=username_env,
        password_env=password_env,
        ca_cert=cfg.ca_cert,
        insecure=cfg.insecure,
        timeout=cfg.timeout,
        retries=cfg.retries,
    )
    return OpenSearchTarget(client, name=cfg.name)


def deploy(
    target: OpenSearchTarget,
    rules: Sequence[Any],
    *,
    prune: bool = False,
    progress: ProgressCallback | None = None,
) -> tuple[Plan, list[Result]]:
    """Plan and apply in one go (used by ``dac verify``/``dac demo``; ``dac deploy`` has its own loop)."""
    from deployer.targets.plan import build_plan

    desired = target.desired(rules)
    current = target.read_current(desired.keys())
    plan = build_plan(
        desired,
        current,
        owned=target.owned,
        prune=prune,
        ignore=target.compare_ignore,
        target=target.describe(),
    )
    results = target.apply(plan, progress)
    return plan, results


def same_body(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """True when two monitors normalise to the same comparable form."""
    return canonical_json(normalise(a)) == canonical_json(normalise(b))


def iter_owned(client: OpenSearchClient) -> Iterable[tuple[str, dict[str, Any]]]:
    """(monitor id, monitor) for every monitor this project owns."""
    for hit in client.search_monitors():
        if is_owned(hit["monitor"]):
            yield str(hit["_id"]), hit["monitor"]


__all__ = [
    "NAME_PREFIX",
    "OpenSearchClient",
    "OpenSearchError",
    "OpenSearchTarget",
    "deploy",
    "from_config",
    "iter_owned",
    "normalise",
    "same_body",
]
