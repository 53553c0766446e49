"""End-to-end verification on a real OpenSearch: deploy, replay fixtures, execute monitors, check alerts.

For every rule that compiles, each fixture of ``metadata.tests`` is replayed on its own: the replay
indices are emptied, the fixture's events are written with their timestamps shifted so the last
one is just before now (gaps between events kept), the rule's monitor is executed with Alerting's
``_execute`` API (not a dry run, so alerts are persisted), and the entities it alerted on are
compared with the fixture's expectation: exactly the join keys of the expected sequences for
``expect: match``, nothing for ``expect: no_match``.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deployer import mappings
from deployer.targets.base import Result, TargetError
from deployer.targets.opensearch import OpenSearchClient, OpenSearchTarget, deploy
from deployer.targets.opensearch_compile import COMPOSITE_AGG, CompiledRule, UnsupportedConstruct, trigger_id

REPLAY_SUFFIX = "dac-replay"
# The last replayed event lands this long before "now", so it is inside the run's window.
END_MARGIN_MS = 2_000

Entity = tuple[str, ...]


@dataclass
class FixtureOutcome:
    """The result of replaying one fixture against one rule's monitor."""

    rule_id: str
    name: str
    expect: str
    events: int
    expected: list[Entity] = field(default_factory=list)
    alerted: list[Entity] = field(default_factory=list)
    persisted: list[Entity] = field(default_factory=list)
    alert_ids: list[str] = field(default_factory=list)
    ok: bool = False
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "rule_id": self.rule_id,
            "name": self.name,
            "expect": self.expect,
            "events": self.events,
            "expected": [list(e) for e in self.expected],
            "alerted": [list(e) for e in self.alerted],
            "persisted": [list(e) for e in self.persisted],
            "alert_ids": self.alert_ids,
            "ok": self.ok,
            "message": self.message,
        }


@dataclass
class ScheduledCheck:
    """One rule's monitor run by Alerting's job scheduler (not ``_execute``) on a positive fixture."""

    rule_id: str
    fixture: str
    expected: list[Entity] = field(default_factory=list)
    alerted: list[Entity] = field(default_factory=list)
    alert_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0
    ok: bool = False
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "rule_id": self.rule_id,
            "fixture": self.fixture,
            "expected": [list(e) for e in self.expected],
            "alerted": [list(e) for e in self.alerted],
            "alert_ids": self.alert_ids,
            "seconds": self.seconds,
            "ok": self.ok,
            "message": self.message,
        }


@dataclass
class VerifyReport:
    """Everything ``dac verify`` prints."""

    outcomes: list[FixtureOutcome] = field(default_factory=list)
    refused: list[UnsupportedConstruct] = field(default_factory=list)
    deploy_results: list[Result] = field(default_factory=list)
    templates: int = 0
    no_fixtures: list[str] = field(default_factory=list)
    mode: str = "alerting"  # "alerting": monitors deployed and executed; "search": search + trigger only
    scheduled: ScheduledCheck | None = None

    @property
    def ok(self) -> bool:
        """True when every fixture behaved, every write succeeded and the scheduled run alerted."""
        return (
            all(o.ok for o in self.outcomes)
            and all(r.ok for r in self.deploy_results)
            and (self.scheduled is None or self.scheduled.ok)
        )

    def counts(self) -> dict[str, int]:
        """Fixture counts: positives alerted/expected, near misses silent/total."""
        pos = [o for o in self.outcomes if o.expect == "match"]
        neg = [o for o in self.outcomes if o.expect == "no_match"]
        return {
            "positive_alerted": sum(o.ok for o in pos),
            "positive_total": len(pos),
            "near_miss_silent": sum(o.ok for o in neg),
            "near_miss_total": len(neg),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ok": self.ok,
            "mode": self.mode,
            "counts": self.counts(),
            "templates": self.templates,
            "outcomes": [o.to_dict() for o in self.outcomes],
            "refused": [
                {"rule_id": r.rule_id, "construct": r.construct, "message": str(r)} for r in self.refused
            ],
            "deploy": [r.to_dict() for r in self.deploy_results],
            "no_fixtures": self.no_fixtures,
            "scheduled": self.scheduled.to_dict() if self.scheduled else None,
        }


