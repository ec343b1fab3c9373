"""The gateway's Tornado shell: client handlers and the delivery hub.

The hub (:class:`Gateway`) owns the connections and the local room mirror, receives the router's
stream through :class:`gateway.upstream.Upstream`, frames each delivery once per client protocol
and queues the same bytes for every recipient; at the end of each router batch it writes every
dirty connection's queue in one stream write. Client frames are parsed by the pure codec and
turned into router commands.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import secrets
import time
from collections.abc import Coroutine, Iterable
from typing import Any

import tornado.iostream
import tornado.web
import tornado.websocket
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway import plainws
from gateway.config import GatewayConfig
from gateway.frames import text_frame
from gateway.membership import LocalRooms
from gateway.metrics import GatewayMetrics
from gateway.sendqueue import SendQueue
from gateway.upstream import Upstream
from roomcast.core import wire
from roomcast.core.closecodes import CloseCode
from roomcast.core.errors import BadRequest, Forbidden, InternalError, RoomcastError

__all__ = ["Gateway", "make_internal_app", "make_public_app"]

log = logging.getLogger("roomcast.gateway")


class Gateway:
    """The delivery hub: connections, local membership, and the router link's handler."""

    def __init__(self, config: GatewayConfig, metrics: GatewayMetrics, upstream_ctx: Any) -> None:
        self.config = config
        self.metrics = metrics
        self.local = LocalRooms()
        self.conns: dict[str, WsHandler] = {}
        self.draining = False
        self._dirty: list[WsHandler] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.upstream = Upstream(config, upstream_ctx, metrics, self)
        self._watch_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> bool:
        return self.upstream.ready and not self.draining

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.upstream.start()
        self._watch_task = self._loop.create_task(self._watch_router())

    async def stop(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
        await self.upstream.stop()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a task, holding a reference until it is done (the loop keeps only weak ones)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- connections -----------------------------------------------------------------------

    def attach(self, conn: WsHandler) -> None:
        self.conns[conn.sid] = conn
        self.local.add_socket(conn.sid)
        self.metrics.connections.inc()
        self.metrics.connections_opened.inc()
        if self.upstream.ready:
            self.spawn(self._register((conn,)))

    def detach(self, conn: WsHandler, reason: str) -> None:
        if self.conns.pop(conn.sid, None) is None:
            return
        self.local.remove_socket(conn.sid)
        self.metrics.connections.dec()
        self.metrics.disconnects.labels(reason).inc()
        if self.upstream.ready:
            try:
                self.upstream.send(wire.SocketClose(sockets=(conn.sid,)))
            except RoomcastError:
                pass  # the router learns on the next resync

    async def _register(self, conns: Iterable[WsHandler]) -> None:
        conns = [c for c in conns if not c.welcomed]
        if not conns:
            return
        ids = tuple(c.sid for c in conns)
        started = time.perf_counter()
        try:
            await self.upstream.call(lambda ref: wire.SocketOpen(ref=ref, sockets=ids))
        except RoomcastError:
            return  # link reset: re-registered when it is back (on_link)
        self.metrics.command_duration.labels("open").observe(time.perf_counter() - started)
        for conn in conns:
            if conn.sid in self.conns:
                conn.welcome()

    # --- the router stream (UpstreamHandler) -----------------------------------------------

    def on_deliver(self, msg: wire.Deliver) -> None:
        self.metrics.deliveries.inc()
        if msg.everyone:
            targets: Iterable[str] = self.conns.keys() - set(msg.omit) if msg.omit else self.conns
        else:
            targets = self.local.targets(msg.rooms, msg.omit)
        frame = text_frame(plainws.encode_event(msg.event, msg.data))
        conns = self.conns
        sent = 0
        for sid in targets:
            conn = conns.get(sid)
            if conn is not None and conn.welcomed:
                conn.push(frame)
                sent += 1
        if sent:
            self.metrics.messages_out.inc(sent)
        if msg.accepted_ns:
            self.metrics.delivery_latency.observe(
                max(0.0, (time.time_ns() - msg.accepted_ns) / 1e9)
            )

    def on_member_update(self, msg: wire.MemberUpdate) -> None:
        for item in msg.joins:
            self.local.join(item.socket, item.rooms)
        for item in msg.leaves:
            self.local.leave(item.socket, item.rooms)

    def on_batch_end(self) -> None:
        self.flush()

    def on_link(self, ready: bool) -> None:
        self.metrics.router_link.set(1 if ready else 0)
        if ready:
            self.spawn(self._register(list(self.conns.values())))

    def resync_state(self) -> Iterable[tuple[str, Iterable[str]]]:
        return [(sid, set(self.local.rooms_of(sid))) for sid in self.local.sockets()]

    # --- writing ---------------------------------------------------------------------------

    def mark_dirty(self, conn: WsHandler) -> None:
        self._dirty.append(conn)
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        writes = 0
        nbytes = 0
        for conn in dirty:
            n = conn.write_queued()
            if n:
                writes += 1
                nbytes += n
        if writes:
            self.metrics.writes.inc(writes)
            self.metrics.bytes_out.inc(nbytes)

    # --- router outage ---------------------------------------------------------------------

    async def _watch_router(self) -> None:
        limit = self.config.router_unavailable_close_s
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            if self.upstream.ready or not self.conns:
                continue
            if time.monotonic() - self.upstream.link_lost_at > limit:
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


class WsHandler(tornado.websocket.WebSocketHandler):
    """``/ws``: the plain JSON protocol."""

    def initialize(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.sid = secrets.token_urlsafe(12)
        self.queue = SendQueue(gateway.config.max_send_queue_bytes)
        self.welcomed = False
        self._dirty = False
        self._close_reason: str | None = None

    def check_origin(self, origin: str) -> bool:
        return True  # origin allowlists arrive with authentication (issue 6)

    def open(self, *args: str, **kwargs: str) -> None:
        if self.gateway.draining:
            self.close(CloseCode.GOING_AWAY, "going away")
            return
        ws = self.ws_connection
        assert ws is not None
        original_close = ws.close

        def close(code: int | None = None, reason: str | None = None) -> None:
            # Tornado closes with 1009 itself when a frame is over the limit: record why.
            if code == CloseCode.MESSAGE_TOO_BIG and self._close_reason is None:
                self._close_reason = "frame_too_big"
            original_close(code, reason)

        ws.close = close  # type: ignore[method-assign]
        self.set_nodelay(True)
        self.gateway.attach(self)

    def on_close(self) -> None:
        self.queue.discard()
        self.gateway.detach(self, self._close_reason or "client")

    # --- outbound --------------------------------------------------------------------------

    def welcome(self) -> None:
        self.welcomed = True
        self.send_payload(plainws.encode_welcome(self.sid))

    def send_payload(self, payload: bytes) -> None:
        self.push(text_frame(payload))

    def push(self, frame: bytes) -> None:
        if self._close_reason is not None:
            return
        if not self.queue.push(frame):
            dropped = self.queue.discard() + 1
            self.gateway.metrics.dropped.labels("slow_consumer").inc(dropped)
            self.disconnect(CloseCode.SLOW_CONSUMER, "slow_consumer")
            return
        if not self._dirty:
            self._dirty = True
            self.gateway.mark_dirty(self)

    def write_queued(self) -> int:
        self._dirty = False
        ws = self.ws_connection
        if ws is None or (self._close_reason is not None and self.queue.idle):
            return 0
        data = self.queue.take()
        if data is None:
            return 0
        stream: tornado.iostream.IOStream | None = ws.stream
        if stream is None:
            return 0
        try:
            fut = stream.write(data)
        except tornado.iostream.StreamClosedError:
            return 0
        fut.add_done_callback(self._written)
        return len(data)

    def _written(self, fut: asyncio.Future[None]) -> None:
        if fut.exception() is not None:
            return
        self.queue.written()
        if not self.queue.idle and not self._dirty:
            self._dirty = True
            self.gateway.mark_dirty(self)

    def disconnect(self, code: int, reason: str) -> None:
        """Server-initiated close with a documented code (the close frame follows queued data)."""
        if self._close_reason is not None:
            return
        self._close_reason = reason
        self.close(code, reason.replace("_", " "))

    # --- inbound ---------------------------------------------------------------------------

    def on_message(self, message: str | bytes) -> None:
        metrics = self.gateway.metrics
        metrics.frames_in.inc()
        if isinstance(message, bytes):
            self._error(None, BadRequest("binary frames are not supported"))
            return
        try:
            op = plainws.parse(message)
        except plainws.FrameError as exc:
            self._error(exc.ref, exc.error)
            return
        self.gateway.spawn(self._run(op))

    async def _run(self, op: plainws.Op) -> None:
        started = time.perf_counter()
        upstream = self.gateway.upstream
        sid = self.sid
        try:
            if isinstance(op, plainws.BroadcastOp):
                self._check_policy()
                omit = () if op.echo else (sid,)
                await upstream.call(
                    lambda ref: wire.Publish(
                        ref=ref, rooms=tuple(op.rooms), event=op.event, data=op.data, omit=omit
                    )
                )
                name = "broadcast"
                if op.ref is not None:
                    self.send_payload(plainws.encode_reply(op.ref, 200, {}))
            elif isinstance(op, plainws.MembershipOp):
                self._check_policy()
                await upstream.call(
                    lambda ref: wire.Membership(
                        ref=ref, leave=op.leave, sockets=(sid,), rooms=tuple(op.rooms)
                    )
                )
                name = "leave" if op.leave else "join"
                self.send_payload(plainws.encode_reply(op.ref, 200, {}))
            else:
                reply = await upstream.call(
                    lambda ref: wire.Request(
                        ref=ref,
                        socket=sid,
                        method=op.method,
                        url=op.url,
                        headers=op.headers,
                        data=op.data,
                    )
                )
                name = "request"
                self.send_payload(
                    plainws.encode_raw_reply(op.ref, reply.status, reply.body, reply.headers)
                )
        except RoomcastError as err:
            self._error(op.ref, err)
            return
        except Exception:
            log.exception("client op failed")
            self._error(op.ref, InternalError("internal error"))
            return
        self.gateway.metrics.command_duration.labels(name).observe(time.perf_counter() - started)

    def _check_policy(self) -> None:
        if not self.gateway.config.development:
            raise Forbidden("client room operations are not allowed by the room policy")

    def _error(self, ref: plainws.Ref | None, err: RoomcastError) -> None:
        self.gateway.metrics.client_errors.labels(err.code).inc()
        if self.ws_connection is None or self._close_reason is not None:
            return
        if ref is None:
            self.send_payload(plainws.encode_error(err.status, err.as_body()))
        else:
            self.send_payload(plainws.encode_reply(ref, err.status, err.as_body()))


class _Health(tornado.web.RequestHandler):
    def initialize(self, gateway: Gateway, readiness: bool) -> None:
        self.gateway = gateway
        self.readiness = readiness

    def get(self) -> None:
        ok = self.gateway.ready if self.readiness else True
        self.set_status(200 if ok else 503)
        self.set_header("Content-Type", "text/plain")
        self.finish("ok\n" if ok else "not ready\n")


class _Metrics(tornado.web.RequestHandler):
    def initialize(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.registry))


def _health_routes(gateway: Gateway) -> list[Any]:
    return [
        (r"/healthz", _Health, {"gateway": gateway, "readiness": False}),
        (r"/readyz", _Health, {"gateway": gateway, "readiness": True}),
    ]


STATIC_DIR = pathlib.Path(__file__).parent / "static"


def make_public_app(gateway: Gateway) -> tornado.web.Application:
    config = gateway.config
    routes: list[Any] = [(r"/ws", WsHandler, {"gateway": gateway}), *_health_routes(gateway)]
    if config.development:
        # The demo chat; production gateways serve only protocol endpoints.
        static = {"path": str(STATIC_DIR), "default_filename": "plain.html"}
        routes += [(r"/()", tornado.web.StaticFileHandler, static)]
        routes += [(r"/static/(.*)", tornado.web.StaticFileHandler, {"path": str(STATIC_DIR)})]
    return tornado.web.Application(
        routes,
        websocket_max_message_size=config.max_frame_bytes,
        websocket_ping_interval=config.ping_interval_s,
        websocket_ping_timeout=config.ping_timeout_s,
        log_function=lambda handler: None,
    )


def make_internal_app(gateway: Gateway, registry: CollectorRegistry) -> tornado.web.Application:
    return tornado.web.Application(
        [(r"/metrics", _Metrics, {"registry": registry}), *_health_routes(gateway)],
        log_function=lambda handler: None,
    )
