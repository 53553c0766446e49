"""Target-agnostic planning: compare desired rules with what a target holds, like `terraform plan`.

Contract:
- Input: `desired` and `current`, each `{rule_id: body}` where bodies are already normalised by the
  target (server-managed fields dropped, defaults filled), plus `owned(body) -> bool` telling
  whether a current body carries the tool's ownership marker.
- Output: a `Plan` listing, per rule_id, one `Change` with action
  `create` (desired, absent), `update` (desired, present and owned, with a field-level diff),
  `unchanged`, `delete` (owned, no longer desired, only with `prune=True`), `orphan` (owned, not
  desired, kept because `prune` is off) or `conflict` (desired, present but not owned; refused
  unless `adopt=True`, in which case it becomes an update that takes ownership).
- Rules present in the target that are neither desired nor owned are never touched or listed.
- `ignore` names dotted paths (e.g. `meta.source_path`) that never make a rule differ on their own.
- Rendering: `Plan.render_text()` for people, `Plan.to_dict()` / `Plan.render_json()` for machines.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

CREATE = "create"
UPDATE = "update"
DELETE = "delete"
UNCHANGED = "unchanged"
ORPHAN = "orphan"
CONFLICT = "conflict"

ADOPT_HINT = "pass --adopt to take it over (its current content will be replaced by the repository's)"

_MISSING = object()


@dataclass(frozen=True)
class FieldChange:
    """One differing field, addressed by a dotted path."""

    path: str
    before: Any
    after: Any

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping (absent values are null)."""
        return {"path": self.path, "before": self.before, "after": self.after}