# ---------------------------------------------------------------- templates


def deploy_templates(client: OpenSearchClient, templates: Mapping[str, Mapping[str, Any]]) -> int:
    """Write component and index templates (component ones first); return how many were written."""
    return len(mappings.deploy(client.request, templates))


def load_engine_templates(root: Path, engine: str = "opensearch") -> dict[str, dict[str, Any]]:
    """Templates from ``mappings/`` for one engine, via the project's mappings module."""
    try:
        return mappings.load_templates(root, engine)
    except mappings.MappingsError as exc:
        raise TargetError(f"mapping templates: {exc}") from exc


# ---------------------------------------------------------------- events


def parse_ts(value: Any) -> int:
    """Epoch milliseconds of an ISO-8601 or epoch-millis timestamp."""
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def format_ts(ms: int) -> str:
    """ISO-8601 UTC with milliseconds."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def shift_events(
    events: Sequence[Mapping[str, Any]], now_ms: int, ts_field: str = "@timestamp"
) -> tuple[list[dict[str, Any]], int]:
    """Copy events with timestamps moved so the latest is just before now; return them and the span."""
    stamps = [parse_ts(_get(e, ts_field)) for e in events if _get(e, ts_field) is not None]
    if not stamps:
        return [dict(e) for e in events], 0
    offset = now_ms - END_MARGIN_MS - max(stamps)
    out = []
    for event in events:
        copy = json.loads(json.dumps(event))
        value = _get(copy, ts_field)
        if value is not None:
            _set(copy, ts_field, format_ts(parse_ts(value) + offset))
        out.append(copy)
    return out, max(stamps) - min(stamps)


def _get(doc: Mapping[str, Any], dotted: str) -> Any:
    if dotted in doc:
        return doc[dotted]
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _set(doc: dict[str, Any], dotted: str, value: Any) -> None:
    if dotted in doc:
        doc[dotted] = value
        return
    node = doc
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def replay_index(compiled: CompiledRule) -> str:
    """A concrete index name matched by the rule's first index pattern."""
    if compiled.reads_alerts_of:
        # A chain's indices are Alerting's own alert indices: never write events there.
        raise TargetError(
            f"{compiled.rule_id}: reads the alerts of {', '.join(compiled.reads_alerts_of)}; "
            "replay its fixtures into their indices"
        )
    for pattern in compiled.indices:
        if pattern.startswith("-"):
            continue
        name = pattern.replace("*", REPLAY_SUFFIX, 1).replace("*", "").replace("?", "x")
        return name.lower()
    raise TargetError(f"{compiled.rule_id}: no index pattern to replay events into")


def _values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def expected_entities(
    compiled: CompiledRule, events: Sequence[Mapping[str, Any]], sequences: Iterable[Sequence[Any]]
) -> list[Entity]:
    """Join-key tuples of the expected sequences, read from each sequence's first event."""
    by_id = {str(_get(e, "event.id")): e for e in events if _get(e, "event.id") is not None}
    out: list[Entity] = []
    for seq in sequences:
        if not seq:
            continue
        first = by_id.get(str(seq[0]))
        if first is None:
            raise TargetError(
                f"{compiled.rule_id}: expected sequence starts with unknown event.id {seq[0]!r}"
            )
        per_position = [_values(_get(first, fields[0])) for fields in compiled.key_fields]
        for combo in itertools.product(*per_position):
            if combo not in out:
                out.append(tuple(combo))
    return out


def bulk_index(client: OpenSearchClient, index: str, events: Sequence[Mapping[str, Any]]) -> None:
    """Write events in order (so ``_seq_no`` follows the fixture) and refresh."""
    lines = []
    for event in events:
        # `create` works for plain indices and for data streams alike.
        lines.append(json.dumps({"create": {"_index": index}}))
        lines.append(json.dumps(event))
    data = client.request("POST", "/_bulk", "\n".join(lines) + "\n", params={"refresh": "true"})
    if data.get("errors"):
        for item in data.get("items") or []:
            err = (item.get("create") or {}).get("error")
            if err:
                raise TargetError(f"indexing into {index} failed: {err.get('type')}: {err.get('reason')}")


