"""``/socket.io/``: Socket.IO over WebSocket (EIO 3 and 4) for sails.io.js and socket.io-client.

Engine.IO ``open`` goes out at once; the Socket.IO namespace connect (our "welcome") only once
the router registered the socket, so the socket id is usable cluster-wide by then. Virtual
requests (events named by an HTTP method) become router ``Request`` commands and are answered
through the ack with a JWR. Packets that do not parse close the connection with 1008 (what a
Socket.IO server does: drop the client), after an Engine.IO/Socket.IO disconnect notice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import tornado.web
import tornado.websocket

from gateway import sails, socketio
from gateway.connection import Connection, Peer
from gateway.plainws import dumps
from gateway.tokens import TokenError
from roomcast.core import wire
from roomcast.core.closecodes import CloseCode
from roomcast.core.errors import BadRequest, InternalError, RateLimited, RoomcastError
from roomcast.core.rooms import validate_room

__all__ = ["GetCookieHandler", "SioHandler", "SioPeer", "sio_ticker"]

if TYPE_CHECKING:
    from gateway.hub import Gateway
    from gateway.polling import PollingSession, Sessions

log = logging.getLogger("roomcast.gateway")

# roomcast's Socket.IO extension events (plain Socket.IO clients never send them).
_PRESENCE_EVENTS = frozenset({"roomcast:presence", "roomcast:presence_stats"})

# The hub calls tick() once a second (gateway/hub.py, Gateway._tick).
_TICK_S = 1.0


class SioPeer(Peer):
    """A Socket.IO socket (Engine.IO v3 or v4), whatever its transport: WebSocket
    (:class:`SioHandler`) or HTTP long-polling (gateway/polling.py)."""

    def init_sio(self, gateway: Gateway, eio: int) -> None:
        self.eio = eio
        self.sdk_ok = False
        self.ns_requested = False  # EIO4: the client sent CONNECT for "/"
        self.last_seen = self.opened_at
        self.ping_sent_at: float | None = None  # EIO4: a ping awaits its pong
        # EIO4: the server pings on a fixed schedule, whatever else the client sends: the client
        # resets its heartbeat timer only on a ping (engine.io-client 6), not on other traffic.
        self.next_ping_at = self.last_seen + gateway.config.sio_ping_interval_s

    def adopt(self, other: SioPeer) -> None:
        """Carry on ``other``'s socket (an upgrade to this transport): its id and state."""
        self.sid = other.sid
        self.identity = other.identity
        self.auth_error = other.auth_error
        self.registered = other.registered
        self.hooking = other.hooking
        self.opened_at = other.opened_at
        self.limit = other.limit
        self.eio = other.eio
        self.sdk_ok = other.sdk_ok
        self.ns_requested = other.ns_requested
        self.last_seen = other.last_seen
        self.ping_sent_at = other.ping_sent_at
        self.next_ping_at = other.next_ping_at
        self.welcomed = other.welcomed

    def client_closed(self) -> None:
        """The client said goodbye (Engine.IO close, Socket.IO disconnect)."""
        raise NotImplementedError

    # --- Peer hooks ------------------------------------------------------------------------

    def event_frame(self, event: str, data_json: bytes, history_json: bytes = b"") -> bytes:
        if history_json:
            # An extra argument plain clients ignore: 42["event",data,{"roomcast":{...}}].
            extra = b',{"roomcast":{"history":' + history_json + b"}}"
            return self.frame(socketio.encode_event(event, data_json + extra))
        return self.frame(socketio.encode_event(event, data_json))

    def on_registered(self) -> None:
        super().on_registered()
        if self.eio == 3 or self.ns_requested:
            self._connect_namespace()

    def _connect_namespace(self) -> None:
        if not self.welcomed:
            self.welcomed = True
            self.send_payload(socketio.encode_connect(self.eio, self.sid))

    def goodbye(self) -> None:
        self.send_payload(socketio.SIO_DISCONNECT)

    def defers_auth(self) -> bool:
        # EIO4 clients may send the token in the CONNECT packet: {"token": "..."}.
        return self.eio == 4 and self.auth_error == "a token is required"

    def refuse_token(self) -> None:
        self.send_payload(socketio.encode_connect_error("/", self.auth_error or "token refused"))
        super().refuse_token()

    def _connect_auth(self, auth: Any) -> bool:
        """Check the CONNECT packet's auth object when the handshake carried no token.

        A token given there is verified even where anonymous clients are allowed: a bad one is
        refused, as it would be in the query or a header, never downgraded to anonymous.
        """
        if self.ns_requested:
            return True  # "/" is connected already: a repeated CONNECT changes nothing
        token = auth.get("token") if isinstance(auth, dict) else None
        if self.auth_error is None and (
            not (isinstance(token, str) and token) or self.request_token() is not None
        ):
            return True  # the handshake's token (or anonymous, with no token anywhere) stands
        if isinstance(token, str) and token:
            try:
                self.identity = self.gateway.authenticate(token)
            except TokenError as exc:
                self.auth_error = str(exc)
            else:
                self.auth_error = None
                self.gateway.identify(self)
                return True
        self.refuse_token()
        return False

    def report_error(self, ref: object, err: RoomcastError) -> None:
        body = dumps(err.as_body())
        if isinstance(ref, int):
            self._ack(ref, sails.encode_jwr(err.status, body, b"{}"))
        else:
            self.send_payload(socketio.encode_event("sails:parseError", body))

    def _ack(self, ack: int, jwr: bytes) -> None:
        self.send_payload(socketio.encode_ack(ack, jwr))

    # --- inbound ---------------------------------------------------------------------------

    def on_packet(self, message: str) -> None:
        """One Engine.IO packet from the client, whatever carried it."""
        self.last_seen = time.monotonic()
        try:
            packet = socketio.parse(message)
        except socketio.PacketError as exc:
            self._malformed(str(exc))
            return
        kind = packet.kind
        # Every packet spends from the budget (a ping flood is as abusive as an event flood);
        # over it, pings go unanswered and events get 429 (then 4003 on sustained abuse).
        limited = self.over_limit()
        if kind == "ping":  # EIO3: the client pings
            if not limited:
                self.send_payload(socketio.PONG + packet.data)
        elif kind == "pong":
            self.ping_sent_at = None
        elif kind == "close" or kind == "disconnect":
            self.client_closed()
        elif kind == "connect":
            if packet.namespace != "/":
                self.send_payload(
                    socketio.encode_connect_error(packet.namespace, "Invalid namespace")
                )
                return
            if not self._connect_auth(packet.args[0] if packet.args else None):
                return
            self.ns_requested = True
            if self.registered:
                self._connect_namespace()
        elif kind == "event":
            if limited:
                self.fail(packet.ack, RateLimited("too many messages: slow down"))
                return
            if packet.namespace != "/":
                self.fail(packet.ack, BadRequest("only the / namespace is served"))
                return
            self._on_event(packet)
        # "noop" and client acks need nothing

    def _malformed(self, why: str) -> None:
        self.gateway.count_error(BadRequest(why))
        self.disconnect(CloseCode.POLICY_VIOLATION, "malformed_packet")

    def _on_event(self, packet: socketio.Packet) -> None:
        event = packet.args[0]
        if event in _PRESENCE_EVENTS and self.welcomed:
            self._presence(packet, stats=event == "roomcast:presence_stats")
            return
        if event == "roomcast:recover" and self.welcomed:
            self._recover(packet)
            return
        if event not in sails.VIRTUAL_METHODS:
            if packet.ack is not None:
                self.fail(packet.ack, BadRequest(f"unknown event {event[:64]!r}"))
            else:
                self.gateway.count_error(BadRequest("unknown event"))
            return
        try:
            if not self.welcomed:
                raise BadRequest("namespace not connected")
            if not self.sdk_ok:
                raise BadRequest(
                    "the handshake must carry __sails_io_sdk_version >= 0.11.0 "
                    "(use the sails.io.js client, or add it to the connection query)"
                )
            request = sails.parse_virtual_request(event, packet.args[1:])
        except RoomcastError as err:
            self.fail(packet.ack, err)
            return
        self.gateway.spawn(self._request(packet.ack, request))

    def _presence(self, packet: socketio.Packet, *, stats: bool) -> None:
        """roomcast extension: ``emit("roomcast:presence", {room}, ack)`` -> JWR with presence."""
        try:
            arg = packet.args[1] if len(packet.args) > 1 else None
            room = validate_room(arg.get("room") if isinstance(arg, dict) else None)
            self.gateway.authorize(self.identity, [room], publish=False)
        except RoomcastError as err:
            self.fail(packet.ack, err)
            return
        kind = wire.QueryKind.PRESENCE_STATS if stats else wire.QueryKind.PRESENCE
        self.gateway.spawn(
            self._query(
                packet.ack, "presence", lambda ref: wire.Query(ref=ref, kind=kind, target=room)
            )
        )

    def _recover(self, packet: socketio.Packet) -> None:
        """roomcast extension: ``emit("roomcast:recover", {room, epoch, offset}, ack)`` -> JWR
        ``{recovered, epoch, offset, messages}`` (after re-joining through an action)."""
        try:
            arg = packet.args[1] if len(packet.args) > 1 else None
            if not isinstance(arg, dict):
                raise BadRequest("roomcast:recover needs {room, epoch, offset}")
            room = validate_room(arg.get("room"))
            epoch, offset = arg.get("epoch", ""), arg.get("offset", 0)
            if (
                not isinstance(epoch, str)
                or isinstance(offset, bool)
                or not isinstance(offset, int)
            ):
                raise BadRequest("epoch must be a string and offset an integer")
            if not 0 <= offset < 2**63:
                raise BadRequest("offset out of range")
            self.gateway.authorize(self.identity, [room], publish=False)
        except RoomcastError as err:
            self.fail(packet.ack, err)
            return

        self.gateway.spawn(
            self._query(
                packet.ack,
                "recover",
                lambda ref: wire.Query(
                    ref=ref,
                    kind=wire.QueryKind.RECOVER,
                    target=room,
                    epoch=epoch,
                    offset=offset,
                    max_bytes=self.gateway.config.max_send_queue_bytes // 2,  # see plain_handler
                ),
            )
        )

    async def _query(self, ack: int | None, name: str, make: Callable[[int], wire.Message]) -> None:
        """Ask the router; its JSON answer goes back through the ack as a 200 JWR."""
        try:
            reply = await self.gateway.run_op(name, make)
        except RoomcastError as err:
            self.fail(ack, err)
            return
        if ack is not None:
            self._ack(ack, sails.encode_jwr(200, reply.body, b"{}"))

    async def _request(self, ack: int | None, request: sails.VirtualRequest) -> None:
        sid = self.sid
        try:
            reply = await self.gateway.run_op(
                "request",
                lambda ref: wire.Request(
                    ref=ref,
                    socket=sid,
                    method=request.method,
                    url=request.url,
                    headers=request.headers,
                    data=request.data,
                ),
            )
        except RoomcastError as err:
            self.fail(ack, err)
            return
        except Exception:
            log.exception("virtual request failed")
            self.fail(ack, InternalError("internal error"))
            return
        if ack is not None:
            self._ack(ack, sails.encode_jwr(reply.status, reply.body, reply.headers))

    # --- Engine.IO heartbeats (run by the hub once a second) -------------------------------

    def tick(self, now: float) -> None:
        config = self.gateway.config
        # Socket.IO's connectTimeout: a client that never asks for "/" (and so may never present
        # its token) must not hold a connection slot forever.
        waited = now - self.opened_at
        if self.eio == 4 and not self.ns_requested and waited > config.sio_connect_timeout_s:
            self.disconnect(CloseCode.POLICY_VIOLATION, "connect_timeout")
            return
        if self.eio == 3:
            # EIO3 clients ping every interval; silence past interval + timeout is a dead peer.
            if now - self.last_seen > config.sio_ping_interval_s + config.sio_ping_timeout_s:
                self.disconnect(CloseCode.GOING_AWAY, "ping_timeout")
            return
        if self.ping_sent_at is not None:
            if now - self.ping_sent_at > config.sio_ping_timeout_s:
                self.disconnect(CloseCode.GOING_AWAY, "ping_timeout")
        elif now + _TICK_S > self.next_ping_at:
            # Never late, up to a tick early: the client allows pingInterval + pingTimeout from
            # the handshake or the last ping, and a ping sent at the first tick *after* it is
            # due (or "interval after the pong") can be a whole tick late, past that allowance
            # when the timeout is short. Scheduled from the previous ping, not from the pong.
            self.ping_sent_at = now
            self.next_ping_at = now + config.sio_ping_interval_s
            self.send_payload(socketio.PING)


