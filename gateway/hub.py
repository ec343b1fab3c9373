"""The gateway's delivery hub: connections, local membership, and the router link's handler.

Receives the router's stream through :class:`gateway.upstream.Upstream`, frames each delivery
once per client protocol (never per socket) and queues the same bytes for every recipient; at
the end of each router batch it writes every dirty connection's queue in one stream write.
Client ops from any protocol run through :meth:`Gateway.run_op`, so /ws and /socket.io/ share
the router commands, the room policy and the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import zmq

from gateway.config import GatewayConfig
from gateway.connection import Outlet, Peer, fan_out, write_queued
from gateway.membership import LocalRooms
from gateway.metrics import GatewayMetrics
from gateway.plainws import dumps
from gateway.policy import ANONYMOUS, Identity, RoomPolicy
from gateway.requester import context_json
from gateway.tokens import TokenError, TokenVerifier
from gateway.upstream import Upstream
from roomcast.core import wire
from roomcast.core.closecodes import CloseCode
from roomcast.core.errors import ActionFailed, Forbidden, RoomcastError

__all__ = ["Gateway"]

log = logging.getLogger("roomcast.gateway")

# Handshake headers a connect hook sees (Sails' beforeConnect gets the handshake too).
_HOOK_HEADERS = frozenset({"origin", "user-agent", "cookie", "authorization", "x-forwarded-for"})


class Gateway:
    def __init__(
        self, config: GatewayConfig, metrics: GatewayMetrics, ctx: zmq.Context[zmq.Socket[bytes]]
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.local = LocalRooms()
        # Presence identity (user, metadata JSON) of local sockets that have one: from their
        # token, or set by a backend; replayed to the router on resync.
        self.identities: dict[str, tuple[str, bytes]] = {}
        # Requester context (gateway/requester.py) of every local socket, for the router.
        self.contexts: dict[str, bytes] = {}
        self.conns: dict[str, Peer] = {}
        # --max-connections as the open-files limit allows, and the public connections still
        # in their HTTP exchange (this one included): both set by the process's edge.
        self.connection_cap = config.max_connections
        self.pending_connections: Callable[[], int] = lambda: 0
        self.draining = False
        self.outlets: dict[str, Outlet] = {}  # the delivery loop's view of self.conns
        self._dirty: list[Outlet] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.upstream = Upstream(config, ctx, metrics, self)
        self._tasks: set[asyncio.Task[None]] = set()
        self._registering: set[str] = set()  # sockets whose SocketOpen awaits its reply
        self._opening: dict[str, Peer] = {}  # opened this loop turn, registered at its end
        self._timers: list[asyncio.Task[None]] = []
        self.tickers: list[Callable[[float], None]] = []  # per-second protocol timers
        self.tokens = TokenVerifier(
            secrets=config.token_secrets,
            public_keys=config.token_public_keys,
            audience=config.token_audience,
            issuer=config.token_issuer,
            leeway_s=config.token_leeway_s,
        )
        everything = ("*",) if config.development else ()
        self.policy = RoomPolicy(
            join=config.client_join or everything, publish=config.client_publish or everything
        )

    @property
    def ready(self) -> bool:
        return self.upstream.ready and not self.draining

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.upstream.start()
        self._timers = [self._loop.create_task(self._tick())]

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        await self.upstream.stop()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a task, holding a reference until it is done (the loop keeps only weak ones)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- connections -----------------------------------------------------------------------

    def attach(self, conn: Peer) -> None:
        self.conns[conn.sid] = conn
        self.outlets[conn.sid] = conn.queue
        self.local.add_socket(conn.sid)
        if conn.identity.user:
            self.identities[conn.sid] = (conn.identity.user, b"")
        self.contexts[conn.sid] = self._context(conn)
        self.metrics.connections.inc()
        self.metrics.connections_opened.inc()
        # A socket still owing its token (Socket.IO v4 sends it with CONNECT) is not registered
        # with the router until identify(): the cluster never sees an unauthenticated socket.
        if self.upstream.ready and conn.auth_error is None:
            self._register_soon(conn)

    def _register_soon(self, conn: Peer) -> None:
        """Register at the end of this loop turn together with every connection opened in it:
        an avalanche of connects costs the router one SocketOpen per turn, not one each."""
        self._opening[conn.sid] = conn
        if len(self._opening) == 1:
            asyncio.get_running_loop().call_soon(self._open_batch)

    def _open_batch(self) -> None:
        conns, self._opening = self._opening, {}
        self.spawn(self._register([c for sid, c in conns.items() if sid in self.conns]))

    def identify(self, conn: Peer) -> None:
        """A connection proved its identity after attach (Socket.IO CONNECT auth)."""
        user = conn.identity.user
        if user:
            self.identities[conn.sid] = (user, b"")
        self.contexts[conn.sid] = self._context(conn)
        if conn.sid in self._registering or conn.sid in self._opening:
            return  # opened as anonymous just now: _register sends the identity after it
        if conn.registered:
            if user:
                # Registered as anonymous: welcomed (its CONNECT answered) only once the router
                # has the identity, so the client is in presence by the time it is told.
                conn.registered = False
                self.spawn(self._identify_registered(conn, user))
        elif conn.hooking:
            if user:  # the router has the socket; the connect hook welcomes it
                self.spawn(self._set_presence(conn.sid, user))
        elif self.upstream.ready:
            self._register_soon(conn)

    async def _identify_registered(self, conn: Peer, user: str) -> None:
        await self._set_presence(conn.sid, user)
        # Unless a link reset registered it again meanwhile (with its identity).
        live = self.conns.get(conn.sid)  # the same socket, maybe on its upgraded transport
        if live is not None and not (live.registered or live.hooking):
            live.on_registered()

    def _context(self, conn: Peer) -> bytes:
        return context_json(
            conn.identity.claims, conn.request.headers.get_all(), self.config.handshake_headers
        )

    async def _set_presence(self, sid: str, user: str) -> None:
        context = self.contexts.get(sid, b"")
        try:
            await self.upstream.call(
                lambda ref: wire.SetPresence(ref=ref, socket=sid, user=user, context=context)
            )
        except RoomcastError as err:
            log.debug("presence identity not recorded: %s", err.code)

    def count_disconnect(self, reason: str) -> None:
        self.metrics.disconnects.labels(reason).inc()

    def detach(self, conn: Peer) -> None:
        if self.conns.get(conn.sid) is not conn:
            return  # gone already, or its session continues on another transport (replace)
        del self.conns[conn.sid]
        self._opening.pop(conn.sid, None)
        del self.outlets[conn.sid]
        rooms = sorted(r for r in self.local.rooms_of(conn.sid) if r != conn.sid)
        self.local.remove_socket(conn.sid)
        self.identities.pop(conn.sid, None)
        self.contexts.pop(conn.sid, None)
        self.metrics.connections.dec()
        if self.upstream.ready:
            try:
                self.upstream.send(wire.SocketClose(sockets=(conn.sid,)))
            except RoomcastError:
                pass  # the router learns on the next resync
            if self.config.disconnect_hook and conn.registered:
                self.spawn(self._after_disconnect(conn.sid, rooms))

    def replace(self, old: Peer, new: Peer) -> None:
        """``new`` carries on the socket ``old`` was (same sid, rooms and registration): a
        Socket.IO session upgraded from polling to WebSocket. The router hears nothing."""
        sid = old.sid
        if self.conns.get(sid) is not old:
            return
        self.conns[sid] = new
        self.outlets[sid] = new.queue
        if sid in self._opening:
            self._opening[sid] = new

    async def _register(self, conns: Iterable[Peer]) -> None:
        # Skip sockets closing or already asking the connect hook (a link reset may re-run us).
        pending = [
            c
            for c in conns
            if not (
                c.registered
                or c.closing
                or c.hooking
                or c.auth_error is not None
                or c.sid in self._opening  # registered at the end of this turn
            )
        ]
        if not pending:
            return
        ids = tuple(c.sid for c in pending)
        users = tuple(self.identities.get(c.sid, ("", b""))[0] for c in pending)
        contexts = tuple(self.contexts.get(c.sid, b"") for c in pending)
        started = time.perf_counter()
        self._registering.update(ids)
        try:
            await self.upstream.call(
                lambda ref: wire.SocketOpen(ref=ref, sockets=ids, users=users, contexts=contexts)
            )
        except RoomcastError:
            self._registering.difference_update(ids)
            return  # link reset: registered again when it is back (on_link)
        self.metrics.command_duration.labels("open").observe(time.perf_counter() - started)
        for conn, sent, sent_context in zip(pending, users, contexts, strict=True):
            # Identified while the open was on its way (Socket.IO CONNECT auth): the router
            # gets the identity before the client is welcomed.
            user = self.identities.get(conn.sid, ("", b""))[0]
            changed = user != sent or self.contexts.get(conn.sid, b"") != sent_context
            if changed and conn.sid in self.conns:
                await self._set_presence(conn.sid, user)
            self._registering.discard(conn.sid)
            live = self.conns.get(conn.sid)  # the same socket, maybe on its upgraded transport
            if live is not None:
                if self.config.connect_hook:
                    live.hooking = True
                    self.spawn(self._before_connect(live))
                else:
                    live.on_registered()

    async def _before_connect(self, conn: Peer) -> None:
        """Sails' beforeConnect as an action (``CONNECT /``): refuse with 1008 when it says no."""
        request = conn.request
        # The query is the client's: bytes that are not UTF-8 (``?x=%FF``) must not kill the
        # hook (the socket would hang, never welcomed nor closed).
        query = request.query_arguments
        data = {"query": {k: query[k][-1].decode("utf-8", "replace") for k in query}}
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() in _HOOK_HEADERS}
        try:
            reply = await self.run_op(
                "connect",
                lambda ref: wire.Request(
                    ref=ref,
                    socket=conn.sid,
                    method="CONNECT",
                    url="/",
                    headers=dumps(headers),
                    data=dumps(data),
                ),
            )
        except RoomcastError as err:
            log.warning("connect hook failed (%s): refusing socket", err.code)
            self.conns.get(conn.sid, conn).disconnect(
                CloseCode.INTERNAL_ERROR, "connect_hook_failed"
            )
            return
        live = self.conns.get(conn.sid)  # the same socket, maybe on its upgraded transport
        if live is None:
            return
        if reply.status >= 400 or reply.body.strip() == b"false":
            live.disconnect(CloseCode.POLICY_VIOLATION, "refused_by_connect_hook")
        else:
            live.on_registered()

    async def _after_disconnect(self, sid: str, rooms: list[str]) -> None:
        """Sails' afterDisconnect as an action (``DISCONNECT /``), told the rooms it was in."""
        try:
            await self.run_op(
                "disconnect",
                lambda ref: wire.Request(
                    ref=ref,
                    socket=sid,
                    method="DISCONNECT",
                    url="/",
                    data=dumps({"rooms": rooms}),
                ),
            )
        except RoomcastError as err:
            log.debug("disconnect hook failed: %s", err.code)

    # --- client ops ------------------------------------------------------------------------

    def authenticate(self, token: str | None) -> Identity:
        """The identity a connection's token proves; raises TokenError to refuse it."""
        if token:
            return self.tokens.verify(token)
        if self.config.anonymous_allowed:
            return ANONYMOUS
        raise TokenError("a token is required")

    def authorize(self, identity: Identity, rooms: list[str], *, publish: bool) -> None:
        """Raise Forbidden unless the room policy lets ``identity`` use every room."""
        room = self.policy.denied(identity, rooms, publish=publish)
        if room is not None:
            verb = "broadcast to" if publish else "join or leave"
            raise Forbidden(f"the room policy does not let this connection {verb} {room[:64]!r}")

    def reject(self, reason: str) -> None:
        self.metrics.rejected.labels(reason).inc()

    async def run_op(self, name: str, make: Callable[[int], wire.Message]) -> wire.Reply:
        """Send a client's command to the router and time it."""
        started = time.perf_counter()
        slow = name in ("request", "connect", "disconnect")  # answered by action workers
        timeout = self.config.request_timeout_s if slow else None
        reply = await self.upstream.call(make, timeout_s=timeout)
        self.metrics.command_duration.labels(name).observe(time.perf_counter() - started)
        size = len(reply.body) + len(reply.headers)
        limit = self.config.max_send_queue_bytes // 2
        if name == "request" and size > limit:
            # Queued, it would cut the asker off as a slow consumer (4001): an error instead.
            raise ActionFailed(
                f"the action's response of {size} bytes is larger than a connection may be "
                f"sent at once ({limit} bytes)"
            )
        return reply

    def count_error(self, err: RoomcastError) -> None:
        self.metrics.client_errors.labels(err.code).inc()

    # --- the router stream (UpstreamHandler) -----------------------------------------------

    def on_deliver(self, msg: wire.Deliver, *, alone: bool) -> None:
        """One delivery from the router; ``alone``: the only message of its batch."""
        self.metrics.deliveries.inc()
        if msg.everyone:
            targets: Iterable[str] = self.conns.keys() - set(msg.omit) if msg.omit else self.conns
        else:
            targets = self.local.targets(msg.rooms, msg.omit)
        history = _history_json(msg.offsets) if msg.offsets else b""
        sent, writes, nbytes, oversize = fan_out(
            self.outlets,
            targets,
            lambda conn: conn.event_frame(msg.event, msg.data, history),
            self._dirty,  # written at the end of the router batch (on_batch_end)
            direct=alone,
        )
        if writes:
            self.metrics.writes.inc(writes)
            self.metrics.bytes_out.inc(nbytes)
        if sent:
            self.metrics.messages_out.inc(sent)
        if oversize:
            self.metrics.dropped.labels("oversize").inc(oversize)
            log.warning(
                "a message of about %d bytes exceeds --max-send-queue-bytes (%d): not delivered "
                "to %d sockets (keep the router's --max-publish-bytes below it)",
                len(msg.data) + len(msg.event),
                self.config.max_send_queue_bytes,
                oversize,
            )
        if msg.confirm:
            try:
                self.upstream.send(wire.Delivered(confirm=msg.confirm, sockets=sent))
            except RoomcastError:
                pass  # the publisher's receipt then says incomplete
        if msg.accepted_ns:
            latency = (time.time_ns() - msg.accepted_ns) / 1e9
            self.metrics.delivery_latency.observe(max(0.0, latency))

    def on_member_update(self, msg: wire.MemberUpdate) -> None:
        for item in msg.joins:
            self.local.join(item.socket, item.rooms)
        for item in msg.leaves:
            self.local.leave(item.socket, item.rooms)
        for item in msg.identities:
            if item.socket not in self.conns:
                continue
            if item.user:
                self.identities[item.socket] = (item.user, item.meta)
            else:
                self.identities.pop(item.socket, None)

    def on_batch_end(self) -> None:
        self.flush()

    def on_link(self, ready: bool) -> None:
        self.metrics.router_link.set(1 if ready else 0)
        if ready:
            self.spawn(self._register(list(self.conns.values())))

    def resync_state(self) -> Iterable[wire.SocketRooms]:
        state = []
        for sid in self.local.sockets():
            rooms = tuple(r for r in self.local.rooms_of(sid) if r != sid)
            user, meta = self.identities.get(sid, ("", b""))
            context = self.contexts.get(sid, b"")
            state.append(
                wire.SocketRooms(socket=sid, rooms=rooms, user=user, meta=meta, context=context)
            )
        return state

    # --- writing ---------------------------------------------------------------------------

    def mark_dirty(self, outlet: Outlet) -> None:
        self._dirty.append(outlet)
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        writes, nbytes = write_queued(dirty)
        if writes:
            self.metrics.writes.inc(writes)
            self.metrics.bytes_out.inc(nbytes)

    # --- timers ----------------------------------------------------------------------------

    async def _tick(self) -> None:
        limit = self.config.router_unavailable_close_s
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for ticker in self.tickers:
                ticker(now)
            if self.upstream.ready or not self.conns:
                continue
            if now - self.upstream.link_lost_at > limit:
                log.warning(
                    "router unavailable for %.0fs: closing %d connections", limit, len(self.conns)
                )
                for conn in list(self.conns.values()):
                    conn.disconnect(CloseCode.ROUTER_UNAVAILABLE, "router_unavailable")

    async def drain(self) -> None:
        """Tell every client to reconnect elsewhere, then wait (bounded) for them to go."""
        self.draining = True
        for conn in list(self.conns.values()):
            conn.disconnect(CloseCode.GOING_AWAY, "going_away")
        deadline = time.monotonic() + self.config.drain_timeout_s
        while self.conns and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if not self.conns:
            return
        # Clients that never completed the close (Tornado would wait 5 s more) must not outlive
        # the drain: detach them while the router link is still up, so the router hears they
        # left now and their late on_close (at loop teardown, after the link is closed) has
        # nothing left to send; then cut their connections.
        log.warning("drain timeout: cutting %d connections that did not close", len(self.conns))
        for conn in list(self.conns.values()):
            self.detach(conn)
            conn.abort()


def _history_json(offsets: tuple[wire.RoomOffset, ...]) -> bytes:
    return dumps({o.room: {"epoch": o.epoch, "offset": o.offset} for o in offsets})
