"""The base of every client connection handler: identity, send queue, coalesced writes, close.

Subclasses (``/ws``, ``/socket.io/``) add their codec: how an event is framed, what "welcome"
means, how inbound frames become ops. Frames are written straight to the connection's stream
(already framed by :mod:`gateway.frames`), bypassing Tornado's per-message ``write_message``;
Tornado still handles the handshake, inbound frames, pings and the close handshake. This relies
on ``WebSocketProtocol13.stream`` — Tornado is pinned in pyproject.toml for that reason.
"""

from __future__ import annotations

import asyncio
import secrets

import tornado.iostream
import tornado.websocket

from gateway.frames import text_frame
from gateway.hub import Gateway
from gateway.sendqueue import SendQueue
from roomcast.core.closecodes import CloseCode
from roomcast.core.errors import RoomcastError

__all__ = ["Connection"]


class Connection(tornado.websocket.WebSocketHandler):
    gateway: Gateway

    def initialize(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.sid = secrets.token_urlsafe(12)
        self.queue = SendQueue(gateway.config.max_send_queue_bytes)
        self.registered = False  # the router knows this socket
        self.welcomed = False  # the client knows its id: deliveries may flow
        self._dirty = False
        self._close_reason: str | None = None

    # --- protocol hooks --------------------------------------------------------------------

    def event_frame(self, event: str, data_json: bytes) -> bytes:
        """The complete WebSocket frame of a push, in this connection's protocol."""
        raise NotImplementedError

    def on_registered(self) -> None:
        """The router registered the socket (subclasses send their welcome)."""
        self.registered = True

    def goodbye(self) -> None:
        """Protocol-level notice sent just before a server-initiated close."""

    def report_error(self, ref: object, err: RoomcastError) -> None:
        raise NotImplementedError

    # --- lifecycle -------------------------------------------------------------------------

    def check_origin(self, origin: str) -> bool:
        return True  # origin allowlists arrive with authentication

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
        reason = self._close_reason
        if reason is None or reason == "frame_too_big":
            # Client-initiated, or Tornado's own 1009: not counted by disconnect().
            self.gateway.count_disconnect(reason or "client")
        self.gateway.detach(self)

    def disconnect(self, code: int, reason: str) -> None:
        """Server-initiated close with a documented code (the close frame follows queued data)."""
        if self._close_reason is not None:
            return
        self.goodbye()
        self._close_reason = reason
        # Counted now, not when Tornado finally closes: a client that stops reading takes
        # Tornado's 5 s close timeout to go away, and the decision is what operators watch.
        self.gateway.count_disconnect(reason)
        self.write_queued()
        self.close(code, reason.replace("_", " "))

    def fail(self, ref: object, err: RoomcastError) -> None:
        self.gateway.count_error(err)
        if self.ws_connection is not None and self._close_reason is None:
            self.report_error(ref, err)

    # --- outbound --------------------------------------------------------------------------

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
        """Hand everything queued to the stream in one write; returns the bytes written."""
        self._dirty = False
        ws = self.ws_connection
        if ws is None:
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
