"""The `dac` command line: a click group whose subcommands live one module each in this package.

Each subcommand module parses arguments, calls the library and maps results to output and exit
codes; no detection logic lives here.
"""

from __future__ import annotations

import importlib

import click

# (module, attribute) per subcommand; imported lazily so a slow or heavy import (clients, lark)
# only costs the command that needs it.
_COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("deployer.cli.validate_cmd", "validate"),
    "list": ("deployer.cli.list_cmd", "list_rules"),
    "test": ("deployer.cli.test_cmd", "test"),
    "run": ("deployer.cli.run_cmd", "run"),
    "backtest": ("deployer.cli.backtest_cmd", "backtest"),
    "coverage": ("deployer.cli.coverage_cmd", "coverage"),
    "tunables": ("deployer.cli.tunables_cmd", "tunables"),
    "plan": ("deployer.cli.kibana_cmds", "plan"),
    "deploy": ("deployer.cli.kibana_cmds", "deploy"),
    "show": ("deployer.cli.kibana_cmds", "show"),
    "export": ("deployer.cli.kibana_cmds", "export"),
    "import": ("deployer.cli.kibana_cmds", "import_"),
    "cluster": ("deployer.cli.cluster_cmd", "cluster"),
    "mappings": ("deployer.cli.mappings_cmd", "mappings"),
    "fields": ("deployer.cli.fields_cmd", "fields"),
    "verify": ("deployer.cli.opensearch_cmds", "verify"),
    "demo": ("deployer.cli.opensearch_cmds", "demo"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        spec = _COMMANDS.get(name)
        if spec is None:
            return None
        module = importlib.import_module(spec[0])
        return getattr(module, spec[1])


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dac")
def main() -> None:
    """Detection as code: validate, test and deploy EQL sequence rules to Kibana and OpenSearch."""
