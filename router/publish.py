"""Publishing: a broadcast's way from the command to every gateway with members, and back.

Owns what a publish becomes: the gateways it goes to (those with members of its rooms, or all
for ``everyone``), the one ``Deliver`` each of them gets, the history offsets it records, the
receipt counts and confirmations asked for (router.receipts) and the reply to the publisher,
now or when the last gateway confirmed. Presence events (router.presence) take the same path,
so they are published here too. The topology decides who is a member; this module never
changes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable

from roomcast.core import wire
from roomcast.core.errors import BadRequest
from roomcast.core.limits import DEFAULT_MAX_PUBLISH_BYTES, check_publish_size
from roomcast.core.rooms import validate_rooms
from roomcast.core.topology import Topology
from router.history import History
from router.links import Links
from router.metrics import RouterMetrics
from router.presence import PRESENCE_EVENT, PresenceBuffer, encode_event
from router.receipts import Confirmations, Pending

__all__ = ["Publisher"]


class Publisher:
    """Publishes to the gateways through ``links``; ``history()`` is the serving period's."""

    def __init__(
        self,
        topology: Topology,
        links: Links,
        metrics: RouterMetrics,
        *,
        history: Callable[[], History],
        max_publish_bytes: int = DEFAULT_MAX_PUBLISH_BYTES,
    ) -> None:
        self._max_publish_bytes = max_publish_bytes
        self._topology = topology
        self._links = links
        self._metrics = metrics
        self._history = history
        self._confirms = Confirmations()
        # Presence transitions since the last flush (the shell adds them, a timer flushes).
        self.presence = PresenceBuffer()

    def publish(
        self, identity: bytes, gateway: str | None, msg: wire.Publish, *, record: bool = True
    ) -> None:
        if record:  # a client's publish (presence events are ours, and small)
            check_publish_size(msg.event, msg.data, self._max_publish_bytes)
        offsets: tuple[wire.RoomOffset, ...] = ()
        if msg.everyone:
            targets: Iterable[str] = list(self._links.gateways)
        else:
            if not msg.rooms:
                raise BadRequest("broadcast needs at least one room")
            validate_rooms(msg.rooms)
            targets = self._topology.route(msg.rooms)
            history = self._history()
            if record and history.patterns:
                now = time.monotonic()
                offsets = tuple(
                    wire.RoomOffset(room=r, epoch=e, offset=o)
                    for r, e, o in history.append(msg.rooms, msg.event, msg.data, now)
                )
        reply = wire.Reply(ref=msg.ref)
        if msg.receipt or msg.confirm:
            # Only when asked: an exact count walks the rooms' members.
            sockets, omitted = self._topology.receipt(msg.rooms, msg.omit, everyone=msg.everyone)
            reply = dataclasses.replace(reply, sockets=sockets, omitted=omitted)
        confirm = 0
        if msg.confirm and msg.ref:
            targets = list(targets)
            pending = Pending(identity, gateway, reply, set(targets))
            confirm = self._confirms.open(pending)
            timeout = (msg.confirm_timeout_ms or 5000) / 1000
            asyncio.get_running_loop().call_later(timeout, self._confirm_timeout, confirm)
        body = wire.encode(
            wire.Deliver(
                rooms=msg.rooms,
                everyone=msg.everyone,
                event=msg.event,
                data=msg.data,
                omit=msg.omit,
                accepted_ns=time.time_ns(),
                confirm=confirm,
                offsets=offsets,
            )
        )
        sent = 0
        for gw in targets:
            if self._links.to_gateway(gw, body):
                sent += 1
        self._metrics.publishes.inc()
        self._metrics.deliveries.inc(sent)
        self._metrics.fanout_bytes.inc(sent * len(body))
        if confirm:
            pending.reply = dataclasses.replace(pending.reply, gateways=sent)
            if not pending.waiting:
                self._confirm_timeout(confirm)  # nobody to wait for
        elif msg.ref:
            # Built anew, not with dataclasses.replace(): this runs once per publish.
            done = wire.Reply(
                ref=msg.ref, sockets=reply.sockets, omitted=reply.omitted, gateways=sent
            )
            self._links.reply(identity, gateway, done)

    def delivered(self, msg: wire.Delivered, gateway: str) -> None:
        """A gateway queued a confirmed publish for its sockets: answer once all of them did."""
        done = self._confirms.delivered(msg.confirm, gateway, msg.sockets)
        if done is not None:
            answer = Confirmations.answer(done, complete=True)
            self._links.reply(done.identity, done.gateway, answer)

    def _confirm_timeout(self, confirm: int) -> None:
        pending = self._confirms.expire(confirm)
        if pending is not None:
            answer = Confirmations.answer(pending, complete=not pending.waiting)
            self._links.reply(pending.identity, pending.gateway, answer)

    def publish_presence(self) -> None:
        """One coalesced presence event per room that changed since the last flush."""
        topo = self._topology
        for room, (joined, left) in self.presence.flush().items():
            data = encode_event(room, joined, left, topo.user_meta)
            presence = wire.Publish(rooms=(room,), event=PRESENCE_EVENT, data=data)
            self.publish(b"", None, presence, record=False)
            self._metrics.presence_events.inc()
