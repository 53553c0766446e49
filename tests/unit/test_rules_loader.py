"""Rule loader: YAML with positions, positions inside the query scalar, bad files as findings."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.rules.loader import (
    MAX_FILE_BYTES,
    discover_rule_files,
    load_rule_file,
    load_rule_files,
    load_rule_text,
)

VALID_DIR = Path(__file__).resolve().parents[1] / "data" / "rules" / "valid"


def _char_at(source: str, line: int, col: int) -> str:
    return source.split("\n")[line - 1][col - 1]


def _assert_query_maps_exactly(text: str) -> None:
    """Every non-space character of the query maps to the same character in the file."""
    rule, findings = load_rule_text(text, "q.yaml")
    assert rule is not None and not findings
    query = rule.data["query"]
    for qline, content in enumerate(query.split("\n"), 1):
        for qcol, ch in enumerate(content, 1):
            if ch == " ":
                continue  # folded line breaks become spaces and map to the end of the line
            line, col = rule.query_position(qline, qcol)
            assert _char_at(text, line, col) == ch, (qline, qcol, line, col)


def test_valid_sample_loads_with_kibana_and_metadata_split() -> None:
    rule, findings = load_rule_file(VALID_DIR / "office_child_network.yaml")
    assert findings == []
    assert rule is not None
    assert rule.rule_id == "0f5c1d2e-7a4b-4c3d-9e8f-112233445566"
    assert "metadata" not in rule.kibana and rule.kibana["type"] == "eql"
    assert rule.metadata["maturity"] == "production"


def test_positions_for_keys_items_and_string_paths() -> None:
    text = "rule_id: x\nthreat:\n  - framework: MITRE ATT&CK\n    tactic:\n      id: TA0002\n"
    rule, _ = load_rule_text(text, "p.yaml")
    assert rule is not None
    assert rule.position(("rule_id",)) == (1, 1)
    assert rule.position(("threat", 0, "tactic", "id")) == (5, 7)
    assert rule.position("threat[0].tactic.id") == (5, 7)
    assert rule.position("/threat/0/tactic/id") == (5, 7)
    assert rule.value_position(("threat", 0, "tactic", "id")) == (5, 11)
    # A missing path resolves to its nearest existing ancestor.
    assert rule.position(("threat", 0, "tactic", "name")) == (4, 5)


@pytest.mark.parametrize("style", ["|", "|-", "|+", ">", ">-", "|2"])
def test_query_positions_in_block_scalars(style: str) -> None:
    text = (
        "rule_id: x\n"
        f"query: {style}\n"
        "  sequence by process.entity_id with maxspan=1m\n"
        '    [process where process.name == "a.exe"]\n'
        "\n"
        "    [network where destination.port == 443]\n"
        "name: n\n"
    )
    _assert_query_maps_exactly(text)


def test_query_positions_in_nested_indentation_and_plain_scalars() -> None:
    _assert_query_maps_exactly("a: 1\nquery: >\n      process where\n      true and\n        x == 1\n")
    _assert_query_maps_exactly('query: process where process.name == "x"\n')
    _assert_query_maps_exactly("query: sequence\n  [a where b]\n  [c where d]\n")
    _assert_query_maps_exactly("query: 'process where true'\n")


def test_query_position_falls_back_to_value_start_for_escaped_scalars() -> None:
    rule, _ = load_rule_text('query: "process where a == \\"x\\""\n', "e.yaml")
    assert rule is not None
    assert rule.query_position(1, 20) == (1, 8)


def test_eql_error_position_maps_to_file_line_and_column() -> None:
    text = (VALID_DIR / "office_child_network.yaml").read_text()
    rule, _ = load_rule_text(text, "v.yaml")
    assert rule is not None
    # Query line 3 is `     process.name : "mshta.exe"] ...` (indented inside the query).
    lines = text.split("\n")
    query_start = next(i for i, line in enumerate(lines, 1) if line.startswith("query: |"))
    qcol = rule.data["query"].split("\n")[2].index("process.name") + 1
    line, col = rule.query_position(3, qcol)
    assert line == query_start + 3
    assert lines[line - 1][col - 1 :].startswith("process.name")


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("rule_id: x\nname: [unclosed\n", 3, "invalid YAML"),
        ("rule_id: x\n  bad: indent\n", 2, "invalid YAML"),
        ("a: 1\n---\nb: 2\n", 2, "more than one YAML document"),
        ("a: !!python/object:os.system x\n", 1, "constructor"),
        ("a: 1\n\tb: 2\n", 2, "invalid YAML"),
        ("a: \x07\n", 1, "invalid YAML"),
    ],
)
def test_malformed_yaml_is_a_finding_with_position(text: str, line: int, needle: str) -> None:
    rule, findings = load_rule_text(text, "bad.yaml")
    assert rule is None
    assert len(findings) == 1
    assert findings[0].code == "yaml"
    assert findings[0].line == line
    assert needle in findings[0].message or needle in (findings[0].hint or "")


def test_list_instead_of_mapping() -> None:
    rule, findings = load_rule_text("- rule_id: a\n- rule_id: b\n", "list.yaml")
    assert rule is None
    assert findings[0].code == "yaml"
    assert "top level is a list" in findings[0].message
    assert "one rule per file" in (findings[0].hint or "")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(text: str) -> None:
    rule, findings = load_rule_text(text, "empty.yaml")
    assert rule is None
    assert findings[0].code == "yaml" and "empty" in findings[0].message


def test_scalar_document() -> None:
    rule, findings = load_rule_text("just a string\n", "s.yaml")
    assert rule is None and "single value" in findings[0].message


def test_non_utf8_file_reports_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("rule_id: x\nname: caf\u00e9\n".encode("latin-1"))
    rule, findings = load_rule_file(path)
    assert rule is None
    assert [(f.code, f.line, f.column) for f in findings] == [("encoding", 2, 10)]
    assert "0xe9" in findings[0].message


def test_utf16_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "u16.yaml"
    path.write_bytes("rule_id: x\n".encode("utf-16"))
    _, findings = load_rule_file(path)
    assert findings[0].code == "encoding" and "UTF-16" in findings[0].message


def test_utf8_bom_is_accepted() -> None:
    rule, findings = load_rule_text("\ufeffrule_id: x\n".encode(), "bom.yaml")
    assert rule is not None and not findings and rule.rule_id == "x"


def test_ten_megabyte_file_is_refused_fast(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"rule_id: x\ndescription: " + b"a" * (10 * 1024 * 1024) + b"\n")
    rule, findings = load_rule_file(path)
    assert rule is None
    assert findings[0].code == "file-size"
    assert "10.0 MiB" in findings[0].message and f"{MAX_FILE_BYTES // 1024} KiB" in findings[0].message


def test_duplicate_keys_are_reported_with_both_lines() -> None:
    rule, findings = load_rule_text("rule_id: a\nname: one\nname: two\n", "d.yaml")
    assert rule is not None and rule.data["name"] == "two"
    assert [(f.code, f.line) for f in findings] == [("yaml", 3)]
    assert "first at line 2" in findings[0].message
    assert findings[0].rule_id == "a"


def test_non_string_keys_are_reported() -> None:
    rule, findings = load_rule_text("rule_id: a\nyes: 1\n3: x\n", "k.yaml")
    assert rule is not None
    assert [f.line for f in findings] == [2, 3]
    assert "read as bool" in findings[0].message


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        lines.append(
            f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
        )
    rule, findings = load_rule_text("\n".join(lines) + "\n", "bomb.yaml")
    assert rule is None and "aliases" in findings[0].message


def test_recursive_alias_and_deep_nesting_do_not_crash() -> None:
    rule, findings = load_rule_text("a: &x [*x]\n", "r.yaml")
    assert rule is None and findings[0].code == "yaml"
    rule, findings = load_rule_text("a: " + "[" * 5000 + "]" * 5000 + "\n", "deep.yaml")
    assert rule is None and findings[0].code == "yaml"


def test_merge_keys_are_resolved_without_duplicate_findings() -> None:
    rule, findings = load_rule_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n", "m.yaml")
    assert rule is not None and not findings
    assert rule.data["other"] == {"x": 1, "y": 3}


def test_discovery_skips_fixtures_and_hidden_dirs(tmp_path: Path) -> None:
    (tmp_path / "windows" / "fixtures").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "windows" / "r.yaml").write_text("rule_id: a\n")
    (tmp_path / "windows" / "r2.yml").write_text("rule_id: b\n")
    (tmp_path / "windows" / "fixtures" / "f.yaml").write_text("x: 1\n")
    (tmp_path / ".hidden" / "h.yaml").write_text("x: 1\n")
    (tmp_path / "windows" / "notes.txt").write_text("x")
    found = discover_rule_files([tmp_path])
    assert [p.name for p in found] == ["r.yaml", "r2.yml"]


def test_nonexistent_path_raises() -> None:
    with pytest.raises(FileNotFoundError):
        load_rule_files(["/nonexistent/dir/for/dac"])


def test_load_rule_files_collects_rules_and_findings(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text("rule_id: a\n")
    (tmp_path / "bad.yaml").write_text("rule_id: [\n")
    result = load_rule_files([tmp_path])
    assert [r.rule_id for r in result.rules] == ["a"]
    assert [Path(f.path).name for f in result.findings] == ["bad.yaml"]


def test_special_files_are_not_read(tmp_path: Path) -> None:
    rule, findings = load_rule_file("/dev/zero")
    assert rule is None and findings[0].code == "io" and "not a regular file" in findings[0].message
    rule, findings = load_rule_file(tmp_path)
    assert rule is None and findings[0].code == "io"
