"""The `targets:` section of dac.yaml, merged with flags and environment variables.

```yaml
targets:
  staging:
    kind: kibana                 # kibana | opensearch
    url: https://kibana.staging.example:5601   # or url_env: KIBANA_STAGING_URL
    space: secops                # Kibana space; omitted = default space
    rules: ["detections/windows/**"]   # globs relative to the repository root; omitted = all
    tags: [production]           # only rules carrying one of these tags; omitted = all
    exclude: [rule-id-or-glob]   # never these rules (by rule_id or path glob), whatever else matches
    auth:
      api_key_env: KIBANA_STAGING_API_KEY     # default KIBANA_API_KEY
      username_env: KIBANA_USERNAME           # basic auth fallback
      password_env: KIBANA_PASSWORD
    ca_cert: certs/staging-ca.pem
    timeout: 30
```

Precedence for each setting: command-line flag, then the named target in dac.yaml, then the
environment (`KIBANA_URL`, `KIBANA_SPACE`, `KIBANA_CA_CERT`, `KIBANA_INSECURE`,
`KIBANA_API_KEY_FILE`, `DAC_TARGET`), then defaults. A named target's URL wins over `KIBANA_URL`
so an ambient variable can never redirect a deploy meant for another cluster.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployer.config import CONFIG_FILE, ConfigError, load_config
from deployer.targets.base import TargetError
from deployer.targets.http import safe_url

KINDS = ("kibana", "opensearch")
_TRUE = {"1", "true", "yes", "on"}


@dataclass
class TargetConfig:
    """Everything needed to reach one target; holds env var names, never secret values."""

    name: str
    kind: str = "kibana"
    url: str = ""
    space: str | None = None
    rules: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    api_key_env: str = "KIBANA_API_KEY"
    api_key_file: str | None = None
    username_env: str = "KIBANA_USERNAME"
    password_env: str = "KIBANA_PASSWORD"
    ca_cert: str | None = None
    insecure: bool = False
    timeout: float = 30.0
    retries: int = 4
    root: Path = field(default_factory=Path.cwd)
    # Keys this module does not interpret, for target kinds that need more (OpenSearch).
    extra: dict[str, Any] = field(default_factory=dict)

    def selects(self, rel_path: str, tags: Iterable[str]) -> bool:
        """Return True when a rule (path relative to the root, its tags) belongs to this target."""
        if self.rules and not any(_glob_match(rel_path, p) for p in self.rules):
            return False
        if self.tags and not set(self.tags) & set(tags):
            return False
        return True

    def excludes(self, rule_id: str, rel_path: str) -> bool:
        """Return True when the target's `exclude` list names the rule (its rule_id or a path glob)."""
        return any(rule_id == p or _glob_match(rel_path, p) for p in self.exclude)


def select_rules(cfg: TargetConfig, rules: Iterable[Any]) -> list[Any]:
    """Return the loaded rule files that belong to the target (its `rules` globs and `tags`, minus `exclude`)."""
    out = []
    for rule in rules:
        try:
            rel = Path(rule.path).resolve().relative_to(cfg.root).as_posix()
        except ValueError:
            rel = Path(rule.path).as_posix()
        tags = rule.kibana.get("tags") or []
        if cfg.selects(rel, tags if isinstance(tags, list) else []) and not cfg.excludes(
            str(rule.rule_id or ""), rel
        ):
            out.append(rule)
    return out


def _glob_match(path: str, pattern: str) -> bool:
    # fnmatch's `*` already crosses `/`, so `dir/**` and `dir/**/*.yaml` both behave as people expect.
    pattern = pattern.rstrip("/")
    return (
        fnmatch.fnmatch(path, pattern)
        or fnmatch.fnmatch(path, pattern + "/*")
        or path.startswith(pattern + "/")
    )


def load_targets(path: Path | None = None) -> tuple[dict[str, dict[str, Any]], Path | None, Path]:
    """Return the raw `targets:` mapping, the config file used (if any) and the repository root."""
    try:
        cfg = load_config(path)
    except ConfigError as e:
        raise TargetError(str(e)) from None
    for name, body in cfg.targets.items():
        if not isinstance(body, dict):
            raise TargetError(f"{cfg.path}: targets.{name} must be a mapping")
    root = cfg.root if cfg.path else Path.cwd()
    return dict(cfg.targets), cfg.path, root.resolve()


