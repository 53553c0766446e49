"""Field packs from a live cluster: ``_field_caps`` of an index pattern → a pack file.

Works the same on Elasticsearch and OpenSearch. Metadata fields (``_id``, ``_index``, ...) are
left out; a field mapped with different types in different indices keeps the first type in
sorted order and a comment naming them all, since Elasticsearch would refuse an EQL comparison
on it anyway.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from deployer.ecs.registry import KNOWN_TYPES
from deployer.targets.base import TargetError
from deployer.targets.http import HttpClient, HttpError

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass
class PulledPack:
    """The fields one index pattern maps on a cluster."""

    url: str
    index: str
    indices: list[str]
    fields: dict[str, str]
    conflicts: dict[str, list[str]] = field(default_factory=dict)


def pull(client: HttpClient, index: str) -> PulledPack:
    """``_field_caps`` of ``index`` (a pattern or comma-separated patterns) as a pack.

    Raises TargetError when the cluster cannot be reached or the pattern matches no index.
    """
    if not index.strip() or any(c in index for c in " /?#"):
        raise TargetError(f"invalid index pattern {index!r}", hint="e.g. --index 'winlogbeat-*'")
    try:
        resp = client.request(
            "GET",
            f"/{index}/_field_caps",
            params={"fields": "*", "allow_no_indices": "false", "ignore_unavailable": "false"},
            ok=(200, 404),
        )
    except HttpError as exc:
        raise TargetError(f"{client.base_url}: _field_caps on {index!r} failed: {exc}") from None
    body = resp.json() if resp.content else {}
    indices = body.get("indices") or []
    if resp.status_code == 404 or not indices:
        raise TargetError(
            f"index pattern {index!r} matches no index on {client.base_url}",
            hint="check the pattern (GET _cat/indices) or pull once data has been indexed",
        )
    fields: dict[str, str] = {}
    conflicts: dict[str, list[str]] = {}
    for name, by_type in sorted((body.get("fields") or {}).items()):
        if name.startswith("_") or not isinstance(by_type, dict):
            continue
        types = sorted(
            t for t, caps in by_type.items() if not (isinstance(caps, dict) and caps.get("metadata_field"))
        )
        types = [t for t in types if t != "unmapped"]
        if not types:
            continue
        known = [t for t in types if t in KNOWN_TYPES] or ["keyword"]
        fields[name] = known[0]
        if len(types) > 1:
            conflicts[name] = types
    return PulledPack(client.base_url, index, sorted(indices), fields, conflicts)


def render(pack: PulledPack) -> str:
    """The pack as YAML in the extra-fields format, with where it came from."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        "# Field pack written by `dac fields pull` (map it to index patterns in dac.yaml validation.field_packs).",
        f"# Source: {pack.url} _field_caps of {pack.index!r} ({len(pack.indices)} indices), {stamp}.",
        f"# {len(pack.fields)} fields. Rerun the command to refresh it; edit only to add a reason.",
    ]
    for name, ftype in pack.fields.items():
        key = name if _PLAIN_KEY.match(name) else '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if name in pack.conflicts:
            lines.append(f"# {name}: mapped as {', '.join(pack.conflicts[name])} in different indices")
        lines.append(f"{key}: {ftype}")
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, so a failure leaves nothing half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def describe(pack: PulledPack) -> str:
    """One line for people."""
    return f"wrote {len(pack.fields)} fields from {len(pack.indices)} indices matching {pack.index!r}"
