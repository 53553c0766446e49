"""``validate()``: every check gives a precise finding at the right file line and column."""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import pytest

from deployer.config import Config, ValidationConfig
from deployer.rules.findings import ERROR, WARNING, Finding
from deployer.rules.validate import validate

REPO = Path(__file__).resolve().parents[2]
VALID_DIR = REPO / "tests" / "data" / "rules" / "valid"
SAMPLE = "office_child_network.yaml"


def _config(root: Path, **overrides: object) -> Config:
    policy = ValidationConfig(extra_fields=REPO / "extra_fields.yaml", **overrides)  # type: ignore[arg-type]
    return Config(path=None, root=root, validation=policy)


@pytest.fixture()
def rules_dir(tmp_path: Path) -> Path:
    target = tmp_path / "detections"
    shutil.copytree(VALID_DIR, target)
    return target


def _mutate(rules_dir: Path, old: str, new: str, name: str = SAMPLE) -> Path:
    path = rules_dir / name
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return path


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().split("\n"), 1) if needle in line)


def _run(rules_dir: Path, **overrides: object) -> list[Finding]:
    return validate([rules_dir], _config(rules_dir.parent, **overrides))


def _only(findings: list[Finding], code: str) -> Finding:
    matching = [f for f in findings if f.code == code]
    assert len(matching) == 1, findings
    others = [f for f in findings if f.code != code and f.severity == ERROR]
    assert not others, others
    return matching[0]


def test_valid_samples_have_no_findings(rules_dir: Path) -> None:
    assert _run(rules_dir) == []


@pytest.mark.parametrize(
    ("old", "new", "code", "needle"),
    [
        ("risk_score: 73", 'risk_score: "73"', "schema", "risk_score: expected integer, got string"),
        ("risk_score: 73", "risk_score: 101", "schema", "risk_score: must be at most 100"),
        ("severity: high", "severity: urgent", "schema", "severity: 'urgent' is not one of"),
        ("type: eql", "type: query", "schema", "type: must be 'eql'"),
        ("language: eql", "language: kuery", "schema", "language: must be 'eql'"),
        ("enabled: false", 'enabled: "false"', "schema", "enabled: expected boolean"),
        ("version: 1", "version: 0", "schema", "version: must be at least 1"),
        ("max_signals: 100", "max_signals: 1.5", "schema", "max_signals: expected integer"),
        (
            "interval: 5m",
            "interval: 5 minutes",
            "schema",
            "interval: '5 minutes' is not in the expected format",
        ),
        ("from: now-9m", "from: 9 minutes ago", "schema", "from:"),
        ("tags: [", "tags: [7, ", "schema", "tags[0]: expected string"),
        (
            "name: Sample - Office app spawns a script host that connects out",
            "name: 42",
            "schema",
            "name: expected string, got integer",
        ),
        ("  - framework: MITRE ATT&CK", "  - framework: MITRE", "schema", "threat[0].framework: must be"),
        ("id: TA0002,", "id: TA02,", "attack-id", "threat[0].tactic.id"),
        ("platforms: [windows]", "platforms: [windows, bsd]", "schema", "metadata.platforms[1]"),
        ("maturity: production", "maturity: beta", "schema", "metadata.maturity: 'beta' is not one of"),
        ("implements: [AN1314", "implements: [X1314", "attack-id", "metadata.implements[0]"),
        ("expect: no_match", "expect: nomatch", "schema", "metadata.tests[1].expect"),
        (
            "investigation_fields: {field_names: [host.name, process.name, destination.ip]}",
            "investigation_fields: {field_names: []}",
            "schema",
            "investigation_fields.field_names: must have at least",
        ),
        (
            "required_fields:\n  - {name: process.entity_id, type: keyword}",
            "required_fields:\n  - {name: process.entity_id}",
            "schema",
            "missing required key 'type'",
        ),
    ],
)
def test_wrong_type_or_value_in_a_field(rules_dir: Path, old: str, new: str, code: str, needle: str) -> None:
    path = _mutate(rules_dir, old, new)
    finding = _only(_run(rules_dir), code)
    assert needle in finding.message
    assert finding.path == str(path)
    first_new_line = new.split("\n")[-1]
    key_part = first_new_line.split(":")[0].strip(" -{")
    assert key_part in path.read_text().split("\n")[finding.line - 1]


