#!/usr/bin/env python3
"""Benchmark: how many candidate steps the rule set's guards leave per event, and what that costs.

``deployer.eql.ruleset`` evaluates an event only against the steps whose guards it hits. This
script loads a rule set and an events file the way ``bench_corpus.py --child dac`` does, then
reports for each source tree given (the working tree, and e.g. a checkout of an older commit):

* candidate evaluations (steps evaluated by their full condition) in total and per event;
* the rule set's CPU time over the already-parsed events (best of ``--reps``) and events/s;
* per-rule match counts, compared across trees (the guards only narrow: they must be equal);
* with ``--top N``, the steps evaluated most often and their guards (what to improve next).

Each tree is measured in its own subprocess with that tree first on ``sys.path``.

Usage (files as written by ``bench_corpus.py``):
  python benchmarks/bench_guards.py --events /tmp/bc-A/events-100000-hot0.1.ndjson \\
      --rules-file /tmp/bc-A/rules-dac.json [--trees .,/path/to/old/checkout] [--reps 2] [--top 10]
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def child(tree: str, events_file: str, rules_file: str, reps: int, top: int) -> dict[str, Any]:
    """One tree's measurement (runs in a subprocess whose sys.path starts with ``tree``)."""
    sys.path.insert(0, str(Path(tree).resolve()))
    from deployer.eql import ruleset as rs  # the tree's, imported before bench_corpus adds its own

    sys.path.insert(1, str(HERE))
    import bench_corpus

    programs = bench_corpus._compile_dac(json.loads(Path(rules_file).read_text()))
    events = list(bench_corpus._events(events_file))
    best = None
    for _ in range(reps):
        runner = rs.RuleSet(programs).stream()
        push = runner.push
        started = time.process_time()
        for doc, ts in events:
            push(doc, ts)
        runner.finish()
        spent = time.process_time() - started
        best = spent if best is None else min(best, spent)
    # A counting pass, apart from the timed ones.
    per_entry: collections.Counter[int] = collections.Counter()
    plain = rs._Table.candidates

    def counted(self: Any, ev: dict) -> set[int]:
        found = plain(self, ev)
        per_entry.update(found)
        return found

    rs._Table.candidates = counted  # type: ignore[method-assign]
    runner = rs.RuleSet(programs).stream()
    counts: dict[str, int] = {}
    for doc, ts in events:
        for key, _ in runner.push(doc, ts):
            counts[key] = counts.get(key, 0) + 1
    for key, _ in runner.finish():
        counts[key] = counts.get(key, 0) + 1
    entries = runner._entries
    worst = [
        {
            "rule": str(entries[order].member.key),
            "category": entries[order].category,
            "evaluations": n,
            "guards": [sorted(g)[:4] for g in entries[order].guards],
        }
        for order, n in per_entry.most_common(top)
    ]
    total = sum(per_entry.values())
    return {
        "tree": tree,
        "events": len(events),
        "rules": len(programs),
        "candidates": total,
        "per_event": total / len(events),
        "cpu": best,
        "events_per_cpu_s": len(events) / best if best else None,
        "counts": counts,
        "top": worst,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", required=True)
    ap.add_argument("--rules-file", required=True)
    ap.add_argument("--trees", default=str(HERE.parent), help="comma-separated source trees")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--top", type=int, default=0)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.events, args.rules_file, args.reps, args.top)))
        return 0
    results = []
    for tree in args.trees.split(","):
        cmd = [sys.executable, __file__, "--child", tree, "--events", args.events]
        cmd += ["--rules-file", args.rules_file, "--reps", str(args.reps), "--top", str(args.top)]
        results.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    first = results[0]
    print(
        f"{'tree':<40} {'candidates':>11} {'per event':>9} {'CPU s':>7} {'events/s':>9} {'speed vs first':>15}"
    )
    for r in results:
        ratio = first["cpu"] / r["cpu"] if r["cpu"] else float("nan")
        print(
            f"{r['tree'][-40:]:<40} {r['candidates']:>11,} {r['per_event']:>9.2f} {r['cpu']:>7.2f}"
            f" {r['events_per_cpu_s']:>9,.0f} {ratio:>14.2f}x"
        )
    same = all(r["counts"] == first["counts"] for r in results)
    print(f"per-rule match counts equal across trees: {same} ({sum(first['counts'].values())} matches)")
    for r in results:
        for row in r["top"]:
            print(
                f"  {r['tree'][-20:]}: {row['evaluations']:>7} {row['rule'][:8]} {row['category']} {row['guards']}"
            )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
