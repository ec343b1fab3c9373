"""The router's end of every link: the gateways' sequenced streams, and every send.

Owns the table of gateways the router knows (each one's topic, sequence number and when it was
last heard) and every send on the commands ROUTER and the fanout XPUB. Sequence numbering and
drop accounting are in one place because the gateways rely on them: a gateway's sequence
advances even when its send fails, so the gateway sees the gap and resyncs; a full pipe is
counted, never waited for; a reply to a peer that went away is counted, never raised. Decides
nothing about membership or about whether the router serves: the shell (router/server.py)
tells it what to send, and when a gateway is known or forgotten.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import zmq

from roomcast.core import wire
from roomcast.core.errors import RoomcastError
from router.metrics import RouterMetrics

__all__ = [
    "GATEWAY_ID_PREFIX",
    "SESSION_SEPARATOR",
    "GatewayLink",
    "Links",
    "error_reply",
    "gateway_of",
]

# Gateways set their DEALER routing id to this prefix + their id + NUL + a random session
# chosen at each start, so the router knows which gateway (and topic) a command came from even
# when it has forgotten that gateway, and which process: the session is never sent to anyone
# else (the fanout shows gateway ids, never sessions), so a peer that learnt a gateway's id can
# neither take over its ZeroMQ pipe (ROUTER_HANDOVER) nor speak for it. Gateways of protocol
# 1.0/1.1 send no session (the identity then is the prefix + id alone).
GATEWAY_ID_PREFIX = b"gw:"
SESSION_SEPARATOR = b"\x00"
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)


@dataclasses.dataclass(slots=True)
class GatewayLink:
    topic: bytes
    seq: int = 0
    last_seen: float = 0.0
    identity: bytes = b""  # the routing id (id + session) of the process that said Hello


def gateway_of(identity: bytes) -> str | None:
    """The gateway id in a ROUTER identity, or None for an SDK client or worker."""
    if not identity.startswith(GATEWAY_ID_PREFIX):
        return None
    name = identity[len(GATEWAY_ID_PREFIX) :].split(SESSION_SEPARATOR, 1)[0]
    try:
        gateway = name.decode()
    except UnicodeDecodeError:
        return None
    return gateway or None


def error_reply(ref: int, err: RoomcastError) -> wire.Reply:
    # The body carries the error's fields (NoSuchSocket.socket, PayloadTooLarge.size, ...).
    body = json.dumps(err.as_body(), separators=(",", ":")).encode() if err.fields else b""
    return wire.Reply(ref=ref, status=err.status, error=err.code, message=err.message, body=body)


class Links:
    def __init__(
        self,
        commands: zmq.Socket[bytes],
        fanout: zmq.Socket[bytes],
        metrics: RouterMetrics,
        *,
        epoch: Callable[[], str],
    ) -> None:
        self.gateways: dict[str, GatewayLink] = {}
        self._held: dict[str, list[bytes]] | None = None  # per gateway, while a batch runs
        self._commands = commands
        self._fanout = fanout
        self._metrics = metrics
        self._epoch = epoch

    def add(self, gateway: str, identity: bytes, now: float) -> bool:
        """(Re)start a gateway's stream at sequence 0 (its Hello); whether we knew it already."""
        known = gateway in self.gateways
        if known and self._held:
            self._send_held(gateway)  # the old stream's end goes out under its own numbers
        self.gateways[gateway] = GatewayLink(wire.gateway_topic(gateway), 0, now, identity)
        return known

    def direct(self, identity: bytes, msg: wire.Message) -> None:
        """Answer a peer over the commands socket itself (never on a gateway's topic)."""
        try:
            self._commands.send_multipart((identity, wire.encode(msg)), zmq.NOBLOCK)
        except zmq.ZMQError:
            self._metrics.command_errors.labels("reply_dropped").inc()

    # --- a gateway's stream: one sequenced message per batch of commands --------------------

    def hold(self) -> None:
        """From now on, keep what each gateway is sent until :meth:`release`: one batch of
        commands then costs each gateway one ZeroMQ message (a Bundle), not one per delivery."""
        self._held = {}

    def release(self) -> None:
        """Send what was held, one message per gateway, in the order it was given."""
        held = self._held
        self._held = None
        if held:
            for gateway in held:
                self._flush(gateway, held[gateway])

    def _send_held(self, gateway: str) -> None:
        assert self._held is not None
        bodies = self._held.pop(gateway, None)
        if bodies:
            self._flush(gateway, bodies)

    def _flush(self, gateway: str, bodies: list[bytes]) -> None:
        if len(bodies) == 1:
            self._send(gateway, bodies[0])
        else:
            bundle = wire.encode(wire.Bundle(bodies=tuple(bodies)))
            self._send(gateway, bundle, messages=len(bodies))

    def to_gateway(self, gateway: str, body: bytes) -> bool:
        """Send (or, while held, queue) one message on a gateway's stream; False if the gateway
        is unknown or, sent at once, the send was dropped at the high-water mark."""
        if gateway not in self.gateways:
            return False
        held = self._held
        if held is None:
            return self._send(gateway, body)
        bodies = held.get(gateway)
        if bodies is None:
            held[gateway] = [body]
        else:
            bodies.append(body)
        return True

    def _send(self, gateway: str, body: bytes, *, messages: int = 1) -> bool:
        """Send one sequenced message (``messages``: how many a bundle holds, for the drop
        count: the gateway sees one gap, the router counts every message it lost)."""
        link = self.gateways.get(gateway)
        if link is None:
            return False  # forgotten since it was held (expired, reset, said goodbye)
        # The sequence advances even when the send fails, so the gateway sees the gap.
        link.seq += 1
        send = self._fanout.send
        try:
            # Frame by frame with int flags: send_multipart's loop and the enum arithmetic on
            # its flags cost more than the sends on this path (one call per target gateway).
            # A message is atomic in ZeroMQ: once its first frame is taken, the rest are too.
            send(link.topic, _MORE_NOBLOCK)
            send(wire.pack_seq(link.seq), _MORE_NOBLOCK)
            send(body, _NOBLOCK)
        except zmq.Again:
            self._metrics.fanout_dropped.inc(messages)
            return False
        return True

    def reply(self, identity: bytes, gateway: str | None, msg: wire.Message) -> None:
        body = wire.encode(msg)
        if gateway is not None:
            self.to_gateway(gateway, body)
            return
        try:
            self._commands.send_multipart((identity, body), zmq.NOBLOCK)
        except zmq.ZMQError:
            # ROUTER drops replies to peers that went away or are over their HWM.
            self._metrics.command_errors.labels("reply_dropped").inc()

    def to_worker(self, worker: bytes, body: bytes) -> None:
        """Send a request; ``zmq.ZMQError`` when the worker is gone (ROUTER_MANDATORY) or full."""
        self._commands.send_multipart((worker, body), zmq.NOBLOCK)

    def reset(self, gateway: str) -> None:
        """Tell a gateway we do not know it (expired, or we restarted): it must resync."""
        self._metrics.resets.inc()
        self.unsequenced(gateway, wire.Reset(epoch=self._epoch()))

    def unsequenced(self, gateway: str, msg: wire.Message) -> None:
        """A message for a gateway that has no sequenced stream with us (yet)."""
        if self._held:
            self._send_held(gateway)  # whatever its stream held goes first
        body = wire.encode(msg)
        try:
            self._fanout.send_multipart((wire.gateway_topic(gateway), b"", body), zmq.NOBLOCK)
        except zmq.Again:
            self._metrics.fanout_dropped.inc()

    def beat(self) -> None:
        """The cluster-wide RouterBeat: who serves, and in which epoch."""
        beat = wire.encode(wire.RouterBeat(epoch=self._epoch()))
        try:
            self._fanout.send_multipart((wire.CLUSTER_TOPIC, b"", beat), zmq.NOBLOCK)
        except zmq.Again:
            self._metrics.fanout_dropped.inc()
