"""End to end on a real OpenSearch with Alerting: deploy, idempotency, fixtures alert, prune.

Uses the session fixture ``opensearch`` (tests/integration/conftest.py), which starts a local
OpenSearch and yields an object with ``.url``. The local one has no Alerting plugin, so the tests
that need it skip; with Docker, ``docker compose --profile opensearch up -d --wait opensearch`` and
``DAC_TEST_OPENSEARCH_URL=http://localhost:9200`` run them all (docs/opensearch.md).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from deployer.rules.loader import load_rule_files
from deployer.targets.opensearch import OpenSearchClient, OpenSearchTarget, deploy, iter_owned
from deployer.targets.opensearch_compile import NAME_PREFIX, compile_rule
from deployer.targets.opensearch_verify import deploy_templates, verify
from deployer.targets.plan import CREATE, DELETE, UNCHANGED

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TEST_RULES = REPO / "tests" / "data" / "opensearch"
CONTENT = REPO / "detections"

# Used only when the repository's mapping templates are not available: every string a keyword,
# which is what the ECS templates give the fields the test rules use.
FALLBACK_TEMPLATE = {
    "index_templates": {
        "dac-test-logs-endpoint": {
            "index_patterns": ["logs-endpoint.events.*"],
            "priority": 1,
            "template": {
                "mappings": {
                    "dynamic_templates": [
                        {"strings": {"match_mapping_type": "string", "mapping": {"type": "keyword"}}}
                    ],
                    "properties": {"@timestamp": {"type": "date"}},
                }
            },
        }
    }
}


def _templates() -> Any:
    try:
        from deployer.mappings import load_templates
    except ImportError:
        return FALLBACK_TEMPLATE
    return load_templates(REPO, "opensearch")


def _rules(*paths: Path) -> list[Any]:
    loaded = load_rule_files([p for p in paths if p.exists()])
    errors = [f for f in loaded.findings if str(f.severity).lower() == "error"]
    assert not errors, errors
    return loaded.rules


@pytest.fixture(scope="module")
def client(opensearch: Any) -> Any:
    c = OpenSearchClient(opensearch.url, verify=False if opensearch.url.startswith("https") else True)
    deploy_templates(c, _templates())
    yield c
    c.close()


@pytest.fixture
def alerting(opensearch_alerting: Any, client: OpenSearchClient) -> OpenSearchClient:
    """The client, when the cluster has the Alerting plugin (skips with the reason otherwise)."""
    return client


def _wipe_owned(client: OpenSearchClient) -> None:
    for monitor_id, _monitor in iter_owned(client):
        client.delete_monitor(monitor_id)


def test_deploy_twice_second_writes_nothing(alerting: OpenSearchClient) -> None:
    client = alerting
    _wipe_owned(client)
    rules = _rules(TEST_RULES, CONTENT)
    first_plan, first = deploy(OpenSearchTarget(client), rules)
    target = OpenSearchTarget(client)
    second_plan, second = deploy(target, rules)
    assert first and all(r.ok for r in first), first
    assert len(first_plan.of(CREATE)) == len(target.compiled)
    assert not second_plan.has_changes, second_plan.render_text()
    assert second == []
    assert len(second_plan.of(UNCHANGED)) == len(target.compiled)
    # A real change is detected and written as an update of only the fields that differ.
    changed = copy.deepcopy(rules[0].data) if rules[0].rule_id in target.compiled else None
    if changed is not None:
        changed["severity"] = "low" if changed.get("severity") != "low" else "high"
        desired = {rules[0].rule_id: target.desired([changed])[rules[0].rule_id]}
        current = target.read_current(desired)
        from deployer.targets.plan import build_plan

        plan = build_plan(desired, current, owned=target.owned, ignore=target.compare_ignore)
        # The other owned monitors are not in `desired` here, so they show as orphans.
        assert [c.action for c in plan.changes if c.rule_id == rules[0].rule_id] == ["update"]
        assert plan.changes[0].changed_paths() == {"triggers", "ui_metadata.dac.fingerprint"}


def test_every_fixture_alerts_for_the_right_entity_and_no_near_miss_does(client: OpenSearchClient) -> None:
    rules = _rules(TEST_RULES, CONTENT)
    # Without Alerting, each monitor's search and trigger condition still run on this cluster.
    with_alerting = client.has_alerting()
    report = verify(client, rules, search_only=not with_alerting)
    assert report.outcomes, "no fixtures were replayed"
    failures = [f"{o.rule_id} / {o.name} ({o.expect}): {o.message}" for o in report.outcomes if not o.ok]
    assert not failures, "\n".join(failures)
    counts = report.counts()
    assert counts["positive_alerted"] == counts["positive_total"] > 0
    assert counts["near_miss_silent"] == counts["near_miss_total"] > 0
    if with_alerting:
        # Every positive fixture has a stored alert, read back from the Alerting API, for its entity.
        for o in report.outcomes:
            if o.expect == "match":
                assert o.alert_ids and set(o.persisted) == set(o.expected), o
            else:
                assert o.alert_ids == [], o
        # One rule also alerted through Alerting's job scheduler, not only through _execute.
        assert report.scheduled is not None and report.scheduled.ok, report.scheduled
        assert report.scheduled.alert_ids and report.scheduled.seconds >= 30
        # The scheduled-run monitor is gone afterwards; only the rules' own monitors remain.
        owned = [m["ui_metadata"]["dac"]["rule_id"] for _id, m in iter_owned(client)]
        assert sorted(owned) == sorted({o.rule_id for o in report.outcomes} | set(report.no_fixtures))
    # The rule with `until` is refused, never approximated; the rule over alerts compiles with its
    # building blocks (its chain alerts are checked in test_opensearch_chain.py).
    refused = {r.rule_id: r.construct for r in report.refused}
    assert "dac-os-test-over-alerts" not in refused
    assert refused["dac-os-test-until"] == "until"


def test_prune_removes_only_owned_monitors(alerting: OpenSearchClient) -> None:
    client = alerting
    _wipe_owned(client)
    rules = _rules(TEST_RULES)
    deploy(OpenSearchTarget(client), rules)
    spawn = next(r for r in rules if r.rule_id == "dac-os-test-app-spawn")
    base = compile_rule(spawn.data, rule_id=spawn.rule_id).monitor
    # Someone else's monitor, one that only looks like ours by name, and one that carries a copied
    # marker under another name: none of them is owned, none may be deleted.
    foreign = copy.deepcopy(base)
    foreign["name"] = "SOC hand-made monitor"
    foreign.pop("ui_metadata")
    lookalike = copy.deepcopy(base)
    lookalike["name"] = NAME_PREFIX + "looks like ours"
    lookalike.pop("ui_metadata")
    copied_marker = copy.deepcopy(base)
    copied_marker["name"] = "renamed by hand"
    foreign_ids = [client.create_monitor(m) for m in (foreign, lookalike, copied_marker)]
    try:
        keep = [r for r in rules if r.rule_id == "dac-os-test-child-network"]
        plan, results = deploy(OpenSearchTarget(client), keep, prune=True)
        deleted = {c.rule_id for c in plan.of(DELETE)}
        # The chain over both blocks' alerts is not kept either, so it goes with its block.
        assert deleted == {"dac-os-test-app-spawn", "dac-os-test-over-alerts"}
        assert all(r.ok for r in results)
        remaining = {hit["_id"] for hit in client.search_monitors()}
        assert set(foreign_ids) <= remaining
        owned_rules = {m["ui_metadata"]["dac"]["rule_id"] for _id, m in iter_owned(client)}
        assert owned_rules == {"dac-os-test-child-network"}
    finally:
        for monitor_id in foreign_ids:
            client.delete_monitor(monitor_id)


def test_a_monitor_that_errors_at_run_time_is_reported_for_its_rule(alerting: OpenSearchClient) -> None:
    from deployer.targets.base import TargetError
    from deployer.targets.opensearch_verify import alerted_entities, clear_indices, replay_fixture
    from deployer.testing.events import read_events

    spawn = next(r for r in _rules(TEST_RULES) if r.rule_id == "dac-os-test-app-spawn")
    compiled = compile_rule(spawn.data, rule_id=spawn.rule_id)
    body = compiled.monitor
    test = next(t for t in spawn.metadata["tests"] if t["expect"] == "match")
    index = replay_fixture(
        alerting, compiled, [dict(e) for e in read_events(Path(spawn.path).parent / test["events"])]
    )
    # A trigger script that only fails when it runs: Alerting stores it, then reports the error.
    body["triggers"][0]["bucket_level_trigger"]["condition"]["script"]["source"] = "params.sequences.nope > 0"
    body["name"] = "run-time error probe"
    body.pop("ui_metadata")
    monitor_id = alerting.create_monitor(body)
    try:
        result = alerting.execute_monitor(monitor_id, dryrun=True)
        with pytest.raises(TargetError) as err:
            alerted_entities(result, spawn.rule_id)
        assert spawn.rule_id in err.value.message and "search failed when it ran" in err.value.message
    finally:
        alerting.delete_monitor(monitor_id)
        clear_indices(alerting, [index])


def test_dac_verify_cli_prints_a_table_per_rule_with_alert_ids(alerting: OpenSearchClient) -> None:
    import re

    from click.testing import CliRunner

    from deployer.cli import main

    result = CliRunner().invoke(
        main,
        [
            "verify",
            "--opensearch-url",
            alerting.url,
            "--no-mappings",
            "--scheduled-timeout",
            "0",
            str(TEST_RULES),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "dac-os-test-app-spawn" in lines and "dac-os-test-child-network" in lines
    assert any("ALERT IDS (Alerting API)" in line for line in lines)
    # A positive fixture's row ends with the id of the alert Alerting stored for it.
    positives = [line for line in lines if re.search(r"\smatch\s.*\sok\s+\S{20}$", line)]
    assert positives, result.output
    # `until` is refused; the chain over alerts is deployed (it has no fixtures of its own).
    assert "rules not compiled: 1" in result.output
    assert "dac-os-test-over-alerts (deployed, not verified)" in result.output


def test_dac_demo_prints_an_alert_read_back_from_the_alerting_api(alerting: OpenSearchClient) -> None:
    import re

    from click.testing import CliRunner

    from deployer.cli import main

    result = CliRunner().invoke(main, ["demo", "--opensearch-url", alerting.url])
    assert result.exit_code == 0, result.output
    assert "read from the Alerting API" in result.stdout
    alert_id = re.search(r"alert id\s+(\S+) \(ACTIVE", result.stdout).group(1)
    monitor_id = re.search(r"monitor\s+(\S+),", result.stdout).group(1)
    # The printed alert is the one Alerting stores for that monitor.
    stored = {a["id"]: a for a in alerting.alerts(monitor_id, "ACTIVE")}
    assert alert_id in stored
    entity = re.search(r"entity\s+\S+=(\S+)", result.stdout).group(1)
    assert stored[alert_id]["agg_alert_content"]["bucket_keys"] == [entity]
