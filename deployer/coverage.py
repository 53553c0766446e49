"""Coverage view: which analytic steps, file types, ATT&CK techniques and platforms each rule covers.

Everything is derived from fields rules already have, so coverage cannot drift from the content:

- techniques and tactics from `threat` plus the technique IDs in `metadata.implements`;
- platforms from `metadata.platforms`;
- analytic steps from the query itself: each sequence step is classified by its event category and the
  fields it constrains (a `file` step or one on `file.path` = a file written; a `process` step on
  `process.parent.*` = a spawn; a `network` step = network activity; a step on `process.args` of a
  start event = the opened file named on the command line). A rule over other rules' alerts
  (`metadata.depends_on`) covers what its dependencies' steps cover; a rule counts for the analytics
  it declares in `metadata.implements`, and a building block for those its readers declare;
- file types from the `file_type` of each positive fixture test.

Building blocks are listed but do not alert; a step is "alerting" only when a rule that is not
a building block covers it (directly or through the rules it reads).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deployer.eql import ast
from deployer.rules import attack

# The ATT&CK v18.1 analytics the content is measured against and the steps of each chain, as we
# read the analytic's description. Strategy, technique and platforms come from the ATT&CK table.
_ANALYTIC_STEPS: dict[str, dict[str, Any]] = {
    "AN1314": {
        "title": "User app -> file in user-writable path -> LOLBin/installer -> immediate network",
        "steps": {
            "1": "user-facing app (Office/PDF/archiver/browser) starts the chain",
            "2": "downloaded/extracted file created in a user-writable path",
            "3": "the app spawns a living-off-the-land binary or installer",
            "4": "immediate outbound HTTP(S)/DNS/SMB from the same lineage",
        },
    },
    "AN0819": {
        "title": "Opened/downloaded file in a user path -> new or unusual child of the handler (Windows)",
        "steps": {
            "1": "a file delivered by mail/web/chat/share is created in a user-controlled path",
            "2": "the handling application spawns a new or unusual child",
        },
    },
    "AN0820": {
        "title": "Downloaded document/installer created -> exec of a suspicious utility (macOS)",
        "steps": {
            "1": "file created in ~/Downloads, ~/Library containers or a mounted image",
            "2": "exec of a suspicious utility (osascript, shell, curl) from that lineage",
        },
    },
    "AN0821": {
        "title": "New file in ~/Downloads or /tmp -> execve of a risky interpreter/loader (Linux)",
        "steps": {
            "1": "a desktop application writes or opens a new file in ~/Downloads, /tmp or removable media",
            "2": "execve of a risky interpreter or loader by that application",
        },
    },
}


def _with_attack_facts(steps: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    table = attack.table()
    platform_keys = {name: key for key, name in attack.PLATFORM_NAMES.items()}
    out = {}
    for analytic_id, spec in steps.items():
        analytic = table.analytics[analytic_id]
        out[analytic_id] = {
            **spec,
            "strategy": analytic.strategy,
            "technique": table.strategies[analytic.strategy].technique,
            "platforms": [platform_keys.get(p, p.lower()) for p in analytic.platforms],
        }
    return out


ANALYTICS: dict[str, dict[str, Any]] = _with_attack_facts(_ANALYTIC_STEPS)

# File types DET0294 names, the platforms each exists on, and the extensions that stand for it.
# A positive fixture test declares the type it delivers (`file_type`); coverage counts those.
FILE_TYPES: dict[str, dict[str, Any]] = {
    "macro-document": {
        "platforms": ["windows", "macos", "linux"],
        "extensions": ["docm", "dotm", "xlsm", "xltm", "xlam", "pptm", "ppam", "odt", "ods"],
    },
    "pdf": {"platforms": ["windows", "macos", "linux"], "extensions": ["pdf"]},
    "archive": {
        "platforms": ["windows", "macos", "linux"],
        "extensions": ["zip", "rar", "7z", "cab", "tar", "gz", "tgz", "xz", "bz2"],
    },
    "shortcut": {"platforms": ["windows"], "extensions": ["lnk"]},
    "disk-image": {"platforms": ["windows", "macos"], "extensions": ["iso", "img", "vhd", "vhdx", "dmg"]},
    "script": {
        "platforms": ["windows", "macos", "linux"],
        "extensions": [
            "js",
            "jse",
            "vbs",
            "vbe",
            "wsf",
            "hta",
            "ps1",
            "bat",
            "cmd",
            "sh",
            "command",
            "scpt",
            "py",
            "pl",
        ],
    },
    "reg": {"platforms": ["windows"], "extensions": ["reg"]},
    "cpl": {"platforms": ["windows"], "extensions": ["cpl"]},
    "executable": {
        "platforms": ["windows", "macos", "linux"],
        "extensions": ["exe", "scr", "com", "pif", "msi", "app", "pkg", "elf", "appimage", "run", "bin"],
    },
}

# Step kinds found in a query.
FILE = "file"
OPEN_ARGS = "open-args"
SPAWN = "spawn"
NETWORK = "network"

# Navigator's tactic short names ("command-and-control"), from the ATT&CK table.
TACTIC_SHORTNAMES: dict[str, str] = {tid: t.shortname for tid, t in attack.table().tactics.items()}
NAVIGATOR_PLATFORMS = {"windows": "Windows", "linux": "Linux", "macos": "macOS"}


@dataclass
class RuleCoverage:
    """What one rule covers."""

    rule_id: str
    name: str
    path: str
    building_block: bool
    severity: str | None
    platforms: list[str]
    implements: list[str]
    techniques: list[str]
    tactics: list[str]
    technique_tactics: dict[str, list[str]]
    depends_on: list[str]
    step_kinds: list[list[str]]
    analytic_steps: dict[str, list[str]] = field(default_factory=dict)
    file_types: list[str] = field(default_factory=list)
    # AN/DET ids the rule counts for: its own, plus (for a building block) its readers'.
    claims: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "rule_id": self.rule_id,
            "name": self.name,
            "path": self.path,
            "building_block": self.building_block,
            "severity": self.severity,
            "platforms": self.platforms,
            "implements": self.implements,
            "techniques": self.techniques,
            "tactics": self.tactics,
            "depends_on": self.depends_on,
            "analytic_steps": self.analytic_steps,
            "file_types": self.file_types,
        }


@dataclass
class CoverageReport:
    """Coverage of a set of rules."""

    rules: list[RuleCoverage]
    errors: list[str] = field(default_factory=list)

    def analytic_matrix(self) -> dict[str, dict[str, dict[str, list[str]]]]:
        """analytic → step → {"alerting": [rule ids], "building_blocks": [rule ids]}."""
        out: dict[str, dict[str, dict[str, list[str]]]] = {}
        for seed, spec in ANALYTICS.items():
            steps: dict[str, dict[str, list[str]]] = {}
            for step in spec["steps"]:
                alerting = [
                    r.rule_id
                    for r in self.rules
                    if step in r.analytic_steps.get(seed, []) and not r.building_block
                ]
                blocks = [
                    r.rule_id
                    for r in self.rules
                    if step in r.analytic_steps.get(seed, []) and r.building_block
                ]
                steps[step] = {"alerting": alerting, "building_blocks": blocks}
            out[seed] = steps
        return out

    def platform_matrix(self) -> dict[str, dict[str, list[str]]]:
        """analytic → platform → alerting rule ids that cover some step of it on that platform."""
        out: dict[str, dict[str, list[str]]] = {}
        for seed, spec in ANALYTICS.items():
            out[seed] = {
                platform: [
                    r.rule_id
                    for r in self.rules
                    if not r.building_block and r.analytic_steps.get(seed) and platform in r.platforms
                ]
                for platform in spec["platforms"]
            }
        return out

    def strategy_matrix(self) -> dict[str, dict[str, Any]]:
        """Per detection strategy the rules name (directly or through an analytic), from ATT&CK's
        data: the technique it detects and, per analytic, its platforms and the rules covering it.

        A rule covers an analytic it names, or one of a strategy it names whose platforms include
        one of the rule's platforms.
        """
        table = attack.table()
        named: list[str] = []
        for r in self.rules:
            for ident in r.claims:
                det = (
                    ident
                    if ident in table.strategies
                    else getattr(table.analytics.get(ident), "strategy", None)
                )
                if det and det not in named:
                    named.append(det)
        out: dict[str, dict[str, Any]] = {}
        for det in sorted(named):
            strategy = table.strategies[det]
            technique = table.techniques[strategy.technique]
            analytics: dict[str, dict[str, Any]] = {}
            for an in strategy.analytics:
                platforms = table.analytics[an].platforms
                covering = [
                    r
                    for r in self.rules
                    if an in r.claims
                    or (
                        det in r.claims
                        and any(attack.PLATFORM_NAMES.get(p) in platforms for p in r.platforms)
                    )
                ]
                analytics[an] = {
                    "platforms": list(platforms),
                    "alerting": [r.rule_id for r in covering if not r.building_block],
                    "building_blocks": [r.rule_id for r in covering if r.building_block],
                }
            out[det] = {
                "name": strategy.name,
                "technique": technique.id,
                "technique_name": technique.name,
                "analytics": analytics,
                "covered": sum(1 for a in analytics.values() if a["alerting"]),
            }
        return out

    def technique_matrix(self) -> dict[str, list[str]]:
        """technique ID → rule ids mapping it."""
        out: dict[str, list[str]] = {}
        for r in self.rules:
            for t in r.techniques:
                out.setdefault(t, []).append(r.rule_id)
        return dict(sorted(out.items()))

    def file_type_matrix(self) -> dict[str, dict[str, list[str]]]:
        """file type → platform → alerting rules with a positive fixture test delivering that type."""
        return {
            kind: {
                platform: [
                    r.rule_id
                    for r in self.rules
                    if not r.building_block and platform in r.platforms and kind in r.file_types
                ]
                for platform in spec["platforms"]
            }
            for kind, spec in FILE_TYPES.items()
        }

    def gaps(self) -> list[str]:
        """Analytic steps, platforms and file types no alerting rule covers."""
        out = []
        for seed, steps in self.analytic_matrix().items():
            for step, who in steps.items():
                if not who["alerting"]:
                    out.append(f"{seed} step {step}: no alerting rule")
        for seed, platforms in self.platform_matrix().items():
            for platform, who in platforms.items():
                if not who:
                    out.append(f"{seed} on {platform}: no alerting rule")
        for kind, platforms in self.file_type_matrix().items():
            for platform, who in platforms.items():
                if not who:
                    out.append(f"file type {kind} on {platform}: no positive fixture of an alerting rule")
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view of the whole report."""
        return {
            "analytics": ANALYTICS,
            "rules": [r.to_dict() for r in self.rules],
            "analytic_steps": self.analytic_matrix(),
            "file_types": self.file_type_matrix(),
            "platforms": self.platform_matrix(),
            "techniques": self.technique_matrix(),
            "strategies": self.strategy_matrix(),
            "attack_version": attack.table().version,
            "gaps": self.gaps(),
            "errors": self.errors,
        }


