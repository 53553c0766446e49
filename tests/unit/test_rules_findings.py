"""Finding output formats."""

from __future__ import annotations

import json

from deployer.rules.findings import ERROR, WARNING, Finding, format_findings, has_errors

F1 = Finding(
    "d/r.yaml", 12, 5, "my-rule", "allowed-value", ERROR, '"created" is not allowed', "did you mean creation?"
)
F2 = Finding("d/a.yaml", 3, 1, None, "yaml", WARNING, "multi\nline, 100%: x")


def test_text_format() -> None:
    assert F1.format_text() == (
        'd/r.yaml:12:5: my-rule: "created" is not allowed (hint: did you mean creation?) [allowed-value]'
    )
    assert F2.format_text() == "d/a.yaml:3:1: -: warning: multi\nline, 100%: x [yaml]"
    # Sorted by path, then position.
    assert format_findings([F1, F2]).splitlines()[0].startswith("d/a.yaml")


def test_json_format() -> None:
    items = json.loads(format_findings([F1], "json"))
    assert items == [
        {
            "path": "d/r.yaml",
            "line": 12,
            "column": 5,
            "rule_id": "my-rule",
            "code": "allowed-value",
            "severity": "error",
            "message": '"created" is not allowed',
            "hint": "did you mean creation?",
        }
    ]


def test_github_format_escapes() -> None:
    assert F1.format_github() == (
        '::error file=d/r.yaml,line=12,col=5,title=allowed-value::my-rule: "created" is not allowed '
        "(hint: did you mean creation?)"
    )
    odd = Finding("a,b:c.yaml", 1, 1, None, "yaml", WARNING, "x\ny 100%")
    assert odd.format_github() == "::warning file=a%2Cb%3Ac.yaml,line=1,col=1,title=yaml::x%0Ay 100%25"


def test_has_errors() -> None:
    assert has_errors([F1, F2]) and not has_errors([F2]) and not has_errors([])
