"""Pure parts of the cluster manager and Java lookup: settings, commands, ports, log tails."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from deployer.cluster import java as java_mod
from deployer.cluster import manager
from deployer.cluster.errors import ClusterError, JavaNotFoundError, PortInUseError
from deployer.cluster.java import JavaRuntime, find_java, parse_java_version
from deployer.cluster.versions import ELASTICSEARCH, OPENSEARCH


def test_server_settings_single_node_loopback(tmp_path: Path) -> None:
    settings = manager.server_settings(
        OPENSEARCH, name="t", http_port=1234, transport_port=1235, directory=tmp_path
    )
    assert settings["discovery.type"] == "single-node"
    assert settings["network.host"] == "127.0.0.1"
    assert settings["http.port"] == "1234" and settings["transport.port"] == "1235"
    assert settings["path.data"] == str(tmp_path / "data")
    assert settings["path.logs"] == str(tmp_path / "logs")
    assert settings["cluster.name"] == "dac-opensearch-t"
    es = manager.server_settings(ELASTICSEARCH, name="t", http_port=1, transport_port=2, directory=tmp_path)
    assert es["xpack.security.enabled"] == "false"


def test_settings_yaml_round_trips() -> None:
    settings = {"a.b": "1", "path.data": "/tmp/x y", "flag": "false", "odd": 'quote"d: yes'}
    parsed = yaml.safe_load(manager.settings_yaml(settings))
    assert parsed == settings


def test_jvm_options() -> None:
    assert manager.jvm_options("512m", running_as_root=False) == ["-Xms512m", "-Xmx512m"]
    root = manager.jvm_options("1g", running_as_root=True)
    assert root[:2] == ["-Xms1g", "-Xmx1g"]
    assert "-Djna.nosys=true" in root and "-Djna.noclasspath=true" in root


def test_server_command_and_env(tmp_path: Path) -> None:
    cmd = manager.server_command(OPENSEARCH, Path("/h"), tmp_path / "server.pid")
    assert cmd == ["/h/bin/opensearch", "-p", str(tmp_path / "server.pid")]
    assert manager.server_command(ELASTICSEARCH, Path("/h"), Path("/p"))[0] == "/h/bin/elasticsearch"
    runtime = JavaRuntime(Path("/jdk"), 17, "test")
    env = manager.server_env(
        OPENSEARCH,
        runtime,
        tmp_path / "config",
        base={"OPENSEARCH_JAVA_OPTS": "-Xmx8g", "PATH": "/bin", "JAVA_HOME": "/other"},
    )
    assert env["OPENSEARCH_JAVA_HOME"] == "/jdk" and env["JAVA_HOME"] == "/jdk"
    assert env["OPENSEARCH_PATH_CONF"] == str(tmp_path / "config")
    assert "OPENSEARCH_JAVA_OPTS" not in env
    assert env["PATH"] == "/bin"
    es_env = manager.server_env(ELASTICSEARCH, runtime, tmp_path, base={"ES_JAVA_OPTS": "-Xmx8g"})
    assert es_env["ES_JAVA_HOME"] == "/jdk" and "ES_JAVA_OPTS" not in es_env
    assert es_env["ES_PATH_CONF"] == str(tmp_path)


def test_instance_dir_rejects_bad_names(tmp_path: Path) -> None:
    assert (
        manager.instance_dir("opensearch", "default", tmp_path)
        == tmp_path / "instances" / "opensearch-default"
    )
    for bad in ("", "../x", ".hidden", "a/b"):
        with pytest.raises(ValueError):
            manager.instance_dir("opensearch", bad, tmp_path)


def test_choose_ports_explicit_busy_port_is_an_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        busy = sock.getsockname()[1]
        assert not manager.port_is_free(busy)
        with pytest.raises(PortInUseError, match=f"HTTP port {busy}") as err:
            manager.choose_ports(OPENSEARCH, busy, None)
        assert "--http-port" in (err.value.hint or "")
        with pytest.raises(PortInUseError, match="transport port"):
            manager.choose_ports(OPENSEARCH, None, busy)


def test_choose_ports_falls_back_when_the_default_is_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manager, "port_is_free", lambda port, host="127.0.0.1": False)
    http, transport = manager.choose_ports(OPENSEARCH, None, None)
    assert http != transport
    assert http != OPENSEARCH.default_http_port


def test_choose_ports_same_explicit_port_twice() -> None:
    port = manager.free_port()
    with pytest.raises(PortInUseError):
        manager.choose_ports(OPENSEARCH, port, port)


def test_tail_lines_and_log_tail(tmp_path: Path) -> None:
    assert manager.tail_lines(tmp_path / "missing.log") == ""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "dac-opensearch-x.log").write_text("\n".join(f"line {i}" for i in range(100)) + "\n")
    tail = manager.log_tail(tmp_path, "opensearch", "x", lines=3)
    assert tail.splitlines() == ["line 97", "line 98", "line 99"]
    (logs / "dac-opensearch-x.log").write_text("")
    (logs / "console.log").write_text("Error: could not find java\n")
    assert "could not find java" in manager.log_tail(tmp_path, "opensearch", "x")


def test_cluster_error_text_and_dict() -> None:
    err = ClusterError("it broke", hint="do this", log_tail="a\nb")
    text = str(err)
    assert text.startswith("it broke\nnext step: do this\n")
    assert text.endswith("a\nb")
    assert err.to_dict() == {"error": "it broke", "hint": "do this", "log_tail": "a\nb"}


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ('JAVA_VERSION="17.0.15"', 17),
        ('IMPLEMENTOR="Eclipse Adoptium"\nJAVA_VERSION="25"\n', 25),
        ('openjdk version "21.0.2" 2024-01-16', 21),
        ('java version "1.8.0_392"', 8),
        ("garbage", None),
    ],
)
def test_parse_java_version(text: str, version: int | None) -> None:
    assert parse_java_version(text) == version


def _fake_jdk(root: Path, name: str, version: str) -> Path:
    home = root / name
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "java").write_text("#!/bin/sh\n")
    (home / "bin" / "java").chmod(0o755)
    (home / "release").write_text(f'JAVA_VERSION="{version}"\n')
    return home


def test_find_java_bogus_java_home_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JavaNotFoundError, match="does not contain a runnable bin/java") as err:
        find_java(OPENSEARCH, {"JAVA_HOME": str(tmp_path / "nope")})
    assert "JAVA_HOME" in (err.value.hint or "")


def test_find_java_engine_variable_with_wrong_version_is_an_error(tmp_path: Path) -> None:
    home = _fake_jdk(tmp_path, "jdk25", "25")
    with pytest.raises(JavaNotFoundError, match="needs Java 11–21"):
        find_java(OPENSEARCH, {"OPENSEARCH_JAVA_HOME": str(home)})


def test_find_java_general_java_home_too_new_falls_back_to_a_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jvms = tmp_path / "jvm"
    too_new = _fake_jdk(jvms, "jdk25", "25")
    ok = _fake_jdk(jvms, "jdk17", "17.0.2")
    monkeypatch.setattr(java_mod, "JVM_ROOTS", (jvms,))
    runtime = find_java(OPENSEARCH, {"JAVA_HOME": str(too_new)})
    assert runtime.home == ok.resolve() and runtime.version == 17
    assert find_java(OPENSEARCH, {"JAVA_HOME": str(ok)}).source == "JAVA_HOME"


def test_find_java_nothing_usable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jvms = tmp_path / "jvm"
    _fake_jdk(jvms, "jdk8", "1.8.0_1")
    monkeypatch.setattr(java_mod, "JVM_ROOTS", (jvms,))
    monkeypatch.setattr(java_mod, "_candidates", lambda: [(jvms / "jdk8", str(jvms))])
    with pytest.raises(JavaNotFoundError, match="no Java 17–2[01] found") as err:
        find_java(ELASTICSEARCH, {})
    assert "ES_JAVA_HOME" in (err.value.hint or "")
