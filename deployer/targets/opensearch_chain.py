"""Compile rules over building-block alerts (AN1314's chains) into monitors over Alerting's alerts.

Kibana writes one building-block alert per event of each completed sequence, and a chain rule is
an EQL sequence over those alert documents. On OpenSearch the building blocks are bucket-level
monitors with one alert per entity, so the chain is rebuilt from what those alerts hold:

* every building block a chain depends on is compiled with the ``dac_events`` aggregation
  (:data:`opensearch_compile.EVENTS_AGG`): per bucket, the events of each completed sequence
  with their time, stage and the fields the chain joins on. Alerting stores the bucket, and so
  these events, in the alert document (``agg_alert_content.bucket``);
* the chain becomes a bucket-level monitor over ``.opendistro-alerting-alert*``: it selects the
  building blocks' alerts by their trigger ids (stable, derived from the rule ids), turns each
  alert into its recorded events, keys them on the chain's join field, and runs the same
  sequence matcher as every other monitor, ordered on the source events' times (Kibana's
  ``kibana.alert.original_time``) with the chain's maxspan. One alert per chain key.

Which building-block events a chain step takes is decided at compile time: a step is
``<category> where kibana.alert.rule.rule_id == "<block>" and <field> == <value> ...``, and each
stage of the block's sequence either implies those conditions (same category, same equality in
its top-level conjunction), contradicts them, or is undecidable, which is refused.
See docs/opensearch.md, "Chains over building-block alerts".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from deployer.eql import ast
from deployer.targets.opensearch_compile import (
    _REDUCE_SCRIPT,
    ALERTS_INDEX_PREFIX,
    COMPOSITE_AGG,
    EVENTS_AGG,
    MAX_EMITTED_SEQUENCES,
    MAX_KEY_COMBINATIONS,
    SEQUENCE_AGG,
    CompiledRule,
    UnsupportedConstruct,
    _parse_query,
    bucket_monitor,
    parse_duration_ms,
    trigger_id,
)

RULE_ID_FIELD = "kibana.alert.rule.rule_id"
# Alerting's alert indices: active alerts, and completed ones moved to the history indices. Both
# as patterns: Alerting refuses a monitor whose concrete index does not exist ("Configured indices
# are not found", 404), and `.opendistro-alerting-alerts` only exists once some monitor has
# alerted, so on a fresh cluster a concrete name fails the chain's deploy. A pattern starting with
# a dot matches these hidden indices.
ALERT_INDICES = [".opendistro-alerting-alerts*", ".opendistro-alerting-alert-history-*"]

# Per alert document: the building block's recorded events that a chain step takes, each with
# the chain's join-key values. ``params.steps``: trigger id -> stage (as a string) -> step bits.
_EVENTS_OF_ALERT = """
List out = new ArrayList();
def src = params._source;
def tid = src.trigger_id;
if (tid == null || !params.steps.containsKey(tid)) { return out; }
def content = src.agg_alert_content;
if (content == null || content.bucket == null || content.bucket[params.agg] == null) { return out; }
def seqs = content.bucket[params.agg].value;
if (seqs == null) { return out; }
long lo = Long.parseLong(params.pe) - params.lookback;
long hi = Long.parseLong(params.pe);
for (sq in seqs) {
  for (ev in sq) {
    def bits = params.steps[tid][String.valueOf(ev.s)];
    if (bits == null) { continue; }
    long t = ((Number) ev.t).longValue();
    if (t < lo || t > hi) { continue; }
    out.add([t, bits, ev]);
  }
}
return out;
""".strip()

_KEY_SCRIPT = (
    _EVENTS_OF_ALERT.rsplit("return out;", 1)[0]
    + """List keys = new ArrayList();
for (x in out) {
  int m = (int) x[1];
  for (int k = 0; k < params.bits.size(); k++) {
    if ((m & (int) params.bits[k]) == 0) { continue; }
    def vs = x[2][params.kf[(int) params.upos[0][k]]];
    if (vs != null) { for (v in vs) { if (!keys.contains(v)) { keys.add(v); } } }
  }
}
return keys;"""
)

# Same record shape as the raw-event matcher's map script, plus the document's key set (``dk``).
_MAP_SCRIPT = (
    # A map script returns nothing: its early exits become plain returns.
    _EVENTS_OF_ALERT.rsplit("return out;", 1)[0].replace("return out;", "return;")
    + """List dk = new ArrayList();
