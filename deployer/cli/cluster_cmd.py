"""`dac cluster`: fetch, start, stop and inspect local Elasticsearch/OpenSearch from Maven Central."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from deployer.cli.common import format_option
from deployer.cluster import fetch as fetch_mod
from deployer.cluster import manager
from deployer.cluster.errors import ClusterError
from deployer.cluster.plugin_dir import PLUGIN_DIR_ENV
from deployer.cluster.versions import ENGINES, get_engine

ENGINE_CHOICE = click.Choice(sorted(ENGINES))
FORMAT_OPTION = format_option("Output format; json is quiet and machine-readable.")
PLUGIN_DIR_OPTION = click.option(
    "--plugin-dir",
    envvar=PLUGIN_DIR_ENV,
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Also install the OpenSearch plugin zips in this directory, e.g. Alerting (or {PLUGIN_DIR_ENV}).",
)


def _plugin_dir_for(engine: str, plugin_dir: Path | None) -> Path | None:
    """The extra plugin zips apply to OpenSearch only."""
    return plugin_dir if engine == "opensearch" else None


def _instances_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--engine` (or all), `--name` and `--format`: how `down` and `status` pick instances."""
    f = FORMAT_OPTION(f)
    f = click.option("--name", default="default", show_default=True)(f)
    return click.option(
        "--engine", type=click.Choice([*sorted(ENGINES), "all"]), default="opensearch", show_default=True
    )(f)


@contextlib.contextmanager
def _progress(fmt: str) -> Iterator[Callable[[str], None]]:
    """Yield a progress callback: a spinner on a terminal, plain lines otherwise, silence for json."""
    if fmt == "json":
        yield lambda _msg: None
        return
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda msg: click.echo(msg, err=True)
        return
    with console.status("working...") as spinner:

        def note(msg: str) -> None:
            console.log(msg)
            spinner.update(msg)

        yield note


def _fail(exc: ClusterError, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(exc.to_dict(), indent=2))
    else:
        click.echo(f"error: {exc}", err=True)
    sys.exit(2)


def _engines(engine: str) -> list[str]:
    return sorted(ENGINES) if engine == "all" else [engine]


@click.group()
def cluster() -> None:
    """Fetch and run local Elasticsearch/OpenSearch (Maven Central artifacts, cached outside the repo)."""


@cluster.command()
@click.option("--engine", type=click.Choice([*sorted(ENGINES), "all"]), default="all", show_default=True)
@click.option("--refresh", is_flag=True, help="Re-fetch and re-assemble even when the cache is complete.")
@PLUGIN_DIR_OPTION
@FORMAT_OPTION
def fetch(engine: str, refresh: bool, plugin_dir: Path | None, fmt: str) -> None:
    """Download, verify and assemble the pinned engines into the cache (no server is started)."""
    results = []
    try:
        with _progress(fmt) as progress:
            for name in _engines(engine):
                install = fetch_mod.assemble(
                    get_engine(name),
                    progress=progress,
                    refresh=refresh,
                    plugin_dir=_plugin_dir_for(name, plugin_dir),
                )
                results.append(
                    {
                        "engine": name,
                        "version": install.spec.version,
                        "home": str(install.home),
                        "modules": install.manifest.get("modules", []),
                        "plugins": install.plugins,
                        "missing_plugins": install.missing_plugins,
                    }
                )
    except ClusterError as exc:
        _fail(exc, fmt)
    if fmt == "json":
        click.echo(json.dumps(results, indent=2))
        return
    for r in results:
        click.echo(f"{r['engine']} {r['version']}: {r['home']}")
        click.echo(f"  modules: {', '.join(r['modules']) or '-'}")
        click.echo(f"  plugins: {', '.join(r['plugins']) or '-'}")
        if r["missing_plugins"]:
            click.echo(f"  not available from Maven: {', '.join(r['missing_plugins'])}")