@dataclass
class Change:
    """What the plan does with one rule_id."""

    action: str
    rule_id: str
    name: str = ""
    fields: list[FieldChange] = field(default_factory=list)
    desired: dict[str, Any] | None = None
    current: dict[str, Any] | None = None
    message: str = ""
    hint: str = ""

    def changed_paths(self) -> set[str]:
        """Return the dotted paths of the differing fields."""
        return {f.path for f in self.fields}

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping without the full bodies."""
        out: dict[str, Any] = {"action": self.action, "rule_id": self.rule_id, "name": self.name}
        if self.fields:
            out["fields"] = [f.to_dict() for f in self.fields]
        if self.message:
            out["message"] = self.message
        if self.hint:
            out["hint"] = self.hint
        return out


@dataclass
class Plan:
    """The ordered set of changes for one target."""

    target: str = ""
    changes: list[Change] = field(default_factory=list)
    prune: bool = False
    adopt: bool = False

    def of(self, action: str) -> list[Change]:
        """Return the changes with the given action."""
        return [c for c in self.changes if c.action == action]

    @property
    def writes(self) -> list[Change]:
        """Changes that need a write (create, update, delete)."""
        return [c for c in self.changes if c.action in (CREATE, UPDATE, DELETE)]

    @property
    def has_changes(self) -> bool:
        """True when applying the plan would write something."""
        return bool(self.writes)

    @property
    def conflicts(self) -> list[Change]:
        """Changes refused because the rule exists but is not owned."""
        return self.of(CONFLICT)

    def summary(self) -> dict[str, int]:
        """Return counts per action."""
        return {a: len(self.of(a)) for a in (CREATE, UPDATE, DELETE, UNCHANGED, ORPHAN, CONFLICT)}

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping of the plan (unchanged rules listed by id only)."""
        return {
            "target": self.target,
            "prune": self.prune,
            "adopt": self.adopt,
            "summary": self.summary(),
            "has_changes": self.has_changes,
            "changes": [c.to_dict() for c in self.changes if c.action != UNCHANGED],
            "unchanged": [c.rule_id for c in self.of(UNCHANGED)],
        }

    def render_json(self) -> str:
        """Return the plan as pretty JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str)

    def render_text(self, *, width: int = 100) -> str:
        """Return the plan as human-readable text, terraform style."""
        marks = {CREATE: "+", UPDATE: "~", DELETE: "-", ORPHAN: "?", CONFLICT: "!"}
        lines: list[str] = []
        if self.target:
            lines.append(f"Target: {self.target}")
        for c in self.changes:
            if c.action == UNCHANGED:
                continue
            label = f"  {marks[c.action]} {c.action:<8} {c.rule_id}"
            if c.name:
                label += f'  "{c.name}"'
            lines.append(label)
            for f in c.fields:
                lines.append(f"      {f.path}: {_short(f.before, width)} -> {_short(f.after, width)}")
            if c.message:
                lines.append(f"      {c.message}")
            if c.hint:
                lines.append(f"      hint: {c.hint}")
        s = self.summary()
        lines.append(
            f"Plan: {s[CREATE]} to create, {s[UPDATE]} to update, {s[DELETE]} to delete, "
            f"{s[UNCHANGED]} unchanged"
            + (f", {s[ORPHAN]} owned but not in the repository (use --prune to delete)" if s[ORPHAN] else "")
            + (f", {s[CONFLICT]} conflict(s)" if s[CONFLICT] else "")
            + "."
        )
        if not self.has_changes and not s[CONFLICT]:
            lines.append("No changes. The target matches the repository.")
        return "\n".join(lines)


def _short(value: Any, width: int) -> str:
    if value is _MISSING or value is None:
        return "(absent)"
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def diff_fields(
    before: Any, after: Any, *, prefix: str = "", ignore: Collection[str] = ()
) -> list[FieldChange]:
    """Return field-level differences; mappings recurse, lists and scalars compare whole."""
    if prefix and prefix in ignore:
        return []
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        out: list[FieldChange] = []
        # Keep the desired body's key order so diffs read in rule-file order.
        keys = list(after.keys()) + [k for k in before.keys() if k not in after]
        for key in keys:
            path = f"{prefix}.{key}" if prefix else str(key)
            b = before.get(key, _MISSING)
            a = after.get(key, _MISSING)
            if b is _MISSING or a is _MISSING:
                if path not in ignore and b != a:
                    out.append(FieldChange(path, None if b is _MISSING else b, None if a is _MISSING else a))
                continue
            out.extend(diff_fields(b, a, prefix=path, ignore=ignore))
        return out
    if before != after or type(before) is not type(after) and not _same_number(before, after):
        return [FieldChange(prefix, before, after)]
    return []


def _same_number(a: Any, b: Any) -> bool:
    # 1 and 1.0 are the same value in JSON, but True is not 1.
    return (
        isinstance(a, int | float)
        and isinstance(b, int | float)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and a == b
    )


def build_plan(
    desired: Mapping[str, Mapping[str, Any]],
    current: Mapping[str, Mapping[str, Any]],
    *,
    owned: Callable[[Mapping[str, Any]], bool],
    prune: bool = False,
    adopt: bool = False,
    ignore: Collection[str] = (),
    target: str = "",
) -> Plan:
    """Compare desired with current bodies and return the plan (see the module docstring)."""
    plan = Plan(target=target, prune=prune, adopt=adopt)
    for rule_id in sorted(desired):
        want = dict(desired[rule_id])
        name = str(want.get("name", ""))
        have = current.get(rule_id)
        if have is None:
            plan.changes.append(Change(CREATE, rule_id, name, desired=want))
            continue
        have = dict(have)
        fields = diff_fields(have, want, ignore=ignore)
        if not owned(have):
            if not adopt:
                plan.changes.append(
                    Change(
                        CONFLICT,
                        rule_id,
                        name,
                        desired=want,
                        current=have,
                        message="a rule with this rule_id exists in the target but is not managed by dac",
                        hint=ADOPT_HINT,
                    )
                )
                continue
            # Adoption always writes: at least the ownership marker changes.
            plan.changes.append(
                Change(
                    UPDATE,
                    rule_id,
                    name,
                    fields,
                    desired=want,
                    current=have,
                    message="adopting a rule not managed by dac",
                )
            )
            continue
        action = UPDATE if fields else UNCHANGED
        plan.changes.append(Change(action, rule_id, name, fields, desired=want, current=have))
    for rule_id in sorted(set(current) - set(desired)):
        have = dict(current[rule_id])
        if not owned(have):
            continue
        name = str(have.get("name", ""))
        plan.changes.append(Change(DELETE if prune else ORPHAN, rule_id, name, current=have))
    order = {CONFLICT: 0, CREATE: 1, UPDATE: 2, DELETE: 3, ORPHAN: 4, UNCHANGED: 5}
    plan.changes.sort(key=lambda c: (order[c.action], c.rule_id))
    return plan
