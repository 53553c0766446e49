"""MITRE ATT&CK Enterprise: tactics, techniques, detection strategies and analytics.

The data is ``attack_enterprise.json``, generated from MITRE's STIX release by
``scripts/gen_attack_table.py`` (never edited by hand). It is read once, on first use.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ATTACK_ID = re.compile(r"^(?:TA\d{4}|T\d{4}(?:\.\d{3})?)$")
TABLE_PATH = Path(__file__).with_name("attack_enterprise.json")

# Rule platforms (metadata.platforms) → ATT&CK platform names.
PLATFORM_NAMES = {"windows": "Windows", "linux": "Linux", "macos": "macOS"}


@dataclass(frozen=True, slots=True)
class Tactic:
    """A tactic (TA…); ``shortname`` is the kill-chain phase name Navigator uses."""

    id: str
    shortname: str
    name: str


@dataclass(frozen=True, slots=True)
class Technique:
    """A technique or sub-technique (T…)."""

    id: str
    name: str
    tactics: tuple[str, ...]
    platforms: tuple[str, ...]
    parent: str | None = None
    revoked_by: str | None = None
    deprecated: bool = False

    @property
    def current(self) -> bool:
        """Neither revoked nor deprecated."""
        return self.revoked_by is None and not self.deprecated


@dataclass(frozen=True, slots=True)
class Strategy:
    """A detection strategy (DET…): the technique it detects and its analytics."""

    id: str
    name: str
    technique: str
    analytics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Analytic:
    """An analytic (AN…): its detection strategy, platforms and tunable elements."""

    id: str
    strategy: str
    platforms: tuple[str, ...]
    mutable: tuple[str, ...] = ()


@dataclass(frozen=True)
class AttackTable:
    """The whole table, keyed by ATT&CK ID."""

    version: str
    tactics: dict[str, Tactic]  # in matrix order
    techniques: dict[str, Technique]
    strategies: dict[str, Strategy]
    analytics: dict[str, Analytic]


@cache
def table() -> AttackTable:
    """The packaged ATT&CK table."""
    raw = json.loads(TABLE_PATH.read_text(encoding="utf-8"))
    return AttackTable(
        version=raw["attack_version"],
        tactics={t[0]: Tactic(*t) for t in raw["tactics"]},
        techniques={
            tid: Technique(
                tid,
                e["name"],
                tuple(e["tactics"]),
                tuple(e["platforms"]),
                e.get("parent"),
                e.get("revoked_by"),
                e.get("deprecated", False),
            )
            for tid, e in raw["techniques"].items()
        },
        strategies={
            det: Strategy(det, e["name"], e["technique"], tuple(e["analytics"]))
            for det, e in raw["strategies"].items()
        },
        analytics={
            an: Analytic(an, e["strategy"], tuple(e["platforms"]), tuple(e.get("mutable", ())))
            for an, e in raw["analytics"].items()
        },
    )


def tactic_reference(tactic_id: str) -> str:
    """The canonical attack.mitre.org URL of a tactic."""
    return f"https://attack.mitre.org/tactics/{tactic_id}/"


def technique_reference(technique_id: str) -> str:
    """The canonical attack.mitre.org URL of a technique or sub-technique."""
    return f"https://attack.mitre.org/techniques/{technique_id.replace('.', '/')}/"
