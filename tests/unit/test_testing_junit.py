"""JUnit XML: one testsuite per rule, one testcase per fixture test, valid XML whatever the text."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from deployer.testing.fixtures import TestResult
from deployer.testing.junit import junit_xml, write_junit


def _results() -> list[TestResult]:
    return [
        TestResult("r-a", "positive", "pass", path="detections/a.yaml", duration=0.01),
        TestResult(
            "r-a",
            'negative <with> "quotes" & amps',
            "fail",
            path="detections/a.yaml",
            expect="no_match",
            actual=[["e1", "e2"]],
            message="expected no match, got 1:\nmatched but not expected:\n  + [e1, e2]",
            duration=0.02,
        ),
        TestResult(
            "r-b", "broken", "error", path="detections/b.yaml", message="f.ndjson:3: invalid JSON\x00\x1b"
        ),
    ]


def test_structure_and_counts(tmp_path: Path) -> None:
    out = tmp_path / "junit.xml"
    write_junit(_results(), out)
    root = ET.parse(out).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "1")
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["r-a", "r-b"]
    assert [(s.get("tests"), s.get("failures"), s.get("errors")) for s in suites] == [
        ("2", "1", "0"),
        ("1", "0", "1"),
    ]
    cases = suites[0].findall("testcase")
    assert [c.get("name") for c in cases] == ["positive", 'negative <with> "quotes" & amps']
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None
    assert failure.get("message") == "expected no match, got 1:"
    assert "+ [e1, e2]" in (failure.text or "")
    assert cases[1].get("classname") == "r-a"
    error = suites[1].find("testcase/error")
    assert error is not None
    # Characters XML cannot hold are spelled out rather than breaking the file.
    assert "\\x00" in (error.get("message") or "")
    assert "\\x1b" in (error.text or "")


def test_text_round_trips_through_a_parser() -> None:
    text = junit_xml(_results())
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    ET.fromstring(text.encode("utf-8"))


def test_empty_results_are_valid() -> None:
    root = ET.fromstring(junit_xml([]).encode())
    assert root.get("tests") == "0"
