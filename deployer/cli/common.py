"""Pieces every `dac` subcommand shares: exit codes, the `--format` and `--config` options, error exits."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

EXIT_OK, EXIT_FAIL, EXIT_ENV, EXIT_PENDING = 0, 1, 2, 3
DEFAULT_RULES_DIR = "detections"

_Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def format_option(help_text: str | None = None, choices: Sequence[str] = ("text", "json")) -> _Decorator:
    """Return the `--format` option (parameter `fmt`, default text) with the command's own help."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default="text",
        show_default=True,
        help=help_text,
    )


def repo_config_option() -> _Decorator:
    """Return the `--config` option of the offline commands (also read from DAC_CONFIG)."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        envvar="DAC_CONFIG",
        help="Repository configuration file (default: the nearest dac.yaml).",
    )


def load_repo_config(config_path: Path | None, paths: Sequence[Path]) -> tuple[Any, list[Path]]:
    """Load dac.yaml (a broken one is a usage error) and return it with the rule paths to read."""
    from deployer.config import ConfigError, load_config

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    # Without a dac.yaml the rules are looked for where the command runs.
    default = config.root / DEFAULT_RULES_DIR if config.path else Path(DEFAULT_RULES_DIR)
    return config, list(paths) or [default]


def fail(message: str, code: int = EXIT_ENV, hint: str | None = None) -> NoReturn:
    """Print `error: message` (and `hint: ...`) on stderr and exit with `code`."""
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    sys.exit(code)


def progress_bar(text: str) -> Any:
    """Return a transient rich progress bar on stderr: `text` (a column template), bar, done/total, time."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(text),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )


class Status:
    """A one-line progress status on stderr, shown only when enabled (a terminal, not --format json)."""

    def __init__(self, *, enabled: bool) -> None:
        self._status = None
        if enabled:
            from rich.console import Console

            self._status = Console(stderr=True).status("reading events")
            self._status.start()

    def update(self, message: str) -> None:
        if self._status is not None:
            self._status.update(message)

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
