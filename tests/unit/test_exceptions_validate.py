"""``dac validate`` on exception lists: each bad input is one finding at file:line:col."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from deployer.config import Config, ValidationConfig
from deployer.rules.findings import ERROR, WARNING, Finding
from deployer.rules.validate import validate

REPO = Path(__file__).resolve().parents[2]
VALID_DIR = REPO / "tests" / "data" / "rules" / "valid"
SAMPLE = "office_child_network.yaml"

GOOD_LIST = """\
list_id: approved
name: Approved software
description: Installers the desktop team signs off
type: detection
namespace_type: single
items:
  - item_id: teams-updater
    name: Teams updater
    description: signed updater
    entries:
      - field: process.executable
        type: wildcard
        operator: included
        value: 'C:\\\\Users\\\\*\\\\Teams\\\\Update.exe'
      - field: process.code_signature.subject_name
        type: match
        operator: included
        value: Microsoft Corporation
"""


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    target = tmp_path / "detections"
    shutil.copytree(VALID_DIR, target)
    (target / "exceptions").mkdir()
    (target / "exceptions" / "approved.yaml").write_text(GOOD_LIST)
    rule = target / SAMPLE
    rule.write_text(
        rule.read_text().replace("\nseverity:", "\nexceptions_list:\n  - list_id: approved\nseverity:", 1)
    )
    return target


def _run(repo: Path) -> list[Finding]:
    cfg = Config(
        path=None, root=repo.parent, validation=ValidationConfig(extra_fields=REPO / "extra_fields.yaml")
    )
    return validate([repo], cfg)


def _write(repo: Path, text: str, name: str = "approved.yaml") -> Path:
    path = repo / "exceptions" / name
    path.write_text(textwrap.dedent(text) if isinstance(text, str) else text)
    return path


def _line(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().split("\n"), 1) if needle in line)


def _one(findings: list[Finding], code: str, severity: str = ERROR) -> Finding:
    hits = [f for f in findings if f.code == code]
    assert len(hits) == 1, findings
    assert hits[0].severity == severity
    others = [f for f in findings if f is not hits[0] and f.severity == ERROR]
    assert not others, others
    return hits[0]


def test_good_list_and_reference_have_no_findings(repo: Path) -> None:
    assert _run(repo) == []


def test_list_files_are_not_read_as_rules(repo: Path) -> None:
    # An exceptions/ file named directly is not a rule file either.
    cfg = Config(
        path=None, root=repo.parent, validation=ValidationConfig(extra_fields=REPO / "extra_fields.yaml")
    )
    assert validate([repo / "exceptions" / "approved.yaml"], cfg) == []


def test_unknown_entry_type(repo: Path) -> None:
    path = _write(repo, GOOD_LIST.replace("type: wildcard", "type: regex"))
    f = _one(_run(repo), "exceptions-schema")
    assert (f.path, f.line, f.column) == (str(path), _line(path, "type: regex"), 9)
    assert "unknown entry type 'regex'" in f.message


def test_unknown_operator(repo: Path) -> None:
    path = _write(
        repo,
        GOOD_LIST.replace(
            "operator: included\n        value: Microsoft", "operator: is\n        value: Microsoft"
        ),
    )
    f = _one(_run(repo), "exceptions-schema")
    assert f.line == _line(path, "operator: is")
    assert "unknown operator 'is'" in f.message and "included, excluded" in f.message


def test_wildcard_on_a_long_field(repo: Path) -> None:
    path = _write(repo, GOOD_LIST.replace("field: process.executable", "field: destination.port"))
    f = _one(_run(repo), "exceptions-operator")
    assert (f.line, f.column) == (_line(path, "field: destination.port"), 9)
    assert "destination.port' is long" in f.message


def test_unknown_field_and_value_type(repo: Path) -> None:
    path = _write(
        repo,
        GOOD_LIST.replace(
            "field: process.code_signature.subject_name", "field: process.code_signature.subjct_name"
        ),
    )
    f = _one(_run(repo), "exceptions-field")
    assert (
        f.line == _line(path, "subjct_name") and "did you mean process.code_signature.subject_name" in f.hint
    )
    path = _write(
        repo,
        GOOD_LIST.replace("field: process.code_signature.subject_name", "field: destination.port").replace(
            "value: Microsoft Corporation", "value: https"
        ),
    )
    f = _one(_run(repo), "exceptions-value")
    assert f.line == _line(path, "value: https") and "'https' is not a number" in f.message


def test_nested_needs_a_nested_field(repo: Path) -> None:
    path = _write(
        repo,
        GOOD_LIST
        + "  - item_id: n\n    name: n\n    description: n\n    entries:\n"
        + "      - field: process.name\n        type: nested\n        entries:\n"
        + "          - {field: name, type: match, operator: included, value: x}\n",
    )
    f = _one(_run(repo), "exceptions-operator")
    assert f.line == _line(path, "field: process.name") and "needs a nested field" in f.message


def test_list_referenced_but_not_defined(repo: Path) -> None:
    rule = repo / SAMPLE
    rule.write_text(rule.read_text().replace("- list_id: approved", "- list_id: aproved"))
    f = _one(_run(repo), "exceptions-reference")
    assert (f.path, f.line, f.column) == (str(rule), _line(rule, "list_id: aproved"), 5)
    assert f.rule_id == "0f5c1d2e-7a4b-4c3d-9e8f-112233445566"


def test_two_default_lists_on_one_rule(repo: Path) -> None:
    for name in ("d1", "d2"):
        _write(
            repo,
            GOOD_LIST.replace("list_id: approved", f"list_id: {name}")
            .replace("type: detection", "type: rule_default")
            .replace("item_id: teams-updater", f"item_id: {name}-item"),
            f"{name}.yaml",
        )
    rule = repo / SAMPLE
    rule.write_text(rule.read_text().replace("  - list_id: approved\n", "  - list_id: d1\n  - list_id: d2\n"))
    f = _one(_run(repo), "exceptions-reference")
    assert f.line == _line(rule, "list_id: d2") and "more than one rule_default" in f.message


def test_too_many_items(repo: Path) -> None:
    items = "".join(
        f"  - {{item_id: i{n}, name: i{n}, description: d, entries: "
        f"[{{field: user.name, type: match, operator: included, value: u{n}}}]}}\n"
        for n in range(10_001)
    )
    path = _write(repo, "list_id: approved\nname: big\ndescription: big\nitems:\n" + items)
    f = _one(_run(repo), "exceptions-limit")
    assert (f.line, f.column) == (_line(path, "items:"), 1) and "10,001 items" in f.message


def test_duplicate_item_ids_and_expired_items(repo: Path) -> None:
    path = _write(
        repo,
        GOOD_LIST
        + GOOD_LIST[GOOD_LIST.index("  - item_id") :].replace(
            "    description: signed", '    expire_time: "2020-01-01T00:00:00Z"\n    description: signed'
        ),
    )
    findings = _run(repo)
    dup = _one([f for f in findings if f.code != "exceptions-expired"], "exceptions-duplicate-item")
    assert (
        dup.line
        == [i for i, line in enumerate(path.read_text().split("\n"), 1) if "item_id: teams" in line][1]
    )
    expired = [f for f in findings if f.code == "exceptions-expired"]
    assert (
        len(expired) == 1 and expired[0].severity == WARNING and expired[0].line == _line(path, "expire_time")
    )


def test_list_entry_names_an_undeclared_value_list(repo: Path) -> None:
    path = _write(
        repo,
        GOOD_LIST
        + "  - item_id: v\n    name: v\n    description: v\n    entries:\n"
        + "      - {field: file.hash.sha256, type: list, operator: included, list: {id: hashes, type: keyword}}\n",
    )
    f = _one(_run(repo), "exceptions-reference")
    assert f.line == _line(path, "list: {id: hashes") and "'hashes' is not declared" in f.message
    (repo / "exceptions" / "hashes.yaml").write_text(
        "id: hashes\ntype: keyword\nname: hashes\nvalues: [abc]\n"
    )
    assert _run(repo) == []


@pytest.mark.parametrize(
    ("raw", "needle", "line"),
    [
        (b"list_id: approved\nname: \xff\n", "not valid UTF-8", 2),
        (b"list_id: approved\nname: [unclosed\n", "invalid YAML", 3),
    ],
)
def test_unreadable_files(repo: Path, raw: bytes, needle: str, line: int) -> None:
    path = repo / "exceptions" / "approved.yaml"
    path.write_bytes(raw)
    findings = _run(repo)
    assert any(needle in f.message and f.path == str(path) and f.line == line for f in findings), findings
    # The rule's reference to the list that did not load is reported too.
    assert any(f.code == "exceptions-reference" for f in findings)


def test_fields_come_from_the_referencing_rules_field_packs(repo: Path) -> None:
    # An Elastic Defend field: known through the pack mapped to the rule's logs-endpoint.* index.
    defend = "Target.dll.Ext.code_signature.subject_name"
    path = _write(repo, GOOD_LIST.replace("field: process.code_signature.subject_name", f"field: {defend}"))
    assert _run(repo) == []
    # The same list that no rule references is checked against ECS and the extra fields only.
    rule = repo / SAMPLE
    rule.write_text(rule.read_text().replace("exceptions_list:\n  - list_id: approved\n", ""))
    f = _one(_run(repo), "exceptions-field")
    assert f.line == _line(path, defend)


def test_ip_value_list_values_are_addresses(repo: Path) -> None:
    path = repo / "exceptions" / "nets.yaml"
    path.write_text("id: nets\ntype: ip_range\nname: nets\nvalues: ['10.0.0.0/8', '10.0.0.9-10.0.0.1', not-an-ip]\n")
    findings = [f for f in _run(repo) if f.code == "exceptions-value"]
    assert [(f.line, f.message) for f in findings] == [
        (4, "'10.0.0.9-10.0.0.1' is not a CIDR or a range like 10.0.0.1-10.0.0.9"),
        (4, "'not-an-ip' is not a CIDR or a range like 10.0.0.1-10.0.0.9"),
    ]
