"""Unit tests for the target-agnostic planner."""

from __future__ import annotations

import json

from deployer.targets.plan import (
    CONFLICT,
    CREATE,
    DELETE,
    ORPHAN,
    UNCHANGED,
    UPDATE,
    build_plan,
    diff_fields,
)


def _owned(body):
    return "managed" in body.get("tags", [])


def _rule(rule_id, **kw):
    body = {"rule_id": rule_id, "name": f"Rule {rule_id}", "query": "process where true", "tags": ["managed"]}
    body.update(kw)
    return body


def test_create_update_unchanged_orphan():
    desired = {"a": _rule("a"), "b": _rule("b", query="process where false"), "c": _rule("c")}
    current = {"b": _rule("b"), "c": _rule("c"), "d": _rule("d")}
    plan = build_plan(desired, current, owned=_owned)
    actions = {c.rule_id: c.action for c in plan.changes}
    assert actions == {"a": CREATE, "b": UPDATE, "c": UNCHANGED, "d": ORPHAN}
    (upd,) = plan.of(UPDATE)
    assert [(f.path, f.before, f.after) for f in upd.fields] == [
        ("query", "process where true", "process where false")
    ]
    assert plan.has_changes
    assert plan.summary()[ORPHAN] == 1


def test_prune_deletes_owned_only():
    current = {"d": _rule("d"), "e": _rule("e", tags=["someone-else"])}
    plan = build_plan({}, current, owned=_owned, prune=True)
    assert [(c.rule_id, c.action) for c in plan.changes] == [("d", DELETE)]


def test_conflict_refused_then_adopted():
    desired = {"x": _rule("x")}
    current = {"x": _rule("x", tags=["prebuilt"])}
    plan = build_plan(desired, current, owned=_owned)
    (c,) = plan.changes
    assert c.action == CONFLICT
    assert "--adopt" in c.hint
    assert not plan.has_changes
    adopted = build_plan(desired, current, owned=_owned, adopt=True)
    (u,) = adopted.changes
    assert u.action == UPDATE
    assert u.changed_paths() == {"tags"}


def test_nested_diff_and_ignore():
    before = {"meta": {"managed_by": "dac", "source_path": "a.yaml"}, "risk_score": 21}
    after = {"meta": {"managed_by": "dac", "source_path": "b.yaml"}, "risk_score": 21.0}
    assert [f.path for f in diff_fields(before, after)] == ["meta.source_path"]
    assert diff_fields(before, after, ignore={"meta.source_path"}) == []
    # A bool is not the number 1.
    assert diff_fields({"x": True}, {"x": 1})


def test_missing_fields_reported_as_absent():
    changes = diff_fields({"note": "n"}, {"setup": "s"})
    assert {(f.path, f.before, f.after) for f in changes} == {("note", "n", None), ("setup", None, "s")}


def test_rendering():
    desired = {"a": _rule("a"), "b": _rule("b", query="x")}
    current = {"b": _rule("b")}
    plan = build_plan(desired, current, owned=_owned, target="staging")
    text = plan.render_text()
    assert "+ create" in text and "~ update" in text and "query:" in text
    assert "Plan: 1 to create, 1 to update, 0 to delete, 0 unchanged." in text
    data = json.loads(plan.render_json())
    assert data["summary"][CREATE] == 1
    assert data["changes"][1]["fields"][0]["path"] == "query"
    empty = build_plan({"b": _rule("b")}, {"b": _rule("b")}, owned=_owned)
    assert "No changes" in empty.render_text()
    assert not empty.has_changes