def test_quoted_integer_hint(rules_dir: Path) -> None:
    _mutate(rules_dir, "risk_score: 73", 'risk_score: "73"')
    assert _only(_run(rules_dir), "schema").hint == "remove the quotes: 73"


def test_missing_required_keys(rules_dir: Path) -> None:
    path = _mutate(rules_dir, "severity: high\n", "")
    finding = _only(_run(rules_dir), "schema")
    assert finding.message == "top level: missing required key 'severity'"
    assert finding.line == _line_of(path, "rule_id:")


def test_unknown_keys_top_level_and_metadata(rules_dir: Path) -> None:
    path = _mutate(rules_dir, "risk_score: 73", "risk_score: 73\nrisk_scor: 5\nowner: me\nid: abc")
    _mutate(rules_dir, "  owner: detection-engineering", "  owner: detection-engineering\n  maturty: x")
    findings = [f for f in _run(rules_dir) if f.code == "schema"]
    by_message = {f.message: f for f in findings}
    assert set(by_message) == {
        "risk_scor: unknown key",
        "owner: unknown key",
        "id: unknown key",
        "metadata.maturty: unknown key",
    }
    assert by_message["risk_scor: unknown key"].hint == "did you mean 'risk_score'?"
    assert by_message["owner: unknown key"].hint == "'owner' belongs under metadata:"
    assert "managed by Kibana" in (by_message["id: unknown key"].hint or "")
    assert by_message["metadata.maturty: unknown key"].line == _line_of(path, "maturty:")
    assert by_message["risk_scor: unknown key"].line == _line_of(path, "risk_scor:")


def test_eql_typo_reports_file_line_and_column(rules_dir: Path) -> None:
    path = _mutate(rules_dir, "destination.port == 443]", "destination.port == 443 adn true]")
    finding = _only(_run(rules_dir), "eql-syntax")
    line = _line_of(path, " adn true]")
    assert (finding.line, finding.column) == (line, path.read_text().split("\n")[line - 1].index("adn") + 1)
    assert "adn" in finding.message
    assert finding.rule_id == "0f5c1d2e-7a4b-4c3d-9e8f-112233445566"


def test_eql_typo_in_folded_query_maps_into_the_file(rules_dir: Path) -> None:
    path = _mutate(rules_dir, '"sample-other"]', '"sample-other" and x = 1]', "alerts_chain.yaml")
    finding = _only(_run(rules_dir), "eql-syntax")
    line = _line_of(path, "x = 1]")
    assert (finding.line, finding.column) == (line, path.read_text().split("\n")[line - 1].index("= 1") + 1)
    assert finding.hint and "==" in finding.hint


def test_unknown_ecs_field(rules_dir: Path) -> None:
    path = _mutate(rules_dir, "destination.port == 443", "destination.prot == 443")
    finding = _only(_run(rules_dir), "unknown-field")
    assert finding.message.startswith("unknown field 'destination.prot'")
    assert finding.hint and "destination.port" in finding.hint
    line = _line_of(path, "destination.prot")
    assert (finding.line, finding.column) == (
        line,
        path.read_text().split("\n")[line - 1].index("destination.prot") + 1,
    )


def test_optional_unknown_field_is_a_warning(rules_dir: Path) -> None:
    _mutate(rules_dir, "destination.port == 443", "?custom.thing == 443")
    finding = _only(_run(rules_dir), "unknown-field")
    assert finding.severity == WARNING


def test_extra_fields_are_known(rules_dir: Path) -> None:
    _mutate(rules_dir, "destination.port == 443", "destination.port == 443 and process.Ext.ancestry != null")
    assert _run(rules_dir) == []


def test_event_type_created_suggests_creation(rules_dir: Path) -> None:
    path = _mutate(rules_dir, 'event.type == "start"', 'event.type == "created"')
    finding = _only(_run(rules_dir), "allowed-value")
    assert finding.message == '"created" is not an allowed value of event.type'
    assert finding.hint == "did you mean creation?"
    line = _line_of(path, '"created"')
    assert finding.column == path.read_text().split("\n")[line - 1].index('"created"') + 1


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ('event.type == "start"', 'event.type == "Start"', "case-sensitive"),
        ('event.type == "start"', 'event.type : "strt*"', '"strt*"'),
        ('event.type == "start"', 'event.outcome in ("success", "failed")', '"failed"'),
        ("[network where", "[networks where", "event category 'networks'"),
    ],
)
def test_allowed_values_of_event_fields(rules_dir: Path, old: str, new: str, needle: str) -> None:
    _mutate(rules_dir, old, new)
    assert needle in _only(_run(rules_dir), "allowed-value").message


