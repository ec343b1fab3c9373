"""``/ws``: the plain JSON WebSocket protocol (architecture §4) on top of :class:`Connection`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from gateway import plainws
from gateway.connection import Connection, Peer
from gateway.frames import PING_FRAME, text_frame
from gateway.sails import strip_headers
from roomcast.core import wire
from roomcast.core.closecodes import CloseCode
from roomcast.core.errors import BadRequest, InternalError, RateLimited, RoomcastError

__all__ = ["PlainHandler", "ws_ticker"]

log = logging.getLogger("roomcast.gateway")


def _slow_down() -> RateLimited:
    return RateLimited("too many messages: slow down")


class PlainHandler(Connection):
    # WebSocket-level keepalive, driven by one shared timer (ws_ticker) rather than Tornado's
    # ping coroutine per connection (~2 KiB each): any inbound frame or pong proves life.
    last_alive: float = 0.0
    ping_sent_at: float | None = None

    def on_pong(self, data: bytes) -> None:
        self.last_alive = time.monotonic()
        self.ping_sent_at = None

    def tick(self, now: float) -> None:
        config = self.gateway.config
        if self.ping_sent_at is not None:
            if self.last_alive < self.ping_sent_at:
                if now - self.ping_sent_at > config.ping_timeout_s:
                    self.disconnect(CloseCode.GOING_AWAY, "ping_timeout")
                return
            self.ping_sent_at = None  # something arrived since the ping: alive
        if now - max(self.last_alive, self.opened_at) >= config.ping_interval_s:
            self.ping_sent_at = now
            self.push(PING_FRAME)

    def event_frame(self, event: str, data_json: bytes, history_json: bytes = b"") -> bytes:
        return text_frame(plainws.encode_event(event, data_json, history_json))

    def on_registered(self) -> None:
        super().on_registered()
        self.welcomed = True
        self.send_payload(plainws.encode_welcome(self.sid))

    def report_error(self, ref: object, err: RoomcastError) -> None:
        if isinstance(ref, (int, str)):
            self.send_payload(plainws.encode_reply(ref, err.status, err.as_body()))
        else:
            self.send_payload(plainws.encode_error(err.status, err.as_body()))

    def on_message(self, message: str | bytes) -> None:
        self.last_alive = time.monotonic()
        self.gateway.metrics.frames_in.inc()
        # Every frame spends from the budget, whatever it holds: garbage floods are abuse too.
        # Refused frames are still answered (429, to the ref when there is one) until the close.
        limited = self.over_limit()
        if isinstance(message, bytes):
            self.fail(
                None, _slow_down() if limited else BadRequest("binary frames are not supported")
            )
            return
        try:
            op = plainws.parse(message)
        except plainws.FrameError as exc:
            self.fail(exc.ref, _slow_down() if limited else exc.error)
            return
        if limited:
            self.fail(op.ref, _slow_down())
            return
        try:
            if isinstance(op, plainws.BroadcastOp):
                self.gateway.authorize(self.identity, op.rooms, publish=True)
            elif isinstance(op, (plainws.MembershipOp, plainws.PresenceOp)):
                rooms = op.rooms if isinstance(op, plainws.MembershipOp) else [op.room]
                self.gateway.authorize(self.identity, rooms, publish=False)
        except RoomcastError as err:
            self.fail(op.ref, err)
            return
        self.gateway.spawn(self._run(op))

    async def _run(self, op: plainws.Op) -> None:
        sid = self.sid
        run = self.gateway.run_op
        try:
            if isinstance(op, plainws.BroadcastOp):
                omit = () if op.echo else (sid,)
                await run(
                    "broadcast",
                    lambda ref: wire.Publish(
                        ref=ref, rooms=tuple(op.rooms), event=op.event, data=op.data, omit=omit
                    ),
                )
                if op.ref is not None:
                    self.send_payload(plainws.encode_reply(op.ref, 200, {}))
            elif isinstance(op, plainws.MembershipOp):
                reply = await run(
                    "leave" if op.leave else "join",
                    lambda ref: wire.Membership(
                        ref=ref,
                        leave=op.leave,
                        sockets=(sid,),
                        rooms=tuple(op.rooms),
                        recover=op.recover,
                        since_epoch=op.since_epoch,
                        since_offset=op.since_offset,
                        client=True,
                        # The answer must fit in this connection's send queue (else 4001, and
                        # the client would reconnect and ask again): larger says recovered=false.
                        recover_max_bytes=self.gateway.config.max_send_queue_bytes // 2,
                    ),
                )
                if op.recover:  # {"recovered", "epoch", "offset", "messages": [...]}
                    self.send_payload(plainws.encode_raw_reply(op.ref, 200, reply.body, b"{}"))
                else:
                    self.send_payload(plainws.encode_reply(op.ref, 200, {}))
            elif isinstance(op, plainws.PresenceOp):
                kind = wire.QueryKind.PRESENCE_STATS if op.stats else wire.QueryKind.PRESENCE
                reply = await run(
                    "presence", lambda ref: wire.Query(ref=ref, kind=kind, target=op.room)
                )
                self.send_payload(plainws.encode_raw_reply(op.ref, 200, reply.body, b"{}"))
            else:
                reply = await run(
                    "request",
                    lambda ref: wire.Request(
                        ref=ref,
                        socket=sid,
                        method=op.method,
                        url=op.url,
                        headers=op.headers,
                        data=op.data,
                    ),
                )
                self.send_payload(
                    plainws.encode_raw_reply(
                        op.ref, reply.status, reply.body, strip_headers(reply.headers)
                    )
                )
        except RoomcastError as err:
            self.fail(op.ref, err)
        except Exception:
            log.exception("client op failed")
            self.fail(op.ref, InternalError("internal error"))


def ws_ticker(conns: dict[str, Peer]) -> Callable[[float], None]:
    """The hub's per-second callback that keeps every /ws connection's keepalive."""

    def tick(now: float) -> None:
        for conn in list(conns.values()):
            if isinstance(conn, PlainHandler):
                conn.tick(now)

    return tick