# ---------------------------------------------------------------- derivation


def _field_names(node: ast.Node) -> set[str]:
    return {f.name for f in ast.field_refs(node)}


def _string_values(node: ast.Node) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.StringLiteral)}


def classify_step(query: ast.EventQuery) -> list[str]:
    """The kinds of evidence one event query (a sequence step) matches."""
    fields = _field_names(query.condition)
    category = query.category
    kinds: list[str] = []
    if category == "file" or (category in (None, "any") and "file.path" in fields):
        kinds.append(FILE)
    if category == "process" and any(f.startswith("process.parent.") for f in fields):
        kinds.append(SPAWN)
    if category in (None, "any") and "process.args" in fields and "start" in _string_values(query.condition):
        kinds.append(OPEN_ARGS)
    if category == "network" or (category in (None, "any") and "dns.question.name" in fields):
        kinds.append(NETWORK)
    return kinds


def query_step_kinds(query_text: str) -> list[list[str]]:
    """Per step of the query, the kinds of evidence it matches ([] for an unclassified step)."""
    from deployer.eql import parser

    tree = parser.parse(query_text)
    body = tree.body
    if isinstance(body, ast.EventQuery):
        return [classify_step(body)]
    return [classify_step(step.query) for step in body.steps if not step.missing]


def _analytic_steps(analytic: str, kinds: Sequence[Sequence[str]]) -> list[str]:
    flat = [k for step in kinds for k in step]
    covered: list[str] = []
    if analytic == "AN1314":
        if FILE in flat or SPAWN in flat:
            covered.append("1")
        if FILE in flat:
            covered.append("2")
        if SPAWN in flat:
            covered.append("3")
        if NETWORK in flat:
            covered.append("4")
    elif analytic in ANALYTICS:
        if FILE in flat or OPEN_ARGS in flat:
            covered.append("1")
        if SPAWN in flat:
            covered.append("2")
    return covered


