"""The internal plane holds against a local peer and against a second process with the same id.

Fake peers are raw ZeroMQ sockets speaking the wire protocol by hand; the router and gateways
are real processes. Each test reproduces a finding of the hardening pass:

* one message with a gateway's routing id (``gw:<id>``, learnt from the fanout) took that
  gateway's pipe over (ROUTER_HANDOVER) and cut it off for good while it kept reporting ready;
* a fake gateway could claim a live socket's id with ``SocketOpen`` and receive its messages;
* two gateways started with the same ``--gateway-id`` did the same to each other;
* a gateway whose commands no longer reached the router (its heartbeats unanswered) never
  noticed, because the router's cluster-wide beats still arrived.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import zmq

from roomcast.core import wire
from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import (
    Gateway,
    Metrics,
    Proc,
    WsClient,
    fresh_room,
    gateway_proc,
    http_get,
    router_proc,
    run_all,
)

GATEWAY_TIMEOUT = 2.0  # the router's --gateway-timeout here: an expiry shows within seconds
FAST = ("--heartbeat-interval", "0.2")


def _metrics(url: str) -> Metrics:
    status, text = http_get(url + "/metrics")
    assert status == 200, text[:200]
    return Metrics(text)


@pytest.fixture
def router() -> Iterator[Proc]:
    proc = router_proc("--gateway-timeout", str(GATEWAY_TIMEOUT), *FAST)
    proc.wait_ready()
    yield proc
    run_all([proc.stop, proc.check_log])


def _gateway(router: Proc, name: str, gateway_id: str) -> Gateway:
    proc = gateway_proc(name, router.info, "--gateway-id", gateway_id, *FAST)
    info = proc.wait_ready()
    return Gateway(proc, info["public"], info["internal"])


class FakePeer:
    """A raw DEALER with any routing id, and a SUB on one gateway topic."""

    def __init__(self, router: Proc, identity: bytes, topic_of: str) -> None:
        self.ctx = zmq.Context()
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.setsockopt(zmq.ROUTING_ID, identity)
        self.dealer.connect(router.info["commands"])
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, wire.gateway_topic(topic_of))
        self.sub.connect(router.info["fanout"])

    def send(self, msg: wire.Message) -> None:
        self.dealer.send(wire.encode(msg))

    def direct_answer(self, ref: int, timeout: float) -> wire.Reply | None:
        """The router's answer to ``ref`` on the DEALER itself (not on the topic)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.dealer.poll(int(left * 1000)):
                msg = wire.decode(self.dealer.recv())
                if isinstance(msg, wire.Reply) and msg.ref == ref:
                    return msg
        return None

    def topic_messages(self) -> list[wire.Message]:
        out = []
        while self.sub.poll(0):
            _topic, _seq, body = wire.split_frames(self.sub.recv_multipart())
            out.append(wire.decode(body))
        return out

    def close(self) -> None:
        self.dealer.close()
        self.sub.close()
        self.ctx.term()


def _keeps_receiving(client: WsClient, sdk: object, room: str, seconds: float) -> int:
    """Broadcast to ``room`` and wait for each message, for ``seconds``: how many arrived."""
    n = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until and n < 10_000:
        n += 1
        sdk.sockets.broadcast(room, "tick", {"n": n})  # type: ignore[attr-defined]
        event = client.next_event(5 * T, what=f"tick {n} after the impersonation")
        assert event.event == "tick" and event.data == {"n": n}, event
    return n


def test_a_peer_using_a_gateways_id_cannot_cut_it_off(router: Proc) -> None:
    from roomcast import SyncCluster

    gw = _gateway(router, "victim-gw", "victim")
    client = WsClient(gw.ws_url)
    sdk = SyncCluster(router.info["commands"])
    # The attack of the finding (the old routing id, no session) and a guessed session.
    peers = [
        FakePeer(router, b"gw:victim", "victim"),
        FakePeer(router, b"gw:victim\x00" + b"0" * 32, "victim"),
    ]
    try:
        room = fresh_room()
        client.join(room)
        for i, peer in enumerate(peers):
            peer.send(wire.Hello(ref=100 + i, node_id="victim", role=wire.Role.GATEWAY))
            peer.send(wire.Heartbeat(node_id="victim"))
            peer.send(wire.SocketOpen(ref=200 + i, sockets=("stolen",)))
        for i, peer in enumerate(peers):
            answer = peer.direct_answer(100 + i, 5 * T)
            assert answer is not None and answer.status == 409, answer
            assert answer.error == "conflict" and "victim" in answer.message
        deadline_poll(
            lambda: (
                _metrics(router.info["http"]).get(
                    "roomcast_router_claims_refused_total", what="gateway"
                )
                >= 6
            ),
            5 * T,
            message="six refused claims counted",
        )
        # The gateway keeps its link well past the router's gateway timeout.
        assert _keeps_receiving(client, sdk, room, 2 * GATEWAY_TIMEOUT) > 0
        rm = _metrics(router.info["http"])
        assert rm.get("roomcast_router_gateway_expired_total") == 0
        assert rm.get("roomcast_router_sockets") == 1  # "stolen" was never registered
        gm = _metrics(gw.internal)
        assert gm.get("roomcast_gateway_lost_total") == 0
        assert gm.get("roomcast_gateway_router_link") == 1
        log = router.log_text()
        assert "claiming live gateway victim" in log
    finally:
        for peer in peers:
            peer.close()
        sdk.close()
        client.close()
        run_all([gw.proc.stop, gw.proc.check_log])


