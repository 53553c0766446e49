"""Rule file <-> Kibana rule body: ownership marker, normal form for plans, and export back to YAML.

Ownership: a managed rule carries the tag `managed-by:dac` (filterable in `_find`, and kept when
someone saves the rule in the UI) and `meta.managed_by: dac` with the project metadata analysts
find useful (`source_path`, `implements`, `platforms`, `maturity`, `owner`, `depends_on`). Each
`metadata.implements` id is also added as an `implements:<ID>` tag so analysts can filter on it.
Either marker makes a rule owned, because the UI rewrites `meta` on save.

Normal form (used for both sides of a plan): server-managed fields dropped, Kibana's defaults
filled in, server-computed sub-fields (`required_fields[].ecs`, `actions[].uuid`) dropped, empty
`technique`/`subtechnique` lists dropped. Export applies the same normal form, then removes
defaults and the generated tags/meta so the written file is what a person would have written.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from deployer.rules.kibana_fields import SERVER_FIELDS
from deployer.rules.platforms import infer_platforms

MANAGED_BY = "dac"
OWNER_TAG = "managed-by:dac"
IMPLEMENTS_TAG_PREFIX = "implements:"

# Values Kibana fills in when a create body omits the field (spec descriptions and the
# response schema's required fields). Compared as if they had been written out.
DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "interval": "5m",
    "from": "now-6m",
    "to": "now",
    "max_signals": 100,
    "version": 1,
    "tags": [],
    "author": [],
    "false_positives": [],
    "references": [],
    "threat": [],
    "actions": [],
    "exceptions_list": [],
    "risk_score_mapping": [],
    "severity_mapping": [],
    "related_integrations": [],
    "required_fields": [],
    "setup": "",
}

# Empty values that are not the same as absent ones, left for the schema to judge.
_KEEP_EMPTY = frozenset({"rule_id", "name", "description", "query", "index", "type", "language"})

# Project metadata keys copied into `meta` (tests stay in the repository: they name local files).
META_KEYS = ("implements", "platforms", "maturity", "owner", "depends_on")

# Rule-file key order for export: identity, detection logic, triage, schedule, the rest.
_KEY_ORDER = [
    "rule_id",
    "name",
    "description",
    "type",
    "language",
    "query",
    "index",
    "data_view_id",
    "filters",
    "event_category_override",
    "timestamp_field",
    "tiebreaker_field",
    "severity",
    "risk_score",
    "tags",
    "threat",
    "references",
    "false_positives",
    "note",
    "setup",
    "author",
    "license",
    "enabled",
    "version",
    "interval",
    "from",
    "to",
    "max_signals",
    "building_block_type",
    "required_fields",
    "investigation_fields",
    "alert_suppression",
    "timestamp_override",
]
# Kept in exported files even at their default value because reviewers look for them.
_ALWAYS_EXPORT = ("enabled", "version")


def owned(body: Mapping[str, Any]) -> bool:
    """Return True when the body carries the dac ownership marker (tag or meta)."""
    tags = body.get("tags") or []
    meta = body.get("meta") or {}
    return OWNER_TAG in tags or (isinstance(meta, Mapping) and meta.get("managed_by") == MANAGED_BY)


def normalise(body: Mapping[str, Any]) -> dict[str, Any]:
    """Return the comparable normal form of a Kibana rule body (request or response)."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in SERVER_FIELDS or value is None:
            continue
        out[key] = copy.deepcopy(value)
    for key, value in DEFAULTS.items():
        out.setdefault(key, copy.deepcopy(value))
    # An optional field Kibana echoes back empty ("" / [] / {}) means the same as leaving it out;
    # treating both alike keeps a rule written either way from showing a perpetual diff.
    for key in [
        k for k, v in out.items() if v in ("", [], {}) and k not in DEFAULTS and k not in _KEEP_EMPTY
    ]:
        del out[key]
    if out.get("throttle") in ("no_actions", None):
        out.pop("throttle", None)
    out["required_fields"] = [
        {k: v for k, v in f.items() if k != "ecs"} if isinstance(f, Mapping) else f
        for f in out["required_fields"]
    ]
    out["actions"] = [
        {k: v for k, v in a.items() if k != "uuid"} if isinstance(a, Mapping) else a for a in out["actions"]
    ]
    out["threat"] = [_normalise_threat(t) for t in out["threat"]]
    # A reference's `id` is the stored list's id, which Kibana's import sets from the list_id (it
    # looks every reference up by list_id, type and namespace): both sides stand it for the list_id.
    out["exceptions_list"] = [
        {**r, "id": r["list_id"]} if isinstance(r, Mapping) and r.get("list_id") else r
        for r in out["exceptions_list"]
    ]
    return out


