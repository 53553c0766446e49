"""``dac tunables``: check or render the marked query literals from the analytics' tunables file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from deployer.cli.common import EXIT_ENV, fail, load_repo_config, repo_config_option


@click.command("tunables")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@repo_config_option()
@click.option("--write", is_flag=True, help="Rewrite the rule files whose marked literals differ.")
def tunables(paths: tuple[Path, ...], config_path: Path | None, write: bool) -> None:
    """Show where each tunable is used and which rules are out of date (default: detections/).

    Exit 0 when every marked literal equals the tunables file (or --write made it so), 1 when some
    differ or name an unknown tunable, 2 when no tunables file is configured or it is malformed.
    """
    from deployer.rules.findings import ERROR
    from deployer.rules.loader import load_rule_files
    from deployer.rules.tunables import (
        TunablesError,
        find,
        is_attack_element,
        load_tunables,
        problems,
        render_file,
    )

    config, targets = load_repo_config(config_path, paths)
    path = config.validation.tunables
    if path is None:
        fail("no tunables file configured (validation.tunables in dac.yaml)", EXIT_ENV)
    try:
        table = load_tunables(path)
    except TunablesError as exc:
        fail(str(exc), EXIT_ENV)
    loaded = load_rule_files(list(targets))
    for f in loaded.findings:
        if f.severity == ERROR:
            click.echo(f.format_text(), err=True)
    used: dict[str, list[str]] = {name: [] for name in table}
    stale = 0
    for rule in loaded.rules:
        query = rule.data.get("query")
        if not isinstance(query, str):
            continue
        for occ in find(query):
            if occ.name in used and rule.rule_id not in used[occ.name]:
                used[occ.name].append(str(rule.rule_id))
        issues = list(problems(query, table))
        if not issues:
            continue
        if write:
            new = render_file(rule.source, query, rule.query_position, table)
            if new is not None:
                rule.path.write_text(new, encoding="utf-8")
                click.echo(f"rendered {rule.path} ({rule.rule_id})")
            issues = [i for i in issues if "differs" not in i[1]]
        for _occ, message, _hint in issues:
            click.echo(f"{rule.path}: {rule.rule_id}: {message}")
        stale += len(issues)
    for name, rules in used.items():
        origin = "ATT&CK" if is_attack_element(name) else "ours"
        click.echo(
            f"{name} [{origin}] ({path.name}:{table[name].line}): {', '.join(rules) or 'not used by any rule'}"
        )
    sys.exit(1 if stale else 0)