def test_a_fake_gateway_cannot_claim_a_live_socket(router: Proc) -> None:
    from roomcast import SyncCluster

    gw = _gateway(router, "owner-gw", "owner")
    client = WsClient(gw.ws_url)
    sdk = SyncCluster(router.info["commands"])
    fake = FakePeer(router, b"gw:evil\x00" + b"1" * 32, "evil")
    try:
        ref = 0

        def hello_acked() -> bool:
            nonlocal ref
            ref += 1
            fake.send(wire.Hello(ref=ref, node_id="evil", role=wire.Role.GATEWAY))
            if not fake.sub.poll(int(100 * T)):
                return False
            return any(isinstance(m, wire.HelloAck) for m in fake.topic_messages())

        deadline_poll(hello_acked, 10 * T, message="the fake gateway's HelloAck")
        fake.send(wire.SocketOpen(ref=999, sockets=(client.id,)))

        def refusal() -> wire.Reply | None:
            if fake.sub.poll(int(100 * T)):
                for m in fake.topic_messages():
                    if isinstance(m, wire.Reply) and m.ref == 999:
                        return m
            return None

        answer = deadline_poll(refusal, 5 * T, message="the answer to SocketOpen")
        assert answer.status == 409 and answer.error == "conflict", answer
        # The socket's private messages still reach it, and only it.
        sdk.sockets.broadcast(client.id, "private", {"secret": 1})
        assert client.next_event(5 * T).data == {"secret": 1}
        assert not any(isinstance(m, wire.Deliver) for m in fake.topic_messages())
        rm = _metrics(router.info["http"])
        assert rm.get("roomcast_router_claims_refused_total", what="socket") == 1
    finally:
        fake.close()
        sdk.close()
        client.close()
        run_all([gw.proc.stop, gw.proc.check_log])


def test_a_second_gateway_with_the_same_id_is_refused_until_the_first_leaves(
    router: Proc,
) -> None:
    from roomcast import SyncCluster

    first = _gateway(router, "first-gw", "dup")
    client = WsClient(first.ws_url)
    sdk = SyncCluster(router.info["commands"])
    second = gateway_proc("second-gw", router.info, "--gateway-id", "dup", *FAST)
    try:
        room = fresh_room()
        client.join(room)
        deadline_poll(
            lambda: "same --gateway-id" in second.log_text(),
            10 * T,
            message="the second gateway's refusal in its log",
        )
        # It serves nobody (no READY yet) and the first one keeps its link and its clients.
        assert not second.info
        assert _keeps_receiving(client, sdk, room, 2 * GATEWAY_TIMEOUT) > 0
        assert _metrics(first.internal).get("roomcast_gateway_lost_total") == 0
        client.close()
        run_all([first.proc.stop, first.proc.check_log])
        second.wait_ready(10 * T)  # the id is free: it links
        assert "gateway id dup is free again" in second.log_text()
        status, _ = http_get(second.info["internal"] + "/readyz")
        assert status == 200
        m = _metrics(second.info["internal"])
        assert m.get("roomcast_gateway_id_conflicts_total") >= 1
    finally:
        sdk.close()
        client.close()
        first.proc.kill()
        second.stop()
        # Its one ERROR line is the refusal; nothing else went wrong.
        bad = [x for x in second.bad_log_lines() if "router refused gateway id dup" not in x]
        assert bad == [], bad


