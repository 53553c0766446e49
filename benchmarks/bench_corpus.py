#!/usr/bin/env python3
"""Benchmark: Elastic's prebuilt EQL rules as one rule set, against the ``eql`` library, at corpus scale.

Rules: the 678-rule corpus in ``../shared/corpora`` (read here, never copied). Events: synthetic
ECS telemetry whose values come from the rules themselves: every event has the usual host, user
and process fields, and a share of them (``--hot``, default 10%) also carry one to three (field, value) pairs taken from the
literals of rules over the event's category, so that single-event rules fire, sequences advance
and most events still match nothing, as in real telemetry. Fields are scalars with the case the
rules write, so that both engines read them alike.

Measurements, each in its own subprocess (clean peak RSS), side by side in one run:

* ``floor``: read the file, ``json.loads`` each line, parse ``@timestamp``: the least any engine
  fed from this file does;
* ``dac``: the same, then every event through one ``RuleSet`` of the rules (``deployer.eql.ruleset``);
* ``eql``: the same, then every event through one ``eql.PythonEngine`` holding the same rules
  (only rules both engines accept; per-rule match counts are compared);
* ``per-rule``: the same, then every event through each rule's own runner (``dac run`` before the
  rule set), at a smaller size;
* ``backtest``: ``dac backtest --format json`` end to end (reader type checks, rules over alerts,
  summaries), at every size.

The ``eql`` package is installed by ``bench_eval.ensure_eql`` outside the project and imported
only by the ``eql`` subprocess.

Usage: python benchmarks/bench_corpus.py [--sizes 100000,1000000,5000000] [--eql-size 100000]
       [--per-rule-size 20000] [--seed 7] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

SHARED = Path(os.environ.get("DAC_SHARED_DIR", REPO.parent / "shared"))
CORPUS = SHARED / "corpora" / "elastic-prebuilt-eql-windows-linux.ndjson"
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z

CATEGORIES = {
    "process": 40,
    "file": 18,
    "network": 14,
    "registry": 10,
    "authentication": 6,
    "library": 5,
    "iam": 2,
    "driver": 1,
    "configuration": 1,
    "intrusion_detection": 1,
}
EVENT_TYPE = {
    "process": "start",
    "file": "creation",
    "network": "start",
    "registry": "change",
    "authentication": "start",
    "library": "start",
    "iam": "change",
    "driver": "start",
    "configuration": "change",
    "intrusion_detection": "info",
}
NAMES = [
    "svchost.exe",
    "chrome.exe",
    "explorer.exe",
    "conhost.exe",
    "python.exe",
    "teams.exe",
    "bash",
    "sshd",
]


# ---------------------------------------------------------------- rules and synthetic telemetry


def load_corpus() -> list[dict[str, Any]]:
    """The corpus's Kibana rule objects."""
    with CORPUS.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def vocabulary(rules: list[dict[str, Any]]) -> dict[str | None, list[tuple[str, Any]]]:
    """(field, value) pairs from the rules' literals, per event category (None: `any where`)."""
    from deployer.eql import ast, parser

    vocab: dict[str | None, list[tuple[str, Any]]] = {}
    for rule in rules:
        try:
            query = parser.parse(rule["query"])
        except Exception:  # noqa: BLE001 - a rule the parser refuses adds nothing
            continue
        body = query.body
        subqueries = [body] if isinstance(body, ast.EventQuery) else []
        if isinstance(body, ast.Sequence):
            subqueries = [s.query for s in body.steps]
        for sub in subqueries:
            pairs = vocab.setdefault(sub.category, [])
            for node in ast.walk(sub.condition):
                pairs.extend(_literals(node))
    return vocab


def _literals(node: Any) -> Iterator[tuple[str, Any]]:
    from deployer.eql import ast

    if isinstance(node, ast.Comparison) and node.op == "==":
        if (
            isinstance(node.left, ast.Field)
            and isinstance(node.right, ast.Literal)
            and node.right.value is not None
        ):
            yield node.left.name, node.right.value
    elif isinstance(node, ast.InList) and not node.negated and isinstance(node.expr, ast.Field):
        for v in node.values:
            if isinstance(v, ast.Literal) and v.value is not None:
                yield node.expr.name, v.value
    elif isinstance(node, ast.PatternMatch) and not node.is_regex and isinstance(node.expr, ast.Field):
        for p in node.patterns:
            if isinstance(p.value, str):
                yield node.expr.name, p.value.replace("*", "").replace("?", "a")


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = doc
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, dict):
            return  # a scalar already sits where an object would go
        node = nxt
    if isinstance(node.get(parts[-1]), dict):
        return
    node[parts[-1]] = value


