"""Exception lists on a real OpenSearch: compiled into the monitor's search, an excepted event raises
no alert (real Alerting plugin when DAC_OPENSEARCH_PLUGIN_DIR provides it, as .ci/run does;
otherwise each monitor's search and trigger run directly on the cluster)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from deployer.cluster.plugin_dir import PLUGIN_DIR_ENV
from deployer.rules.loader import load_rule_files
from deployer.targets.opensearch import OpenSearchClient
from deployer.targets.opensearch_verify import deploy_templates, verify

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "exceptions_repo"
BENIGN = "only the corporate software portal"
ATTACK = "the portal, then an external host"


@pytest.fixture(scope="module")
def client(opensearch: Any) -> Any:
    from deployer.mappings import load_templates

    c = OpenSearchClient(opensearch.url, verify=False if opensearch.url.startswith("https") else True)
    deploy_templates(c, load_templates(REPO, "opensearch"))
    yield c
    c.close()


def _outcomes(client: OpenSearchClient, rules_dir: Path) -> dict[str, Any]:
    loaded = load_rule_files([rules_dir])
    assert not loaded.findings, loaded.findings
    if os.environ.get(PLUGIN_DIR_ENV):
        # CI provides the plugin: the judge is then the real Alerting plugin, not the search alone.
        assert client.has_alerting()
    report = verify(client, loaded.rules, search_only=not client.has_alerting())
    assert not report.refused, report.refused
    return {o.name: o for o in report.outcomes}


def test_excepted_events_raise_no_alert_and_the_attack_still_alerts(client: OpenSearchClient) -> None:
    outcomes = _outcomes(client, DATA)
    assert outcomes[BENIGN].ok and outcomes[BENIGN].alerted == [], outcomes[BENIGN].message
    attack = outcomes[ATTACK]
    assert attack.ok and len(attack.alerted) == 1, attack.message


def test_without_the_list_the_benign_install_alerts(client: OpenSearchClient, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(DATA, repo)
    rule = repo / "installer_network.yaml"
    rule.write_text(rule.read_text().replace("exceptions_list:\n- list_id: t-egress-allow\n", ""))
    outcome = _outcomes(client, repo)[BENIGN]
    # The same events, no exceptions: the monitor alerts, so the list is what kept it silent.
    assert not outcome.ok and len(outcome.alerted) == 1
