"""`dac fields pull` on real Elasticsearch and OpenSearch: a pack from `_field_caps` that validation uses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from deployer.cli import main
from deployer.ecs.packs import load_pack

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VALID_DIR = REPO / "tests" / "data" / "rules" / "valid"
MAPPING = {
    "properties": {
        "@timestamp": {"type": "date"},
        "event": {"properties": {"category": {"type": "keyword"}, "type": {"type": "keyword"}}},
        "process": {"properties": {"name": {"type": "keyword"}, "pid": {"type": "long"}}},
        "winlog": {
            "properties": {
                "event_data": {"properties": {"TargetUserName": {"type": "keyword"}}},
                "logon": {"properties": {"id": {"type": "keyword"}}},
            }
        },
    }
}


@pytest.fixture(params=["elasticsearch", "opensearch"])
def cluster_url(request: pytest.FixtureRequest) -> str:
    cluster = request.getfixturevalue(request.param)
    index = "dacpack-winlog-000001"
    requests.delete(f"{cluster.url}/{index}", timeout=30)
    resp = requests.put(f"{cluster.url}/{index}", json={"mappings": MAPPING}, timeout=60)
    assert resp.status_code == 200, resp.text
    return cluster.url


def _pull(url: str, out: Path, index: str = "dacpack-winlog-*") -> tuple[int, str]:
    result = CliRunner().invoke(main, ["fields", "pull", "--url", url, "--index", index, "--out", str(out)])
    return result.exit_code, result.stdout + result.stderr


def test_pull_writes_a_pack_that_validation_uses(cluster_url: str, tmp_path: Path) -> None:
    out = tmp_path / "packs" / "winlog.yaml"
    code, output = _pull(cluster_url, out)
    assert code == 0, output
    assert "from 1 indices matching 'dacpack-winlog-*'" in output
    pack = load_pack("packs/winlog.yaml", tmp_path)
    assert pack.fields["winlog.event_data.TargetUserName"].type == "keyword"
    assert pack.fields["process.pid"].type == "long"
    assert "_id" not in pack.fields and "_index" not in pack.fields

    shutil.copytree(VALID_DIR, tmp_path / "detections")
    shutil.copy(REPO / "extra_fields.yaml", tmp_path / "extra_fields.yaml")
    rule = tmp_path / "detections" / "office_child_network.yaml"
    rule.write_text(
        rule.read_text()
        .replace(
            "index: [logs-endpoint.events.process-*, logs-endpoint.events.network-*]",
            "index: [dacpack-winlog-*]",
        )
        .replace(
            'process.name : "mshta.exe"',
            'process.name : "mshta.exe" and winlog.event_data.TargetUserName == "bob"',
        )
    )
    config = tmp_path / "dac.yaml"

    def validate() -> list[dict]:
        result = CliRunner().invoke(
            main, ["validate", "--format", "json", "--config", str(config), str(tmp_path / "detections")]
        )
        return json.loads(result.stdout)

    config.write_text("validation:\n  extra_fields: extra_fields.yaml\n  field_packs: {}\n")
    assert [f["code"] for f in validate()] == ["field-pack"]  # no pack: one warning for the rule
    config.write_text(
        "validation:\n  extra_fields: extra_fields.yaml\n  field_packs:\n    'dacpack-winlog-*': packs/winlog.yaml\n"
    )
    assert validate() == []
    rule.write_text(rule.read_text().replace("TargetUserName ==", "TargetUserNam =="))
    assert [(f["code"], f["severity"]) for f in validate()] == [("unknown-field", "error")]


def test_pattern_matching_nothing_writes_nothing(cluster_url: str, tmp_path: Path) -> None:
    out = tmp_path / "pack.yaml"
    code, output = _pull(cluster_url, out, "dacpack-nothing-*")
    assert code == 2 and "matches no index" in output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_unreachable_cluster_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "pack.yaml"
    code, output = _pull("http://127.0.0.1:9", out)
    assert code == 2 and "cannot reach" in output and not out.exists()
