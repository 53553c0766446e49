"""`dac run --engine opensearch`: the offline `dac run`, on a real OpenSearch with Alerting.

The events are written, in file order, into a one-shard scratch index (`dac-events-run-<random>`,
mapped like the ECS index template when the repository's `mappings/` are at hand), and every
compiled monitor runs over it through Alerting's `_execute` API (a dry run of the monitor body:
nothing is stored). Two things differ from the deployed monitor, both needed to answer the offline
question: the search reads the scratch index, and its time window covers the whole stream (the
offline engine has no run window). A second `scripted_metric` beside the matcher, the same
Painless with `collect`, returns each completed sequence as `_seq_no`s, which map back to the
events' `event.id` (or `line:N`), so each alert becomes one line per sequence, in the shape of the
offline `dac run`. The scratch index is deleted afterwards, also on failure.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployer.targets.base import TargetError
from deployer.targets.opensearch import ALERTING, OpenSearchClient
from deployer.targets.opensearch_compile import (
    COMPOSITE_AGG,
    NULL_KEY,
    SEQUENCE_AGG,
    CompiledRule,
    compile_rules,
    trigger_id,
)
from deployer.targets.opensearch_verify import alerted_entities, format_ts, parse_ts

SCRATCH_PREFIX = "dac-events-run-"
EVENTS_AGG = "dac_sequence_events"
BULK_CHUNK = 5_000
# Strings are keywords, as ECS maps the fields rules test; used when no mappings/ are at hand.
FALLBACK_MAPPINGS: dict[str, Any] = {
    "dynamic_templates": [{"strings": {"match_mapping_type": "string", "mapping": {"type": "keyword"}}}],
    "properties": {"@timestamp": {"type": "date"}},
}


@dataclass
class StreamEvent:
    """One event of the input and how results name it (its `event.id`, else `line:N`)."""

    doc: dict[str, Any]
    ref: str | int


def _get(doc: Mapping[str, Any], dotted: str) -> Any:
    if dotted in doc:
        return doc[dotted]
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def composed_mappings(templates: Mapping[str, Mapping[str, Any]] | None, index: str) -> dict[str, Any]:
    """The mappings an index named `index` would get from the index template matching it."""
    import fnmatch

    if not templates:
        return copy.deepcopy(FALLBACK_MAPPINGS)
    best: tuple[int, Mapping[str, Any]] | None = None
    for body in (templates.get("index_templates") or {}).values():
        if any(fnmatch.fnmatchcase(index, p) for p in body.get("index_patterns") or []):
            priority = int(body.get("priority") or 0)
            if best is None or priority > best[0]:
                best = (priority, body)
    if best is None:
        return copy.deepcopy(FALLBACK_MAPPINGS)
    merged: dict[str, Any] = {}
    components = templates.get("component_templates") or {}
    parts = [components.get(name, {}) for name in best[1].get("composed_of") or []] + [best[1]]
    for part in parts:
        _merge(merged, ((part.get("template") or {}).get("mappings")) or {})
    return merged


def _merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif isinstance(value, list) and isinstance(into.get(key), list):
            into[key] = into[key] + [v for v in value if v not in into[key]]
        else:
            into[key] = copy.deepcopy(value)


def run_body(compiled: CompiledRule, index: str, first_ms: int, last_ms: int) -> dict[str, Any]:
    """The rule's monitor reading `index`, its window over the whole stream, plus the sequence report."""
    body = copy.deepcopy(compiled.monitor)
    body.pop("ui_metadata", None)
    body["enabled"] = False
    search = body["inputs"][0]["search"]
    search["indices"] = [index]
    query = search["query"]
    span_s = max(1, -(-(last_ms - first_ms + 1) // 1000) + 1)
    for clause in query["query"]["bool"]["filter"]:
        for spec in (clause.get("range") or {}).values():
            spec["gte"] = f"{{{{period_end}}}}||-{span_s}s"
    aggs = query["aggregations"][COMPOSITE_AGG]["aggregations"]
    report = copy.deepcopy(aggs[SEQUENCE_AGG])
    report["scripted_metric"]["params"]["collect"] = True
    aggs[EVENTS_AGG] = report
    return body


def _bulk(client: OpenSearchClient, index: str, events: Sequence[StreamEvent]) -> None:
    for start in range(0, len(events), BULK_CHUNK):
        lines = []
        for event in events[start : start + BULK_CHUNK]:
            lines.append(json.dumps({"index": {"_index": index}}))
            lines.append(json.dumps(event.doc))
        data = client.request("POST", "/_bulk", "\n".join(lines) + "\n")
        if data.get("errors"):
            for offset, item in enumerate(data.get("items") or []):
                err = (item.get("index") or {}).get("error")
                if err:
                    ref = events[start + offset].ref
                    raise TargetError(
                        f"event {ref} could not be indexed into the scratch index: "
                        f"{err.get('type')}: {err.get('reason')}"
                    )
    client.request("POST", f"/{index}/_refresh")


def _sequences(result: Mapping[str, Any], rule_id: str) -> list[tuple[tuple[str, ...], list[int]]]:
    """(bucket key, `_seq_no`s) of every completed sequence in an ``_execute`` answer."""
    alerted_entities(result, rule_id)  # raises on a failed run, naming the rule
    out = []
    trig = (result.get("trigger_results") or {}).get(trigger_id(rule_id)) or {}
    for bucket in (trig.get("agg_result_buckets") or {}).values():
        content = bucket.get("agg_alert_content", bucket)
        key = tuple(str(v) for v in content.get("bucket_keys") or [])
        inner = content.get("bucket") or {}
        for seq in (inner.get(EVENTS_AGG) or {}).get("value") or []:
            out.append((key, [int(x) for x in seq]))
    return out


def run_on_opensearch(
    client: OpenSearchClient,
    rules: Sequence[Any],
    events: Sequence[StreamEvent],
    *,
    templates: Mapping[str, Mapping[str, Any]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one result per rule the compiler refuses, then one per sequence each monitor finds."""
    client.require_alerting()
    report = compile_rules(rules)
    for refusal in report.refused:
        yield {"rule_id": refusal.rule_id, "refused": str(refusal)}
    for chain in sorted((c for c in report.compiled if c.reads_alerts_of), key=lambda c: c.rule_id):
        # The chain reads its blocks' stored alerts, and these runs are dry runs that store none.
        yield {
            "rule_id": chain.rule_id,
            "refused": f"{chain.rule_id}: a chain over the alerts of {', '.join(chain.reads_alerts_of)} "
            "needs their stored alerts; dac run --engine opensearch runs dry: check it with dac verify",
        }
    compiled = sorted((c for c in report.compiled if not c.reads_alerts_of), key=lambda c: c.rule_id)
    if not compiled or not events:
        return
    by_id = {str(getattr(r, "rule_id", None) or getattr(r, "data", r).get("rule_id")): r for r in rules}
    stamps = [parse_ts(v) for e in events if (v := _get(e.doc, "@timestamp")) is not None]
    if not stamps:
        raise TargetError("no event has an @timestamp; the monitors' windows cannot place them")
    first_ms, last_ms = min(stamps), max(stamps)
    index = f"{SCRATCH_PREFIX}{secrets.token_hex(4)}"
    mappings = composed_mappings(templates, index)
    client.request(
        "PUT",
        f"/{index}",
        {"settings": {"number_of_shards": 1, "number_of_replicas": 0}, "mappings": mappings},
    )
    try:
        # One shard, written in file order: `_seq_no` is the event's position, which breaks
        # same-timestamp ties as the offline engine does.
        _bulk(client, index, events)
        period_end = f"{last_ms + 1}ms"
        for rule in compiled:
            body = run_body(rule, index, first_ms, last_ms)
            result = client.request(
                "POST",
                f"{ALERTING}/monitors/_execute",
                body,
                params={"dryrun": "true", "period_end": period_end},
            )
            source = by_id.get(rule.rule_id)
            data = getattr(source, "data", source) or {}
            meta = getattr(source, "metadata", None) or data.get("metadata") or {}
            found = _sequences(result, rule.rule_id)
            found.sort(key=lambda f: f[1])
            for key, seq_nos in found:
                yield {
                    "rule_id": rule.rule_id,
                    "name": data.get("name", rule.name),
                    "implements": list(meta.get("implements") or []),
                    "event_ids": [events[n].ref for n in seq_nos],
                    "join_keys": [None if k == NULL_KEY else k for k in key],
                }
    finally:
        client.request("DELETE", f"/{index}", ok=(404,))


def repo_templates() -> dict[str, dict[str, Any]] | None:
    """The OpenSearch templates of the repository around the working directory, if there is one."""
    from deployer import mappings
    from deployer.config import find_config

    found = find_config()
    if found is None:
        return None
    try:
        return mappings.load_templates(found.parent, "opensearch")
    except mappings.MappingsError:
        return None


def read_stream(path: str | Path) -> list[StreamEvent]:
    """Events of an ndjson file (or `-`, gzip accepted), checked and named as offline `dac run` does."""
    from deployer.testing.events import default_field_types, iter_events

    out = []
    for doc in iter_events(path, field_types=default_field_types()):
        line = getattr(doc, "line", None)
        eid = _get(doc, "event.id")
        ref: str | int = eid if eid is not None else (f"line:{line}" if line is not None else len(out))
        out.append(StreamEvent(dict(doc), ref))
    return out


__all__ = ["composed_mappings", "format_ts", "read_stream", "repo_templates", "run_body", "run_on_opensearch"]
