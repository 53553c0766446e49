"""Property tests: whatever the bytes, loading and validating give findings, never exceptions."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployer.config import Config, ValidationConfig
from deployer.rules.loader import _LINE_BREAK, load_rule_text
from deployer.rules.validate import validate

REPO = Path(__file__).resolve().parents[2]
VALID = (REPO / "tests" / "data" / "rules" / "valid" / "office_child_network.yaml").read_text()
CONFIG = Config(
    path=None,
    root=Path(tempfile.gettempdir()),
    validation=ValidationConfig(extra_fields=REPO / "extra_fields.yaml"),
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _line_count(data: bytes) -> int:
    # YAML also breaks lines at \r, NEL and the Unicode line/paragraph separators.
    text = data.decode("utf-8", "replace")
    return len(_LINE_BREAK.split(text))


def _check_findings(findings: list[Any], text_lines: int) -> None:
    for finding in findings:
        assert finding.code != "internal-error", finding
        assert finding.line >= 1 and finding.column >= 1
        assert finding.line <= text_lines + 1, finding
        assert finding.message


def _validate_text(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rule.yaml"
        path.write_bytes(data)
        findings = validate([path], CONFIG)
        _check_findings(findings, _line_count(data))


@SETTINGS
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash_the_loader(data: bytes) -> None:
    rule, findings = load_rule_text(data, "random.yaml")
    assert rule is not None or findings
    _check_findings(findings, _line_count(data))


@SETTINGS
@given(st.text(alphabet=st.sampled_from(list("ab:- \n\t[]{}\"'|>&*!#%@,?\\x0\ufeff\u2028")), max_size=300))
def test_yaml_like_text_never_crashes_validation(text: str) -> None:
    _validate_text(text.encode("utf-8"))


_LINES = VALID.split("\n")


@st.composite
def _text_mutation(draw: st.DrawFn) -> bytes:
    lines = list(_LINES)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "duplicate", "char", "insert", "swap", "indent"]))
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "delete" and len(lines) > 1:
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "char" and lines[i]:
            j = draw(st.integers(0, len(lines[i]) - 1))
            ch = draw(st.characters(blacklist_categories=("Cs",)))
            lines[i] = lines[i][:j] + ch + lines[i][j + 1 :]
        elif kind == "insert":
            j = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:j] + draw(st.text(max_size=12)) + lines[i][j:]
        elif kind == "swap":
            k = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[k] = lines[k], lines[i]
        elif kind == "indent":
            lines[i] = " " * draw(st.integers(1, 6)) + lines[i]
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@SETTINGS
@given(_text_mutation())
def test_text_mutations_of_a_valid_rule_give_only_findings(data: bytes) -> None:
    _validate_text(data)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_paths(value, (*prefix, i)))
    return out


@st.composite
def _data_mutation(draw: st.DrawFn) -> bytes:
    data = yaml.safe_load(VALID)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        path = draw(st.sampled_from(paths))
        parent: Any = data
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete"]))
        if action == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(_json_values)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode("utf-8")


@SETTINGS
@given(_data_mutation())
def test_value_mutations_of_a_valid_rule_give_only_findings(data: bytes) -> None:
    _validate_text(data)


@SETTINGS
@given(st.text(max_size=120))
def test_random_queries_give_only_findings(query: str) -> None:
    text = VALID.replace(
        "query: |", "query: " + yaml.safe_dump(query, default_style='"').strip() + "\nx_query: |"
    )
    _validate_text(text.encode("utf-8", "surrogatepass"))


_FIELDS = [
    "event.type",
    "event.category",
    "process.name",
    "process.pid",
    "source.ip",
    "@timestamp",
    "process",
    "process.Ext.ancestry",
    "labels.x",
    "nope.field",
    "?maybe.field",
    "process.args",
    "event.outcome",
]
_VALUES = [
    '"start"',
    '"created"',
    '"10.*"',
    '"1.2.3.4"',
    "443",
    "1.5",
    "true",
    "null",
    '"2024-01-01"',
    '"a*b?"',
]
_OPS = ["==", "!=", ":", "like~", "regex", "<", ">=", "in", "in~", "not in"]


@st.composite
def _eql_query(draw: st.DrawFn) -> str:
    def condition() -> str:
        fld = draw(st.sampled_from(_FIELDS))
        op = draw(st.sampled_from(_OPS))
        if op.endswith("in") or op.endswith("in~"):
            values = ", ".join(draw(st.lists(st.sampled_from(_VALUES), min_size=1, max_size=3)))
            return f"{fld} {op} ({values})"
        if draw(st.booleans()):
            func = draw(st.sampled_from(["startsWith", "length", "cidrMatch", "add", "stringContains"]))
            return f"{func}({fld}, {draw(st.sampled_from(_VALUES))}) == true"
        return f"{fld} {op} {draw(st.sampled_from(_VALUES))}"

    def step() -> str:
        category = draw(st.sampled_from(["process", "network", "any", "proces", "file"]))
        conds = " and ".join(condition() for _ in range(draw(st.integers(1, 3))))
        by = draw(
            st.sampled_from(["", " by process.entity_id", " by user.name", " by process.parent.entity_id"])
        )
        return f"[{category} where {conds}]{by}"

    if draw(st.booleans()):
        return f"{draw(st.sampled_from(['process', 'any']))} where {condition()}"
    head = draw(
        st.sampled_from(
            [
                "sequence",
                "sequence by host.id",
                "sequence by user.name",
                "sequence with maxspan=1m",
                "sequence by process.entity_id with maxspan=2h",
            ]
        )
    )
    steps = "\n  ".join(step() for _ in range(draw(st.integers(2, 3))))
    return f"{head}\n  {steps}\n"


@SETTINGS
@given(_eql_query(), st.sampled_from(["|", "|-", ">", ">-"]))
def test_generated_eql_queries_give_only_findings(query: str, style: str) -> None:
    block = "\n".join("  " + line for line in query.rstrip("\n").split("\n"))
    start = VALID.index("query: |")
    end = VALID.index("index:")
    text = VALID[:start] + f"query: {style}\n{block}\n" + VALID[end:]
    first = VALID[:start].count("\n") + 2  # the query's first line in the file
    last = first + query.rstrip("\n").count("\n")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rule.yaml"
        path.write_text(text)
        findings = validate([path], CONFIG)
    _check_findings(findings, _line_count(text.encode()))
    query_codes = {
        "eql-syntax",
        "unknown-field",
        "field-type",
        "allowed-value",
        "sequence-maxspan",
        "sequence-key",
    }
    lines = text.split("\n")
    for finding in findings:
        if finding.code in query_codes:
            # Positions inside the query land on the query's lines, within the line's text.
            assert first <= finding.line <= last, finding
            assert finding.column <= len(lines[finding.line - 1]) + 1, finding
