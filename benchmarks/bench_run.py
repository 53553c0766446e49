#!/usr/bin/env python3
"""Benchmark: `dac run` end to end (read, check, evaluate every rule in detections/, print).

Events come from the synthetic ECS telemetry of ``bench_eval.py`` (imported, not copied), with an
``event.id`` on every event and ``--chains`` true AN1314 chains injected in time order: an Office
application writes a script to the user's Downloads folder and starts ``mshta.exe`` on it, which
connects out and starts ``powershell.exe``, which connects out too. Each chain fires every
AN1314 building block and both chain rules over their alerts. The background noise also trips
the broad building blocks now and then, as real telemetry does.

Each size is written to an ndjson file once, then ``dac run --events FILE`` runs as a subprocess
(through a small wrapper so that the child's peak RSS is its own). With ``--old PATH`` (a checkout
of an older commit, e.g. ``git worktree add /tmp/dac-old <commit>``) the same files are run through
that version too, and the two outputs are compared byte for byte.

Usage: python benchmarks/bench_run.py [--sizes 100000,1000000] [--chains 50] [--old /tmp/dac-old]
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import os
import random
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

from bench_eval import generate  # noqa: E402 - the shared synthetic telemetry

from deployer.eql.values import format_timestamp, parse_timestamp  # noqa: E402

APPS = ["winword.exe", "excel.exe", "outlook.exe", "acrord32.exe", "7zfm.exe"]

# Runs `dac` from a given source tree and reports the child's peak RSS (kB) on stderr's last line;
# `-P` keeps the current directory off sys.path, so PYTHONPATH decides which version runs.
_WRAPPER = """
import resource, subprocess, sys
code = subprocess.call([sys.executable, "-P", "-c", "from deployer.cli import main; main()", *sys.argv[1:]])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = usage.ru_utime + usage.ru_stime
print("maxrss_kb=%d cpu_s=%.3f rc=%d" % (usage.ru_maxrss, cpu, code), file=sys.stderr)
"""


def with_chains(n: int, chains: int, seed: int) -> Iterator[dict[str, Any]]:
    """``n`` events of bench_eval telemetry plus ``chains`` AN1314 chains (5 events each), in time order."""
    rng = random.Random(seed + 1)
    noise = n - 5 * chains
    every = max(noise // max(chains, 1), 1)
    pending: list[tuple[int, int, dict[str, Any]]] = []
    order = 0
    made = 0

    def ev(
        ts: int, host: str, category: str, etype: str, process: dict[str, Any], **extra: Any
    ) -> dict[str, Any]:
        doc = {
            "@timestamp": format_timestamp(ts),
            "event": {"category": [category], "type": [etype], "action": etype, "kind": "event"},
            "host": {"id": host, "name": host, "os": {"family": "windows", "type": "windows"}},
            "user": {"name": "victim"},
            "process": process,
        }
        doc.update(extra)
        return doc

    def chain(ts: int) -> list[tuple[int, dict[str, Any]]]:
        nonlocal made
        made += 1
        host = f"host-{rng.randrange(300):04d}"
        tag = f"{made:06d}"
        app = {"entity_id": f"app-{tag}", "pid": 4000, "name": rng.choice(APPS)}
        mshta = {
            "entity_id": f"mshta-{tag}",
            "pid": 4100,
            "name": "mshta.exe",
            "command_line": "mshta.exe C:\\Users\\victim\\Downloads\\invoice.hta",
            "parent": {"entity_id": app["entity_id"], "name": app["name"], "pid": 4000},
        }
        ps = {
            "entity_id": f"ps-{tag}",
            "pid": 4200,
            "name": "powershell.exe",
            "command_line": "powershell.exe -nop -w hidden",
            "parent": {"entity_id": mshta["entity_id"], "name": "mshta.exe", "pid": 4100},
        }
        out = {"ip": f"198.51.100.{rng.randint(1, 254)}", "port": 443}
        path = f"C:\\Users\\victim\\Downloads\\invoice-{tag}.hta"
        return [
            (ts, ev(ts, host, "file", "creation", app, file={"path": path, "extension": "hta"})),
            (ts + 1_000, ev(ts + 1_000, host, "process", "start", mshta)),
            (
                ts + 2_000,
                ev(ts + 2_000, host, "network", "start", {"entity_id": mshta["entity_id"]}, destination=out),
            ),
            (ts + 3_000, ev(ts + 3_000, host, "process", "start", ps)),
            (
                ts + 4_000,
                ev(ts + 4_000, host, "network", "start", {"entity_id": ps["entity_id"]}, destination=out),
            ),
        ]

    for i, doc in enumerate(generate(noise, 50, seed)):
        ts = parse_timestamp(doc["@timestamp"])
        while pending and pending[0][0] <= ts:
            yield heapq.heappop(pending)[2]
        if i % every == every // 2 and made < chains:
            for when, step in chain(ts + 1):
                order += 1
                heapq.heappush(pending, (when, order, step))
        yield doc
    while pending:
        yield heapq.heappop(pending)[2]


def write_events(path: Path, n: int, chains: int, seed: int) -> None:
    """Write the benchmark events to ndjson, each with a unique ``event.id``."""
    with path.open("w", encoding="utf-8") as out:
        for i, doc in enumerate(with_chains(n, chains, seed)):
            doc["event"]["id"] = f"e{i}"
            out.write(json.dumps(doc, separators=(",", ":")) + "\n")


def run_dac(source: Path, events: Path, output: Path) -> dict[str, Any]:
    """Run `dac run` from a source tree over the events; time, peak RSS, output digest and lines."""
    env = dict(os.environ, PYTHONPATH=str(source))
    started = time.perf_counter()
    with output.open("wb") as out:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                _WRAPPER,
                "run",
                "--events",
                str(events),
                "--rules",
                str(REPO / "detections"),
            ],
            stdout=out,
            stderr=subprocess.PIPE,
            env=env,
            cwd=str(REPO),
            check=False,
        )
    seconds = time.perf_counter() - started
    last = proc.stderr.decode(errors="replace").strip().splitlines()[-1]
    fields = dict(part.split("=") for part in last.split())
    if fields.get("rc") != "0":
        sys.exit(f"dac run from {source} failed:\n{proc.stderr.decode(errors='replace')}")
    data = output.read_bytes()
    return {
        "seconds": seconds,
        "rss_mb": int(fields["maxrss_kb"]) / 1024,
        "cpu": float(fields["cpu_s"]),
        "sha256": hashlib.sha256(data).hexdigest(),
        "lines": data.count(b"\n"),
    }


def main() -> int:
    """Generate the event files, run `dac run` (and the old version), print the table and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated event counts")
    ap.add_argument("--chains", type=int, default=50, help="true AN1314 chains per file")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--old", type=Path, help="a checkout of an older commit to compare with")
    ap.add_argument("--workdir", type=Path, help="where to write the event files (default: a temp dir)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    versions = [("new", REPO)] + ([("old", args.old.resolve())] if args.old else [])
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dac-bench-run-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    ok = True
    for n in sizes:
        events = workdir / f"events-{n}.ndjson"
        if not events.is_file():
            print(f"writing {n:,} events to {events} ...", flush=True)
            write_events(events, n, args.chains, args.seed)
        for label, source in versions:
            print(f"  dac run ({label}) over {n:,} events ...", flush=True)
            results[label, n] = run_dac(source, events, workdir / f"out-{label}-{n}.ndjson")
        if args.old and results["new", n]["sha256"] != results["old", n]["sha256"]:
            ok = False
            print(f"  OUTPUT DIFFERS at {n:,} events (see {workdir})")

    print()
    # CPU seconds (user + system) are steadier than wall time on a shared machine.
    print(
        f"{'events':>10} {'version':7} {'wall s':>8} {'events/s':>10} {'CPU s':>8} {'events/CPU s':>12} "
        f"{'peak RSS MB':>12} {'matches':>8}"
    )
    for n in sizes:
        for label, _ in versions:
            r = results[label, n]
            print(
                f"{n:>10,} {label:7} {r['seconds']:8.2f} {n / r['seconds']:10,.0f} {r['cpu']:8.2f} "
                f"{n / r['cpu']:12,.0f} {r['rss_mb']:12.1f} {r['lines']:8,}"
            )
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        for label, _ in versions:
            a, b = results[label, small]["rss_mb"], results[label, large]["rss_mb"]
            print(
                f"peak RSS ({label}): {b:.1f} MB at {large:,} vs {a:.1f} MB at {small:,} -> ratio {b / a:.2f}"
            )
    if args.old:
        for n in sizes:
            speed = results["old", n]["seconds"] / results["new", n]["seconds"]
            cpu = results["old", n]["cpu"] / results["new", n]["cpu"]
            same = "identical" if results["new", n]["sha256"] == results["old", n]["sha256"] else "DIFFERENT"
            print(f"{n:>10,}: new is {speed:.1f}x faster (wall), {cpu:.1f}x less CPU; outputs {same}")
    print(f"event files and outputs: {workdir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
