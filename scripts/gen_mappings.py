#!/usr/bin/env python3
"""Generate `mappings/` (component and index templates per engine) from the ECS reference data.

Source facts: the ECS release's composable component templates (`component/*.json`, one per field
set) and `ecs_flat.yml` (read for its version check), plus the repository's `extra_fields.yaml`
(non-ECS fields the rules may use: Elastic Defend's `*.Ext.*`, Kibana alert fields). Output, per
engine, under `mappings/<engine>/`:

- `component/dac-ecs-<fieldset>.json`: one component template per ECS field set;
- `component/dac-extra-fields.json`: the repository's extra fields;
- `index_template/dac-events.json`: the project's own replay/demo index (`dac-events*`);
- `index_template/dac-ecs-sources.json`: the non-alert index patterns the rules read
  (`logs-endpoint.events.*`, `logs-windows.sysmon_operational-*`, `winlogbeat-*`, `auditbeat-*`),
  at priority 150 so that integration-installed templates (Fleet uses 200) keep precedence in a
  production cluster while test clusters get ECS types instead of dynamic mapping.

Engines and what is substituted (also written to `mappings/substitutions.json`):

- `elasticsearch`: a full Elasticsearch distribution; ECS types as published.
- `elasticsearch-core`: Elasticsearch without the optional mapper modules (the integ-test zip):
  `wildcard`, `constant_keyword` → `keyword`; `match_only_text` → `text`; `scaled_float` → `double`.
- `opensearch`: `wildcard`, `constant_keyword` → `keyword`; `match_only_text` → `text`;
  `flattened` → `flat_object` (OpenSearch 2.7+); `scaled_float` → `double`.

`synthetic_source_keep` (Elasticsearch 8.15+, synthetic `_source` only) is dropped for every engine
so the templates load on older 8.x clusters too. The index templates map `data_stream.*` as plain
`keyword` (ECS: `constant_keyword`) because a replay index holds several datasets at once.

Usage:
    python scripts/gen_mappings.py [--ecs-dir DIR] [--out DIR] [--check]
`--check` writes nothing and exits 1 when the checked-in files differ from what would be generated.
The default ECS directory is `$DAC_ECS_DIR`, else `../shared/ecs` beside the repository.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

from deployer.ecs.registry import load_extra_fields
from deployer.rules.loader import load_rule_files

REPO = Path(__file__).resolve().parents[1]
ENGINES = ("elasticsearch", "elasticsearch-core", "opensearch")
ALERTS_PREFIXES = (".alerts-security", ".internal.alerts-security")
EVENTS_TEMPLATE = "dac-events"
SOURCES_TEMPLATE = "dac-ecs-sources"
EXTRA_COMPONENT = "dac-extra-fields"
COMPONENT_PREFIX = "dac-ecs-"
DEFAULT_SOURCE_PATTERNS = (
    "logs-endpoint.events.*",
    "logs-windows.sysmon_operational-*",
    "winlogbeat-*",
    "auditbeat-*",
)

# type -> replacement mapping (None: keep). Parameters that the replacement does not accept are dropped.
_TEXT_LIKE = {"type": "text", "norms": False, "index_options": "docs"}
SUBSTITUTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "elasticsearch": {},
    "elasticsearch-core": {
        "wildcard": {"type": "keyword"},
        "constant_keyword": {"type": "keyword"},
        "match_only_text": _TEXT_LIKE,
        "scaled_float": {"type": "double"},
    },
    "opensearch": {
        "wildcard": {"type": "keyword"},
        "constant_keyword": {"type": "keyword"},
        "match_only_text": _TEXT_LIKE,
        "flattened": {"type": "flat_object"},
        "scaled_float": {"type": "double"},
    },
}
# Parameters kept when a type is substituted (everything else on the original is dropped).
_KEEP_ON_SUBSTITUTE = {
    "keyword": {"ignore_above", "doc_values", "index"},
    "text": {"index"},
    "double": {"index", "doc_values"},
}
# A keyword standing in for `wildcard` (no length limit) keeps whole command lines searchable up to
# Lucene's term limit (32766 bytes; 8191 four-byte characters).
_WILDCARD_IGNORE_ABOVE = 8191
DROPPED_EVERYWHERE = ("synthetic_source_keep",)

_EXTRA_TYPES = {
    "keyword": {"type": "keyword", "ignore_above": 1024},
    "wildcard": {"type": "wildcard"},
    "date": {"type": "date"},
    "long": {"type": "long"},
    "integer": {"type": "integer"},
    "double": {"type": "double"},
    "float": {"type": "float"},
    "boolean": {"type": "boolean"},
    "ip": {"type": "ip"},
}


def default_ecs_dir() -> Path:
    """Where the ECS reference data is read from by default."""
    env = os.environ.get("DAC_ECS_DIR")
    return Path(env) if env else REPO.parent / "shared" / "ecs"


def _convert_field(
    spec: dict[str, Any], engine: str, path: str, report: dict[str, list[str]]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ftype = spec.get("type")
    sub = SUBSTITUTIONS[engine].get(ftype) if isinstance(ftype, str) else None
    if sub is not None:
        out.update(sub)
        keep = _KEEP_ON_SUBSTITUTE.get(sub["type"], set())
        for key, value in spec.items():
            if key in keep and key not in out:
                out[key] = value
        if ftype == "wildcard" and sub["type"] == "keyword":
            out["ignore_above"] = _WILDCARD_IGNORE_ABOVE
        report.setdefault(f"{ftype} -> {sub['type']}", []).append(path)
    else:
        for key, value in spec.items():
            if key in DROPPED_EVERYWHERE or key in ("properties", "fields"):
                continue
            out[key] = copy.deepcopy(value)
    if "properties" in spec:
        out["properties"] = {
            name: _convert_field(child, engine, f"{path}.{name}", report)
            for name, child in sorted(spec["properties"].items())
        }
    if "fields" in spec:
        out["fields"] = {
            name: _convert_field(child, engine, f"{path}.{name}", report)
            for name, child in sorted(spec["fields"].items())
        }
    return out


def _convert_properties(props: dict[str, Any], engine: str, report: dict[str, list[str]]) -> dict[str, Any]:
    return {name: _convert_field(spec, engine, name, report) for name, spec in sorted(props.items())}


def _extra_properties(extra_path: Path) -> dict[str, Any]:
    """Nested mapping properties for the repository's extra fields (empty when the file is absent)."""
    if not extra_path.is_file():
        return {}
    root: dict[str, Any] = {}
    for name, info in sorted(load_extra_fields(extra_path).items()):
        ftype = info.type
        if ftype not in _EXTRA_TYPES:
            raise ValueError(f"{extra_path}: {name}: unsupported type {ftype!r}")
        node = root
        parts = str(name).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {"properties": {}})
            node = node.setdefault("properties", {})
        node[parts[-1]] = dict(_EXTRA_TYPES[ftype])
    return root