def test_wildcard_that_matches_an_allowed_value_is_fine(rules_dir: Path) -> None:
    _mutate(rules_dir, 'event.type == "start"', 'event.type : "star*"')
    assert _run(rules_dir) == []


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("destination.port == 443", 'destination.port == "443"', "'destination.port' is a long field"),
        ("destination.port == 443", 'destination.ip : "10.*"', "but 'destination.ip' is an ip field"),
        ("destination.port == 443", 'destination.ip == "10.0.0.300"', "not an IP address"),
        (
            "destination.port == 443",
            "process.name == true",
            "'process.name' is a keyword field; compared with boolean",
        ),
        ("destination.port == 443", 'startsWith(destination.port, "4")', "startsWith() works on strings"),
        ("destination.port == 443", 'process.pid like "12*"', "'like' matches strings"),
    ],
)
def test_field_type_misuse(rules_dir: Path, old: str, new: str, needle: str) -> None:
    _mutate(rules_dir, old, new)
    assert needle in _only(_run(rules_dir), "field-type").message


def test_keyword_equal_to_a_number_is_fine(rules_dir: Path) -> None:
    # Elasticsearch compares the number's string form, as Elastic's own rules rely on
    # (`file.Ext.windows.zone_identifier == 3`).
    _mutate(rules_dir, "destination.port == 443", "process.name == 5")
    assert _run(rules_dir) == []


def test_keyword_ordered_against_a_number_is_a_warning(rules_dir: Path) -> None:
    _mutate(rules_dir, "destination.port == 443", "process.name > 5")
    finding = _only(_run(rules_dir), "field-type")
    assert finding.severity == "warning"
    assert "compared with 5 as a string" in finding.message


def test_sequence_without_maxspan(rules_dir: Path) -> None:
    path = _mutate(rules_dir, "sequence with maxspan=5m", "sequence")
    finding = _only(_run(rules_dir), "sequence-maxspan")
    assert finding.message.startswith("sequence has no maxspan")
    assert finding.line == _line_of(path, "  sequence") and finding.column == 3


def test_sequence_maxspan_over_configured_limit(rules_dir: Path) -> None:
    _mutate(rules_dir, "maxspan=5m", "maxspan=2h")
    finding = _only(_run(rules_dir), "sequence-maxspan")
    assert finding.message == "maxspan=2h is longer than the allowed 10m"
    _mutate(rules_dir, "maxspan=2h", "maxspan=4m")
    assert _run(rules_dir, max_maxspan_ms=180_000, max_maxspan_text="3m")[0].code == "sequence-maxspan"


def test_sequence_joined_on_user_name_only(rules_dir: Path) -> None:
    path = _mutate(rules_dir, "sequence with maxspan=5m", "sequence by user.name with maxspan=5m")
    text = path.read_text().replace("] by process.entity_id", "]")
    path.write_text(text)
    finding = _only(_run(rules_dir), "sequence-key")
    assert finding.message == "sequence is joined only on user.name, not on an entity key"
    line = _line_of(path, "sequence by user.name")
    assert (finding.line, finding.column) == (
        line,
        path.read_text().split("\n")[line - 1].index("user.name") + 1,
    )


def test_sequence_level_key_combined_with_entity_key_is_fine(rules_dir: Path) -> None:
    _mutate(rules_dir, "sequence with maxspan=5m", "sequence by host.id with maxspan=5m")
    assert _run(rules_dir) == []


def test_one_step_off_the_entity_key(rules_dir: Path) -> None:
    path = _mutate(rules_dir, "443] by process.entity_id", "443] by user.name")
    finding = _only(_run(rules_dir), "sequence-key")
    assert "joins on 'user.name'" in finding.message
    assert finding.line == _line_of(path, "] by user.name")


