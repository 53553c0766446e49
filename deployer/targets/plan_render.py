"""Render a saved plan for people: terminal text (`dac show`) and Markdown for pull-request comments.

The Markdown starts with the `<!-- dac-plan -->` marker (a workflow finds and updates its own
comment by it), then a summary line, a table of changes, and each update's field-level diff (each
create's fields) folded in a `<details>` block per object, so a large plan stays readable.
"""

from __future__ import annotations

import json
from typing import Any

from deployer.targets.plan import CONFLICT, CREATE, DELETE, ORPHAN, UPDATE
from deployer.targets.saved_plan import SavedPlan

MARKER = "<!-- dac-plan -->"
MAX_ROWS = 200  # GitHub caps a comment at 65,536 characters
MAX_DIFFS = 50
# Folded details stop here, leaving room for the rest under GitHub's 65,536-character comment limit.
MAX_CHARS = 55_000
_MARKS = {CREATE: "+", UPDATE: "~", DELETE: "-", ORPHAN: "?", CONFLICT: "!"}


def _header_lines(saved: SavedPlan) -> list[str]:
    doc = saved.doc
    repo = doc.get("repository") or {}
    commit = repo.get("commit")
    return [
        f"Plan for {saved.target.get('description') or saved.target.get('name')}",
        f"  made by dac {doc.get('dac_version')} at {doc.get('created_at')}"
        + (f" from commit {commit[:12]}" if commit else " (no git commit)"),
        f"  repository digest {repo.get('digest')} ({len(saved.files)} file(s))",
    ]


def render_text(saved: SavedPlan) -> str:
    """Return the saved plan as terminal text: where it came from, then the plan itself."""
    lines = _header_lines(saved)
    plan = saved.to_plan()
    plan.target = ""
    lines.append(plan.render_text())
    for r in saved.refused:
        lines.append(f"  refused: {r.get('rule_id')}: {r.get('reason')}")
    return "\n".join(lines)


def _cell(value: Any, width: int = 80) -> str:
    # JSON form, so "1" and 1 (or "" and absent) read differently.
    text = "(absent)" if value is None else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > width:
        text = text[: width - 1] + "…"
    # Inline code cannot hold a backtick or a pipe inside a table cell; escape both.
    return "`" + text.replace("`", "'").replace("|", "\\|").replace("\n", "⏎") + "`"


def _name(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def render_markdown(saved: SavedPlan) -> str:
    """Return the saved plan as a pull-request comment (summary, table of changes, folded diffs)."""
    doc = saved.doc
    s = doc.get("summary") or {}
    target = saved.target
    where = f"{target.get('kind')} `{target.get('url')}`" + (
        f", space `{target.get('space')}`" if target.get("space") else ""
    )
    repo = doc.get("repository") or {}
    commit = repo.get("commit")
    out = [
        MARKER,
        f"### dac plan: `{target.get('name')}`",
        "",
        f"**{s.get(CREATE, 0)} to create, {s.get(UPDATE, 0)} to update, {s.get(DELETE, 0)} to delete**, "
        f"{s.get('unchanged', 0)} unchanged, {s.get(ORPHAN, 0)} orphaned, {s.get(CONFLICT, 0)} conflicts "
        f"({where}).",
        "",
    ]
    rows = [*saved.changes, *(doc.get("others") or [])]
    if rows:
        out += ["| | kind | id | name | fields |", "|---|---|---|---|---|"]
        for rec in rows[:MAX_ROWS]:
            fields = ", ".join(f"`{f['path']}`" for f in (rec.get("fields") or [])[:8])
            more = len(rec.get("fields") or []) - 8
            if more > 0:
                fields += f" and {more} more"
            out.append(
                f"| {_MARKS.get(rec['action'], '')} {rec['action']} | {rec.get('kind', 'rule')} | "
                f"`{rec['id']}` | {_name(rec.get('name', ''))} | {fields} |"
            )
        if len(rows) > MAX_ROWS:
            out.append(f"\n… and {len(rows) - MAX_ROWS} more (see the plan artifact).")
        out.append("")
    else:
        out += ["No changes. The target matches the repository.", ""]
    # Folded per object: an update's differing fields, a create's whole body (field by field).
    folded = [
        rec
        for rec in saved.changes
        if (rec["action"] == UPDATE and rec.get("fields")) or (rec["action"] == CREATE and rec.get("desired"))
    ]
    size = sum(len(line) + 1 for line in out)
    shown = 0
    for rec in folded[:MAX_DIFFS]:
        if rec["action"] == UPDATE:
            fields = rec["fields"]
            rows = ["| field | before | after |", "|---|---|---|"] + [
                f"| `{f['path']}` | {_cell(f.get('before'))} | {_cell(f.get('after'))} |" for f in fields
            ]
            count = f"{len(fields)} field{'s' if len(fields) != 1 else ''}"
        else:
            rows = ["| field | value |", "|---|---|"] + [
                f"| `{k}` | {_cell(v)} |" for k, v in rec["desired"].items()
            ]
            count = "new"
        block = [
            f"<details><summary>{_MARKS[rec['action']]} <code>{rec['id']}</code> "
            f"{_name(rec.get('name', ''))} ({count})</summary>",
            "",
            *rows,
            "",
            "</details>",
            "",
        ]
        block_size = sum(len(line) + 1 for line in block)
        if size + block_size > MAX_CHARS:
            break
        out += block
        size += block_size
        shown += 1
    if len(folded) > shown:
        out += [f"… and the details of {len(folded) - shown} more (see the plan artifact).", ""]
    for rec in doc.get("others") or []:
        if rec.get("action") == CONFLICT:
            out.append(f"- `{rec['id']}`: {rec.get('message', '')} ({rec.get('hint', '')})")
    refused = saved.refused
    if refused:
        out += ["", f"**{len(refused)} rule(s) refused by the target** (deploy will exit 1):", ""]
        out += [f"- `{r.get('rule_id')}`: {r.get('reason')}" for r in refused]
    out += [
        "",
        f"<sub>dac {doc.get('dac_version')} · "
        + (f"commit `{commit[:12]}` · " if commit else "")
        + f"repository digest `{str(repo.get('digest', ''))[:19]}…` · "
        "the merge deploys exactly this plan, or refuses if the target or the files moved.</sub>",
    ]
    return "\n".join(out).rstrip() + "\n"
