"""Session fixtures that run real OpenSearch and Elasticsearch for the integration tests.

Each engine is started at most once per test session (on free ports, from the assembled install
in `$DAC_CACHE_DIR`, fetched on first use) and stopped when the session ends. To run the tests
against an already running server instead, set `DAC_TEST_OPENSEARCH_URL` or
`DAC_TEST_ELASTICSEARCH_URL`; such a server is neither started nor stopped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from deployer.cluster import manager
from deployer.cluster.clients import elasticsearch_client, opensearch_client
from deployer.cluster.errors import ClusterError
from deployer.cluster.plugin_dir import PLUGIN_DIR_ENV, plugin_dir_from_env

# Instances are named after the pytest process, so two sessions never stop each other's servers
# and a session killed outright leaves an instance the next session can recognise and reap.
INSTANCE_PREFIX = "pytest-"
START_TIMEOUT = 300.0


@dataclass
class RunningCluster:
    """A server the tests can use: `.url`, `.client` (engine's Python client), version, plugins."""

    engine: str
    url: str
    version: str
    plugins: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    client: Any = None
    instance_name: str | None = None

    def has_plugin(self, name: str) -> bool:
        """Return True when a plugin whose name contains `name` is installed."""
        return any(name in p for p in self.plugins)


def _describe(engine: str, url: str) -> tuple[str, list[str], list[str]]:
    resp = requests.get(f"{url}/_nodes/_local/plugins", timeout=10)
    resp.raise_for_status()
    node = next(iter(resp.json()["nodes"].values()))
    return (
        node["version"],
        sorted(p["name"] for p in node.get("plugins", [])),
        sorted(m["name"] for m in node.get("modules", [])),
    )


def _client(engine: str, url: str) -> Any:
    if engine == "opensearch":
        return opensearch_client(url)
    return elasticsearch_client(url)


def _cluster(engine: str) -> Iterator[RunningCluster]:
    external = os.environ.get(f"DAC_TEST_{engine.upper()}_URL")
    name = None
    if external:
        url = external.rstrip("/")
    else:
        manager.reap_orphans(INSTANCE_PREFIX)
        name = f"{INSTANCE_PREFIX}{os.getpid()}"
        try:
            # DAC_OPENSEARCH_PLUGIN_DIR (set by .ci/run) adds Alerting to the local OpenSearch.
            plugin_dir = plugin_dir_from_env() if engine == "opensearch" else None
            instance = manager.start(
                engine,
                name=name,
                timeout=START_TIMEOUT,
                stop_at_exit=True,
                replace=True,
                plugin_dir=plugin_dir,
            )
        except ClusterError as exc:
            # A failed start is an environment problem the run must show, not a skipped test.
            pytest.fail(f"could not start a local {engine}: {exc}", pytrace=False)
        url = instance.url
    version, plugins, modules = _describe(engine, url)
    cluster = RunningCluster(engine, url, version, plugins, modules, _client(engine, url), name)
    try:
        yield cluster
    finally:
        with_close = getattr(cluster.client, "close", None)
        if callable(with_close):
            with_close()
        if name is not None:
            manager.stop(engine, name, remove=True)


@pytest.fixture(scope="session")
def opensearch() -> Iterator[RunningCluster]:
    """A running OpenSearch (pinned version, assembled modules, available plugins)."""
    yield from _cluster("opensearch")


@pytest.fixture(scope="session")
def elasticsearch() -> Iterator[RunningCluster]:
    """A running Elasticsearch (pinned 8.x integ-test distribution, security off)."""
    yield from _cluster("elasticsearch")


@pytest.fixture(scope="session")
def opensearch_alerting(opensearch: RunningCluster) -> RunningCluster:
    """The OpenSearch fixture, or a skip when its Alerting plugin is not installed.

    With `DAC_TEST_REQUIRE_ALERTING` set (as `.ci/run` does), a missing plugin fails instead: there
    a skip would let the real-alert tests pass without testing anything.
    """
    if not opensearch.has_plugin("alerting"):
        reason = (
            f"OpenSearch at {opensearch.url} has no Alerting plugin (plugins: {', '.join(opensearch.plugins) or 'none'}); "
            f"its zip is not on the Maven Central reachable here: set {PLUGIN_DIR_ENV} to the folder "
            "holding opensearch-alerting-2.19.4.0.zip (../shared/opensearch-plugins), or "
            "DAC_TEST_OPENSEARCH_URL to a full distribution (docs/clusters.md)"
        )
        if os.environ.get("DAC_TEST_REQUIRE_ALERTING"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return opensearch
