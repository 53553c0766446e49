"""EQL functions against Elasticsearch's folding cases (test_string_functions.toml) and edge cases."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest

from deployer.eql import functions
from tests.conftest import SHARED_DIR

CASES_FILE = SHARED_DIR / "eql-conformance" / "unit" / "test_string_functions.toml"

_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>[+-]?\d+(?:\.\d+)?)|(?P<word>\w+~?)|(?P<punct>[(),]))'
)


def _parse_call(text: str) -> tuple[str, bool, list[Any]]:
    """Parse ``name[~](literal, ...)`` (the only shape the folding cases use)."""
    tokens = []
    pos = 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        assert m, f"cannot tokenize {text!r} at {pos}"
        tokens.append(m)
        pos = m.end()
    name = tokens[0]["word"]
    args: list[Any] = []
    for tok in tokens[2:-1]:
        if tok["str"] is not None:
            args.append(tok["str"][1:-1].encode().decode("unicode_escape"))
        elif tok["num"] is not None:
            args.append(float(tok["num"]) if "." in tok["num"] else int(tok["num"]))
        elif tok["word"] is not None:
            args.append({"null": None, "true": True, "false": False}[tok["word"]])
    return name.rstrip("~"), name.endswith("~"), args


# Cases the file leaves unasserted ("# expected = null") where Elasticsearch's StringUtils.between
# returns "" because the left or right bound is not found (null only comes from null arguments).
_NOT_FOUND_EMPTY = {
    'between("welcome to the planet", "welcome", "village")',
    'between("welcome to the planet", "goodbye", "planet")',
    'between("welcome to the planet", "welcome", "x", false)',
    'between("welcome to the planet", "welcome", "x", true)',
    'between("welcome to the planet", "", "x", true)',
}


def _cases() -> tuple[list[Any], list[Any]]:
    if not CASES_FILE.is_file():
        skip = pytest.mark.skip(reason=f"{CASES_FILE} is absent")
        return [pytest.param("", None, True, marks=skip)], [pytest.param("", marks=skip)]
    raw = CASES_FILE.read_text()
    # `# expected = null` means "null or not asserted" (TOML has no null): make it visible.
    data = tomllib.loads(raw.replace("# expected = null", "expected_null = true"))
    folds, failures = [], []
    for section, body in data.items():
        for group in ("fold", None):
            block = body.get(group, {}) if group else body
            for case in block.get("tests", []):
                expr = case["expression"]
                expected = case.get("expected")
                if case.get("expected_null"):
                    expected = "" if expr in _NOT_FOUND_EMPTY else None
                folds.append(
                    pytest.param(
                        expr,
                        expected,
                        "expected" in case or case.get("expected_null", False),
                        id=f"{section}:{expr}",
                    )
                )
        for case in body.get("verifier", {}).get("failures", []):
            failures.append(pytest.param(case["expression"], id=f"{section}:{case['expression']}"))
    return folds, failures


FOLDS, FAILURES = _cases()


@pytest.mark.parametrize("expression,expected,asserted", FOLDS)
def test_fold_case(expression: str, expected: Any, asserted: bool) -> None:
    name, ci, args = _parse_call(expression)
    result = functions.call(name, args, ci)
    assert result == expected and type(result) is type(expected), f"{expression} -> {result!r}"


@pytest.mark.parametrize("expression", FAILURES)
def test_verifier_failure(expression: str) -> None:
    name, ci, args = _parse_call(expression)
    with pytest.raises(ValueError):
        functions.call(name, args, ci)


@pytest.mark.skipif(not CASES_FILE.is_file(), reason="conformance files absent")
def test_case_count() -> None:
    assert len(FOLDS) == 85


@pytest.mark.parametrize(
    "name,args,ci,expected",
    [
        ("modulo", [-10, -6], False, -4),
        ("modulo", [10, -6], False, 4),
        ("modulo", [-10, 6], False, -4),
        ("divide", [7, 2], False, 3),
        ("divide", [-7, 2], False, -3),
        ("divide", [30, 4.0], False, 7.5),
        ("divide", [1, 0], False, None),
        ("add", [1, None], False, None),
        ("multiply", [6, 5], False, 30),
        ("subtract", [1, -5], False, 6),
        ("stringContains", ["abc", ""], False, False),
        ("stringContains", ["ABC", "b"], True, True),
        ("stringContains", ["ABC", "b"], False, False),
        ("indexOf", ["foo.exe", "."], False, 3),
        ("indexOf", ["foo.exe", ".", 10], False, None),
        ("indexOf", ["foo.exe", "o", -5], False, 1),
        ("indexOf", ["FOO", "o"], True, 1),
        ("cidrMatch", ["10.6.48.157", "10.0.0.0/8"], False, True),
        ("cidrMatch", ["192.168.1.1", "10.0.0.0/8", "192.168.0.0/16"], False, True),
        ("cidrMatch", ["2001:db8::1", "2001:db8::/32"], False, True),
        ("cidrMatch", ["2001:db8::1", "10.0.0.0/8"], False, False),
        ("cidrMatch", [None, "10.0.0.0/8"], False, None),
        ("concat", ["a", 1.5, False], False, "a1.5false"),
        ("string", [1e10], False, "1.0E10"),
        ("number", ["0x32", 16], False, 50),
        ("number", ["32", 16], False, 50),
        ("number", ["nope"], False, None),
        ("between", ["C:\\dev\\TestLogs\\something.json", "dev", ".json"], False, "\\TestLogs\\something"),
        ("between", ["System Idle Process", "s", "E"], True, "yst"),
        ("length", ["héllo"], False, 5),
        ("substring", ["hello", None, None], False, "hello"),
        ("endsWith", ["explorer.EXE", ".exe"], True, True),
    ],
)
def test_function_edge_cases(name: str, args: list[Any], ci: bool, expected: Any) -> None:
    assert functions.call(name, args, ci) == expected


def test_tilde_only_on_case_aware_functions() -> None:
    with pytest.raises(ValueError, match="no case-insensitive variant"):
        functions.call("length", ["x"], True)
    for name in ("between", "endsWith", "indexOf", "startsWith", "stringContains"):
        assert functions.lookup(name).case_aware
