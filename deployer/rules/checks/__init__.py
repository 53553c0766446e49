"""The per-rule checks of ``dac validate``: each takes one rule and the context, yields findings.

A new concern is a new module here plus one entry in ``CHECKS``; ``deployer.rules.validate``
runs the list over every rule and adds the cross-file checks.
"""

from __future__ import annotations

from deployer.rules.checks.attack_mapping import check_attack
from deployer.rules.checks.base import Check, Context
from deployer.rules.checks.field_packs import check_field_packs
from deployer.rules.checks.field_settings import check_field_settings
from deployer.rules.checks.fixtures import check_fixtures
from deployer.rules.checks.index import check_index
from deployer.rules.checks.query import check_query
from deployer.rules.checks.schema import check_schema
from deployer.rules.checks.tunables import check_tunables

# Run in this order for every rule; findings are sorted by position afterwards.
CHECKS: tuple[Check, ...] = (
    check_schema,
    check_index,
    check_query,
    check_field_settings,
    check_field_packs,
    check_attack,
    check_tunables,
    check_fixtures,
)

__all__ = ["CHECKS", "Check", "Context"]
