"""The base of every client connection handler: identity, send queue, coalesced writes, close.

Subclasses (``/ws``, ``/socket.io/``) add their codec: how an event is framed, what "welcome"
means, how inbound frames become ops. Frames are written straight to the connection's stream
(already framed by :mod:`gateway.frames`), bypassing Tornado's per-message ``write_message``;
Tornado still handles the handshake, inbound frames, pings and the close handshake. This relies
on ``WebSocketProtocol13.stream`` and on Tornado writing its own frames through
``WebSocketProtocol13._write_frame`` — Tornado is pinned in pyproject.toml for that reason, and
tests/component/test_tornado_internals.py and test_outlet.py check both against real sockets.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import tornado.httputil
import tornado.iostream
import tornado.websocket
from tornado.iostream import IOStream, StreamClosedError

from gateway.frames import text_frame
from gateway.policy import ANONYMOUS, Identity
from gateway.ratelimit import RateLimit
from gateway.sendqueue import FIRST, REFUSED, SendQueue
from gateway.tokens import TokenError
from roomcast.core.closecodes import CloseCode, is_final
from roomcast.core.errors import RoomcastError

if TYPE_CHECKING:
    from gateway.hub import Gateway

__all__ = ["Connection", "Outlet", "Peer", "fan_out", "write_queued"]


class Peer:
    """A client socket as the hub sees it, whatever carries it: identity, send queue, close.

    :class:`Connection` carries it over one WebSocket; a Socket.IO polling session
    (gateway/polling.py) over a series of HTTP requests. ``queue`` is the outlet the hub's
    delivery loop fills; what a "frame" is (a WebSocket frame, a polling payload fragment) is
    the transport's: see :meth:`frame`.
    """

    gateway: Gateway
    sid: str
    queue: Outlet
    request: tornado.httputil.HTTPServerRequest  # the handshake

    def init_peer(self, gateway: Gateway, queue: Outlet | None = None) -> None:
        self.gateway = gateway
        self.sid = secrets.token_urlsafe(12)
        config = gateway.config
        self._welcomed = False
        self._close_cause: str | None = None
        self.queue = queue if queue is not None else Outlet(config.max_send_queue_bytes, self)
        self.limit = RateLimit(
            config.max_frames_per_s, config.frame_burst, config.abuse_strikes, time.monotonic()
        )
        self.identity: Identity = ANONYMOUS
        self.opened_at = time.monotonic()
        self.auth_error: str | None = None
        self.registered = False  # the router knows this socket
        self.hooking = False  # the connect hook (beforeConnect) is deciding

    @property
    def closing(self) -> bool:
        return self._close_cause is not None

    # Both decide whether deliveries may flow, which the delivery loop reads from the outlet.

    @property
    def welcomed(self) -> bool:
        """The client knows its id: deliveries may flow."""
        return self._welcomed

    @welcomed.setter
    def welcomed(self, value: bool) -> None:
        self._welcomed = value
        self.queue.live = value and self._close_cause is None

    @property
    def close_cause(self) -> str | None:
        """Why the server is closing it (a metric label); Tornado's close_reason is the client's."""
        return self._close_cause

    @close_cause.setter
    def close_cause(self, value: str | None) -> None:
        self._close_cause = value
        self.queue.live = self._welcomed and value is None

    # --- protocol hooks --------------------------------------------------------------------

    def frame(self, payload: bytes) -> bytes:
        """One protocol message as this transport queues it."""
        raise NotImplementedError

    def end(self, code: int, reason: str) -> None:
        """Close the transport (after what is queued)."""
        raise NotImplementedError

    def can_send(self) -> bool:
        """Whether the transport may still carry a message to the client."""
        raise NotImplementedError

    def abort(self) -> None:
        """Cut the transport now (a drain that timed out)."""
        raise NotImplementedError

    def ws_stream(self) -> IOStream | None:
        """The WebSocket's stream (None for other transports, or once closed)."""
        return None

    def event_frame(self, event: str, data_json: bytes, history_json: bytes = b"") -> bytes:
        """The complete WebSocket frame of a push, in this connection's protocol
        (``history_json``: the message's positions in rooms that keep a history)."""
        raise NotImplementedError

    def on_registered(self) -> None:
        """The router registered the socket (subclasses send their welcome)."""
        self.registered = True

    def goodbye(self) -> None:
        """Protocol-level notice sent just before a close meant to be final (``is_final``)."""

    def report_error(self, ref: object, err: RoomcastError) -> None:
        raise NotImplementedError

    # --- lifecycle ------------------------------------------------------------------------

    def request_token(self) -> str | None:
        """``?token=`` or ``Authorization: Bearer``; Socket.IO may also send one at CONNECT."""
        tokens = self.request.query_arguments.get("token")
        token = tokens[-1].decode("utf-8", "replace").strip() if tokens else None
        if token:
            return token
        scheme, _, value = self.request.headers.get("Authorization", "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None

    def refuse_token(self) -> None:
        """Close a connection whose token was refused (1008, the reason in the close frame)."""
        self.gateway.reject("token")
        self.close_cause = "token"
        self.gateway.count_disconnect("token")
        self.write_queued()
        self.end(CloseCode.POLICY_VIOLATION, (self.auth_error or "token refused")[:120])

    def over_limit(self) -> bool:
        """Spend the inbound budget for one frame; True when the frame must be refused."""
        if self.limit.allow(time.monotonic()):
            return False
        if self.limit.abusive:
            self.disconnect(CloseCode.ABUSE, "abuse")
        return True

    def defers_auth(self) -> bool:
        """Whether a missing token may still arrive in-protocol (Socket.IO v4 CONNECT auth)."""
        return False

    def disconnect(self, code: int, reason: str) -> None:
        """Server-initiated close with a documented code (the close frame follows queued data)."""
        if self.close_cause is not None:
            return
        if is_final(code):
            self.goodbye()
        self.close_cause = reason
        # Counted now, not when Tornado finally closes: a client that stops reading takes
        # Tornado's 5 s close timeout to go away, and the decision is what operators watch.
        self.gateway.count_disconnect(reason)
        self.write_queued()
        self.end(code, reason.replace("_", " "))

    def fail(self, ref: object, err: RoomcastError) -> None:
        self.gateway.count_error(err)
        if self.can_send() and self.close_cause is None:
            self.report_error(ref, err)

    # --- outbound --------------------------------------------------------------------------
    #
    # Every byte to the client passes the send queue's accounting: frames we write ourselves,
    # and bytes Tornado holds (a remainder the kernel did not take, or Tornado's own pong or
    # close frame, see _Protocol._write_frame) count as in flight until Tornado has flushed
    # them. So when nothing is pending or in flight, the socket may be written directly, in
    # order, without asking Tornado (whose IOStream.write costs a Future, a done-callback and
    # two call_soon per write: most of a write's cost at low rates).

    def send_payload(self, payload: bytes) -> None:
        self.push(self.frame(payload))

    def push(self, frame: bytes) -> None:
        """Queue one frame for the next write (deliveries take fan_out's loop instead)."""
        if self.close_cause is not None:
            return
        queued = self.queue.push(frame)
        if queued == FIRST:
            self.gateway.mark_dirty(self.queue)
        elif queued == REFUSED:
            self.overflow()

    def overflow(self) -> None:
        """The send queue is over its bound: cut the slow consumer (4001)."""
        dropped = self.queue.discard() + 1
        self.gateway.metrics.dropped.labels("slow_consumer").inc(dropped)
        self.disconnect(CloseCode.SLOW_CONSUMER, "slow_consumer")

    def write_queued(self) -> int:
        """Hand everything queued to the stream in one write; returns the bytes written."""
        return write_queued((self.queue,))[1]


class Connection(Peer, tornado.websocket.WebSocketHandler):
    """A client socket over one WebSocket."""

    def initialize(self, gateway: Gateway) -> None:
        self.init_peer(gateway)

    # --- the transport (Peer) --------------------------------------------------------------

    def frame(self, payload: bytes) -> bytes:
        return text_frame(payload)

    def end(self, code: int, reason: str) -> None:
        self.close(code, reason)

    def can_send(self) -> bool:
        return self.ws_connection is not None

    def abort(self) -> None:
        ws = self.ws_connection
        if ws is not None and ws.stream is not None:
            ws.stream.close()

    def ws_stream(self) -> IOStream | None:
        ws = self.ws_connection
        return ws.stream if ws is not None else None

    # --- the WebSocket ---------------------------------------------------------------------

    async def get(self, *args: Any, **kwargs: Any) -> None:
        """Refuse before the upgrade what must not cost a connection; read the token."""
        gateway = self.gateway
        if gateway.draining:
            self.refuse_http(503, "draining", "this gateway is shutting down: connect to another")
            return
        others = max(gateway.pending_connections() - 1, 0)  # half-open ones count too
        if len(gateway.conns) + others >= gateway.connection_cap:
            self.refuse_http(503, "max_connections", "this gateway is full: connect to another")
            return
        origin = self.request.headers.get("Origin")
        allowed = gateway.config.allowed_origins
        if allowed and origin is not None and origin not in allowed:
            # Exactly the list: Tornado would pass an Origin equal to the Host header (DNS
            # rebinding: a hostile name resolving here) or a Sec-Fetch-Site: same-origin
            # without asking. A request with no Origin is not a web page's (browsers send it).
            self.refuse_http(403, "origin", "this origin may not open sockets here")
            return
        try:
            self.identity = gateway.authenticate(self.request_token())
        except TokenError as exc:
            # Upgraded anyway, then closed with 1008: a browser cannot read an HTTP refusal.
            self.auth_error = str(exc)
        await super().get(*args, **kwargs)

    def refuse_http(self, status: int, reason: str, message: str) -> None:
        self.gateway.reject(reason)
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish({"error": reason, "message": message})

    def check_origin(self, origin: str) -> bool:
        # get() already refused every Origin outside a configured allowlist (exact matches,
        # like Sails' onlyAllowOrigins); without one, any origin may connect.
        return True

    def on_ping(self, data: bytes) -> None:
        # Tornado answers every ping itself: a ping flood spends the same budget as any frame,
        # so it ends in 4003 like one.
        self.over_limit()

    def open(self, *args: str, **kwargs: str) -> None:
        self.take_stream()
        if self.gateway.draining:
            self.close(CloseCode.GOING_AWAY, "going away")
            return
        self.set_nodelay(True)
        if self.auth_error is not None and not self.defers_auth():
            self.refuse_token()
            return
        self.gateway.attach(self)

    def take_stream(self) -> None:
        """Write to the socket directly from now on (see Outlet.send_now)."""
        stream = self.ws_connection.stream if self.ws_connection is not None else None
        if stream is not None and type(stream) is IOStream:
            self.queue.sock = stream.socket  # a TLS stream is written through Tornado only
            if stream.writing():  # the 101 response is not all out: wait for it
                self.queue.hold(stream.write(b""), 1)

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        # Tornado's own, but one that tells us when Tornado closes with 1009 by itself (a
        # per-connection wrapper around close() would cost ~1.5 KiB per idle connection).
        if self.request.headers.get("Sec-WebSocket-Version") != "13":
            return None
        params = tornado.websocket._WebSocketParams(
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            max_message_size=self.max_message_size,
            compression_options=self.get_compression_options(),
        )
        return _Protocol(self, False, params)

    def on_close(self) -> None:
        self.queue.discard()
        reason = self.close_cause
        if reason is None or reason == "frame_too_big":
            # Client-initiated, or Tornado's own 1009: not counted by disconnect().
            self.gateway.count_disconnect(reason or "client")
        self.gateway.detach(self)


class Outlet(SendQueue):
    """A connection's send queue plus what the delivery loop needs of the connection, in one
    slotted object: the loop runs once per recipient, and a Tornado handler keeps its
    attributes in a large dict."""

    __slots__ = ("conn", "live", "sock")

    def __init__(self, limit_bytes: int, conn: Peer) -> None:
        super().__init__(limit_bytes)
        self.conn = conn
        self.live = False  # welcomed and not closing: deliveries may flow
        self.sock: socket.socket | None = None  # for direct writes, once open

    def send_now(self, data: bytes) -> None:
        """Write ``data`` now; only when nothing is pending or in flight (see Connection)."""
        sock = self.sock
        if sock is not None:
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                return  # the connection is broken; Tornado's reader will close it
            if sent == len(data):
                return
            data = data[sent:]
        stream = self.conn.ws_stream()
        if stream is None:
            return  # closed meanwhile: nothing can be written
        try:
            fut = stream.write(data)
        except StreamClosedError:
            return
        self.hold(fut, len(data))

    def hold(self, fut: asyncio.Future[None], size: int) -> None:
        """Tornado holds ``size`` bytes for us until ``fut``: no direct writes meanwhile."""
        self.sending(size)
        fut.add_done_callback(self._written)

    def _written(self, fut: asyncio.Future[None]) -> None:
        if fut.exception() is not None:
            return
        stream = self.conn.ws_stream()
        if stream is None or stream.writing():
            return  # more is buffered: the callback of a later write follows
        if self.written():
            self.conn.gateway.mark_dirty(self)


def fan_out(
    outlets: dict[str, Outlet],
    targets: Iterable[str],
    frame_of: Callable[[Peer], bytes],
    dirty: list[Outlet],
    *,
    direct: bool,
) -> tuple[int, int, int, int]:
    """Give one delivery to every welcomed target; returns (recipients, writes, bytes written,
    recipients skipped because the frame alone exceeds their send-queue bound).

    Runs once per recipient of every message, so it is one loop over slotted outlets with one
    Python call per recipient. The frame is built once per client protocol (``frame_of``) and
    the same bytes go to everyone. With ``direct`` (the router's batch held only this message:
    nothing to coalesce it with) an idle connection gets it written at once; otherwise it is
    queued, and outlets with a first frame queued are appended to ``dirty`` for one write each
    at the end of the batch. A frame larger than a connection's whole send-queue bound is never
    given to it (not even by a direct write, which would bypass the bound): it is skipped and
    counted, and the connection stays (the router's --max-publish-bytes keeps such messages out).
    """
    frames: dict[type, bytes] = {}
    kind: type | None = None
    frame = b""
    size = sent = writes = nbytes = oversize = 0
    for sid in targets:
        out = outlets.get(sid)
        if out is None or not out.live:
            continue
        if type(out.conn) is not kind:
            kind = type(out.conn)
            cached = frames.get(kind)
            if cached is None:
                cached = frames[kind] = frame_of(out.conn)
            frame = cached
            size = len(frame)
        if size > out.limit:
            oversize += 1
            continue
        if direct and not out.pending and not out.inflight:
            out.send_now(frame)
            writes += 1
            nbytes += size
        else:
            queued = out.push(frame)
            if queued == FIRST:
                dirty.append(out)
            elif queued == REFUSED:
                out.conn.overflow()
                continue
        sent += 1
    return sent, writes, nbytes, oversize


def write_queued(outlets: Iterable[Outlet]) -> tuple[int, int]:
    """Write each outlet's queue in one write; returns (writes, bytes)."""
    writes = nbytes = 0
    for out in outlets:
        data = out.take()
        if data is not None:
            writes += 1
            nbytes += len(data)
            out.send_now(data)
    return writes, nbytes


# How long a connection closed for an oversize frame keeps reading (and dropping) what its
# client still sends, so that closing does not reset it and lose the 1009 close frame.
_LINGER_S = 2.0
_LINGERING: set[asyncio.Task[None]] = set()


class _Protocol(tornado.websocket.WebSocketProtocol13):
    handler: Connection
    _lingering = False

    def _write_frame(
        self, fin: bool, opcode: int, data: bytes, flags: int = 0
    ) -> asyncio.Future[None]:
        # Tornado's own frames (pong, close) share the socket with our direct writes: while
        # any of it is buffered, the send queue must count it in flight.
        fut = super()._write_frame(fin, opcode, data, flags)
        stream = self.stream
        if stream is not None and stream.writing():
            self.handler.queue.hold(fut, len(data) + 2)
        return fut

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if self._lingering:
            return  # the close frame is out; the linger task closes the stream
        if code == CloseCode.MESSAGE_TOO_BIG:
            # Tornado closes with 1009 itself when a frame is over the limit: say goodbye in
            # the protocol first (Socket.IO's "41", as for every close we decide), record why,
            # and linger instead of the abort that follows (a client still sending its
            # oversize frame would otherwise get a reset instead of our close frame).
            handler = self.handler
            if handler.close_cause is None:
                handler.goodbye()
                handler.write_queued()
                handler.close_cause = "frame_too_big"
            super().close(code, reason)
            self._linger()
            return
        super().close(code, reason)

    def _abort(self) -> None:
        if self._lingering:
            self.client_terminated = self.server_terminated = True
            return
        super()._abort()

    def _linger(self) -> None:
        stream = self.stream
        if stream is None or stream.closed():
            return
        self._lingering = True
        task = asyncio.ensure_future(self._drain(stream))
        _LINGERING.add(task)
        task.add_done_callback(_LINGERING.discard)

    async def _drain(self, stream: tornado.iostream.IOStream) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _LINGER_S
        try:
            while loop.time() < deadline:
                await asyncio.wait_for(
                    stream.read_bytes(65536, partial=True), deadline - loop.time()
                )
        except (tornado.iostream.StreamClosedError, TimeoutError):
            pass
        finally:
            self._lingering = False
            stream.close()
