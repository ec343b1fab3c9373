"""Socket.IO over Engine.IO HTTP long-polling (v3 and v4) on ``/socket.io/?transport=polling``.

A :class:`PollingSession` is a socket like any other (a :class:`gateway.sio_handler.SioPeer` in
the hub: registered with the router, in rooms, pinged, closed on timeout); only its transport
differs. Its outlet (:class:`PollOutlet`) keeps payload fragments instead of WebSocket frames
and hands them, joined into one payload, to the client's pending GET, one payload per GET.
POSTs carry the client's packets. The client usually upgrades: it opens a WebSocket with the
session's ``sid`` (``SioHandler``), probes it (``2probe``/``3probe``), and on its ``5`` the
WebSocket carries on the same socket (:meth:`gateway.hub.Gateway.replace`); what was queued
for the session moves to it.

Every refusal is an HTTP status with Engine.IO's error body ``{"code", "message"}`` (or the
reference server's bare status) and is counted in ``roomcast_gateway_polling_errors_total``.
Sessions live in one gateway's memory: every request of a session must reach the gateway that
holds it (sticky sessions, docs/architecture.md); elsewhere it gets 400 "Session ID unknown".
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import tornado.routing
import tornado.web
from tornado.httputil import HTTPServerRequest

from gateway import eio_polling, sails, socketio
from gateway.connection import Outlet
from gateway.sio_handler import SioPeer
from gateway.tokens import TokenError

if TYPE_CHECKING:
    from gateway.hub import Gateway

__all__ = [
    "PollOutlet",
    "PollingHandler",
    "PollingSession",
    "PollingSessionV3",
    "PollingSessionV4",
    "Sessions",
    "new_session",
    "polling_rule",
]

# Engine.IO's HTTP error codes (the body of a 400/403).
E_TRANSPORT_UNKNOWN, E_UNKNOWN_SID, E_BAD_HANDSHAKE, E_BAD_REQUEST, E_FORBIDDEN, E_VERSION = range(
    6
)
_MESSAGES = {
    E_UNKNOWN_SID: "Session ID unknown",
    E_BAD_REQUEST: "Bad request",
    E_FORBIDDEN: "Forbidden",
    E_VERSION: "Unsupported protocol version",
}
_CLOSE_PACKET = b"1"


class PollOutlet(Outlet):
    """A polling session's send queue: payload fragments for the pending GET (``poll``).

    The hub's delivery loop treats it as any outlet: ``take`` gives the joined payload only
    while a GET waits (otherwise everything stays queued, bounded as usual, for the next GET),
    and ``send_now`` answers that GET (or queues, when none waits)."""

    __slots__ = ("eio", "poll", "poll_since")

    def __init__(self, limit_bytes: int, conn: PollingSession, eio: int) -> None:
        super().__init__(limit_bytes, conn)
        self.eio = eio
        self.poll: asyncio.Future[bytes] | None = None  # the GET waiting for a payload
        self.poll_since = 0.0

    def take(self) -> bytes | None:
        if self.poll is None:
            return None
        return self.collect()

    def collect(self) -> bytes | None:
        """Everything queued as one payload (None when nothing is)."""
        frames = self._frames
        if not frames:
            return None
        data = eio_polling.separator(self.eio).join(frames)
        frames.clear()
        self.pending = 0
        return data

    def send_now(self, data: bytes) -> None:
        poll = self.poll
        if poll is None:
            self.push(data)  # for the next GET (fan_out checked the bound)
            return
        self.poll = None
        if not poll.done():
            poll.set_result(data)

    def answer(self, extra: bytes = b"") -> bool:
        """Answer the pending GET with what is queued (plus ``extra``, a fragment); False if
        no GET waits."""
        if self.poll is None:
            return False
        if extra:
            self._frames.append(extra)
            self.pending += len(extra)
        data = self.collect()
        if data is None:
            return False
        self.send_now(data)
        return True

    def hand_over(self) -> list[bytes]:
        """The queued packets, for the transport that takes over (the queue is emptied)."""
        packets = eio_polling.split_fragments(self.eio, self._frames)
        self.discard()
        return packets


class PollingSession(SioPeer):
    """One Socket.IO socket carried by HTTP long-polling requests (made by :func:`new_session`,
    as :class:`PollingSessionV3` or :class:`PollingSessionV4`)."""

    queue: PollOutlet

    def __init__(self, gateway: Gateway, sessions: Sessions, eio: int, request: Any) -> None:
        self.request = request
        self.sessions = sessions
        self.init_peer(gateway, PollOutlet(gateway.config.max_send_queue_bytes, self, eio))
        self.init_sio(gateway, eio)
        self.successor: SioPeer | None = None  # the WebSocket it was upgraded to
        self.prober: Any = None  # a WebSocket probing to take over (SioHandler)
        self.upgrading = False  # the probe succeeded: polls are answered with a noop
        self.ended_at: float | None = None  # closed: keeps its last payload for one poll
        self.posting = False  # a POST body is being read

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    # --- the transport (Peer) --------------------------------------------------------------

    def frame(self, payload: bytes) -> bytes:
        return eio_polling.fragment(self.eio, payload)

    def can_send(self) -> bool:
        return self.ended_at is None

    def end(self, code: int, reason: str) -> None:
        """Close: the next poll gets what is queued and Engine.IO's close packet."""
        if self.ended_at is not None:
            return
        self.ended_at = time.monotonic()
        self.gateway.metrics.polling_sessions.dec()
        if self.prober is not None:
            self.prober.close(1000)
        self.queue._frames.append(self.frame(_CLOSE_PACKET))  # past the bound: it is the last
        self.queue.answer()
        self.gateway.detach(self)

    def abort(self) -> None:
        self.end(1001, "going away")
        self.drop()

    def drop(self) -> None:
        """Forget the session (its last poll answered, or never coming)."""
        self.sessions.by_sid.pop(self.sid, None)
        poll = self.queue.poll
        if poll is not None and not poll.done():
            poll.set_result(self.frame(eio_polling.NOOP))
        self.queue.poll = None

    def client_closed(self) -> None:
        if self.close_cause is None:
            self.close_cause = "client"
            self.gateway.count_disconnect("client")
        self.end(1000, "")

    def transport_error(self, reason: str) -> None:
        """A polling request went wrong (overlap, a dropped poll): the session is closed."""
        if self.close_cause is None:
            self.close_cause = reason
            self.gateway.count_disconnect(reason)
        self.end(1000, reason)

    # --- after an upgrade, whatever still refers to this object reaches the WebSocket -------

    def send_payload(self, payload: bytes) -> None:
        if self.successor is not None:
            self.successor.send_payload(payload)
        else:
            super().send_payload(payload)

    def on_registered(self) -> None:
        if self.successor is not None:
            self.successor.on_registered()
        else:
            super().on_registered()

    def disconnect(self, code: int, reason: str) -> None:
        if self.successor is not None:
            self.successor.disconnect(code, reason)
        else:
            super().disconnect(code, reason)

    # --- the upgrade -----------------------------------------------------------------------

    def probed(self) -> None:
        """The WebSocket answered its probe: drain the pending poll (the client pauses)."""
        self.upgrading = True
        self.queue.answer(self.frame(eio_polling.NOOP))

    def retire(self, successor: SioPeer) -> None:
        """The WebSocket carries on: hand it what is queued, and forget this transport."""
        self.successor = successor
        self.prober = None
        self.ended_at = time.monotonic()
        self.gateway.metrics.polling_sessions.dec()
        self.gateway.metrics.upgrades.inc()
        for packet in self.queue.hand_over():
            successor.send_payload(packet)
        self.drop()

    # --- inbound ---------------------------------------------------------------------------

    def receive(self, body: bytes) -> None:
        """A POST's payload (raises PayloadError; the caller closes the session)."""
        packets = eio_polling.decode_payload(self.eio, body)
        metrics = self.gateway.metrics
        for packet in packets:
            if self.ended_at is not None:
                return
            metrics.frames_in.inc()
            self.on_packet(packet)

    def tick(self, now: float) -> None:
        if self.ended_at is not None:
            return
        super().tick(now)