def clear_indices(client: OpenSearchClient, indices: Iterable[str]) -> None:
    """Delete every document of the given indices (missing indices are fine)."""
    for index in sorted(set(indices)):
        client.request(
            "POST",
            f"/{index}/_delete_by_query",
            {"query": {"match_all": {}}},
            params={"refresh": "true", "conflicts": "proceed"},
            ok=(404,),
        )


def alerted_entities(result: Mapping[str, Any], rule_id: str) -> list[Entity]:
    """Bucket keys selected by the rule's trigger in an ``_execute`` response."""
    if result.get("error"):
        raise TargetError(f"{rule_id}: monitor run failed: {result['error']}")
    inputs = result.get("input_results") or {}
    input_error = inputs.get("error")
    # A failed search (a script or query error) comes back from the real plugin as error "" with no
    # results; the trigger then fails with "Empty list doesn't contain element at index 0".
    if input_error or (input_error is not None and not inputs.get("results")):
        reason = input_error or "Alerting gave no reason; the server log has the search exception"
        raise TargetError(f"{rule_id}: the monitor's search failed when it ran: {reason}")
    out: list[Entity] = []
    for tid, trig in (result.get("trigger_results") or {}).items():
        if tid != trigger_id(rule_id) and len(result.get("trigger_results") or {}) > 1:
            continue
        if trig.get("error"):
            raise TargetError(f"{rule_id}: trigger failed: {trig['error']}")
        for bucket in (trig.get("agg_result_buckets") or {}).values():
            # Each selected bucket is serialised as {"agg_alert_content": {"bucket_keys": [...], ...}}.
            content = bucket.get("agg_alert_content", bucket)
            key = tuple(str(v) for v in content.get("bucket_keys") or [])
            if key not in out:
                out.append(key)
    return out


def active_alerts(client: OpenSearchClient, monitor_id: str) -> dict[str, dict[str, Any]]:
    """The monitor's ACTIVE alerts from the Alerting API, by alert id."""
    return {str(a.get("id")): a for a in client.alerts(monitor_id, "ACTIVE") if a.get("id")}


def alert_entity(alert: Mapping[str, Any]) -> Entity:
    """The bucket key (join-key values) of a bucket-level alert."""
    return tuple(str(v) for v in (alert.get("agg_alert_content") or {}).get("bucket_keys") or [])


