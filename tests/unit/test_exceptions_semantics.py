"""How Kibana applies exception items to EQL rules (kibana-exceptions.md §5-6), offline.

Each case runs the real EQL evaluator over a few events with and without the rule's exceptions
and asserts the exact sequences that survive.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any

from deployer.ecs import registry as ecs_registry
from deployer.exceptions.filter import wildcard_regex
from deployer.exceptions.model import Catalogue, ExceptionList, ValueList
from deployer.rules.loader import load_rule_text
from deployer.testing.evaluate import Evaluator
from deployer.testing.replay import replay

_REG = ecs_registry.load()


def _types(name: str) -> str | None:
    info = _REG.get(name)
    return info.type if info else None


@dataclass
class Rule:
    rule_id: str
    kibana: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)


def _catalogue(*docs: str) -> Catalogue:
    cat = Catalogue()
    for i, text in enumerate(docs):
        file, problems = load_rule_text(textwrap.dedent(text), f"exceptions/l{i}.yaml")
        assert file is not None and not problems, problems
        if "values" in file.data:
            cat.value_lists[file.data["id"]] = ValueList(file)
        else:
            cat.lists[file.data["list_id"]] = ExceptionList(file)
    return cat


def _list(list_id: str, items: str) -> str:
    return f"list_id: {list_id}\nname: {list_id}\ndescription: test\nitems:\n" + textwrap.indent(
        textwrap.dedent(items), "  "
    )


def _rule(query: str, *list_ids: str) -> Rule:
    return Rule(
        "r1",
        {
            "name": "r1",
            "index": ["logs-*"],
            "query": query,
            "exceptions_list": [{"list_id": lid} for lid in list_ids],
        },
    )


_N = iter(range(1, 10_000))


def _ev(eid: str, **fields: Any) -> dict[str, Any]:
    """An event with a strictly later timestamp than the previous one."""
    doc: dict[str, Any] = {"@timestamp": f"2026-01-01T00:00:{next(_N) % 60:02d}.{next(_N):03d}Z"}
    doc["event"] = {"id": eid, "category": fields.pop("category", "process")}
    for dotted, value in fields.items():
        node = doc
        parts = dotted.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return doc


def _events(*docs: dict[str, Any]) -> list[dict[str, Any]]:
    for i, doc in enumerate(docs):
        doc["@timestamp"] = f"2026-01-01T00:00:{i:02d}.000Z"
    return list(docs)


def _run(
    rule: Rule, catalogue: Catalogue, events: list[dict[str, Any]], *, apply: bool = True
) -> list[list[str]]:
    ev = Evaluator([rule], exceptions=catalogue, field_types=_types, apply_exceptions=apply)
    out = []
    for outcome in ev.evaluate([rule.rule_id], events):
        for match in outcome.matches:
            out.append([e["event"]["id"] if e else None for e in match.events])
    return sorted(out)


def _both(rule: Rule, catalogue: Catalogue, events: list[dict[str, Any]]) -> tuple[list, list]:
    return _run(rule, catalogue, events, apply=False), _run(rule, catalogue, events)


ONE = 'process where process.name : "cmd.exe"'
SEQ = (
    "sequence with maxspan=1m "
    '[process where process.name : "winword.exe"] by process.entity_id '
    "[network where true] by process.entity_id"
)


# ---------------------------------------------------------------- §5.1 case and exactness


def test_match_is_case_sensitive_on_keyword_unlike_eql_colon() -> None:
    cat = _catalogue(
        _list(
            "l",
            """\
            - item_id: upper
              name: upper
              description: x
              entries: [{field: process.name, type: match, operator: included, value: CMD.EXE}]
            """,
        )
    )
    events = _events(_ev("a", process__name="cmd.exe"), _ev("b", process__name="CMD.EXE"))
    before, after = _both(_rule(ONE, "l"), cat, events)
    # EQL's `:` matches both spellings; the Query-DSL exception drops only the exact one.
    assert before == [["a"], ["b"]]
    assert after == [["a"]]


def test_match_any_drops_an_event_equal_to_any_value() -> None:
    cat = _catalogue(
        _list(
            "l",
            """\
            - item_id: hosts
              name: hosts
              description: x
              entries: [{field: host.name, type: match_any, operator: included, value: [dc-01, dc-02]}]
            """,
        )
    )
    events = _events(
        _ev("a", process__name="cmd.exe", host__name="dc-01"),
        _ev("b", process__name="cmd.exe", host__name="dc-02"),
        _ev("c", process__name="cmd.exe", host__name="ws-01"),
        _ev("d", process__name="cmd.exe", host__name="DC-01"),
    )
    assert _run(_rule(ONE, "l"), cat, events) == [["c"], ["d"]]


def test_array_field_matches_on_any_element() -> None:
    cat = _catalogue(
        _list(
            "l",
            """\
            - item_id: args
              name: args
              description: x
              entries: [{field: process.args, type: match, operator: included, value: /quiet}]
            """,
        )
    )
    events = _events(
        _ev("a", process__name="cmd.exe", process__args=["cmd.exe", "/c", "/quiet"]),
        _ev("b", process__name="cmd.exe", process__args=["cmd.exe", "/c", "/QUIET"]),
    )
    assert _run(_rule(ONE, "l"), cat, events) == [["b"]]


def test_numeric_and_ip_fields_compare_as_their_type() -> None:
    cat = _catalogue(
        _list(
            "l",
            """\
            - item_id: net
              name: net
              description: x
              entries:
                - {field: destination.port, type: match, operator: included, value: "443"}
                - {field: destination.ip, type: match, operator: included, value: 10.0.0.0/8}
            """,
        )
    )
    q = "network where true"
    events = _events(
        _ev("a", category="network", destination__port=443, destination__ip="10.1.2.3"),
        _ev("b", category="network", destination__port=443, destination__ip="192.168.1.1"),
        _ev("c", category="network", destination__port=8443, destination__ip="10.1.2.3"),
    )
    assert _run(_rule(q, "l"), cat, events) == [["b"], ["c"]]


# ---------------------------------------------------------------- wildcard


def test_wildcard_is_case_sensitive_with_backslash_escapes() -> None:
    cat = _catalogue(
        _list(
            "l",
            r"""
            - item_id: teams
              name: teams
              description: x
              entries:
                - field: process.executable
                  type: wildcard
                  operator: included
                  value: 'C:\\Users\\*\\AppData\\Local\\Microsoft\\Teams\\Update.exe'
            """,
        )
    )
    events = _events(
        _ev(
            "a",
            process__name="cmd.exe",
            process__executable=r"C:\Users\bob\AppData\Local\Microsoft\Teams\Update.exe",
        ),
        _ev(
            "b",
            process__name="cmd.exe",
            process__executable=r"c:\users\bob\appdata\local\microsoft\teams\update.exe",
        ),
        _ev("c", process__name="cmd.exe", process__executable=r"C:\Users\bob\AppData\Local\Temp\Update.exe"),
    )
    assert _run(_rule(ONE, "l"), cat, events) == [["b"], ["c"]]


def test_wildcard_pattern_translation() -> None:
    assert wildcard_regex(r"a\*b?").fullmatch("a*bc")
    assert not wildcard_regex(r"a\*b?").fullmatch("axbc")
    assert wildcard_regex("*.exe").fullmatch("x.exe")
    assert not wildcard_regex("*.exe").fullmatch("x.EXE")


# ---------------------------------------------------------------- excluded, exists, logic


def test_excluded_entry_drops_events_missing_the_field() -> None:
    cat = _catalogue(
        _list(
            "l",
            """\
            - item_id: not-svc
              name: not svc
              description: x
              entries: [{field: user.name, type: match, operator: excluded, value: svc}]
            """,
        )
    )
    events = _events(
        _ev("a", process__name="cmd.exe", user__name="svc"),
        _ev("b", process__name="cmd.exe", user__name="alice"),
        _ev("c", process__name="cmd.exe"),
    )
    # `user.name is not svc` suppresses every other user AND every event without user.name.
    assert _run(_rule(ONE, "l"), cat, events) == [["a"]]


def test_exists_and_does_not_exist() -> None:
    cat = _catalogue(
        _list(
            "l",
            """\
            - item_id: signed-and-no-parent
              name: x
              description: x
              entries:
                - {field: process.code_signature.subject_name, type: exists, operator: included}
                - {field: process.parent.name, type: exists, operator: excluded}
            """,
        )
    )
    events = _events(
        _ev("a", process__name="cmd.exe", process__code_signature__subject_name="Microsoft Corporation"),
        _ev(
            "b", process__name="cmd.exe", process__code_signature__subject_name="X", process__parent__name="p"
        ),
        _ev("c", process__name="cmd.exe", process__code_signature__subject_name=None),
    )
    # a: signed, no parent -> dropped; b has a parent; c's null subject is not a value.
    assert _run(_rule(ONE, "l"), cat, events) == [["b"], ["c"]]


def test_entries_and_items_and_lists_combine_and_or_or() -> None:
    cat = _catalogue(
        _list(
            "l1",
            """\
            - item_id: both
              name: both
              description: x
              entries:
                - {field: user.name, type: match, operator: included, value: bob}
                - {field: host.name, type: match, operator: included, value: ws-1}
            - item_id: carol
              name: carol
              description: x
              entries: [{field: user.name, type: match, operator: included, value: carol}]
            """,
        ),
        _list(
            "l2",
            """\
            - item_id: dave
              name: dave
              description: x
              entries: [{field: user.name, type: match, operator: included, value: dave}]
            """,
        ),
    )
    events = _events(
        _ev("bob-ws1", process__name="cmd.exe", user__name="bob", host__name="ws-1"),
        _ev("bob-ws2", process__name="cmd.exe", user__name="bob", host__name="ws-2"),
        _ev("carol", process__name="cmd.exe", user__name="carol"),
        _ev("dave", process__name="cmd.exe", user__name="dave"),
    )
    assert _run(_rule(ONE, "l1", "l2"), cat, events) == [["bob-ws2"]]
    assert _run(_rule(ONE, "l2"), cat, events) == [["bob-ws1"], ["bob-ws2"], ["carol"]]


# ---------------------------------------------------------------- os_types, expiry, nested, lists


def test_os_types_apply_only_to_events_with_host_os_type_or_name() -> None:
    cat = _catalogue(
        _list(
            "l",
            """\
            - item_id: win
              name: win
              description: x
              os_types: [windows]
              entries: [{field: user.name, type: match, operator: included, value: bob}]
            """,
        )
    )
    events = _events(
        _ev("type", process__name="cmd.exe", user__name="bob", host__os__type="windows"),
        _ev("name", process__name="cmd.exe", user__name="bob", host__os__name="Windows"),
        _ev("linux", process__name="cmd.exe", user__name="bob", host__os__type="linux"),
        _ev("none", process__name="cmd.exe", user__name="bob"),
    )
    # host.os.name goes through the lower-casing `caseless` multi-field; no OS field: never excepted.
    assert _run(_rule(ONE, "l"), cat, events) == [["linux"], ["none"]]


def test_expired_items_are_ignored() -> None:
    cat = _catalogue(
        _list(
            "l",
            """\
            - item_id: old
              name: old
              description: x
              expire_time: "2020-01-01T00:00:00Z"
              entries: [{field: user.name, type: match, operator: included, value: bob}]
            - item_id: live
              name: live
              description: x
              expire_time: "2999-01-01T00:00:00Z"
              entries: [{field: user.name, type: match, operator: included, value: carol}]
            """,
        )
    )
    events = _events(
        _ev("bob", process__name="cmd.exe", user__name="bob"),
        _ev("carol", process__name="cmd.exe", user__name="carol"),
    )
    assert _run(_rule(ONE, "l"), cat, events) == [["bob"]]


def test_nested_entries_must_hold_on_the_same_object() -> None:
    cat = _catalogue(
        _list(
            "l",
            """\
            - item_id: upx
              name: upx
              description: x
              entries:
                - field: file.pe.sections
                  type: nested
                  entries:
                    - {field: name, type: match, operator: included, value: UPX0}
                    - {field: entropy, type: match, operator: included, value: "7"}
            """,
        )
    )
    q = "file where true"
    events = _events(
        _ev(
            "same",
            category="file",
            file__pe__sections=[{"name": "UPX0", "entropy": 7}, {"name": "x", "entropy": 1}],
        ),
        _ev(
            "split",
            category="file",
            file__pe__sections=[{"name": "UPX0", "entropy": 1}, {"name": "x", "entropy": 7}],
        ),
    )
    assert _run(_rule(q, "l"), cat, events) == [["split"]]


def test_value_list_entries_and_unprocessed_types() -> None:
    cat = _catalogue(
        _list(
            "l",
            """\
            - item_id: by-ip
              name: by ip
              description: x
              entries: [{field: destination.ip, type: list, operator: included, list: {id: nets, type: ip_range}}]
            - item_id: by-text
              name: by text
              description: x
              entries: [{field: user.name, type: list, operator: included, list: {id: texts, type: text}}]
            """,
        ),
        "id: nets\ntype: ip_range\nname: nets\nvalues: ['10.0.0.0/8', '192.168.1.10-192.168.1.20']\n",
        "id: texts\ntype: text\nname: texts\nvalues: [bob]\n",
    )
    q = "network where true"
    events = _events(
        _ev("cidr", category="network", destination__ip="10.9.9.9", user__name="bob"),
        _ev("range", category="network", destination__ip="192.168.1.15", user__name="bob"),
        _ev("out", category="network", destination__ip="192.168.1.21", user__name="bob"),
    )
    # The text value list is "unprocessed": Kibana warns and does not apply it to EQL rules.
    assert _run(_rule(q, "l"), cat, events) == [["out"]]


# ---------------------------------------------------------------- §6 sequences


def _seq_events() -> list[dict[str, Any]]:
    return _events(
        _ev("word", process__name="winword.exe", process__entity_id="p1"),
        _ev(
            "net-ms", category="network", process__entity_id="p1", destination__domain="update.microsoft.com"
        ),
        _ev("net-evil", category="network", process__entity_id="p1", destination__domain="evil.example"),
    )


_MS = _list(
    "ms",
    """\
    - item_id: ms-egress
      name: Microsoft update egress
      description: x
      entries: [{field: destination.domain, type: match, operator: included, value: update.microsoft.com}]
    """,
)


def test_sequence_completes_through_another_non_excepted_event() -> None:
    before, after = _both(_rule(SEQ, "ms"), _catalogue(_MS), _seq_events())
    assert before == [["word", "net-ms"]]
    # The excepted step event is gone before EQL runs; the later one completes the sequence.
    assert after == [["word", "net-evil"]]


def test_sequence_suppressed_when_every_completion_needs_an_excepted_event() -> None:
    events = _seq_events()[:2]
    before, after = _both(_rule(SEQ, "ms"), _catalogue(_MS), events)
    assert before == [["word", "net-ms"]]
    assert after == []


def test_item_spanning_fields_of_two_steps_suppresses_nothing() -> None:
    cat = _catalogue(
        _list(
            "l",
            """\
            - item_id: cross
              name: cross
              description: x
              entries:
                - {field: process.name, type: match, operator: included, value: winword.exe}
                - {field: destination.domain, type: match, operator: included, value: update.microsoft.com}
            """,
        )
    )
    before, after = _both(_rule(SEQ, "l"), cat, _seq_events()[:2])
    assert before == after == [["word", "net-ms"]]


def test_excepting_the_missing_event_creates_a_match() -> None:
    q = (
        "sequence with maxspan=1m "
        '[process where process.name : "winword.exe"] by process.entity_id '
        "![network where true] by process.entity_id "
        '[process where process.name : "cmd.exe"] by process.entity_id'
    )
    events = _events(
        _ev("word", process__name="winword.exe", process__entity_id="p1"),
        _ev(
            "net-ms", category="network", process__entity_id="p1", destination__domain="update.microsoft.com"
        ),
        _ev("cmd", process__name="cmd.exe", process__entity_id="p1"),
    )
    before, after = _both(_rule(q, "ms"), _catalogue(_MS), events)
    assert before == []
    # The network event no longer counts as present, so the missing-event step is satisfied.
    assert after == [["word", None, "cmd"]]


def test_worked_example_6_1() -> None:
    cat = _catalogue(
        _list(
            "dac-an1314",
            r"""
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
            """,
        )
    )
    exe = r"C:\Users\amy\AppData\Local\Microsoft\Teams\Update.exe"
    sig = "Microsoft Corporation"
    events = _events(
        _ev(
            "ws",
            process__name="cmd.exe",
            process__executable=exe,
            process__code_signature__subject_name=sig,
            host__name="ws-7",
        ),
        _ev(
            "nohost",
            process__name="cmd.exe",
            process__executable=exe,
            process__code_signature__subject_name=sig,
        ),
        _ev(
            "dc",
            process__name="cmd.exe",
            process__executable=exe,
            process__code_signature__subject_name=sig,
            host__name="dc-01",
        ),
        _ev("unsigned", process__name="cmd.exe", process__executable=exe, host__name="ws-7"),
    )
    assert _run(_rule(ONE, "dac-an1314"), cat, events) == [["dc"], ["unsigned"]]


def test_streaming_replay_applies_the_same_pre_filter(tmp_path) -> None:  # noqa: ANN001
    import json

    from deployer.testing.stream import replay_file

    rule = _rule(SEQ, "ms")
    cat = _catalogue(_MS)
    path = tmp_path / "e.ndjson"
    path.write_text("".join(json.dumps(e) + "\n" for e in _seq_events()))
    streamed = [r["event_ids"] for r in replay_file([rule], str(path), exceptions=cat, field_types=_types)]
    batch = [r["event_ids"] for r in replay([rule], _seq_events(), exceptions=cat)]
    assert streamed == batch == [["word", "net-evil"]]


def test_indexed_lookup_agrees_with_trying_every_item() -> None:
    import random

    from deployer.exceptions.filter import for_rule

    items = "".join(
        textwrap.dedent(
            f"""\
        - item_id: m{n}
          name: m
          description: x
          entries: [{{field: user.name, type: match_any, operator: included, value: [u{n}, v{n}]}}, {{field: host.name, type: match, operator: excluded, value: h{n % 3}}}]
        - item_id: w{n}
          name: w
          description: x
          entries: [{{field: process.executable, type: wildcard, operator: included, value: 'C:\\\\d{n}\\\\*.exe'}}]
        - item_id: e{n}
          name: e
          description: x
          entries: [{{field: process.args, type: exists, operator: included}}, {{field: user.name, type: match, operator: excluded, value: u{n}}}]
        """
        )
        for n in range(6)
    )
    cat = _catalogue(_list("l", items))
    compiled = for_rule(_rule(ONE, "l"), cat, _types)
    index = compiled._index()
    assert set(index.exact) == {"user.name"} and set(index.prefixes) == {"process.executable"} and len(index.rest) == 6
    rnd = random.Random(3)
    outcomes = set()
    for _ in range(500):
        doc: dict[str, Any] = {}
        if rnd.random() < 0.7:
            doc["user"] = {"name": rnd.choice(["u1", "v2", "u5", "x", "U1"])}
        if rnd.random() < 0.7:
            doc["host"] = {"name": rnd.choice(["h0", "h1", "h2"])}
        if rnd.random() < 0.5:
            doc["process"] = {"executable": rnd.choice([r"C:\d1\a.exe", r"C:\d7\a.exe", r"c:\d1\a.exe", r"C:\d2\x\b.exe"])}
            if rnd.random() < 0.5:
                doc["process"]["args"] = ["a"]
        brute = any(item.matches(doc) for item in compiled.items)
        assert compiled.excepts(doc) == brute, doc
        outcomes.add(brute)
    assert outcomes == {True, False}
