#!/usr/bin/env python3
"""Benchmark: the offline EQL evaluator against the ``eql`` library's PythonEngine, side by side.

Synthetic ECS endpoint telemetry (process, file, network and DNS events from many hosts and
process trees, ``process.entity_id`` on every event, a controllable number of true attack chains
plus decoy partial chains) is streamed in time order through the same sequence rules by both
engines. Each (engine, size) measurement runs in its own subprocess so its peak RSS is clean;
events are generated lazily, so memory reflects engine state rather than the input. Generation
cost is measured on its own and subtracted. Match counts are compared per rule.

The ``eql`` package (AGPLv3) is installed on first use into a cache directory outside the
repository (``$DAC_CACHE_DIR/bench``, default ``~/.cache/dac/bench``) and imported only by the
measuring subprocess; it is never a dependency of the project.

Usage: python benchmarks/bench_eval.py [--sizes 100000,1000000] [--chains 50] [--seed 7]
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EQL_VERSION = "1.0.1"
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z

# Rules both engines evaluate identically on this data: exact-case values, scalar fields in the
# conditions, non-null join keys, whole-second maxspan (eql truncates sub-second spans).
RULES: dict[str, str] = {
    "mshta_dns_tls": """
        sequence by process.entity_id with maxspan=30s
          [process where event.action == "start" and process.name == "mshta.exe"]
          [network where network.protocol == "dns" and dns.question.name : "*.evil.example"]
          [network where destination.port == 443]
    """,
    "hta_written_then_spawned": """
        sequence with maxspan=1m
          [file where file.extension == "hta" and process.name in ("outlook.exe", "winword.exe")]
            by process.entity_id
          [process where event.action == "start" and process.name == "mshta.exe"]
            by process.parent.entity_id
    """,
    "cmd_powershell_script_c2": """
        sequence by host.id with maxspan=10s
          [process where process.name == "powershell.exe" and process.parent.name == "cmd.exe"]
          [file where file.extension == "ps1"]
          [network where destination.port == 4444]
    """,
}

NOISE_NAMES = [
    "svchost.exe",
    "chrome.exe",
    "explorer.exe",
    "cmd.exe",
    "conhost.exe",
    "python.exe",
    "rundll32.exe",
    "outlook.exe",
    "winword.exe",
    "teams.exe",
    "powershell.exe",
    "msedge.exe",
]
NOISE_EXT = ["txt", "log", "dll", "tmp", "json", "docx", "pf", "ps1", "hta"]
NOISE_PORTS = [80, 443, 8080, 53, 22, 3389, 445]
NOISE_DOMAINS = ["www.example.com", "cdn.example.net", "update.example.org", "mail.example.com"]


# ---------------------------------------------------------------- synthetic telemetry


class _Clock:
    """Formats epoch ms as ISO-8601 quickly (the seconds prefix is cached)."""

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = ""

    def iso(self, ms: int) -> str:
        sec = ms // 1000
        if sec != self._sec:
            self._sec = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._prefix}.{ms % 1000:03d}Z"


def generate(n: int, chains: int, seed: int, hosts: int = 300) -> Iterator[dict]:
    """Yield ``n`` time-ordered ECS events with ``chains`` true chains per rule (plus decoys)."""
    rng = random.Random(seed)
    clock = _Clock()
    t = START_MS
    counter = 0
    live: list[list[dict]] = [[] for _ in range(hosts)]
    scheduled: list[tuple[int, int, dict]] = []  # (time, order, event) for chain steps
    interval = max(n // (chains * 4 + 1), 50)

    def new_entity() -> str:
        nonlocal counter
        counter += 1
        return f"{counter:012x}-{rng.getrandbits(32):08x}"

    def proc(host: int, name: str, parent: dict | None) -> dict:
        # The parent is copied, not referenced, so ended processes can be freed (no ever-growing
        # ancestry chains in the generator's own memory).
        return {
            "entity_id": new_entity(),
            "pid": rng.randint(100, 65000),
            "name": name,
            "executable": f"C:\\Windows\\System32\\{name}",
            "parent": None
            if parent is None
            else {
                "entity_id": parent["entity_id"],
                "name": parent["name"],
                "pid": parent["pid"],
            },
            "host": host,
        }

    def base(ts: int, cat: str, kind: list[str], action: str, p: dict) -> dict:
        parent = p["parent"]
        process: dict[str, Any] = {
            "entity_id": p["entity_id"],
            "pid": p["pid"],
            "name": p["name"],
            "executable": p["executable"],
        }
        ev = {
            "@timestamp": clock.iso(ts),
            "event": {"category": [cat], "type": kind, "action": action, "kind": "event"},
            "host": {
                "id": f"host-{p['host']:04d}",
                "name": f"ws{p['host']:04d}",
                "os": {"family": "windows"},
            },
            "user": {"name": f"user{p['host'] % 97}"},
            "process": process,
        }
        if cat == "process" and parent is not None:
            # Only process start events carry the parent (as Elastic Defend / Sysmon do).
            process["parent"] = {
                "entity_id": parent["entity_id"],
                "name": parent["name"],
                "pid": parent["pid"],
            }
            process["args"] = [p["executable"], "-k", "netsvcs"]
        return ev

    def file_ev(ts: int, p: dict, ext: str) -> dict:
        ev = base(ts, "file", ["creation"], "creation", p)
        ev["file"] = {
            "path": f"C:\\Users\\u\\AppData\\Local\\Temp\\f{rng.getrandbits(20):x}.{ext}",
            "extension": ext,
        }
        return ev

    def net_ev(ts: int, p: dict, port: int) -> dict:
        ev = base(ts, "network", ["connection", "start"], "connection_attempted", p)
        ev["destination"] = {"ip": f"203.0.113.{rng.randint(1, 254)}", "port": port}
        ev["network"] = {"protocol": "tls" if port == 443 else "tcp", "direction": "egress"}
        return ev

    def dns_ev(ts: int, p: dict, name: str) -> dict:
        ev = base(ts, "network", ["protocol", "info"], "lookup_requested", p)
        ev["dns"] = {"question": {"name": name, "type": "A"}}
        ev["network"] = {"protocol": "dns", "direction": "egress"}
        return ev

    def proc_ev(ts: int, p: dict, action: str = "start") -> dict:
        return base(ts, "process", ["start"] if action == "start" else ["end"], action, p)

    def schedule(ts: int, ev: dict) -> None:
        nonlocal counter
        counter += 1
        heapq.heappush(scheduled, (ts, counter, ev))

    def inject(ts: int, complete: bool, kind: int) -> None:
        # One chain (or a decoy missing its last step) spread over a few seconds.
        host = rng.randrange(hosts)
        if kind == 0:
            outlook = proc(host, "outlook.exe", None)
            m = proc(host, "mshta.exe", outlook)
            schedule(ts, proc_ev(ts, m))
            schedule(ts + 800, dns_ev(ts + 800, m, f"c2-{rng.getrandbits(16):x}.evil.example"))
            if complete:
                schedule(ts + 2500, net_ev(ts + 2500, m, 443))
        elif kind == 1:
            app = proc(host, rng.choice(["outlook.exe", "winword.exe"]), None)
            schedule(ts, file_ev(ts, app, "hta"))
            if complete:
                m = proc(host, "mshta.exe", app)
                schedule(ts + 1500, proc_ev(ts + 1500, m))
        else:
            cmd = proc(host, "cmd.exe", None)
            ps = proc(host, "powershell.exe", cmd)
            schedule(ts, proc_ev(ts, ps))
            schedule(ts + 400, file_ev(ts + 400, ps, "ps1"))
            if complete:
                schedule(ts + 900, net_ev(ts + 900, ps, 4444))

    # Hosts start with processes already running (no start events for them), so the simulation
    # is in its steady state from the first event and its own memory does not grow with n.
    for host in range(hosts):
        root = proc(host, "explorer.exe", None)
        live[host].append(root)
        for _ in range(35):
            parent = rng.choice(live[host])
            name = rng.choice(NOISE_NAMES)
            if name == "powershell.exe" and parent["name"] == "cmd.exe":
                name = "python.exe"
            live[host].append(proc(host, name, parent))

    plan: list[tuple[int, bool, int]] = []
    for i in range(chains * 3):
        plan.append((i * 4 * interval // 3 + interval // 2, True, i % 3))
    for i in range(chains * 3):
        plan.append((i * 4 * interval // 3 + interval, False, i % 3))
    plan.sort()
    plan_idx = 0

    emitted = 0
    while emitted < n:
        if plan_idx < len(plan) and plan[plan_idx][0] <= emitted:
            _, complete, kind = plan[plan_idx]
            plan_idx += 1
            inject(t, complete, kind)
        if scheduled and scheduled[0][0] <= t:
            # Chain steps due by now go out before the noise event at `t` (time order holds).
            yield heapq.heappop(scheduled)[2]
            emitted += 1
            continue
        t += rng.randint(0, 3)
        if scheduled and scheduled[0][0] <= t:
            continue
        host = rng.randrange(hosts)
        procs = live[host]
        r = rng.random()
        if not procs or (r < 0.08 and len(procs) < 40):
            parent = rng.choice(procs) if procs else None
            name = rng.choice(NOISE_NAMES)
            if name == "powershell.exe" and parent is not None and parent["name"] == "cmd.exe":
                name = "python.exe"  # keep the noise from completing the powershell rule
            p = proc(host, name, parent)
            procs.append(p)
            ev = proc_ev(t, p)
        elif r < 0.12:
            p = procs.pop(rng.randrange(len(procs)))
            ev = proc_ev(t, p, "end")
        elif r < 0.55:
            ev = file_ev(t, rng.choice(procs), rng.choice(NOISE_EXT))
        elif r < 0.85:
            p = rng.choice(procs)
            port = rng.choice(NOISE_PORTS)
            ev = net_ev(t, p, port)
        else:
            ev = dns_ev(t, rng.choice(procs), rng.choice(NOISE_DOMAINS))
        yield ev
        emitted += 1


# ---------------------------------------------------------------- measurement (subprocess side)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timed(stream: Iterator[dict], spent: list[float]) -> Iterator[dict]:
    """Pass events through, adding the time spent generating them to ``spent[0]``."""
    clock = time.perf_counter
    it = iter(stream)
    while True:
        started = clock()
        try:
            ev = next(it)
        except StopIteration:
            spent[0] += clock() - started
            return
        spent[0] += clock() - started
        yield ev


def _measure(engine: str, n: int, chains: int, seed: int, eql_dir: str, repeats: int) -> dict[str, Any]:
    rss_start = _peak_rss_mb()
    per_rule: dict[str, dict[str, float]] = {}
    if engine == "baseline":
        started = time.perf_counter()
        for _ in generate(n, chains, seed):
            pass
        elapsed = time.perf_counter() - started
        return {"seconds": elapsed, "rss_mb": _peak_rss_mb(), "rss_start_mb": rss_start, "rules": {}}
    if engine == "dac":
        sys.path.insert(0, str(REPO))
        from deployer.eql.engine import compile_query

        for name, text in RULES.items():
            best = None
            for _ in range(repeats):
                program = compile_query(text)
                spent = [0.0]
                started = time.perf_counter()
                count = sum(1 for _ in program.run_sorted(_timed(generate(n, chains, seed), spent)))
                total = time.perf_counter() - started
                if best is None or total - spent[0] < best["seconds"]:
                    best = {"seconds": total - spent[0], "total": total, "matches": count}
            per_rule[name] = best
    else:
        sys.path.insert(0, eql_dir)
        import eql  # only in this subprocess
        from eql.parser import elasticsearch_syntax

        sys.path.insert(0, str(REPO))
        from deployer.eql.values import parse_timestamp

        def adapt(stream: Iterator[dict], Event: Any = eql.Event) -> Iterator[Any]:  # noqa: N803
            # Same work as the evaluator does per event: parse the ISO timestamp.
            for ev in stream:
                yield Event(ev["event"]["category"][0], parse_timestamp(ev["@timestamp"]), ev)

        for name, text in RULES.items():
            best = None
            for _ in range(repeats):
                with elasticsearch_syntax:
                    query = eql.parse_query(text)
                engine_obj = eql.PythonEngine({"time_unit": 1000})  # timestamps in ms
                hits = [0]
                engine_obj.add_output_hook(lambda _out, hits=hits: hits.__setitem__(0, hits[0] + 1))
                engine_obj.add_query(query)
                spent = [0.0]
                started = time.perf_counter()
                engine_obj.stream_events(adapt(_timed(generate(n, chains, seed), spent)))
                total = time.perf_counter() - started
                if best is None or total - spent[0] < best["seconds"]:
                    best = {"seconds": total - spent[0], "total": total, "matches": hits[0]}
            per_rule[name] = best
    return {
        "seconds": sum(r["seconds"] for r in per_rule.values()),
        "rss_mb": _peak_rss_mb(),
        "rss_start_mb": rss_start,
        "rules": per_rule,
    }


# ---------------------------------------------------------------- orchestration


def ensure_eql(cache: Path) -> Path:
    """Install eql into a private target directory (never into the project environment)."""
    target = cache / f"eql-{EQL_VERSION}"
    if (target / "eql" / "__init__.py").is_file():
        return target
    print(f"installing eql=={EQL_VERSION} into {target} (benchmark only)", flush=True)
    # lark, eql's only dependency, is already installed as a dependency of this project.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            f"eql=={EQL_VERSION}",
        ],
        check=True,
    )
    return target


def run_child(engine: str, n: int, chains: int, seed: int, eql_dir: Path, repeat: int) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its JSON report."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            engine,
            "--n",
            str(n),
            "--chains",
            str(chains),
            "--seed",
            str(seed),
            "--eql-dir",
            str(eql_dir),
            "--repeat",
            str(repeat),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    """Run all measurements and print the side-by-side table with ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated event counts")
    ap.add_argument("--chains", type=int, default=50, help="true chains per rule (decoys: as many again)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--repeat",
        type=int,
        default=0,
        help="passes per rule, best time kept (default: 3 up to 200k events, 1 above)",
    )
    ap.add_argument("--child", choices=("dac", "eql", "baseline"), help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--eql-dir", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child, args.n, args.chains, args.seed, args.eql_dir, args.repeat)))
        return 0

    cache = Path(os.environ.get("DAC_CACHE_DIR", Path.home() / ".cache" / "dac")) / "bench"
    eql_dir = ensure_eql(cache)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rules = len(RULES)
    print(f"rules: {', '.join(RULES)}; {args.chains} true chains per rule; seed {args.seed}")
    results: dict[int, dict[str, dict[str, Any]]] = {}
    for n in sizes:
        results[n] = {}
        for engine in ("baseline", "dac", "eql"):
            print(f"  measuring {engine:8s} n={n:,} ...", flush=True)
            repeat = args.repeat or (3 if n <= 200_000 else 1)
            results[n][engine] = run_child(engine, n, args.chains, args.seed, eql_dir, repeat)

    ok = True
    print()
    print(f"{'events':>9} {'engine':6} {'net s':>8} {'events/s':>10} {'peak RSS MB':>12}  matches per rule")
    for n in sizes:
        gen = results[n]["baseline"]["seconds"]
        for engine in ("dac", "eql"):
            r = results[n][engine]
            # Time inside the event generator is measured per event and already excluded.
            net = max(r["seconds"], 1e-9)
            r["net"] = net
            counts = [int(v["matches"]) for v in r["rules"].values()]
            print(f"{n:>9,} {engine:6} {net:8.2f} {n * rules / net:10,.0f} {r['rss_mb']:12.1f}  {counts}")
        dac, ref = results[n]["dac"], results[n]["eql"]
        if [v["matches"] for v in dac["rules"].values()] != [v["matches"] for v in ref["rules"].values()]:
            ok = False
            print("  MATCH COUNTS DIFFER between the engines")
        print(
            f"{'':>9} ratio  throughput dac/eql = {ref['net'] / dac['net']:.2f}x "
            f"(generator alone: {n / gen:,.0f} events/s)"
        )
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        for engine in ("dac", "eql"):
            a, b = results[small][engine]["rss_mb"], results[large][engine]["rss_mb"]
            print(
                f"peak RSS {engine}: {b:.1f} MB at {large:,} vs {a:.1f} MB at {small:,} -> ratio {b / a:.2f}"
            )
        base_a, base_b = results[small]["baseline"]["rss_mb"], results[large]["baseline"]["rss_mb"]
        print(f"peak RSS generator alone: {base_b:.1f} MB vs {base_a:.1f} MB")
    expected = args.chains
    for engine in ("dac", "eql"):
        for n in sizes:
            got = [int(v["matches"]) for v in results[n][engine]["rules"].values()]
            if any(c < expected for c in got):
                print(f"note: {engine} at {n:,} found fewer than {expected} matches for some rule: {got}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