def written_since(
    before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Alerts a run created or updated: new ids, or ids whose version went up (Alerting's dedup)."""
    out = []
    for alert_id, alert in after.items():
        old = before.get(alert_id)
        if old is None or int(alert.get("version") or 0) > int(old.get("version") or 0):
            out.append(dict(alert))
    return out


def replay_fixture(
    client: OpenSearchClient, compiled: CompiledRule, events: Sequence[Mapping[str, Any]]
) -> str:
    """Empty the rule's replay index, then write the events shifted to now; return the index."""
    index = replay_index(compiled)
    shifted, _span = shift_events(events, int(time.time() * 1000), compiled.timestamp_field)
    clear_indices(client, [index])
    bulk_index(client, index, shifted)
    return index


def events_for_entity(
    client: OpenSearchClient, index: str, compiled: CompiledRule, entity: Entity, limit: int = 50
) -> list[str]:
    """One line per replayed event of the rule's steps that carries the entity's key, oldest first."""
    should = []
    for fields, value in zip(compiled.key_fields, entity, strict=False):
        should.append(
            {
                "bool": {
                    "should": [{"term": {f: value}} for f in dict.fromkeys(fields)],
                    "minimum_should_match": 1,
                }
            }
        )
    query = {
        "bool": {
            "filter": should,
            "should": compiled.step_queries,
            "minimum_should_match": 1,
        }
    }
    body = {"size": limit, "query": query, "sort": [{compiled.timestamp_field: "asc"}]}
    data = client.request("POST", f"/{index}/_search", body)
    lines = []
    for hit in (data.get("hits") or {}).get("hits") or []:
        src = hit.get("_source") or {}
        cats = _values(_get(src, "event.category"))
        parts = [
            str(_get(src, compiled.timestamp_field)),
            str(_get(src, "event.id") or hit.get("_id")),
            ",".join(cats),
            str(_get(src, "event.action") or ""),
            str(_get(src, "process.name") or ""),
        ]
        for extra in ("file.path", "destination.ip", "dns.question.name", "process.command_line"):
            value = _get(src, extra)
            if value:
                parts.append(f"{extra}={value}")
                break
        lines.append("  ".join(p for p in parts if p))
    return lines


def _wait_written(
    client: OpenSearchClient, monitor_id: str, before: Mapping[str, Mapping[str, Any]], wanted: set[Entity]
) -> list[dict[str, Any]]:
    # Alert documents are written by the run but may take a refresh to be searchable.
    deadline = time.monotonic() + 10
    while True:
        written = written_since(before, active_alerts(client, monitor_id))
        if wanted <= {alert_entity(a) for a in written} or time.monotonic() > deadline:
            return written
        time.sleep(0.5)


def _tests(rule: Any) -> list[dict[str, Any]]:
    meta = getattr(rule, "metadata", None)
    if meta is None:
        meta = (getattr(rule, "data", rule) or {}).get("metadata") or {}
    tests = meta.get("tests") or []
    return [t for t in tests if isinstance(t, dict)]


# Alerting's shortest schedule; the job scheduler's first run comes one interval after creation.
SCHEDULED_INTERVAL_MINUTES = 1
SCHEDULED_TIMEOUT_S = 150.0


MODE_ALERTING = "alerting"
MODE_SEARCH = "search"


def run_monitor_search(client: OpenSearchClient, compiled: CompiledRule, period_end_ms: int) -> list[Entity]:
    """Run a monitor's search input and trigger condition on the cluster, without the Alerting plugin.

    The search is the monitor's own, with ``{{period_end}}`` rendered as Alerting renders it
    (epoch milliseconds); the trigger condition runs server-side as a core ``bucket_selector``
    under the composite aggregation, which resolves ``buckets_path`` with the same helper as
    Alerting's bucket-level trigger. Composite pages are followed like Alerting does.
    """
    search_input = compiled.monitor["inputs"][0]["search"]
    body = json.loads(json.dumps(search_input["query"]).replace("{{period_end}}", str(period_end_ms)))
    condition = compiled.monitor["triggers"][0]["bucket_level_trigger"]["condition"]
    composite = body["aggregations"][COMPOSITE_AGG]
    composite["aggregations"]["dac_trigger"] = {
        "bucket_selector": {"buckets_path": condition["buckets_path"], "script": condition["script"]}
    }
    indices = ",".join(search_input["indices"])
    params = {"ignore_unavailable": "true", "allow_no_indices": "true"}
    out: list[Entity] = []
    for _page in range(1000):
        data = client.request("POST", f"/{indices}/_search", body, params=params)
        agg = (data.get("aggregations") or {}).get(COMPOSITE_AGG) or {}
        for bucket in agg.get("buckets") or []:
            key = tuple(str(bucket["key"][name]) for name in sorted(bucket["key"], key=lambda k: int(k[1:])))
            if key not in out:
                out.append(key)
        after = agg.get("after_key")
        if not after:
            break
        composite["composite"]["after"] = after
    return out


def verify(
    client: OpenSearchClient,
    rules: Sequence[Any],
    *,
    templates: Any = None,
    on_outcome: Callable[[FixtureOutcome], None] | None = None,
    keep_events: bool = False,
    search_only: bool = False,
    scheduled_timeout: float = SCHEDULED_TIMEOUT_S,
) -> VerifyReport:
    """Deploy templates and rules, replay every fixture, and check the monitors' alerts.

    Each fixture runs the rule's monitor with ``_execute``; then one positive fixture is left to the
    job scheduler (``scheduled_check``; ``scheduled_timeout=0`` skips it).

    With ``search_only`` (for clusters without the Alerting plugin) no monitor is written: each
    rule's monitor search and trigger condition run on the cluster (``run_monitor_search``) and
    no alert is stored.
    """
    from deployer.testing.events import read_events

    report = VerifyReport(mode=MODE_SEARCH if search_only else MODE_ALERTING)
    if not search_only:
        client.require_alerting()
    if templates is not None:
        report.templates = deploy_templates(client, templates)
    target = OpenSearchTarget(client)
    monitor_ids: dict[str, str] = {}
    if search_only:
        target.desired(rules)
    else:
        _plan, report.deploy_results = deploy(target, rules)
        target.read_current(target.compiled.keys())
        monitor_ids = target.monitor_ids()
    report.refused = list(target.refused)

    compiled_by_id = target.compiled
    replay_indices = {replay_index(c) for c in compiled_by_id.values() if not c.reads_alerts_of}
    for rule in rules:
        rid = getattr(rule, "rule_id", None) or (getattr(rule, "data", rule) or {}).get("rule_id")
        compiled = compiled_by_id.get(str(rid))
        if compiled is None:
            continue
        tests = _tests(rule)
        if not tests:
            report.no_fixtures.append(compiled.rule_id)
            continue
        rule_dir = Path(getattr(rule, "path", ".")).parent
        for test in tests:
            outcome = FixtureOutcome(
                rule_id=compiled.rule_id,
                name=str(test.get("name") or test.get("events")),
                expect=str(test.get("expect")),
                events=0,
            )
            try:
                events = [dict(e) for e in read_events(rule_dir / str(test.get("events")))]
                outcome.events = len(events)
                if outcome.expect == "match":
                    outcome.expected = expected_entities(compiled, events, test.get("sequences") or [])
                # A chain's fixtures are raw events: they go where its first building block reads.
                source = (
                    compiled_by_id.get(compiled.reads_alerts_of[0]) if compiled.reads_alerts_of else compiled
                )
                if source is None:
                    raise TargetError(
                        f"{compiled.rule_id}: building block {compiled.reads_alerts_of[0]} not compiled"
                    )
                now_ms = int(time.time() * 1000)
                shifted, span = shift_events(events, now_ms, source.timestamp_field)
                if span + END_MARGIN_MS > compiled.lookback_ms:
                    outcome.message = (
                        f"fixture spans {span // 1000}s, longer than the monitor's {compiled.lookback_ms // 1000}s "
                        "look-back; its earliest events are outside the window"
                    )
                clear_indices(client, replay_indices)
                if compiled.reads_alerts_of:
                    if search_only:
                        raise TargetError(
                            "a chain reads Alerting's alert documents: it needs the Alerting plugin"
                        )
                    from deployer.targets import opensearch_chain_run as chain_run

                    chain_run.forget_block_alerts(client, compiled)
                bulk_index(client, replay_index(source), shifted)
                if search_only:
                    outcome.alerted = run_monitor_search(client, compiled, now_ms)
                else:
                    monitor_id = monitor_ids[compiled.rule_id]
                    before = active_alerts(client, monitor_id)
                    if compiled.reads_alerts_of:
                        # The blocks run first and store their alerts; then the chain reads them.
                        outcome.alerted = chain_run.run_chain(client, compiled, monitor_ids)
                    else:
                        result = client.execute_monitor(monitor_id)
                        outcome.alerted = alerted_entities(result, compiled.rule_id)
                    written = _wait_written(client, monitor_id, before, set(outcome.alerted))
                    outcome.persisted = list(dict.fromkeys(alert_entity(a) for a in written))
                    outcome.alert_ids = [str(a["id"]) for a in written]
                _judge(outcome, require_stored=not search_only)
            except (TargetError, OSError, ValueError, KeyError) as exc:
                outcome.ok = False
                outcome.message = f"error: {exc}"
            report.outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    if scheduled_timeout > 0 and not search_only:
        report.scheduled = scheduled_check(client, rules, report, replay_indices, timeout=scheduled_timeout)
    if not keep_events:
        clear_indices(client, replay_indices)
    return report


def scheduled_check(
    client: OpenSearchClient,
    rules: Sequence[Any],
    report: VerifyReport,
    replay_indices: Iterable[str],
    *,
    timeout: float = SCHEDULED_TIMEOUT_S,
) -> ScheduledCheck | None:
    """Replay one positive fixture and wait for the job scheduler (not ``_execute``) to raise its alert.

    The rule's own monitor keeps its schedule (usually minutes), so a copy with a 1-minute schedule
    is stored beside it for the check and deleted afterwards, also on failure. It is owned by dac
    under a rule id no rule has, so should the deletion itself fail, ``dac deploy --prune`` removes it.
    """
    from deployer.targets.opensearch_chain import is_chain_rule
    from deployer.testing.events import read_events

    chains = {str(getattr(r, "rule_id", "")) for r in rules if is_chain_rule(getattr(r, "data", r) or {})}
    # A chain's monitor needs its blocks' alerts first; the scheduler check takes a plain rule.
    passed = [o for o in report.outcomes if o.expect == "match" and o.ok and o.rule_id not in chains]
    if not passed:
        return None
    outcome = sorted(passed, key=lambda o: (o.rule_id, o.name))[0]
    rule = next(r for r in rules if str(getattr(r, "rule_id", "")) == outcome.rule_id)
    test = next(t for t in _tests(rule) if str(t.get("name") or t.get("events")) == outcome.name)
    compiled = OpenSearchTarget(client)
    compiled.desired([rule])
    body = json.loads(json.dumps(compiled.compiled[outcome.rule_id].monitor))
    body["name"] = f"{body['name']} (dac verify: scheduled run)"
    body["enabled"] = True
    body["schedule"] = {"period": {"interval": SCHEDULED_INTERVAL_MINUTES, "unit": "MINUTES"}}
    body["ui_metadata"]["dac"]["rule_id"] = f"{outcome.rule_id}#verify-scheduled-run"
    check = ScheduledCheck(outcome.rule_id, outcome.name, expected=list(outcome.expected))
    events = [dict(e) for e in read_events(Path(getattr(rule, "path", ".")).parent / str(test.get("events")))]
    target_compiled = compiled.compiled[outcome.rule_id]
    clear_indices(client, replay_indices)
    started = time.monotonic()
    monitor_id = client.create_monitor(body)
    try:
        shifted, _span = shift_events(events, int(time.time() * 1000), target_compiled.timestamp_field)
        bulk_index(client, replay_index(target_compiled), shifted)
        wanted = set(check.expected)
        while True:
            alerts = list(active_alerts(client, monitor_id).values())
            check.alerted = list(dict.fromkeys(alert_entity(a) for a in alerts))
            check.alert_ids = [str(a["id"]) for a in alerts]
            errors = [a.get("error_message") for a in client.alerts(monitor_id, "ERROR")]
            if errors:
                check.message = f"the scheduled run failed: {errors[0]}"
                break
            if alerts or time.monotonic() - started > timeout:
                break
            time.sleep(2)
        check.seconds = round(time.monotonic() - started, 1)
        check.ok = bool(wanted) and set(check.alerted) == wanted
        if not check.ok and not check.message:
            check.message = (
                f"no alert from the job scheduler within {timeout:.0f}s"
                if not check.alerted
                else "alerted on " + ", ".join("/".join(e) for e in check.alerted)
            )
    finally:
        client.delete_monitor(monitor_id)
    return check


def _judge(outcome: FixtureOutcome, *, require_stored: bool = True) -> None:
    alerted = set(outcome.alerted)
    expected = set(outcome.expected)
    notes = [outcome.message] if outcome.message else []
    if outcome.expect == "no_match":
        outcome.ok = not alerted
        if alerted:
            notes.append("alerted on " + ", ".join("/".join(e) for e in sorted(alerted)))
    else:
        missing = expected - alerted
        extra = alerted - expected
        persisted_missing = expected - set(outcome.persisted) if require_stored else set()
        outcome.ok = bool(expected) and not missing and not extra and not persisted_missing
        if not expected:
            notes.append("no expected sequence listed")
        if missing:
            notes.append("no alert for " + ", ".join("/".join(e) for e in sorted(missing)))
        if extra:
            notes.append("unexpected alert for " + ", ".join("/".join(e) for e in sorted(extra)))
        if persisted_missing and not missing:
            notes.append(
                "trigger fired but no ACTIVE alert stored for "
                + ", ".join("/".join(e) for e in sorted(persisted_missing))
            )
    outcome.message = "; ".join(notes)
