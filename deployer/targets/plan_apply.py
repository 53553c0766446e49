"""Apply a saved plan exactly, or refuse: the `dac deploy --plan FILE` side of saved plans.

Order of checks, each one before anything is written: the plan file itself (`read_saved_plan`:
JSON, integrity digest, dac version), the target (`target_mismatch`), the repository
(`repository_changes` against the plan's digest), then, holding the target's deploy lock, a fresh
read of every object the plan touches (`staleness`). Only when all agree are the plan's own bodies
sent; nothing is recomputed from the working tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployer.targets.base import ProgressCallback, Result
from deployer.targets.saved_plan import (
    SavedPlan,
    repository_changes,
    repository_files,
    staleness,
    target_mismatch,
)


@dataclass
class Refusal:
    """Why a saved plan will not be applied: a message, the details (one per object or file), a hint."""

    message: str
    details: list[str] = field(default_factory=list)
    hint: str = ""


def preflight(
    saved: SavedPlan,
    *,
    plan_file: Path,
    kind: str,
    url: str,
    space: str | None,
    root: Path,
    config_file: Path | None,
) -> Refusal | None:
    """Check the plan against the resolved target and the working tree; None when it may be applied."""
    replan = replan_hint(plan_file)
    mismatch = target_mismatch(saved, kind=kind, url=url, space=space)
    if mismatch:
        return Refusal(
            f"{plan_file} was made for another target ({mismatch}); nothing was written",
            hint="deploy a plan to the target it was made for",
        )
    # The same files as the plan's digest (those outside the paths too), plus any new one under them.
    files_now = repository_files(
        [root / p for p in saved.paths],
        root,
        [*([config_file] if config_file else []), *(root / rel for rel in saved.files)],
    )
    moved = repository_changes(saved.files, files_now)
    if moved:
        return Refusal(
            f"the repository differs from the plan's digest ({len(moved)} file(s)); nothing was written",
            moved,
            replan,
        )
    conflicts = saved.conflicts()
    if conflicts:
        return Refusal(
            f"the plan has {len(conflicts)} conflict(s) with objects dac does not own; nothing was written",
            [f"{c['id']}: {c.get('message', '')}" for c in conflicts],
            "plan again with --adopt to take them over",
        )
    return None


def replan_hint(plan_file: Path) -> str:
    """The hint every refusal ends with."""
    return f"plan again (dac plan --out {plan_file}), review the new plan, then deploy it"


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
