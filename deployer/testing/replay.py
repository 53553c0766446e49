"""Replay events through rules offline (`dac run`): one result object per match.

Each result has exactly these keys, in this order: `rule_id`, `name`, `implements`, `event_ids`
(the matched events' `event.id` in sequence order, `null` for a missing-event placeholder) and
`join_keys` (the values the sequence joined on). Rules are evaluated in dependency order, so a rule
over other rules' alerts is reported after the rules it reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from deployer.testing.evaluate import Evaluator, RuleLike, event_ref

if TYPE_CHECKING:
    from deployer.exceptions.model import Catalogue

RESULT_KEYS = ("rule_id", "name", "implements", "event_ids", "join_keys")


def replay(
    rules: Sequence[RuleLike],
    events: Iterable[dict[str, Any]],
    *,
    library: Sequence[RuleLike] = (),
    exceptions: Catalogue | None = None,
) -> Iterator[dict[str, Any]]:
    """Evaluate every rule over the events and yield one dict per match; `library` rules only feed `depends_on`."""
    materialised = events if isinstance(events, list) else list(events)
    evaluator = Evaluator([*rules, *library], exceptions=exceptions)
    targets = [r.rule_id for r in rules]
    # Fail on a bad dependency graph or a query that does not compile before the first result.
    evaluator.prepare(targets)
    for outcome in evaluator.evaluate(targets, materialised):
        for match in outcome.matches:
            yield result_for(outcome.rule, match)


def result_for(rule: RuleLike, match: Any) -> dict[str, Any]:
    """The result object for one match of one rule (keys in `RESULT_KEYS` order)."""
    return {
        "rule_id": rule.rule_id,
        "name": (rule.kibana or {}).get("name"),
        "implements": list((rule.metadata or {}).get("implements") or []),
        "event_ids": [event_ref(e) for e in match.events],
        "join_keys": list(match.join_keys),
    }
