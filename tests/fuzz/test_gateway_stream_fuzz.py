"""Fuzz a gateway's SUB stream (architecture §5.4-§5.5): whatever comes down, the gateway survives.

A real gateway runs against :class:`FakeRouter`, a real ZeroMQ ROUTER + XPUB pair in this
process that plays the router's part of docs/protocol.md (HelloAck with a fresh sequence,
Resync answered, SocketOpen / Membership acknowledged with MemberUpdates, RouterBeat every
0.25 s) and publishes whatever the test queues on the gateway's topic: random bytes, truncated
protobuf, wrong frame counts, bad or out-of-order sequence frames, unsequenced messages, beats
with other epochs, Resets, and valid messages with nonsense fields (Delivers and MemberUpdates
naming real sockets of this gateway, random rooms, garbage JSON data; Replies and HelloAcks
with random refs). After each batch the gateway must still run, have logged no ERROR (except
its deliberate refusals of a router it cannot talk to), and deliver a well-formed Deliver to a
control client once it is ready again; at the end only the control connection is left.
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
import uuid
from typing import Any

import pytest
import zmq
from hypothesis import strategies as st

from roomcast.bench.wsclient import stamp
from roomcast.core import wire
from roomcast.core.errors import WireError
from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.fuzz.strategies import mostly, uint64, wire_messages
from tests.fuzz.support import BATCH_MAX, BATCH_MIN, TIMEOUT_S, LogWatch, RawWs, Run
from tests.integration.harness import Metrics, Proc, gateway_proc, http_get

pytestmark = pytest.mark.timeout(TIMEOUT_S)

GATEWAY_ID = "fuzzgw"
# The gateway's deliberate ERROR lines when a "router" refuses it or speaks another major.
ALLOWED_ERRORS = (r"router refused this gateway", r"incompatible with this gateway")

Item = tuple[str, Any]  # ("seq", body) | ("badseq", (seq, body)) | ("raw", frames) | ...


class FakeRouter(threading.Thread):
    """Just enough of the router for one gateway, plus a way to publish anything at it."""

    def __init__(self) -> None:
        super().__init__(name="fake router", daemon=True)
        self.ctx = zmq.Context()
        self.commands = self.ctx.socket(zmq.ROUTER)
        self.commands.setsockopt(zmq.LINGER, 0)
        self.commands.bind("tcp://127.0.0.1:*")
        self.fanout = self.ctx.socket(zmq.XPUB)
        self.fanout.setsockopt(zmq.LINGER, 0)
        self.fanout.setsockopt(zmq.SNDHWM, 1_000_000)
        self.fanout.bind("tcp://127.0.0.1:*")
        self.info = {
            "commands": self.commands.getsockopt(zmq.LAST_ENDPOINT).decode(),  # type: ignore[union-attr]
            "fanout": self.fanout.getsockopt(zmq.LAST_ENDPOINT).decode(),  # type: ignore[union-attr]
        }
        self.topic = wire.gateway_topic(GATEWAY_ID)
        self.epoch = secrets.token_hex(8)
        self.seq = 0
        self.hellos = 0
        self.outbox: queue.Queue[tuple[list[Item], threading.Event]] = queue.Queue()
        self.stopping = threading.Event()

    # --- the test's side -------------------------------------------------------------------

    def publish(self, items: list[Item]) -> None:
        done = threading.Event()
        self.outbox.put((items, done))
        assert done.wait(10 * T), "the fake router did not send the batch"

    def stop(self) -> None:
        self.stopping.set()
        self.join(5 * T)
        self.commands.close()
        self.fanout.close()
        self.ctx.term()

    # --- the router's side -----------------------------------------------------------------

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.commands, zmq.POLLIN)
        poller.register(self.fanout, zmq.POLLIN)
        next_beat = 0.0
        beat = wire.encode(wire.RouterBeat(epoch=self.epoch))
        while not self.stopping.is_set():
            ready = dict(poller.poll(10))
            if self.commands in ready:
                while True:
                    try:
                        _identity, *rest = self.commands.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if len(rest) == 1:
                        self._command(rest[0])
            if self.fanout in ready:
                while True:  # subscription notices: nothing to do with them
                    try:
                        self.fanout.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
            now = time.monotonic()
            if now >= next_beat:
                self.fanout.send_multipart((wire.CLUSTER_TOPIC, b"", beat))
                next_beat = now + 0.25
            while True:
                try:
                    items, done = self.outbox.get_nowait()
                except queue.Empty:
                    break
                for kind, value in items:
                    self._item(kind, value)
                done.set()

    def _command(self, body: bytes) -> None:
        try:
            msg = wire.decode(body)
        except WireError:
            return
        if isinstance(msg, wire.Hello):
            self.hellos += 1
            self.seq = 0  # a new stream for every Hello, as the router does
            self._sequenced(wire.encode(wire.HelloAck(ref=msg.ref, epoch=self.epoch)))
        elif isinstance(msg, wire.Resync):
            if msg.last:
                self._sequenced(wire.encode(wire.Reply(ref=msg.ref)))
        elif isinstance(msg, wire.Membership):
            change = tuple(wire.SocketRooms(socket=s, rooms=msg.rooms) for s in msg.sockets)
            update = wire.MemberUpdate(
                joins=() if msg.leave else change, leaves=change if msg.leave else ()
            )
            self._sequenced(wire.encode(update))
            self._sequenced(wire.encode(wire.Reply(ref=msg.ref)))
        elif getattr(msg, "ref", 0):
            self._sequenced(wire.encode(wire.Reply(ref=msg.ref)))  # type: ignore[attr-defined]

    def _sequenced(self, body: bytes) -> None:
        self.seq += 1
        self.fanout.send_multipart((self.topic, wire.pack_seq(self.seq), body))

    def _item(self, kind: str, value: Any) -> None:
        if kind == "seq":
            self._sequenced(value)
        elif kind == "badseq":
            seq_frame, body = value
            self.fanout.send_multipart((self.topic, seq_frame, body))
        elif kind == "unseq":
            self.fanout.send_multipart((self.topic, b"", value))
        elif kind == "cluster":
            self.fanout.send_multipart((wire.CLUSTER_TOPIC, b"", value))
        elif kind == "raw":
            self.fanout.send_multipart(value)

    def deliver(self, room: str, marker: int) -> None:
        """A well-formed Deliver for ``room`` (queued behind anything sent before)."""
        body = wire.encode(
            wire.Deliver(rooms=(room,), event="control", data=_json(stamp(marker, "")))
        )
        self.publish([("seq", body)])


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _encoded(msg: wire.Message) -> bytes:
    try:
        return wire.encode(msg)
    except (ValueError, TypeError):
        return b"\x0a"


def items_for(victims: list[str], rooms: list[str]) -> st.SearchStrategy[Item]:
    """Stream items; Delivers and MemberUpdates often name this gateway's real sockets."""
    sockets = st.sampled_from(victims) | st.text(max_size=8)
    room_names = st.sampled_from(rooms) | st.sampled_from(victims) | st.text(max_size=8)
    rooms_of = st.lists(room_names, max_size=3).map(tuple)
    pairs = st.lists(st.builds(wire.SocketRooms, socket=sockets, rooms=rooms_of), max_size=3).map(
        tuple
    )
    data = st.sampled_from([b"null", b"{}", b'"x"', b"\xff\xfe", b"", b"[", b'{"t":1,"s":'])
    targeted = st.one_of(
        st.builds(wire.MemberUpdate, joins=pairs, leaves=pairs),
        st.builds(
            wire.Deliver,
            rooms=rooms_of,
            everyone=st.booleans(),
            event=st.text(max_size=10),
            data=data | st.binary(max_size=40),
            omit=st.lists(sockets, max_size=2).map(tuple),
            accepted_ns=uint64,
        ),
        st.builds(wire.Reply, ref=st.integers(0, 200), status=st.integers(0, 600)),
        st.builds(wire.HelloAck, ref=st.integers(0, 200), epoch=st.text(max_size=8)),
    )
    bodies = st.one_of(
        targeted.map(_encoded),
        wire_messages.map(_encoded),
        wire_messages.map(_encoded).map(lambda b: b[: len(b) // 2]),
        st.binary(max_size=60),
    )
    topic = wire.gateway_topic(GATEWAY_ID)
    odd = st.one_of(
        st.tuples(st.binary(max_size=12), bodies).map(lambda t: ("badseq", t)),
        st.tuples(uint64.map(wire.pack_seq), bodies).map(lambda t: ("badseq", t)),
        bodies.map(lambda b: ("unseq", b)),
        st.builds(wire.Reset, epoch=st.text(max_size=8)).map(_encoded).map(lambda b: ("unseq", b)),
        st.builds(wire.RouterBeat, epoch=st.text(max_size=8))
        .map(_encoded)
        .map(lambda b: ("cluster", b)),
        bodies.map(lambda b: ("cluster", b)),
        st.lists(st.binary(max_size=30), min_size=0, max_size=4).map(
            lambda frames: ("raw", [topic, *frames])
        ),
        st.lists(st.binary(max_size=30), min_size=1, max_size=4).map(
            lambda frames: ("raw", [wire.CLUSTER_TOPIC + frames[0], *frames[1:]])
        ),
    )

    @st.composite
    def items(draw: Any) -> Item:
        """Mostly well-sequenced messages (most of them targeted at real sockets)."""
        if draw(st.integers(0, 9)) < 7:
            return ("seq", mostly(draw, targeted.map(_encoded), bodies))
        return draw(odd)

    return items()


def disruptive(item: Item) -> bool:
    """Whether an item makes a ready gateway drop its stream and say Hello again (mirrors
    ``gateway.upstream``: a sequenced message that does not decode shows as a gap next)."""
    kind, value = item
    ours = wire.gateway_topic(GATEWAY_ID)
    if kind == "seq":
        topic, seq_frame, body = ours, wire.pack_seq(0), value
    elif kind == "badseq":
        topic, (seq_frame, body) = ours, value
    elif kind == "unseq":
        topic, seq_frame, body = ours, b"", value
    elif kind == "cluster":
        topic, seq_frame, body = wire.CLUSTER_TOPIC, b"", value
    else:
        if len(value) != 3:
            return False
        topic, seq_frame, body = value
    try:
        msg = wire.decode(body)
    except WireError:
        return kind == "seq"
    if isinstance(msg, wire.RouterBeat):
        return True  # a fuzzed epoch is never the fake router's
    if topic != ours:
        return False
    if isinstance(msg, wire.Reset):
        return True
    return kind != "seq" and len(seq_frame) == 8


def host_port(url: str) -> tuple[str, int]:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def test_gateway_sub_stream() -> None:
    fake = FakeRouter()
    fake.start()
    gateway: Proc | None = None
    clients: list[RawWs] = []
    try:
        gateway = gateway_proc(
            "gateway-fuzz", fake.info,
            "--gateway-id", GATEWAY_ID,
            "--heartbeat-interval", "0.5",
            "--router-timeout", "3",
            "--ping-interval", "600",
            "--ping-timeout", "500",
        )  # fmt: skip
        info = gateway.wait_ready()
        _fuzz(fake, gateway, info, clients)
        for c in clients:
            c.close()
        deadline_poll(
            lambda: _gauge(info) == 0,
            10 * T,
            message="gateway connections all closed",
        )
        watch = LogWatch([gateway], ALLOWED_ERRORS)
        gateway.stop()
        watch.check(alive=False)  # nothing bad logged while draining either
    finally:
        for c in clients:
            c.close()
        if gateway is not None:
            gateway.kill()
        fake.stop()


def _gauge(info: dict[str, Any]) -> float:
    status, text = http_get(info["internal"] + "/metrics")
    assert status == 200
    return Metrics(text).get("roomcast_gateway_connections")


def _ready(info: dict[str, Any]) -> bool:
    return http_get(info["public"] + "/readyz")[0] == 200


def _fuzz(fake: FakeRouter, gateway: Proc, info: dict[str, Any], clients: list[RawWs]) -> None:
    host, port = host_port(info["public"])

    def open_client(room: str) -> RawWs:
        ws = RawWs(host, port, "/ws")
        clients.append(ws)
        assert ws.wait_for(lambda: ws.has_text(b'"op":"welcome"'), 10 * T)
        ref = uuid.uuid4().hex
        ws.text(f'{{"op":"join","ref":"{ref}","room":"{room}"}}')
        assert ws.wait_for(lambda: ws.has_text(ref.encode()), 10 * T)
        return ws

    control_room = f"control-{uuid.uuid4().hex}"
    control = open_client(control_room)
    rooms = ["lobby", "ops", "fuzz"]
    victims = [open_client(rooms[i % len(rooms)]) for i in range(3)]
    victim_ids = [_welcome_id(v) for v in victims]
    watch = LogWatch([gateway], ALLOWED_ERRORS)
    markers = iter(range(1_000_000_000, 2_000_000_000))
    run = Run("gateway SUB stream")

    def control_check() -> None:
        """Once the gateway is ready again, a well-formed Deliver reaches the control client
        (everything published before it was read: it travels behind it on the same stream)."""
        deadline = time.monotonic() + 20 * T
        while True:
            deadline_poll(lambda: _ready(info), 20 * T, message="the gateway ready again")
            marker, hellos = next(markers), fake.hellos
            fake.deliver(control_room, marker)
            # Either it arrives, or the gateway found a gap just now and says Hello again.
            control.wait_for(
                lambda m=marker, h=hellos: m in control.seqs or fake.hellos != h,
                5 * T,
                step=0.005,
            )
            if marker in control.seqs:
                break
            assert time.monotonic() < deadline, (
                f"control never got a delivery (closed={control.closed})"
            )
        control.frames.clear()
        control.seqs.clear()

    def example(items: list[Item]) -> None:
        # What keeps the stream (garbage is counted and dropped) first, then at most one item
        # that breaks it (a gap, a Reset, another epoch): the gateway re-Hellos and resyncs.
        gentle = [i for i in items if not disruptive(i)]
        breaker = [i for i in items if disruptive(i)][:1]
        items = gentle + breaker
        control_check()  # the stream is in sync and the gateway ready before the batch
        fake.publish(items)
        for v in victims:  # keep their TCP windows open: whatever was pushed, read it
            while v.pump(0.001):
                pass
            v.frames.clear()
        run.cases += len(items)
        run.examples += 1
        watch.check()

    run.until_done(
        example,
        items=st.lists(items_for(victim_ids, rooms), min_size=BATCH_MIN, max_size=BATCH_MAX),
    )
    control_check()
    watch.check()
    m = Metrics(http_get(info["internal"] + "/metrics")[1])
    run.tally("hellos_answered", fake.hellos)
    run.tally("wire_errors", int(m.get("roomcast_gateway_wire_errors_total")))
    run.tally("lost_counted", int(m.get("roomcast_gateway_lost_total")))
    run.tally("delivers_handled", int(m.get("roomcast_gateway_deliveries_total")))
    run.report()


def _welcome_id(ws: RawWs) -> str:
    for op, payload in ws.frames:
        if op == 0x1 and b'"op":"welcome"' in payload:
            return str(json.loads(payload)["socket"])
    raise AssertionError("no welcome frame")
