"""Load rule files for `dac test` and `dac run`: the rule loader's result, with load errors as text."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployer.exceptions.model import Catalogue, referenced_list_ids
from deployer.rules.findings import ERROR, Finding
from deployer.testing.evaluate import depends_on

DEFAULT_RULES_DIR = Path("detections")


@dataclass
class LoadedRules:
    """Rules to work on, rules loaded only to resolve `depends_on`, and load errors as messages."""

    rules: list[Any] = field(default_factory=list)
    library: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    exceptions: Catalogue = field(default_factory=Catalogue)


def format_finding(finding: Finding) -> str:
    """A finding as `path:line:col: rule_id: message (hint: ...) [code]` (`Finding.format_text`)."""
    return finding.format_text()


def load_rules(paths: Sequence[Path], *, default_dir: Path = DEFAULT_RULES_DIR) -> LoadedRules:
    """Load the rule files under the paths; load the default rules directory too when a dependency is missing."""
    from deployer.rules.loader import load_rule_files

    result = load_rule_files(list(paths))
    out = LoadedRules()
    out.errors = [f.format_text() for f in result.findings if f.severity == ERROR]
    first_seen: dict[str, Any] = {}
    for rule in result.rules:
        rule_id = rule.rule_id
        if not isinstance(rule_id, str) or not rule_id:
            out.errors.append(f"{rule.path}: no rule_id; a rule needs one to be tested or replayed")
        elif rule_id in first_seen:
            out.errors.append(
                f"{rule.path}: duplicate rule_id {rule_id!r} (also in {first_seen[rule_id].path}); "
                "this file is skipped"
            )
        else:
            first_seen[rule_id] = rule
            out.rules.append(rule)
    known = {r.rule_id for r in out.rules}
    missing = {d for r in out.rules for d in depends_on(r)} - known
    if missing and default_dir.is_dir() and not _covers(paths, default_dir):
        # A rule over alerts tested on its own still needs the rules it reads; they live with the
        # rest of the content. Problems in those files are reported by their own runs.
        extra = load_rule_files([default_dir])
        out.library = [r for r in extra.rules if r.rule_id not in known]
    out.exceptions, problems = _exceptions(paths, [*out.rules, *out.library], default_dir)
    out.errors.extend(f.format_text() for f in problems if f.severity == ERROR)
    return out


def _exceptions(
    paths: Sequence[Path], rules: Sequence[Any], default_dir: Path
) -> tuple[Catalogue, list[Finding]]:
    """The exception lists under the paths, and the default rules directory's when a reference is unresolved."""
    from deployer.exceptions.loader import catalogue_for

    referenced = {lid for rule in rules for lid in referenced_list_ids(rule)}
    return catalogue_for(paths, referenced, default_dir)


def _covers(paths: Iterable[Path], directory: Path) -> bool:
    target = directory.resolve()
    return any(Path(p).resolve() == target for p in paths)