for (x in out) {
  int m = (int) x[1];
  for (int k = 0; k < params.bits.size(); k++) {
    if ((m & (int) params.bits[k]) == 0) { continue; }
    def vs = x[2][params.kf[(int) params.upos[0][k]]];
    if (vs != null) { for (v in vs) { if (!dk.contains(v)) { dk.add(v); } } }
  }
}
long seq = doc['_seq_no'].size() > 0 ? doc['_seq_no'].value : 0L;
int i = 0;
for (x in out) {
  List e = new ArrayList();
  e.add(x[0]);
  e.add(x[1]);
  e.add(null);
  e.add(seq * 10000L + i);
  i++;
  for (f in params.kf) {
    def vs = x[2][f];
    e.add(vs == null ? new ArrayList() : vs);
  }
  e.add(dk);
  state.ev.add(e);
}"""
)


def is_chain_rule(rule: Mapping[str, Any]) -> bool:
    """True for a rule that reads other rules' alerts (Kibana's alerts index)."""
    indices = rule.get("index") or []
    return any(str(i).startswith(ALERTS_INDEX_PREFIX) for i in indices)


def _conjuncts(expr: ast.Expr) -> list[ast.Expr]:
    if isinstance(expr, ast.And):
        out: list[ast.Expr] = []
        for op in expr.operands:
            out.extend(_conjuncts(op))
        return out
    return [expr]


def _equality(expr: ast.Expr) -> tuple[str, Any] | None:
    if (
        isinstance(expr, ast.Comparison)
        and expr.op == "=="
        and isinstance(expr.left, ast.Field)
        and isinstance(expr.right, ast.Literal)
        and not isinstance(expr.right, ast.NullLiteral)
    ):
        return expr.left.name, expr.right.value
    return None


def _parse_sequence(rid: str, rule: Mapping[str, Any]) -> ast.Sequence:
    query = _parse_query(rid, str(rule.get("query", "")))
    if query.pipes or not isinstance(query.body, ast.Sequence):
        raise UnsupportedConstruct(
            rid, "chain", "a rule over alerts is compiled only as a sequence without pipes"
        )
    return query.body


def step_blocks(rid: str, rule: Mapping[str, Any]) -> list[str]:
    """The building-block rule id each step of a chain rule reads (refused if not exactly one)."""
    seq = _parse_sequence(rid, rule)
    out = []
    for step in seq.expanded_steps():
        ids = [
            eq[1]
            for c in _conjuncts(step.query.condition)
            if (eq := _equality(c)) is not None and eq[0] == RULE_ID_FIELD
        ]
        if len(ids) != 1:
            raise UnsupportedConstruct(
                rid,
                "chain step",
                f'each step must name exactly one building block with {RULE_ID_FIELD} == "..."',
                step,
            )
        out.append(str(ids[0]))
    return out


def recorded_fields(rid: str, rule: Mapping[str, Any]) -> list[str]:
    """Fields the chain needs from its building blocks' events: join keys and entity ids."""
    seq = _parse_sequence(rid, rule)
    names: list[str] = []
    for step in seq.expanded_steps():
        names.extend(f.name for f in seq.keys_for(step))
    for req in rule.get("required_fields") or []:
        name = str((req or {}).get("name", ""))
        if name.endswith("entity_id"):
            names.append(name)
    return list(dict.fromkeys(names))


def _stages_taken(rid: str, step: ast.Step, block_id: str, block_rule: Mapping[str, Any]) -> list[int]:
    """Indices of the block's (expanded) stages whose events satisfy the chain step's conditions."""
    wanted = [c for c in _conjuncts(step.query.condition) if (_equality(c) or ("", None))[0] != RULE_ID_FIELD]
    block_seq = _parse_sequence(block_id, block_rule)
    taken: list[int] = []
    for index, stage in enumerate(block_seq.expanded_steps()):
        cat = step.query.category
        if cat is not None and stage.query.category != cat:
            if stage.query.category is None:
                raise UnsupportedConstruct(
                    rid,
                    "chain step",
                    f"cannot tell whether {block_id}'s `any` stage {index + 1} is `{cat}`",
                    step,
                )
            continue
        have = {eq for c in _conjuncts(stage.query.condition) if (eq := _equality(c)) is not None}
        have_fields = {f for f, _ in have}
        verdict = True
        for cond in wanted:
            eq = _equality(cond)
            if eq is None:
                raise UnsupportedConstruct(
                    rid,
                    "chain step",
                    "besides the rule id, only `field == constant` conditions are compiled",
                    cond,
                )
            if eq in have:
                continue
            if eq[0] in have_fields:
                verdict = False  # the stage requires another value of that field
                continue
            raise UnsupportedConstruct(
                rid,
                "chain step",
                f"cannot tell whether {block_id}'s stage {index + 1} events satisfy {eq[0]} == {eq[1]!r}",
                cond,
            )
        if verdict:
            taken.append(index)
    if not taken:
        raise UnsupportedConstruct(rid, "chain step", f"no stage of {block_id} can satisfy this step", step)
    return taken