class FakeRouter(threading.Thread):
    """A raw ROUTER + PUB speaking just enough of the router's side for one gateway: it answers
    Hello and the resync, beats, and answers heartbeats while ``answering`` is set."""

    def __init__(self, gateway_id: str) -> None:
        super().__init__(name="fake router", daemon=True)
        self.ctx = zmq.Context()
        self.commands = self.ctx.socket(zmq.ROUTER)
        self.fanout = self.ctx.socket(zmq.PUB)
        for sock in (self.commands, self.fanout):
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind("tcp://127.0.0.1:*")
        self.info = {
            "commands": self.commands.getsockopt_string(zmq.LAST_ENDPOINT),
            "fanout": self.fanout.getsockopt_string(zmq.LAST_ENDPOINT),
        }
        self.prefix = b"gw:" + gateway_id.encode() + b"\x00"
        self.topic = wire.gateway_topic(gateway_id)
        self.answering = threading.Event()
        self.answering.set()
        self.stopping = threading.Event()
        self.seq = 0
        self.hellos = 0
        self.heartbeats: list[wire.Heartbeat] = []
        self.identities: set[bytes] = set()

    def _send(self, msg: wire.Message) -> None:
        self.seq += 1
        self.fanout.send_multipart((self.topic, wire.pack_seq(self.seq), wire.encode(msg)))

    def run(self) -> None:
        until = time.monotonic() + 120 * T  # bounded even if the test forgets to stop it
        while not self.stopping.is_set() and time.monotonic() < until:
            beat = wire.encode(wire.RouterBeat(epoch="e"))
            self.fanout.send_multipart((wire.CLUSTER_TOPIC, b"", beat))
            while self.commands.poll(50):
                identity, body = self.commands.recv_multipart()
                self.identities.add(identity)
                msg = wire.decode(body)
                if isinstance(msg, wire.Hello):
                    self.hellos += 1
                    self._send(wire.HelloAck(ref=msg.ref, epoch="e", heartbeat_acks=True))
                elif isinstance(msg, wire.Resync) and msg.last:
                    self._send(wire.Reply(ref=msg.ref))
                elif isinstance(msg, wire.Heartbeat):
                    self.heartbeats.append(msg)
                    if self.answering.is_set():
                        self._send(wire.Reply(ref=msg.ref))
        self.commands.close()
        self.fanout.close()
        self.ctx.term()


def test_a_gateway_whose_heartbeats_go_unanswered_says_hello_again() -> None:
    fake = FakeRouter("deaf")
    fake.start()
    gw = gateway_proc(
        "deaf-gw", fake.info, "--gateway-id", "deaf", "--heartbeat-interval", "0.2",
        "--router-timeout", "1",
    )  # fmt: skip

    def ready() -> bool:
        status, _ = http_get(gw.info["internal"] + "/readyz")
        return status == 200

    try:
        gw.wait_ready()
        deadline_poll(lambda: len(fake.heartbeats) >= 3, 10 * T, message="three heartbeats")
        assert all(h.ref for h in fake.heartbeats), fake.heartbeats  # numbered: answerable
        # The routing id carries a session after the gateway id, the same for every message.
        assert len(fake.identities) == 1
        [identity] = fake.identities
        assert identity.startswith(fake.prefix) and len(identity) >= len(fake.prefix) + 16
        assert ready()
        greeted = fake.hellos
        fake.answering.clear()  # the router still beats, but no longer hears the gateway
        deadline_poll(
            lambda: not ready() and fake.hellos > greeted,
            10 * T,
            message="not ready, and a new Hello",
        )
        m = _metrics(gw.info["internal"])
        assert m.get("roomcast_gateway_heartbeats_unanswered_total") >= 1
        assert "has not answered a heartbeat" in gw.log_text()
        fake.answering.set()
        deadline_poll(ready, 10 * T, message="linked again")
    finally:
        run_all([gw.stop, gw.check_log])
        fake.stopping.set()
        fake.join(10 * T)


def test_the_commands_port_refuses_messages_over_its_size_bound(router: Proc) -> None:
    """ZMQ_MAXMSGSIZE (--max-message-bytes, 16 MiB): a larger message is dropped with its
    connection by ZeroMQ before the router buffers or decodes it; the peer can reconnect and
    is served again."""
    ctx = zmq.Context()
    peer = ctx.socket(zmq.DEALER)
    peer.setsockopt(zmq.LINGER, 0)
    peer.connect(router.info["commands"])
    try:
        before = _metrics(router.info["http"])
        peer.send(b"\x00" * (17 * 1024 * 1024))  # not even a frame: a wire error if decoded
        ref = 0

        def answered() -> bool:
            nonlocal ref
            ref += 1
            peer.send(wire.encode(wire.Query(ref=ref, kind=wire.QueryKind.COUNT, target="r")))
            while peer.poll(int(100 * T)):
                msg = wire.decode(peer.recv())
                if isinstance(msg, wire.Reply) and msg.status == 200:
                    return True
            return False

        deadline_poll(answered, 10 * T, message="the peer served again")
        after = _metrics(router.info["http"])
        wire_errors = "roomcast_router_wire_errors_total"
        assert after.get(wire_errors) == before.get(wire_errors)  # never reached the router
    finally:
        peer.close()
        ctx.term()
