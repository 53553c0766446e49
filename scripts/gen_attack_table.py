#!/usr/bin/env python3
"""Generate deployer/rules/attack_enterprise.json, the ATT&CK Enterprise table shipped in the package.

Reads MITRE's STIX bundle (ATT&CK v18.1, ``enterprise-attack-*.json[.gz]``) and keeps only what
validation and coverage need: tactics in matrix order; techniques and sub-techniques with name,
tactics, platforms, parent, revoked (with the ``revoked-by`` replacement, followed to the end
of the chain) and deprecated status; detection strategies (DET) with the technique each detects
and its analytics; analytics (AN) with their platforms and tunable (mutable) elements.

Malformed data (an object without its ATT&CK ID, an ID used twice, a relationship to an
object that is not in the bundle, a strategy that detects no technique) is an error naming the
object; nothing is written unless the whole table is built.

Usage: python scripts/gen_attack_table.py [--bundle PATH] [--version 18.1] [--out PATH]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the repository, or wherever DAC_SHARED_DIR points (as for the tests).
SHARED = Path(os.environ.get("DAC_SHARED_DIR", REPO.parent / "shared"))
DEFAULT_SOURCE = SHARED / "attack" / "enterprise-attack-18.1-subset.json.gz"
DEFAULT_OUT = REPO / "deployer" / "rules" / "attack_enterprise.json"


class AttackDataError(Exception):
    """The bundle does not hold what the table needs."""


def _external_id(obj: dict[str, Any]) -> str:
    for ref in obj.get("external_references") or []:
        if isinstance(ref, dict) and ref.get("source_name") == "mitre-attack" and ref.get("external_id"):
            return str(ref["external_id"])
    raise AttackDataError(f"{obj.get('type')} {obj.get('id')}: no mitre-attack external_id")


def _index(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """STIX id → object for one type; each must carry a unique ATT&CK ID."""
    out: dict[str, dict[str, Any]] = {}
    seen: dict[str, str] = {}
    for obj in objects:
        if obj.get("type") != kind:
            continue
        if not obj.get("id"):
            raise AttackDataError(f"a {kind} object has no STIX id")
        attack_id = _external_id(obj)
        if attack_id in seen:
            raise AttackDataError(f"{kind} {attack_id} appears twice ({seen[attack_id]}, {obj['id']})")
        seen[attack_id] = obj["id"]
        out[obj["id"]] = obj
    return out


def build(bundle: dict[str, Any], version: str) -> dict[str, Any]:
    """The compact table from a STIX bundle."""
    objects = bundle.get("objects")
    if not isinstance(objects, list):
        raise AttackDataError("not a STIX bundle: no 'objects' list")
    tactics = _index(objects, "x-mitre-tactic")
    patterns = _index(objects, "attack-pattern")
    strategies = _index(objects, "x-mitre-detection-strategy")
    analytics = _index(objects, "x-mitre-analytic")
    matrices = [o for o in objects if o.get("type") == "x-mitre-matrix"]
    if len(matrices) != 1:
        raise AttackDataError(f"expected one x-mitre-matrix, found {len(matrices)}")

    tactic_rows = []
    by_shortname: dict[str, str] = {}
    for ref in matrices[0].get("tactic_refs") or []:
        if ref not in tactics:
            raise AttackDataError(f"matrix names tactic {ref}, which is not in the bundle")
        tactic = tactics[ref]
        shortname = tactic.get("x_mitre_shortname")
        if not shortname or not tactic.get("name"):
            raise AttackDataError(f"tactic {_external_id(tactic)}: no name or x_mitre_shortname")
        by_shortname[shortname] = _external_id(tactic)
        tactic_rows.append([_external_id(tactic), shortname, tactic["name"]])
    if len(tactic_rows) != len(tactics):
        raise AttackDataError("some tactics are not in the matrix's tactic_refs")

    def ref_id(stix_id: str, pool: dict[str, dict[str, Any]], what: str) -> str:
        if stix_id not in pool:
            raise AttackDataError(f"{what} points at {stix_id}, which is not in the bundle")
        return _external_id(pool[stix_id])

    parents: dict[str, str] = {}
    revoked_by: dict[str, str] = {}
    detects: dict[str, str] = {}
    for rel in objects:
        if rel.get("type") != "relationship":
            continue
        kind, src, dst = rel.get("relationship_type"), rel.get("source_ref"), rel.get("target_ref")
        what = f"relationship {rel.get('id')} ({kind})"
        if kind == "subtechnique-of":
            parents[ref_id(src, patterns, what)] = ref_id(dst, patterns, what)
        elif kind == "revoked-by" and src in patterns:
            revoked_by[ref_id(src, patterns, what)] = ref_id(dst, patterns, what)
        elif kind == "detects":
            det = ref_id(src, strategies, what)
            if det in detects:
                raise AttackDataError(f"{det} detects more than one technique")
            detects[det] = ref_id(dst, patterns, what)

    techniques: dict[str, dict[str, Any]] = {}
    for obj in patterns.values():
        tid = _external_id(obj)
        if not obj.get("name"):
            raise AttackDataError(f"technique {tid}: no name")
        entry: dict[str, Any] = {"name": obj["name"]}
        phases = [
            p.get("phase_name")
            for p in obj.get("kill_chain_phases") or []
            if p.get("kill_chain_name") == "mitre-attack"
        ]
        unknown = [p for p in phases if p not in by_shortname]
        if unknown:
            raise AttackDataError(f"technique {tid}: unknown tactic {unknown[0]!r}")
        order = [row[0] for row in tactic_rows]
        entry["tactics"] = sorted({by_shortname[p] for p in phases}, key=order.index)
        entry["platforms"] = sorted(obj.get("x_mitre_platforms") or [])
        if tid in parents:
            entry["parent"] = parents[tid]
        elif "." in tid and not (obj.get("revoked") or obj.get("x_mitre_deprecated")):
            raise AttackDataError(f"sub-technique {tid}: no subtechnique-of relationship")
        if obj.get("revoked"):
            if tid not in revoked_by:
                raise AttackDataError(f"technique {tid} is revoked but has no revoked-by relationship")
            entry["revoked_by"] = revoked_by[tid]
        if obj.get("x_mitre_deprecated"):
            entry["deprecated"] = True
        techniques[tid] = entry
    # Follow replacement chains to the technique that is current today.
    for tid, entry in techniques.items():
        seen = {tid}
        while "revoked_by" in entry and "revoked_by" in techniques[entry["revoked_by"]]:
            nxt = techniques[entry["revoked_by"]]["revoked_by"]
            if nxt in seen:
                raise AttackDataError(f"revoked-by cycle through {tid}")
            seen.add(nxt)
            entry["revoked_by"] = nxt

    analytic_owner: dict[str, str] = {}
    det_rows: dict[str, dict[str, Any]] = {}
    for obj in strategies.values():
        det = _external_id(obj)
        if det not in detects:
            raise AttackDataError(f"detection strategy {det}: detects no technique")
        ans = [
            ref_id(ref, analytics, f"{det} analytic_refs") for ref in obj.get("x_mitre_analytic_refs") or []
        ]
        for an in ans:
            if an in analytic_owner:
                raise AttackDataError(f"analytic {an} belongs to both {analytic_owner[an]} and {det}")
            analytic_owner[an] = det
        row: dict[str, Any] = {
            "name": obj.get("name", ""),
            "technique": detects[det],
            "analytics": sorted(ans),
        }
        if obj.get("x_mitre_deprecated") or obj.get("revoked"):
            row["deprecated"] = True
        det_rows[det] = row

    an_rows: dict[str, dict[str, Any]] = {}
    for obj in analytics.values():
        an = _external_id(obj)
        if an not in analytic_owner:
            raise AttackDataError(f"analytic {an}: no detection strategy lists it")
        row = {"strategy": analytic_owner[an], "platforms": sorted(obj.get("x_mitre_platforms") or [])}
        mutable = [m.get("field") for m in obj.get("x_mitre_mutable_elements") or [] if m.get("field")]
        if mutable:
            row["mutable"] = mutable
        if obj.get("x_mitre_deprecated") or obj.get("revoked"):
            row["deprecated"] = True
        an_rows[an] = row

    return {
        "attack_version": version,
        "tactics": tactic_rows,
        "techniques": dict(sorted(techniques.items())),
        "strategies": dict(sorted(det_rows.items())),
        "analytics": dict(sorted(an_rows.items())),
    }


def render(table: dict[str, Any]) -> str:
    """Serialise with one entry per line, so diffs between ATT&CK versions stay readable."""
    parts = [f'"attack_version": {json.dumps(table["attack_version"])}']
    parts.append('"tactics": [\n  ' + ",\n  ".join(json.dumps(t) for t in table["tactics"]) + "\n]")
    for key in ("techniques", "strategies", "analytics"):
        rows = ",\n  ".join(
            f"{json.dumps(k)}: {json.dumps(v, separators=(',', ':'), ensure_ascii=False)}"
            for k, v in table[key].items()
        )
        parts.append(f'"{key}": {{\n  {rows}\n}}')
    return "{" + ",\n".join(parts) + "}\n"


def read_bundle(path: Path) -> dict[str, Any]:
    """The bundle at ``path`` (gzip or plain JSON)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return json.loads(raw)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a failure leaves the old file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--version", default="18.1", help="ATT&CK version of the bundle")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        table = build(read_bundle(args.bundle), args.version)
    except FileNotFoundError:
        print(f"error: {args.bundle}: not found (pass --bundle)", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"error: {args.bundle}: cannot read the bundle: {exc}", file=sys.stderr)
        return 2
    except AttackDataError as exc:
        print(f"error: {args.bundle}: {exc}", file=sys.stderr)
        return 2
    write_atomically(args.out, render(table))
    print(
        f"wrote ATT&CK {args.version}: {len(table['tactics'])} tactics, {len(table['techniques'])} techniques, "
        f"{len(table['strategies'])} detection strategies, {len(table['analytics'])} analytics to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
