"""Fixtures for the Kibana contract tests: the spec-validating server, rule files, a CLI runner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from kibana_contract_fixtures import PASSWORD, RAW_API_KEY
from kibana_contract_server import KibanaContractServer, KibanaSpec


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark everything under tests/contract with the `contract` marker."""
    for item in items:
        if "tests/contract/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.contract)


@pytest.fixture(scope="session")
def kibana_spec(shared_dir: Path) -> KibanaSpec:
    """Kibana's published OpenAPI spec for the detection engine (skips when it is absent)."""
    path = shared_dir / "apis" / "kibana-detections-oas.yaml"
    if not path.is_file():
        pytest.skip(f"Kibana's OpenAPI spec is absent ({path}); contract tests need it")
    return KibanaSpec(path)


@pytest.fixture(scope="session")
def kibana_lists_spec(shared_dir: Path) -> KibanaSpec | None:
    """Kibana's published OpenAPI spec for value lists (None when absent: no /api/lists routes)."""
    path = shared_dir / "apis" / "kibana-lists-oas.yaml"
    return KibanaSpec(path) if path.is_file() else None


@pytest.fixture(scope="session")
def kibana_exceptions_spec(shared_dir: Path) -> KibanaSpec:
    """Kibana's published OpenAPI spec for exception lists and items (skips when it is absent)."""
    path = shared_dir / "apis" / "kibana-exceptions-oas.yaml"
    if not path.is_file():
        pytest.skip(f"Kibana's exceptions OpenAPI spec is absent ({path}); contract tests need it")
    return KibanaSpec(path)


@pytest.fixture
def kibana(
    kibana_spec: KibanaSpec, kibana_lists_spec: KibanaSpec | None, kibana_exceptions_spec: KibanaSpec
) -> Iterator[KibanaContractServer]:
    """A running contract server accepting RAW_API_KEY and elastic/PASSWORD."""
    server = KibanaContractServer(
        kibana_spec, lists_spec=kibana_lists_spec, exceptions_spec=kibana_exceptions_spec
    )
    server.add_api_key(RAW_API_KEY)
    server.state.users["elastic"] = PASSWORD
    server.start()
    yield server
    server.stop()
    assert not server.state.spec_violations, server.state.spec_violations


@pytest.fixture
def env(kibana: KibanaContractServer) -> dict[str, str]:
    """Environment for the CLI: URL and API key of the contract server."""
    encoded = next(iter(kibana.state.api_keys))
    return {"KIBANA_URL": kibana.url, "KIBANA_API_KEY": encoded, "DAC_CONFIG": ""}


@dataclass
class Run:
    """The outcome of one CLI invocation."""

    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        """Parse stdout as JSON."""
        return json.loads(self.stdout)


@pytest.fixture
def dac(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run `dac ...` in-process from tmp_path (no dac.yaml above it) and capture both streams."""
    from deployer.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAC_CONFIG", raising=False)
    for var in (
        "KIBANA_URL",
        "KIBANA_API_KEY",
        "KIBANA_USERNAME",
        "KIBANA_PASSWORD",
        "KIBANA_SPACE",
        "DAC_TARGET",
    ):
        monkeypatch.delenv(var, raising=False)

    def run(*args: str, env: dict[str, str] | None = None) -> Run:
        runner = CliRunner()
        clean = {k: v for k, v in (env or {}).items() if v != ""}
        result = runner.invoke(main, list(args), env=clean, catch_exceptions=False)
        return Run(result.exit_code, result.stdout, result.stderr)

    return run
