"""`dac mappings deploy` on real servers: idempotent, and fixture events index without mapping errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from deployer.cli import main

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FIXTURES = sorted(REPO.glob("detections/*/fixtures/*.ndjson"))


def _deploy(flag: str, url: str) -> dict:
    result = CliRunner().invoke(
        main, ["mappings", "deploy", flag, url, "--root", str(REPO), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _events() -> list[dict]:
    events = []
    for path in FIXTURES:
        for line in path.read_text().splitlines():
            if line.strip():
                events.append(json.loads(line))
    return events


@pytest.mark.parametrize("engine", ["opensearch", "elasticsearch"])
def test_mappings_deploy_is_idempotent_and_fixture_events_index(
    engine: str, request: pytest.FixtureRequest
) -> None:
    if not (REPO / "mappings" / engine).is_dir():
        pytest.skip(f"mappings/{engine} has not been generated")
    cluster = request.getfixturevalue(engine)
    flag = f"--{engine}-url"

    first = _deploy(flag, cluster.url)
    assert first["failed"] == 0
    assert first["summary"]["create"] + first["summary"]["update"] + first["summary"]["unchanged"] > 0
    expected = "opensearch" if engine == "opensearch" else "elasticsearch-core"
    assert first["templates"] == expected

    second = _deploy(flag, cluster.url)
    assert second["summary"]["create"] == 0 and second["summary"]["update"] == 0
    assert all(c["action"] == "unchanged" for c in second["changes"])

    events = _events()
    assert events, "no fixture events found under detections/*/fixtures"
    index = "logs-endpoint.events.process-dactest"
    lines = []
    for event in events:
        lines.append(json.dumps({"index": {"_index": index}}))
        lines.append(json.dumps(event))
    resp = requests.post(
        f"{cluster.url}/_bulk?refresh=true",
        data="\n".join(lines) + "\n",
        headers={"Content-Type": "application/x-ndjson"},
        timeout=60,
    )
    resp.raise_for_status()
    body = resp.json()
    errors = [item["index"]["error"] for item in body["items"] if "error" in item["index"]]
    assert errors == [], errors[:3]

    mapping = requests.get(f"{cluster.url}/{index}/_mapping/field/process.entity_id", timeout=10).json()
    field = mapping[index]["mappings"]["process.entity_id"]["mapping"]["entity_id"]
    assert field["type"] == "keyword", "the index template's ECS types must apply, not dynamic mapping"
    requests.delete(f"{cluster.url}/{index}", timeout=30)


def test_mappings_deploy_plan_writes_nothing(opensearch) -> None:
    if not (REPO / "mappings" / "opensearch").is_dir():
        pytest.skip("mappings/opensearch has not been generated")
    name = "dac-ecs-base"
    requests.delete(f"{opensearch.url}/_index_template/dac-events", timeout=10)
    result = CliRunner().invoke(
        main,
        [
            "mappings",
            "deploy",
            "--opensearch-url",
            opensearch.url,
            "--root",
            str(REPO),
            "--plan",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["applied"] is False
    actions = {c["name"]: c["action"] for c in out["changes"]}
    assert actions["dac-events"] == "create"
    assert requests.get(f"{opensearch.url}/_index_template/dac-events", timeout=10).status_code == 404
    assert name in actions
    _deploy("--opensearch-url", opensearch.url)
