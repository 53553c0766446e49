"""`dac mappings deploy`: put the ECS component/index templates from `mappings/` onto a cluster."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from deployer.cli.common import format_option
from deployer.cluster.errors import ClusterError
from deployer.cluster.templates import (
    CREATE,
    UNCHANGED,
    UPDATE,
    ClusterHttp,
    apply_templates,
    plan_templates,
)

# Modules that provide the ECS field types the integ-test Elasticsearch lacks; without them the
# core flavour of the templates (types substituted by the generator) is the one that installs.
_ES_TYPE_MODULES = ("wildcard", "constant-keyword", "mapper-extras")


@click.group()
def mappings() -> None:
    """ECS component and index templates the rules rely on."""


def _fail(message: str, hint: str | None, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps({"error": message, "hint": hint}, indent=2))
    else:
        click.echo(f"error: {message}" + (f"\nnext step: {hint}" if hint else ""), err=True)
    sys.exit(2)


def _target_connection(target: str) -> tuple[str, str, dict]:
    """Return (engine, url, ClusterHttp kwargs) for a dac.yaml target."""
    from deployer.targets.base import TargetError
    from deployer.targets.config import resolve_target

    try:
        cfg = resolve_target(target)
    except TargetError as exc:
        raise ClusterError(str(exc)) from exc
    if cfg.kind == "opensearch":
        engine, url = "opensearch", cfg.url
    else:
        # A Kibana target reaches its Elasticsearch through an extra key, since templates are an
        # Elasticsearch API, not a Kibana one.
        url = cfg.extra.get("elasticsearch_url") or os.environ.get(
            str(cfg.extra.get("elasticsearch_url_env", "")), ""
        )
        if not url:
            raise ClusterError(
                f"target {target!r} is a Kibana target without an Elasticsearch URL",
                hint=f"add elasticsearch_url (or elasticsearch_url_env) to targets.{target} in dac.yaml, "
                "or pass --elasticsearch-url",
            )
        engine = "elasticsearch"
    kwargs: dict = {"verify": cfg.ca_cert or not cfg.insecure, "timeout": cfg.timeout, "retries": cfg.retries}
    api_key = os.environ.get(cfg.api_key_env)
    if not api_key and cfg.api_key_file:
        api_key = Path(cfg.api_key_file).read_text().strip()
    user, password = os.environ.get(cfg.username_env), os.environ.get(cfg.password_env)
    if api_key:
        kwargs["api_key"] = api_key
    elif user and password:
        kwargs["auth"] = (user, password)
    return engine, url, kwargs


def _flavour(http: ClusterHttp, engine: str) -> str:
    """Pick the template set for the cluster: the full ES one only when its type modules exist."""
    if engine == "opensearch":
        return "opensearch"
    _, data = http.request("GET", "/_nodes/_local/plugins")
    node = next(iter(((data or {}).get("nodes") or {}).values()), {})
    names = {m.get("name", "") for m in node.get("modules", []) + node.get("plugins", [])}
    if all(any(mod in n for n in names) for mod in _ES_TYPE_MODULES):
        return "elasticsearch"
    return "elasticsearch-core"


@mappings.command()
@click.option("--target", default=None, help="Target name from dac.yaml.")
@click.option("--opensearch-url", default=None, help="OpenSearch URL (no credentials in it).")
@click.option("--elasticsearch-url", default=None, help="Elasticsearch URL (no credentials in it).")
@click.option(
    "--templates",
    "flavour",
    type=click.Choice(["auto", "opensearch", "elasticsearch", "elasticsearch-core"]),
    default="auto",
    show_default=True,
    help="Template set under mappings/; auto picks by engine and the cluster's modules.",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Repository root holding mappings/.",
)
@click.option("--plan", "plan_only", is_flag=True, help="Show what would change; write nothing.")
@click.option("--insecure", is_flag=True, help="Skip TLS verification (only for --*-url).")
@format_option()
def deploy(
    target: str | None,
    opensearch_url: str | None,
    elasticsearch_url: str | None,
    flavour: str,
    root: Path,
    plan_only: bool,
    insecure: bool,
    fmt: str,
) -> None:
    """Create or update the component and index templates; unchanged ones are not written."""
    from deployer.mappings import MappingsError, load_templates

    given = [x for x in (target, opensearch_url, elasticsearch_url) if x]
    if len(given) != 1:
        _fail("give exactly one of --target, --opensearch-url, --elasticsearch-url", None, fmt)
    try:
        if target:
            engine, url, kwargs = _target_connection(target)
        else:
            engine = "opensearch" if opensearch_url else "elasticsearch"
            url = str(opensearch_url or elasticsearch_url)
            kwargs = {"verify": not insecure}
            user = os.environ.get(f"{engine.upper()}_USERNAME")
            password = os.environ.get(f"{engine.upper()}_PASSWORD")
            if user and password:
                kwargs["auth"] = (user, password)
        if "@" in url.split("//", 1)[-1].split("/", 1)[0]:
            raise ClusterError(
                "the URL must not carry credentials",
                hint=f"set {engine.upper()}_USERNAME and {engine.upper()}_PASSWORD instead",
            )
        http = ClusterHttp(url, **kwargs)
        chosen = _flavour(http, engine) if flavour == "auto" else flavour
        templates = load_templates(root, chosen)
        plan = plan_templates(http, templates)
        if not plan_only:
            apply_templates(http, templates, plan)
    except MappingsError as exc:
        _fail(str(exc), "run scripts/gen_mappings.py, or pass --root to the repository", fmt)
    except ClusterError as exc:
        _fail(exc.message, exc.hint, fmt)

    failed = [c for c in plan.changes if c.error]
    summary = plan.summary()
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "url": http.url,
                    "engine": engine,
                    "templates": chosen,
                    "applied": not plan_only,
                    "changes": [c.to_dict() for c in plan.changes],
                    "summary": summary,
                    "failed": len(failed),
                },
                indent=2,
            )
        )
    else:
        marks = {CREATE: "+", UPDATE: "~", UNCHANGED: "="}
        for change in plan.changes:
            line = f"{marks[change.action]} {change.action:9} {change.kind:18} {change.name}"
            if change.error:
                line += f"  FAILED: {change.error}"
            click.echo(line)
        verb = "would be" if plan_only else "were"
        click.echo(
            f"{http.url} ({chosen} templates): {summary[CREATE]} {verb} created, "
            f"{summary[UPDATE]} {verb} updated, {summary[UNCHANGED]} unchanged"
        )
    if failed:
        sys.exit(1)