@cluster.command()
@click.option("--engine", type=ENGINE_CHOICE, default="opensearch", show_default=True)
@click.option("--name", default="default", show_default=True, help="Instance name (several may run at once).")
@click.option(
    "--http-port", type=int, default=None, help="HTTP port (default: the engine's, or any free one)."
)
@click.option("--transport-port", type=int, default=None, help="Transport port (default: any free one).")
@click.option("--heap", default=manager.DEFAULT_HEAP, show_default=True, help="JVM heap (-Xms/-Xmx).")
@click.option(
    "--timeout",
    type=float,
    default=manager.DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds to wait for green/yellow health.",
)
@click.option(
    "--url-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the URL to this file once healthy.",
)
@click.option(
    "-E",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra node setting, as the servers' own -E (repeatable).",
)
@PLUGIN_DIR_OPTION
@FORMAT_OPTION
def up(
    engine: str,
    name: str,
    http_port: int | None,
    transport_port: int | None,
    heap: str,
    timeout: float,
    url_file: Path | None,
    settings: tuple[str, ...],
    plugin_dir: Path | None,
    fmt: str,
) -> None:
    """Start a local server on 127.0.0.1 (fetching it first if needed) and wait until it is healthy."""
    extra: dict[str, str] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="-E")
        extra[key.strip()] = value.strip()
    try:
        with _progress(fmt) as progress:
            instance = manager.start(
                engine,
                name=name,
                http_port=http_port,
                transport_port=transport_port,
                heap=heap,
                timeout=timeout,
                progress=progress,
                extra_settings=extra,
                plugin_dir=_plugin_dir_for(engine, plugin_dir),
            )
        info = manager.status(engine, name, plugin_dir=_plugin_dir_for(engine, plugin_dir))
    except ClusterError as exc:
        _fail(exc, fmt)
    if url_file is not None:
        url_file.write_text(instance.url + "\n")
    _print_status(info, fmt)


@cluster.command()
@_instances_options
def down(engine: str, name: str, fmt: str) -> None:
    """Stop a local server (SIGTERM, then SIGKILL if it does not exit)."""
    results = [{"engine": e, "name": name, "stopped": manager.stop(e, name)} for e in _engines(engine)]
    if fmt == "json":
        click.echo(json.dumps(results if engine == "all" else results[0], indent=2))
        return
    for r in results:
        click.echo(f"{r['engine']} '{name}': {'stopped' if r['stopped'] else 'was not running'}")


@cluster.command()
@_instances_options
@PLUGIN_DIR_OPTION
def status(engine: str, name: str, plugin_dir: Path | None, fmt: str) -> None:
    """Show engine, URL, version, health and plugins of a local server."""
    try:
        infos = [manager.status(e, name, plugin_dir=_plugin_dir_for(e, plugin_dir)) for e in _engines(engine)]
    except ClusterError as exc:
        _fail(exc, fmt)
    if fmt == "json":
        click.echo(json.dumps(infos if engine == "all" else infos[0], indent=2))
    else:
        for info in infos:
            _print_status(info, fmt)
    # Exit 1 when a single asked-for instance is down, so scripts can test `dac cluster status`.
    if engine != "all" and not infos[0]["running"]:
        sys.exit(1)


def _print_status(info: dict, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(info, indent=2))
        return
    state = "running" if info["running"] else "not running"
    click.echo(f"{info['engine']} '{info['name']}': {state}")
    if info["running"]:
        click.echo(f"  url:     {info['url']}")
        click.echo(f"  health:  {info['health']}")
    click.echo(f"  version: {info['version']}")
    click.echo(f"  plugins: {', '.join(info['plugins']) or '-'}")
    if info.get("modules"):
        click.echo(f"  modules: {', '.join(info['modules'])}")
    if info.get("missing_plugins"):
        click.echo(f"  not available from Maven: {', '.join(info['missing_plugins'])}")
    if info["running"] and info.get("log"):
        click.echo(f"  log:     {info['log']}")