def test_parent_child_join_is_an_entity_join(rules_dir: Path) -> None:
    _mutate(rules_dir, "443] by process.entity_id", "443] by process.parent.entity_id")
    assert _run(rules_dir) == []


def test_duplicate_rule_ids_in_two_files_name_both(rules_dir: Path) -> None:
    copy = rules_dir / "copy.yaml"
    copy.write_text((rules_dir / SAMPLE).read_text().replace("name: Sample -", "name: Copy -"))
    findings = [f for f in _run(rules_dir) if f.code == "duplicate"]
    assert sorted(Path(f.path).name for f in findings) == ["copy.yaml", SAMPLE]
    for finding in findings:
        other = "copy.yaml" if finding.path.endswith(SAMPLE) else SAMPLE
        assert other in finding.message and "rule_id" in finding.message
        assert finding.line == 2


def test_duplicate_names(rules_dir: Path) -> None:
    copy = rules_dir / "copy.yaml"
    copy.write_text((rules_dir / SAMPLE).read_text().replace("rule_id: 0f5c", "rule_id: 1f5c"))
    findings = [f for f in _run(rules_dir) if f.code == "duplicate"]
    assert len(findings) == 2 and all(f.message.startswith("name ") for f in findings)


def test_empty_index(rules_dir: Path) -> None:
    path = _mutate(
        rules_dir, "index: [logs-endpoint.events.process-*, logs-endpoint.events.network-*]", "index: []"
    )
    finding = _only(_run(rules_dir), "index")
    assert "index: is empty" in finding.message and finding.line == _line_of(path, "index: []")


def test_missing_index(rules_dir: Path) -> None:
    _mutate(rules_dir, "index: [logs-endpoint.events.process-*, logs-endpoint.events.network-*]\n", "")
    assert _only(_run(rules_dir), "index").message == "missing required key 'index'"


def test_technique_under_the_wrong_tactic(rules_dir: Path) -> None:
    path = _mutate(
        rules_dir,
        'tactic: {id: TA0002, name: Execution, reference: "https://attack.mitre.org/tactics/TA0002/"}',
        'tactic: {id: TA0005, name: Defense Evasion, reference: "https://attack.mitre.org/tactics/TA0005/"}',
    )
    findings = [f for f in _run(rules_dir) if f.code == "attack-id"]
    assert {f.message for f in findings} == {
        "threat[0].technique[0].id: T1204 (User Execution) belongs to TA0002 Execution, not TA0005 Defense Evasion",
        "threat[0].technique[0].subtechnique[0].id: T1204.002 (Malicious File) belongs to TA0002 Execution, "
        "not TA0005 Defense Evasion",
    }
    assert all(f.severity == ERROR for f in findings)
    assert min(f.line for f in findings) == _line_of(path, "- id: T1204")


def test_tactic_name_must_match_id(rules_dir: Path) -> None:
    _mutate(rules_dir, "name: Execution,", "name: Persistence,")
    assert "TA0002 is 'Execution', not 'Persistence'" in _only(_run(rules_dir), "attack-id").message


def test_subtechnique_under_another_technique(rules_dir: Path) -> None:
    _mutate(rules_dir, "{id: T1204.002,", "{id: T1059.001,")
    errors = [f for f in _run(rules_dir) if f.severity == ERROR]
    assert len(errors) == 1
    finding = errors[0]
    assert "T1059.001 is not a sub-technique of T1204" in finding.message


def test_unknown_subtechnique_is_an_error(rules_dir: Path) -> None:
    _mutate(
        rules_dir,
        '{id: T1204.002, name: Malicious File, reference: "https://attack.mitre.org/techniques/T1204/002/"}',
        '{id: T1204.999, name: Malicious File, reference: "https://attack.mitre.org/techniques/T1204/999/"}',
    )
    errors = [f for f in _run(rules_dir) if f.severity == ERROR]
    assert [f.code for f in errors] == ["attack-id"]
    assert "T1204.999 is not a sub-technique in ATT&CK v18.1" in errors[0].message


def test_implemented_technique_missing_from_threat_is_a_warning(rules_dir: Path) -> None:
    _mutate(rules_dir, "[AN1314, DET0478, T1204.002]", "[AN1314, DET0478, T1204.002, T1566.001]")
    findings = _run(rules_dir)
    assert [(f.code, f.severity) for f in findings] == [("attack-id", WARNING)]
    assert "T1566.001" in findings[0].message


