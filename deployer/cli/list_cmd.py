"""``dac list``: list the rules in the repository."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from deployer.cli.common import format_option, load_repo_config, repo_config_option
from deployer.rules.findings import format_findings
from deployer.rules.loader import RuleFile, load_rule_files


def _row(rule: RuleFile) -> dict[str, object]:
    implements = rule.metadata.get("implements")
    tags = rule.data.get("tags")
    return {
        "rule_id": rule.rule_id,
        "name": rule.name,
        "type": rule.data.get("type") if isinstance(rule.data.get("type"), str) else None,
        "implements": [str(i) for i in implements] if isinstance(implements, list) else [],
        "tags": [str(t) for t in tags] if isinstance(tags, list) else [],
        "path": str(rule.path),
    }


@click.command("list")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@format_option()
@repo_config_option()
def list_rules(paths: tuple[Path, ...], fmt: str, config_path: Path | None) -> None:
    """List rules (default: detections/): rule_id, name, type, implements, tags, path."""
    _config, targets = load_repo_config(config_path, paths)
    try:
        result = load_rule_files(targets)
    except FileNotFoundError as exc:
        raise click.UsageError(str(exc)) from exc
    rows = sorted((_row(r) for r in result.rules), key=lambda r: (str(r["rule_id"]), str(r["path"])))
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        for row in rows:
            implements = ",".join(row["implements"]) or "-"  # type: ignore[arg-type]
            tags = ",".join(row["tags"]) or "-"  # type: ignore[arg-type]
            click.echo(
                f"{row['rule_id'] or '-'}\t{row['type'] or '-'}\t{row['name'] or '-'}\t"
                f"{implements}\t{tags}\t{row['path']}"
            )
    if result.findings:
        # Files that could not be loaded are not listed; say so on stderr and fail.
        click.echo(format_findings(result.findings, "text"), err=True)
        sys.exit(1)
