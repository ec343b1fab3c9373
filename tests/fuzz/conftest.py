"""Fixtures of the fuzz tier: one real cluster for the client-protocol and router targets.

* ``fuzz_cluster`` (session): a router and one gateway (``--env development``: clients may join
  and broadcast, as the fuzz wants them to), started once for every fuzz target that needs it.
* ``control``: a plain /ws client in a room of its own, and ``check_control()``: a broadcast
  from the SDK must still reach it (other connections are unaffected by the fuzz).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from roomcast.bench.wsclient import stamp
from tests.conftest import TIMEOUT_UNIT as T
from tests.fuzz.support import RawWs
from tests.integration.harness import Cluster, start_cluster

_MARKERS = itertools.count(1_000_000_000)


@pytest.fixture(scope="session")
def fuzz_cluster() -> Iterator[Cluster]:
    c = start_cluster(
        gateways=1,
        # No server ping may fall due between two reads of the control client.
        gateway_args=("--ping-interval", "600", "--ping-timeout", "500"),
    )
    yield c
    c.stop()


def host_port(url: str) -> tuple[str, int]:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return host, int(port)


class Control:
    """A well-behaved client that must keep receiving while the fuzz runs."""

    def __init__(self, cluster: Cluster, sdk: Any) -> None:
        self.cluster = cluster
        self.sdk = sdk
        self.room = f"control-{uuid.uuid4().hex}"
        host, port = host_port(cluster.gateways[0].public)
        self.ws = RawWs(host, port, "/ws")
        assert self.ws.wait_for(lambda: self.ws.has_text(b'"op":"welcome"'), 10 * T)
        self.ws.text(f'{{"op":"join","ref":"control","room":"{self.room}"}}')
        assert self.ws.wait_for(lambda: self.ws.has_text(b'"ref":"control"'), 10 * T)

    def check(self) -> None:
        """An SDK broadcast to the control room reaches the control client."""
        marker = next(_MARKERS)
        self.sdk.sockets.broadcast(self.room, "control", stamp(marker, ""))
        got = self.ws.wait_for(lambda: marker in self.ws.seqs, 10 * T)
        assert got, f"control client did not get broadcast {marker} (closed={self.ws.closed})"
        self.ws.frames.clear()
        self.ws.seqs.clear()

    def close(self) -> None:
        self.ws.close()


@pytest.fixture(scope="module")
def sdk(fuzz_cluster: Cluster) -> Iterator[Any]:
    from roomcast import SyncCluster

    client = SyncCluster(fuzz_cluster.commands, timeout=10 * T)
    yield client
    client.close()


@pytest.fixture(scope="module")
def control(fuzz_cluster: Cluster, sdk: Any) -> Iterator[Control]:
    c = Control(fuzz_cluster, sdk)
    yield c
    c.close()


def connections_gauge(cluster: Cluster) -> Callable[[], float]:
    return lambda: cluster.metrics(0).get("roomcast_gateway_connections")
