"""Pure parts of the cluster fetch/assembly: Maven commands, generated poms and descriptors, checksums."""

from __future__ import annotations

import hashlib
import json
import stat
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from deployer.cluster import fetch
from deployer.cluster.errors import FetchError
from deployer.cluster.versions import (
    ELASTICSEARCH,
    ENGINES,
    MAVEN_DEPENDENCY_PLUGIN,
    OPENSEARCH,
    Artifact,
    get_engine,
)

NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def test_artifact_coordinate_filename_and_repository_path() -> None:
    art = Artifact("org.opensearch.plugin", "lang-painless", "2.19.4")
    assert art.coordinate == "org.opensearch.plugin:lang-painless:2.19.4:jar"
    assert art.filename == "lang-painless-2.19.4.jar"
    assert art.repository_path == "org/opensearch/plugin/lang-painless/2.19.4/lang-painless-2.19.4.jar"


def test_versions_are_consistent() -> None:
    assert OPENSEARCH.distribution.version == OPENSEARCH.version
    assert all(m.jar.version == OPENSEARCH.version for m in OPENSEARCH.modules)
    # Plugins must match the core version exactly: core x.y.z takes plugins x.y.z.0.
    assert all(p.zip.version == f"{OPENSEARCH.version}.0" for p in OPENSEARCH.plugins)
    assert [p.name for p in OPENSEARCH.plugins][0] == "opensearch-job-scheduler"
    assert ELASTICSEARCH.version.startswith("8.")
    assert set(ENGINES) == {"opensearch", "elasticsearch"}
    with pytest.raises(ValueError, match="unknown engine"):
        get_engine("solr")


def test_plugin_install_order_puts_extended_plugins_first() -> None:
    names = [p.name for p in OPENSEARCH.plugins]
    # Security Analytics extends job-scheduler and alerting; notifications needs its core.
    assert names.index("opensearch-security-analytics") > names.index("opensearch-alerting")
    assert names.index("opensearch-security-analytics") > names.index("opensearch-job-scheduler")
    assert names.index("opensearch-notifications") > names.index("opensearch-notifications-core")


def test_copy_command() -> None:
    art = OPENSEARCH.distribution
    cmd = fetch.copy_command(art, Path("/c/downloads"), Path("/r"))
    assert cmd[:4] == ["mvn", "-B", "-q", "--strict-checksums"]
    assert "-Dmaven.repo.local=/r" in cmd
    assert f"{MAVEN_DEPENDENCY_PLUGIN}:copy" in cmd
    assert f"-Dartifact={art.coordinate}" in cmd
    assert "-DoutputDirectory=/c/downloads" in cmd
    assert "-Dmaven.repo.local" not in " ".join(fetch.copy_command(art, Path("/x")))


def test_copy_dependencies_command_fails_at_end() -> None:
    cmd = fetch.copy_dependencies_command(Path("/b"))
    assert "--fail-at-end" in cmd
    assert cmd[cmd.index("-f") + 1] == "/b/pom.xml"
    assert cmd[-1] == f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies"


def test_project_pom_is_valid_xml_with_the_dependency_and_plugin_config() -> None:
    art = OPENSEARCH.modules[0].jar
    root = ET.fromstring(fetch.project_pom("module-lang-painless", art, transitive=True))
    dep = root.find("m:dependencies/m:dependency", NS)
    assert dep is not None
    assert dep.findtext("m:groupId", namespaces=NS) == art.group
    assert dep.findtext("m:artifactId", namespaces=NS) == art.artifact
    assert dep.findtext("m:version", namespaces=NS) == art.version
    assert dep.findtext("m:type", namespaces=NS) == "jar"
    conf = root.find("m:build/m:plugins/m:plugin/m:configuration", NS)
    assert conf is not None
    assert conf.findtext("m:useRepositoryLayout", namespaces=NS) == "true"
    assert conf.findtext("m:excludeTransitive", namespaces=NS) == "false"
    assert conf.findtext("m:includeScope", namespaces=NS) == "runtime"
    plugin_zip = OPENSEARCH.plugins[0].zip
    root = ET.fromstring(fetch.project_pom("plugin-x", plugin_zip, transitive=False))
    assert (
        root.findtext("m:build/m:plugins/m:plugin/m:configuration/m:excludeTransitive", namespaces=NS)
        == "true"
    )
    assert root.findtext("m:dependencies/m:dependency/m:type", namespaces=NS) == "zip"


