"""Unit tests for the OpenSearch target (planner contract, ownership) and the verify helpers."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from opensearch_support import eql_rule

from deployer.targets.base import Target
from deployer.targets.config import TargetConfig
from deployer.targets.opensearch import OpenSearchClient, OpenSearchTarget, deploy, from_config
from deployer.targets.opensearch_compile import NAME_PREFIX, compile_rule, trigger_id
from deployer.targets.opensearch_verify import (
    FixtureOutcome,
    _judge,
    alerted_entities,
    expected_entities,
    format_ts,
    parse_ts,
    replay_index,
    shift_events,
)
from deployer.targets.plan import CONFLICT, CREATE, DELETE, ORPHAN, UNCHANGED, UPDATE

SEQ = """
sequence by process.entity_id with maxspan=30s
  [process where event.type == "start"]
  [network where destination.port == 443]
"""


def rule(rule_id: str, query: str = SEQ, **extra: Any) -> dict[str, Any]:
    return eql_rule(rule_id, query, **extra)


def stored(monitor: dict[str, Any]) -> dict[str, Any]:
    """A monitor as OpenSearch hands it back: defaults spelled out, server fields added."""
    out = copy.deepcopy(monitor)
    search = out["inputs"][0]["search"]["query"]
    search["query"]["bool"]["boost"] = 1.0
    search["query"]["bool"]["adjust_pure_negative"] = True
    out.update(last_update_time=1700000000000, schema_version=5, user=None)
    return out


class FakeClient:
    """Records writes; holds monitors like the Alerting config index."""

    url = "http://127.0.0.1:9200"

    def __init__(self) -> None:
        self.monitors: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []
        self._next = 0

    def search_monitors(self) -> list[dict[str, Any]]:
        return [
            {"_id": mid, "_seq_no": 1, "_primary_term": 1, "monitor": copy.deepcopy(m)}
            for mid, m in self.monitors.items()
        ]

    def create_monitor(self, body: dict[str, Any]) -> str:
        self._next += 1
        mid = f"m{self._next}"
        self.monitors[mid] = stored(body)
        self.writes.append(("create", mid))
        return mid

    def update_monitor(self, mid: str, body: dict[str, Any], seq_no: Any = None, term: Any = None) -> None:
        self.monitors[mid] = stored(body)
        self.writes.append(("update", mid))

    def delete_monitor(self, mid: str) -> None:
        self.monitors.pop(mid, None)
        self.writes.append(("delete", mid))

    def require_alerting(self) -> None:
        pass

    def close(self) -> None:
        pass


def target(client: FakeClient) -> OpenSearchTarget:
    return OpenSearchTarget(client)  # type: ignore[arg-type]


def test_target_satisfies_the_protocol():
    assert isinstance(target(FakeClient()), Target)


def test_deploy_twice_writes_once():
    client = FakeClient()
    rules = [rule("a"), rule("b", query=SEQ.replace("443", "80"))]
    plan, results = deploy(target(client), rules)
    assert [c.action for c in plan.changes] == [CREATE, CREATE]
    assert all(r.ok for r in results)
    client.writes.clear()
    plan2, results2 = deploy(target(client), rules)
    assert {c.action for c in plan2.changes} == {UNCHANGED}
    assert results2 == [] and client.writes == []


def test_change_is_an_update_with_field_diff():
    client = FakeClient()
    deploy(target(client), [rule("a")])
    plan, _ = deploy(target(client), [rule("a", severity="critical", enabled=False)])
    (change,) = plan.changes
    assert change.action == UPDATE
    assert change.changed_paths() == {"enabled", "triggers", "ui_metadata.dac.fingerprint"}
    assert client.writes[-1][0] == "update"


def test_query_change_shows_as_fingerprint_change():
    client = FakeClient()
    deploy(target(client), [rule("a")])
    plan, _ = deploy(target(client), [rule("a", query=SEQ.replace("30s", "45s"))])
    assert plan.changes[0].changed_paths() == {"ui_metadata.dac.fingerprint"}


def test_version_bump_alone_writes_nothing():
    client = FakeClient()
    deploy(target(client), [rule("a", version=1)])
    plan, results = deploy(target(client), [rule("a", version=2)])
    assert plan.changes[0].action == UNCHANGED and results == []


def test_prune_deletes_owned_only_and_lookalikes_survive():
    client = FakeClient()
    deploy(target(client), [rule("a"), rule("b")])
    base = compile_rule(rule("c")).monitor
    foreign = copy.deepcopy(base)
    foreign["name"] = "hand-made"
    foreign.pop("ui_metadata")
    lookalike = copy.deepcopy(base)
    lookalike["name"] = NAME_PREFIX + "Rule c"
    lookalike.pop("ui_metadata")
    renamed = copy.deepcopy(base)
    renamed["name"] = "renamed by hand"
    client.monitors.update({"x1": foreign, "x2": lookalike, "x3": renamed})
    plan, results = deploy(target(client), [rule("a")], prune=True)
    assert [(c.action, c.rule_id) for c in plan.changes if c.action != UNCHANGED] == [(DELETE, "b")]
    assert all(r.ok for r in results)
    assert {"x1", "x2", "x3"} <= set(client.monitors)


def test_without_prune_an_owned_leftover_is_an_orphan():
    client = FakeClient()
    deploy(target(client), [rule("a"), rule("b")])
    plan, results = deploy(target(client), [rule("a")])
    assert [(c.action, c.rule_id) for c in plan.changes if c.action != UNCHANGED] == [(ORPHAN, "b")]
    assert results == []


def test_unowned_monitor_claiming_a_rule_is_a_conflict():
    client = FakeClient()
    claimed = compile_rule(rule("a")).monitor
    claimed["name"] = "renamed by hand"
    client.monitors["x"] = claimed
    plan, results = deploy(target(client), [rule("a")])
    assert [c.action for c in plan.changes] == [CONFLICT]
    assert results == [] and client.writes == []


def test_owned_monitor_wins_over_a_copy_and_duplicates_are_pruned():
    client = FakeClient()
    deploy(target(client), [rule("a")])
    copy_of_ours = copy.deepcopy(next(iter(client.monitors.values())))
    client.monitors["zz-dup"] = copy_of_ours
    claimed = compile_rule(rule("a")).monitor
    claimed["name"] = "renamed by hand"
    client.monitors["aa-copy"] = claimed
    plan, _ = deploy(target(client), [rule("a")], prune=True)
    actions = sorted((c.action, c.rule_id) for c in plan.changes)
    assert actions == [(DELETE, "a#duplicate:zz-dup"), (UNCHANGED, "a")]
    assert "aa-copy" in client.monitors and "zz-dup" not in client.monitors


def test_refused_rules_are_kept_aside():
    t = target(FakeClient())
    desired = t.desired([rule("a"), rule("u", query=SEQ + 'until [process where event.type == "end"]')])
    assert list(desired) == ["a"]
    assert [r.rule_id for r in t.refused] == ["u"]


def test_from_config_reads_opensearch_credentials_from_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENSEARCH_USERNAME", "deployer")
    monkeypatch.setenv("OPENSEARCH_PASSWORD", "s3cret-value")
    cfg = TargetConfig(name="staging", kind="opensearch", url="https://os.example:9200")
    t = from_config(cfg)
    assert t.describe() == "opensearch https://os.example:9200"
    assert "s3cret" not in t.describe() and "s3cret" not in repr(t.client.url)
    assert t.client.raw.transport.kwargs.get("verify_certs", True) is True
    t.close()


def test_client_refuses_credentials_in_url():
    from deployer.targets.base import TargetError

    with pytest.raises(TargetError, match="credentials embedded"):
        OpenSearchClient("https://admin:pw@os.example:9200")


def test_username_without_password_is_an_error():
    from deployer.targets.base import TargetError

    with pytest.raises(TargetError, match="OPENSEARCH_PASSWORD"):
        OpenSearchClient.from_env("http://localhost:9200", env={"OPENSEARCH_USERNAME": "u"})


# ---------------------------------------------------------------- verify helpers


def test_shift_keeps_gaps_and_ends_before_now():
    events = [
        {"@timestamp": "2026-03-02T10:00:00.000Z", "event": {"id": "1"}},
        {"@timestamp": "2026-03-02T10:00:12.345Z", "event": {"id": "2"}},
    ]
    now = parse_ts("2030-01-01T00:00:00.000Z")
    shifted, span = shift_events(events, now)
    assert span == 12_345
    stamps = [parse_ts(e["@timestamp"]) for e in shifted]
    assert stamps[1] - stamps[0] == 12_345
    assert now - 5_000 < stamps[1] < now
    assert events[0]["@timestamp"] == "2026-03-02T10:00:00.000Z"  # the input is not modified
    assert format_ts(stamps[0]).endswith("Z")


def test_expected_entities_read_the_first_stage_key():
    compiled = compile_rule(
        rule(
            "x",
            query="sequence with maxspan=1m [file where true] by process.entity_id "
            "[process where true] by process.parent.entity_id",
        )
    )
    events = [
        {"event": {"id": "f"}, "process": {"entity_id": "app"}},
        {"event": {"id": "p"}, "process": {"entity_id": "child", "parent": {"entity_id": "app"}}},
    ]
    assert expected_entities(compiled, events, [["f", "p"]]) == [("app",)]


def test_replay_index_matches_the_first_pattern():
    compiled = compile_rule(rule("x", index=["-excluded-*", "logs-endpoint.events.*", "winlogbeat-*"]))
    assert replay_index(compiled) == "logs-endpoint.events.dac-replay"


def test_alerted_entities_and_judgement():
    result = {
        "error": None,
        "input_results": {"error": None},
        "trigger_results": {
            trigger_id("x"): {
                "error": None,
                "agg_result_buckets": {
                    "ent-1": {
                        "agg_alert_content": {"parent_bucket_path": "composite_agg", "bucket_keys": ["ent-1"]}
                    },
                    "ent-2": {
                        "agg_alert_content": {"parent_bucket_path": "composite_agg", "bucket_keys": ["ent-2"]}
                    },
                },
            }
        },
    }
    assert alerted_entities(result, "x") == [("ent-1",), ("ent-2",)]
    ok = FixtureOutcome(
        "x", "t", "match", 2, expected=[("ent-1",)], alerted=[("ent-1",)], persisted=[("ent-1",)]
    )
    _judge(ok)
    assert ok.ok and ok.message == ""
    extra = FixtureOutcome("x", "t", "match", 2, expected=[("ent-1",)], alerted=[("ent-1",), ("ent-2",)])
    extra.persisted = [("ent-1",)]
    _judge(extra)
    assert not extra.ok and "unexpected alert for ent-2" in extra.message
    near = FixtureOutcome("x", "t", "no_match", 2, alerted=[("ent-9",)])
    _judge(near)
    assert not near.ok and "alerted on ent-9" in near.message
    silent = FixtureOutcome("x", "t", "no_match", 2)
    _judge(silent)
    assert silent.ok


def test_monitor_run_errors_surface():
    from deployer.targets.base import TargetError

    with pytest.raises(TargetError, match="search failed when it ran"):
        alerted_entities({"input_results": {"error": "script_exception"}}, "x")


def test_a_failed_search_with_the_real_plugins_empty_error_is_reported():
    from deployer.targets.base import TargetError

    # Alerting 2.19.4.0 reports a search exception as error "" with no results.
    result = {"error": None, "input_results": {"results": [], "error": ""}, "trigger_results": {}}
    with pytest.raises(
        TargetError, match="x: the monitor's search failed when it ran: Alerting gave no reason"
    ):
        alerted_entities(result, "x")
    ok = {"error": None, "input_results": {"results": [{"hits": {}}], "error": None}, "trigger_results": {}}
    assert alerted_entities(ok, "x") == []


def test_written_since_counts_new_alerts_and_deduplicated_updates():
    from deployer.targets.opensearch_verify import alert_entity, written_since

    before = {"a1": {"id": "a1", "version": 1}, "a2": {"id": "a2", "version": 3}}
    after = {
        "a1": {"id": "a1", "version": 1},  # untouched: not this run's
        "a2": {"id": "a2", "version": 4, "agg_alert_content": {"bucket_keys": ["ent-2"]}},  # re-detected
        "a3": {"id": "a3", "version": 1, "agg_alert_content": {"bucket_keys": ["ent-3"]}},  # new
    }
    written = written_since(before, after)
    assert [a["id"] for a in written] == ["a2", "a3"]
    assert [alert_entity(a) for a in written] == [("ent-2",), ("ent-3",)]
