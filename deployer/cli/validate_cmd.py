"""``dac validate``: check rule files and print findings."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from deployer.cli.common import format_option, load_repo_config, repo_config_option
from deployer.ecs.registry import ExtraFieldsError
from deployer.rules.findings import ERROR, FORMATS, format_findings, has_errors
from deployer.rules.validate import validate as validate_rules


@click.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@format_option("text for people, json for machines, github for pull-request annotations.", FORMATS)
@repo_config_option()
@click.option("--strict", is_flag=True, help="Fail on warnings too.")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes for large repositories.",
)
def validate(paths: tuple[Path, ...], fmt: str, config_path: Path | None, strict: bool, jobs: int) -> None:
    """Validate rule files (default: detections/). Exit 0 clean, 1 findings, 2 usage error."""
    config, targets = load_repo_config(config_path, paths)
    try:
        findings = validate_rules(targets, config, jobs=jobs)
    except (FileNotFoundError, ExtraFieldsError) as exc:
        raise click.UsageError(str(exc)) from exc
    output = format_findings(findings, fmt)
    if output:
        click.echo(output)
    errors = sum(1 for f in findings if f.severity == ERROR)
    warnings = len(findings) - errors
    if fmt == "text":
        summary = f"{errors} error(s), {warnings} warning(s)" if findings else "no problems found"
        click.echo(summary, err=True)
    failed = has_errors(findings) or (strict and bool(findings))
    sys.exit(1 if failed else 0)
