"""Elasticsearch's EQL conformance suites run through the offline evaluator (skipped when absent)."""

from __future__ import annotations

import pytest

from deployer.eql.conformance import SUITES, load_dataset, load_suite, main, run_suites
from tests.conftest import SHARED_DIR

CONFORMANCE_DIR = SHARED_DIR / "eql-conformance"
# The bar: every active query of the five suites passes. Lower it only with a reason per query.
MIN_PASSED = 264

pytestmark = pytest.mark.skipif(not CONFORMANCE_DIR.is_dir(), reason=f"{CONFORMANCE_DIR} is absent")


@pytest.fixture(scope="module")
def report():
    return run_suites(CONFORMANCE_DIR)


def test_all_queries_loaded(report) -> None:
    assert report.total == 264


def test_conformance_bar(report) -> None:
    failures = [f"{r.file}:{r.name}: {r.status}: {r.detail}" for r in report.results if r.status != "passed"]
    assert report.count("passed") >= MIN_PASSED, "\n".join(failures)
    assert report.count("failed") == 0, "\n".join(failures)


@pytest.mark.parametrize("keyword_type", ["wildcard"])
def test_results_do_not_depend_on_keyword_type(keyword_type: str) -> None:
    assert run_suites(CONFORMANCE_DIR, keyword_type).count("passed") >= MIN_PASSED


def test_cli_summary_line(capsys) -> None:
    code = main([str(CONFORMANCE_DIR)])
    out = capsys.readouterr().out.splitlines()
    assert out[len(SUITES)] == "conformance: 264 passed, 0 failed, 0 unsupported of 264"
    assert code == 0
    # The sample suites follow with their own lines (tests/unit/test_eql_sample_conformance.py).
    assert out[-1].startswith("sample conformance: ")


def test_cli_missing_directory(tmp_path, capsys) -> None:
    assert main([str(tmp_path / "nope")]) == 2


def test_loader_details() -> None:
    endgame = load_dataset(CONFORMANCE_DIR, "endgame-140")
    by_id = {e["serial_event_id"]: e for e in endgame.events}
    # FILETIME → Unix ms, truncated; 75304 is earlier than 75303.
    assert by_id[75304]["@timestamp"] < by_id[75303]["@timestamp"]
    assert endgame.field_types["event.category"] == {"type": "alias", "path": "event_type"}
    assert endgame.field_types["source_address"]["type"] == "ip"
    extra = load_dataset(CONFORMANCE_DIR, "extra")
    assert extra.field_types["optional_field_default_null"]["null_value"] == "NULL"
    assert extra.tiebreaker == "sequence"
    entries = load_suite(CONFORMANCE_DIR / "test_extra.toml")
    simple = next(e for e in entries if e["name"] == "sequenceWithOptionalMultivalue_simple")
    assert simple["join_keys"] == ["null"]