def synthesize(
    n: int, seed: int, vocab: dict[str | None, list[tuple[str, Any]]], hot: float = 0.1
) -> Iterator[dict[str, Any]]:
    """``n`` time-ordered events (about 20 ms apart on average) over 200 hosts; ``hot``: share carrying rule literals."""
    rng = random.Random(seed)
    cats = list(CATEGORIES)
    weights = [CATEGORIES[c] for c in cats]
    hosts = []
    for h in range(200):
        linux = rng.random() < 0.3
        hosts.append(
            (f"host-{h:04d}", "linux" if linux else "windows", [f"{h:04d}-{p:03d}" for p in range(40)])
        )
    anyv = vocab.get(None, [])
    ts = START_MS
    for i in range(n):
        ts += rng.randint(0, 40)
        cat = rng.choices(cats, weights)[0]
        host, os_type, procs = rng.choice(hosts)
        k = rng.randrange(len(procs))
        if cat == "process" and rng.random() < 0.5:
            procs[k] = f"{host[-4:]}-{i:09d}"
        entity = procs[k]
        parent = procs[k - 1]
        name = rng.choice(NAMES)
        user = f"user{rng.randrange(50)}"
        doc: dict[str, Any] = {
            "@timestamp": _iso(ts),
            "event": {"category": cat, "type": EVENT_TYPE[cat], "kind": "event", "id": f"e{i}"},
            "host": {"id": host, "name": host, "os": {"type": os_type, "family": os_type}},
            "user": {"name": user, "id": f"S-1-5-21-{user}"},
            "process": {
                "entity_id": entity,
                "pid": 1000 + k,
                "name": name,
                "executable": f"C:\\Windows\\System32\\{name}"
                if os_type == "windows"
                else f"/usr/bin/{name}",
                "parent": {"entity_id": parent, "name": rng.choice(NAMES), "pid": 999 + k},
            },
            "source": {"ip": f"10.0.{k}.{rng.randrange(255)}"},
            "destination": {
                "ip": f"192.0.2.{rng.randrange(255)}",
                "port": rng.choice([80, 443, 22, 445, 3389]),
            },
        }
        if rng.random() < hot:
            pool = vocab.get(cat) or anyv
            for _ in range(rng.randint(1, 3)):
                if pool:
                    field, value = rng.choice(pool)
                    _set(doc, field, value)
        yield doc


_iso_cache: dict[int, str] = {}


