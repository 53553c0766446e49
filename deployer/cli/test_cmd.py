"""`dac test`: run every rule's fixture tests offline and report pass/fail per rule."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from deployer.cli.common import EXIT_ENV, EXIT_FAIL, EXIT_OK, fail, format_option
from deployer.testing.loading import DEFAULT_RULES_DIR


@click.command("test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--junit",
    "junit_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the results as JUnit XML to this file.",
)
@format_option(
    "Human table, one JSON document for machines, or GitHub Actions annotations on failing tests.",
    choices=("text", "json", "github"),
)
def test(paths: tuple[Path, ...], junit_path: Path | None, fmt: str) -> None:
    """Run the fixture tests of the rules under PATH... (default: detections/)."""
    from deployer.testing.evaluate import EvaluationError
    from deployer.testing.fixtures import count_tests, run_rule_tests
    from deployer.testing.junit import write_junit
    from deployer.testing.loading import load_rules

    if not paths:
        if not DEFAULT_RULES_DIR.is_dir():
            raise click.UsageError(
                f"no {DEFAULT_RULES_DIR}/ here; pass the rule files or directories to test"
            )
        paths = (DEFAULT_RULES_DIR,)
    started = time.perf_counter()
    loaded = load_rules(list(paths))
    if not loaded.rules and not loaded.errors:
        raise click.UsageError("no rule files found under " + ", ".join(str(p) for p in paths))

    show_progress = fmt == "text" and sys.stderr.isatty()
    try:
        if show_progress:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            with Progress(
                TextColumn("testing"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                console=Console(stderr=True),
                transient=True,
            ) as progress:
                task = progress.add_task("", total=count_tests(loaded.rules))

                def advance(result: object) -> None:
                    progress.update(task, advance=1, description=getattr(result, "rule_id", ""))

                results = run_rule_tests(
                    loaded.rules, library=loaded.library, on_result=advance, exceptions=loaded.exceptions
                )
        else:
            results = run_rule_tests(loaded.rules, library=loaded.library, exceptions=loaded.exceptions)
    except EvaluationError as exc:
        # Only raised outside a single test (e.g. the field registry cannot load).
        fail(str(exc), EXIT_FAIL)
    elapsed = time.perf_counter() - started

    if junit_path is not None:
        try:
            write_junit(results, junit_path)
        except OSError as exc:
            fail(f"cannot write {junit_path}: {exc.strerror or exc}", EXIT_ENV)

    failed = any(r.status != "pass" for r in results) or bool(loaded.errors)
    if fmt == "json":
        click.echo(json.dumps(_json_report(results, loaded.errors, elapsed), indent=2))
    elif fmt == "github":
        _print_github(results, loaded.errors, elapsed)
    else:
        _print_text(results, loaded.errors, elapsed)
    sys.exit(EXIT_FAIL if failed else EXIT_OK)


def _summary(results: list, load_errors: list[str], elapsed: float) -> dict:
    return {
        "tests": len(results),
        "passed": sum(r.status == "pass" for r in results),
        "failed": sum(r.status == "fail" for r in results),
        "errors": sum(r.status == "error" for r in results),
        "load_errors": len(load_errors),
        "rules": len({r.rule_id for r in results}),
        "seconds": round(elapsed, 3),
    }


def _gh_escape(value: str, prop: bool = False) -> str:
    # GitHub's workflow-command syntax: %, CR and LF always; ':' and ',' too inside properties.
    out = value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return out.replace(":", "%3A").replace(",", "%2C") if prop else out


def _print_github(results: list, load_errors: list[str], elapsed: float) -> None:
    for message in load_errors:
        click.echo(f"::error title=dac test::{_gh_escape(message)}")
    for r in results:
        if r.status == "pass":
            continue
        props = f"file={_gh_escape(r.path, True)}"
        if r.line:
            props += f",line={r.line}"
            if r.column:
                props += f",col={r.column}"
        title = _gh_escape(f"dac test {r.status}: {r.rule_id}", True)
        text = f"{r.name}: {r.message}" if r.message else r.name
        click.echo(f"::error {props},title={title}::{_gh_escape(text)}")
    s = _summary(results, load_errors, elapsed)
    click.echo(
        f"{s['tests']} tests in {s['rules']} rules: {s['passed']} passed, {s['failed']} failed, {s['errors']} errors"
    )


def _json_report(results: list, load_errors: list[str], elapsed: float) -> dict:
    rules: dict[str, dict] = {}
    for r in results:
        entry = rules.setdefault(
            r.rule_id, {"rule_id": r.rule_id, "path": r.path, "pass": 0, "fail": 0, "error": 0}
        )
        entry[r.status] += 1
    return {
        "summary": _summary(results, load_errors, elapsed),
        "rules": list(rules.values()),
        "load_errors": load_errors,
        "results": [r.to_dict() for r in results],
    }


def _print_text(results: list, load_errors: list[str], elapsed: float) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    out = sys.stdout
    console = Console(file=out, width=None if out.isatty() else 160, highlight=False)
    for message in load_errors:
        console.print(Text(f"error: {message}", style="red"))

    per_rule: dict[str, list] = {}
    for r in results:
        per_rule.setdefault(r.rule_id, []).append(r)
    if per_rule:
        table = Table(title=None, show_lines=False)
        table.add_column("rule_id", overflow="fold")
        table.add_column("tests", justify="right")
        table.add_column("pass", justify="right")
        table.add_column("fail", justify="right")
        table.add_column("error", justify="right")
        table.add_column("time", justify="right")
        table.add_column("result")
        for rule_id, rs in per_rule.items():
            passed = sum(r.status == "pass" for r in rs)
            fail = sum(r.status == "fail" for r in rs)
            err = sum(r.status == "error" for r in rs)
            verdict = Text("PASS", style="green") if passed == len(rs) else Text("FAIL", style="red bold")
            table.add_row(
                rule_id,
                str(len(rs)),
                str(passed),
                str(fail),
                str(err),
                f"{sum(r.duration for r in rs):.3f}s",
                verdict,
            )
        console.print(table)

    for r in results:
        if r.status == "pass":
            continue
        label = "FAIL" if r.status == "fail" else "ERROR"
        console.print(Text(f"{label} {r.rule_id} :: {r.name}", style="red bold"))
        where = f"{r.path}:{r.line}" if r.line else r.path
        console.print(Text(f"  rule: {where}"))
        if r.events:
            console.print(Text(f"  events: {r.events}"))
        if r.status == "fail":
            console.print(Text(f"  expect: {r.expect}"))
        for line in r.message.splitlines():
            console.print(Text(f"  {line}"))

    s = _summary(results, load_errors, elapsed)
    line = f"{s['tests']} tests in {s['rules']} rules: {s['passed']} passed, {s['failed']} failed, {s['errors']} errors"
    if load_errors:
        line += f", {len(load_errors)} rule files not loaded"
    line += f" ({elapsed:.2f}s)"
    ok = not load_errors and s["passed"] == s["tests"]
    console.print(Text(line, style="green" if ok else "red"))