def test_reactor_pom_lists_modules() -> None:
    root = ET.fromstring(fetch.reactor_pom(["module-a", "plugin-b"]))
    assert [m.text for m in root.findall("m:modules/m:module", NS)] == ["module-a", "plugin-b"]
    assert root.findtext("m:packaging", namespaces=NS) == "pom"


@pytest.mark.parametrize(
    ("filename", "name"),
    [
        ("lucene-core-9.12.1.jar", "lucene-core"),
        ("opensearch-2.19.4.jar", "opensearch"),
        ("zstd-jni-1.5.5-5.jar", "zstd-jni"),
        ("netty-buffer-4.1.118.Final.jar", "netty-buffer"),
        ("asm-9.7.jar", "asm"),
        ("HdrHistogram-2.2.2.jar", "HdrHistogram"),
        ("opensearch-scripting-painless-spi-2.19.4.jar", "opensearch-scripting-painless-spi"),
        ("noversion.jar", "noversion"),
    ],
)
def test_jar_artifact_name(filename: str, name: str) -> None:
    assert fetch.jar_artifact_name(filename) == name


def test_module_jars_drop_what_the_server_lib_has() -> None:
    jars = [
        Path(n)
        for n in (
            "lang-painless-2.19.4.jar",
            "antlr4-runtime-4.13.1.jar",
            "opensearch-2.19.4.jar",
            "lucene-core-9.12.0.jar",
            "asm-9.7.jar",
        )
    ]
    kept = fetch.module_jars(jars, {"opensearch", "lucene-core", "jackson-core"})
    assert [p.name for p in kept] == ["antlr4-runtime-4.13.1.jar", "asm-9.7.jar", "lang-painless-2.19.4.jar"]


def test_descriptor_text() -> None:
    module = next(m for m in OPENSEARCH.modules if m.name == "analysis-common")
    props = dict(
        line.split("=", 1)
        for line in fetch.descriptor_text(OPENSEARCH, module).splitlines()
        if line and not line.startswith("#")
    )
    assert props["name"] == "analysis-common"
    assert props["classname"] == "org.opensearch.analysis.common.CommonAnalysisPlugin"
    assert props["version"] == OPENSEARCH.version
    assert props["opensearch.version"] == OPENSEARCH.version
    assert props["extended.plugins"] == "lang-painless"
    assert props["java.version"] == "11"
    assert props["has.native.controller"] == "false"


def test_policy_text() -> None:
    module = next(m for m in OPENSEARCH.modules if m.name == "lang-painless")
    text = fetch.policy_text(module.permissions)
    assert text.startswith("grant {\n") and text.endswith("};\n")
    assert 'permission java.lang.RuntimePermission "createClassLoader";' in text


def _write_with_sha1(tmp_path: Path, content: bytes, sha1_text: str | None = None) -> tuple[Path, Path]:
    path = tmp_path / "a-1.zip"
    path.write_bytes(content)
    sums = tmp_path / "a-1.zip.sha1"
    sums.write_text(sha1_text if sha1_text is not None else hashlib.sha1(content).hexdigest())
    return path, sums


def test_verify_checksum_ok(tmp_path: Path) -> None:
    path, sums = _write_with_sha1(tmp_path, b"payload")
    assert fetch.verify_checksum(path, sums) == hashlib.sha1(b"payload").hexdigest()


def test_verify_checksum_accepts_a_trailing_file_name(tmp_path: Path) -> None:
    digest = hashlib.sha1(b"payload").hexdigest().upper()
    path, sums = _write_with_sha1(tmp_path, b"payload", f"{digest}  a-1.zip\n")
    assert fetch.verify_checksum(path, sums) == digest.lower()


def test_verify_checksum_mismatch(tmp_path: Path) -> None:
    path, sums = _write_with_sha1(tmp_path, b"payload", "0" * 40)
    with pytest.raises(FetchError, match="checksum mismatch") as err:
        fetch.verify_checksum(path, sums)
    assert "dac cluster fetch" in (err.value.hint or "")


