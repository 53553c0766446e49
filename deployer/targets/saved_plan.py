"""Saved plans: `dac plan --out FILE` writes one, `dac deploy --plan FILE` applies exactly it.

A saved plan is one JSON document (format `dac-plan/1`):
- `dac_version`, `created_at`;
- `target`: `{kind, name, url, space}` (no credentials: they never enter a plan);
- `repository`: the rule paths planned (relative to the repository root), the git commit when
  there is one, and `files`: the sha256 of every rule and exception file under those paths, of
  exception files read from elsewhere and of dac.yaml, folded into one `digest`;
- `options` (`prune`, `adopt`), `summary`, `refused` (rules the target cannot express);
- `changes`: one generic record per write, `{kind, id, action, name, fields, desired, observed}`,
  where `desired` is the exact body that will be sent and `observed` the target's state the
  change was computed against: `null` for a create (the object must still be absent), otherwise
  the object's server id and whatever version tokens the API gives (Kibana rules: `revision`,
  `updated_at`; exception lists: `_version`; OpenSearch: `seq_no`, `primary_term`) plus a sha256
  of its normal form. Rules, monitors, exception lists and items all fit this record;
- `others`: the changes that write nothing (conflict, orphan), `unchanged`: their ids;
- `integrity`: the sha256 of everything above, so a truncated or hand-edited file is refused.
  It guards against accidents, not attackers: keep plans where only CI can write them.

`staleness()` compares a plan with a fresh read of the target and `repository_changes()` with the
working tree; `dac deploy --plan` refuses on any difference, so it writes only what was reviewed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deployer import __version__
from deployer.targets.plan import (
    CONFLICT,
    CREATE,
    DELETE,
    ORPHAN,
    UNCHANGED,
    UPDATE,
    Change,
    FieldChange,
    Plan,
)

FORMAT = "dac-plan/1"
_YAML_SUFFIXES = (".yaml", ".yml")
# Fixtures are test data: they never change what is deployed, so they are not part of the digest.
_SKIP_DIRS = frozenset({"fixtures"})


class PlanFileError(Exception):
    """A saved plan that cannot be used (unreadable, tampered with, for another target or version)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def canonical(value: Any) -> str:
    """Return the canonical JSON text used for every digest (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_of(value: Any) -> str:
    """Return `sha256:<hex>` of a value's canonical JSON."""
    return "sha256:" + hashlib.sha256(canonical(value).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- repository state


def repository_files(paths: Sequence[Path], root: Path, extra: Iterable[Path] = ()) -> dict[str, str]:
    """Return `{path relative to root: sha256}` of every rule and exception file under `paths` (+ `extra`)."""
    out: dict[str, str] = {}
    for path in [*_yaml_files(paths), *(p for p in extra if p.is_file())]:
        out[_rel(path, root)] = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return dict(sorted(out.items()))


def _yaml_files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from _walk(path)


def _walk(root: Path) -> Iterator[Path]:
    for child in sorted(root.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            if child.name not in _SKIP_DIRS:
                yield from _walk(child)
        elif child.suffix in _YAML_SUFFIXES:
            yield child


def _rel(path: Path, root: Path) -> str:
    p = path.resolve()
    try:
        return p.relative_to(root.resolve()).as_posix()
    except ValueError:
        return p.as_posix()


def git_commit(root: Path) -> str | None:
    """Return the commit checked out at `root`, or None outside a git repository."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = proc.stdout.strip()
    return text if proc.returncode == 0 and len(text) == 40 else None


def repository_changes(planned: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """Return one line per file that differs between the plan's digest and the working tree."""
    lines = []
    for rel in sorted(set(planned) | set(now)):
        if rel not in now:
            lines.append(f"{rel}: removed since the plan")
        elif rel not in planned:
            lines.append(f"{rel}: added since the plan")
        elif planned[rel] != now[rel]:
            lines.append(f"{rel}: changed since the plan")
    return lines


# ---------------------------------------------------------------- the document


@dataclass
class SavedPlan:
    """A plan as written to and read from a file; `doc` is the JSON document."""

    doc: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> dict[str, Any]:
        """`{kind, name, url, space}` of the planned target."""
        return dict(self.doc.get("target") or {})

    @property
    def files(self) -> dict[str, str]:
        """The repository files and their sha256 as planned."""
        return dict((self.doc.get("repository") or {}).get("files") or {})

    @property
    def paths(self) -> list[str]:
        """The rule paths planned, relative to the repository root."""
        return list((self.doc.get("repository") or {}).get("paths") or [])

    @property
    def changes(self) -> list[dict[str, Any]]:
        """The change records that write."""
        return list(self.doc.get("changes") or [])

    @property
    def refused(self) -> list[dict[str, Any]]:
        """Rules the target could not express (listed, never written)."""
        return list(self.doc.get("refused") or [])

    def conflicts(self) -> list[dict[str, Any]]:
        """Changes refused because the object exists but is not owned."""
        return [c for c in self.doc.get("others") or [] if c.get("action") == CONFLICT]

    def to_plan(self) -> Plan:
        """Rebuild the in-memory Plan (desired = the body to send) for rendering and applying."""
        plan = Plan(
            target=str(self.doc.get("target", {}).get("description", "")),
            prune=bool((self.doc.get("options") or {}).get("prune")),
            adopt=bool((self.doc.get("options") or {}).get("adopt")),
        )
        for rec in self.changes:
            plan.changes.append(
                Change(
                    rec["action"],
                    rec["id"],
                    rec.get("name", ""),
                    [
                        FieldChange(f["path"], f.get("before"), f.get("after"))
                        for f in rec.get("fields") or []
                    ],
                    desired=copy.deepcopy(rec.get("desired")),
                    message=rec.get("message", ""),
                )
            )
        for rec in self.doc.get("others") or []:
            plan.changes.append(
                Change(
                    rec["action"],
                    rec["id"],
                    rec.get("name", ""),
                    message=rec.get("message", ""),
                    hint=rec.get("hint", ""),
                )
            )
        for rid in self.doc.get("unchanged") or []:
            plan.changes.append(Change(UNCHANGED, rid))
        return plan

    def dumps(self) -> str:
        """Return the file text (pretty JSON, integrity digest last)."""
        body = {k: v for k, v in self.doc.items() if k != "integrity"}
        return (
            json.dumps({**body, "integrity": sha256_of(body)}, indent=2, ensure_ascii=False, default=str)
            + "\n"
        )

    def write(self, path: Path) -> None:
        """Write the plan file (through a temporary file, so a crash never leaves half a plan)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.dumps(), encoding="utf-8")
        tmp.replace(path)


def build_saved_plan(
    plan: Plan,
    *,
    kind: str,
    target_name: str,
    url: str,
    space: str | None,
    payloads: Mapping[str, Mapping[str, Any]],
    observed: Mapping[str, Mapping[str, Any]],
    paths: Sequence[Path],
    root: Path,
    config_file: Path | None,
    extra_files: Sequence[Path] = (),
    refused: Sequence[Mapping[str, Any]] = (),
    kind_of: Callable[[str], str] = lambda _id: "rule",
) -> SavedPlan:
    """Turn a computed plan plus the target's observed state into a saved plan document."""
    files = repository_files(paths, root, [*([config_file] if config_file else []), *extra_files])
    changes = []
    for c in plan.writes:
        changes.append(
            {
                "kind": kind_of(c.rule_id),
                "id": c.rule_id,
                "action": c.action,
                "name": c.name,
                "fields": [f.to_dict() for f in c.fields],
                "desired": copy.deepcopy(dict(payloads[c.rule_id])) if c.action != DELETE else None,
                "observed": None if c.action == CREATE else copy.deepcopy(dict(observed[c.rule_id])),
                **({"message": c.message} if c.message else {}),
            }
        )
    others = [
        {
            "kind": kind_of(c.rule_id),
            "id": c.rule_id,
            "action": c.action,
            "name": c.name,
            "message": c.message,
            "hint": c.hint,
        }
        for c in plan.changes
        if c.action in (CONFLICT, ORPHAN)
    ]
    doc = {
        "format": FORMAT,
        "dac_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "target": {"kind": kind, "name": target_name, "url": url, "space": space, "description": plan.target},
        "repository": {
            "commit": git_commit(root),
            "paths": [_rel(p, root) for p in paths],
            "config": _rel(config_file, root) if config_file else None,
            "digest": sha256_of(files),
            "files": files,
        },
        "options": {"prune": plan.prune, "adopt": plan.adopt},
        "summary": plan.summary(),
        "refused": [dict(r) for r in refused],
        "changes": changes,
        "others": others,
        "unchanged": [c.rule_id for c in plan.of(UNCHANGED)],
    }
    return SavedPlan(doc)


def read_saved_plan(path: Path) -> SavedPlan:
    """Read and check a plan file: JSON, format, integrity digest, dac version."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PlanFileError(f"cannot read the plan file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise PlanFileError(f"{path} is not a dac plan file (not UTF-8 text)") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise PlanFileError(
            f"{path}:{e.lineno}:{e.colno}: the plan file is not valid JSON ({e.msg}); it may be truncated",
            hint="write the plan again with `dac plan --out FILE`",
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise PlanFileError(f"{path} is not a {FORMAT} plan file (format: {found!r})")
    body = {k: v for k, v in doc.items() if k != "integrity"}
    if doc.get("integrity") != sha256_of(body):
        raise PlanFileError(
            f"{path}: the plan's integrity digest does not match its content; it was edited or damaged "
            "after `dac plan` wrote it",
            hint="never edit a plan file; write a new one with `dac plan --out FILE`",
        )
    if doc.get("dac_version") != __version__:
        raise PlanFileError(
            f"{path} was written by dac {doc.get('dac_version')}; this is dac {__version__}",
            hint="plan and deploy with the same dac version (pin it), then plan again",
        )
    for i, rec in enumerate(doc.get("changes") or []):
        missing = [k for k in ("kind", "id", "action") if not isinstance(rec, dict) or k not in rec]
        if missing or rec.get("action") not in (CREATE, UPDATE, DELETE):
            raise PlanFileError(f"{path}: change #{i + 1} is malformed ({', '.join(missing) or 'action'})")
    return SavedPlan(doc)


def target_mismatch(saved: SavedPlan, *, kind: str, url: str, space: str | None) -> str | None:
    """Return why the resolved target is not the plan's, or None when it is the same."""
    want = saved.target
    diffs = []
    if want.get("kind") != kind:
        diffs.append(f"kind {want.get('kind')} vs {kind}")
    if str(want.get("url", "")).rstrip("/") != url.rstrip("/"):
        diffs.append(f"URL {want.get('url')} vs {url}")
    if (want.get("space") or "default") != (space or "default"):
        diffs.append(f"space {want.get('space') or 'default'} vs {space or 'default'}")
    return "; ".join(diffs) or None


def staleness(saved: SavedPlan, current: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """Return one line per planned change whose target object moved since the plan.

    `current` maps each change id to the object's observed state now (None when absent).
    """
    lines = []
    for rec in saved.changes:
        rid, action, was = rec["id"], rec["action"], rec.get("observed")
        now = current.get(rid)
        kind = rec.get("kind", "object")
        if action == CREATE:
            if now is not None:
                lines.append(f"{kind} {rid}: the plan creates it, but it now exists in the target")
            continue
        if now is None:
            lines.append(
                f"{kind} {rid}: the plan {'updates' if action == UPDATE else 'deletes'} it, but it is gone from the target"
            )
            continue
        moved = [
            f"{key} {_fmt(was.get(key))} -> {_fmt(now.get(key))}"
            for key in sorted(set(was or {}) | set(now))
            if key != "digest" and (was or {}).get(key) != now.get(key)
        ]
        if not moved and (was or {}).get("digest") != now.get("digest"):
            moved.append("its content")
        if moved:
            lines.append(f"{kind} {rid}: changed in the target since the plan ({', '.join(moved)})")
    return lines


def _fmt(value: Any) -> str:
    return "(none)" if value is None else str(value)
