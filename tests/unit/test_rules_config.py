"""dac.yaml loading: defaults, values, and errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.config import DEFAULT_ENTITY_KEYS, ConfigError, load_config, parse_duration_ms

REPO = Path(__file__).resolve().parents[2]


def test_repository_config() -> None:
    config = load_config(REPO / "dac.yaml")
    assert config.validation.max_maxspan_ms == 600_000
    # The repository adds host.id for cross-process deliveries (see dac.yaml).
    assert config.validation.entity_keys == (*DEFAULT_ENTITY_KEYS, "host.id")
    assert config.validation.extra_fields == (REPO / "extra_fields.yaml").resolve()
    assert config.validation.fixture_exempt_maturities == ("experimental",)
    assert isinstance(config.targets, dict)


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAC_CONFIG", raising=False)
    config = load_config()
    assert config.path is None and config.validation.max_maxspan_ms == 600_000


def test_found_in_a_parent_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dac.yaml").write_text("validation:\n  max_maxspan: 2m\ntargets:\n  prod: {url: x}\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    monkeypatch.delenv("DAC_CONFIG", raising=False)
    config = load_config()
    assert config.validation.max_maxspan_ms == 120_000 and config.targets == {"prod": {"url": "x"}}
    assert config.root == tmp_path.resolve()


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("validation:\n  max_maxspan: soon\n", 2, "max_maxspan"),
        ("validation:\n  entity_keys: process.entity_id\n", 2, "entity_keys: must be a list"),
        ("validation:\n  entity_keys: []\n", 2, "at least one field"),
        ("validation:\n  max_maxspan: 1m\n  maxspan: 2m\n", 3, "unknown setting"),
        ("targets: [a]\n", 1, "targets: must be a mapping"),
        ("validation: [\n", 2, "invalid YAML"),
        ("- a\n", 1, "top level must be a mapping"),
    ],
)
def test_bad_config_names_file_and_line(tmp_path: Path, text: str, line: int, needle: str) -> None:
    path = tmp_path / "dac.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:{line}: ") and needle in str(info.value)


def test_missing_explicit_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/dac.yaml")


@pytest.mark.parametrize(
    ("text", "ms"),
    [("500ms", 500), ("30s", 30_000), ("10m", 600_000), ("1h", 3_600_000), ("2d", 172_800_000)],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


def test_bad_duration() -> None:
    with pytest.raises(ValueError):
        parse_duration_ms("10 minutes")
