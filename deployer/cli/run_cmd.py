"""`dac run`: replay ECS ndjson events through the rules offline; one compact JSON object per match."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from deployer.cli.common import EXIT_FAIL, EXIT_OK, Status, fail
from deployer.testing.loading import DEFAULT_RULES_DIR


def format_result(result: dict) -> str:
    """One match as one line of compact JSON (no spaces, non-ASCII kept as is)."""
    return json.dumps(result, separators=(",", ":"), ensure_ascii=False, default=str)


@click.command("run")
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
@click.option(
    "--engine",
    type=click.Choice(["offline", "opensearch"]),
    default="offline",
    show_default=True,
    help="offline: dac's EQL engine; opensearch: the compiled monitors, run by Alerting on --opensearch-url.",
)
@click.option(
    "--opensearch-url",
    envvar="OPENSEARCH_URL",
    metavar="URL",
    help="OpenSearch with Alerting, for --engine opensearch (or OPENSEARCH_URL).",
)
def run(events_path: str, rule_paths: tuple[Path, ...], engine: str, opensearch_url: str | None) -> None:
    """Replay events through the rules and print one JSON object per match.

    Exit 0 when every rule was evaluated, matched or not. A rule that cannot be evaluated (or a
    rule file that does not load) is named on stderr, with the construct and its position, while
    the others still run; the exit is then 1.
    """
    from deployer.testing.evaluate import EvaluationError
    from deployer.testing.events import EventsError, default_field_types
    from deployer.testing.loading import load_rules
    from deployer.testing.stream import replay_file

    if not rule_paths:
        if not DEFAULT_RULES_DIR.is_dir():
            raise click.UsageError(f"no {DEFAULT_RULES_DIR}/ here; pass --rules PATH")
        rule_paths = (DEFAULT_RULES_DIR,)
    loaded = load_rules(list(rule_paths))
    if not loaded.rules and not loaded.errors:
        raise click.UsageError("no rule files found under " + ", ".join(str(p) for p in rule_paths))
    if engine == "opensearch":
        _run_opensearch(loaded, events_path, opensearch_url)
        return

    status = Status(enabled=sys.stderr.isatty())
    refused: list = []
    try:
        results = replay_file(
            loaded.rules,
            events_path,
            library=loaded.library,
            exceptions=loaded.exceptions,
            field_types=default_field_types(),
            progress=lambda n, _chars: status.update(
                f"evaluating {len(loaded.rules)} rules, read {n:,} events"
            ),
            on_fallback=lambda why: status.update(f"replaying in memory: {why}"),
            on_refused=refused.append,
        )
        out = sys.stdout
        for result in results:
            out.write(format_result(result) + "\n")
    except BrokenPipeError:
        # The reader stopped early (`dac run ... | head`): not an error.
        sys.stderr.close()
        sys.exit(EXIT_OK)
    except (EventsError, EvaluationError) as exc:
        status.stop()
        fail(str(exc), EXIT_FAIL)
    finally:
        status.stop()
    sys.stdout.flush()
    if refused or loaded.errors:
        # A rule file that does not load is one more rule left out; the others have run.
        for message in loaded.errors:
            click.echo(f"error: {message}", err=True)
        for refusal in refused:
            click.echo(f"refused: {refusal}", err=True)
        evaluated = len(loaded.rules) - len(refused)
        summary = f"{evaluated} of {len(loaded.rules)} rules evaluated, {len(refused)} refused"
        if loaded.errors:
            summary += f", {len(loaded.errors)} rule files not loaded"
        click.echo(summary, err=True)
        sys.exit(EXIT_FAIL)


def _run_opensearch(loaded: Any, events_path: str, url: str | None) -> None:
    """`--engine opensearch`: the same lines from the compiled monitors on a real cluster; refused rules exit 1."""
    from deployer.targets.base import TargetError
    from deployer.targets.opensearch import OpenSearchClient
    from deployer.targets.opensearch_run import read_stream, repo_templates, run_on_opensearch
    from deployer.testing.events import EventsError

    if not url:
        raise click.UsageError("--engine opensearch needs --opensearch-url (or OPENSEARCH_URL)")
    if loaded.errors:
        for message in loaded.errors:
            click.echo(f"error: {message}", err=True)
        fail(f"{len(loaded.errors)} rule file(s) did not load; nothing was run", EXIT_FAIL)
    refused = 0
    try:
        events = read_stream(events_path)
        client = OpenSearchClient.from_env(url)
        try:
            for result in run_on_opensearch(client, loaded.rules, events, templates=repo_templates()):
                refused += "refused" in result
                sys.stdout.write(format_result(result) + "\n")
        finally:
            client.close()
    except EventsError as exc:
        fail(str(exc), EXIT_FAIL)
    except TargetError as exc:
        fail(exc.message, 2, exc.hint)
    sys.stdout.flush()
    if refused:
        click.echo(
            f"{len(loaded.rules) - refused} of {len(loaded.rules)} rules run, {refused} refused", err=True
        )
        sys.exit(EXIT_FAIL)
