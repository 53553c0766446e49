#!/usr/bin/env python3
"""Benchmark `dac validate` on Elastic's 678 prebuilt EQL rules in a fresh process: ms per rule.

The corpus (../shared/corpora, or $DAC_SHARED_DIR/corpora) is imported once with `dac import`
into a temporary folder, then each measurement is a new `dac validate --format json` process,
as a user runs it. Side by side: the same process on an empty folder (interpreter start and
imports, the floor), and the corpus. Both wall time and CPU time (user+sys of the child) are
printed, since wall time on a shared machine includes waiting for a core; the target (3 ms per
rule) is judged on the best wall time and on CPU time.

Usage: python benchmarks/bench_validate_corpus.py [--repeat 5] [--corpus FILE]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DAC_SHARED_DIR", REPO.parent / "shared"))
DEFAULT_CORPUS = SHARED / "corpora" / "elastic-prebuilt-eql-windows-linux.ndjson"
TARGET_MS_PER_RULE = 3.0
DAC = [sys.executable, "-c", "from deployer.cli import main; main()"]


def _run(args: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [*DAC, *args], cwd=cwd, capture_output=True, check=False, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    """Run the benchmark and print a small table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = parser.parse_args()
    if not args.corpus.is_file():
        print(f"error: {args.corpus} not found (set DAC_SHARED_DIR or pass --corpus)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="dac-bench-corpus-") as tmp:
        work = Path(tmp)
        rules, empty = work / "rules", work / "empty"
        empty.mkdir()
        subprocess.run(
            [*DAC, "import", str(args.corpus), "--out", str(rules)],
            cwd=work,
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        n = len(list(rules.glob("*.yaml")))
        floor = [_run(["validate", "--format", "json", str(empty)], work) for _ in range(args.repeat)]
        corpus = [_run(["validate", "--format", "json", str(rules)], work) for _ in range(args.repeat)]

    def row(label: str, runs: list[tuple[float, float]]) -> tuple[float, float]:
        walls, cpus = [r[0] for r in runs], [r[1] for r in runs]
        print(
            f"{label:<34} wall best {min(walls):6.3f} s  median {statistics.median(walls):6.3f} s   "
            f"cpu best {min(cpus):6.3f} s"
        )
        return min(walls), min(cpus)

    print(
        f"rules: {n}   cpus: {os.cpu_count()}   load average: {os.getloadavg()[0]:.1f}   runs: {args.repeat}"
    )
    floor_wall, floor_cpu = row("dac validate, empty folder", floor)
    wall, cpu = row(f"dac validate, corpus ({n} rules)", corpus)
    for label, seconds, floor_s in (("wall", wall, floor_wall), ("cpu", cpu, floor_cpu)):
        per_rule = seconds / n * 1000
        verdict = "met" if per_rule <= TARGET_MS_PER_RULE else "MISSED"
        print(
            f"{label:>4}: {per_rule:5.2f} ms/rule in a fresh process ({(seconds - floor_s) / n * 1000:5.2f} ms/rule "
            f"above the empty-folder floor); target {TARGET_MS_PER_RULE:.1f}: "
            f"{per_rule / TARGET_MS_PER_RULE:.2f}x of target ({verdict})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