def _normalise_threat(entry: Any) -> Any:
    if not isinstance(entry, Mapping):
        return entry
    t = dict(entry)
    if not t.get("technique"):
        t.pop("technique", None)
        return t
    techniques = []
    for tech in t["technique"]:
        tech = dict(tech) if isinstance(tech, Mapping) else tech
        if isinstance(tech, dict) and not tech.get("subtechnique"):
            tech.pop("subtechnique", None)
        techniques.append(tech)
    t["technique"] = techniques
    return t


def rel_source_path(path: str | Path, root: Path) -> str:
    """Return the rule file path relative to the repository root, POSIX style."""
    p = Path(path).resolve()
    try:
        return p.relative_to(root.resolve()).as_posix()
    except ValueError:
        return p.as_posix()


def to_body(
    kibana: Mapping[str, Any], metadata: Mapping[str, Any] | None, rule_id: str, source_path: str
) -> dict[str, Any]:
    """Return the normalised Kibana body for a rule file's Kibana fields plus the ownership marker."""
    body = copy.deepcopy(dict(kibana))
    body["rule_id"] = rule_id
    metadata = metadata or {}
    implements = [str(x) for x in (metadata.get("implements") or [])]
    tags = [t for t in body.get("tags") or [] if t != OWNER_TAG]
    for tag in [OWNER_TAG, *(IMPLEMENTS_TAG_PREFIX + i for i in implements)]:
        if tag not in tags:
            tags.append(tag)
    body["tags"] = tags
    meta = dict(body.get("meta") or {})
    meta["managed_by"] = MANAGED_BY
    meta["source_path"] = source_path
    for key in META_KEYS:
        if metadata.get(key) not in (None, [], ""):
            meta[key] = copy.deepcopy(metadata[key])
    body["meta"] = meta
    return normalise(body)


def rule_to_body(rule: Any, root: Path) -> dict[str, Any]:
    """Return the normalised Kibana body for a loaded `RuleFile`."""
    return to_body(rule.kibana, rule.metadata, rule.rule_id, rel_source_path(rule.path, root))


def to_rule_document(body: Mapping[str, Any]) -> dict[str, Any]:
    """Return the rule-file mapping (Kibana fields + `metadata`) for a Kibana rule body."""
    norm = normalise(body)
    meta = dict(norm.pop("meta", {}) or {})
    implements = list(meta.get("implements") or [])
    tags = []
    for tag in norm.get("tags", []):
        if tag == OWNER_TAG:
            continue
        if tag.startswith(IMPLEMENTS_TAG_PREFIX):
            # The tag form is generated from metadata.implements; recover it if meta was lost.
            ident = tag[len(IMPLEMENTS_TAG_PREFIX) :]
            if ident not in implements:
                implements.append(ident)
            continue
        tags.append(tag)
    norm["tags"] = tags
    # A reference's `id` is the stored list's; the repository names lists by list_id only.
    norm["exceptions_list"] = [
        {k: v for k, v in r.items() if k != "id"} if isinstance(r, Mapping) and r.get("list_id") else r
        for r in norm.get("exceptions_list") or []
    ]
    metadata: dict[str, Any] = {}
    if not implements and meta.get("managed_by") != MANAGED_BY:
        # A rule written elsewhere: its ATT&CK mapping is the best first guess; a person reviews it.
        implements = _threat_ids(norm.get("threat", []))
    if implements:
        metadata["implements"] = implements
    for key in META_KEYS[1:]:
        if meta.get(key) not in (None, [], ""):
            metadata[key] = meta[key]
    if "platforms" not in metadata:
        # Kibana does not store it for rules dac did not deploy: read it from the query, the
        # OS tags or the index patterns (deployer.rules.platforms).
        platforms = infer_platforms(norm.get("query"), norm.get("tags"), norm.get("index"))
        if platforms:
            metadata["platforms"] = platforms
    if meta.get("managed_by") != MANAGED_BY:
        metadata.setdefault("maturity", "experimental")
    # Whatever else someone stored in meta is not ours to drop.
    user_meta = {k: v for k, v in meta.items() if k not in {"managed_by", "source_path", *META_KEYS}}
    if user_meta:
        norm["meta"] = user_meta
    for key, default in DEFAULTS.items():
        if key in _ALWAYS_EXPORT:
            continue
        if norm.get(key) == default:
            norm.pop(key, None)
    ordered = {k: norm[k] for k in _KEY_ORDER if k in norm}
    ordered.update({k: v for k, v in sorted(norm.items()) if k not in ordered})
    if metadata:
        ordered["metadata"] = metadata
    return ordered


