"""Split a rule set across worker processes that each read the whole events file.

A backtest's cost is the rules, not the reading: one core parses JSON at more than ten times the
rate the corpus' rules evaluate it. So every worker reads (and checks) the whole file and
evaluates its share of the rules; per-rule results do not depend on the other rules, so the
merged answer is the one process's answer whatever the split. Rules that read other rules' alerts
stay in one share with every rule they depend on, so no dependency is evaluated twice.

Workers are forked (the loaded rules, exception lists and field registry are inherited, not
pickled); where `fork` does not exist the caller gets one share. Each worker sends back its
result, or the input error it hit (the same for every worker, since all read the same file);
worker 0 also relays progress.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from deployer.testing.evaluate import RuleLike, depends_on
from deployer.testing.events import EventsError

T = TypeVar("T")
# How often (s) the parent checks that no worker died without a word while it waits.
POLL_SECONDS = 0.5


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def can_fork() -> bool:
    """Whether workers can be forked here (Linux, macOS; not Windows)."""
    return "fork" in multiprocessing.get_all_start_methods()


def split_rules(rules: Sequence[RuleLike], library: Sequence[RuleLike], parts: int) -> list[list[RuleLike]]:
    """At most ``parts`` non-empty shares of ``rules``; rules linked by ``depends_on`` share one.

    Shares are balanced by rule count (largest linked groups placed first, each on the lightest
    share); within a share the rules keep their given order.
    """
    ids = [r.rule_id for r in rules]
    by_id = {r.rule_id: r for r in [*library, *rules]}
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    for rule in rules:
        # Walk the dependencies (library rules included: two rules over one library rule share it).
        seen = {rule.rule_id}
        todo = list(depends_on(rule))
        while todo:
            dep = todo.pop()
            if dep in seen:
                continue
            seen.add(dep)
            parent[find(dep)] = find(rule.rule_id)
            if dep in by_id:
                todo.extend(depends_on(by_id[dep]))
    groups: dict[str, list[int]] = {}
    for i, rule_id in enumerate(ids):
        groups.setdefault(find(rule_id), []).append(i)
    shares: list[list[int]] = [[] for _ in range(max(1, min(parts, len(groups))))]
    for group in sorted(groups.values(), key=lambda g: (-len(g), g[0])):
        min(shares, key=len).extend(group)
    return [[rules[i] for i in sorted(share)] for share in shares if share]


def run_shares(
    shares: Sequence[Sequence[RuleLike]],
    work: Callable[
        [Sequence[RuleLike], Callable[[int, int | None], None] | None, Callable[[str], None] | None], T
    ],
    *,
    progress: Callable[[int, int | None], None] | None = None,
    on_fallback: Callable[[str], None] | None = None,
) -> list[T]:
    """``work(share, progress, on_fallback)`` in one forked worker per share; the results in share order.

    Raises the first worker's `EventsError` (bad input), or RuntimeError when a worker failed
    otherwise or died; the other workers are stopped.
    """
    ctx = multiprocessing.get_context("fork")
    inbox: Any = ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(i, share, work, inbox, i == 0), daemon=True)
        for i, share in enumerate(shares)
    ]
    results: dict[int, T] = {}
    try:
        for worker in workers:
            worker.start()
        while len(results) < len(workers):
            try:
                message = inbox.get(timeout=POLL_SECONDS)
            except queue.Empty:
                # A worker that exits 0 has sent its last message already; any other exit is a death.
                for i, worker in enumerate(workers):
                    if i not in results and worker.exitcode not in (None, 0):
                        raise RuntimeError(
                            f"backtest worker {i} exited with code {worker.exitcode}"
                        ) from None
                continue
            kind, index, payload = message
            if kind == "progress":
                if progress is not None:
                    progress(*payload)
            elif kind == "fallback":
                if on_fallback is not None:
                    on_fallback(payload)
            elif kind == "done":
                results[index] = payload
            elif kind == "events_error":
                raise EventsError(*payload)
            else:
                raise RuntimeError(f"backtest worker {index} failed:\n{payload}")
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
        for worker in workers:
            worker.join()
        inbox.close()
    return [results[i] for i in range(len(workers))]


def _worker(
    index: int, share: Sequence[RuleLike], work: Callable[..., Any], outbox: Any, relay: bool
) -> None:
    def progress(count: int, chars: int | None) -> None:
        outbox.put(("progress", index, (count, chars)))

    def fallback(why: str) -> None:
        outbox.put(("fallback", index, why))

    try:
        result = work(share, progress if relay else None, fallback if relay else None)
    except EventsError as exc:
        outbox.put(("events_error", index, (exc.source, exc.line, exc.message)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        outbox.put(("failed", index, traceback.format_exc()))
    else:
        outbox.put(("done", index, result))
    outbox.close()
    outbox.join_thread()
