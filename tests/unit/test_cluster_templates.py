"""Template plan/apply logic against an in-memory stand-in for the template endpoints."""

from __future__ import annotations

import copy
from typing import Any

from deployer.cluster.errors import ClusterError
from deployer.cluster.templates import (
    CREATE,
    UNCHANGED,
    UPDATE,
    apply_templates,
    plan_templates,
    template_hash,
    with_hash,
)

TEMPLATES = {
    "component_templates": {"c1": {"template": {"mappings": {"properties": {"a": {"type": "keyword"}}}}}},
    "index_templates": {"i1": {"index_patterns": ["x-*"], "composed_of": ["c1"], "priority": 5}},
}


class FakeCluster:
    """Stores PUT bodies and answers GETs the way the template endpoints do."""

    url = "http://fake"

    def __init__(self, fail_on: str | None = None) -> None:
        self.stored: dict[tuple[str, str], Any] = {}
        self.writes: list[str] = []
        self.fail_on = fail_on

    def request(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = ()) -> tuple[int, Any]:
        _, endpoint, name = path.split("/")
        key = "component_template" if endpoint == "_component_template" else "index_template"
        if method == "GET":
            if (key, name) not in self.stored:
                return 404, {"error": "missing"}
            return 200, {f"{key}s": [{"name": name, key: copy.deepcopy(self.stored[(key, name)])}]}
        if name == self.fail_on:
            raise ClusterError(f"PUT {path} returned 400: mapper_parsing_exception")
        self.stored[(key, name)] = copy.deepcopy(body)
        self.writes.append(name)
        return 200, {"acknowledged": True}


def test_hash_ignores_previous_hash_and_key_order() -> None:
    body = {"b": 1, "a": {"y": 2, "x": 1}}
    assert template_hash(body) == template_hash({"a": {"x": 1, "y": 2}, "b": 1})
    stamped = with_hash(body)
    assert stamped["_meta"]["dac_hash"] == template_hash(body)
    assert stamped["_meta"]["managed_by"] == "dac"
    assert template_hash(stamped) != template_hash(body)  # managed_by is part of what is stored
    assert template_hash(with_hash(stamped)) == template_hash(stamped)
    assert "_meta" not in body, "the caller's body must not be modified"


def test_first_deploy_creates_second_is_unchanged() -> None:
    cluster = FakeCluster()
    plan = apply_templates(cluster, TEMPLATES)
    assert [(c.kind, c.name, c.action) for c in plan.changes] == [
        ("component_template", "c1", CREATE),
        ("index_template", "i1", CREATE),
    ]
    assert cluster.writes == ["c1", "i1"]
    again = apply_templates(cluster, TEMPLATES)
    assert again.summary() == {CREATE: 0, UPDATE: 0, UNCHANGED: 2}
    assert cluster.writes == ["c1", "i1"], "an unchanged template must not be written again"


def test_changed_or_foreign_template_is_updated() -> None:
    cluster = FakeCluster()
    apply_templates(cluster, TEMPLATES)
    changed = copy.deepcopy(TEMPLATES)
    changed["index_templates"]["i1"]["priority"] = 6
    plan = plan_templates(cluster, changed)
    assert {c.name: c.action for c in plan.changes} == {"c1": UNCHANGED, "i1": UPDATE}
    # Written by something else (no dac hash): updated, so the next run is unchanged.
    cluster.stored[("component_template", "c1")] = TEMPLATES["component_templates"]["c1"]
    assert {c.name: c.action for c in plan_templates(cluster, TEMPLATES).changes}["c1"] == UPDATE


def test_plan_writes_nothing() -> None:
    cluster = FakeCluster()
    plan_templates(cluster, TEMPLATES)
    assert cluster.writes == []


def test_failure_stops_before_index_templates() -> None:
    cluster = FakeCluster(fail_on="c1")
    plan = apply_templates(cluster, TEMPLATES)
    assert plan.changes[0].error and "mapper_parsing_exception" in plan.changes[0].error
    assert cluster.writes == [], "index templates must not be written over a failed component"
    assert plan.changes[0].to_dict()["error"]
