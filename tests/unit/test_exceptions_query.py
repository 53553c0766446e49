"""Exception items as Kibana's Query-DSL clause (kibana-exceptions.md §5, §6.1), and in a monitor's search."""

from __future__ import annotations

import textwrap

from deployer.exceptions.model import Catalogue, ExceptionList
from deployer.exceptions.query import exception_query
from deployer.rules.loader import load_rule_text
from deployer.targets.opensearch_compile import compile_rule

WORKED = r"""
list_id: dac-an1314
name: n
description: d
items:
  - item_id: teams-updater
    name: Teams updater
    description: signed updater
    os_types: []
    entries:
      - field: process.executable
        type: wildcard
        operator: included
        value: 'C:\\Users\\*\\AppData\\Local\\Microsoft\\Teams\\Update.exe'
      - {field: process.code_signature.subject_name, type: match, operator: included, value: Microsoft Corporation}
      - {field: host.name, type: match_any, operator: excluded, value: [dc-01, dc-02]}
  - item_id: old
    name: expired
    description: d
    expire_time: "2020-01-01T00:00:00Z"
    entries: [{field: user.name, type: match, operator: included, value: x}]
"""


def _catalogue(text: str) -> Catalogue:
    file, problems = load_rule_text(textwrap.dedent(text), "exceptions/l.yaml")
    assert file is not None and not problems
    return Catalogue(lists={file.data["list_id"]: ExceptionList(file)})


def _ms(field: str, value: str) -> dict:
    return {"bool": {"minimum_should_match": 1, "should": [{"match_phrase": {field: value}}]}}


def test_worked_example_6_1_clause() -> None:
    query = exception_query({"exceptions_list": [{"list_id": "dac-an1314"}]}, _catalogue(WORKED))
    # The expired item is left out; the live one is Kibana's clause, entry for entry.
    assert query == {
        "bool": {
            "should": [
                {
                    "bool": {
                        "filter": [
                            {
                                "bool": {
                                    "filter": {
                                        "wildcard": {
                                            "process.executable": "C:\\\\Users\\\\*\\\\AppData\\\\Local\\\\Microsoft\\\\Teams\\\\Update.exe"
                                        }
                                    }
                                }
                            },
                            _ms("process.code_signature.subject_name", "Microsoft Corporation"),
                            {
                                "bool": {
                                    "must_not": {
                                        "bool": {
                                            "minimum_should_match": 1,
                                            "should": [_ms("host.name", "dc-01"), _ms("host.name", "dc-02")],
                                        }
                                    }
                                }
                            },
                        ]
                    }
                }
            ]
        }
    }


def test_os_types_give_two_variants_per_os() -> None:
    cat = _catalogue(
        "list_id: l\nname: n\ndescription: d\nitems:\n  - item_id: i\n    name: n\n    description: d\n"
        "    os_types: [windows]\n    entries: [{field: user.name, type: match, operator: included, value: bob}]\n"
    )
    query = exception_query({"exceptions_list": [{"list_id": "l"}]}, cat)
    assert query == {
        "bool": {
            "should": [
                {"bool": {"filter": [_ms("host.os.type", "windows"), _ms("user.name", "bob")]}},
                {"bool": {"filter": [_ms("host.os.name.caseless", "windows"), _ms("user.name", "bob")]}},
            ]
        }
    }


def test_monitor_search_drops_excepted_events_in_must_not() -> None:
    rule = {
        "rule_id": "r",
        "name": "r",
        "type": "eql",
        "language": "eql",
        "query": "sequence by process.entity_id with maxspan=1m [process where true] [network where true]",
        "index": ["logs-*"],
        "exceptions_list": [{"list_id": "dac-an1314"}],
    }
    compiled = compile_rule(rule, exceptions=_catalogue(WORKED))
    bool_query = compiled.monitor["inputs"][0]["search"]["query"]["query"]["bool"]
    assert bool_query["must_not"] == [exception_query(rule, _catalogue(WORKED))]
    plain = compile_rule({**rule, "exceptions_list": []}).monitor["inputs"][0]["search"]["query"]["query"]["bool"]
    assert "must_not" not in plain
