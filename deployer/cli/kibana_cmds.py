"""`dac plan`, `dac deploy`, `dac export`, `dac import`: keep a target in step with the repository.

Exit codes: 0 ok / no changes, 1 findings, conflicts, failed rules or (deploy) rules the target
refused, 2 usage or environment error
(unreachable target, bad credentials, unsupported version), and for `plan` 3 when changes are
pending. Secrets are never accepted as flag values: credentials come from environment variables
or `--api-key-file`.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from deployer.cli.common import (
    DEFAULT_RULES_DIR,
    EXIT_ENV,
    EXIT_FAIL,
    EXIT_OK,
    EXIT_PENDING,
    fail,
    format_option,
    progress_bar,
)

# Target kind -> module exposing `from_config(cfg) -> Target`.
TARGET_MODULES = {"kibana": "deployer.targets.kibana", "opensearch": "deployer.targets.opensearch"}


def _target_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by every command that talks to a target; the command takes them as `**conn`."""
    options = [
        click.option(
            "--target", "target_name", metavar="NAME", help="Target defined under `targets:` in dac.yaml."
        ),
        click.option("--kibana-url", metavar="URL", help="Kibana base URL (or KIBANA_URL)."),
        click.option("--opensearch-url", metavar="URL", help="OpenSearch base URL (or OPENSEARCH_URL)."),
        click.option(
            "--space", metavar="SPACE", help="Kibana space id (or KIBANA_SPACE); default space if omitted."
        ),
        click.option(
            "--api-key-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Read the API key from this file instead of the KIBANA_API_KEY variable.",
        ),
        click.option(
            "--ca-cert",
            type=click.Path(dir_okay=False, path_type=Path),
            help="PEM file with the CA that signed the server certificate.",
        ),
        click.option(
            "--insecure",
            is_flag=True,
            default=None,
            help="Do not verify TLS certificates (never in production).",
        ),
        click.option("--timeout", type=float, help="Seconds to wait for each response (default 30)."),
        click.option(
            "--config",
            "config_path",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Configuration file (default: the nearest dac.yaml).",
        ),
        click.option("-v", "--verbose", is_flag=True, help="Log each request and retry to stderr."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


_format_option = format_option("Human text, or one JSON document for machines (no progress output).")
_adopt_option = click.option(
    "--adopt", is_flag=True, help="Take over rules with the same rule_id that dac does not own."
)


def _handle_target_errors(f: Callable[..., Any]) -> Callable[..., Any]:
    """Turn whole-target failures into one clear message and exit code 2, never a traceback."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from deployer.targets.base import TargetError

        try:
            return f(*args, **kwargs)
        except TargetError as e:
            fail(e.message, EXIT_ENV, e.hint)

    return wrapper


def _setup_logging(verbose: bool) -> None:
    log = logging.getLogger("dac")
    if verbose and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)


def _resolve(conn: Mapping[str, Any]) -> Any:
    """Resolve the target from the `_target_options` values, dac.yaml and the environment."""
    from deployer.targets.config import resolve_target

    kibana_url, opensearch_url = conn["kibana_url"], conn["opensearch_url"]
    if kibana_url and opensearch_url:
        raise click.UsageError("pass either --kibana-url or --opensearch-url, not both")
    kind = "opensearch" if opensearch_url else ("kibana" if kibana_url else None)
    api_key_file, ca_cert = conn["api_key_file"], conn["ca_cert"]
    cfg = resolve_target(
        conn["target_name"],
        kind=kind,
        url=kibana_url or opensearch_url,
        space=conn["space"],
        api_key_file=str(api_key_file) if api_key_file else None,
        ca_cert=str(ca_cert) if ca_cert else None,
        insecure=conn["insecure"],
        timeout=conn["timeout"],
        config_path=conn["config_path"],
    )
    if cfg.insecure:
        click.echo(f"warning: TLS verification is off for {cfg.name}", err=True)
    return cfg


def _prepare(
    paths: Sequence[Path], conn: Mapping[str, Any], *, full_validation: bool
) -> tuple[Any, list[Any], list[Any], Any]:
    """Set up logging, resolve the target and load what is meant for it: (cfg, rules, findings, exception lists)."""
    from deployer.exceptions.loader import catalogue_for
    from deployer.exceptions.model import referenced_list_ids

    _setup_logging(conn["verbose"])
    cfg = _resolve(conn)
    rule_paths = _rule_paths(paths, cfg.root)
    rules, findings = _load_rules(
        rule_paths, cfg, full_validation=full_validation, config_path=conn["config_path"]
    )
    referenced = {lid for rule in rules for lid in referenced_list_ids(rule)}
    exceptions, problems = catalogue_for(rule_paths, referenced, cfg.root / DEFAULT_RULES_DIR)
    if not full_validation:
        findings.extend(problems)  # a full validation already reported them
    return cfg, rules, findings, exceptions


def make_target(cfg: Any) -> Any:
    """Return the Target for a resolved config, dispatching on its kind."""
    from deployer.targets.base import TargetError

    module_name = TARGET_MODULES.get(cfg.kind)
    if module_name is None:
        raise TargetError(f"unknown target kind {cfg.kind!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise TargetError(f"the {cfg.kind} target is not available in this installation ({e})") from None
    return module.from_config(cfg)


def _rule_paths(paths: Sequence[Path], root: Path) -> list[Path]:
    if paths:
        return list(paths)
    for candidate in (Path(DEFAULT_RULES_DIR), root / DEFAULT_RULES_DIR):
        if candidate.is_dir():
            return [candidate]
    raise click.UsageError(f"no {DEFAULT_RULES_DIR}/ directory here; pass the rule files or directories")


def _load_rules(
    paths: list[Path], cfg: Any, *, full_validation: bool, config_path: Path | None
) -> tuple[list[Any], list[Any]]:
    """Load the rules (and with `full_validation`, run every validation check); returns (rules, findings)."""
    from deployer.rules.findings import ERROR, Finding
    from deployer.rules.loader import load_rule_files

    loaded = load_rule_files(paths)
    findings = list(loaded.findings)
    if full_validation:
        from deployer.config import ConfigError, load_config
        from deployer.rules.validate import validate
        from deployer.targets.base import TargetError

        try:
            findings = list(validate(paths, load_config(config_path)))
        except (ConfigError, OSError, ValueError) as e:
            # A broken configuration or extra-fields file: an environment error, not a finding.
            raise TargetError(f"cannot validate the rules: {e}") from None
    seen: dict[str, Any] = {}
    for rule in loaded.rules:
        if not rule.rule_id:
            findings.append(Finding(str(rule.path), 1, 1, None, "schema", ERROR, "rule_id is missing", None))
            continue
        if rule.rule_id in seen and not any(f.code == "duplicate" for f in findings):
            line, col = rule.position("rule_id")
            findings.append(
                Finding(
                    str(rule.path),
                    line,
                    col,
                    rule.rule_id,
                    "duplicate",
                    ERROR,
                    f"rule_id also used by {seen[rule.rule_id].path}",
                    "every rule needs its own rule_id",
                )
            )
        seen[rule.rule_id] = rule
    from deployer.targets.config import select_rules

    return select_rules(cfg, [r for r in loaded.rules if r.rule_id]), findings


def _errors(findings: list[Any]) -> list[Any]:
    from deployer.rules.findings import ERROR

    return [f for f in findings if f.severity == ERROR]


def _report_findings(findings: list[Any]) -> None:
    """Print findings for people on stderr (stdout stays clean for --format json)."""
    from deployer.rules.findings import format_findings

    if findings:
        click.echo(format_findings(findings, "text"), err=True)


def _compute_plan(
    target: Any, rules: list[Any], exceptions: Any, *, prune: bool, adopt: bool
) -> tuple[Any, list[dict[str, Any]]]:
    """Plan the target; returns (plan, refusals), refusals being the rules the target left out."""
    from deployer.targets.plan import build_plan

    desired = target.desired(rules, exceptions)
    refused = _refusals(target)
    current = target.read_current(list(desired))
    # A refused rule is still in the repository: whatever an earlier deploy wrote for it is
    # neither an orphan nor pruned, so a rule that stops compiling never silently loses its monitor.
    refused_ids = {r["rule_id"] for r in refused}
    current = {rid: body for rid, body in current.items() if rid not in refused_ids}
    the_plan = build_plan(
        desired,
        current,
        owned=target.owned,
        prune=prune,
        adopt=adopt,
        ignore=target.compare_ignore,
        target=target.describe(),
    )
    return the_plan, refused


def _saved_plan(
    target: Any,
    cfg: Any,
    the_plan: Any,
    refused: list[dict[str, Any]],
    paths: Sequence[Path],
    conn: Mapping[str, Any],
    exceptions: Any,
) -> Any:
    """Build the saved plan: bodies to send, observed target state, repository digest."""
    from deployer.targets.config import load_targets
    from deployer.targets.saved_plan import build_saved_plan

    _, config_file, _ = load_targets(conn["config_path"])
    writes = [c.rule_id for c in the_plan.writes]
    sends = [c.rule_id for c in the_plan.writes if c.action != "delete"]
    return build_saved_plan(
        the_plan,
        kind=cfg.kind,
        target_name=cfg.name,
        url=cfg.url,
        space=cfg.space if cfg.kind == "kibana" else None,
        payloads={rid: target.payload(rid) for rid in sends},
        observed={rid: target.observed(rid) for rid in writes if target.observed(rid) is not None},
        paths=_rule_paths(paths, cfg.root),
        root=cfg.root,
        config_file=config_file,
        # Lists a rule references may be read from outside the planned paths (detections/).
        extra_files=[
            Path(x.file.path) for x in [*exceptions.lists.values(), *exceptions.value_lists.values()]
        ],
        refused=refused,
        kind_of=target.object_kind,
    )


def _refusals(target: Any) -> list[dict[str, Any]]:
    """Return the rules the target could not express faithfully (after `desired()`), JSON-ready."""
    out = []
    # Only some targets refuse rules (OpenSearch); a Kibana target takes every rule as written.
    for refusal in getattr(target, "refused", None) or []:
        out.append(
            {
                "rule_id": str(refusal.rule_id),
                "construct": str(getattr(refusal, "construct", "")),
                "reason": str(getattr(refusal, "reason", "") or refusal),
                "line": getattr(refusal, "line", None),
                "column": getattr(refusal, "column", None),
            }
        )
    return sorted(out, key=lambda r: r["rule_id"])


def _report_refusals(refused: list[dict[str, Any]]) -> None:
    """Print one `refused: <rule_id>: <reason>` line per refused rule on stderr, like findings."""
    for r in refused:
        click.echo(f"refused: {r['rule_id']}: {r['reason']}", err=True)


@contextmanager
def _progress(total: int, enabled: bool, label: str) -> Iterator[Callable[[int], None] | None]:
    """Yield a callback that advances a rich progress bar on stderr, or None when not on a terminal."""
    if not enabled or total == 0:
        yield None
        return
    with progress_bar(label) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.update(task, advance=n)


@click.command("plan")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@_target_options
@click.option(
    "--prune", is_flag=True, help="Show owned rules that are no longer in the repository as deletions."
)
@_adopt_option
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Save the plan to FILE for `dac deploy --plan FILE` (validates every rule first).",
)
@format_option(
    "Human text, one JSON document, or Markdown for a pull-request comment.",
    choices=("text", "json", "markdown"),
)
@_handle_target_errors
def plan(
    paths: tuple[Path, ...],
    prune: bool,
    adopt: bool,
    out_file: Path | None,
    fmt: str,
    **conn: Any,
) -> None:
    """Show what `dac deploy` would change in the target (exit 0 none, 3 pending, 1 error)."""
    # A saved plan must be deployable as it stands, so it is made from fully validated rules.
    cfg, rules, findings, exceptions = _prepare(paths, conn, full_validation=out_file is not None)
    _report_findings(findings)
    if _errors(findings):
        fail("rule files have errors; fix them before planning", EXIT_FAIL)
    target = make_target(cfg)
    try:
        the_plan, refused = _compute_plan(target, rules, exceptions, prune=prune, adopt=adopt)
        saved = (
            _saved_plan(target, cfg, the_plan, refused, paths, conn, exceptions)
            if out_file or fmt == "markdown"
            else None
        )
    finally:
        target.close()
    _report_refusals(refused)
    if out_file is not None and saved is not None:
        try:
            saved.write(out_file)
        except OSError as e:
            fail(f"cannot write the plan file {out_file}: {e.strerror}", EXIT_ENV)
        click.echo(f"Plan saved to {out_file}; apply it with: dac deploy --plan {out_file}", err=True)
    if fmt == "json":
        click.echo(json.dumps({**the_plan.to_dict(), "refused": refused}, indent=2, default=str))
    elif fmt == "markdown" and saved is not None:
        from deployer.targets.plan_render import render_markdown

        click.echo(render_markdown(saved))
    else:
        click.echo(the_plan.render_text())
    # Refusals do not change the plan's exit code: the plan itself is still right; deploy fails on them.
    if the_plan.conflicts:
        sys.exit(EXIT_FAIL)
    sys.exit(EXIT_PENDING if the_plan.has_changes else EXIT_OK)


@click.command("deploy")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@_target_options
@click.option("--prune", is_flag=True, help="Delete owned rules that are no longer in the repository.")
@_adopt_option
@click.option("--dry-run", is_flag=True, help="Validate and plan, write nothing.")
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Apply exactly this saved plan (`dac plan --out`); refused if the target or the files moved since.",
)
@click.option(
    "--lock-wait",
    type=float,
    default=120.0,
    show_default=True,
    help="With --plan: seconds to wait for another deploy to the same target to finish.",
)
@_format_option
@_handle_target_errors
def deploy(
    paths: tuple[Path, ...],
    prune: bool,
    adopt: bool,
    dry_run: bool,
    plan_file: Path | None,
    lock_wait: float,
    fmt: str,
    **conn: Any,
) -> None:
    """Validate every rule, then write only what changed to the target (exit 1 if any rule failed or was refused)."""
    if plan_file is not None:
        if paths or prune or adopt or dry_run:
            raise click.UsageError(
                "--plan applies the saved plan as it is: no PATHS, --prune, --adopt or --dry-run"
            )
        _deploy_saved_plan(plan_file, lock_wait, fmt, conn)
        return
    cfg, rules, findings, exceptions = _prepare(paths, conn, full_validation=True)
    errors = _errors(findings)
    if errors:
        if fmt == "json":
            from deployer.rules.findings import sort_key

            click.echo(
                json.dumps(
                    {"deployed": False, "findings": [f.to_dict() for f in sorted(findings, key=sort_key)]},
                    indent=2,
                )
            )
        _report_findings(findings)
        fail(f"{len(errors)} error(s) in the rule files; nothing was deployed", EXIT_FAIL)
    _report_findings(findings)  # warnings only
    target = make_target(cfg)
    try:
        the_plan, refused = _compute_plan(target, rules, exceptions, prune=prune, adopt=adopt)
        _report_refusals(refused)
        if fmt == "text":
            click.echo(the_plan.render_text())
        if the_plan.conflicts:
            if fmt == "json":
                click.echo(
                    json.dumps(
                        {"deployed": False, "plan": the_plan.to_dict(), "results": [], "refused": refused},
                        indent=2,
                    )
                )
            fail(
                f"{len(the_plan.conflicts)} rule(s) exist in the target but are not managed by dac; nothing was deployed",
                EXIT_FAIL,
                "pass --adopt to take them over, or change their rule_id in the repository",
            )
        results: list[Any] = []
        if not dry_run and the_plan.has_changes:
            total = sum(1 for _ in the_plan.writes)
            with _progress(total, fmt == "text" and sys.stderr.isatty(), "deploying") as advance:
                results = target.apply(the_plan, advance)
    finally:
        target.close()
    failed = [r for r in results if not r.ok]
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "deployed": not dry_run,
                    "dry_run": dry_run,
                    "plan": the_plan.to_dict(),
                    "results": [r.to_dict() for r in results],
                    "summary": {"ok": len(results) - len(failed), "failed": len(failed)},
                    "refused": refused,
                },
                indent=2,
            )
        )
    else:
        if dry_run:
            click.echo("Dry run: nothing was written.")
        elif not the_plan.has_changes:
            click.echo("Nothing to deploy.")
        else:
            # Every rule is listed on small deploys; on large ones only failures, to stay readable.
            for r in results if len(results) <= 50 else failed:
                status = "ok    " if r.ok else "FAILED"
                tail = f": {r.message}" if r.message else ""
                click.echo(f"  {status} {r.action:<7} {r.rule_id}{tail}")
            click.echo(f"Deployed: {len(results) - len(failed)} ok, {len(failed)} failed.")
    if refused:
        # The other rules were deployed; the refused ones were meant for this target and are not
        # there, which a pipeline must notice. Excluding them from the target is the way out.
        click.echo(
            f"error: {len(refused)} rule(s) cannot be expressed by {cfg.name} and were not deployed",
            err=True,
        )
        click.echo(
            "hint: rewrite them, or leave them out of this target in dac.yaml (targets.<name>.exclude)",
            err=True,
        )
    sys.exit(EXIT_FAIL if failed or refused else EXIT_OK)


def _deploy_saved_plan(plan_file: Path, lock_wait: float, fmt: str, conn: Mapping[str, Any]) -> None:
    """`dac deploy --plan FILE`: check the plan, the target and the files, then apply it or refuse."""
    import os
    import socket

    from deployer.targets.config import load_targets
    from deployer.targets.plan_apply import apply_saved_plan, preflight, replan_hint
    from deployer.targets.saved_plan import PlanFileError, read_saved_plan

    _setup_logging(conn["verbose"])

    def refuse(message: str, details: list[str], hint: str) -> None:
        if fmt == "json":
            click.echo(
                json.dumps(
                    {"deployed": False, "plan_file": str(plan_file), "refused_because": details or [message]},
                    indent=2,
                )
            )
        for line in details:
            click.echo(f"  {line}", err=True)
        fail(message, EXIT_FAIL, hint)

    replan = replan_hint(plan_file)
    try:
        saved = read_saved_plan(plan_file)
    except PlanFileError as e:
        refuse(f"{e.message}; nothing was written", [], e.hint or replan)
        return
    cfg = _resolve(conn)
    _, config_file, _ = load_targets(conn["config_path"])
    refusal = preflight(
        saved,
        plan_file=plan_file,
        kind=cfg.kind,
        url=cfg.url,
        space=cfg.space if cfg.kind == "kibana" else None,
        root=cfg.root,
        config_file=config_file,
    )
    if refusal is not None:
        refuse(refusal.message, refusal.details, refusal.hint)
    target = make_target(cfg)
    holder = f"{socket.gethostname()}:{os.getpid()}"
    try:
        with _progress(len(saved.changes), fmt == "text" and sys.stderr.isatty(), "deploying") as advance:
            outcome = apply_saved_plan(target, saved, holder=holder, lock_wait=lock_wait, progress=advance)
    finally:
        target.close()
    if outcome.stale:
        refuse(
            f"the target changed since the plan was made ({len(outcome.stale)} object(s)); nothing was written",
            outcome.stale,
            replan,
        )
    failed = outcome.failed
    refused = saved.refused
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "deployed": True,
                    "plan_file": str(plan_file),
                    "results": [r.to_dict() for r in outcome.results],
                    "summary": {"ok": len(outcome.applied), "failed": len(failed)},
                    "refused": refused,
                },
                indent=2,
            )
        )
    else:
        click.echo(f"Applying {plan_file} to {saved.target.get('description') or cfg.name}")
        if not outcome.results:
            click.echo("Nothing to deploy.")
        for r in outcome.results if len(outcome.results) <= 50 else failed:
            status = "ok    " if r.ok else "FAILED"
            tail = f": {r.message}" if r.message else ""
            click.echo(f"  {status} {r.action:<7} {r.rule_id}{tail}")
        click.echo(f"Deployed: {len(outcome.applied)} ok, {len(failed)} failed.")
    if failed:
        click.echo(
            f"error: {len(failed)} change(s) of the plan were not applied (the others were); "
            "run `dac plan` to see what remains",
            err=True,
        )
    if refused:
        _report_refusals(refused)
        click.echo(
            f"error: {len(refused)} rule(s) cannot be expressed by {cfg.name} and were not deployed", err=True
        )
    sys.exit(EXIT_FAIL if failed or refused else EXIT_OK)


@click.command("show")
@click.argument("plan_file", type=click.Path(dir_okay=False, path_type=Path))
@format_option(
    "Human text, the plan's JSON document, or Markdown for a pull-request comment.",
    choices=("text", "json", "markdown"),
)
def show(plan_file: Path, fmt: str) -> None:
    """Print a saved plan (`dac plan --out FILE`) for people, machines or a pull request."""
    from deployer.targets.plan_render import render_markdown, render_text
    from deployer.targets.saved_plan import PlanFileError, read_saved_plan

    try:
        saved = read_saved_plan(plan_file)
    except PlanFileError as e:
        fail(e.message, EXIT_FAIL, e.hint)
    if fmt == "json":
        click.echo(saved.dumps(), nl=False)
    elif fmt == "markdown":
        click.echo(render_markdown(saved))
    else:
        click.echo(render_text(saved))


@click.command("export")
@_target_options
@click.option(
    "--owned/--all",
    "owned_only",
    default=True,
    show_default=True,
    help="Only rules dac manages, or every rule in the space.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one YAML file per rule here (default: print to stdout).",
)
@_handle_target_errors
def export(
    owned_only: bool,
    out_dir: Path | None,
    **conn: Any,
) -> None:
    """Export rules from a Kibana space as rule files."""
    from deployer.targets.kibana import client_from_config, export_documents

    _setup_logging(conn["verbose"])
    if conn["opensearch_url"]:
        raise click.UsageError("export reads Kibana rules; pass --kibana-url or a kibana --target")
    cfg = _resolve(conn)
    if cfg.kind != "kibana":
        raise click.UsageError(f"target {cfg.name} is {cfg.kind}; export reads Kibana rules")
    client = client_from_config(cfg)
    try:
        docs, lists = export_documents(client, owned_only=owned_only)
    finally:
        client.close()
    _emit_documents(docs, lists, out_dir, cfg.root)


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one YAML file per rule here (default: print to stdout).",
)
def import_(file: Path, out_dir: Path | None) -> None:
    """Convert a Kibana rules export (.ndjson) into rule files and exception list files, offline."""
    from deployer.exceptions.kibana import list_documents
    from deployer.targets.config import load_targets
    from deployer.targets.kibana_rules import parse_ndjson, parse_ndjson_objects, to_rule_document

    try:
        text = file.read_text(encoding="utf-8")
        rules = parse_ndjson(text)
        lists = list_documents(parse_ndjson_objects(text))
    except (OSError, UnicodeDecodeError) as e:
        fail(f"cannot read {file}: {e}", EXIT_ENV)
    except ValueError as e:
        fail(f"{file}: {e}", EXIT_FAIL)
    if not rules:
        fail(f"{file}: no rules found (expected a Kibana rules export in ndjson)", EXIT_FAIL)
    try:
        _, _, root = load_targets(None)
    except Exception:  # a broken dac.yaml must not stop an offline conversion
        root = Path.cwd()
    _emit_documents([to_rule_document(r) for r in rules], lists, out_dir, root)


def _emit_documents(
    docs: list[dict[str, Any]], lists: list[dict[str, Any]], out_dir: Path | None, root: Path
) -> None:
    """Print or write the rule files, and the exception list files under `<out>/exceptions/`."""
    from deployer.targets.kibana_rules import dump_rule_yaml, write_rule_files

    incomplete = [d.get("rule_id") for d in docs if not (d.get("metadata") or {}).get("platforms")]
    if out_dir is None:
        click.echo("---\n".join(dump_rule_yaml(d) for d in [*docs, *lists]), nl=False)
    else:
        written = write_rule_files(docs, out_dir, schema=root / "schemas" / "rule.schema.json")
        click.echo(f"Wrote {len(written)} rule file(s) to {out_dir}", err=True)
        if lists:
            written = write_rule_files(
                lists, out_dir / "exceptions", schema=root / "schemas" / "exception_list.schema.json"
            )
            click.echo(f"Wrote {len(written)} exception list file(s) to {out_dir / 'exceptions'}", err=True)
    if incomplete:
        click.echo(
            f"note: {len(incomplete)} rule(s) have no metadata.platforms (Kibana does not store it for rules dac did not "
            "deploy, and neither host.os.type in the query, OS: tags nor the index patterns say); fill it in "
            "before `dac validate`",
            err=True,
        )
