"""Fixture tests: files exist, and non-exempt rules have a positive and a negative test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from deployer.rules.checks.base import Context, finding
from deployer.rules.findings import WARNING, Finding
from deployer.rules.loader import RuleFile


def check_fixtures(rule: RuleFile, ctx: Context) -> Iterator[Finding]:
    """Fixture tests exist, and non-exempt rules have a positive and a negative test."""
    meta = rule.metadata
    tests = meta.get("tests")
    maturity = meta.get("maturity")
    exempt = maturity in ctx.config.validation.fixture_exempt_maturities
    if tests is not None and not isinstance(tests, list):
        return  # reported by the schema check
    tests = tests or []
    expects: set[str] = set()
    names: set[str] = set()
    for i, test in enumerate(tests):
        if not isinstance(test, dict):
            continue
        base = ("metadata", "tests", i)
        if isinstance(test.get("expect"), str):
            expects.add(test["expect"])
        name = test.get("name")
        if isinstance(name, str):
            if name in names:
                yield finding(
                    rule,
                    rule.value_position((*base, "name")),
                    "fixture",
                    f"metadata.tests[{i}]: test name '{name}' is used twice",
                    "give each test its own name",
                    WARNING,
                )
            names.add(name)
        events = test.get("events")
        if not isinstance(events, str) or not events:
            continue
        pos = rule.value_position((*base, "events"))
        if Path(events).is_absolute():
            yield finding(
                rule,
                pos,
                "fixture",
                f"metadata.tests[{i}].events: '{events}' is an absolute path",
                "write it relative to the rule file, e.g. fixtures/<name>.ndjson",
            )
            continue
        target = rule.path.parent / events
        if not target.is_file():
            yield finding(
                rule,
                pos,
                "fixture",
                f"metadata.tests[{i}].events: fixture file '{events}' not found",
                f"the path is relative to the rule file ({rule.path.parent / events})",
            )
    if exempt or "maturity" not in meta or not expects <= {"match", "no_match"}:
        return  # an invalid expect value is already a schema finding; counting would only echo it
    missing = [e for e in ("match", "no_match") if e not in expects]
    if missing:
        where = ("metadata", "tests") if "tests" in meta else ("metadata",)
        what = " and ".join(f"expect: {m}" for m in missing)
        yield finding(
            rule,
            rule.position(where),
            "fixture",
            f"{maturity} rule needs at least one test with {what}",
            f"add fixture tests under metadata.tests, or set maturity to one of "
            f"{', '.join(ctx.config.validation.fixture_exempt_maturities) or '(none exempt)'}",
        )
