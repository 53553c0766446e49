"""`dac fields pull`: write a field pack from a live cluster's `_field_caps`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from deployer.cli.common import EXIT_ENV, fail, format_option


@click.group("fields")
def fields() -> None:
    """Field packs: the fields an integration maps beyond ECS."""


@fields.command("pull")
@click.option("--url", required=True, help="Elasticsearch or OpenSearch URL, e.g. https://es.example:9200.")
@click.option(
    "--index",
    "indices",
    required=True,
    multiple=True,
    help="Index pattern whose fields to read (repeatable), e.g. 'winlogbeat-*'.",
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Pack file to write (YAML)."
)
@click.option(
    "--api-key-file", type=click.Path(dir_okay=False, path_type=Path), help="File holding an API key."
)
@click.option(
    "--ca-cert", type=click.Path(dir_okay=False, path_type=Path), help="CA bundle for TLS verification."
)
@click.option("--insecure", is_flag=True, help="Skip TLS verification (not for production).")
@format_option("A line for people, or a JSON summary.")
def pull(
    url: str,
    indices: tuple[str, ...],
    out: Path,
    api_key_file: Path | None,
    ca_cert: Path | None,
    insecure: bool,
    fmt: str,
) -> None:
    """Write the fields INDEX maps on the cluster at URL as a field pack.

    Credentials, when the cluster needs them: --api-key-file, or DAC_FIELDS_API_KEY, or
    DAC_FIELDS_USERNAME and DAC_FIELDS_PASSWORD. Exit 0 written, 2 cluster unreachable, index
    pattern matching nothing, or bad options (nothing is written then).
    """
    from deployer.ecs import field_caps
    from deployer.targets.base import TargetError
    from deployer.targets.http import HttpClient, RetryPolicy, auth_from_env

    try:
        auth = None
        env = os.environ
        if api_key_file or env.get("DAC_FIELDS_API_KEY") or env.get("DAC_FIELDS_USERNAME"):
            auth = auth_from_env(
                api_key_env="DAC_FIELDS_API_KEY",
                username_env="DAC_FIELDS_USERNAME",
                password_env="DAC_FIELDS_PASSWORD",
                api_key_file=str(api_key_file) if api_key_file else None,
                env=env,
                service="cluster",
            )
        client = HttpClient(
            url,
            auth=auth,
            verify=False if insecure else (str(ca_cert) if ca_cert else True),
            retry=RetryPolicy(retries=2, connect_retries=1, total_budget=20.0),
            service="the cluster",
        )
        try:
            pack = field_caps.pull(client, ",".join(indices))
        finally:
            client.close()
        field_caps.write_atomically(out, field_caps.render(pack))
    except TargetError as exc:
        fail(exc.message, EXIT_ENV, exc.hint)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}", EXIT_ENV)
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "out": str(out),
                    "index": pack.index,
                    "indices": pack.indices,
                    "fields": len(pack.fields),
                    "conflicts": pack.conflicts,
                },
                indent=2,
            )
        )
    else:
        click.echo(f"{field_caps.describe(pack)} to {out}")
