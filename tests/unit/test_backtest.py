"""`dac backtest`: per-rule matches, alerts under max_signals per run window, distinct counts, reports."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from click.testing import CliRunner

from deployer.cli import main
from deployer.testing.backtest import RuleSummary, interval_ms, lookback_ms
from deployer.testing.backtest_report import ProgressLine, plain_size

DATA = Path(__file__).resolve().parents[1] / "data" / "testing"
RULES = DATA / "rules"
CHAIN = RULES / "fixtures" / "chain.ndjson"

RULE = """rule_id: {rule_id}
name: {name}
description: Backtest test rule.
type: eql
language: eql
query: |
  {query}
index: [logs-endpoint.events.*]
severity: low
risk_score: 21
{extra}
metadata:
  implements: [T1059]
  platforms: [windows]
  maturity: production
"""


def _rule(tmp: Path, rule_id: str, query: str, extra: str = "") -> None:
    (tmp / f"{rule_id}.yaml").write_text(
        RULE.format(rule_id=rule_id, name=rule_id.upper(), query=query, extra=extra)
    )


def _event(ts_s: float, category: str, name: str, host: str, user: str, entity: str) -> dict:
    ms = int(ts_s * 1000)
    return {
        "@timestamp": f"2024-05-01T{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}Z",
        "event": {"category": [category], "type": ["start"]},
        "process": {"name": name, "entity_id": entity},
        "host": {"name": host},
        "user": {"name": user},
    }


def _write(path: Path, events: list[dict]) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


def _backtest(*args: str) -> dict:
    result = CliRunner().invoke(main, ["backtest", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_max_signals_caps_alerts_per_run_window(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    _rule(rules, "noisy", 'process where process.name : "cmd.exe"', "max_signals: 2\ninterval: 1m")
    _rule(
        rules,
        "seq",
        'sequence by process.entity_id with maxspan=1m [process where process.name : "cmd.exe"] '
        "[network where true]",
        "building_block_type: default",
    )
    events = []
    # Five cmd.exe starts in the first minute, one in the second; each followed by a connection.
    for i, t in enumerate([1, 2, 3, 4, 5, 61]):
        events.append(_event(t, "process", "cmd.exe", f"h{i % 2}", f"u{i % 3}", f"p{i}"))
        events.append(_event(t + 0.5, "network", "cmd.exe", f"h{i % 2}", f"u{i % 3}", f"p{i}"))
    _write(tmp_path / "ev.ndjson", events)
    report = _backtest("--rules", str(rules), "--events", str(tmp_path / "ev.ndjson"))
    assert report["events"] == 12
    by_id = {r["rule_id"]: r for r in report["rules"]}
    noisy = by_id["noisy"]
    assert noisy["matches"] == 6
    # Window [0, 60s): 5 matches, 2 written; window [60s, 120s): 1.
    assert noisy["alerts"] == 3 and noisy["visible_alerts"] == 3
    assert noisy["matches_over_max_signals"] == 3
    assert (noisy["hosts"], noisy["users"], noisy["entities"]) == (2, 3, 6)
    assert noisy["first"] == "2024-05-01T00:00:01.000Z" and noisy["last"] == "2024-05-01T00:01:01.000Z"
    assert noisy["hourly"] == {"2024-05-01T00:00:00.000Z": 6}
    seq = by_id["seq"]
    # A sequence writes a building block per event plus a shell; a building-block rule shows none.
    assert seq["matches"] == 6 and seq["alerts"] == 18 and seq["visible_alerts"] == 0
    assert seq["building_block"] is True
    assert seq["entities"] == 6
    # Noisiest first.
    assert [r["rule_id"] for r in report["rules"]] == ["seq", "noisy"]


def test_sequences_are_bounded_by_the_look_back_in_backtest_not_in_run(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    query = "sequence by process.entity_id [process where true] [network where true]"
    _rule(rules, "free", query, "from: now-9m")
    _rule(rules, "wide", query.replace("entity_id", "entity_id with maxspan=1h"), "from: now-9m")
    _rule(rules, "default", query)  # Kibana's default look-back: now-6m
    events = []
    # p1's sequence spans 8 minutes, p2's 10 minutes: only p1's fits in a 9-minute look-back.
    for entity, start, gap in (("p1", 0, 480), ("p2", 1, 600)):
        events.append((start, _event(start, "process", "a.exe", "h", "u", entity)))
        events.append((start + gap, _event(start + gap, "network", "a.exe", "h", "u", entity)))
    _write(tmp_path / "ev.ndjson", [e for _, e in sorted(events, key=lambda x: x[0])])
    report = _backtest("--rules", str(rules), "--events", str(tmp_path / "ev.ndjson"))
    by_id = {r["rule_id"]: r for r in report["rules"]}
    assert by_id["free"]["matches"] == 1 and by_id["wide"]["matches"] == 1
    assert by_id["default"]["matches"] == 0
    # `dac run` is Elasticsearch's EQL search over every event: both sequences match.
    run = CliRunner().invoke(main, ["run", "--rules", str(rules), "--events", str(tmp_path / "ev.ndjson")])
    assert run.exit_code == 0, run.output
    counts = Counter(json.loads(line)["rule_id"] for line in run.stdout.splitlines() if line.strip())
    assert counts == {"free": 2, "wide": 2, "default": 2}


def test_look_back_from_kibana_date_math() -> None:
    assert lookback_ms({}) == 360_000  # Kibana's default `from`: now-6m
    assert lookback_ms({"from": "now-9m"}) == 540_000
    assert lookback_ms({"from": "now-4200s", "to": "now"}) == 4_200_000
    assert lookback_ms({"from": "now-2h", "to": "now-1h"}) == 3_600_000
    assert lookback_ms({"from": "2024-05-01T00:00:00Z"}) is None


def test_refused_rule_is_reported_and_the_others_evaluated(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    _rule(rules, "good", 'process where process.name : "cmd.exe"')
    _rule(rules, "bad", 'process where process.name regex "~(a)"')
    _write(tmp_path / "ev.ndjson", [_event(1, "process", "cmd.exe", "h", "u", "p")])
    report = _backtest("--rules", str(rules), "--events", str(tmp_path / "ev.ndjson"))
    assert [r["rule_id"] for r in report["rules"]] == ["good"]
    assert report["rules"][0]["matches"] == 1
    assert [x["rule_id"] for x in report["refused"]] == ["bad"]
    assert "not supported offline" in report["refused"][0]["message"]
    text = CliRunner().invoke(
        main, ["backtest", "--rules", str(rules), "--events", str(tmp_path / "ev.ndjson")]
    )
    assert text.exit_code == 0
    assert "refused: bad:" in text.stdout


def test_out_of_order_input_gives_the_same_report(tmp_path: Path) -> None:
    events = [json.loads(line) for line in CHAIN.read_text().splitlines() if line.strip()]
    _write(tmp_path / "sorted.ndjson", events)
    shuffled = events[:]
    random.Random(3).shuffle(shuffled)
    _write(tmp_path / "shuffled.ndjson", shuffled)
    a = _backtest("--rules", str(RULES), "--events", str(tmp_path / "sorted.ndjson"))
    b = _backtest("--rules", str(RULES), "--events", str(tmp_path / "shuffled.ndjson"))
    assert a == b
    by_id = {r["rule_id"]: r for r in a["rules"]}
    # Rules over other rules' alerts are evaluated too.
    assert by_id["t-chain"]["matches"] == 1


def test_text_and_html_reports(tmp_path: Path) -> None:
    text = CliRunner().invoke(main, ["backtest", "--rules", str(RULES), "--events", str(CHAIN)])
    assert text.exit_code == 0, text.output
    first = text.stdout.splitlines()[0].split()
    assert first[:4] == ["rule", "kind", "matches", "alerts"]
    assert "Test app writes, spawns a child that talks to the network" in text.stdout
    out = tmp_path / "report.html"
    page = CliRunner().invoke(
        main, ["backtest", "--rules", str(RULES), "--events", str(CHAIN), "--format", "html", "-o", str(out)]
    )
    assert page.exit_code == 0 and page.stdout == ""
    html = out.read_text()
    assert html.count("<svg") == 4  # one histogram per rule that matched
    # Self-contained: nothing fetched, nothing run.
    assert "<script" not in html and "src=" not in html and "http" not in html.replace("http-equiv", "")


def test_estimated_distinct_counts_are_marked_in_every_format(monkeypatch) -> None:  # noqa: ANN001
    from deployer.testing import backtest_report, distinct
    from deployer.testing.backtest import Backtest

    monkeypatch.setattr(distinct, "EXACT_MAX", 10)
    s = RuleSummary("r", "R", "event", False, 100, 300_000)
    for i in range(2_000):
        s.add([{"@timestamp": i, "host": {"name": "h"}, "process": {"entity_id": f"p{i}"}}], [])
    result = Backtest([s], [], 2_000)
    doc = backtest_report.to_json(result)["rules"][0]
    assert doc["estimated"] == ["entities"] and doc["hosts"] == 1
    assert abs(doc["entities"] - 2_000) < 100
    approx = s.entities.text()
    assert approx.startswith("~") and approx in backtest_report.to_text(result)
    assert approx in backtest_report.to_html(result)


def test_bad_events_exit_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"@timestamp": "2024-05-01T00:00:00Z"}\nnot json\n')
    result = CliRunner().invoke(main, ["backtest", "--rules", str(RULES), "--events", str(bad)])
    assert result.exit_code == 1
    assert "bad.ndjson:2" in result.output


def test_progress_line_rate_and_eta() -> None:
    now = [100.0]
    line = ProgressLine(1000, clock=lambda: now[0])
    now[0] = 110.0
    assert line(20_000, 250) == "read 20,000 events, 2,000 events/s, 25%, ETA 0:00:30"
    assert ProgressLine(None, clock=lambda: now[0])(5, None).startswith("read 5 events")


def test_plain_size_is_unknown_for_gzip_and_stdin(tmp_path: Path) -> None:
    import gzip

    gz = tmp_path / "e.ndjson.gz"
    gz.write_bytes(gzip.compress(b"{}\n"))
    assert plain_size(str(gz)) is None
    assert plain_size("-") is None
    assert plain_size(str(CHAIN)) == CHAIN.stat().st_size


def test_interval_parsing() -> None:
    assert interval_ms("5m") == 300_000
    assert interval_ms("1h") == 3_600_000
    assert interval_ms(None) == 300_000
    assert interval_ms("soon") == 300_000


def test_distinct_counts_switch_to_estimates_past_the_exact_bound(monkeypatch) -> None:  # noqa: ANN001
    from deployer.testing import distinct

    monkeypatch.setattr(distinct, "EXACT_MAX", 3)
    s = RuleSummary("r", "R", "event", False, 100, 300_000)
    for i in range(3):
        s.add([{"@timestamp": i, "host": {"name": f"h{i}"}, "user": {"name": "u"}}], [])
    assert s.hosts.count == 3 and not s.hosts.estimated and s.hosts.text() == "3"
    for i in range(3, 5):
        s.add([{"@timestamp": i, "host": {"name": f"h{i}"}, "user": {"name": "u"}}], [])
    assert s.matches == 5 and s.hosts.estimated and s.hosts.text().startswith("~")
    assert s.hosts.count == 5  # linear counting is exact at this size
    assert s.users.count == 1 and not s.users.estimated


def test_run_windows_kept_are_bounded() -> None:
    from deployer.testing.backtest import WINDOWS_KEPT

    s = RuleSummary("r", "R", "event", False, 1, 60_000)
    windows = 20 * WINDOWS_KEPT
    for w in range(windows):
        for k in range(3):  # three matches per one-minute run; max_signals 1 writes one
            s.add([{"@timestamp": w * 60_000 + k}], [])
        assert len(s._windows) <= WINDOWS_KEPT
    assert s.matches == 3 * windows and s.alerts == windows and s.capped == 2 * windows


def test_workers_give_the_one_process_report(tmp_path: Path) -> None:
    events = [json.loads(line) for line in CHAIN.read_text().splitlines() if line.strip()]
    shuffled = events[:]
    random.Random(5).shuffle(shuffled)
    _write(tmp_path / "shuffled.ndjson", shuffled)
    for path in (CHAIN, tmp_path / "shuffled.ndjson"):
        one = _backtest("--rules", str(RULES), "--events", str(path), "--jobs", "1")
        for jobs in ("2", "3"):
            assert _backtest("--rules", str(RULES), "--events", str(path), "--jobs", jobs) == one
    assert {r["rule_id"]: r["matches"] for r in one["rules"]}["t-chain"] == 1


def test_stdin_is_read_once_for_all_workers(tmp_path: Path) -> None:
    text = CHAIN.read_text()
    one = CliRunner().invoke(
        main, ["backtest", "--rules", str(RULES), "--events", "-", "--format", "json", "-j", "1"], input=text
    )
    two = CliRunner().invoke(
        main, ["backtest", "--rules", str(RULES), "--events", "-", "--format", "json", "-j", "2"], input=text
    )
    assert one.exit_code == two.exit_code == 0, two.output
    assert json.loads(one.stdout) == json.loads(two.stdout)
    assert json.loads(two.stdout)["events"] == len([x for x in text.splitlines() if x.strip()])


def test_bad_events_in_workers_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"@timestamp": "2024-05-01T00:00:00Z"}\n{"@timestamp": 5, "x": \n')
    result = CliRunner().invoke(main, ["backtest", "--rules", str(RULES), "--events", str(bad), "-j", "2"])
    assert result.exit_code == 1
    assert "bad.ndjson:2" in result.output
    assert "Traceback" not in result.output


def test_split_keeps_dependencies_together_and_balances() -> None:
    from types import SimpleNamespace

    from deployer.testing.workers import split_rules

    def rule(rule_id: str, *deps: str) -> SimpleNamespace:
        return SimpleNamespace(
            rule_id=rule_id, kibana={}, metadata={"depends_on": list(deps)} if deps else {}
        )

    lib = [rule("lib")]
    rules = [
        rule("a"),
        rule("b", "a"),
        rule("c", "b"),
        rule("d"),
        rule("e"),
        rule("f", "lib"),
        rule("g", "lib"),
    ]
    shares = split_rules(rules, lib, 2)
    ids = [[r.rule_id for r in share] for share in shares]
    assert sorted(sum(ids, [])) == list("abcdefg")
    where = {rule_id: i for i, share in enumerate(ids) for rule_id in share}
    # A chain of dependencies, and two rules over one library rule, stay in one share each.
    assert where["a"] == where["b"] == where["c"]
    assert where["f"] == where["g"]
    assert sorted(len(s) for s in ids) == [3, 4]
    # No more shares than linked groups, none empty.
    assert len(split_rules(rules[:3], lib, 8)) == 1
    assert len(split_rules(rules, lib, 8)) == 4


def test_a_worker_that_dies_is_an_error() -> None:
    import os

    import pytest

    from deployer.testing.workers import run_shares

    def work(share, progress, fallback):  # noqa: ANN001, ANN202
        if share == ["boom"]:
            os._exit(3)
        return share

    with pytest.raises(RuntimeError, match="exited with code 3"):
        run_shares([["ok"], ["boom"]], work)
    assert run_shares([["x"], ["y"]], work) == [["x"], ["y"]]
