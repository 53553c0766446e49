"""Field packs: ECS plus the packs of a rule's own index patterns; one warning where no pack applies."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deployer.cli import main
from deployer.config import ConfigError, load_config
from deployer.ecs import registry
from deployer.ecs.packs import builtin_names, covers, load_pack, packs_for

REPO = Path(__file__).resolve().parents[2]
VALID_DIR = REPO / "tests" / "data" / "rules" / "valid"
SAMPLE = "office_child_network.yaml"
ENDPOINT_INDEX = "index: [logs-endpoint.events.process-*, logs-endpoint.events.network-*]"


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    shutil.copytree(VALID_DIR, tmp_path / "detections")
    shutil.copy(REPO / "extra_fields.yaml", tmp_path / "extra_fields.yaml")
    (tmp_path / "dac.yaml").write_text("validation:\n  extra_fields: extra_fields.yaml\n")
    return tmp_path


def _edit(repo: Path, old: str, new: str) -> None:
    path = repo / "detections" / SAMPLE
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _validate(repo: Path) -> tuple[int, list[dict[str, Any]], str]:
    import json

    result = CliRunner().invoke(
        main, ["validate", "--format", "json", "--config", str(repo / "dac.yaml"), str(repo / "detections")]
    )
    findings = json.loads(result.stdout) if result.stdout.strip().startswith("[") else []
    return result.exit_code, findings, result.stdout + result.stderr


DEFEND_FIELD = 'process.Ext.session_info.logon_type == "Interactive"'  # in the pack, not extra_fields.yaml


def test_defend_field_known_on_endpoint_indices_by_default(repo: Path) -> None:
    _edit(repo, 'process.name : "mshta.exe"', f'process.name : "mshta.exe" and {DEFEND_FIELD}')
    code, findings, _ = _validate(repo)
    assert (code, findings) == (0, [])


def test_defend_field_is_unknown_where_another_pack_applies(repo: Path) -> None:
    (repo / "win.yaml").write_text("winlog.event_data.TargetUserName: keyword\n")
    (repo / "dac.yaml").write_text(
        "validation:\n  extra_fields: extra_fields.yaml\n  field_packs:\n    'winlogbeat-*': win.yaml\n"
    )
    _edit(repo, ENDPOINT_INDEX, "index: [winlogbeat-*]")
    _edit(repo, 'process.name : "mshta.exe"', f'process.name : "mshta.exe" and {DEFEND_FIELD}')
    code, findings, _ = _validate(repo)
    assert code == 1
    assert [(f["code"], f["severity"]) for f in findings] == [("unknown-field", "error")]
    assert "not in ECS 9.3.0, the extra fields or field pack win.yaml" in findings[0]["message"]


def test_uncovered_index_pattern_gives_one_warning_not_one_per_field(repo: Path) -> None:
    _edit(repo, ENDPOINT_INDEX, "index: [winlogbeat-*, logs-endpoint.events.process-*]")
    _edit(
        repo,
        'process.name : "mshta.exe"',
        'process.name : "mshta.exe" and winlog.event_data.TargetUserName == "x" and winlog.logon.type == "y"'
        f" and {DEFEND_FIELD}",
    )
    code, findings, _ = _validate(repo)
    assert code == 0
    assert [(f["code"], f["severity"]) for f in findings] == [("field-pack", "warning")]
    message = findings[0]["message"]
    assert "winlogbeat-*" in message and "2 field(s)" in message
    assert "winlog.event_data.TargetUserName, winlog.logon.type" in message
    assert "logon_type" not in message  # known through the Defend pack of the other pattern


@pytest.mark.parametrize(
    "typo", ["process.nmae", "proces.name", "process.parent.nme", "process.Ext.token.integrity_level_nmae"]
)
def test_typo_is_an_error_even_without_a_pack(repo: Path, typo: str) -> None:
    _edit(repo, ENDPOINT_INDEX, "index: [winlogbeat-*, logs-endpoint.events.process-*]")
    _edit(repo, 'process.name : "mshta.exe"', f'{typo} : "mshta.exe"')
    code, findings, _ = _validate(repo)
    assert code == 1
    errors = [f for f in findings if f["severity"] == "error"]
    assert [f["code"] for f in errors] == ["unknown-field"]
    assert typo in errors[0]["message"] and "did you mean" in errors[0]["hint"]


def test_field_settings_use_the_rule_packs(repo: Path) -> None:
    _edit(repo, "field_names: [host.name,", "field_names: [process.Ext.session_info.logon_type, host.name,")
    assert _validate(repo)[:2] == (0, [])


def test_pack_file_with_a_wrong_type_is_an_environment_error(repo: Path) -> None:
    (repo / "win.yaml").write_text("winlog.event_data.TargetUserName: keyword\nwinlog.logon.type: strng\n")
    (repo / "dac.yaml").write_text(
        "validation:\n  extra_fields: extra_fields.yaml\n  field_packs:\n    'winlogbeat-*': [win.yaml]\n"
    )
    code, _, output = _validate(repo)
    assert code == 2 and "win.yaml:2" in output and "unknown type 'strng'" in output


def test_pack_file_with_a_field_twice_is_refused(repo: Path) -> None:
    (repo / "win.yaml").write_text("winlog.logon.type: keyword\nwinlog.logon.type: long\n")
    (repo / "dac.yaml").write_text(
        "validation:\n  extra_fields: extra_fields.yaml\n  field_packs:\n    'winlogbeat-*': [win.yaml]\n"
    )
    code, _, output = _validate(repo)
    assert code == 2 and "win.yaml:2" in output and "listed twice" in output


@pytest.mark.parametrize(
    ("ref", "needle"), [("missing.yaml", "field pack file not found"), ("nope", "not shipped")]
)
def test_missing_pack_is_an_environment_error(repo: Path, ref: str, needle: str) -> None:
    (repo / "dac.yaml").write_text(
        f"validation:\n  extra_fields: extra_fields.yaml\n  field_packs:\n    'winlogbeat-*': [{ref}]\n"
    )
    code, _, output = _validate(repo)
    assert code == 2 and needle in output


def test_config_rejects_a_malformed_mapping(tmp_path: Path) -> None:
    path = tmp_path / "dac.yaml"
    path.write_text("validation:\n  field_packs: [elastic-defend]\n")
    with pytest.raises(ConfigError, match="dac.yaml:2: validation.field_packs: must map index patterns"):
        load_config(path)


def test_empty_mapping_disables_the_default(tmp_path: Path) -> None:
    path = tmp_path / "dac.yaml"
    path.write_text("validation:\n  field_packs: {}\n")
    assert load_config(path).validation.field_packs == ()
    path.write_text("validation: {}\n")
    assert load_config(path).validation.field_packs == (("logs-endpoint.*", ("elastic-defend",)),)


def test_pattern_coverage() -> None:
    assert covers("logs-endpoint.*", "logs-endpoint.events.process-*")
    assert covers("logs-endpoint.*", "logs-endpoint.events.process*")
    assert not covers("logs-endpoint.*", "logs-*")
    mapping = (("logs-endpoint.*", ("elastic-defend",)),)
    assert packs_for(["logs-endpoint.events.file-*", "winlogbeat-*"], mapping) == (
        ("elastic-defend",),
        ("winlogbeat-*",),
    )
    # Alerts indices carry their source events' fields: every pack applies, none is missing.
    assert packs_for([".alerts-security.alerts-default"], mapping) == (("elastic-defend",), ())


def test_near_miss() -> None:
    reg = registry.load()
    assert reg.near_miss("process.nmae") == "process.name"
    assert reg.near_miss("proces.name") == "process.name"
    assert reg.near_miss("process.namex") == "process.name"
    assert reg.near_miss("winlog.event_data.TargetUserName") is None
    assert reg.near_miss("process.name") is None


def _gen() -> Any:
    spec = importlib.util.spec_from_file_location("gen_field_pack", REPO / "scripts" / "gen_field_pack.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("h\na.b\tkeyword\na.b\tlong\n", "x.tsv:3: a.b is 'long' here but 'keyword' on line 2"),
        ("h\na.b\tstrng\n", "x.tsv:2: a.b: unknown type 'strng'"),
        ("h\n\tkeyword\n", "x.tsv:2: expected 'name<TAB>type'"),
        ("h\na.b\n", "x.tsv:2: expected 'name<TAB>type'"),
        ("h\n", "no fields"),
    ],
)
def test_generator_refuses_bad_data_and_writes_nothing(
    tmp_path: Path, text: str, needle: str, capsys: Any
) -> None:
    source = tmp_path / "x.tsv"
    source.write_text(text)
    out = tmp_path / "pack.json"
    assert _gen().main(["--tsv", str(source), "--out", str(out)]) == 2
    assert needle in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tsv"]


def test_shipped_defend_pack_is_generated_from_shared(shared_dir: Path) -> None:
    gen = _gen()
    source = shared_dir / "fields" / "elastic-defend.tsv"
    fields = gen.parse_tsv(source.read_text(encoding="utf-8"), str(source))
    expected = gen.render("elastic-defend", gen.DEFAULT_DESCRIPTION, fields)
    assert (REPO / "deployer" / "ecs" / "packs" / "elastic-defend.json").read_text() == expected
    assert "elastic-defend" in builtin_names()
    pack = load_pack("elastic-defend", REPO)
    assert pack.fields["file.Ext.original.extension"].type == "keyword"
    assert len(pack.fields) == 2450
