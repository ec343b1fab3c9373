"""Fixtures for the integration tier: real router and gateway processes, real clients.

* ``shared_cluster`` (session): one router + two gateways (``--env development``), started once;
  tests isolate themselves with fresh room names.
* ``cluster`` (function): the shared cluster, plus per-test hygiene: the clients a test opened
  are closed afterwards, and the test fails if a process died or logged ERROR/Traceback meanwhile.
* ``sdk``: a :class:`roomcast.SyncCluster` on the cluster's router (closed after the test).
* ``sc``, ``node``, ``js`` (module, module, function): the Socket.IO modules' cluster (two
  gateways and the test worker, tests/integration/apps.py), their Node driver of real JS clients,
  and the driver per test with its clients closed and the cluster checked healthy around it. A
  module that needs another cluster defines its own ``sc``.
* ``publisher``: a second process holding its own :class:`roomcast.Cluster`
  (``sdk_publisher.py``) that performs one SDK call per stdin line and acks each on stdout.

Harness code lives in ``harness.py``; ``TIMEOUT_UNIT`` and ``deadline_poll`` come from
``tests/conftest.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import TIMEOUT_UNIT as T
from tests.integration.harness import Cluster, Proc, start_cluster
from tests.integration.test_sails_support import (
    NodeDriver,
    SailsCluster,
    node_driver,
    sails_cluster,
)


@pytest.fixture(scope="session")
def shared_cluster() -> Iterator[Cluster]:
    c = start_cluster(gateways=2)
    yield c
    c.stop()


@pytest.fixture
def cluster(shared_cluster: Cluster) -> Iterator[Cluster]:
    shared_cluster.check_healthy()
    offsets = shared_cluster.log_offsets()
    yield shared_cluster
    shared_cluster.close_clients()
    shared_cluster.check_healthy(offsets)


@pytest.fixture
def sdk(cluster: Cluster) -> Iterator[Any]:
    from roomcast import SyncCluster

    client = SyncCluster(cluster.commands)
    try:
        yield client
    finally:
        client.close()


class Publisher:
    """Drives ``sdk_publisher.py``: one JSON command per line, one JSON ack per line."""

    def __init__(self, commands_url: str) -> None:
        # As a module from the repo root, like the components (python -m ...).
        argv = ["-m", "tests.integration.sdk_publisher", commands_url]
        self.proc = Proc("publisher", argv, stdin=True)
        self.proc.wait_ready()

    def call(self, op: str, timeout: float | None = None, **args: Any) -> Any:
        self.proc.writeline(json.dumps({"op": op, "args": args}))
        ack = json.loads(self.proc.readline(10 * T if timeout is None else timeout))
        assert ack.get("ok") is True, f"publisher {op} {args!r} failed: {ack!r}"
        return ack.get("result")

    def broadcast(self, rooms: Any, event: str = "message", data: Any = None) -> Any:
        return self.call("broadcast", rooms=rooms, event=event, data=data)

    def stop(self) -> None:
        self.proc.stop()
        self.proc.check_log()


@pytest.fixture
def publisher(cluster: Cluster) -> Iterator[Publisher]:
    pub = Publisher(cluster.commands)
    yield pub
    pub.stop()


@pytest.fixture(scope="module")
def sc() -> Iterator[SailsCluster]:
    with sails_cluster(gateways=2, workers=1) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def node() -> Iterator[NodeDriver]:
    with node_driver() as driver:
        yield driver


@pytest.fixture
def js(sc: SailsCluster, node: NodeDriver) -> Iterator[NodeDriver]:
    """The module's Node driver; the clients a test made are closed after it, and the cluster
    must still be healthy (every process alive, no unexpected ERROR logged)."""
    sc.check_healthy()
    yield node
    node.close_all()
    sc.check_healthy()
