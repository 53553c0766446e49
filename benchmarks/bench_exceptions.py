#!/usr/bin/env python3
"""Benchmark: the cost of a rule's exception pre-filter in the offline replay, side by side.

One AN1314-style sequence rule (app spawns a LOLBin, the LOLBin talks to the network) replays the
same synthetic events three ways in one process: without exceptions, with a list of ``--items``
items (match_any on the destination, wildcard on the executable, one excluded entry each), and with
the same list's items all expired (dropped before the run, so the cost is the lookup only). Each
way runs ``--repeat`` times; the best time is kept. Prints events/s and the ratio to the plain run,
and checks the three runs agree where they must (expired == plain; excepted <= plain).

Usage: python benchmarks/bench_exceptions.py [--events 200000] [--items 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deployer.exceptions.model import Catalogue, ExceptionList  # noqa: E402
from deployer.rules.loader import load_rule_text  # noqa: E402
from deployer.testing.evaluate import Evaluator  # noqa: E402
from deployer.testing.events import default_field_types  # noqa: E402

QUERY = (
    "sequence with maxspan=1m "
    '[process where event.type == "start" and process.name : ("mshta.exe", "powershell.exe")] by process.entity_id '
    "[network where destination.port == 443] by process.entity_id"
)


@dataclass
class Rule:
    rule_id: str
    kibana: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)


def events(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """Process starts and connections of many processes, time ordered."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        pid = f"p{rnd.randrange(n // 4 + 1)}"
        ts = f"2026-01-01T{(i // 3_600_000) % 24:02d}:{(i // 60_000) % 60:02d}:{(i // 1000) % 60:02d}.{i % 1000:03d}Z"
        if rnd.random() < 0.3:
            name = rnd.choice(["mshta.exe", "powershell.exe", "chrome.exe", "excel.exe"])
            out.append(
                {
                    "@timestamp": ts,
                    "event": {"id": f"e{i}", "category": ["process"], "type": ["start"]},
                    "process": {"entity_id": pid, "name": name, "executable": rf"C:\Users\u{i % 500}\AppData\{name}"},
                    "host": {"name": f"ws-{i % 200}", "os": {"type": "windows"}},
                }
            )
        else:
            out.append(
                {
                    "@timestamp": ts,
                    "event": {"id": f"e{i}", "category": ["network"], "type": ["connection"]},
                    "process": {"entity_id": pid},
                    "destination": {"port": 443, "domain": f"d{rnd.randrange(1000)}.example", "ip": "198.51.100.7"},
                    "host": {"name": f"ws-{i % 200}", "os": {"type": "windows"}},
                }
            )
    return out


def catalogue(items: int, expire: str) -> Catalogue:
    body = "".join(
        textwrap.dedent(
            f"""\
              - item_id: i{n}
                name: item {n}
                description: bench
                expire_time: "{expire}"
                entries:
                  - {{field: destination.domain, type: match_any, operator: included, value: [d{n}.example, x{n}.example]}}
                  - {{field: host.name, type: match, operator: excluded, value: dc-{n}}}
              - item_id: w{n}
                name: wildcard {n}
                description: bench
                expire_time: "{expire}"
                entries:
                  - {{field: process.executable, type: wildcard, operator: included, value: 'C:\\\\Users\\\\u{n}\\\\*'}}
            """
        )
        for n in range(items // 2)
    )
    file, problems = load_rule_text("list_id: bench\nname: bench\ndescription: bench\nitems:\n" + textwrap.indent(body, "  "))
    assert file is not None and not problems, problems
    return Catalogue(lists={"bench": ExceptionList(file)})


def run(rule: Rule, docs: list[dict[str, Any]], cat: Catalogue | None, repeat: int) -> tuple[float, int]:
    best = float("inf")
    matches = 0
    types = default_field_types()
    for _ in range(repeat):
        ev = Evaluator([rule], exceptions=cat, field_types=types)
        started = time.perf_counter()
        matches = sum(len(o.matches) for o in ev.evaluate([rule.rule_id], docs))
        best = min(best, time.perf_counter() - started)
    return best, matches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    docs = events(args.events)
    plain = Rule("bench", {"name": "bench", "index": ["logs-*"], "query": QUERY})
    with_list = Rule("bench", {**plain.kibana, "exceptions_list": [{"list_id": "bench"}]})
    rows = [
        ("no exceptions", *run(plain, docs, None, args.repeat)),
        (f"{args.items} live items", *run(with_list, docs, catalogue(args.items, "2999-01-01T00:00:00Z"), args.repeat)),
        (f"{args.items} expired items", *run(with_list, docs, catalogue(args.items, "2000-01-01T00:00:00Z"), args.repeat)),
    ]
    base = rows[0][1]
    print(f"{args.events:,} events, best of {args.repeat}")
    print(f"{'run':<22} {'seconds':>8} {'events/s':>12} {'ratio':>6} {'matches':>8}")
    for name, seconds, matches in rows:
        print(f"{name:<22} {seconds:8.2f} {args.events / seconds:12,.0f} {seconds / base:6.2f} {matches:8,}")
    assert rows[2][2] == rows[0][2], "expired items must change nothing"
    assert rows[1][2] <= rows[0][2], "exceptions only remove matches"


if __name__ == "__main__":
    main()
