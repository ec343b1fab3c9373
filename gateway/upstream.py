"""The gateway's link to the router: DEALER for commands up, SUB for everything down.

A small state machine: ``hello`` (say Hello every ``hello_retry_s`` until the ack for the latest
Hello arrives on our topic: subscriptions take a moment to propagate) -> ``resync`` (replay local
membership in batches) -> ``ready``. A new router epoch, a ``Reset``, a sequence gap or silence
longer than ``router_timeout_s`` sends the link back to ``hello``; commands in flight then fail
with ``RouterUnavailable`` (never replayed: the DEALER uses ``IMMEDIATE`` so nothing queues
towards a dead router either).

With a primary/backup pair (``--router``/``--fanout`` list both), a DEALER and a SUB are
connected to each router all the time (so the other's subscriptions are in place before a
failover), but commands go to one router only, and only its stream is read; the other's
yields nothing but its ``RouterBeat``, which only a serving router sends. In ``hello`` the
gateway turns to the other router when the one it greets refuses (``router_passive``), stays
unreachable for two Hellos, or does not answer within ``hello_timeout_s``, and at once to one
whose beats are newer than the greeted one's (it serves). In ``ready``, a heartbeat that cannot
be sent (nothing connected: the router's process is gone) sends the link back to ``hello``.

The DEALER's routing id is ``gw:`` + the gateway id + NUL + a session chosen at each start, and
no one but the router ever sees it: another process that learnt our id (from the fanout) cannot
take our pipe over or speak for us, and a second gateway started with the same ``--gateway-id``
is refused (``conflict``, logged and counted) until this one leaves. Routers that say so in
their HelloAck answer every heartbeat; when those answers stop for ``router_timeout_s`` while
the router itself still beats, our commands no longer reach it: the link goes back to
``hello`` (not ready) and greets it again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import zmq

from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics
from roomcast.core import wire
from roomcast.core.errors import (
    Conflict,
    RouterPassive,
    RouterUnavailable,
    Timeout,
    WireError,
    error_from_reply,
)
from roomcast.curve import client_options
from roomcast.zmqio import Batch, BatchReader

__all__ = ["Upstream", "UpstreamHandler"]

log = logging.getLogger("roomcast.gateway.upstream")

_GATEWAY_ID_PREFIX = b"gw:"  # the router derives our topic from this routing id
_RESYNC_BATCH_BYTES = 1024 * 1024
_MAX_BEATS_IN_FLIGHT = 64  # numbered heartbeats awaiting their answer (older ones forgotten)
SUB_BATCH = 64
_MAX_PLAUSIBLE_GAP = 10_000_000  # far above any high-water mark a router is given
_GOODBYE_LINGER_MS = 1000


class UpstreamHandler(Protocol):
    def on_deliver(self, msg: wire.Deliver, *, alone: bool) -> None: ...
    def on_member_update(self, msg: wire.MemberUpdate) -> None: ...
    def on_batch_end(self) -> None: ...
    def on_link(self, ready: bool) -> None: ...
    def resync_state(self) -> Iterable[wire.SocketRooms]: ...


class Upstream:
    def __init__(
        self,
        config: GatewayConfig,
        ctx: zmq.Context[zmq.Socket[bytes]],
        metrics: GatewayMetrics,
        handler: UpstreamHandler,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.handler = handler
        self.node_id = config.gateway_id or secrets.token_hex(6)
        self.session = secrets.token_hex(16)  # this process's; see the module docstring
        self.state = "hello"
        self.epoch = ""
        self.link_lost_at = time.monotonic()
        self._last_beat = 0.0
        self._hello_ref = 0
        self._refused = False  # logged once per refusal streak, not per Hello retry
        self._resync_ref = 0
        self._expected_seq = 0
        # Refs start at a random point: a second process with our id (refused, but subscribed to
        # our topic) must not take our HelloAck or replies for its own.
        self._next_ref = secrets.randbits(48)
        self._pending: dict[int, asyncio.Future[wire.Reply]] = {}
        self._tasks: list[asyncio.Task[None]] = []

        self._topic = wire.gateway_topic(self.node_id)
        self._curve = client_options(config.curve_key, config.curve_server_key)
        # One link (DEALER + SUB) per router; the attributes below are the current router's.
        self._links = [self._link(ctx, i) for i in range(len(config.routers))]
        self._several = len(self._links) > 1
        self._current = 0
        self._dealer, self._dealer_reader, self._sub, self._reader = self._links[0]
        self._beats = [0.0] * len(self._links)  # when each router last beat (it serves)
        self._refused_at = [0.0] * len(self._links)  # when each last refused us (standing by)
        self._trying_since: float | None = None  # greeting the current router since
        self._hello_failures = 0  # Hellos in a row that found nothing connected
        self._conflict = False  # our id is held by another live process (logged once a streak)
        self._beat_acks = False  # the router answers our numbered heartbeats
        # Numbered heartbeats awaiting their answer -> when each was sent, oldest first.
        self._beat_refs: dict[int, float] = {}

    def _link(
        self, ctx: zmq.Context[zmq.Socket[bytes]], index: int
    ) -> tuple[zmq.Socket[bytes], BatchReader, zmq.Socket[bytes], BatchReader]:
        dealer = ctx.socket(zmq.DEALER)
        self._curve.apply(dealer)
        dealer.setsockopt(
            zmq.ROUTING_ID,
            _GATEWAY_ID_PREFIX + self.node_id.encode() + b"\x00" + self.session.encode(),
        )
        dealer.setsockopt(zmq.IMMEDIATE, 1)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.SNDHWM, 200_000)
        sub = ctx.socket(zmq.SUB)
        self._curve.apply(sub)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 200_000)
        sub.setsockopt(zmq.SUBSCRIBE, self._topic)
        sub.setsockopt(zmq.SUBSCRIBE, wire.CLUSTER_TOPIC)
        # Small batches: one loop turn handles at most 64 deliveries (each to every local member),
        # so timers (heartbeats) and client I/O run between turns even under a large backlog.
        reader = BatchReader(
            sub, lambda batch: self._on_link_batch(index, batch), batch_size=SUB_BATCH
        )
        # Replies come on our topic; the DEALER only hears why a Hello was refused before we
        # had a stream (another process holds our id).
        dealer_reader = BatchReader(dealer, lambda batch: self._on_direct(index, batch))
        return dealer, dealer_reader, sub, reader

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        for (dealer, dealer_reader, sub, reader), router, fanout in zip(
            self._links, self.config.routers, self.config.fanouts, strict=True
        ):
            sub.connect(fanout)
            dealer.connect(router)
            reader.start()
            dealer_reader.start()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._hello_loop()), loop.create_task(self._beat_loop())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._say_goodbye()
        for _dealer, dealer_reader, _sub, reader in self._links:
            reader.stop()
            dealer_reader.stop()
        self._fail_pending()
        for dealer, _dealer_reader, sub, _reader in self._links:
            dealer.close()
            sub.close()

    def _say_goodbye(self) -> None:
        """Tell the router we leave on purpose (after the drain), so it drops our sockets now
        and does not take us for crashed when our heartbeats stop."""
        if self.state == "hello":
            return  # no router holds a session of ours: nobody to tell
        # The DEALER drops what is queued when it closes (LINGER 0, so that a dead router
        # never holds up a stop): give this one message a bounded moment to leave.
        self._dealer.setsockopt(zmq.LINGER, _GOODBYE_LINGER_MS)
        body = wire.encode(wire.Goodbye(node_id=self.node_id, role=wire.Role.GATEWAY))
        try:
            self._dealer.send(body, zmq.NOBLOCK)
        except zmq.ZMQError:
            log.debug("goodbye not sent: the router is not reachable")

    # --- commands --------------------------------------------------------------------------

    def new_ref(self) -> int:
        self._next_ref += 1
        return self._next_ref

    def send(self, msg: wire.Message) -> None:
        """Fire-and-forget command; raises RouterUnavailable if it cannot leave now."""
        try:
            self._dealer.send(wire.encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            self.metrics.commands_dropped.inc()
            raise RouterUnavailable("router unavailable") from None
        self._dealer_reader.kick()

    async def call(
        self, make: Callable[[int], wire.Message], *, timeout_s: float | None = None
    ) -> wire.Reply:
        """Send a command built with a fresh ref and wait for the router's reply."""
        if self.state != "ready":
            raise RouterUnavailable("router unavailable")
        ref = self.new_ref()
        fut: asyncio.Future[wire.Reply] = asyncio.get_running_loop().create_future()
        self._pending[ref] = fut
        try:
            self.send(make(ref))
            reply = await asyncio.wait_for(fut, timeout_s or self.config.command_timeout_s)
        except TimeoutError:
            raise Timeout("router did not answer in time") from None
        finally:
            self._pending.pop(ref, None)
        # An error code marks a roomcast error; an action's own 4xx/5xx response has none.
        if reply.error:
            raise error_from_reply(reply.status, reply.error, reply.message, reply.body)
        return reply

    # --- the stream from the router --------------------------------------------------------

    def _on_batch(self, batch: Batch) -> None:
        now = time.monotonic()
        # Anything from the router proves it alive. RouterBeats wait in the same queue as
        # deliveries, so under a backlog the beat alone would arrive late and a busy but
        # healthy link would be reset (dropping the backlog).
        self._last_beat = now
        alone = len(batch) == 1  # a delivery with nothing to coalesce with: write it at once
        for parts in batch:
            try:
                topic, seq_frame, body = wire.split_frames(parts)
                msg = wire.decode(body)
                self._on_message(topic, seq_frame, msg, now, alone)
            except WireError:
                self.metrics.wire_errors.inc()
        self.handler.on_batch_end()

    def _on_message(
        self, topic: bytes, seq_frame: bytes, msg: wire.Message, now: float, alone: bool
    ) -> None:
        if isinstance(msg, wire.RouterBeat):
            self._last_beat = now
            if self.state != "hello" and msg.epoch != self.epoch:
                log.warning("router epoch changed (%s -> %s): resyncing", self.epoch, msg.epoch)
                self._restart("new router epoch")
            return
        if topic != self._topic:
            return
        if isinstance(msg, wire.Reset):
            if self.state != "hello":
                self._restart("router reset")
            return
        if self.state == "hello":
            parts = [wire.decode(b) for b in msg.bodies] if isinstance(msg, wire.Bundle) else [msg]
            for part in parts:
                if self.state != "hello":
                    # The rest of a bundle that began with our HelloAck: the new stream.
                    self._on_stream(part, alone=False)
                elif isinstance(part, wire.Deliver) and seq_frame:
                    # The rest of a broken stream (after a gap, a Reset or silence), discarded
                    # until the resync: these never reach a client, so they count as lost too
                    # (unless the stream is another process's, which holds our id).
                    if not self._conflict:
                        self.metrics.lost.inc()
                else:
                    self._on_hello_answer(part, seq_frame, now)
            return
        seq = wire.unpack_seq(seq_frame)
        if seq != self._expected_seq:
            if seq < self._expected_seq:
                return  # a duplicate from before our last Hello
            gap = seq - self._expected_seq
            if gap > _MAX_PLAUSIBLE_GAP:
                # Not a gap a router can make (its queues hold far less): a corrupt or foreign
                # frame. Count one loss rather than poisoning the counter, and resync anyway.
                log.warning("implausible sequence jump of %d from the router: resyncing", gap)
                gap = 1
            else:
                log.warning("lost %d messages from the router: resyncing", gap)
            self.metrics.lost.inc(gap)
            self._restart("sequence gap")
            return
        self._expected_seq = seq + 1
        if isinstance(msg, wire.Bundle):
            # What the router sent us while handling one batch of commands, in order.
            for body in msg.bodies:
                self._on_stream(wire.decode(body), alone=False)
        else:
            self._on_stream(msg, alone=alone)

    def _on_stream(self, msg: wire.Message, *, alone: bool) -> None:
        if isinstance(msg, wire.Deliver):
            self.handler.on_deliver(msg, alone=alone)
        elif isinstance(msg, wire.MemberUpdate):
            self.handler.on_member_update(msg)
        elif isinstance(msg, wire.Reply):
            self._on_reply(msg)

    def _on_reply(self, reply: wire.Reply) -> None:
        if reply.ref in self._beat_refs:
            # Answers come in order: this one also stands for any older one still listed.
            for ref in list(self._beat_refs):
                del self._beat_refs[ref]
                if ref == reply.ref:
                    break
            return
        if reply.ref == self._resync_ref and self.state == "resync":
            self.state = "ready"
            self.metrics.resyncs.inc()
            log.info("resynced with router epoch %s", self.epoch)
            self.handler.on_link(True)
            return
        fut = self._pending.pop(reply.ref, None)
        if fut is not None and not fut.done():
            fut.set_result(reply)

    def _on_hello_answer(self, msg: wire.Message, seq_frame: bytes, now: float) -> None:
        if getattr(msg, "ref", None) != self._hello_ref:
            return  # an answer to an older Hello, or stream traffic from before it
        if isinstance(msg, wire.Reply) and msg.error == RouterPassive.code and self._several:
            self._refused_at[self._current] = now
            self._switch(self._next(), f"{msg.message or 'it is standing by'}")
            return
        if isinstance(msg, wire.Reply) and msg.error:
            if not self._refused:
                self._refused = True
                self.metrics.refused.inc()
                log.error("router refused this gateway: %s", msg.message)
            return
        if isinstance(msg, wire.HelloAck):
            if not wire.compatible(msg.protocol_version):
                if not self._refused:
                    self._refused = True
                    self.metrics.refused.inc()
                    log.error(
                        "router speaks protocol %s, incompatible with this gateway's %s",
                        wire.version_name(msg.protocol_version),
                        wire.version_name(wire.PROTOCOL_VERSION),
                    )
                return
            self._refused = False
            if self._conflict:
                self._conflict = False
                log.info("gateway id %s is free again: linking", self.node_id)
            self._accept(msg, wire.unpack_seq(seq_frame), now)

    def _on_direct(self, index: int, batch: Batch) -> None:
        """A router answered a Hello on the DEALER: another live process holds our id."""
        for parts in batch:
            try:
                msg = wire.decode(parts[-1])
            except WireError:
                self.metrics.wire_errors.inc()
                continue
            if (
                index != self._current
                or self.state != "hello"
                or not isinstance(msg, wire.Reply)
                or msg.ref != self._hello_ref
                or msg.error != Conflict.code
            ):
                continue
            self.metrics.id_conflicts.inc()
            if not self._conflict:
                self._conflict = True
                log.error(
                    "router refused gateway id %s: %s (is a second gateway running with the "
                    "same --gateway-id?); not ready, retrying until the other one leaves",
                    self.node_id,
                    msg.message,
                )

    def _accept(self, ack: wire.HelloAck, seq: int, now: float) -> None:
        self._trying_since = None
        if self._several:
            router = self.config.routers[self._current]
            log.info("linked to router %s (epoch %s)", router, ack.epoch)
        self.epoch = ack.epoch
        self._expected_seq = seq + 1
        self._last_beat = now
        self._beat_acks = ack.heartbeat_acks
        self._beat_refs.clear()
        self.state = "resync"
        batch: list[wire.SocketRooms] = []
        size, nbytes = self.config.resync_batch_sockets, 0
        for item in self.handler.resync_state():
            batch.append(item)
            nbytes += len(item.socket) + len(item.user) + len(item.meta) + 8
            nbytes += sum(len(room) + 2 for room in item.rooms)
            # Bounded in bytes too: the router's commands port refuses messages over
            # --max-message-bytes (16 MiB), and sockets in many long rooms add up.
            if len(batch) >= size or nbytes >= _RESYNC_BATCH_BYTES:
                self._send_quiet(wire.Resync(sockets=tuple(batch)))
                batch, nbytes = [], 0
        self._resync_ref = self.new_ref()
        self._send_quiet(wire.Resync(ref=self._resync_ref, sockets=tuple(batch), last=True))

    def _send_quiet(self, msg: wire.Message) -> None:
        try:
            self.send(msg)
        except RouterUnavailable:
            self._restart("router went away during resync")

    def _restart(self, why: str) -> None:
        was_ready = self.state == "ready"
        if self.state != "hello":
            self.link_lost_at = time.monotonic()
        self.state = "hello"
        self._fail_pending()
        if was_ready:
            log.info("router link down (%s)", why)
            self.handler.on_link(False)
        self._say_hello()

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(RouterUnavailable("router link reset"))

    def _heartbeat(self) -> wire.Heartbeat:
        if not self._beat_acks:
            return wire.Heartbeat(node_id=self.node_id)
        ref = self.new_ref()
        self._beat_refs[ref] = time.monotonic()
        if len(self._beat_refs) > _MAX_BEATS_IN_FLIGHT:
            del self._beat_refs[next(iter(self._beat_refs))]
        return wire.Heartbeat(node_id=self.node_id, ref=ref)

    def _say_hello(self) -> None:
        self._hello_ref = self.new_ref()
        msg = wire.Hello(ref=self._hello_ref, node_id=self.node_id, role=wire.Role.GATEWAY)
        try:
            self.send(msg)
        except RouterUnavailable:
            self._hello_failures += 1  # retried by the hello loop
        else:
            self._hello_failures = 0

    # --- a primary/backup pair -------------------------------------------------------------

    def _on_link_batch(self, index: int, batch: Batch) -> None:
        if self._several:
            for parts in batch:
                if parts and parts[0] == wire.CLUSTER_TOPIC:
                    self._beats[index] = time.monotonic()  # only a serving router beats
        if index == self._current:
            self._on_batch(batch)

    def _next(self) -> int:
        return (self._current + 1) % len(self._links)

    def _pick_router(self) -> None:
        """In hello, with several routers: keep greeting this one, or turn to another."""
        if not self._several:
            return
        now = time.monotonic()
        if self._trying_since is None:
            self._trying_since = now
        beats, cur = self._beats, self._current
        best = max(range(len(beats)), key=beats.__getitem__)
        if best != cur and beats[best] > max(beats[cur], self._refused_at[best]):
            self._switch(best, "it serves (its heartbeats are the newest)")
        elif self._hello_failures >= 2:
            self._switch(self._next(), "nothing connected")
        elif now - self._trying_since >= self.config.hello_timeout_s:
            self._switch(self._next(), f"no answer within {self.config.hello_timeout_s:g}s")

    def _switch(self, index: int, why: str) -> None:
        log.info(
            "turning from router %s to %s (%s)",
            self.config.routers[self._current],
            self.config.routers[index],
            why,
        )
        self.metrics.router_switches.inc()
        self._current = index
        self._dealer, self._dealer_reader, self._sub, self._reader = self._links[index]
        self._trying_since = time.monotonic()
        self._hello_failures = 0
        self._hello_ref = self.new_ref()  # answers to Hellos sent to the other one are stale

    # --- timers ----------------------------------------------------------------------------

    async def _hello_loop(self) -> None:
        while True:
            if self.state == "hello":
                self._pick_router()
                self._say_hello()
            await asyncio.sleep(self.config.hello_retry_s)

    async def _beat_loop(self) -> None:
        interval = self.config.heartbeat_interval_s
        woke = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now, slept = time.monotonic(), time.monotonic() - woke
            woke = now
            if self.state == "hello":
                continue
            if slept > interval + self.config.router_timeout_s:
                # This process was frozen (SIGSTOP, a VM pause, a long stall of the loop): the
                # router's stream is waiting unread, beats and any gap included. Read it before
                # judging the router silent, or a gap in it would go uncounted. Heartbeats sent
                # before the stall are judged no more: the next ones will be.
                self._beat_refs.clear()
                continue
            if now - self._last_beat > self.config.router_timeout_s:
                self.metrics.router_timeouts.inc()
                log.warning("no router heartbeat for %.1fs", self.config.router_timeout_s)
                self._restart("router silent")
                continue
            waiting = now - next(iter(self._beat_refs.values()), now)
            if waiting > self.config.router_timeout_s:
                # The router beats (it lives) but no longer hears us: our pipe to it is gone.
                self.metrics.heartbeats_unanswered.inc()
                log.warning(
                    "the router has not answered a heartbeat for %.1fs: saying Hello again",
                    waiting,
                )
                self._restart("heartbeats unanswered")
                continue
            try:
                self.send(self._heartbeat())
            except RouterUnavailable:
                if self._several:  # nothing connected: that router's process is gone
                    self._restart("router connection lost")