def _iso(ms: int) -> str:
    sec = ms // 1000
    prefix = _iso_cache.get(sec)
    if prefix is None:
        _iso_cache.clear()
        prefix = _iso_cache[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{prefix}.{ms % 1000:03d}Z"


def write_events(
    path: Path, n: int, seed: int, vocab: dict[str | None, list[tuple[str, Any]]], hot: float = 0.1
) -> None:
    """Write ``n`` synthetic events as ndjson."""
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    with path.open("w", encoding="utf-8") as out:
        for doc in synthesize(n, seed, vocab, hot):
            out.write(dumps(doc))
            out.write("\n")


# ---------------------------------------------------------------- measurements (child processes)


def _events(path: str) -> Iterator[tuple[dict[str, Any], int]]:
    from deployer.eql.values import parse_timestamp

    loads = json.loads
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            doc = loads(line)
            yield doc, parse_timestamp(doc["@timestamp"])


def _compile_dac(rules: list[dict[str, Any]]) -> dict[str, Any]:
    from deployer.eql.engine import compile_query

    programs = {}
    for rule in rules:
        try:
            programs[rule["rule_id"]] = compile_query(
                rule["query"],
                timestamp_field=rule.get("timestamp_field") or "@timestamp",
                tiebreaker_field=rule.get("tiebreaker_field") or None,
                category_field=rule.get("event_category_override") or "event.category",
            )
        except Exception:  # noqa: BLE001 - refused rules are left out and counted
            continue
    return programs


def child(engine: str, events: str, rules_file: str) -> dict[str, Any]:
    """One measurement; prints a JSON report."""
    rules = json.loads(Path(rules_file).read_text())
    counts: dict[str, int] = {}
    started = time.perf_counter()
    cpu_start = _cpu()
    if engine == "floor":
        n = sum(1 for _ in _events(events))
    elif engine == "dac":
        from deployer.eql.ruleset import RuleSet

        programs = _compile_dac(rules)
        started, cpu_start = time.perf_counter(), _cpu()
        runner = RuleSet(programs).stream()
        n = 0
        push = runner.push
        for doc, ts in _events(events):
            n += 1
            for key, _ in push(doc, ts):
                counts[key] = counts.get(key, 0) + 1
        for key, _ in runner.finish():
            counts[key] = counts.get(key, 0) + 1
    elif engine == "per-rule":
        programs = _compile_dac(rules)
        started, cpu_start = time.perf_counter(), _cpu()
        runners = [(key, p.stream()) for key, p in programs.items()]
        n = 0
        for doc, ts in _events(events):
            n += 1
            for key, r in runners:
                out = r.push(doc, ts)
                if out:
                    counts[key] = counts.get(key, 0) + len(out)
        for key, r in runners:
            counts[key] = counts.get(key, 0) + len(r.finish())
    else:
        import eql  # only in this subprocess
        from eql.ast import EqlAnalytic
        from eql.parser import elasticsearch_syntax, ignore_missing_functions

        engine_obj = eql.PythonEngine({"time_unit": 1000, "flatten": False})
        accepted = []
        for rule in rules:
            try:
                with elasticsearch_syntax, ignore_missing_functions:
                    query = eql.parse_query(rule["query"])
                engine_obj.add_analytic(EqlAnalytic(query, {"id": rule["rule_id"]}))
            except Exception:  # noqa: BLE001 - rules eql refuses are left out
                continue
            accepted.append(rule["rule_id"])
        counts = dict.fromkeys(accepted, 0)

        def hook(output: Any) -> None:
            counts[output.analytic_id] += 1

        engine_obj.add_output_hook(hook)
        started, cpu_start = time.perf_counter(), _cpu()
        n = 0
        Event = eql.Event  # noqa: N806
        for doc, ts in _events(events):
            n += 1
            engine_obj.stream_event(Event(doc["event"]["category"], ts, doc))
        engine_obj.finalize()
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_start
    return {
        "engine": engine,
        "events": n,
        "seconds": seconds,
        "cpu": cpu,
        "rss_mb": _peak_mb(),
        "counts": counts,
    }


def _peak_mb() -> float:
    # VmHWM starts afresh at exec; ru_maxrss would carry the parent's peak across fork and exec.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_child(engine: str, events: Path, rules_file: Path, eql_dir: Path | None = None) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter."""
    env = dict(os.environ)
    if eql_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(eql_dir), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            engine,
            "--events",
            str(events),
            "--rules-file",
            str(rules_file),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


_WRAPPER = """
import resource, subprocess, sys
code = subprocess.call([sys.executable, "-c", "from deployer.cli import main; main()", *sys.argv[1:]],
                       stdout=subprocess.DEVNULL)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print("maxrss_kb=%d cpu=%.3f rc=%d" % (usage.ru_maxrss, usage.ru_utime + usage.ru_stime, code), file=sys.stderr)
"""


def _tree_pss_kb(root: int) -> int:
    """Proportional resident memory (Pss: pages shared after fork counted once) of a process tree, in kB."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid = int(entry)
        children.setdefault(int(fields.get("PPid", "0").strip() or 0), []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            rollup = ""
        total += sum(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
        todo.extend(children.get(pid, []))
    return total


def run_backtest(events: Path, rules_dir: Path, jobs: int = 1) -> dict[str, Any]:
    """`dac backtest --format json --jobs N` end to end: wall time, CPU of every process, peak RSS.

    With workers the peak RSS is the largest Pss summed over the process tree (a forked worker's
    pages shared with its parent counted once), sampled every 0.2 s: the kernel keeps no peak of
    a sum. `rss_one_mb` is the largest single process's own peak RSS.
    """
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _WRAPPER,
            "backtest",
            "--rules",
            str(rules_dir),
            "--events",
            str(events),
            "--format",
            "json",
            "--jobs",
            str(jobs),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    peak_tree = 0
    while proc.poll() is None:
        peak_tree = max(peak_tree, _tree_pss_kb(proc.pid))
        time.sleep(0.2)
    stderr = proc.stderr.read() if proc.stderr else ""
    seconds = time.perf_counter() - started
    last = stderr.strip().splitlines()[-1]
    fields = dict(part.split("=") for part in last.split())
    if fields["rc"] != "0":
        raise SystemExit(f"dac backtest failed: {stderr[-2000:]}")
    one = int(fields["maxrss_kb"]) / 1024.0
    return {
        "seconds": seconds,
        "cpu": float(fields["cpu"]),
        "rss_mb": max(one, peak_tree / 1024.0) if jobs > 1 else one,
        "rss_one_mb": one,
    }


# ---------------------------------------------------------------- orchestration


def _import_rules(rules: list[dict[str, Any]], workdir: Path) -> Path:
    """`dac import` the corpus into rule files (what `dac backtest` reads)."""
    target = workdir / "rules"
    if target.is_dir():
        return target
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from deployer.cli import main; main()",
            "import",
            str(CORPUS),
            "--out",
            str(target),
        ],
        check=True,
        capture_output=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    return target


def main() -> int:
    """Generate the files, run every measurement, print the table and the ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000,5000000")
    ap.add_argument("--eql-size", type=int, default=100_000, help="size at which eql and dac are compared")
    ap.add_argument("--per-rule-size", type=int, default=20_000, help="size for the per-rule runners (slow)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--hot", type=float, default=0.1, help="share of events carrying values from the rules")
    ap.add_argument("--workdir", type=Path, help="keep event files here (default: a temporary directory)")
    ap.add_argument("--skip-eql", action="store_true", help="only (2) and (3): dac backtest and the floor")
    ap.add_argument("--jobs", type=int, default=2, help="(2) also runs dac backtest with this many workers")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--events", help=argparse.SUPPRESS)
    ap.add_argument("--rules-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.events, args.rules_file)))
        return 0
    if not CORPUS.is_file():
        print(f"corpus not found: {CORPUS}", file=sys.stderr)
        return 2
    from bench_eval import ensure_eql

    eql_dir = ensure_eql(Path(os.environ.get("DAC_CACHE_DIR", Path.home() / ".cache" / "dac")) / "bench")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dac-bench-corpus-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rules = load_corpus()
    vocab = vocabulary(rules)
    extra = set() if args.skip_eql else {args.eql_size, args.per_rule_size}
    sizes = sorted({int(s) for s in args.sizes.split(",")} | extra)
    files = {}
    for n in sizes:
        path = workdir / f"events-{n}-hot{args.hot:g}.ndjson"
        if not path.is_file():
            print(f"  writing {n:,} events to {path} ...", flush=True)
            write_events(path, n, args.seed, vocab, args.hot)
        files[n] = path

    keys = ("rule_id", "query", "timestamp_field", "tiebreaker_field", "event_category_override")
    dac_ids = set(_compile_dac(rules))
    dac_rules = [{k: r.get(k) for k in keys} for r in rules if r["rule_id"] in dac_ids]
    dac_file = _dump(workdir / "rules-dac.json", dac_rules)

    def show(n: int, what: str, res: dict[str, Any], note: str = "") -> None:
        seconds = res["seconds"]
        matches = f"{sum(res['counts'].values()):,} matches" if "counts" in res else ""
        cpu = res["cpu"]
        print(
            f"  {n:>10,}  {what:<34} {seconds:9.2f} s {n / seconds:>9,.0f} ev/s  cpu {cpu:8.2f} s "
            f"{n / max(cpu, 1e-9):>9,.0f} ev/s {res['rss_mb']:8.1f} MB  {matches} {note}",
            flush=True,
        )

    if not args.skip_eql and compare_with_eql(args, files, dac_rules, dac_file, eql_dir, workdir, show):
        return 1

    # (2) and (3): dac backtest end to end at every size, beside the JSON-parse floor.
    rules_dir = _import_rules(rules, workdir)
    print(
        f"\n(2)/(3) dac backtest --format json over {rules_dir} (the corpus imported), and the parse floor",
        flush=True,
    )
    jobs = sorted({1, args.jobs})
    peaks: dict[int, dict[int, float]] = {j: {} for j in jobs}
    for n in sorted(int(s) for s in args.sizes.split(",")):
        fl = run_child("floor", files[n], dac_file)
        show(n, "floor (read, json, @timestamp)", fl)
        runs = {}
        for j in jobs:
            runs[j] = bt = run_backtest(files[n], rules_dir, j)
            show(n, f"dac backtest --jobs {j}", bt, f"{bt['cpu'] / fl['cpu']:.1f}x the floor's CPU")
            peaks[j][n] = bt["rss_mb"]
        if len(jobs) > 1:
            print(
                f"  --jobs {jobs[-1]} vs --jobs 1: {runs[1]['seconds'] / runs[jobs[-1]]['seconds']:.2f}x wall"
            )
    for j in jobs:
        sizes_sorted = sorted(peaks[j])
        if len(sizes_sorted) > 1:
            a, b = sizes_sorted[-2], sizes_sorted[-1]
            print(f"  --jobs {j}: peak RSS {b:,} vs {a:,}: {peaks[j][b] / peaks[j][a]:.2f}x")
    print(f"\nfiles in {workdir}")
    return 0


def compare_with_eql(
    args: argparse.Namespace,
    files: dict[int, Path],
    dac_rules: list[dict[str, Any]],
    dac_file: Path,
    eql_dir: Path,
    workdir: Path,
    show: Any,
) -> bool:
    """(1): the rule set against eql's PythonEngine and against per-rule runners; True on a mismatch."""
    # (1) one rule set against eql's PythonEngine, same rules, same file. A small calibration run
    # finds the rules both accept and those whose counts differ (semantics eql does not share);
    # the measured run holds the rules whose counts agree, and checks they still agree.
    m = args.per_rule_size
    print(
        f"\n(1) {len(dac_rules)} corpus rules compile offline; calibration at {m:,} events",
        flush=True,
    )
    eql_cal = run_child("eql", files[m], dac_file, eql_dir)
    dac_cal = run_child("dac", files[m], dac_file)
    per_rule = run_child("per-rule", files[m], dac_file)
    both = [r for r in dac_rules if r["rule_id"] in eql_cal["counts"]]
    differ = sorted(k for k in eql_cal["counts"] if eql_cal["counts"][k] != dac_cal["counts"].get(k, 0))
    same = [r for r in both if r["rule_id"] not in set(differ)]
    show(m, f"dac per-rule runners, {len(dac_rules)}", per_rule)
    show(m, f"dac rule set, {len(dac_rules)}", dac_cal)
    show(m, f"eql engine, {len(both)} it accepts", eql_cal)
    if _nonzero(per_rule["counts"]) != _nonzero(dac_cal["counts"]):
        print("  ERROR: the rule set and the per-rule runners disagree", file=sys.stderr)
        return True
    print(
        f"  rule set vs per-rule runners: {per_rule['seconds'] / dac_cal['seconds']:.1f}x faster, counts equal"
    )
    print(
        f"  both accept {len(both)} rules; counts differ on {len(differ)} "
        f"(dac, eql): {[(k[:8], dac_cal['counts'].get(k, 0), eql_cal['counts'][k]) for k in differ[:6]]}"
    )
    n = args.eql_size
    same_file = _dump(workdir / "rules-same.json", same)
    print(f"\n    {len(same)} rules both accept with equal counts, {n:,} events", flush=True)
    floor = run_child("floor", files[n], same_file)
    dac_run = run_child("dac", files[n], same_file)
    eql_run = run_child("eql", files[n], same_file, eql_dir)
    show(n, "floor (read, json, @timestamp)", floor)
    show(n, "dac rule set", dac_run)
    show(n, "eql PythonEngine", eql_run)
    bad = [k for k, v in eql_run["counts"].items() if v != dac_run["counts"].get(k, 0)]
    fired = sum(1 for v in dac_run["counts"].values() if v)
    print(
        f"  counts equal on {len(same) - len(bad)} of {len(same)} rules ({fired} fired)"
        + (f"; differ: {bad[:6]}" if bad else "")
    )
    ratio = eql_run["seconds"] / dac_run["seconds"]
    cpu_ratio = eql_run["cpu"] / dac_run["cpu"]
    net = (eql_run["cpu"] - floor["cpu"]) / max(dac_run["cpu"] - floor["cpu"], 1e-9)
    print(
        f"  eql / dac: {ratio:.1f}x wall, {cpu_ratio:.1f}x CPU ({net:.1f}x CPU with the parse floor subtracted)"
    )
    return False


def _dump(path: Path, rules: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(rules))
    return path


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


if __name__ == "__main__":
    sys.exit(main())