def resolve_target(
    name: str | None = None,
    *,
    kind: str | None = None,
    url: str | None = None,
    space: str | None = None,
    api_key_file: str | None = None,
    ca_cert: str | None = None,
    insecure: bool | None = None,
    timeout: float | None = None,
    config_path: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> TargetConfig:
    """Build the TargetConfig for a command from flags, dac.yaml and the environment."""
    env = os.environ if env is None else env
    targets, path, root = load_targets(config_path)
    name = name or (None if url else env.get("DAC_TARGET")) or None
    entry: dict[str, Any] = {}
    if name:
        if name not in targets:
            known = ", ".join(sorted(targets)) or "none defined"
            raise TargetError(
                f"unknown target {name!r} (targets in {path or CONFIG_FILE}: {known})",
                hint="add it under `targets:` in dac.yaml or pass --kibana-url",
            )
        entry = dict(targets[name])
    auth = entry.pop("auth", None) or {}
    if not isinstance(auth, dict):
        raise TargetError(f"targets.{name}.auth must be a mapping")
    known_keys = {
        "kind",
        "url",
        "url_env",
        "space",
        "rules",
        "tags",
        "exclude",
        "ca_cert",
        "insecure",
        "timeout",
        "retries",
    }
    extra = {k: v for k, v in entry.items() if k not in known_keys}

    cfg_kind = kind or entry.get("kind") or "kibana"
    if cfg_kind not in KINDS:
        raise TargetError(f"target {name!r}: unknown kind {cfg_kind!r}; expected one of {', '.join(KINDS)}")
    env_prefix = "KIBANA" if cfg_kind == "kibana" else "OPENSEARCH"
    file_url = entry.get("url")
    if not file_url and entry.get("url_env") and not url:
        file_url = env.get(entry["url_env"])
        if not file_url:
            # Never fall back to KIBANA_URL here: that could point a prod deploy at another cluster.
            raise TargetError(f"target {name!r} takes its URL from ${entry['url_env']}, which is not set")
    cfg_url = url or file_url or env.get(f"{env_prefix}_URL") or ""
    if not cfg_url:
        raise TargetError(
            "no target URL",
            hint=f"pass --target NAME (dac.yaml) or --{cfg_kind}-url URL, or set {env_prefix}_URL",
        )
    # Checked here, before anything can print the URL: it must not carry credentials.
    cfg_url = safe_url(cfg_url)
    cfg_ca = ca_cert or entry.get("ca_cert") or env.get(f"{env_prefix}_CA_CERT")
    if cfg_ca and not Path(cfg_ca).is_absolute() and entry.get("ca_cert") == cfg_ca:
        cfg_ca = str(root / cfg_ca)  # paths in dac.yaml are relative to the repository
    if insecure is None:
        insecure = (
            bool(entry.get("insecure", False)) or env.get(f"{env_prefix}_INSECURE", "").lower() in _TRUE
        )
    return TargetConfig(
        name=name or cfg_url,
        kind=cfg_kind,
        url=cfg_url,
        space=space or entry.get("space") or env.get(f"{env_prefix}_SPACE") or None,
        rules=_str_list(entry.get("rules"), f"targets.{name}.rules"),
        tags=_str_list(entry.get("tags"), f"targets.{name}.tags"),
        exclude=_str_list(entry.get("exclude"), f"targets.{name}.exclude"),
        api_key_env=str(auth.get("api_key_env", f"{env_prefix}_API_KEY")),
        api_key_file=api_key_file or auth.get("api_key_file") or env.get(f"{env_prefix}_API_KEY_FILE"),
        username_env=str(auth.get("username_env", f"{env_prefix}_USERNAME")),
        password_env=str(auth.get("password_env", f"{env_prefix}_PASSWORD")),
        ca_cert=cfg_ca,
        insecure=bool(insecure),
        timeout=float(timeout or entry.get("timeout") or 30.0),
        retries=int(entry.get("retries", 4)),
        root=root,
        extra=extra,
    )


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TargetError(f"{where} must be a list of strings")