class PollingSessionV3(PollingSession):
    """EIO=3: length-prefixed fragments."""


class PollingSessionV4(PollingSession):
    """EIO=4: bare fragments."""


def new_session(gateway: Gateway, sessions: Sessions, eio: int, request: Any) -> PollingSession:
    """A session of the version's own class: the delivery loop frames a message once per class
    of recipient (``fan_out``), and v3 and v4 fragments differ."""
    cls = PollingSessionV3 if eio == 3 else PollingSessionV4
    return cls(gateway, sessions, eio, request)


class Sessions:
    """The gateway's polling sessions by sid, and their per-second timers."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.by_sid: dict[str, PollingSession] = {}

    def get(self, sid: str) -> PollingSession | None:
        return self.by_sid.get(sid)

    def tick(self, now: float) -> None:
        config = self.gateway.config
        for session in list(self.by_sid.values()):
            queue = session.queue
            if session.ended_at is not None:
                if now - session.ended_at > config.sio_closed_linger_s:
                    session.drop()
            elif queue.poll is not None and now - queue.poll_since > config.sio_poll_timeout_s:
                queue.answer(session.frame(eio_polling.NOOP))


def _query(request: HTTPServerRequest, name: str) -> str:
    values = request.query_arguments.get(name)
    return values[-1].decode("utf-8", "replace") if values else ""


class _PollingMatcher(tornado.routing.PathMatches):
    """``/socket.io/`` requests for the polling transport (the rest go to SioHandler)."""

    def match(self, request: HTTPServerRequest) -> dict[str, Any] | None:
        if _query(request, "transport") != "polling":
            return None
        return super().match(request)


def polling_rule(gateway: Gateway, sessions: Sessions) -> tornado.routing.Rule:
    return tornado.routing.Rule(
        _PollingMatcher(r"/socket\.io/?"),
        PollingHandler,
        {"gateway": gateway, "sessions": sessions},
    )


@tornado.web.stream_request_body
class PollingHandler(tornado.web.RequestHandler):
    """One Engine.IO polling request: a handshake or poll (GET), packets (POST), CORS (OPTIONS)."""

    def initialize(self, gateway: Gateway, sessions: Sessions) -> None:
        self.gateway = gateway
        self.sessions = sessions
        self.session: PollingSession | None = None
        self.body = bytearray()
        self.body_done = False
        self.polling = False  # a GET waits on the session's outlet
        self.dropped = False  # the client closed the connection first

    # --- helpers ---------------------------------------------------------------------------

    def _refuse(self, status: int, reason: str, code: int | None = None, message: str = "") -> None:
        self.gateway.metrics.polling_errors.labels(reason).inc()
        self.set_status(status)
        if code is None:
            self.finish()
            return
        self.set_header("Content-Type", "application/json")
        self.finish({"code": code, "message": message or _MESSAGES[code]})

    def _cors(self) -> bool:
        """CORS headers for an allowed origin; False (403 sent) for another."""
        origin = self.request.headers.get("Origin")
        if origin is None:
            return True
        allowed = self.gateway.config.allowed_origins
        same = urllib.parse.urlsplit(origin).netloc == self.request.host
        if allowed and origin not in allowed and not same:
            self.gateway.reject("origin")
            self._refuse(403, "origin", E_FORBIDDEN)
            return False
        self.set_header("Access-Control-Allow-Origin", origin)
        self.set_header("Access-Control-Allow-Credentials", "true")
        self.set_header("Vary", "Origin")
        return True

    def _lookup(self) -> PollingSession | None:
        """The session named by ``sid`` (None: refused already). Every request spends from
        the session's inbound budget, as a WebSocket frame does (then 429; 4003 on abuse)."""
        session = self.sessions.get(_query(self.request, "sid"))
        if session is None or session.successor is not None:
            self._refuse(400, "unknown_sid", E_UNKNOWN_SID)
            return None
        if str(session.eio) != _query(self.request, "EIO"):
            self._refuse(400, "bad_request", E_BAD_REQUEST)
            return None
        if not session.ended and session.over_limit():
            self._refuse(429, "rate_limited", E_BAD_REQUEST, "Too many requests")
            return None
        return session

    def _payload(self, data: bytes) -> None:
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(data)

    # --- requests --------------------------------------------------------------------------

    def prepare(self) -> None:
        method = self.request.method or ""
        self.gateway.metrics.polling_requests.labels(
            method if method in ("GET", "POST", "OPTIONS") else "other"
        ).inc()
        if not self._cors():
            return
        if method != "POST":
            return
        session = self._lookup()
        if session is None:
            return
        limit = self.gateway.config.max_frame_bytes
        length = self.request.headers.get("Content-Length")
        if length is None or not length.isdigit():
            session.transport_error("transport_error")
            self._refuse(411, "no_length")
            return
        if int(length) > limit:
            session.transport_error("transport_error")
            self._refuse(413, "too_large")
            return
        if session.posting:
            session.transport_error("transport_error")
            self._refuse(400, "post_overlap", E_BAD_REQUEST)
            return
        session.posting = True
        self.session = session
        connection = self.request.connection
        set_timeout = getattr(connection, "set_body_timeout", None)
        if set_timeout is not None:
            set_timeout(self.gateway.config.sio_post_body_timeout_s)
        set_max = getattr(connection, "set_max_body_size", None)
        if set_max is not None:
            set_max(limit)

    def data_received(self, chunk: bytes) -> None:
        if self.session is not None:
            self.body += chunk

    def options(self) -> None:
        self.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        asked = self.request.headers.get("Access-Control-Request-Headers")
        if asked:
            self.set_header("Access-Control-Allow-Headers", asked[:256])
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    def post(self) -> None:
        session = self.session
        if session is None:
            return
        self.body_done = True
        session.posting = False
        try:
            session.receive(bytes(self.body))
        except eio_polling.PayloadError:
            session.transport_error("malformed_packet")
            self._refuse(400, "bad_payload", E_BAD_REQUEST)
            return
        self.set_header("Content-Type", "text/html")
        self.finish(b"ok")

    async def get(self) -> None:
        if _query(self.request, "j"):
            self._refuse(400, "bad_request", E_BAD_REQUEST)  # JSONP polling: not served
            return
        if not _query(self.request, "sid"):
            self._handshake()
            return
        session = self._lookup()
        if session is None:
            return
        queue = session.queue
        if queue.poll is not None:
            # Two polls at once: the reference server refuses the second and closes.
            self._refuse(400, "poll_overlap", E_BAD_REQUEST)
            session.transport_error("transport_error")
            return
        data = queue.collect()
        if data is None and (session.upgrading or session.ended):
            data = session.frame(eio_polling.NOOP)
        if data is not None:
            if session.ended and not queue.pending:
                session.drop()
            self._payload(data)
            return
        poll: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        queue.poll = poll
        queue.poll_since = time.monotonic()
        self.session = session
        self.polling = True
        data = await poll
        self.polling = False
        if session.ended and session.queue.poll is None and not session.queue.pending:
            session.drop()
        if not self.dropped:
            self._payload(data)

    def _handshake(self) -> None:
        gateway = self.gateway
        config = gateway.config
        eio = _query(self.request, "EIO")
        if eio not in ("3", "4"):
            self._refuse(400, "unsupported_version", E_VERSION)
            return
        if gateway.draining:
            self._refuse(503, "draining")
            return
        if len(gateway.conns) >= gateway.connection_cap:  # sessions, as the hub counts them
            gateway.reject("max_connections")
            self._refuse(503, "full")
            return
        session = new_session(gateway, self.sessions, int(eio), self.request)
        session.sdk_ok = sails.sdk_version_ok(
            _query(self.request, "__sails_io_sdk_version") or None
        )
        try:
            session.identity = gateway.authenticate(session.request_token())
        except TokenError as exc:
            session.auth_error = str(exc)
        self.sessions.by_sid[session.sid] = session
        gateway.metrics.polling_sessions.inc()
        session.send_payload(
            socketio.encode_open(
                session.sid,
                ping_interval_ms=int(config.sio_ping_interval_s * 1000),
                ping_timeout_ms=int(config.sio_ping_timeout_s * 1000),
                max_payload=config.max_frame_bytes,
                upgrades=("websocket",),
            )
        )
        if session.auth_error is not None and not session.defers_auth():
            session.refuse_token()
        else:
            gateway.attach(session)
        self._payload(session.queue.collect() or b"")

    def on_connection_close(self) -> None:
        session, self.session = self.session, None
        self.dropped = True
        if session is None:
            return
        if self.polling:
            # The client dropped its poll: the reference server closes the session.
            poll = session.queue.poll
            session.queue.poll = None
            if poll is not None and not poll.done():
                poll.set_result(b"")
            self.gateway.metrics.polling_errors.labels("poll_closed").inc()
            session.transport_error("transport_error")
        elif self.request.method == "POST" and not self.body_done:
            session.posting = False
            self.gateway.metrics.polling_errors.labels("body_timeout").inc()
            session.transport_error("transport_error")
