"""What every deploy target (Kibana, OpenSearch) provides, so `dac plan`/`dac deploy` stay target-agnostic.

Contract:
- A target module exposes `from_config(cfg: TargetConfig) -> Target` (see `deployer.targets.config`).
- `Target.desired(rules, exceptions=None)` turns loaded rule files (and the repository's exception
  lists, a `Catalogue`) into the bodies the target would hold, keyed by `rule_id` (Kibana also
  keys lists and items `exception-list:<list_id>` / `exception-item:<item_id>`), already
  normalised (the same normal form `read_current` returns), ownership marker included.
- `Target.read_current(rule_ids)` returns, normalised and keyed by `rule_id`, every rule the tool
  owns in the target plus any rule whose `rule_id` is in `rule_ids` (owned or not), so the planner
  can spot conflicts with rules it does not own.
- `Target.owned(body)` says whether a normalised body carries this tool's ownership marker.
- `Target.compare_ignore` lists dotted field paths that are informational only: they are sent but a
  difference in them alone never makes a rule "changed".
- `Target.refused` (optional; only targets that cannot take every rule have it): after `desired()`,
  the rules left out because the target cannot express them faithfully, each with `rule_id`,
  `construct` and `reason`. `dac plan`/`dac deploy` list them and `dac deploy` exits 1 on them.
- `Target.apply(plan, progress)` performs the writes the plan calls for with as few requests as the
  target allows and returns one `Result` per rule it touched; it never raises for a per-rule
  failure, only for a whole-target failure (`TargetError`).
- Saved plans (`deployer.targets.saved_plan`): `payload(key)` is the exact body `apply` sends for
  a create or update (after `desired()`), `load_payloads({key: body})` makes a saved plan's bodies
  the ones `apply` sends, `observed(key)` is the object's state as `read_current` last saw it (its
  server id, the API's version markers and a digest; None when absent), `object_kind(key)` names
  what the key is (`rule`, `monitor`, `exception_list`, `exception_item`), and
  `lock(holder, wait=...)` is a context manager holding the target's deploy lock.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from deployer.targets.plan import Plan

# Called with the number of rules just finished; a CLI progress bar adds it up.
ProgressCallback = Callable[[int], None]


class TargetError(Exception):
    """A failure of the whole target (unreachable, bad credentials, unsupported version), safe to print."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


@dataclass(frozen=True)
class Result:
    """The outcome of one write for one rule."""

    rule_id: str
    action: str  # create | update | delete | enable | disable
    ok: bool
    message: str = ""
    status_code: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        return {
            "rule_id": self.rule_id,
            "action": self.action,
            "ok": self.ok,
            "message": self.message,
            "status_code": self.status_code,
        }


@runtime_checkable
class Target(Protocol):
    """A place rules are deployed to; see the module docstring for the contract."""

    name: str
    kind: str
    compare_ignore: Collection[str]

    def describe(self) -> str:
        """Return a one-line, secret-free description (kind, URL, space)."""
        ...

    def desired(self, rules: Sequence[Any], exceptions: Any = None) -> dict[str, dict[str, Any]]:
        """Return normalised bodies for the given loaded rule files, keyed by rule_id."""
        ...

    def read_current(self, rule_ids: Collection[str] = ()) -> dict[str, dict[str, Any]]:
        """Return owned rules plus the given rule_ids as normalised bodies, keyed by rule_id."""
        ...

    def owned(self, body: Mapping[str, Any]) -> bool:
        """Return True when the body carries this tool's ownership marker."""
        ...

    def apply(self, plan: Plan, progress: ProgressCallback | None = None) -> list[Result]:
        """Perform the plan's writes and return per-rule results."""
        ...

    def payload(self, key: str) -> dict[str, Any]:
        """Return the exact body `apply` sends for a create or update."""
        ...

    def load_payloads(self, bodies: Mapping[str, Mapping[str, Any]]) -> None:
        """Send these bodies (a saved plan's) instead of the ones `desired()` built."""
        ...

    def observed(self, key: str) -> dict[str, Any] | None:
        """Return the object's state as last read (id, version markers, digest), None when absent."""
        ...

    def object_kind(self, key: str) -> str:
        """Return what a plan key names (rule, monitor, exception_list, exception_item)."""
        ...

    def lock(self, holder: str, *, wait: float) -> AbstractContextManager[None]:
        """Hold the target's deploy lock, waiting up to `wait` seconds for another run to finish."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
