"""`dac backtest`: per rule, what it would have matched and alerted on over recorded events."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from deployer.cli.common import EXIT_FAIL, EXIT_OK, Status, fail, format_option
from deployer.testing.loading import DEFAULT_RULES_DIR


@click.command("backtest")
@click.option(
    "--events",
    "events_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="ECS events, one JSON object per line; `-` reads stdin; gzip is detected by content.",
)
@click.option(
    "--rules",
    "rule_paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Rule file or directory (repeatable). Default: detections/.",
)
@format_option(
    "text: a table, noisiest rule first; json: one document; html: a page with a histogram per rule.",
    choices=("text", "json", "html"),
)
@click.option(
    "--output",
    "-o",
    "output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report to this file instead of stdout.",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    help="Worker processes sharing the rules, each reading the whole file. Default: the usable CPUs.",
)
def backtest(
    events_path: str, rule_paths: tuple[Path, ...], fmt: str, output: Path | None, jobs: int | None
) -> None:
    """Summarise per rule: matches, alerts Kibana would write, hosts, users, entities, time span, per-hour counts.

    Exit 0 (refused rules are listed in the report), 1 on bad events or rule files.
    """
    from deployer.testing import backtest_report as report
    from deployer.testing.backtest import backtest as run_backtest
    from deployer.testing.events import EventsError, default_field_types
    from deployer.testing.loading import load_rules
    from deployer.testing.workers import usable_cpus

    if not rule_paths:
        if not DEFAULT_RULES_DIR.is_dir():
            raise click.UsageError(f"no {DEFAULT_RULES_DIR}/ here; pass --rules PATH")
        rule_paths = (DEFAULT_RULES_DIR,)
    loaded = load_rules(list(rule_paths))
    if loaded.errors:
        for message in loaded.errors:
            click.echo(f"error: {message}", err=True)
        sys.exit(EXIT_FAIL)
    if not loaded.rules:
        raise click.UsageError("no rule files found under " + ", ".join(str(p) for p in rule_paths))

    status = Status(enabled=sys.stderr.isatty() and fmt != "json")
    line = report.ProgressLine(report.plain_size(events_path))
    try:
        result = run_backtest(
            loaded.rules,
            events_path,
            library=loaded.library,
            field_types=default_field_types(),
            progress=lambda n, chars: status.update(f"{len(loaded.rules)} rules: {line(n, chars)}"),
            on_fallback=lambda why: status.update(f"second pass: {why}"),
            exceptions=loaded.exceptions,
            jobs=jobs or usable_cpus(),
        )
    except EventsError as exc:
        status.stop()
        fail(str(exc), EXIT_FAIL)
    finally:
        status.stop()
    if fmt == "json":
        text = json.dumps(report.to_json(result), indent=2, ensure_ascii=False) + "\n"
    elif fmt == "html":
        text = report.to_html(result)
    else:
        text = report.to_text(result)
    if output is not None:
        output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    sys.exit(EXIT_OK)
