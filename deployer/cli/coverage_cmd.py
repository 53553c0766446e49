"""`dac coverage`: seed steps, ATT&CK techniques and platforms covered by the rules."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from deployer.cli.common import DEFAULT_RULES_DIR, EXIT_ENV, fail, format_option


@click.command("coverage")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@format_option("Human tables, or one JSON document for machines.")
@click.option(
    "--navigator",
    "navigator_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write an ATT&CK Navigator layer (format 4.5) to this file.",
)
def coverage(paths: tuple[Path, ...], fmt: str, navigator_path: Path | None) -> None:
    """Show what the rules under PATH... cover (default: detections/)."""
    from deployer.coverage import compute, navigator_layer, render_text
    from deployer.rules.findings import ERROR
    from deployer.rules.loader import load_rule_files

    if not paths:
        if not Path(DEFAULT_RULES_DIR).is_dir():
            raise click.UsageError(f"no {DEFAULT_RULES_DIR}/ here; pass the rule files or directories")
        paths = (Path(DEFAULT_RULES_DIR),)
    loaded = load_rule_files(list(paths))
    errors = [f.format_text() for f in loaded.findings if f.severity == ERROR]
    rules = [r for r in loaded.rules if r.rule_id]
    if not rules and not errors:
        raise click.UsageError("no rule files found under " + ", ".join(str(p) for p in paths))
    report = compute(rules, errors)

    if navigator_path is not None:
        try:
            navigator_path.write_text(json.dumps(navigator_layer(report), indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {navigator_path}: {exc}", EXIT_ENV)

    if fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(render_text(report), nl=False)
        if navigator_path is not None:
            click.echo(f"ATT&CK Navigator layer written to {navigator_path}")
    sys.exit(1 if report.errors else 0)
