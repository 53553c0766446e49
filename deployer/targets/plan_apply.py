"""Apply a saved plan exactly, or refuse: the `dac deploy --plan FILE` side of saved plans.

Order of checks, each one before anything is written: the plan file itself (`read_saved_plan`:
JSON, integrity digest, dac version), the target (`target_mismatch`), the repository
(`repository_changes` against the plan's digest), then, holding the target's deploy lock, a fresh
read of every object the plan touches (`staleness`). Only when all agree are the plan's own bodies
sent; nothing is recomputed from the working tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deployer.targets.base import ProgressCallback, Result
from deployer.targets.saved_plan import SavedPlan, staleness


@dataclass
class ApplyOutcome:
    """What `apply_saved_plan` did: per-object results, or the reasons it wrote nothing."""

    results: list[Result] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    @property
    def applied(self) -> list[Result]:
        """Writes that succeeded."""
        return [r for r in self.results if r.ok]

    @property
    def failed(self) -> list[Result]:
        """Writes that failed (or whose outcome is unknown)."""
        return [r for r in self.results if not r.ok]


def apply_saved_plan(
    target: Any,
    saved: SavedPlan,
    *,
    holder: str,
    lock_wait: float = 120.0,
    progress: ProgressCallback | None = None,
) -> ApplyOutcome:
    """Under the target's deploy lock, re-read what the plan touches and apply it only if unchanged."""
    ids = [rec["id"] for rec in saved.changes]
    with target.lock(holder, wait=lock_wait):
        target.load_payloads(
            {rec["id"]: rec["desired"] for rec in saved.changes if rec.get("desired") is not None}
        )
        target.read_current(ids)
        stale = staleness(saved, {rid: target.observed(rid) for rid in ids})
        if stale:
            return ApplyOutcome(stale=stale)
        if not ids:
            return ApplyOutcome()
        return ApplyOutcome(results=target.apply(saved.to_plan(), progress))
