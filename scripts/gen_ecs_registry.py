#!/usr/bin/env python3
"""Generate deployer/ecs/ecs_fields.json, the compact ECS field registry shipped in the package.

Reads ECS's ``ecs_flat.yml`` (one entry per dotted field name) and keeps only what validation
needs: type, whether the field is an array (``normalize: [array]``), allowed values, and the
value type of ``object`` fields such as ``labels``. Multi-fields (``process.command_line.text``)
become fields of their own. One field per line keeps diffs between ECS versions readable.

Usage: python scripts/gen_ecs_registry.py [--ecs-flat PATH] [--version X.Y.Z] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "ecs" / "ecs_flat.yml"
DEFAULT_OUT = REPO / "deployer" / "ecs" / "ecs_fields.json"


def compact(flat: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Reduce ecs_flat entries to {name: {type, array?, allowed?, object_type?}}."""
    out: dict[str, dict[str, Any]] = {}
    for name, spec in flat.items():
        entry: dict[str, Any] = {"type": spec["type"]}
        if "array" in (spec.get("normalize") or []):
            entry["array"] = True
        allowed = [v["name"] for v in spec.get("allowed_values") or []]
        if allowed:
            entry["allowed"] = allowed
        if spec.get("object_type"):
            entry["object_type"] = spec["object_type"]
        out[name] = entry
        for multi in spec.get("multi_fields") or []:
            sub: dict[str, Any] = {"type": multi["type"]}
            if entry.get("array"):
                sub["array"] = True
            out[multi["flat_name"]] = sub
    return dict(sorted(out.items()))


def render(fields: dict[str, dict[str, Any]], version: str) -> str:
    """Serialise with one field per line; a field with only a type is written as the type string."""
    lines = [
        f"{json.dumps(k)}: {json.dumps(v['type'] if len(v) == 1 else v, separators=(',', ':'))}"
        for k, v in fields.items()
    ]
    body = ",\n  ".join(lines)
    return f'{{"ecs_version": {json.dumps(version)}, "fields": {{\n  {body}\n}}}}\n'


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ecs-flat", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--version", default="9.3.0", help="ECS version of the source file")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if not args.ecs_flat.is_file():
        print(f"error: {args.ecs_flat}: not found (pass --ecs-flat)", file=sys.stderr)
        return 2
    flat = yaml.load(
        args.ecs_flat.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    )
    fields = compact(flat)
    args.out.write_text(render(fields, args.version), encoding="utf-8")
    print(f"wrote {len(fields)} fields to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