def _file_types(rule: Any) -> list[str]:
    tests = (rule.metadata or {}).get("tests") or []
    found = {t.get("file_type") for t in tests if isinstance(t, Mapping) and t.get("expect") == "match"}
    return [kind for kind in FILE_TYPES if kind in found]


def _threat_ids(threat: Any) -> tuple[list[str], list[str], dict[str, list[str]]]:
    techniques: list[str] = []
    tactics: list[str] = []
    by_technique: dict[str, list[str]] = {}
    for entry in threat if isinstance(threat, list) else []:
        if not isinstance(entry, Mapping):
            continue
        tactic = (entry.get("tactic") or {}).get("id")
        if isinstance(tactic, str) and tactic not in tactics:
            tactics.append(tactic)
        for tech in entry.get("technique") or []:
            ids = [tech.get("id")] + [
                s.get("id") for s in tech.get("subtechnique") or [] if isinstance(s, Mapping)
            ]
            for tid in ids:
                if not isinstance(tid, str):
                    continue
                if tid not in techniques:
                    techniques.append(tid)
                if isinstance(tactic, str):
                    by_technique.setdefault(tid, [])
                    if tactic not in by_technique[tid]:
                        by_technique[tid].append(tactic)
    return techniques, tactics, by_technique


def _listify(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def compute(rules: Iterable[Any], errors: Iterable[str] = ()) -> CoverageReport:
    """Coverage of loaded rules (objects with `rule_id`, `data`/`kibana`, `metadata`, `path`)."""
    rules = list(rules)
    kinds_by_id: dict[str, list[list[str]]] = {}
    problems = list(errors)
    for rule in rules:
        query = (rule.kibana or {}).get("query")
        try:
            kinds_by_id[rule.rule_id] = query_step_kinds(query) if isinstance(query, str) else []
        except Exception as exc:  # noqa: BLE001 - a rule that does not parse still gets a row
            problems.append(f"{rule.path}: {rule.rule_id}: query does not parse: {exc}")
            kinds_by_id[rule.rule_id] = []
    meta_by_id = {r.rule_id: r.metadata or {} for r in rules}

    def effective_kinds(rule_id: str, seen: frozenset[str] = frozenset()) -> list[list[str]]:
        deps = _listify(meta_by_id.get(rule_id, {}).get("depends_on"))
        if not deps:
            return kinds_by_id.get(rule_id, [])
        out: list[list[str]] = []
        for dep in deps:
            if dep in seen or dep not in kinds_by_id:
                if dep not in kinds_by_id:
                    problems.append(f"{rule_id}: depends_on {dep} is not among the loaded rules")
                continue
            out.extend(effective_kinds(dep, seen | {rule_id}))
        return out

    dependents: dict[str, list[str]] = {}
    for rule_id, meta in meta_by_id.items():
        for dep in _listify(meta.get("depends_on")):
            dependents.setdefault(dep, []).append(rule_id)

    def declared(rule_id: str) -> set[str]:
        # A building block holds part of a chain: it counts toward the analytics that the rules
        # reading its alerts (transitively) claim; a rule over alerts counts for its own claims.
        out = set(_listify(meta_by_id.get(rule_id, {}).get("implements")))
        todo, seen = list(dependents.get(rule_id, [])), {rule_id}
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            out |= set(_listify(meta_by_id.get(current, {}).get("implements")))
            todo.extend(dependents.get(current, []))
        return out

    report: list[RuleCoverage] = []
    for rule in rules:
        kibana = rule.kibana or {}
        meta = rule.metadata or {}
        implements = _listify(meta.get("implements"))
        techniques, tactics, by_technique = _threat_ids(kibana.get("threat"))
        for item in implements:
            if item.startswith("T") and not item.startswith("TA") and item not in techniques:
                techniques.append(item)
        kinds = effective_kinds(rule.rule_id)
        claimed = declared(rule.rule_id)
        analytic_steps = {an: _analytic_steps(an, kinds) for an in ANALYTICS if an in claimed}
        report.append(
            RuleCoverage(
                rule_id=rule.rule_id,
                name=str(kibana.get("name") or ""),
                path=str(rule.path),
                building_block=kibana.get("building_block_type") == "default",
                severity=kibana.get("severity"),
                platforms=_listify(meta.get("platforms")),
                implements=implements,
                techniques=techniques,
                tactics=tactics,
                technique_tactics=by_technique,
                depends_on=_listify(meta.get("depends_on")),
                step_kinds=kinds,
                analytic_steps={k: v for k, v in analytic_steps.items() if v},
                file_types=_file_types(rule),
                claims=sorted(i for i in claimed if i.startswith(("AN", "DET"))),
            )
        )
    report.sort(key=lambda r: (r.building_block, r.rule_id))
    return CoverageReport(rules=report, errors=problems)


# ---------------------------------------------------------------- output


def render_text(report: CoverageReport) -> str:
    """Human-readable coverage tables."""
    lines: list[str] = []
    lines.append("Rules")
    for r in report.rules:
        kind = "building block" if r.building_block else (r.severity or "")
        steps = "; ".join(f"{an} {','.join(steps)}" for an, steps in r.analytic_steps.items()) or "-"
        lines.append(
            f"  {r.rule_id} [{kind}] platforms={','.join(r.platforms) or '-'} analytic steps: {steps}"
        )
        lines.append(f"    techniques: {', '.join(r.techniques) or '-'}")
        if r.file_types:
            lines.append(f"    file types (positive fixtures): {', '.join(r.file_types)}")
        if r.depends_on:
            lines.append(f"    reads alerts of: {', '.join(r.depends_on)}")
    platform_matrix = report.platform_matrix()
    for analytic, steps in report.analytic_matrix().items():
        spec = ANALYTICS[analytic]
        lines.append("")
        lines.append(f"{analytic} ({spec['strategy']}, {spec['technique']}): {spec['title']}")
        for step, who in steps.items():
            alerting = ", ".join(who["alerting"]) or "NONE"
            blocks = (
                f" (building blocks: {', '.join(who['building_blocks'])})" if who["building_blocks"] else ""
            )
            lines.append(f"  step {step} - {spec['steps'][step]}")
            lines.append(f"    alerting: {alerting}{blocks}")
        for platform, who in platform_matrix[analytic].items():
            lines.append(f"  {platform}: {', '.join(who) or 'NONE'}")
    lines.append("")
    lines.append("File types (DET0294) x platform: alerting rules with a positive fixture")
    for kind, platforms in report.file_type_matrix().items():
        cells = "; ".join(f"{p}: {', '.join(who) or 'NONE'}" for p, who in platforms.items())
        lines.append(f"  {kind}: {cells}")
    lines.append("")
    lines.append(
        f"Detection strategies (ATT&CK v{attack.table().version}): analytics covered by alerting rules"
    )
    for det, spec in report.strategy_matrix().items():
        lines.append(
            f"  {det} ({spec['technique']} {spec['technique_name']}): "
            f"{spec['covered']} of {len(spec['analytics'])} analytics covered - {spec['name']}"
        )
        for an, who in spec["analytics"].items():
            blocks = (
                f" (building blocks: {', '.join(who['building_blocks'])})" if who["building_blocks"] else ""
            )
            lines.append(
                f"    {an} [{', '.join(who['platforms'])}]: {', '.join(who['alerting']) or 'not covered'}{blocks}"
            )
    lines.append("")
    lines.append("ATT&CK techniques")
    for technique, who in report.technique_matrix().items():
        lines.append(f"  {technique}: {', '.join(who)}")
    gaps = report.gaps()
    lines.append("")
    lines.append("Gaps: " + ("none" if not gaps else ""))
    lines.extend(f"  {g}" for g in gaps)
    for err in report.errors:
        lines.append(f"error: {err}")
    return "\n".join(lines) + "\n"


def navigator_layer(report: CoverageReport, name: str = "dac detection coverage") -> dict[str, Any]:
    """An ATT&CK Navigator layer (format 4.5) scoring each technique by the rules that map it."""
    entries: dict[tuple[str, str | None], dict[str, Any]] = {}
    for r in report.rules:
        for technique in r.techniques:
            tactics = r.technique_tactics.get(technique) or [None]
            for tactic in tactics:
                key = (technique, TACTIC_SHORTNAMES.get(tactic) if tactic else None)
                entry = entries.setdefault(key, {"rules": [], "alerting": 0})
                label = f"{r.rule_id} (building block)" if r.building_block else r.rule_id
                if label not in entry["rules"]:
                    entry["rules"].append(label)
                    entry["alerting"] += 0 if r.building_block else 1
    # Which analytics of each named detection strategy are covered, on the technique it detects.
    strategy_notes: dict[str, list[dict[str, str]]] = {}
    for det, spec in report.strategy_matrix().items():
        for an, who in spec["analytics"].items():
            state = ", ".join(who["alerting"]) if who["alerting"] else "not covered"
            strategy_notes.setdefault(spec["technique"], []).append(
                {"name": f"{det} {an} ({', '.join(who['platforms'])})", "value": state}
            )
    for technique in strategy_notes:
        if not any(key[0] == technique for key in entries):
            tactic_ids = attack.table().techniques[technique].tactics
            entries[(technique, TACTIC_SHORTNAMES.get(tactic_ids[0]) if tactic_ids else None)] = {
                "rules": [],
                "alerting": 0,
            }
    techniques = []
    for (technique, tactic), entry in sorted(entries.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        item: dict[str, Any] = {
            "techniqueID": technique,
            "score": entry["alerting"],
            "color": "",
            "comment": "Rules: " + ", ".join(entry["rules"]),
            "enabled": True,
            "metadata": [{"name": "rule", "value": rule} for rule in entry["rules"]]
            + strategy_notes.get(technique, []),
            "links": [],
            "showSubtechniques": True,
        }
        if tactic:
            item["tactic"] = tactic
        techniques.append(item)
    platforms = sorted({p for r in report.rules for p in r.platforms})
    max_score = max((t["score"] for t in techniques), default=1) or 1
    return {
        "name": name,
        "versions": {"attack": attack.table().version.split(".")[0], "navigator": "5.1.0", "layer": "4.5"},
        "domain": "enterprise-attack",
        "description": "Techniques mapped by the repository's rules; score = alerting rules (building blocks listed, "
        "not scored); metadata lists each analytic of the detection strategies the rules name and who covers it.",
        "filters": {"platforms": [NAVIGATOR_PLATFORMS.get(p, p) for p in platforms]},
        "sorting": 0,
        "layout": {
            "layout": "side",
            "aggregateFunction": "average",
            "showID": True,
            "showName": True,
            "showAggregateScores": False,
            "countUnscored": False,
            "expandedSubtechniques": "annotated",
        },
        "hideDisabled": False,
        "techniques": techniques,
        "gradient": {"colors": ["#ffffffff", "#66b1ffff", "#1f5fbfff"], "minValue": 0, "maxValue": max_score},
        "legendItems": [],
        "metadata": [],
        "links": [],
        "showTacticRowBackground": False,
        "tacticRowBackground": "#dddddd",
        "selectTechniquesAcrossTactics": True,
        "selectSubtechniquesWithParent": False,
        "selectVisibleTechniques": False,
    }


__all__ = [
    "ANALYTICS",
    "FILE_TYPES",
    "CoverageReport",
    "RuleCoverage",
    "classify_step",
    "compute",
    "navigator_layer",
    "query_step_kinds",
    "render_text",
]