def test_fixture_file_missing(rules_dir: Path) -> None:
    (rules_dir / "fixtures" / "match.ndjson").unlink()
    path = rules_dir / SAMPLE
    finding = _only(_run(rules_dir), "fixture")
    assert "fixtures/match.ndjson' not found" in finding.message
    line = _line_of(path, "events: fixtures/match.ndjson")
    assert (finding.line, finding.column) == (line, 15)


def test_production_rule_needs_positive_and_negative_tests(rules_dir: Path) -> None:
    path = _mutate(rules_dir, "expect: no_match", "expect: match")
    finding = _only(_run(rules_dir), "fixture")
    assert finding.message == "production rule needs at least one test with expect: no_match"
    assert finding.line == _line_of(path, "  tests:")


def test_exempt_maturity_needs_no_tests(rules_dir: Path) -> None:
    # alerts_chain.yaml is experimental and has no tests; making it production must fail.
    assert _run(rules_dir) == []
    _mutate(rules_dir, "maturity: experimental", "maturity: production", "alerts_chain.yaml")
    finding = _only(_run(rules_dir), "fixture")
    assert "expect: match and expect: no_match" in finding.message
    assert _run(rules_dir, fixture_exempt_maturities=("production",)) == []


def test_sequences_only_with_expect_match(rules_dir: Path) -> None:
    _mutate(rules_dir, "      expect: no_match", "      expect: no_match\n      sequences: [[e3]]")
    assert "'sequences' only applies to expect: match" in _only(_run(rules_dir), "schema").message


def test_unknown_field_in_investigation_fields_and_required_type(rules_dir: Path) -> None:
    path = _mutate(rules_dir, "field_names: [host.name,", "field_names: [host.nmae,")
    _mutate(rules_dir, "{name: process.entity_id, type: keyword}", "{name: process.entity_id, type: long}")
    findings = _run(rules_dir)
    unknown = [f for f in findings if f.code == "unknown-field"]
    assert len(unknown) == 1 and unknown[0].line == _line_of(path, "host.nmae")
    types_ = [f for f in findings if f.code == "field-type"]
    assert len(types_) == 1 and "is keyword, not long" in types_[0].message


def test_mapping_coverage_hook(rules_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mappings = rules_dir.parent / "mappings"
    mappings.mkdir()
    (mappings / "component.json").write_text("{}")
    fake = types.ModuleType("deployer.mappings")
    seen: list[Path] = []

    def covered_fields(repo_root: Path) -> set[str]:
        seen.append(repo_root)
        return {"event.type", "process.parent.name", "process.name", "process.entity_id"}

    fake.covered_fields = covered_fields  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "deployer.mappings", fake)
    findings = _run(rules_dir)
    assert seen == [rules_dir.parent]
    assert {f.message for f in findings} == {
        "'destination.port' is not mapped by the index templates in mappings/"
    }
    assert all(f.code == "mapping-coverage" for f in findings)


def test_all_problems_reported_in_one_run(rules_dir: Path) -> None:
    path = _mutate(rules_dir, 'event.type == "start"', 'event.type == "created"')
    _mutate(rules_dir, "sequence with maxspan=5m", "sequence")
    _mutate(rules_dir, "risk_score: 73", "risk_score: high")
    _mutate(rules_dir, "destination.port == 443", "destination.prot == 443")
    codes = sorted(f.code for f in _run(rules_dir))
    assert codes == ["allowed-value", "schema", "sequence-maxspan", "unknown-field"]
    assert path.exists()


def test_worker_processes_give_the_same_findings(rules_dir: Path) -> None:
    for i in range(3):
        text = (rules_dir / SAMPLE).read_text().replace("name: Sample -", f"name: Copy {i} -")
        (rules_dir / f"copy{i}.yaml").write_text(text.replace('"start"', '"created"'))
    serial = validate([rules_dir], _config(rules_dir.parent), jobs=1)
    parallel = validate([rules_dir], _config(rules_dir.parent), jobs=3)
    assert serial == parallel
    assert {f.code for f in serial} == {"duplicate", "allowed-value"}
