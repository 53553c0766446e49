"""Fixture tests that state which exception items suppress a match (`expect: no_match` + `suppressed_by`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deployer.testing.fixtures import TestResult, run_rule_tests
from deployer.testing.loading import load_rules

DATA = Path(__file__).resolve().parents[1] / "data" / "exceptions_repo"
RULE = "installer_network.yaml"
LIST = "exceptions/egress_allow.yaml"
FP = "only the corporate software portal"
TP = "the portal, then an external host"


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    target = tmp_path / "detections"
    shutil.copytree(DATA, target)
    return target


def _results(repo: Path) -> dict[str, TestResult]:
    loaded = load_rules([repo / RULE], default_dir=repo)
    assert not loaded.errors, loaded.errors
    return {r.name: r for r in run_rule_tests(loaded.rules, exceptions=loaded.exceptions)}


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_allow_list_suppresses_the_benign_install_and_not_the_attack(repo: Path) -> None:
    results = _results(repo)
    assert results[FP].status == "pass" and results[FP].actual == []
    # The excepted portal events are gone; the external connection completes the sequence.
    assert results[TP].status == "pass" and results[TP].actual == [["w-spc2-02", "w-spc2-05"]]


def test_lists_are_found_beside_the_rules_when_a_rule_file_is_named_alone(repo: Path) -> None:
    loaded = load_rules([repo / RULE], default_dir=repo)
    assert list(loaded.exceptions.lists) == ["t-egress-allow"]


def test_without_the_list_the_benign_install_matches(repo: Path) -> None:
    _edit(repo / RULE, "exceptions_list:\n- list_id: t-egress-allow\n", "")
    result = _results(repo)[FP]
    assert result.status == "fail" and result.actual == [["w-fpsp-02", "w-fpsp-03"]]


def test_an_item_that_is_not_needed_fails_the_test(repo: Path) -> None:
    _edit(
        repo / LIST,
        "  - item_id: an1314-egress-corp-software-portal-https",
        "  - item_id: unused\n    name: unused\n    description: matches nothing here\n    entries:\n"
        "      - {field: user.name, type: match, operator: included, value: nobody}\n"
        "  - item_id: an1314-egress-corp-software-portal-https",
    )
    _edit(
        repo / RULE,
        "    - an1314-egress-corp-software-portal-https\n",
        "    - an1314-egress-corp-software-portal-https\n    - unused\n",
    )
    result = _results(repo)[FP]
    assert result.status == "fail" and result.actual == []
    assert "'unused' is not needed" in result.message


def test_events_that_never_match_prove_nothing(repo: Path) -> None:
    _edit(repo / RULE, 'process.parent.name : "msedge.exe"', 'process.parent.name : "chrome.exe"')
    result = _results(repo)[FP]
    assert result.status == "fail" and "even without its exceptions" in result.message


def test_suppressed_by_on_a_match_test_is_a_bad_definition(repo: Path) -> None:
    _edit(
        repo / RULE,
        "    - [w-spc2-02, w-spc2-05]\n",
        "    - [w-spc2-02, w-spc2-05]\n    suppressed_by: [unused]\n",
    )
    result = _results(repo)[TP]
    assert result.status == "error" and "suppressed_by applies to expect: no_match" in result.message
