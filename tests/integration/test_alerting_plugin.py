"""The local OpenSearch with the Alerting plugin from DAC_OPENSEARCH_PLUGIN_DIR (as .ci/run sets it)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from deployer.cli import main
from deployer.cluster.versions import OPENSEARCH_VERSION

pytestmark = pytest.mark.integration


def test_local_opensearch_runs_alerting_after_job_scheduler(opensearch_alerting) -> None:
    rows = opensearch_alerting.client.cat.plugins(format="json")
    versions = {r["component"]: r["version"] for r in rows}
    assert versions["opensearch-alerting"] == f"{OPENSEARCH_VERSION}.0"
    assert "opensearch-job-scheduler" in versions
    # Alerting answers: its monitor search on an empty config index is a 404 or an empty hit list.
    resp = opensearch_alerting.client.transport.perform_request("GET", "/_plugins/_alerting/stats")
    assert resp["cluster_name"]


def test_cluster_status_json_lists_plugins_by_descriptor_name(opensearch_alerting) -> None:
    if opensearch_alerting.instance_name is None:
        pytest.skip("DAC_TEST_OPENSEARCH_URL points at a server dac did not start")
    result = CliRunner().invoke(
        main, ["cluster", "status", "--name", opensearch_alerting.instance_name, "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["running"] and {"opensearch-alerting", "opensearch-job-scheduler"} <= set(info["plugins"])