def _source_patterns(detections: Path) -> list[str]:
    """The non-alert index patterns the rules read, plus the defaults for the supported sources."""
    patterns = set(DEFAULT_SOURCE_PATTERNS)
    rules = load_rule_files([detections]).rules if detections.is_dir() else []
    for rule in rules:
        index = rule.data.get("index")
        for pattern in index if isinstance(index, list) else []:
            if (
                isinstance(pattern, str)
                and not pattern.startswith(ALERTS_PREFIXES)
                and not pattern.startswith("-")
            ):
                patterns.add(pattern)
    return sorted(patterns)


def _ecs_version(ecs_dir: Path) -> str:
    template = json.loads((ecs_dir / "template.json").read_text(encoding="utf-8"))
    return str(template.get("_meta", {}).get("ecs_version", "unknown"))


def generate(ecs_dir: Path, repo_root: Path = REPO) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ({relative path: JSON document}, substitution report) for every engine."""
    version = _ecs_version(ecs_dir)
    components = [
        (src.stem, json.loads(src.read_text(encoding="utf-8")))
        for src in sorted((ecs_dir / "component").glob("*.json"))
    ]
    if not components:
        raise FileNotFoundError(f"no ECS component templates under {ecs_dir / 'component'}")
    extra = _extra_properties(repo_root / "extra_fields.yaml")
    patterns = _source_patterns(repo_root / "detections")
    files: dict[str, Any] = {}
    report: dict[str, Any] = {
        "ecs_version": version,
        "dropped_parameters": list(DROPPED_EVERYWHERE),
        "engines": {},
    }
    for engine in ENGINES:
        engine_report: dict[str, list[str]] = {}
        names: list[str] = []
        for fieldset, body in components:
            name = f"{COMPONENT_PREFIX}{fieldset}"
            props = body["template"]["mappings"].get("properties", {})
            files[f"{engine}/component/{name}.json"] = {
                "_meta": {
                    "description": f"ECS {version} field set '{fieldset}' for {engine}; generated by scripts/gen_mappings.py",
                    "ecs_version": version,
                    "managed_by": "dac",
                },
                "template": {"mappings": {"properties": _convert_properties(props, engine, engine_report)}},
            }
            names.append(name)
        if extra:
            files[f"{engine}/component/{EXTRA_COMPONENT}.json"] = {
                "_meta": {
                    "description": f"Non-ECS fields declared in extra_fields.yaml, for {engine}; generated by scripts/gen_mappings.py",
                    "managed_by": "dac",
                },
                "template": {"mappings": {"properties": _convert_properties(extra, engine, engine_report)}},
            }
            names.append(EXTRA_COMPONENT)
        template_body = {
            "settings": {
                "index": {
                    "mapping": {"total_fields": {"limit": 5000}},
                    "number_of_shards": 1,
                    "number_of_replicas": 0,
                }
            },
            "mappings": {
                # Replays write every dataset into one index; a constant_keyword data_stream.* would
                # reject the second dataset, so the index templates map them as plain keywords.
                "properties": {
                    "data_stream": {
                        "properties": {
                            "dataset": {"type": "keyword", "ignore_above": 1024},
                            "namespace": {"type": "keyword", "ignore_above": 1024},
                            "type": {"type": "keyword", "ignore_above": 1024},
                        }
                    }
                },
                "date_detection": False,
                "dynamic_templates": [
                    {
                        "strings_as_keyword": {
                            "match_mapping_type": "string",
                            "mapping": {"type": "keyword", "ignore_above": 1024},
                        }
                    }
                ],
            },
        }
        files[f"{engine}/index_template/{EVENTS_TEMPLATE}.json"] = {
            "_meta": {
                "description": "Replay and demo index for dac: ECS events",
                "ecs_version": version,
                "managed_by": "dac",
            },
            "index_patterns": ["dac-events*"],
            "priority": 200,
            "composed_of": names,
            "template": copy.deepcopy(template_body),
        }
        files[f"{engine}/index_template/{SOURCES_TEMPLATE}.json"] = {
            "_meta": {
                "description": (
                    "ECS types for the index patterns the rules read, for test and demo clusters; priority 150 "
                    "yields to integration-installed templates (Fleet: 200)"
                ),
                "ecs_version": version,
                "managed_by": "dac",
            },
            "index_patterns": patterns,
            "priority": 150,
            "composed_of": names,
            "template": copy.deepcopy(template_body),
        }
        report["engines"][engine] = {k: sorted(v) for k, v in sorted(engine_report.items())}
    files["substitutions.json"] = report
    return files, report


def render(doc: Any) -> str:
    """The checked-in text of one generated document."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def diff(files: dict[str, Any], out: Path) -> list[str]:
    """Relative paths that differ between `files` and the directory (missing, changed or stale)."""
    problems = []
    for rel, doc in sorted(files.items()):
        target = out / rel
        if not target.is_file() or target.read_text(encoding="utf-8") != render(doc):
            problems.append(rel)
    if out.is_dir():
        for existing in sorted(out.rglob("*.json")):
            rel = existing.relative_to(out).as_posix()
            if rel not in files:
                problems.append(rel)
    return problems


