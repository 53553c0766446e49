"""Faults on the real Alerting plugin: a refused monitor, the cluster going away mid-deploy."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployer.rules.loader import load_rule_files
from deployer.targets.http import RetryPolicy
from deployer.targets.opensearch import OpenSearchClient, OpenSearchTarget, deploy, iter_owned
from deployer.targets.plan import CREATE, build_plan

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RULE_PATHS = [REPO / "tests" / "data" / "opensearch", REPO / "detections"]


class Proxy:
    """A TCP relay to the real server that can go away and come back on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []

    def start(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        self.port = sock.getsockname()[1]
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def stop(self) -> None:
        # Like a node restart: the port stops answering and open connections drop.
        if self._listener is not None:
            # shutdown first: a bare close does not wake the thread blocked in accept(), and the
            # port would keep accepting.
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _rules() -> list[Any]:
    loaded = load_rule_files(RULE_PATHS)
    return [r for r in loaded.rules if r.rule_id]


def _wipe_owned(client: OpenSearchClient) -> None:
    for monitor_id, _monitor in iter_owned(client):
        client.delete_monitor(monitor_id)


@pytest.fixture
def proxy(opensearch_alerting: Any) -> Iterator[Proxy]:
    host, port = opensearch_alerting.url.removeprefix("http://").split(":")
    relay = Proxy((host, int(port)))
    relay.start()
    yield relay
    relay.stop()


def test_alerting_refusing_a_monitor_fails_that_rule_with_the_plugins_reason(
    opensearch_alerting: Any,
) -> None:
    client = OpenSearchClient(opensearch_alerting.url)
    _wipe_owned(client)
    target = OpenSearchTarget(client)
    desired = target.desired(_rules())
    broken = sorted(target.compiled)[0]
    # A body Alerting itself rejects (400): the compiler never writes one, a hand edit could.
    target._bodies[broken]["schedule"]["period"]["interval"] = 0
    plan = build_plan(desired, target.read_current(desired), owned=target.owned)
    results = {r.rule_id: r for r in target.apply(plan)}
    assert not results[broken].ok and results[broken].status_code == 400
    assert "Interval is not allowed to be 0 or negative" in results[broken].message
    assert all(r.ok for rid, r in results.items() if rid != broken)
    owned = {m["ui_metadata"]["dac"]["rule_id"] for _id, m in iter_owned(client)}
    assert broken not in owned and owned == set(target.compiled) - {broken}
    _wipe_owned(client)
    client.close()


def test_cluster_gone_mid_deploy_then_back_converges_without_duplicates(
    opensearch_alerting: Any, proxy: Proxy
) -> None:
    direct = OpenSearchClient(opensearch_alerting.url)
    _wipe_owned(direct)
    client = OpenSearchClient(
        f"http://127.0.0.1:{proxy.port}", retry=RetryPolicy(base_delay=0.05, connect_retries=1)
    )
    target = OpenSearchTarget(client)
    desired = target.desired(_rules())
    plan = build_plan(desired, target.read_current(desired), owned=target.owned)
    assert len(plan.of(CREATE)) >= 3
    results = target.apply(plan, progress=lambda _n: proxy.stop())
    assert results[0].ok
    assert all(not r.ok for r in results[1:])
    assert "cannot reach OpenSearch" in results[1].message
    assert all(r.message.startswith("not attempted") for r in results[2:]), [r.message for r in results]
    # Only whole monitors exist: the one written before the cluster went away.
    assert [m["ui_metadata"]["dac"]["rule_id"] for _id, m in iter_owned(direct)] == [results[0].rule_id]

    proxy.start()
    client = OpenSearchClient(f"http://127.0.0.1:{proxy.port}")
    plan2, again = deploy(OpenSearchTarget(client), _rules())
    assert all(r.ok for r in again) and len(again) == len(results) - 1
    owned = [m["ui_metadata"]["dac"]["rule_id"] for _id, m in iter_owned(direct)]
    assert sorted(owned) == sorted(desired)
    plan3, third = deploy(OpenSearchTarget(client), _rules())
    assert third == [] and not plan3.has_changes
    _wipe_owned(direct)
    client.close()
    direct.close()