def _threat_ids(threat: Iterable[Any]) -> list[str]:
    ids: list[str] = []
    for t in threat:
        if not isinstance(t, Mapping):
            continue
        for tech in t.get("technique") or []:
            subs = [s.get("id") for s in tech.get("subtechnique") or [] if isinstance(s, Mapping)]
            for ident in subs or [tech.get("id")]:
                if isinstance(ident, str) and ident not in ids:
                    ids.append(ident)
    return ids


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    # Multi-line strings (queries, notes) as block scalars so files diff and read well; PyYAML
    # falls back to a quoted style by itself when a block scalar cannot hold the text exactly.
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_presenter)


def dump_rule_yaml(doc: Mapping[str, Any], schema_ref: str | None = None) -> str:
    """Return the YAML text of a rule file, with the editor schema comment when given."""
    text = yaml.dump(
        dict(doc),
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )
    if schema_ref:
        text = f"# yaml-language-server: $schema={schema_ref}\n" + text
    return text


def parse_ndjson(text: str) -> list[dict[str, Any]]:
    """Return the rule objects of a Kibana export (skips exception lists, connectors, the summary)."""
    return [obj for obj in parse_ndjson_objects(text) if is_rule_object(obj)]


def parse_ndjson_objects(text: str) -> list[Any]:
    """Return every line of a Kibana export as JSON (rules, exception lists and items, the summary)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"line {n}: not JSON ({e.msg})") from None
    return out


def is_rule_object(obj: Any) -> bool:
    """Return True for a rule line of an export (not an exception list, connector or summary)."""
    return (
        isinstance(obj, dict)
        and "rule_id" in obj
        and "severity" in obj
        and "risk_score" in obj
        and "exported_count" not in obj
    )


_SLUG = re.compile(r"[^a-z0-9]+")


def rule_filename(doc: Mapping[str, Any], taken: Iterable[str] = ()) -> str:
    """Return a file name for an exported rule: its name slugified, made unique with the rule_id."""
    taken = set(taken)
    slug = _SLUG.sub("_", str(doc.get("name", "")).lower()).strip("_")[:80] or "rule"
    name = f"{slug}.yaml"
    if name in taken:
        rid = _SLUG.sub("_", str(doc.get("rule_id", "")).lower()).strip("_")[:40]
        name = f"{slug}_{rid}.yaml"
    n = 2
    base = name[:-5]
    while name in taken:
        name = f"{base}_{n}.yaml"
        n += 1
    return name


def write_rule_files(
    docs: Iterable[Mapping[str, Any]], out_dir: Path, *, schema: Path | None = None
) -> list[Path]:
    """Write each rule document as `<out_dir>/<slug>.yaml` (never overwriting one written in this run)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = None
    if schema is not None and schema.is_file():
        ref = Path(os.path.relpath(schema.resolve(), out_dir.resolve())).as_posix()
    written: list[Path] = []
    taken: set[str] = set()
    for doc in docs:
        name = rule_filename(doc, taken)
        taken.add(name)
        path = out_dir / name
        path.write_text(dump_rule_yaml(doc, ref), encoding="utf-8")
        written.append(path)
    return written
