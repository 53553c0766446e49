"""`dac run` over Elastic's 678 prebuilt EQL rules (../shared/corpora): every rule is evaluated.

The corpus is imported with `dac import` into a temporary folder, as a team adopting dac would do,
and replayed over generated ECS events. Skipped with a reason when the corpus is absent.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployer.cli import main
from deployer.testing.events import default_field_types
from deployer.testing.loading import load_rules
from deployer.testing.stream import replay_file
from tests.conftest import SHARED_DIR

CORPUS = SHARED_DIR / "corpora" / "elastic-prebuilt-eql-windows-linux.ndjson"
RULES_IN_CORPUS = 678

pytestmark = pytest.mark.skipif(not CORPUS.is_file(), reason=f"{CORPUS} is absent")

_CATEGORIES = ["process", "file", "network", "registry", "library", "authentication", "dns", "iam"]
_NAMES = ["cmd.exe", "powershell.exe", "rundll32.exe", "bash", "sh", "python3", "curl", "sshd"]


def generate_events(count: int, seed: int = 7) -> list[dict]:
    """Time-ordered ECS events over the categories, operating systems and fields the corpus uses."""
    rng = random.Random(seed)
    events = []
    for i in range(count):
        linux = i % 2 == 1
        cat = _CATEGORIES[i % len(_CATEGORIES)]
        host = f"h{rng.randrange(4)}"
        events.append(
            {
                "@timestamp": f"2024-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}.000Z",
                "event": {
                    "id": f"e{i}",
                    "kind": "event",
                    "category": [cat],
                    "type": ["start"],
                    "action": "exec",
                },
                "host": {"id": host, "name": host, "os": {"type": "linux" if linux else "windows"}},
                "user": {"id": str(rng.randrange(3)), "name": "u"},
                "process": {
                    "pid": rng.randrange(100, 110),
                    "name": rng.choice(_NAMES),
                    "args": ["-c", "x"],
                    "parent": {"pid": 1, "name": rng.choice(_NAMES)},
                },
                "file": {"path": "/etc/passwd" if linux else "C:\\Windows\\x.dll", "name": "x"},
                "auditd": {"data": {"syscall": rng.choice(["open", "mprotect"]), "a2": "1b6"}},
            }
        )
    return events


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("corpus")
    rules = work / "rules"
    result = CliRunner().invoke(main, ["import", str(CORPUS), "--out", str(rules)])
    assert result.exit_code == 0, result.output
    events = work / "events.ndjson"
    events.write_text("".join(json.dumps(e) + "\n" for e in generate_events(400)))
    return rules, events


def test_run_evaluates_every_rule_of_the_corpus(imported: tuple[Path, Path]) -> None:
    rules_dir, events = imported
    loaded = load_rules([rules_dir])
    assert not loaded.errors
    assert len(loaded.rules) == RULES_IN_CORPUS
    refused: list = []
    results = list(
        replay_file(loaded.rules, str(events), field_types=default_field_types(), on_refused=refused.append)
    )
    assert [str(r) for r in refused] == []
    # The three `sample` rules are among them (they used to stop the whole run).
    kinds = Counter(
        "sample" if str(r.kibana["query"]).lstrip().startswith("sample") else "other" for r in loaded.rules
    )
    assert kinds["sample"] == 3
    assert all(set(r) == {"rule_id", "name", "implements", "event_ids", "join_keys"} for r in results)


def test_cli_run_over_the_corpus_exits_zero(imported: tuple[Path, Path]) -> None:
    rules_dir, events = imported
    result = CliRunner().invoke(main, ["run", "--rules", str(rules_dir), "--events", str(events)])
    assert result.exit_code == 0, result.stderr
    assert "refused" not in result.stderr


def test_a_planted_unsupported_rule_is_refused_and_the_corpus_still_runs(
    imported: tuple[Path, Path], tmp_path: Path
) -> None:
    rules_dir, events = imported
    planted = tmp_path / "planted.yaml"
    planted.write_text(
        "rule_id: planted-regex\nname: planted\ndescription: d\ntype: eql\nlanguage: eql\n"
        "index: [logs-*]\nseverity: low\nrisk_score: 1\n"
        'query: |\n  process where host.os.type == "linux" and\n    process.name regex "a~b"\n'
    )
    result = CliRunner().invoke(
        main, ["run", "--rules", str(rules_dir), "--rules", str(planted), "--events", str(events)]
    )
    assert result.exit_code == 1
    refused = [line for line in result.stderr.splitlines() if line.startswith("refused: ")]
    assert refused == [
        f"refused: planted-regex: cannot be evaluated offline: {planted}:11:24: not supported offline: "
        "regex complement/intersection operators in 'a~b'"
    ]
    assert f"{RULES_IN_CORPUS} of {RULES_IN_CORPUS + 1} rules evaluated, 1 refused" in result.stderr
