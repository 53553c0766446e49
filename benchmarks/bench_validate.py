#!/usr/bin/env python3
"""Benchmark ``dac validate`` on generated rules (default 1,000) and print timings and ratios.

Each generated rule is a variant of the sample rule in tests/data/rules/valid with its own
rule_id, name, process name and maxspan, so the run exercises every check (schema, EQL parse,
ECS fields, allowed values, sequence policy, ATT&CK, fixtures, duplicates) on distinct files.

Usage: python benchmarks/bench_validate.py [--rules 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deployer.config import Config, ValidationConfig
from deployer.ecs import registry as ecs_registry
from deployer.rules.loader import load_rule_file
from deployer.rules.validate import validate

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "tests" / "data" / "rules" / "valid"
SAMPLE = SAMPLE_DIR / "office_child_network.yaml"
TARGET_SECONDS = 2.0


def generate(directory: Path, count: int) -> None:
    """Write ``count`` distinct valid rules (and their fixtures) into ``directory``."""
    shutil.copytree(SAMPLE_DIR / "fixtures", directory / "fixtures")
    template = SAMPLE.read_text(encoding="utf-8")
    for i in range(count):
        text = (
            template.replace("0f5c1d2e-7a4b-4c3d-9e8f-112233445566", f"bench-{i:05d}")
            .replace("name: Sample - Office", f"name: Bench {i:05d} - Office")
            .replace('"mshta.exe"', f'"tool{i}.exe"')
            .replace("maxspan=5m", f"maxspan={1 + i % 9}m")
        )
        (directory / f"rule_{i:05d}.yaml").write_text(text, encoding="utf-8")


def _time(func, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        out.append(time.perf_counter() - started)
    return out


def main() -> int:
    """Run the benchmark and print a small table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print the 15 most expensive functions")
    args = parser.parse_args()

    config = Config(
        path=None, root=REPO, validation=ValidationConfig(extra_fields=REPO / "extra_fields.yaml")
    )
    reg = ecs_registry.load(config.validation.extra_fields)
    with tempfile.TemporaryDirectory(prefix="dac-bench-") as tmp:
        directory = Path(tmp) / "detections"
        directory.mkdir()
        generate(directory, args.rules)
        # What a user waits for: a fresh `dac validate` process (interpreter start, imports,
        # grammar and schema built, every file checked).
        cli = _time(
            lambda: subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "from deployer.cli import main; main()",
                    "validate",
                    "--config",
                    str(REPO / "dac.yaml"),
                    str(directory),
                ],
                check=True,
                capture_output=True,
            ),
            args.repeat,
        )
        findings = validate([directory], config, registry=reg, jobs=1)
        if findings:
            print(f"unexpected findings ({len(findings)}), first: {findings[0].format_text()}")
            return 1
        serial = _time(lambda: validate([directory], config, registry=reg, jobs=1), args.repeat)
        workers = _time(
            lambda: validate([directory], config, registry=reg, jobs=os.cpu_count() or 1), args.repeat
        )
        load_only = _time(lambda: [load_rule_file(p) for p in sorted(directory.glob("*.yaml"))], args.repeat)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            validate([directory], config, registry=reg, jobs=1)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)

    n = args.rules
    print(
        f"rules: {n}   cpus: {os.cpu_count()}   load average: {os.getloadavg()[0]:.1f}   best of {args.repeat}"
    )
    print(f"dac validate (fresh process)     {min(cli):7.3f} s   median {statistics.median(cli):.3f} s")
    print(f"validate(), one process          {min(serial):7.3f} s   {min(serial) / n * 1000:.2f} ms/rule")
    print(
        f"validate(), jobs=cpu count       {min(workers):7.3f} s   serial/workers = {min(serial) / min(workers):.2f}x"
    )
    print(
        f"  of which loading (YAML)        {min(load_only):7.3f} s   = {min(load_only) / min(serial):.0%} of one process"
    )
    verdict = "met" if min(cli) < TARGET_SECONDS else "MISSED"
    print(
        f"target {TARGET_SECONDS:.1f} s for the fresh process: {min(cli) / TARGET_SECONDS:.2f} of target ({verdict})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
