"""Validate rule files: load each one, run every check of ``deployer.rules.checks`` on it, then
the cross-file checks (duplicate rule_ids and names).

``validate(paths, config)`` loads every file and reports every problem of every rule in one
run. Each check is a small function returning findings; a check never raises for bad content.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from deployer.config import Config
from deployer.ecs import registry as ecs_registry
from deployer.ecs.registry import FieldRegistry
from deployer.exceptions.validate import validate_exceptions
from deployer.rules.checks import CHECKS, Context
from deployer.rules.checks.base import finding
from deployer.rules.checks.query import parse_query
from deployer.rules.checks.schema import warm_up as warm_up_schema
from deployer.rules.findings import ERROR, Finding, sort_key
from deployer.rules.loader import RuleFile, discover_rule_files, load_rule_file


def validate(
    paths: Iterable[str | Path],
    config: Config | None = None,
    registry: FieldRegistry | None = None,
    jobs: int = 1,
) -> list[Finding]:
    """Load and validate every rule file under ``paths``; returns findings sorted by position.

    ``jobs`` > 1 checks files in that many forked worker processes (POSIX only; serial
    otherwise). Raises FileNotFoundError for a path that does not exist and
    ExtraFieldsError when the configured extra-fields file or a field pack is malformed (both are environment
    errors, not findings).
    """
    config = config or Config()
    paths = list(paths)
    if registry is None:
        registry = ecs_registry.load(config.validation.extra_fields)
    files = discover_rule_files(paths)
    ctx = Context(config, registry, config.root)
    _ = ctx.packs  # a missing or malformed field pack is an environment error, before any check
    workers = _worker_count(len(files), jobs)
    if workers > 1:
        results = _validate_parallel(files, ctx, workers)
    else:
        results = [_validate_files(files, ctx)]
    findings: list[Finding] = []
    idents: list[_Ident] = []
    for chunk_findings, chunk_idents in results:
        findings.extend(chunk_findings)
        idents.extend(chunk_idents)
    findings.extend(_duplicates(idents))
    # Exception lists and the rules' references to them (deployer.exceptions.validate).
    findings.extend(
        validate_exceptions(
            files, paths, registry, config.root / "detections", registry_for=lambda r: ctx.fields_for(r).registry
        )
    )
    return sorted(findings, key=sort_key)


@dataclass(frozen=True, slots=True)
class _Ident:
    """What the cross-file duplicate check needs from a rule (small, so workers can return it)."""

    path: str
    rule_id: str | None
    rule_id_line: int
    name: str | None
    name_line: int


def _ident(rule: RuleFile) -> _Ident:
    return _Ident(
        str(rule.path), rule.rule_id, rule.position(("rule_id",))[0], rule.name, rule.position(("name",))[0]
    )


def _validate_files(files: list[Path], ctx: Context) -> tuple[list[Finding], list[_Ident]]:
    # One file at a time: each rule is dropped once checked, so memory stays flat and the
    # garbage collector never rescans thousands of live rules.
    findings: list[Finding] = []
    idents: list[_Ident] = []
    for path in files:
        rule, problems = load_rule_file(path)
        findings.extend(problems)
        if rule is not None:
            findings.extend(validate_rule(rule, ctx))
            idents.append(_ident(rule))
    return findings, idents


_WORKER_CONTEXT: Context | None = None


def _worker_count(files: int, jobs: int) -> int:
    if jobs <= 1 or files < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if threading.active_count() > 1:
        return 1  # forking a threaded process can deadlock; stay serial
    return min(jobs, files)


def _validate_in_worker(files: list[Path]) -> tuple[list[Finding], list[_Ident]]:
    assert _WORKER_CONTEXT is not None
    return _validate_files(files, _WORKER_CONTEXT)


def _validate_parallel(
    files: list[Path], ctx: Context, workers: int
) -> list[tuple[list[Finding], list[_Ident]]]:
    global _WORKER_CONTEXT
    # Build everything shared before forking so workers inherit it instead of rebuilding it:
    # the EQL grammar, the schema validator and the mapped-field set.
    parse_query("any where true")
    warm_up_schema()
    _ = ctx.covered_fields
    _WORKER_CONTEXT = ctx
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return pool.map(_validate_in_worker, [files[i::workers] for i in range(workers)])
    finally:
        _WORKER_CONTEXT = None


def validate_rule(rule: RuleFile, ctx: Context) -> list[Finding]:
    """Every finding for one loaded rule."""
    out: list[Finding] = []
    for check in CHECKS:
        try:
            out.extend(check(rule, ctx))
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others' findings
            out.append(
                finding(
                    rule,
                    (1, 1),
                    "internal-error",
                    f"{check.__name__} failed: {exc!r}",
                    "please report this with the rule file",
                )
            )
    return out


# ---------------------------------------------------------------- across files


def _duplicates(idents: list[_Ident]) -> list[Finding]:
    """rule_id and name are unique across files; each file in a clash is told about the others."""
    out: list[Finding] = []
    for label, hint in (
        ("rule_id", "rule_id must be unique: generate a new UUID for the copy"),
        ("name", "give each rule a distinct name so analysts can tell alerts apart"),
    ):
        line = f"{label}_line"  # _Ident holds each value's line beside it
        groups: dict[str, list[_Ident]] = {}
        for ident in idents:
            value = getattr(ident, label)
            if value:
                # Names clash regardless of case and surrounding spaces; rule_ids exactly.
                groups.setdefault(value if label == "rule_id" else value.strip().lower(), []).append(ident)
        for group in groups.values():
            if len(group) < 2:
                continue
            for ident in group:
                others = ", ".join(
                    f"{o.path}:{getattr(o, line)}"
                    for o in sorted(group, key=lambda g: g.path)
                    if o is not ident
                )
                out.append(
                    Finding(
                        ident.path,
                        getattr(ident, line),
                        1,
                        ident.rule_id,
                        "duplicate",
                        ERROR,
                        f"{label} {getattr(ident, label)!r} is also used by {others}",
                        hint,
                    )
                )
    return out
