"""Extra OpenSearch plugin zips from a local directory (`--plugin-dir`, `DAC_OPENSEARCH_PLUGIN_DIR`).

Some plugins (Alerting) are not on the Maven Central reachable here, so a directory of zips built
elsewhere can be layered onto the assembled install. Every zip is checked before anything is
installed: it must be a readable zip with a `plugin-descriptor.properties` whose
`opensearch.version` is the pinned server version. The zips are installed in dependency order
(`extended.plugins`), after the plugins the base install already has (Job Scheduler).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from deployer.cluster.errors import PluginInstallError
from deployer.cluster.versions import EngineSpec

PLUGIN_DIR_ENV = "DAC_OPENSEARCH_PLUGIN_DIR"
DESCRIPTOR = "plugin-descriptor.properties"
_HINT = (
    "pass the folder that holds the plugin zips built for OpenSearch {version} "
    f"(--plugin-dir or {PLUGIN_DIR_ENV}), e.g. ../shared/opensearch-plugins"
)


@dataclass(frozen=True)
class PluginZip:
    """A plugin zip from the directory, with the fields of its descriptor that matter."""

    path: Path
    name: str
    version: str
    engine_version: str
    extended_plugins: tuple[str, ...]
    sha256: str

    def to_dict(self) -> dict[str, str]:
        """Return the JSON-ready record kept in the install stamp."""
        return {"name": self.name, "version": self.version, "file": self.path.name, "sha256": self.sha256}


def plugin_dir_from_env(environ: dict[str, str] | None = None) -> Path | None:
    """Return `$DAC_OPENSEARCH_PLUGIN_DIR` as a path, or None when unset or empty."""
    value = (os.environ if environ is None else environ).get(PLUGIN_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def parse_descriptor(text: str) -> dict[str, str]:
    """Return the key/value pairs of a Java properties descriptor (comments and blanks skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip()
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_plugin_zip(path: Path, spec: EngineSpec) -> PluginZip:
    """Check one zip (readable, descriptor present, built for the pinned version) and describe it."""
    hint = _HINT.format(version=spec.version)
    try:
        with zipfile.ZipFile(path) as zf:
            broken = zf.testzip()
            if broken is not None:
                raise PluginInstallError(f"{path} is corrupt: entry {broken} fails its CRC check", hint=hint)
            # Current plugin zips are flat; older ones nest everything under `opensearch/`.
            names = [n for n in zf.namelist() if n in (DESCRIPTOR, f"{spec.engine}/{DESCRIPTOR}")]
            if not names:
                raise PluginInstallError(f"{path} holds no {DESCRIPTOR}: not a plugin zip", hint=hint)
            descriptor = parse_descriptor(zf.read(names[0]).decode("utf-8", errors="replace"))
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise PluginInstallError(f"{path} is not a readable zip ({exc})", hint=hint) from exc
    name = descriptor.get("name", "")
    engine_version = descriptor.get(f"{spec.engine}.version", "")
    if not name:
        raise PluginInstallError(f"{path}: {DESCRIPTOR} has no name", hint=hint)
    if engine_version != spec.version:
        raise PluginInstallError(
            f"{path} is {name} {descriptor.get('version', '?')} built for {spec.engine} "
            f"{engine_version or '(no version)'}, but the local {spec.engine} is {spec.version}; "
            "refusing to install it",
            hint=hint,
        )
    extended = tuple(p.strip() for p in descriptor.get("extended.plugins", "").split(",") if p.strip())
    return PluginZip(path, name, descriptor.get("version", ""), engine_version, extended, _sha256(path))


def install_order(zips: Iterable[PluginZip], available: Iterable[str]) -> list[PluginZip]:
    """Return the zips so that each comes after the zips it extends; refuse unknown or cyclic parents."""
    pending = {z.name: z for z in zips}
    present = set(available)
    ordered: list[PluginZip] = []
    while pending:
        ready = sorted(
            (
                z
                for z in pending.values()
                if all(p in present or p not in pending for p in z.extended_plugins)
            ),
            key=lambda z: z.name,
        )
        if not ready:
            raise PluginInstallError(
                f"plugins {', '.join(sorted(pending))} extend each other in a cycle",
                hint="remove one of them from the plugin directory",
            )
        for z in ready:
            missing = [p for p in z.extended_plugins if p not in present]
            if missing:
                raise PluginInstallError(
                    f"{z.path} ({z.name}) extends {', '.join(missing)}, which is neither a module of the "
                    "local install nor another zip in the plugin directory",
                    hint="add the zip of the plugin it extends to the directory",
                )
            ordered.append(z)
            present.add(z.name)
            del pending[z.name]
    return ordered


def read_plugin_dir(directory: Path, spec: EngineSpec) -> list[PluginZip]:
    """Return every plugin zip of `directory`, checked; refuse a missing or zip-less directory."""
    hint = _HINT.format(version=spec.version)
    if not directory.is_dir():
        raise PluginInstallError(f"plugin directory {directory} does not exist", hint=hint)
    paths = sorted(p for p in directory.iterdir() if p.suffix == ".zip" and p.is_file())
    if not paths:
        raise PluginInstallError(f"plugin directory {directory} holds no .zip file", hint=hint)
    zips = [read_plugin_zip(p, spec) for p in paths]
    seen: dict[str, Path] = {}
    for z in zips:
        if z.name in seen:
            raise PluginInstallError(
                f"{seen[z.name]} and {z.path} are both the plugin {z.name}", hint="keep one of them"
            )
        seen[z.name] = z.path
    return zips


def plugin_set_key(zips: Iterable[PluginZip]) -> str:
    """Return a short stable key for a set of zips (names and contents), used in the install's path."""
    text = "\n".join(f"{z.name}={z.sha256}" for z in sorted(zips, key=lambda z: z.name))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
