"""Elasticsearch's `sample` suites run through the offline evaluator (skipped when absent)."""

from __future__ import annotations

import pytest

from deployer.eql.conformance import SAMPLE_SUITES, load_sample_dataset, load_suite, main, run_sample_suites
from tests.conftest import SHARED_DIR

CONFORMANCE_DIR = SHARED_DIR / "eql-conformance"
SAMPLE_DIR = CONFORMANCE_DIR / "sample"
# The bar: all 39 queries of the three sample suites pass.
EXPECTED = 39

pytestmark = pytest.mark.skipif(not SAMPLE_DIR.is_dir(), reason=f"{SAMPLE_DIR} is absent")


@pytest.fixture(scope="module")
def report():
    return run_sample_suites(CONFORMANCE_DIR)


def test_all_sample_queries_loaded(report) -> None:
    assert report.total == EXPECTED
    assert {r.file for r in report.results} == set(SAMPLE_SUITES)


def test_sample_conformance_bar(report) -> None:
    failures = [f"{r.file}:{r.name}: {r.status}: {r.detail}" for r in report.results if r.status != "passed"]
    assert report.count("passed") == EXPECTED, "\n".join(failures)


def test_cli_reports_the_sample_figure(capsys) -> None:
    code = main([str(CONFORMANCE_DIR)])
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"sample conformance: {EXPECTED} passed, 0 failed, 0 unsupported of {EXPECTED}"
    assert code == 0


def test_sample_loader_indexes_custom_date_formats() -> None:
    data = load_sample_dataset(CONFORMANCE_DIR, SAMPLE_SUITES["sample/test_sample.toml"])
    by_id = {e["id"]: e for e in data.events}
    # dd-MM-yyyy (sample1) and yyyy-MM-dd (sample2) both index 17 Dec 2022 as the same epoch ms.
    assert by_id[17]["@timestamp_pretty"] == by_id[27]["@timestamp_pretty"] == 1671235200000
    assert data.field_types["@timestamp_pretty"] == {"type": "date"}
    assert [e["id"] for e in data.events][:3] == [11, 12, 13]


def test_entries_carry_request_parameters() -> None:
    entries = {e["name"]: e for e in load_suite(SAMPLE_DIR / "test_sample.toml")}
    assert entries["size2"]["size"] == 2
    multi = load_suite(SAMPLE_DIR / "test_sample_multi.toml")
    assert all("max_samples_per_key" in e for e in multi)
