"""Unit tests for the EQL → OpenSearch Alerting monitor compiler (no server needed)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from opensearch_support import eql_rule

from deployer.eql.parser import parse
from deployer.targets.opensearch import normalise, same_body
from deployer.targets.opensearch_compile import (
    COMPOSITE_AGG,
    NAME_PREFIX,
    NULL_KEY,
    SEQUENCE_AGG,
    ConditionCompiler,
    UnsupportedConstruct,
    compile_rule,
    compile_rules,
    is_owned,
    owned_rule_id,
    parse_duration_ms,
    trigger_id,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "opensearch"


def dsl(condition: str) -> dict[str, Any]:
    """The Query DSL of one event condition (the part after `where`)."""
    query = parse(f"any where {condition}")
    return ConditionCompiler("r").compile(query.body.condition)


def rule(query: str, **extra: Any) -> dict[str, Any]:
    return eql_rule("r-1", query, **{"name": "Test rule", **extra})


SEQ = """
sequence by process.entity_id with maxspan=30s
  [process where event.type == "start"]
  [network where destination.port == 443]
"""


# ---------------------------------------------------------------- operators


def test_equals_is_case_sensitive_term():
    assert dsl('process.name == "Cmd.exe"') == {"term": {"process.name": {"value": "Cmd.exe"}}}
    # `==` never expands wildcards.
    assert dsl('process.name == "cmd*.exe"') == {"term": {"process.name": {"value": "cmd*.exe"}}}
    assert dsl("process.pid == 4") == {"term": {"process.pid": {"value": 4}}}


def test_not_equals_is_must_not_term():
    assert dsl('user.name != "root"') == {"bool": {"must_not": [{"term": {"user.name": {"value": "root"}}}]}}


def test_null_comparisons_are_exists():
    assert dsl("process.pid == null") == {"bool": {"must_not": [{"exists": {"field": "process.pid"}}]}}
    assert dsl("process.pid != null") == {"exists": {"field": "process.pid"}}


def test_ranges_and_constant_on_the_left():
    assert dsl("process.pid < 4") == {"range": {"process.pid": {"lt": 4}}}
    assert dsl("process.pid >= 4") == {"range": {"process.pid": {"gte": 4}}}
    assert dsl("4 < process.pid") == {"range": {"process.pid": {"gt": 4}}}
    assert dsl('"a" == process.name') == {"term": {"process.name": {"value": "a"}}}


def test_colon_is_case_insensitive_term_or_wildcard():
    assert dsl('process.name : "cmd.exe"') == {
        "term": {"process.name": {"value": "cmd.exe", "case_insensitive": True}}
    }
    assert dsl('process.name : "cmd*"') == {
        "wildcard": {"process.name": {"wildcard": "cmd*", "case_insensitive": True}}
    }
    assert dsl('process.name : ("a?c", "b")') == {
        "bool": {
            "should": [
                {"wildcard": {"process.name": {"wildcard": "a?c", "case_insensitive": True}}},
                {"term": {"process.name": {"value": "b", "case_insensitive": True}}},
            ],
            "minimum_should_match": 1,
        }
    }


def test_wildcard_backslash_is_escaped_like_elasticsearch():
    # EQL "*\\red_ttp\\wininit.*" holds single backslashes; Lucene needs them doubled.
    assert dsl('file.path : "*\\\\red_ttp\\\\wininit.*"') == {
        "wildcard": {"file.path": {"wildcard": "*\\\\red_ttp\\\\wininit.*", "case_insensitive": True}}
    }


def test_like_and_like_insensitive():
    assert dsl('process.command_line like "net.exe"') == {
        "term": {"process.command_line": {"value": "net.exe"}}
    }
    assert dsl('process.command_line like "n*t.exe"') == {
        "wildcard": {"process.command_line": {"wildcard": "n*t.exe"}}
    }
    assert dsl('process.command_line like~ ("n?t.e?e", "net.*")') == {
        "bool": {
            "should": [
                {"wildcard": {"process.command_line": {"wildcard": "n?t.e?e", "case_insensitive": True}}},
                {"wildcard": {"process.command_line": {"wildcard": "net.*", "case_insensitive": True}}},
            ],
            "minimum_should_match": 1,
        }
    }


def test_regex_is_regexp_joined():
    assert dsl('process.name regex "n.t\\\\.exe"') == {"regexp": {"process.name": {"value": "n.t\\.exe"}}}
    assert dsl('process.name regex~ ("a.*", "b")') == {
        "regexp": {"process.name": {"value": "a.*|b", "case_insensitive": True}}
    }


def test_in_and_in_insensitive():
    assert dsl("destination.port in (80, 443)") == {"terms": {"destination.port": [80, 443]}}
    assert dsl('process.name not in ("a", "b")') == {
        "bool": {"must_not": [{"terms": {"process.name": ["a", "b"]}}]}
    }
    # in~ is verbatim: "1*" is not a wildcard.
    assert dsl('process.name in~ ("A*", "b")') == {
        "bool": {
            "should": [
                {"term": {"process.name": {"value": "A*", "case_insensitive": True}}},
                {"term": {"process.name": {"value": "b", "case_insensitive": True}}},
            ],
            "minimum_should_match": 1,
        }
    }
    assert dsl('process.name not in~ ("a")') == {
        "bool": {"must_not": [{"term": {"process.name": {"value": "a", "case_insensitive": True}}}]}
    }


def test_boolean_operators():
    assert dsl('process.name == "a" and not process.pid == 1 or process.pid > 5') == {
        "bool": {
            "should": [
                {
                    "bool": {
                        "filter": [
                            {"term": {"process.name": {"value": "a"}}},
                            {"bool": {"must_not": [{"term": {"process.pid": {"value": 1}}}]}},
                        ]
                    }
                },
                {"range": {"process.pid": {"gt": 5}}},
            ],
            "minimum_should_match": 1,
        }
    }
    assert dsl("true") == {"match_all": {}}
    assert dsl("false") == {"match_none": {}}
    # A bare boolean field means `field == true`.
    assert dsl("dll.code_signature.trusted") == {"term": {"dll.code_signature.trusted": {"value": True}}}


def test_optional_field_compiles_like_the_field():
    # An unmapped field matches no term and has no value: the same as EQL's `?field` → null.
    assert dsl('?process.Ext.token.integrity_level_name == "high"') == {
        "term": {"process.Ext.token.integrity_level_name": {"value": "high"}}
    }
    assert dsl("?foo.bar == null") == {"bool": {"must_not": [{"exists": {"field": "foo.bar"}}]}}


def test_string_functions_become_queries():
    assert dsl('startsWith~(process.name, "pow")') == {
        "prefix": {"process.name": {"value": "pow", "case_insensitive": True}}
    }
    assert dsl('endsWith(file.path, "*.exe")') == {"wildcard": {"file.path": {"wildcard": "*\\*.exe"}}}
    assert dsl('stringContains(process.command_line, "enc")') == {
        "wildcard": {"process.command_line": {"wildcard": "*enc*"}}
    }
    assert dsl('cidrMatch(destination.ip, "10.0.0.0/8", "192.168.0.0/16")') == {
        "terms": {"destination.ip": ["10.0.0.0/8", "192.168.0.0/16"]}
    }
    assert dsl('endsWith(file.path, ".exe") == false') == {
        "bool": {"must_not": [{"wildcard": {"file.path": {"wildcard": "*.exe"}}}]}
    }


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("condition", "construct"),
    [
        ("length(process.name) > 5", "function length()"),
        ('concat(process.name, "x") == "ax"', "function concat()"),
        ("process.pid + 1 == 5", "arithmetic"),
        ("-process.pid == 5", "arithmetic"),
        ("process.pid < null", "comparison < null"),
    ],
)
def test_conditions_refused(condition: str, construct: str):
    with pytest.raises(UnsupportedConstruct) as info:
        dsl(condition)
    assert info.value.construct == construct
    assert str(info.value).startswith("r: cannot compile for OpenSearch: " + construct)
    assert info.value.line == 1


@pytest.mark.parametrize(
    ("query", "construct"),
    [
        (SEQ + 'until [process where event.type == "end"]', "until"),
        (
            "sequence by process.entity_id with maxspan=30s [process where true] ![network where true] "
            "[file where true]",
            "missing event ![...]",
        ),
        (SEQ + "| head 5", "pipe | head"),
        (
            "sequence by process.entity_id [process where true] [network where true]",
            "sequence without maxspan",
        ),
        ("sequence with maxspan=1m [process where true] [network where true]", "sequence without join key"),
        ('process where process.name == "a"', "event query"),
        ("sample by host.id [process where true] [network where true]", "sample"),
    ],
)
def test_queries_refused(query: str, construct: str):
    with pytest.raises(UnsupportedConstruct) as info:
        compile_rule(rule(query))
    assert info.value.construct == construct
    assert "r-1" in str(info.value)


def test_rule_over_alerts_refused_with_reason():
    with pytest.raises(UnsupportedConstruct) as info:
        compile_rule(rule(SEQ, index=[".alerts-security.alerts-default"], metadata={"depends_on": ["a"]}))
    assert info.value.construct == "rule over other rules' alerts"
    assert "building-block" in str(info.value)


def test_mustache_braces_in_rule_text_refused():
    with pytest.raises(UnsupportedConstruct, match="mustache"):
        compile_rule(rule(SEQ.replace("destination.port == 443", 'process.command_line : "*{{x}}*"')))


def test_kibana_filters_and_undeclared_exception_lists_refused():
    with pytest.raises(UnsupportedConstruct, match="filters"):
        compile_rule(rule(SEQ, filters=[{"query": {"match_all": {}}}]))
    with pytest.raises(UnsupportedConstruct, match="'x' is not declared"):
        compile_rule(rule(SEQ, exceptions_list=[{"list_id": "x"}]))


def test_refusal_names_rule_and_position():
    with pytest.raises(UnsupportedConstruct) as info:
        compile_rule(
            rule(
                "sequence by process.entity_id with maxspan=30s\n  [process where true]\n"
                "  [network where length(destination.domain) > 3]"
            )
        )
    assert (info.value.line, info.value.column) == (3, 18)
    assert "r-1: cannot compile for OpenSearch: function length() at query line 3, column 18" in str(
        info.value
    )


def test_compile_rules_collects_refusals_rule_by_rule():
    from deployer.rules.loader import load_rule_files

    loaded = load_rule_files([DATA])
    assert not loaded.findings
    report = compile_rules(loaded.rules)
    # The rule over alerts compiles together with its building blocks (tests/unit/test_opensearch_chain_compile.py).
    assert sorted(c.rule_id for c in report.compiled) == [
        "dac-os-test-app-spawn",
        "dac-os-test-child-network",
        "dac-os-test-over-alerts",
    ]
    assert sorted(r.rule_id for r in report.refused) == ["dac-os-test-until"]


# ---------------------------------------------------------------- monitor shape


def test_monitor_body_shape():
    compiled = compile_rule(rule(SEQ, interval="5m", **{"from": "now-6m"}))
    m = compiled.monitor
    assert m["monitor_type"] == "bucket_level_monitor"
    assert m["name"] == NAME_PREFIX + "Test rule"
    assert m["schedule"] == {"period": {"interval": 5, "unit": "MINUTES"}}
    search = m["inputs"][0]["search"]
    assert search["indices"] == ["logs-endpoint.events.*"]
    q = search["query"]
    assert q["size"] == 0
    assert q["query"]["bool"]["filter"][0]["range"]["@timestamp"]["gte"] == "{{period_end}}||-360s"
    should = q["query"]["bool"]["should"]
    assert q["query"]["bool"]["minimum_should_match"] == 1
    # One constant_score per distinct step; the boosts are the step bits.
    assert [s["constant_score"]["boost"] for s in should] == [1.0, 2.0]
    assert should[0]["constant_score"]["filter"] == {
        "bool": {
            "filter": [
                {"term": {"event.category": {"value": "process"}}},
                {"term": {"event.type": {"value": "start"}}},
            ]
        }
    }
    comp = q["aggregations"][COMPOSITE_AGG]
    assert comp["composite"]["sources"] == [{"k0": {"terms": {"field": "process.entity_id"}}}]
    params = comp["aggregations"][SEQUENCE_AGG]["scripted_metric"]["params"]
    assert params["bits"] == [1, 2]
    assert params["maxspan"] == 30_000
    assert params["ts"] == "@timestamp"
    assert params["upos"] == [] and params["kf"] == []
    trig = m["triggers"][0]["bucket_level_trigger"]
    assert trig["id"] == trigger_id("r-1")
    assert trig["severity"] == "2"
    assert trig["condition"]["parent_bucket_path"] == COMPOSITE_AGG
    assert trig["condition"]["buckets_path"] == {"sequences": f"{SEQUENCE_AGG}.value"}
    assert m["ui_metadata"]["dac"]["managed_by"] == "dac"
    assert m["ui_metadata"]["dac"]["rule_id"] == "r-1"
    assert is_owned(m) and owned_rule_id(m) == "r-1"
    # lookback ≥ interval + maxspan, and ≥ the rule's own `from`.
    assert compiled.lookback_ms == 360_000


def test_lookback_covers_interval_plus_maxspan():
    compiled = compile_rule(rule(SEQ.replace("30s", "10m"), interval="5m", **{"from": "now-6m"}))
    assert compiled.lookback_ms == 15 * 60_000


def test_runs_expand_into_repeated_stages_sharing_a_bit():
    compiled = compile_rule(
        rule(
            "sequence by user.name with maxspan=1m "
            '[authentication where event.outcome == "failure"] with runs=3 '
            '[authentication where event.outcome == "success"]'
        )
    )
    params = compiled.monitor["inputs"][0]["search"]["query"]["aggregations"][COMPOSITE_AGG]["aggregations"][
        SEQUENCE_AGG
    ]["scripted_metric"]["params"]
    assert params["bits"] == [1, 1, 1, 2]
    assert len(compiled.step_queries) == 4


def test_steps_on_different_key_fields_use_a_union_source():
    compiled = compile_rule(
        rule(
            "sequence with maxspan=1m "
            '[file where event.type == "creation"] by process.entity_id '
            '[process where event.type == "start"] by process.parent.entity_id'
        )
    )
    agg = compiled.monitor["inputs"][0]["search"]["query"]["aggregations"][COMPOSITE_AGG]
    source = agg["composite"]["sources"][0]["k0"]["terms"]
    assert source["script"]["params"]["fields"] == ["process.entity_id", "process.parent.entity_id"]
    params = agg["aggregations"][SEQUENCE_AGG]["scripted_metric"]["params"]
    assert params["kf"] == ["process.entity_id", "process.parent.entity_id"]
    assert params["upos"] == [[0, 1]]
    assert compiled.key_fields == [["process.entity_id", "process.parent.entity_id"]]


def test_optional_join_key_keeps_null_as_a_non_null_bucket_key():
    compiled = compile_rule(
        rule("sequence by ?process.entity_id with maxspan=1m [process where true] [network where true]")
    )
    sources = compiled.monitor["inputs"][0]["search"]["query"]["aggregations"][COMPOSITE_AGG]["composite"][
        "sources"
    ]
    # Real Alerting fails on a null bucket key, so a null key becomes NULL_KEY instead of missing_bucket.
    script = sources[0]["k0"]["terms"]["script"]
    assert "missing_bucket" not in sources[0]["k0"]["terms"]
    assert script["params"] == {"field": "process.entity_id", "null_key": NULL_KEY}


def test_rule_settings_flow_into_the_monitor():
    compiled = compile_rule(
        rule(
            SEQ,
            severity="critical",
            enabled=False,
            timestamp_field="event.created",
            tiebreaker_field="event.sequence",
            event_category_override="event.dataset",
        )
    )
    m = compiled.monitor
    assert m["enabled"] is False
    assert m["triggers"][0]["bucket_level_trigger"]["severity"] == "1"
    q = m["inputs"][0]["search"]["query"]
    assert "event.created" in q["query"]["bool"]["filter"][0]["range"]
    step0 = q["query"]["bool"]["should"][0]["constant_score"]["filter"]["bool"]["filter"][0]
    assert step0 == {"term": {"event.dataset": {"value": "process"}}}
    params = q["aggregations"][COMPOSITE_AGG]["aggregations"][SEQUENCE_AGG]["scripted_metric"]["params"]
    assert params["tb"] == "event.sequence" and params["ts"] == "event.created"


def test_fingerprint_is_stable_and_sensitive():
    a = compile_rule(rule(SEQ))
    b = compile_rule(rule(SEQ))
    c = compile_rule(rule(SEQ.replace("443", "8443")))
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_durations():
    assert parse_duration_ms("now-6m") == 360_000
    assert parse_duration_ms("30s") == 30_000
    with pytest.raises(ValueError):
        parse_duration_ms("soon")


# ---------------------------------------------------------------- normal form


def _as_stored(monitor: dict[str, Any]) -> dict[str, Any]:
    """What OpenSearch returns for a monitor: query re-serialised with defaults, server fields added."""
    stored = copy.deepcopy(monitor)

    def add_defaults(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in list(node.items()):
                if key in ("term", "range", "wildcard", "regexp", "prefix", "terms", "exists") and isinstance(
                    value, dict
                ):
                    value.setdefault("boost", 1.0)
                if key == "bool" and isinstance(value, dict):
                    value.setdefault("adjust_pure_negative", True)
                    value.setdefault("boost", 1.0)
                    if "minimum_should_match" in value:
                        value["minimum_should_match"] = str(value["minimum_should_match"])
                if key == "range" and isinstance(value, dict):
                    for spec in value.values():
                        if isinstance(spec, dict) and "gte" in spec:
                            spec.update(from_=spec.pop("gte"), include_lower=True, include_upper=True)
                            spec["to"] = spec.pop("lte", None)
                add_defaults(value)
        elif isinstance(node, list):
            for item in node:
                add_defaults(item)

    add_defaults(stored["inputs"])
    stored.update(last_update_time=1, enabled_time=1, schema_version=5, owner="alerting", user=None)
    return stored


def test_normal_form_ignores_server_defaults_but_not_changes():
    compiled = compile_rule(rule(SEQ))
    stored = _as_stored(compiled.monitor)
    assert normalise(stored) == normalise(compiled.monitor)
    assert same_body(stored, compiled.monitor)
    other = compile_rule(rule(SEQ.replace("443", "8443")))
    assert not same_body(stored, other.monitor)
    fp = "ui_metadata", "dac", "fingerprint"
    assert normalise(stored)[fp[0]][fp[1]][fp[2]] != normalise(other.monitor)[fp[0]][fp[1]][fp[2]]
