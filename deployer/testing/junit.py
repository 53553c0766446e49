"""Write fixture test results as JUnit XML: one testsuite per rule, one testcase per fixture test."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from deployer.testing.fixtures import TestResult

# Characters XML 1.0 cannot carry at all, even escaped; CI parsers reject the whole file on one.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(text: str) -> str:
    return _INVALID_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _details(result: TestResult) -> str:
    lines = [
        f"rule: {result.rule_id} ({result.path})",
        f"test: {result.name}",
        f"events: {result.events}",
        f"expect: {result.expect}",
        f"expected sequences: {result.expected}",
        f"actual sequences: {result.actual}",
    ]
    if result.message:
        lines += ["", result.message]
    return "\n".join(lines)


def build_junit(results: Sequence[TestResult], *, suite_name: str = "dac test") -> ET.Element:
    """Build the JUnit XML tree for the results (rules in first-seen order)."""
    by_rule: dict[str, list[TestResult]] = {}
    for result in results:
        by_rule.setdefault(result.rule_id, []).append(result)
    root = ET.Element("testsuites", name=_clean(suite_name))
    totals = {"tests": 0, "failures": 0, "errors": 0, "time": 0.0}
    for rule_id, rule_results in by_rule.items():
        failures = sum(r.status == "fail" for r in rule_results)
        errors = sum(r.status == "error" for r in rule_results)
        elapsed = sum(r.duration for r in rule_results)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=_clean(rule_id),
            tests=str(len(rule_results)),
            failures=str(failures),
            errors=str(errors),
            skipped="0",
            time=f"{elapsed:.3f}",
        )
        if rule_results[0].path:
            suite.set("file", _clean(rule_results[0].path))
        for r in rule_results:
            case = ET.SubElement(
                suite, "testcase", classname=_clean(rule_id), name=_clean(r.name), time=f"{r.duration:.3f}"
            )
            if r.path:
                case.set("file", _clean(r.path))
            if r.status == "fail":
                first = (r.message.splitlines() or ["expectation not met"])[0]
                el = ET.SubElement(case, "failure", message=_clean(first), type="ExpectationMismatch")
                el.text = _clean(_details(r))
            elif r.status == "error":
                first = (r.message.splitlines() or ["error"])[0]
                el = ET.SubElement(case, "error", message=_clean(first), type="TestError")
                el.text = _clean(_details(r))
        totals["tests"] += len(rule_results)
        totals["failures"] += failures
        totals["errors"] += errors
        totals["time"] += elapsed
    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failures"]))
    root.set("errors", str(totals["errors"]))
    root.set("time", f"{totals['time']:.3f}")
    return root


def junit_xml(results: Sequence[TestResult], *, suite_name: str = "dac test") -> str:
    """The JUnit XML document for the results, as text."""
    root = build_junit(results, suite_name=suite_name)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(results: Sequence[TestResult], path: str | Path, *, suite_name: str = "dac test") -> None:
    """Write the JUnit XML document for the results to a file (UTF-8)."""
    Path(path).write_text(junit_xml(results, suite_name=suite_name), encoding="utf-8")