def write(files: dict[str, Any], out: Path) -> None:
    """Write every generated document and remove stale JSON files under `out`."""
    for existing in out.rglob("*.json") if out.is_dir() else []:
        if existing.relative_to(out).as_posix() not in files:
            existing.unlink()
    for rel, doc in files.items():
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(doc), encoding="utf-8")


def summary(report: dict[str, Any]) -> str:
    """Human-readable substitution summary."""
    lines = [f"ECS {report['ecs_version']}; dropped everywhere: {', '.join(report['dropped_parameters'])}"]
    for engine, subs in report["engines"].items():
        if not subs:
            lines.append(f"{engine}: no type substitutions")
            continue
        for change, fields in subs.items():
            lines.append(
                f"{engine}: {change}: {len(fields)} field(s) ({', '.join(fields[:4])}{', ...' if len(fields) > 4 else ''})"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ecs-dir",
        type=Path,
        default=default_ecs_dir(),
        help="ECS reference data (component/, template.json)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "mappings", help="output directory")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the output directory is not up to date"
    )
    args = parser.parse_args(argv)
    if not (args.ecs_dir / "component").is_dir():
        print(
            f"error: ECS data not found under {args.ecs_dir} (set --ecs-dir or DAC_ECS_DIR)", file=sys.stderr
        )
        return 2
    files, report = generate(args.ecs_dir, REPO)
    if args.check:
        stale = diff(files, args.out)
        if stale:
            print("mappings/ is out of date; run scripts/gen_mappings.py:", file=sys.stderr)
            for rel in stale:
                print(f"  {rel}", file=sys.stderr)
            return 1
        print("mappings/ is up to date")
        return 0
    write(files, args.out)
    print(summary(report))
    print(f"wrote {len(files)} files under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
