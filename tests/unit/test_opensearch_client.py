"""The OpenSearch client and target over HTTP, against the in-process Alerting model of opensearch_support."""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterator
from typing import Any

import pytest
from opensearch_support import AlertingModel, eql_rule, serve_alerting

from deployer.targets.http import RetryPolicy
from deployer.targets.opensearch import OpenSearchClient, OpenSearchError, OpenSearchTarget, deploy
from deployer.targets.plan import CREATE, DELETE, UNCHANGED, UPDATE

SEQ = """
sequence by process.entity_id with maxspan=30s
  [process where event.type == "start" and process.name : "mshta.exe"]
  [network where destination.port in (80, 443)]
"""


def rule(rule_id: str, **extra: Any) -> dict[str, Any]:
    return eql_rule(rule_id, SEQ, **extra)


@pytest.fixture
def server() -> Iterator[tuple[str, AlertingModel]]:
    with serve_alerting() as served:
        yield served


def fast_retry() -> RetryPolicy:
    return RetryPolicy(retries=3, base_delay=0.01, max_delay=0.02, total_budget=5)


def writes(model: AlertingModel) -> list[tuple[str, str]]:
    return [
        r
        for r in model.requests
        if r[0] in ("PUT", "DELETE") or (r[0] == "POST" and not r[1].endswith("_search"))
    ]


def test_deploy_twice_second_writes_nothing_over_http(server: tuple[str, AlertingModel]) -> None:
    url, model = server
    client = OpenSearchClient(url, retry=fast_retry())
    rules = [rule("a"), rule("b", severity="low")]
    plan, results = deploy(OpenSearchTarget(client), rules)
    assert [c.action for c in plan.changes] == [CREATE, CREATE] and all(r.ok for r in results)
    # What came back is the re-serialised form, yet it compares equal to what was sent.
    stored = next(iter(model.monitors.values()))
    assert stored["inputs"][0]["search"]["query"]["query"]["bool"]["minimum_should_match"] == "1"
    model.requests.clear()
    plan2, results2 = deploy(OpenSearchTarget(client), rules)
    assert {c.action for c in plan2.changes} == {UNCHANGED}
    assert results2 == [] and writes(model) == []


def test_update_uses_optimistic_concurrency(server: tuple[str, AlertingModel]) -> None:
    url, model = server
    client = OpenSearchClient(url, retry=fast_retry())
    deploy(OpenSearchTarget(client), [rule("a")])
    plan, results = deploy(OpenSearchTarget(client), [rule("a", severity="critical")])
    assert [c.action for c in plan.changes] == [UPDATE] and results[0].ok
    # A concurrent edit between read and write: the write fails for that rule, nothing is overwritten.
    target = OpenSearchTarget(client)
    desired = target.desired([rule("a", severity="low")])
    current = target.read_current(desired)
    mid = next(iter(model.monitors))
    model.seq[mid] += 1
    from deployer.targets.plan import build_plan

    results = target.apply(build_plan(desired, current, owned=target.owned))
    assert len(results) == 1 and not results[0].ok and results[0].status_code == 409


def test_prune_deletes_owned_only_over_http(server: tuple[str, AlertingModel]) -> None:
    url, model = server
    client = OpenSearchClient(url, retry=fast_retry())
    deploy(OpenSearchTarget(client), [rule("a"), rule("b")])
    foreign = copy.deepcopy(next(iter(model.monitors.values())))
    foreign["name"] = "SOC monitor"
    foreign.pop("ui_metadata")
    model.monitors["hand-made"] = foreign
    model.seq["hand-made"] = 0
    plan, results = deploy(OpenSearchTarget(client), [rule("a")], prune=True)
    assert [(c.action, c.rule_id) for c in plan.changes if c.action != UNCHANGED] == [(DELETE, "b")]
    assert all(r.ok for r in results)
    assert "hand-made" in model.monitors and len(model.monitors) == 2


