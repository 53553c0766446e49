"""`dac run`: output format (exact keys and order), stdin and gzip input, exit codes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployer.cli import main

DATA = Path(__file__).resolve().parents[1] / "data" / "testing"
RULES = DATA / "rules"
CHAIN = RULES / "fixtures" / "chain.ndjson"


def _run(*args: str, input: bytes | None = None):  # noqa: ANN202, A002
    return CliRunner().invoke(main, ["run", *args], input=input)


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_output_is_one_compact_object_per_match_with_exact_keys() -> None:
    result = _run("--events", str(CHAIN), "--rules", str(RULES))
    assert result.exit_code == 0, result.output
    raw = result.stdout.splitlines()
    objs = [json.loads(line) for line in raw]
    for line, obj in zip(raw, objs, strict=True):
        assert list(obj) == ["rule_id", "name", "implements", "event_ids", "join_keys"]
        assert line == json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    by_rule = {o["rule_id"]: o for o in objs}
    assert set(by_rule) == {"t-app-write-spawn", "t-child-network", "t-chain", "t-single"}
    assert by_rule["t-app-write-spawn"]["event_ids"] == ["e1", "e2"]
    assert by_rule["t-app-write-spawn"]["join_keys"] == ["A"]
    assert by_rule["t-child-network"]["event_ids"] == ["e2", "e3"]
    assert by_rule["t-single"]["event_ids"] == ["e2"]
    chain = by_rule["t-chain"]
    assert chain == {
        "rule_id": "t-chain",
        "name": "Test app writes, spawns a child that talks to the network",
        "implements": ["AN1314", "T1204.002"],
        "event_ids": ["e2", "e3"],
        "join_keys": ["B"],
    }
    # A rule over alerts comes after the rules it reads.
    order = [o["rule_id"] for o in objs]
    assert order.index("t-chain") > order.index("t-app-write-spawn")
    assert order.index("t-chain") > order.index("t-child-network")


def test_no_match_exits_zero_and_prints_nothing() -> None:
    result = _run("--events", str(RULES / "fixtures" / "quiet.ndjson"), "--rules", str(RULES))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""


def test_stdin_and_gzip_give_the_same_output() -> None:
    expected = _run("--events", str(CHAIN), "--rules", str(RULES)).stdout
    assert _run("--events", "-", "--rules", str(RULES), input=CHAIN.read_bytes()).stdout == expected
    gz = gzip.compress(CHAIN.read_bytes())
    assert _run("--events", "-", "--rules", str(RULES), input=gz).stdout == expected


def test_repeatable_rules_option() -> None:
    result = _run(
        "--events",
        str(CHAIN),
        "--rules",
        str(RULES / "single.yaml"),
        "--rules",
        str(RULES / "child_network.yaml"),
    )
    assert result.exit_code == 0, result.output
    assert sorted(o["rule_id"] for o in _lines(result.stdout)) == ["t-child-network", "t-single"]


def test_malformed_line_exits_one_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ndjson"
    lines = CHAIN.read_text().splitlines()
    bad.write_text("\n".join([lines[0], lines[1], '{"@timestamp": "2024-05-01T12:00:00Z", "event": {'][:3]))
    result = _run("--events", str(bad), "--rules", str(RULES))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert f"{bad}:3: invalid JSON" in result.stderr
    assert "Traceback" not in result.output


def test_bad_stdin_names_stdin_and_line() -> None:
    result = _run(
        "--events",
        "-",
        "--rules",
        str(RULES),
        input=b'{"@timestamp": "2024-05-01T12:00:00Z"}\n{"event": {}}\n',
    )
    assert result.exit_code == 1
    assert "<stdin>:2: missing @timestamp" in result.stderr


def test_missing_dependency_is_exit_one(tmp_path: Path) -> None:
    result = _run("--events", str(CHAIN), "--rules", str(DATA / "missing_dep"))
    assert result.exit_code == 1
    assert "t-orphan" in result.stderr and "t-nowhere" in result.stderr


def test_cycle_is_exit_one() -> None:
    result = _run("--events", str(CHAIN), "--rules", str(DATA / "cycle"))
    assert result.exit_code == 1
    assert "dependency cycle" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],  # --events is required
        ["--events", "/no/such/file.ndjson", "--rules", str(RULES)],
        ["--events", str(CHAIN), "--rules", "/no/such/dir"],
        ["--events", str(CHAIN), "--bogus"],
    ],
)
def test_usage_errors_exit_two(args: list[str]) -> None:
    assert _run(*args).exit_code == 2


def test_default_rules_dir_missing_is_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = _run("--events", str(CHAIN))
    assert result.exit_code == 2
    assert "detections" in result.stderr


def test_rule_over_alerts_alone_reads_its_dependencies_from_detections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    shutil.copytree(RULES, tmp_path / "detections")
    monkeypatch.chdir(tmp_path)
    result = _run("--events", str(CHAIN), "--rules", "detections/chain.yaml")
    assert result.exit_code == 0, result.output
    # Only the named rule is reported; its dependencies ran to produce its input.
    assert [(o["rule_id"], o["event_ids"]) for o in _lines(result.stdout)] == [("t-chain", ["e2", "e3"])]


def _with_extra_rules(tmp_path: Path, **queries: str) -> Path:
    """The test rules plus one rule file per keyword (rule_id: query), each depending on nothing."""
    import shutil

    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    for rule_id, body in queries.items():
        (rules / f"{rule_id}.yaml").write_text(
            f"rule_id: {rule_id}\nname: {rule_id}\ndescription: d\ntype: eql\nlanguage: eql\n"
            f"index: [logs-*]\nseverity: low\nrisk_score: 1\n{body}"
        )
    return rules


def test_a_rule_that_cannot_be_evaluated_is_refused_and_the_others_run(tmp_path: Path) -> None:
    good = _run("--events", str(CHAIN), "--rules", str(RULES)).stdout
    rules = _with_extra_rules(
        tmp_path,
        t_regex='query: |\n  process where\n    process.name regex "a~b"\n',
    )
    result = _run("--events", str(CHAIN), "--rules", str(rules))
    # Contract: the other rules' matches are printed as usual, the refused rule is named on stderr
    # with the construct and its position in the rule file, and the exit is 1.
    assert result.exit_code == 1
    assert result.stdout == good
    path = rules / "t_regex.yaml"
    assert f"refused: t_regex: cannot be evaluated offline: {path}:11:" in result.stderr
    assert "not supported offline" in result.stderr
    assert "4 of 5 rules evaluated, 1 refused" in result.stderr


def test_a_failure_while_running_refuses_only_that_rule(tmp_path: Path) -> None:
    good = _run("--events", str(CHAIN), "--rules", str(RULES)).stdout
    # Ordered by a field the events do not have: the rule fails on its first event.
    rules = _with_extra_rules(
        tmp_path, t_untimed="timestamp_field: event.created\nquery: |\n  process where true\n"
    )
    result = _run("--events", str(CHAIN), "--rules", str(rules))
    assert result.exit_code == 1
    assert result.stdout == good
    assert "refused: t_untimed: evaluation failed: ValueError" in result.stderr
    assert "event.created" in result.stderr


def test_bad_input_still_wins_over_a_refused_rule(tmp_path: Path) -> None:
    rules = _with_extra_rules(tmp_path, t_regex='query: |\n  process where process.name regex "a~b"\n')
    bad = tmp_path / "bad.ndjson"
    bad.write_text(CHAIN.read_text() + "{\n")
    result = _run("--events", str(bad), "--rules", str(rules))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "invalid JSON" in result.stderr
    assert "refused" not in result.stderr


def test_sample_rule_runs(tmp_path: Path) -> None:
    rules = _with_extra_rules(
        tmp_path,
        t_sample="query: |\n  sample by host.name\n    [process where true]\n    [file where true]\n",
    )
    result = _run("--events", str(CHAIN), "--rules", str(rules))
    assert result.exit_code == 0, result.output
    (sample,) = [o for o in _lines(result.stdout) if o["rule_id"] == "t_sample"]
    assert sample["event_ids"] == ["e2", "e1"]
    assert sample["join_keys"] == ["ws1"]


def test_a_rule_file_that_does_not_load_leaves_the_others_running(tmp_path: Path) -> None:
    good = _run("--events", str(CHAIN), "--rules", str(RULES)).stdout
    rules = _with_extra_rules(tmp_path)
    (rules / "broken.yaml").write_text("rule_id: [unclosed\n")
    result = _run("--events", str(CHAIN), "--rules", str(rules))
    assert result.exit_code == 1
    assert result.stdout == good
    assert "broken.yaml:2:1:" in result.stderr
    assert "4 of 4 rules evaluated, 0 refused, 1 rule files not loaded" in result.stderr


def test_sample_picks_hits_in_time_order_even_from_an_unsorted_file(tmp_path: Path) -> None:
    rules = _with_extra_rules(
        tmp_path,
        t_sample="query: |\n  sample by host.name\n    [any where true]\n    [any where true]\n",
        # Ordered with a tiebreaker: an unsorted file then goes through the in-memory replay.
        t_tiebreak="tiebreaker_field: event.id\nquery: |\n  any where false\n",
    )
    events = CHAIN.read_text().splitlines()
    shuffled = tmp_path / "shuffled.ndjson"
    shuffled.write_text("\n".join(reversed(events)) + "\n")
    picked = ("--rules", str(rules / "t_sample.yaml"), "--rules", str(rules / "t_tiebreak.yaml"))
    in_order = _run("--events", str(CHAIN), *picked)
    reversed_file = _run("--events", str(shuffled), *picked)
    assert in_order.exit_code == reversed_file.exit_code == 0
    assert _lines(in_order.stdout) == _lines(reversed_file.stdout)
    assert _lines(in_order.stdout)[0]["event_ids"] == ["e1", "e2"]