def compile_chain(
    rule: Mapping[str, Any],
    rid: str,
    blocks: Mapping[str, tuple[Mapping[str, Any], CompiledRule]],
    refused: Mapping[str, UnsupportedConstruct] | None = None,
) -> CompiledRule:
    """Compile a chain rule given its building blocks (rule data and compiled monitor by rule id)."""
    seq = _parse_sequence(rid, rule)
    if seq.until is not None or any(s.missing for s in seq.steps):
        raise UnsupportedConstruct(rid, "chain", "until and missing events are not compiled", seq)
    if seq.maxspan is None:
        raise UnsupportedConstruct(
            rid, "sequence without maxspan", "a monitor looks back over a bounded window", seq
        )
    stages = seq.expanded_steps()
    keys = [seq.keys_for(s) for s in stages]
    if any(len(k) != 1 for k in keys):
        raise UnsupportedConstruct(
            rid, "chain join keys", "a chain is compiled with exactly one join key", seq
        )
    if any(k[0].optional for k in keys):
        raise UnsupportedConstruct(rid, "optional join key", "not compiled for chains", keys[0][0])
    block_ids = step_blocks(rid, rule)
    kf = recorded_fields(rid, rule)
    steps: dict[str, dict[str, int]] = {}
    bits: list[int] = []
    for index, (step, block_id) in enumerate(zip(stages, block_ids, strict=True)):
        if block_id not in blocks:
            why = (refused or {}).get(block_id)
            detail = f"{block_id} is not compiled for OpenSearch, so it raises no alerts to chain"
            if why is not None:
                detail += f" ({why.construct}: {why.detail})"
            elif block_id not in (rule.get("metadata") or {}).get("depends_on", [block_id]):
                detail += " (it is not in metadata.depends_on)"
            raise UnsupportedConstruct(rid, "building block", detail)
        block_rule, block = blocks[block_id]
        if EVENTS_AGG not in json.dumps(block.monitor):
            raise UnsupportedConstruct(rid, "building block", f"{block_id} was compiled without {EVENTS_AGG}")
        bit = 1 << index
        bits.append(bit)
        per_stage = steps.setdefault(trigger_id(block_id), {})
        for stage in _stages_taken(rid, step, block_id, block_rule):
            per_stage[str(stage)] = per_stage.get(str(stage), 0) | bit
    upos = [[kf.index(k[0].name) for k in keys]]

    interval_ms = parse_duration_ms(str(rule.get("interval") or "5m"))
    interval_minutes = max(1, -(-interval_ms // 60_000))
    from_ms = parse_duration_ms(str(rule.get("from") or "now-6m"))
    maxspan_ms = seq.maxspan.millis
    lookback_ms = max(from_ms, interval_minutes * 60_000 + maxspan_ms)
    lookback_s = -(-lookback_ms // 1000)
    params: dict[str, Any] = {
        "agg": EVENTS_AGG,
        "steps": steps,
        "pe": "{{period_end}}",
        "lookback": lookback_s * 1000,
        "kf": kf,
        "bits": bits,
        "upos": upos,
        "dk": True,
        "maxspan": maxspan_ms,
        "maxcombos": MAX_KEY_COMBINATIONS,
    }

    def metric(emit: bool) -> dict[str, Any]:
        p = dict(params)
        if emit:
            p["emit"] = MAX_EMITTED_SEQUENCES
        return {
            "scripted_metric": {
                "init_script": {"lang": "painless", "source": "state.ev = new ArrayList();"},
                "map_script": {"lang": "painless", "source": _MAP_SCRIPT},
                "combine_script": {"lang": "painless", "source": "return state.ev;"},
                "reduce_script": {"lang": "painless", "source": _REDUCE_SCRIPT},
                "params": p,
            }
        }

    key_params = {k: params[k] for k in ("agg", "steps", "pe", "lookback", "kf", "bits", "upos")}
    search = {
        "size": 0,
        "query": {
            "bool": {
                "filter": [
                    {"terms": {"trigger_id": sorted(steps)}},
                    {"terms": {"state": ["ACTIVE", "ACKNOWLEDGED", "COMPLETED"]}},
                    {
                        # Active alerts have no end time; completed ones count while they ended
                        # inside the look-back.
                        "bool": {
                            "should": [
                                {"bool": {"must_not": [{"exists": {"field": "end_time"}}]}},
                                {
                                    "range": {
                                        "end_time": {
                                            "gte": f"{{{{period_end}}}}||-{lookback_s}s",
                                            "format": "epoch_millis",
                                        }
                                    }
                                },
                            ],
                            "minimum_should_match": 1,
                        }
                    },
                ]
            }
        },
        "aggregations": {
            COMPOSITE_AGG: {
                "composite": {
                    "size": 500,
                    "sources": [
                        {
                            "k0": {
                                "terms": {
                                    "script": {
                                        "lang": "painless",
                                        "source": _KEY_SCRIPT,
                                        "params": key_params,
                                    }
                                }
                            }
                        }
                    ],
                },
                "aggregations": {SEQUENCE_AGG: metric(False), EVENTS_AGG: metric(True)},
            }
        },
    }
    name = str(rule.get("name") or rid)
    monitor, fp = bucket_monitor(
        rid, rule, list(ALERT_INDICES), search, interval_minutes, reads_alerts_of=sorted(set(block_ids))
    )
    return CompiledRule(
        rule_id=rid,
        name=name,
        monitor=monitor,
        indices=list(ALERT_INDICES),
        key_fields=[[k[0].name for k in keys]],
        step_queries=[],
        maxspan_ms=maxspan_ms,
        lookback_ms=lookback_s * 1000,
        interval_minutes=interval_minutes,
        timestamp_field=str(rule.get("timestamp_field") or "@timestamp"),
        fingerprint=fp,
        reads_alerts_of=tuple(sorted(set(block_ids))),
    )
