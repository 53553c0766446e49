#!/usr/bin/env python3
"""Generate a field pack shipped in the package from a ``name<TAB>type[<TAB>...]`` field list.

The default builds ``deployer/ecs/packs/elastic-defend.json`` from Elastic Defend's flattened
``fields.yml`` list (../shared/fields/elastic-defend.tsv): every field the integration maps, with
its Elasticsearch type. A line without a name or type, an unknown type, or a field listed twice
with two types is an error naming the line; nothing is written unless the whole pack is built.

Usage: python scripts/gen_field_pack.py [--tsv PATH] [--name elastic-defend] [--description TEXT] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deployer.ecs.registry import KNOWN_TYPES  # noqa: E402 - after the repo is on the path

# ../shared beside the repository, or wherever DAC_SHARED_DIR points (as for the tests).
SHARED = Path(os.environ.get("DAC_SHARED_DIR", REPO.parent / "shared"))
DEFAULT_SOURCE = SHARED / "fields" / "elastic-defend.tsv"
DEFAULT_DESCRIPTION = (
    "Elastic Defend (endpoint integration package): every field its data streams map "
    "(elastic/endpoint-package commit 19941229e4e6ced3d81f8e4c53d0a3ae19c88062)"
)


class PackDataError(Exception):
    """The field list is malformed; the message names the line."""


def parse_tsv(text: str, source: str) -> dict[str, str]:
    """Field name → type from a TSV whose first line is a header."""
    fields: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if number == 1 or not line.strip():
            continue  # header
        cols = line.split("\t")
        name = cols[0].strip()
        ftype = cols[1].strip() if len(cols) > 1 else ""
        if not name or not ftype:
            raise PackDataError(f"{source}:{number}: expected 'name<TAB>type', got {line!r}")
        if ftype not in KNOWN_TYPES:
            raise PackDataError(f"{source}:{number}: {name}: unknown type {ftype!r}")
        if name in fields and fields[name] != ftype:
            raise PackDataError(
                f"{source}:{number}: {name} is {ftype!r} here but {fields[name]!r} on line {first_line[name]}"
            )
        fields.setdefault(name, ftype)
        first_line.setdefault(name, number)
    if not fields:
        raise PackDataError(f"{source}: no fields")
    return dict(sorted(fields.items()))


def render(name: str, description: str, fields: dict[str, str]) -> str:
    """The pack as JSON, one field per line so diffs stay readable."""
    body = ",\n  ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in fields.items())
    return (
        f'{{"pack": {json.dumps(name)},\n"description": {json.dumps(description)},\n'
        f'"fields": {{\n  {body}\n}}}}\n'
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tsv", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--name", default="elastic-defend")
    parser.add_argument("--description", default=DEFAULT_DESCRIPTION)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = args.out or REPO / "deployer" / "ecs" / "packs" / f"{args.name}.json"
    try:
        fields = parse_tsv(args.tsv.read_text(encoding="utf-8"), str(args.tsv))
    except OSError as exc:
        print(f"error: {args.tsv}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except PackDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(render(args.name, args.description, fields))
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"wrote {len(fields)} fields to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
