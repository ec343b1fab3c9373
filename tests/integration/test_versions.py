"""Rolling upgrades: every Hello carries a protocol version; the router refuses another major
version (clear log line + metric) and keeps serving an older minor version.

The peer here is a test gateway speaking the wire protocol by hand over real ZeroMQ sockets,
so it can claim any version.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zmq

from roomcast.core import wire
from tests.conftest import TIMEOUT_UNIT as T
from tests.integration.harness import Metrics, Proc, http_get, router_proc


@pytest.fixture
def router() -> Iterator[Proc]:
    proc = router_proc()
    proc.wait_ready()
    yield proc
    proc.stop()


class PeerGateway:
    """A hand-rolled gateway link: DEALER up with the gateway routing id, SUB on its topic."""

    def __init__(self, router: Proc, node_id: str) -> None:
        self.ctx = zmq.Context()
        self.node_id = node_id
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, wire.gateway_topic(node_id))
        self.sub.connect(router.info["fanout"])
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.setsockopt(zmq.ROUTING_ID, b"gw:" + node_id.encode())
        self.dealer.connect(router.info["commands"])

    def hello_until_answered(self, version: int) -> wire.Message:
        """Say Hello (repeating: subscriptions take a moment) until the router answers it."""
        deadline = time.monotonic() + 10 * T
        ref = 0
        while time.monotonic() < deadline:
            ref += 1
            hello = wire.Hello(
                ref=ref, node_id=self.node_id, role=wire.Role.GATEWAY, protocol_version=version
            )
            self.dealer.send(wire.encode(hello))
            if self.sub.poll(int(200 * T)):
                _topic, _seq, body = wire.split_frames(self.sub.recv_multipart())
                return wire.decode(body)
        raise AssertionError(f"no answer to Hello (protocol {version}) within {10 * T}s")

    def close(self) -> None:
        self.sub.close()
        self.dealer.close()
        self.ctx.term()


def _refused(router: Proc) -> float:
    _status, text = http_get(router.info["http"] + "/metrics")
    return Metrics(text).get("roomcast_router_refused_peers_total")


def test_an_older_minor_version_is_served(router: Proc) -> None:
    older = (wire.PROTOCOL_VERSION // 100) * 100  # x.0, older than (or equal to) ours
    assert wire.compatible(older)
    peer = PeerGateway(router, "old-minor")
    try:
        answer = peer.hello_until_answered(older)
        assert isinstance(answer, wire.HelloAck), answer
        assert answer.protocol_version == wire.PROTOCOL_VERSION
        # ...and it is a real member of the cluster: it can register a socket.
        peer.dealer.send(wire.encode(wire.SocketOpen(ref=99, sockets=("s-old",))))
        assert peer.sub.poll(int(5000 * T))
        while True:
            _t, _s, body = wire.split_frames(peer.sub.recv_multipart())
            msg = wire.decode(body)
            if isinstance(msg, wire.Reply) and msg.ref == 99:
                break
        assert msg.status == 200
    finally:
        peer.close()
    assert _refused(router) == 0


def test_another_major_version_is_refused_with_a_log_line_and_a_metric(router: Proc) -> None:
    newer = (wire.PROTOCOL_VERSION // 100 + 1) * 100
    assert not wire.compatible(newer)
    before = router.log_size()
    peer = PeerGateway(router, "new-major")
    try:
        answer = peer.hello_until_answered(newer)
    finally:
        peer.close()
    assert isinstance(answer, wire.Reply), answer
    assert answer.status == 400 and answer.error == "bad_request"
    assert "not compatible" in answer.message
    assert _refused(router) >= 1
    log = router.log_text()[before:]
    assert "refusing gateway 'new-major'" in log and "not compatible" in log
