"""Extra plugin zips from a directory: checks before install, dependency order, CLI refusals."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployer.cli import main
from deployer.cluster import fetch
from deployer.cluster.errors import PluginInstallError
from deployer.cluster.plugin_dir import (
    PLUGIN_DIR_ENV,
    install_order,
    parse_descriptor,
    plugin_dir_from_env,
    plugin_set_key,
    read_plugin_dir,
    read_plugin_zip,
)
from deployer.cluster.versions import OPENSEARCH


def _zip(
    path: Path, name: str, version: str = OPENSEARCH.version, extends: str = "", nested: bool = False
) -> Path:
    descriptor = (
        "# comment\n"
        f"description=test\nversion={version}.0\nname={name}\nclassname=x.Y\njava.version=11\n"
        f"opensearch.version={version}\nextended.plugins={extends}\n"
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(("opensearch/" if nested else "") + "plugin-descriptor.properties", descriptor)
        zf.writestr(f"{name}.jar", b"jar bytes")
    return path


def test_parse_descriptor_skips_comments_and_blanks() -> None:
    assert parse_descriptor("# c\n\n! c\nname = a\nextended.plugins=\n") == {
        "name": "a",
        "extended.plugins": "",
    }


def test_read_plugin_zip_flat_and_nested(tmp_path: Path) -> None:
    flat = read_plugin_zip(
        _zip(tmp_path / "a.zip", "opensearch-alerting", extends="lang-painless"), OPENSEARCH
    )
    assert (flat.name, flat.engine_version, flat.extended_plugins) == (
        "opensearch-alerting",
        OPENSEARCH.version,
        ("lang-painless",),
    )
    assert len(flat.sha256) == 64
    nested = read_plugin_zip(_zip(tmp_path / "b.zip", "other", nested=True), OPENSEARCH)
    assert nested.name == "other"


def test_a_zip_for_another_version_is_refused(tmp_path: Path) -> None:
    path = _zip(tmp_path / "alerting-2.19.1.0.zip", "opensearch-alerting", version="2.19.1")
    with pytest.raises(PluginInstallError) as err:
        read_plugin_zip(path, OPENSEARCH)
    message = str(err.value)
    assert "opensearch-alerting" in message and "2.19.1" in message and OPENSEARCH.version in message
    assert "refusing" in message and str(path) in message


def test_a_corrupt_zip_is_refused(tmp_path: Path) -> None:
    good = _zip(tmp_path / "good.zip", "p")
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(PluginInstallError, match="truncated.zip is not a readable zip"):
        read_plugin_zip(truncated, OPENSEARCH)
    # Right structure, flipped bytes in an entry: the CRC check catches it.
    data = bytearray(good.read_bytes())
    offset = bytes(data).index(b"jar bytes")
    data[offset] ^= 0xFF
    flipped = tmp_path / "flipped.zip"
    flipped.write_bytes(bytes(data))
    with pytest.raises(PluginInstallError, match="corrupt"):
        read_plugin_zip(flipped, OPENSEARCH)
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("README", "no descriptor")
    with pytest.raises(PluginInstallError, match="not a plugin zip"):
        read_plugin_zip(plain, OPENSEARCH)


def test_missing_or_empty_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PluginInstallError, match="does not exist") as err:
        read_plugin_dir(tmp_path / "nope", OPENSEARCH)
    assert PLUGIN_DIR_ENV in (err.value.hint or "")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("x")
    with pytest.raises(PluginInstallError, match="holds no .zip file"):
        read_plugin_dir(tmp_path / "empty", OPENSEARCH)


def test_two_zips_of_one_plugin_are_refused(tmp_path: Path) -> None:
    _zip(tmp_path / "a.zip", "p")
    _zip(tmp_path / "b.zip", "p")
    with pytest.raises(PluginInstallError, match="both the plugin p"):
        read_plugin_dir(tmp_path, OPENSEARCH)


def test_install_order_follows_extended_plugins(tmp_path: Path) -> None:
    sa = read_plugin_zip(
        _zip(
            tmp_path / "a.zip", "security-analytics", extends="opensearch-job-scheduler,opensearch-alerting"
        ),
        OPENSEARCH,
    )
    alerting = read_plugin_zip(
        _zip(tmp_path / "b.zip", "opensearch-alerting", extends="lang-painless"), OPENSEARCH
    )
    ordered = install_order([sa, alerting], ["lang-painless", "opensearch-job-scheduler"])
    assert [z.name for z in ordered] == ["opensearch-alerting", "security-analytics"]
    with pytest.raises(PluginInstallError, match="extends lang-painless"):
        install_order([alerting], ["opensearch-job-scheduler"])


def test_plugin_set_key_depends_on_content(tmp_path: Path) -> None:
    a = read_plugin_zip(_zip(tmp_path / "a.zip", "p"), OPENSEARCH)
    b = read_plugin_zip(_zip(tmp_path / "b.zip", "p", extends="x"), OPENSEARCH)
    assert plugin_set_key([a]) == plugin_set_key([a]) != plugin_set_key([b])


def test_plugin_dir_from_env() -> None:
    assert plugin_dir_from_env({}) is None
    assert plugin_dir_from_env({PLUGIN_DIR_ENV: " "}) is None
    assert plugin_dir_from_env({PLUGIN_DIR_ENV: "/x/y"}) == Path("/x/y")


def test_assemble_refuses_a_bad_directory_before_any_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_base(*_a, **_kw):  # noqa: ANN002, ANN003
        raise AssertionError("the base install must not be assembled for a bad plugin dir")

    monkeypatch.setattr(fetch, "_assemble_base", no_base)
    _zip(tmp_path / "old.zip", "opensearch-alerting", version="2.19.1")
    with pytest.raises(PluginInstallError, match="2.19.1"):
        fetch.assemble(OPENSEARCH, root=tmp_path / "cache", plugin_dir=tmp_path)


@pytest.mark.parametrize("command", [["cluster", "fetch", "--engine", "opensearch"], ["cluster", "up"]])
def test_cli_refuses_a_missing_plugin_dir_with_exit_2(tmp_path: Path, command: list[str]) -> None:
    result = CliRunner().invoke(
        main,
        [*command, "--format", "json"],
        env={PLUGIN_DIR_ENV: str(tmp_path / "missing"), "DAC_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert result.exit_code == 2, result.output
    error = json.loads(result.output)
    assert "does not exist" in error["error"] and str(tmp_path / "missing") in error["error"]