def test_transient_errors_are_retried(server: tuple[str, AlertingModel]) -> None:
    url, model = server
    client = OpenSearchClient(url, retry=fast_retry())
    model.fail_next = [429, 503]
    assert "opensearch-alerting" in client.plugins()
    assert len([r for r in model.requests if r[1] == "/_cat/plugins"]) == 3


def test_bad_credentials_fail_fast_without_leaking(server: tuple[str, AlertingModel]) -> None:
    url, model = server
    model.require_auth = "Basic " + base64.b64encode(b"deployer:right-secret").decode()
    good = OpenSearchClient.from_env(
        url, env={"OPENSEARCH_USERNAME": "deployer", "OPENSEARCH_PASSWORD": "right-secret"}
    )
    assert good.plugins()
    bad = OpenSearchClient(url, username="deployer", password="wrong-secret", retry=fast_retry())
    model.requests.clear()
    with pytest.raises(OpenSearchError) as info:
        bad.plugins()
    assert info.value.status_code == 401
    assert "wrong-secret" not in str(info.value) and "OPENSEARCH_PASSWORD" in str(info.value.hint)
    assert len(model.requests) == 1  # never retried


def test_unreachable_cluster_is_a_target_error() -> None:
    from deployer.targets.base import TargetError

    client = OpenSearchClient("http://127.0.0.1:9", retry=fast_retry())
    with pytest.raises(TargetError, match="cannot reach OpenSearch"):
        client.plugins()


def test_a_create_with_an_ambiguous_failure_is_not_retried(server: tuple[str, AlertingModel]) -> None:
    # A 504 may mean the monitor was stored: a retry could leave a second, running copy.
    url, model = server
    client = OpenSearchClient(url, retry=fast_retry())
    from deployer.targets.plan import build_plan

    target = OpenSearchTarget(client)
    desired = target.desired([rule("a")])
    plan = build_plan(desired, target.read_current(desired), owned=target.owned)
    model.fail_next = [504]
    results = target.apply(plan)
    creates = [r for r in model.requests if r == ("POST", "/_plugins/_alerting/monitors")]
    assert len(creates) == 1
    assert not results[0].ok and results[0].status_code == 504 and results[0].rule_id == "a"
    # The next deploy converges: one monitor for the rule.
    _plan, again = deploy(OpenSearchTarget(client), [rule("a")])
    assert all(r.ok for r in again) and len(model.monitors) == 1


def test_monitor_search_asks_for_ui_metadata_like_dashboards(server: tuple[str, AlertingModel]) -> None:
    # Without the Dashboards user agent the plugin strips ui_metadata (dac's ownership marker),
    # and every deploy would create every monitor again.
    url, model = server
    client = OpenSearchClient(url, retry=fast_retry())
    deploy(OpenSearchTarget(client), [rule("a")])
    hits = client.search_monitors()
    assert hits[0]["monitor"]["ui_metadata"]["dac"]["rule_id"] == "a"
    bare = client.request("POST", "/_plugins/_alerting/monitors/_search", {"query": {"match_all": {}}})
    assert "ui_metadata" not in bare["hits"]["hits"][0]["_source"]


def test_cluster_gone_mid_deploy_stops_and_names_every_rule_not_written() -> None:
    from deployer.targets.base import TargetError

    class GoneAfterOne:
        url = "http://127.0.0.1:1"

        def __init__(self) -> None:
            self.created = 0

        def require_alerting(self) -> None:
            pass

        def search_monitors(self) -> list[dict[str, Any]]:
            return []

        def create_monitor(self, body: dict[str, Any]) -> str:
            if self.created:
                raise TargetError("cannot reach OpenSearch at http://127.0.0.1:1")
            self.created += 1
            return "m1"

    client = GoneAfterOne()
    _plan, results = deploy(OpenSearchTarget(client), [rule("a"), rule("b"), rule("c")])  # type: ignore[arg-type]
    assert [(r.rule_id, r.ok) for r in results] == [("a", True), ("b", False), ("c", False)]
    assert "cannot reach" in results[1].message
    assert results[2].message.startswith("not attempted: cannot reach")
    assert client.created == 1
