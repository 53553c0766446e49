#!/usr/bin/env python3
"""Benchmark: each compiled monitor run by real Alerting over replayed events, beside the offline engine.

The events are ``bench_run.py``'s synthetic telemetry with AN1314 chains (imported, not copied),
each with a unique ``event.id``. They are written once into a one-shard scratch index (as
``dac run --engine opensearch`` does), then for every rule of ``detections/`` that compiles:

* ``deployed``: the monitor as deployed (window widened over the whole stream, reading the
  scratch index) run with ``_execute`` (dry run): seconds as measured by the client, and the number
  of entities Alerting's trigger selected;
* ``run``: the same with the sequence report ``dac run --engine opensearch`` adds, and the number
  of sequences; the offline engine's sequences for that rule over the same events are counted
  beside it and must be equal.

Each execute is repeated ``--repeat`` times and the best kept. With ``--verify`` it also times
``dac verify --opensearch-url URL`` end to end (subprocess, the whole repository's fixtures and
the scheduled run). Needs a cluster with Alerting: ``dac cluster up --plugin-dir ../shared/opensearch-plugins``.

Usage: python benchmarks/bench_opensearch.py --url http://127.0.0.1:9200 [--size 100000] [--verify]
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_run import with_chains  # noqa: E402 - the shared synthetic telemetry with chains

from deployer.targets.opensearch import ALERTING, OpenSearchClient  # noqa: E402
from deployer.targets.opensearch_compile import COMPOSITE_AGG, compile_rules  # noqa: E402
from deployer.targets.opensearch_run import (  # noqa: E402
    EVENTS_AGG,
    SCRATCH_PREFIX,
    StreamEvent,
    _bulk,
    _sequences,
    composed_mappings,
    repo_templates,
    run_body,
)
from deployer.targets.opensearch_verify import alerted_entities, parse_ts  # noqa: E402
from deployer.testing.events import default_field_types  # noqa: E402
from deployer.testing.loading import load_rules  # noqa: E402
from deployer.testing.stream import replay_file  # noqa: E402


def _execute(
    client: OpenSearchClient, body: dict[str, Any], period_end: str, repeat: int
) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = client.request(
            "POST", f"{ALERTING}/monitors/_execute", body, params={"dryrun": "true", "period_end": period_end}
        )
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--chains", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--verify", action="store_true", help="also time dac verify end to end")
    args = parser.parse_args()

    docs = []
    for i, doc in enumerate(with_chains(args.size, args.chains, 7)):
        doc["event"]["id"] = f"e{i}"
        docs.append(doc)
    events = [StreamEvent(d, d["event"]["id"]) for d in docs]
    loaded = load_rules([REPO / "detections"])
    report = compile_rules(loaded.rules)
    compiled = sorted(report.compiled, key=lambda c: c.rule_id)
    print(
        f"{len(events):,} events; {len(compiled)} of {len(loaded.rules)} rules compile ({len(report.refused)} refused)"
    )

    # The offline side runs as `dac run` does: from a file, with the ECS field types and the
    # rules' exception lists.
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "events.ndjson"
        stream.write_text("".join(json.dumps(d) + "\n" for d in docs))
        started = time.perf_counter()
        offline: dict[str, int] = {}
        for result in replay_file(
            [r for r in loaded.rules if r.rule_id in {c.rule_id for c in compiled}],
            str(stream),
            exceptions=loaded.exceptions,
            field_types=default_field_types(),
        ):
            offline[result["rule_id"]] = offline.get(result["rule_id"], 0) + 1
        offline_s = time.perf_counter() - started

    client = OpenSearchClient(args.url, timeout=600)
    client.require_alerting()
    index = f"{SCRATCH_PREFIX}bench"
    client.request("DELETE", f"/{index}", ok=(404,))
    client.request(
        "PUT",
        f"/{index}",
        {
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": composed_mappings(repo_templates(), index),
        },
    )
    try:
        started = time.perf_counter()
        _bulk(client, index, events)
        index_s = time.perf_counter() - started
        stamps = [parse_ts(d["@timestamp"]) for d in docs]
        first, last = min(stamps), max(stamps)
        period_end = f"{last + 1}ms"
        print(f"indexing: {index_s:.1f}s; offline engine, all {len(compiled)} rules: {offline_s:.1f}s")
        print()
        header = f"{'rule':50} {'deployed s':>10} {'entities':>8} {'run s':>7} {'sequences':>9} {'offline':>7}  agree"
        print(header)
        total_deployed = total_run = 0.0
        agree_all = True
        for rule in compiled:
            run = run_body(rule, index, first, last)
            # The deployed monitor: the same body without the sequence report.
            deployed = copy.deepcopy(run)
            deployed["inputs"][0]["search"]["query"]["aggregations"][COMPOSITE_AGG]["aggregations"].pop(
                EVENTS_AGG
            )
            d_s, d_result = _execute(client, deployed, period_end, args.repeat)
            entities = len(alerted_entities(d_result, rule.rule_id))
            r_s, r_result = _execute(client, run, period_end, args.repeat)
            sequences = len(_sequences(r_result, rule.rule_id))
            want = offline.get(rule.rule_id, 0)
            agree = sequences == want
            agree_all &= agree
            total_deployed += d_s
            total_run += r_s
            print(
                f"{rule.rule_id[:50]:50} {d_s:10.2f} {entities:8} {r_s:7.2f} {sequences:9} {want:7}  {'yes' if agree else 'NO'}"
            )
        print()
        print(
            f"all monitors: deployed form {total_deployed:.1f}s, with the sequence report {total_run:.1f}s; "
            f"offline engine {offline_s:.1f}s (ratio OpenSearch/offline {total_run / offline_s:.1f}x)"
        )
    finally:
        client.request("DELETE", f"/{index}", ok=(404,))
        client.close()

    if args.verify:
        started = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "from deployer.cli import main; main()",
                "verify",
                "--opensearch-url",
                args.url,
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        verify_s = time.perf_counter() - started
        tail = proc.stdout.strip().splitlines()[-2:]
        print(f"dac verify end to end: {verify_s:.1f}s, exit {proc.returncode}")
        for line in tail:
            print(f"  {line}")
    return 0 if agree_all else 1


if __name__ == "__main__":
    sys.exit(main())
