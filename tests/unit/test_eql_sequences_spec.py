"""Elasticsearch's sequence-matcher specs (sequences.series-spec) run against SequenceMatcher."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deployer.eql.sequence import SequenceMatcher
from tests.conftest import SHARED_DIR

SPEC = SHARED_DIR / "eql-conformance" / "unit" / "sequences.series-spec"
TOKEN = re.compile(r"(?:(?P<key>\w+)\|)?(?P<name>[A-Za-z]+)(?P<ts>\d+)")


def _parse(path: Path) -> list[tuple[str, list[list[str]], list[list[str]]]]:
    """Return (name, stage lines, expected lines) for every spec in the file."""
    lines = [ln.rstrip() for ln in path.read_text().splitlines()]
    lines = [ln for ln in lines if not ln.strip().startswith("//")]
    specs = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        name = lines[i].strip()
        i += 1
        blocks: list[list[list[str]]] = [[], []]
        for block in blocks:
            while lines[i].strip() != ";":
                if lines[i].strip():
                    block.append(lines[i].split())
                i += 1
            i += 1
        specs.append((name, blocks[0], blocks[1]))
    return specs


def _specs() -> list[tuple[str, list[list[str]], list[list[str]]]]:
    if not SPEC.is_file():
        return []
    return _parse(SPEC)


def _run(stages: list[list[str]]) -> list[str]:
    events = []
    for stage, tokens in enumerate(stages):
        for tok in tokens:
            m = TOKEN.fullmatch(tok)
            assert m, tok
            events.append((int(m["ts"]), stage, m["key"], f"{m['name']}{m['ts']}"))
    events.sort()
    matcher = SequenceMatcher(len(stages))
    found = []
    for ts, stage, key, label in events:
        done = matcher.advance(stage, key, ts, (ts, label, key))
        if done:
            prefix = f"{key}|" if key else ""
            found.append(prefix + " ".join(item[1] for item in done))
    return found


def _expected(lines: list[list[str]]) -> list[str]:
    return [" ".join(tokens) for tokens in lines]


@pytest.mark.skipif(not SPEC.is_file(), reason=f"{SPEC} is absent")
def test_spec_file_has_all_specs() -> None:
    assert len(_specs()) == 25


@pytest.mark.parametrize(
    "name,stages,expected",
    _specs() or [pytest.param("absent", [], [], marks=pytest.mark.skip(reason=f"{SPEC} is absent"))],
)
def test_series_spec(name: str, stages: list[list[str]], expected: list[list[str]]) -> None:
    assert _run(stages) == _expected(expected), name
