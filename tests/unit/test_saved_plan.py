"""Unit tests for saved plans: repository digest, integrity, staleness and the Markdown rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployer.targets.plan import build_plan
from deployer.targets.plan_render import render_markdown
from deployer.targets.saved_plan import (
    PlanFileError,
    SavedPlan,
    build_saved_plan,
    read_saved_plan,
    repository_changes,
    repository_files,
    staleness,
)


def _tree(root: Path) -> Path:
    det = root / "detections" / "windows"
    (det / "fixtures").mkdir(parents=True)
    (det / "exceptions").mkdir()
    (det / "a.yaml").write_text("rule_id: a\n")
    (det / "exceptions" / "allow.yaml").write_text("list_id: allow\n")
    (det / "fixtures" / "a.ndjson").write_text("{}\n")
    (det / "fixtures" / "events.yaml").write_text("x: 1\n")
    return root / "detections"


def test_repository_digest_covers_rule_and_exception_files_not_fixtures(tmp_path: Path):
    det = _tree(tmp_path)
    (tmp_path / "dac.yaml").write_text("targets: {}\n")
    files = repository_files([det], tmp_path, [tmp_path / "dac.yaml"])
    assert sorted(files) == [
        "dac.yaml",
        "detections/windows/a.yaml",
        "detections/windows/exceptions/allow.yaml",
    ]
    (det / "windows" / "exceptions" / "allow.yaml").write_text("list_id: allow\nname: changed\n")
    (det / "windows" / "fixtures" / "a.ndjson").write_text("{}\n{}\n")
    (det / "windows" / "a.yaml").unlink()
    now = repository_files([det], tmp_path, [tmp_path / "dac.yaml"])
    assert repository_changes(files, now) == [
        "detections/windows/a.yaml: removed since the plan",
        "detections/windows/exceptions/allow.yaml: changed since the plan",
    ]


def _rule(rid: str, **kw):
    return {"rule_id": rid, "name": f"Rule {rid}", "tags": ["managed"], **kw}


def _saved(tmp_path: Path) -> SavedPlan:
    det = _tree(tmp_path)
    desired = {"a": _rule("a", severity="high"), "b": _rule("b")}
    current = {"a": _rule("a", severity="low")}
    plan = build_plan(desired, current, owned=lambda b: "managed" in b["tags"], target="kibana x")
    return build_saved_plan(
        plan,
        kind="kibana",
        target_name="staging",
        url="https://kibana.example:5601",
        space="secops",
        payloads=desired,
        observed={"a": {"id": "uuid-a", "revision": 4, "updated_at": "t1", "digest": "sha256:1"}},
        paths=[det],
        root=tmp_path,
        config_file=None,
    )


def test_round_trip_and_integrity(tmp_path: Path):
    saved = _saved(tmp_path)
    path = tmp_path / "plan.json"
    saved.write(path)
    back = read_saved_plan(path)
    assert back.doc == json.loads(path.read_text())
    assert [c["action"] for c in back.changes] == ["create", "update"]
    doc = json.loads(path.read_text())
    doc["changes"][0]["desired"]["name"] = "tampered"
    path.write_text(json.dumps(doc))
    with pytest.raises(PlanFileError, match="integrity digest does not match"):
        read_saved_plan(path)
    path.write_text('{"format": "dac-plan/1", "changes": [')
    with pytest.raises(PlanFileError, match=r"plan.json:1:\d+: the plan file is not valid JSON"):
        read_saved_plan(path)
    path.write_text('{"format": "something-else"}')
    with pytest.raises(PlanFileError, match="is not a dac-plan/1 plan file"):
        read_saved_plan(path)


def test_staleness_names_each_moved_token(tmp_path: Path):
    saved = _saved(tmp_path)
    same = {"a": {"id": "uuid-a", "revision": 4, "updated_at": "t1", "digest": "sha256:1"}, "b": None}
    assert staleness(saved, same) == []
    moved = {"a": {"id": "uuid-a", "revision": 5, "updated_at": "t2", "digest": "sha256:2"}, "b": {"id": "x"}}
    assert staleness(saved, moved) == [
        "rule b: the plan creates it, but it now exists in the target",
        "rule a: changed in the target since the plan (revision 4 -> 5, updated_at t1 -> t2)",
    ]
    only_content = {"a": {"id": "uuid-a", "revision": 4, "updated_at": "t1", "digest": "sha256:9"}, "b": None}
    assert staleness(saved, only_content) == ["rule a: changed in the target since the plan (its content)"]
    assert staleness(saved, {"a": None, "b": None}) == [
        "rule a: the plan updates it, but it is gone from the target"
    ]


def test_markdown_escapes_table_cells(tmp_path: Path):
    saved = _saved(tmp_path)
    saved.doc["changes"][1]["name"] = "a | b"
    saved.doc["changes"][1]["fields"] = [{"path": "query", "before": "x | `y`", "after": "z"}]
    md = render_markdown(saved)
    assert "| ~ update | rule | `a` | a \\| b | `query` |" in md
    assert '| `query` | `"x \\| \'y\'"` | `"z"` |' in md
    assert "space `secops`" in md


def test_markdown_folds_each_update_diff_and_each_create_body(tmp_path: Path):
    md = render_markdown(_saved(tmp_path))
    assert "<details><summary>~ <code>a</code> Rule a (1 field)</summary>" in md
    assert '| `severity` | `"low"` | `"high"` |' in md
    assert "<details><summary>+ <code>b</code> Rule b (new)</summary>" in md
    assert '| `rule_id` | `"b"` |' in md and '| `tags` | `["managed"]` |' in md


def test_markdown_stays_under_githubs_comment_limit(tmp_path: Path):
    saved = _saved(tmp_path)
    big = {"rule_id": "x", "query": "q" * 70, **{f"field_{i}": "v" * 70 for i in range(40)}}
    saved.doc["changes"] = [
        {
            "kind": "rule",
            "id": f"r{i:04d}",
            "action": "create",
            "name": f"R {i}",
            "fields": [],
            "desired": big,
        }
        for i in range(1000)
    ]
    md = render_markdown(saved)
    assert len(md) < 65_536
    assert "… and 800 more (see the plan artifact)." in md  # table rows beyond 200
    assert "more (see the plan artifact)." in md.split("</details>")[-1]
