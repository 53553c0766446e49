"""Elasticsearch's own EQL query suites: every active query parses, the disabled ones are classified.

The suites live outside the repository (`../shared/eql-conformance`, Elastic License 2.0); the tests
skip when that folder is absent.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest

from deployer.eql import ast
from deployer.eql.errors import EqlSyntaxError
from deployer.eql.parser import parse

SHARED = Path(os.environ.get("DAC_SHARED_DIR", Path(__file__).resolve().parents[3] / "shared"))
SUITES = SHARED / "eql-conformance"
SUITE_FILES = sorted(SUITES.glob("*.toml")) if SUITES.is_dir() else []
SKIP_REASON = f"EQL conformance suites not found in {SUITES}"

# Disabled ("#"-commented) queries that Elasticsearch accepts syntactically: they were disabled for
# engine or data reasons, so the parser must accept them. Every other disabled query must be rejected.
ACCEPTED_BY_ELASTICSEARCH: dict[str, str] = {
    "missingField1": "unknown field: a mapping (verifier) error, not syntax",
    "equalsNullHead": "unknown field: a mapping (verifier) error, not syntax",
    "invalidFieldName": "unknown field: a mapping (verifier) error, not syntax",
    "badFieldWithLength": "unknown field: a mapping (verifier) error, not syntax",
    "fakeField": "unknown field: a mapping (verifier) error, not syntax",
    "fakeFieldWithHead1": "unknown field: a mapping (verifier) error, not syntax",
    "fakeFieldWithHead2": "unknown field: a mapping (verifier) error, not syntax",
    "notExitCodeGtWithHead2": "valid; disabled because negation over missing values is not asserted",
    "notExitCodeGtWithHead3": "valid; disabled because negation over missing values is not asserted",
    "processWithStringComparisonCaseInsensitive1": "valid; results are case-sensitive since 7.10",
    "processWithStringComparisonCaseInsensitive2": "valid; results are case-sensitive since 7.10",
    "processWithStringComparisonCaseInsensitive3": "valid; results are case-sensitive since 7.10",
    "processWithStringComparisonCaseInsensitive4": "valid; results are case-sensitive since 7.10",
    "nestedSetComparisons": "valid (`true == (x in (...))`); disabled for its expected results",
    "lengthCaseInsensitiveAndBetween": "valid; disabled for its expected results",
    "withByKey_tail_head": "valid (`| tail 2 | head 1`); disabled for its expected results",
    "sequenceSameKeyBothOptionalAndNonOptional": (
        "syntactically valid; whether Elasticsearch's verifier accepts the same key both optional "
        "and not optional is not recorded in the suite"
    ),
}

# Why each remaining disabled query is rejected: a fragment of the expected error message.
REJECTION_MARKERS = (
    "Pipe [",  # filter / unique / sort / unique_count / count
    "Unrecognized pipe",
    "join is not supported",
    "Process relationships are not supported",
    "Array indexes are not supported",
    "Unknown function",
    "Comparisons against fields are not supported",
    "Unsupported join key",
    "unexpected",  # e.g. Endgame's `fork=true`
)


def _load_active(path: Path) -> list[tuple[str, str]]:
    text = path.read_text(encoding="utf-8")
    # test_extra.toml writes bare `null` inside join_keys, which is not TOML.
    text = re.sub(
        r"(?m)^(join_keys\s*=.*)$",
        lambda m: re.sub(r'(?<!")\bnull\b(?!")', '"null"', m.group(1)),
        text,
    )
    return [(q["name"], q["query"].strip()) for q in tomllib.loads(text)["queries"]]


def _load_disabled(path: Path) -> list[tuple[str, str]]:
    """Queries whose whole `[[queries]]` block is commented out with `#`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        if re.match(r"^#\s*\[\[queries\]\]", lines[i]):
            j = i + 1
            block: list[str] = []
            while (
                j < len(lines)
                and lines[j].startswith("#")
                and not re.match(r"^#\s*\[\[queries\]\]", lines[j])
            ):
                block.append(lines[j][1:])
                j += 1
            entry = tomllib.loads("\n".join(block))
            found.append((entry["name"], entry["query"].strip()))
            i = j
        else:
            i += 1
    return found


ACTIVE = [(path.name, name, query) for path in SUITE_FILES for name, query in _load_active(path)]
DISABLED = [(path.name, name, query) for path in SUITE_FILES for name, query in _load_disabled(path)]


@pytest.mark.skipif(not SUITE_FILES, reason=SKIP_REASON)
def test_suite_sizes() -> None:
    assert len(ACTIVE) == 264
    assert len(DISABLED) == 114


@pytest.mark.skipif(not SUITE_FILES, reason=SKIP_REASON)
@pytest.mark.parametrize(("suite", "name", "query"), ACTIVE, ids=[f"{s}:{n}" for s, n, _ in ACTIVE])
def test_active_query_parses(suite: str, name: str, query: str) -> None:
    parsed = parse(query)
    assert isinstance(parsed, ast.Query)
    # Every node carries a position inside the query text.
    lines = query.splitlines()
    for node in ast.walk(parsed):
        assert 1 <= node.line <= len(lines)
        assert 1 <= node.column <= len(lines[node.line - 1]) + 1
    assert parse(ast.to_eql(parsed)) == parsed


@pytest.mark.skipif(not SUITE_FILES, reason=SKIP_REASON)
@pytest.mark.parametrize(("suite", "name", "query"), DISABLED, ids=[f"{s}:{n}" for s, n, _ in DISABLED])
def test_disabled_query_classified(suite: str, name: str, query: str) -> None:
    if name in ACCEPTED_BY_ELASTICSEARCH:
        assert isinstance(parse(query), ast.Query)
        return
    with pytest.raises(EqlSyntaxError) as caught:
        parse(query)
    error = caught.value
    assert any(marker in error.message for marker in REJECTION_MARKERS), error.message
    assert 1 <= error.line <= len(query.splitlines())


@pytest.mark.skipif(not SUITE_FILES, reason=SKIP_REASON)
def test_accepted_list_names_exist() -> None:
    names = {name for _, name, _ in DISABLED}
    assert set(ACCEPTED_BY_ELASTICSEARCH) <= names
    rejected = len(DISABLED) - len(ACCEPTED_BY_ELASTICSEARCH)
    assert (len(ACCEPTED_BY_ELASTICSEARCH), rejected) == (17, 97)


@pytest.mark.skipif(not SUITE_FILES, reason=SKIP_REASON)
def test_suite_features_are_represented() -> None:
    kinds = {type(node).__name__ for _, _, query in ACTIVE for node in ast.walk(parse(query))}
    assert {"Sequence", "MaxSpan", "Pipe", "PatternMatch", "InList", "FunctionCall", "Arithmetic"} <= kinds
    steps = [node for _, _, query in ACTIVE for node in ast.walk(parse(query)) if isinstance(node, ast.Step)]
    assert any(step.missing for step in steps)
    assert any(step.runs > 1 for step in steps)