def test_verify_checksum_missing_or_malformed(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(b"x")
    with pytest.raises(FetchError, match="no checksum"):
        fetch.verify_checksum(path, tmp_path / "a.zip.sha1")
    (tmp_path / "a.zip.sha1").write_text("<html>not found</html>")
    with pytest.raises(FetchError, match="does not hold a SHA-1"):
        fetch.verify_checksum(path, tmp_path / "a.zip.sha1")


def test_extract_zip_keeps_executable_bits_and_refuses_escapes(tmp_path: Path) -> None:
    archive = tmp_path / "d.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("home/bin/server")
        info.external_attr = (stat.S_IFREG | 0o755) << 16
        zf.writestr(info, "#!/bin/sh\n")
        zf.writestr("home/config/x.yml", "a: 1\n")
    dest = tmp_path / "out"
    dest.mkdir()
    fetch.extract_zip(archive, dest)
    assert (dest / "home/bin/server").stat().st_mode & 0o111
    assert (dest / "home/config/x.yml").read_text() == "a: 1\n"

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside.txt", "x")
    with pytest.raises(FetchError, match="outside the archive"):
        fetch.extract_zip(evil, dest)


def test_cache_dir_and_maven_repository_from_environment(tmp_path: Path) -> None:
    assert fetch.cache_dir({"DAC_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert fetch.cache_dir({}).parts[-2:] == (".cache", "dac")
    assert fetch.maven_repository({"DAC_MAVEN_REPO": str(tmp_path)}) == tmp_path
    assert fetch.maven_repository({}).parts[-2:] == (".m2", "repository")


def _stamp(home: Path, **overrides: object) -> None:
    manifest = {
        "format": fetch.ASSEMBLY_FORMAT,
        "version": OPENSEARCH.version,
        "wanted_modules": [m.name for m in OPENSEARCH.modules],
        "wanted_plugins": [p.name for p in OPENSEARCH.plugins],
        "plugins": ["opensearch-job-scheduler"],
        "missing_plugins": ["opensearch-alerting"],
    }
    manifest.update(overrides)
    home.mkdir(parents=True, exist_ok=True)
    (home / fetch.STAMP).write_text(json.dumps(manifest))


def test_load_install_trusts_only_a_matching_stamp(tmp_path: Path) -> None:
    home = tmp_path / "dist" / OPENSEARCH.cache_key
    assert fetch.load_install(OPENSEARCH, tmp_path) is None
    _stamp(home)
    install = fetch.load_install(OPENSEARCH, tmp_path)
    assert install is not None and install.home == home
    assert install.plugins == ["opensearch-job-scheduler"]
    assert install.missing_plugins == ["opensearch-alerting"]
    for change in ({"version": "0.0.1"}, {"format": -1}, {"wanted_plugins": []}, {"wanted_modules": ["x"]}):
        _stamp(home, **change)
        assert fetch.load_install(OPENSEARCH, tmp_path) is None, change
    (home / fetch.STAMP).write_text("{not json")
    assert fetch.load_install(OPENSEARCH, tmp_path) is None


def test_fetch_artifact_reports_maven_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    def fake_run(cmd, **_kw):  # noqa: ANN001, ANN003
        return subprocess.CompletedProcess(
            cmd, 1, stdout="[ERROR] Could not find artifact x in central\n", stderr=""
        )

    monkeypatch.setattr(fetch.subprocess, "run", fake_run)
    with pytest.raises(FetchError, match="Could not find artifact") as err:
        fetch.fetch_artifact(OPENSEARCH.distribution, tmp_path / "d", tmp_path / "repo")
    assert "Maven Central" in (err.value.hint or "")


def test_missing_mvn_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_mvn(cmd, **_kw):  # noqa: ANN001, ANN003
        raise FileNotFoundError(cmd[0])

    monkeypatch.setattr(fetch.subprocess, "run", no_mvn)
    with pytest.raises(FetchError, match="mvn is not installed") as err:
        fetch.fetch_artifact(OPENSEARCH.distribution, tmp_path / "d", tmp_path / "repo")
    assert "apt-get install maven" in (err.value.hint or "")


def test_plugin_install_failure_is_a_clear_error(tmp_path: Path) -> None:
    from deployer.cluster.errors import PluginInstallError
    from deployer.cluster.java import JavaRuntime

    home = tmp_path / "home"
    (home / "bin").mkdir(parents=True)
    cli = home / OPENSEARCH.plugin_cli
    cli.write_text(
        '#!/bin/sh\necho "ERROR: plugin [opensearch-alerting] requires plugin [lang-painless]" >&2\nexit 1\n'
    )
    cli.chmod(0o755)
    archive = tmp_path / "alerting-2.19.4.0.zip"
    archive.write_bytes(b"PK")
    plugin = next(p for p in OPENSEARCH.plugins if p.name == "opensearch-alerting")
    with pytest.raises(PluginInstallError, match="requires plugin \\[lang-painless\\]") as err:
        fetch._install_plugin(home, OPENSEARCH, plugin.name, archive, JavaRuntime(Path("/jdk"), 17, "test"))
    assert "could not install opensearch-alerting" in str(err.value)
    assert "order" in (err.value.hint or "")
