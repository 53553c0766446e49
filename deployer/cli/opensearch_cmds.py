"""`dac verify` and `dac demo`: prove on a real OpenSearch that the rules raise alerts.

`verify` deploys the mapping templates and the rules, replays every fixture and checks that each
positive fixture alerts on the right entity and no near miss alerts at all (exit 1 otherwise).
`demo` starts a local OpenSearch, deploys everything, replays one AN1314 attack and prints the
alert. Credentials come from OPENSEARCH_USERNAME / OPENSEARCH_PASSWORD, never from flags.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from deployer.cli.common import (
    DEFAULT_RULES_DIR,
    EXIT_ENV,
    EXIT_FAIL,
    EXIT_OK,
    fail,
    format_option,
    progress_bar,
)


def _repo_root() -> Path:
    from deployer.config import find_config

    found = find_config()
    return found.parent if found else Path.cwd()


def _load(paths: tuple[Path, ...], root: Path) -> list[Any]:
    from deployer.rules.findings import ERROR
    from deployer.rules.loader import load_rule_files

    if not paths:
        default = root / DEFAULT_RULES_DIR
        if not default.is_dir():
            raise click.UsageError(
                f"no {DEFAULT_RULES_DIR}/ directory here; pass the rule files or directories"
            )
        paths = (default,)
    loaded = load_rule_files(list(paths))
    errors = [f for f in loaded.findings if f.severity == ERROR]
    if errors:
        for finding in errors:
            click.echo(finding.format_text(), err=True)
        fail(f"{len(errors)} error(s) in the rule files; nothing was deployed", EXIT_FAIL)
    return [r for r in loaded.rules if r.rule_id]


def _client(url: str, ca_cert: Path | None, insecure: bool, timeout: float) -> Any:
    from deployer.targets.opensearch import OpenSearchClient

    if insecure:
        click.echo("warning: TLS verification is off", err=True)
    return OpenSearchClient.from_env(
        url, ca_cert=str(ca_cert) if ca_cert else None, insecure=insecure, timeout=timeout
    )


@contextmanager
def _status(enabled: bool, total: int, label: str) -> Iterator[Callable[[str], None]]:
    """A progress bar on stderr when on a terminal; a no-op otherwise."""
    if not enabled:
        yield lambda _text: None
        return
    with progress_bar("{task.description}") as bar:
        task = bar.add_task(label, total=total or None)
        yield lambda text: bar.update(task, advance=1, description=f"{label}: {text}")


def _fmt_entities(entities: list[tuple[str, ...]]) -> str:
    return ", ".join("/".join(e) for e in entities) or "-"


def print_report(report: Any) -> None:
    """The per-rule table, refusals and totals, as text."""
    if report.mode == "search":
        click.echo(
            "Search-only mode: no monitor was deployed and no alert stored; each rule's monitor search "
            "and trigger condition ran on the cluster."
        )
    alerting = report.mode != "search"
    header = ("FIXTURE", "EXPECT", "EXPECTED", "ALERTED" if alerting else "SELECTED", "RESULT")
    if alerting:
        header += ("ALERT IDS (Alerting API)",)
    by_rule: dict[str, list[tuple[str, ...]]] = {}
    for o in report.outcomes:
        row: tuple[str, ...] = (
            o.name,
            o.expect,
            _fmt_entities(o.expected),
            _fmt_entities(o.alerted),
            "ok" if o.ok else "FAIL",
        )
        if alerting:
            row += (", ".join(o.alert_ids) or "-",)
        by_rule.setdefault(o.rule_id, []).append(row)
    # Ids are never cut: they are what one looks up in Alerting.
    widths = [
        min(max(len(r[i]) for r in [header, *sum(by_rule.values(), [])]), 48) for i in range(len(header))
    ]
    if alerting:
        widths[-1] = 0
    for rule_id, rows in by_rule.items():
        click.echo(f"{rule_id}")
        for row in [header, *rows]:
            cells = [
                c if not widths[i] or len(c) <= widths[i] else c[: widths[i] - 1] + "…"
                for i, c in enumerate(row)
            ]
            click.echo("  " + "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip())
    for o in report.outcomes:
        if o.message:
            click.echo(f"  {'ok  ' if o.ok else 'FAIL'} {o.rule_id} / {o.name}: {o.message}")
    for r in report.deploy_results:
        if not r.ok:
            click.echo(f"  deploy FAILED {r.action} {r.rule_id}: {r.message}")
    for refusal in report.refused:
        click.echo(f"  not deployed: {refusal}")
    for rid in report.no_fixtures:
        click.echo(f"  no fixtures: {rid} (deployed, not verified)")
    if report.scheduled is not None:
        sc = report.scheduled
        click.echo(
            f"Scheduled run ({sc.rule_id} / {sc.fixture}, Alerting's job scheduler, 1-minute schedule): "
            f"{'ok' if sc.ok else 'FAIL'} after {sc.seconds:.0f}s; alerted {_fmt_entities(sc.alerted)}; "
            f"alert ids {', '.join(sc.alert_ids) or '-'}" + (f"; {sc.message}" if sc.message else "")
        )
    c = report.counts()
    verb = "selected by the trigger" if report.mode == "search" else "alerted"
    click.echo(
        f"Positive fixtures {verb}: {c['positive_alerted']}/{c['positive_total']}; "
        f"near misses silent: {c['near_miss_silent']}/{c['near_miss_total']}; "
        f"rules not compiled: {len(report.refused)}."
    )


@click.command("verify")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--opensearch-url",
    envvar="OPENSEARCH_URL",
    metavar="URL",
    required=True,
    help="OpenSearch base URL (or OPENSEARCH_URL).",
)
@click.option("--ca-cert", type=click.Path(dir_okay=False, path_type=Path), help="CA bundle for TLS.")
@click.option("--insecure", is_flag=True, help="Do not verify TLS certificates (never in production).")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds per request.")
@click.option("--no-mappings", is_flag=True, help="Do not write the mapping templates first.")
@click.option("--keep-events", is_flag=True, help="Leave the last replayed fixture in the replay index.")
@click.option(
    "--search-only",
    is_flag=True,
    help="For clusters without the Alerting plugin: run each monitor's search and trigger condition "
    "on the cluster instead of deploying and executing monitors (no alert is stored).",
)
@click.option(
    "--scheduled-timeout",
    type=float,
    default=150.0,
    show_default=True,
    help="Seconds to wait for the job scheduler's run of one rule on a positive fixture (0 skips it).",
)
@format_option("Human table, or one JSON document for machines (no progress output).")
def verify(
    paths: tuple[Path, ...],
    opensearch_url: str,
    ca_cert: Path | None,
    insecure: bool,
    timeout: float,
    no_mappings: bool,
    keep_events: bool,
    search_only: bool,
    scheduled_timeout: float,
    fmt: str,
) -> None:
    """Deploy rules to OpenSearch, replay their fixtures and check the alerts (exit 1 on any miss)."""
    from deployer.targets.base import TargetError
    from deployer.targets.opensearch_verify import load_engine_templates
    from deployer.targets.opensearch_verify import verify as run_verify

    root = _repo_root()
    rules = _load(paths, root)
    total = sum(len((r.metadata or {}).get("tests") or []) for r in rules)
    try:
        client = _client(opensearch_url, ca_cert, insecure, timeout)
        try:
            templates = None if no_mappings else load_engine_templates(root, "opensearch")
            with _status(fmt == "text" and sys.stderr.isatty(), total, "replaying fixtures") as step:
                report = run_verify(
                    client,
                    rules,
                    templates=templates,
                    on_outcome=lambda o: step(f"{o.rule_id} / {o.name}"),
                    keep_events=keep_events,
                    search_only=search_only,
                    scheduled_timeout=scheduled_timeout,
                )
        finally:
            client.close()
    except TargetError as exc:
        hint = exc.hint
        if "Alerting plugin" in exc.message:
            hint = "install the Alerting plugin, or pass --search-only to check the compiled monitor searches"
        fail(exc.message, EXIT_ENV, hint)
    if fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
    sys.exit(EXIT_OK if report.ok else EXIT_FAIL)


# ---------------------------------------------------------------- demo


def _pick_demo_rule(rules: list[Any], compiled: dict[str, Any]) -> tuple[Any, dict[str, Any]] | None:
    """A compiled rule of AN1314 with a positive fixture: one implementing it, else a building block of one."""
    an1314 = [
        r for r in rules if "AN1314" in [str(x).upper() for x in (r.metadata or {}).get("implements") or []]
    ]
    # The chain itself reads alerts (not compiled); the building blocks it depends on are AN1314's halves.
    blocks = {str(d) for r in an1314 for d in (r.metadata or {}).get("depends_on") or []}
    candidates = []
    for rule in rules:
        if rule.rule_id not in compiled or not (rule in an1314 or rule.rule_id in blocks):
            continue
        for test in (rule.metadata or {}).get("tests") or []:
            if isinstance(test, dict) and test.get("expect") == "match":
                candidates.append(
                    (rule not in an1314, bool(rule.data.get("building_block_type")), rule.rule_id, rule, test)
                )
                break
    if not candidates:
        return None
    candidates.sort(key=lambda c: (c[0], c[1], c[2]))
    return candidates[0][3], candidates[0][4]


def _reads(patterns: list[str], index: str) -> bool:
    """True when one of the index patterns matches the concrete index name."""
    import fnmatch

    return any(fnmatch.fnmatchcase(index, p) for p in patterns if not p.startswith("-"))


def _start_cluster(echo: Callable[[str], None], plugin_dir: Path | None) -> str:
    """Start (or reuse) the local OpenSearch through the cluster manager and return its URL."""
    from deployer.cluster import manager
    from deployer.cluster.errors import ClusterError

    echo("starting a local OpenSearch (the first run downloads it from Maven Central)")
    try:
        instance = manager.start("opensearch", progress=echo, plugin_dir=plugin_dir)
    except ClusterError as exc:
        fail(exc.message, EXIT_ENV, exc.hint)
        raise  # unreachable: _fail exits
    return str(instance.url)


@click.command("demo")
@click.option(
    "--opensearch-url",
    metavar="URL",
    help="Use this running OpenSearch instead of starting a local one.",
)
@click.option("--rule", "rule_path", type=click.Path(exists=True, path_type=Path), help="Rule file to demo.")
@click.option(
    "--plugin-dir",
    envvar="DAC_OPENSEARCH_PLUGIN_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Plugin zips (Alerting) for the local OpenSearch (or DAC_OPENSEARCH_PLUGIN_DIR).",
)
def demo(opensearch_url: str | None, rule_path: Path | None, plugin_dir: Path | None) -> None:
    """Start a local OpenSearch with Alerting, deploy the rules, replay an AN1314 attack and show the alert."""
    from deployer.targets.base import TargetError
    from deployer.targets.opensearch import OpenSearchTarget, deploy
    from deployer.targets.opensearch_chain_run import chain_event_lines, refresh_alerts
    from deployer.targets.opensearch_verify import (
        active_alerts,
        alert_entity,
        alerted_entities,
        deploy_templates,
        events_for_entity,
        format_ts,
        load_engine_templates,
        replay_fixture,
        written_since,
    )
    from deployer.testing.events import read_events

    def say(text: str) -> None:
        click.echo(click.style("==> ", fg="cyan", bold=True) + text, err=True)

    root = _repo_root()
    rules = _load((rule_path,) if rule_path else (), root)
    try:
        url = opensearch_url or _start_cluster(say, plugin_dir)
        say(f"OpenSearch at {url}")
        client = _client(url, None, False, 60.0)
        try:
            if not client.has_alerting():
                fail(
                    f"the OpenSearch at {url} has no Alerting plugin, so no monitor can raise an alert",
                    EXIT_ENV,
                    "pass --plugin-dir (or set DAC_OPENSEARCH_PLUGIN_DIR) to the folder holding "
                    "opensearch-alerting-2.19.4.0.zip, e.g. ../shared/opensearch-plugins; a running "
                    "instance is restarted with it",
                )
            written = deploy_templates(client, load_engine_templates(root, "opensearch"))
            say(f"mapping templates written: {written}")
            target = OpenSearchTarget(client)
            plan, results = deploy(target, rules)
            failed = [r for r in results if not r.ok]
            s = plan.summary()
            say(
                f"rules deployed as Alerting monitors: {len(target.compiled)} ({s['create']} created, "
                f"{s['update']} updated, {s['unchanged']} unchanged, {len(failed)} failed)"
            )
            for refusal in target.refused:
                say(f"not deployed: {refusal}")
            picked = _pick_demo_rule(rules, target.compiled)
            if picked is None:
                fail("no compiled AN1314 rule with a positive fixture to replay", EXIT_FAIL)
                return
            rule, test = picked
            events = [dict(e) for e in read_events(Path(rule.path).parent / str(test["events"]))]
            say(f"replaying {len(events)} events of '{test.get('name')}' ({test['events']}), shifted to now")
            source = target.compiled[rule.rule_id]
            if source.reads_alerts_of:
                source = target.compiled[source.reads_alerts_of[0]]  # a chain's events are its blocks'
            index = replay_fixture(client, source, events)
            # Every compiled rule reading the replay index runs, then the chains over their alerts,
            # so the whole chain shows.
            readers = sorted(
                (c for c in target.compiled.values() if _reads(c.indices, index)), key=lambda c: c.rule_id
            )
            names = {c.rule_id for c in readers}
            chains = sorted(
                (
                    c
                    for c in target.compiled.values()
                    if c.reads_alerts_of and set(c.reads_alerts_of) <= names
                ),
                key=lambda c: c.rule_id,
            )
            target.read_current([c.rule_id for c in readers + chains])
            monitor_ids = target.monitor_ids()
            fired = 0
            for compiled in readers + chains:
                monitor_id = monitor_ids[compiled.rule_id]
                if compiled.reads_alerts_of:
                    refresh_alerts(client)
                before = active_alerts(client, monitor_id)
                entities = alerted_entities(client.execute_monitor(monitor_id), compiled.rule_id)
                if not entities:
                    continue
                # The alert as Alerting stored it, read back from its API (not the search result).
                stored = [
                    a
                    for a in written_since(before, active_alerts(client, monitor_id))
                    if alert_entity(a) in entities
                ]
                if not stored:
                    continue
                fired += 1
                data = next(r for r in rules if r.rule_id == compiled.rule_id).data
                for alert in stored:
                    click.echo("")
                    click.echo(click.style("ALERT", fg="red", bold=True) + f"  {alert.get('monitor_name')}")
                    click.echo(
                        f"  alert id   {alert.get('id')} ({alert.get('state')}, read from the Alerting API)"
                    )
                    click.echo(f"  monitor    {alert.get('monitor_id')}, trigger {alert.get('trigger_name')}")
                    click.echo(f"  rule_id    {compiled.rule_id} (severity {data.get('severity')})")
                    started = alert.get("start_time")
                    click.echo(f"  time       {format_ts(int(started)) if started else '-'}")
                    entity = alert_entity(alert)
                    keys = " / ".join(
                        f"{fields[0]}={value}"
                        for fields, value in zip(compiled.key_fields, entity, strict=False)
                    )
                    click.echo(f"  entity     {keys}")
                    click.echo("  events:")
                    lines = (
                        chain_event_lines(alert)
                        if compiled.reads_alerts_of
                        else events_for_entity(client, index, compiled, entity)
                    )
                    for line in lines:
                        click.echo(f"    {line}")
            if not fired:
                click.echo(f"No alert: no rule fired on '{test.get('name')}'.")
                sys.exit(EXIT_FAIL)
        finally:
            client.close()
    except TargetError as exc:
        fail(exc.message, EXIT_ENV, exc.hint)
        return
    click.echo("")
    if not opensearch_url:
        click.echo("The local OpenSearch keeps running so you can explore it. Stop it with: dac cluster down")
