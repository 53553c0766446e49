"""Real local servers: the session fixtures, the CLI lifecycle and the failure paths."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployer.cli import main
from deployer.cluster import manager
from deployer.cluster.errors import JavaNotFoundError, PortInUseError, StartupError
from deployer.cluster.versions import ELASTICSEARCH_VERSION, OPENSEARCH_MODULES, OPENSEARCH_VERSION

pytestmark = pytest.mark.integration


def _jvms_of(directory: Path) -> list[int]:
    """Pids of live processes whose command line or environment names `directory`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            text = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if str(directory).encode() in text and state != "Z":
            pids.append(int(proc.name))
    return pids


def _name(tag: str) -> str:
    return f"pytest-{os.getpid()}-{tag}"


def test_opensearch_fixture_runs_pinned_version_with_assembled_modules(opensearch) -> None:
    assert opensearch.version == OPENSEARCH_VERSION
    assert {m.name for m in OPENSEARCH_MODULES} <= set(opensearch.modules)
    assert opensearch.has_plugin("job-scheduler")
    assert opensearch.client.cluster.health()["status"] in ("green", "yellow")


def test_opensearch_painless_and_percolator_work(opensearch) -> None:
    client = opensearch.client
    index = "dac-test-percolator"
    client.indices.create(
        index=index,
        body={
            "mappings": {
                "properties": {
                    "query": {"type": "percolator"},
                    "process": {"properties": {"name": {"type": "keyword"}}},
                }
            }
        },
    )
    try:
        client.index(
            index=index, id="q1", body={"query": {"term": {"process.name": "mshta.exe"}}}, refresh=True
        )
        result = client.search(
            index=index,
            body={
                "query": {"percolate": {"field": "query", "document": {"process": {"name": "mshta.exe"}}}},
                "script_fields": {"two": {"script": {"lang": "painless", "source": "1 + 1"}}},
            },
        )
        hits = result["hits"]["hits"]
        assert [h["_id"] for h in hits] == ["q1"]
        assert hits[0]["fields"]["two"] == [2]
    finally:
        client.indices.delete(index=index)


def test_elasticsearch_fixture_runs_pinned_version(elasticsearch) -> None:
    assert elasticsearch.version == ELASTICSEARCH_VERSION
    assert elasticsearch.client.cluster.health()["status"] in ("green", "yellow")
    elasticsearch.client.index(index="dac-test-es", document={"a": 1}, refresh=True)
    assert elasticsearch.client.count(index="dac-test-es")["count"] == 1
    elasticsearch.client.indices.delete(index="dac-test-es")


def test_cli_up_status_down(opensearch) -> None:
    # `opensearch` is requested only so that this second instance starts from the same cache.
    name = _name("cli")
    runner = CliRunner()
    try:
        up = runner.invoke(
            main, ["cluster", "up", "--engine", "opensearch", "--name", name, "--format", "json"]
        )
        assert up.exit_code == 0, up.output
        info = json.loads(up.output)
        assert info["running"] is True and info["engine"] == "opensearch"
        assert info["version"] == OPENSEARCH_VERSION
        assert "opensearch-job-scheduler" in info["plugins"]
        assert info["url"].startswith("http://127.0.0.1:")

        status = runner.invoke(
            main, ["cluster", "status", "--engine", "opensearch", "--name", name, "--format", "json"]
        )
        assert status.exit_code == 0, status.output
        assert {"engine", "url", "version", "plugins"} <= set(json.loads(status.output))

        again = runner.invoke(
            main, ["cluster", "up", "--engine", "opensearch", "--name", name, "--format", "json"]
        )
        assert again.exit_code == 0 and json.loads(again.output)["url"] == info["url"]

        directory = manager.instance_dir("opensearch", name)
        assert _jvms_of(directory)
        down = runner.invoke(main, ["cluster", "down", "--engine", "opensearch", "--name", name])
        assert down.exit_code == 0 and "stopped" in down.output
        assert _jvms_of(directory) == []

        after = runner.invoke(
            main, ["cluster", "status", "--engine", "opensearch", "--name", name, "--format", "json"]
        )
        assert after.exit_code == 1 and json.loads(after.output)["running"] is False
    finally:
        manager.stop("opensearch", name, remove=True)


def test_port_in_use_is_a_clear_error_and_starts_nothing() -> None:
    name = _name("port")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        with pytest.raises(PortInUseError) as err:
            manager.start("opensearch", name=name, http_port=port, timeout=60)
    assert str(port) in str(err.value) and "already in use" in str(err.value)
    assert err.value.hint
    assert _jvms_of(manager.instance_dir("opensearch", name)) == []
    manager.stop("opensearch", name, remove=True)


def test_cli_port_in_use_exits_2_with_next_step() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        result = CliRunner().invoke(
            main, ["cluster", "up", "--name", _name("cliport"), "--http-port", str(port)]
        )
    assert result.exit_code == 2
    assert "already in use" in result.output and "next step" in result.output


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OPENSEARCH_JAVA_HOME", raising=False)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-such-jdk"))
    name = _name("java")
    with pytest.raises(JavaNotFoundError) as err:
        manager.start("opensearch", name=name, timeout=60)
    assert "no-such-jdk" in str(err.value) and "bin/java" in str(err.value)
    assert "JAVA_HOME" in (err.value.hint or "")
    assert _jvms_of(manager.instance_dir("opensearch", name)) == []

    result = CliRunner().invoke(main, ["cluster", "up", "--name", name, "--format", "json"])
    assert result.exit_code == 2
    assert "no-such-jdk" in json.loads(result.output)["error"]
    manager.stop("opensearch", name, remove=True)


@pytest.mark.parametrize("engine", ["opensearch", "elasticsearch"])
def test_never_healthy_cluster_is_stopped_with_log_tail(engine: str) -> None:
    name = _name(f"unhealthy-{engine}")
    directory = manager.instance_dir(engine, name)
    try:
        # The node waits for a second data node before recovering its state, so its health never
        # turns green or yellow: a deterministic "never healthy" server.
        with pytest.raises(StartupError) as err:
            manager.start(
                engine, name=name, timeout=15, extra_settings={"gateway.recover_after_data_nodes": "2"}
            )
        message = str(err.value)
        assert "did not become healthy within 15s" in message
        assert err.value.log_tail, "the error must carry the tail of the server log"
        assert "last lines of the server log" in message
        assert _jvms_of(directory) == [], "a failed start must not leave a JVM running"
        assert manager.read_state(engine, name) is None
    finally:
        manager.stop(engine, name, remove=True)


def test_failed_download_is_a_clear_error(tmp_path: Path) -> None:
    from deployer.cluster.errors import FetchError
    from deployer.cluster.fetch import fetch_artifact, maven_repository
    from deployer.cluster.versions import Artifact

    # A real Maven run for a coordinate the registry does not have.
    missing = Artifact("org.opensearch.plugin", "opensearch-dac-no-such-plugin", "0.0.1.0", "zip")
    with pytest.raises(FetchError) as err:
        fetch_artifact(missing, tmp_path / "downloads", maven_repository())
    assert missing.coordinate in str(err.value)
    assert "Maven Central" in (err.value.hint or "")
    assert not (tmp_path / "downloads" / missing.filename).exists()
