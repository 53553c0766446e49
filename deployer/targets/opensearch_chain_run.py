"""Run a compiled chain on a cluster with Alerting: its building blocks first, then the chain.

The chain monitor reads the building blocks' alert documents, so within one check the blocks'
monitors run (``_execute``, alerts stored), Alerting's alert indices are refreshed, and then the
chain's monitor runs. On a schedule the same happens across runs: a chain alert is raised by the
first chain run after both blocks' alerts are written (see docs/opensearch.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deployer.targets.base import TargetError
from deployer.targets.opensearch import OpenSearchClient
from deployer.targets.opensearch_chain import ALERT_INDICES
from deployer.targets.opensearch_compile import EVENTS_AGG, CompiledRule, trigger_id
from deployer.targets.opensearch_verify import alerted_entities, format_ts


@dataclass(frozen=True)
class ChainAlert:
    """One stored chain alert: its join key and the events of its completed sequences."""

    alert_id: str
    key: tuple[str, ...]
    state: str
    sequences: list[list[dict[str, Any]]] = field(default_factory=list)

    def values(self, field_name: str, step: int) -> list[str]:
        """Values of ``field_name`` on the ``step``-th event (0-based) of every sequence."""
        out: list[str] = []
        for seq in self.sequences:
            if step < len(seq):
                for v in seq[step].get(field_name) or []:
                    if str(v) not in out:
                        out.append(str(v))
        return out


def blocks_of(chain: CompiledRule) -> list[str]:
    """Rule ids of the building blocks whose alerts the chain reads."""
    return list(chain.reads_alerts_of)


def refresh_alerts(client: OpenSearchClient) -> None:
    """Make the alerts just written visible to the chain's search."""
    client.request("POST", f"/{','.join(ALERT_INDICES)}/_refresh", params={"ignore_unavailable": "true"})


def forget_block_alerts(client: OpenSearchClient, chain: CompiledRule) -> None:
    """Delete the blocks' stored alerts, so one replayed fixture cannot see the previous one's.

    Only for replays on a test cluster (``dac verify``): a completed alert stays readable by the
    chain for its look-back, which in production is what it should do.
    """
    client.request(
        "POST",
        f"/{','.join(ALERT_INDICES)}/_delete_by_query",
        {"query": {"terms": {"trigger_id": [trigger_id(b) for b in blocks_of(chain)]}}},
        params={"refresh": "true", "conflicts": "proceed", "ignore_unavailable": "true"},
        ok=(404,),
    )


def run_chain(
    client: OpenSearchClient, chain: CompiledRule, monitor_ids: Mapping[str, str]
) -> list[tuple[str, ...]]:
    """Execute the chain's building blocks, then the chain; return the chain's alerted keys."""
    for block in blocks_of(chain):
        if block not in monitor_ids:
            raise TargetError(f"{chain.rule_id}: building block {block} has no monitor on the cluster")
        alerted_entities(client.execute_monitor(monitor_ids[block]), block)
    refresh_alerts(client)
    return alerted_entities(client.execute_monitor(monitor_ids[chain.rule_id]), chain.rule_id)


def chain_alerts(client: OpenSearchClient, monitor_id: str, state: str = "ACTIVE") -> list[ChainAlert]:
    """The chain monitor's stored alerts, read back from the Alerting API."""
    out = []
    for alert in client.alerts(monitor_id, state):
        content = alert.get("agg_alert_content") or {}
        bucket = content.get("bucket") or {}
        seqs: Sequence[Any] = ((bucket.get(EVENTS_AGG) or {}).get("value")) or []
        out.append(
            ChainAlert(
                alert_id=str(alert.get("id") or alert.get("alert_id") or ""),
                key=tuple(str(v) for v in content.get("bucket_keys") or []),
                state=str(alert.get("state")),
                sequences=[list(s) for s in seqs],
            )
        )
    return out


def chain_event_lines(alert: Mapping[str, Any]) -> list[str]:
    """One line per event of a stored chain alert's sequences: time, step and entity ids."""
    bucket = (alert.get("agg_alert_content") or {}).get("bucket") or {}
    out = []
    for seq in (bucket.get(EVENTS_AGG) or {}).get("value") or []:
        for event in seq:
            ids = "  ".join(
                f"{name}={','.join(str(v) for v in values)}"
                for name, values in sorted(event.items())
                if name not in ("t", "s") and values
            )
            out.append(f"{format_ts(int(event['t']))}  step {int(event['s']) + 1}  {ids}")
    return out