class SioHandler(SioPeer, Connection):
    """Socket.IO over WebSocket: a new socket, or one upgraded from HTTP long-polling (the
    client opens it with the polling session's ``sid``, probes it, then sends ``5``)."""

    def initialize(self, gateway: Gateway, sessions: Sessions | None = None) -> None:
        super().initialize(gateway)
        self.init_sio(gateway, 4)
        self.sessions = sessions
        self.upgrade_from: PollingSession | None = None  # probing to take this session over
        self._upgrade_timer: asyncio.TimerHandle | None = None

    async def get(self, *args: Any, **kwargs: Any) -> None:
        # Engine.IO answers what is neither polling (gateway/polling.py) nor a WebSocket
        # handshake with 400 "Transport unknown".
        eio = self.get_query_argument("EIO", "")
        transport = self.get_query_argument("transport", "")
        upgrade = self.request.headers.get("Upgrade", "").lower() == "websocket"
        if transport != "websocket" or not upgrade:
            self._http_error(0, "Transport unknown")
            return
        if eio not in ("3", "4"):
            self._http_error(5, "Unsupported protocol version")
            return
        self.eio = int(eio)
        sid = self.get_query_argument("sid", None)
        if sid is not None:
            session = self.sessions.get(sid) if self.sessions is not None else None
            if session is None or session.ended or session.prober is not None:
                self.gateway.metrics.polling_errors.labels("unknown_sid").inc()
                self._http_error(1, "Session ID unknown")
                return
            if session.eio != self.eio:
                self.gateway.metrics.polling_errors.labels("bad_request").inc()
                self._http_error(3, "Bad request")
                return
            self.upgrade_from = session
            session.prober = self
            # The session was admitted (connection bound, token) at its polling handshake.
            await tornado.websocket.WebSocketHandler.get(self, *args, **kwargs)
            return
        self.sdk_ok = sails.sdk_version_ok(self.get_query_argument("__sails_io_sdk_version", None))
        await super().get(*args, **kwargs)

    def _http_error(self, code: int, message: str) -> None:
        self.gateway.metrics.client_errors.labels("transport").inc()
        self.set_status(400)
        self.set_header("Content-Type", "application/json")
        self.finish({"code": code, "message": message})

    # --- the WebSocket ----------------------------------------------------------------------

    def open(self, *args: str, **kwargs: str) -> None:
        session = self.upgrade_from
        if session is not None:
            self.take_stream()
            self.set_nodelay(True)
            if session.ended or session.prober is not self:
                self.upgrade_from = None
                self.close(1000)
                return
            timeout = self.gateway.config.sio_upgrade_timeout_s
            loop = asyncio.get_running_loop()
            self._upgrade_timer = loop.call_later(timeout, self._upgrade_failed)
            return
        config = self.gateway.config
        self.send_payload(
            socketio.encode_open(
                self.sid,
                ping_interval_ms=int(config.sio_ping_interval_s * 1000),
                ping_timeout_ms=int(config.sio_ping_timeout_s * 1000),
                max_payload=config.max_frame_bytes,
            )
        )
        super().open(*args, **kwargs)

    def on_message(self, message: str | bytes) -> None:
        self.gateway.metrics.frames_in.inc()
        if self.upgrade_from is not None:
            self._probing(message)
            return
        if isinstance(message, bytes):
            self.last_seen = time.monotonic()
            self._malformed("binary frames are not supported")
            return
        self.on_packet(message)

    def _probing(self, message: str | bytes) -> None:
        """The upgrade's exchange: ``2probe`` -> ``3probe``, then ``5`` (anything else fails
        the upgrade, as with the reference server; the polling session carries on)."""
        session = self.upgrade_from
        assert session is not None
        if message == "2probe" and not session.upgrading:
            self.push(self.frame(b"3probe"))
            self.write_queued()
            session.probed()
        elif message == "5" and session.upgrading:
            self._upgraded(session)
        else:
            self._upgrade_failed()

    def _upgraded(self, session: PollingSession) -> None:
        if self._upgrade_timer is not None:
            self._upgrade_timer.cancel()
        self.upgrade_from = None
        self.adopt(session)
        self.gateway.replace(session, self)
        session.retire(self)
        self.write_queued()

    def _upgrade_failed(self) -> None:
        session = self.upgrade_from
        if session is None:
            return
        self.upgrade_from = None
        if session.prober is self:
            session.prober = None
            session.upgrading = False
        self.close(1000)

    def on_close(self) -> None:
        if self._upgrade_timer is not None:
            self._upgrade_timer.cancel()
        if self.upgrade_from is not None:
            self._upgrade_failed()  # a probe that went away: nothing to count or detach
            return
        super().on_close()

    def client_closed(self) -> None:
        self.close(1000)


def sio_ticker(conns: dict[str, Peer]) -> Any:
    """The hub's per-second callback that runs every Socket.IO connection's heartbeat."""

    def tick(now: float) -> None:
        for conn in list(conns.values()):
            if isinstance(conn, SioPeer):
                conn.tick(now)

    return tick


class GetCookieHandler(tornado.web.RequestHandler):
    """``/__getcookie``: sails.io.js loads it as a script from other origins before connecting."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/javascript; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish("_sailsIoJSConnect();")
