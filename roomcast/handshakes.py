"""What becomes of CURVE handshakes: which failures are refusals, and who hears of them.

Owns the socket monitor (``zmq_socket_monitor``) that :meth:`roomcast.curve.SocketOptions.apply`
puts on every CURVE socket, the reasons a router refuses a handshake (the label values of its
metric), and the log lines on both ends. It exists because a refused peer otherwise looks like
a router that is down, on both sides: the client sees no error, the router sees no command.
It never decides who is admitted (the authenticator in :mod:`roomcast.curve` does), never
touches a key, and logs as ``roomcast.curve`` like the rest of CURVE.

Each monitor is read by a small daemon thread that ends when its socket closes
(``EVENT_MONITOR_STOPPED``) or the context terminates (``ETERM``), so ``close()`` and ``term()``
are unaffected; a socket with CURVE off has none. Lines are throttled: a flood of refused
peers gives one line per reason per :data:`REFUSAL_LOG_INTERVAL_S` on the router, and a client
retrying a failing handshake one line per streak, then one a minute.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

__all__ = [
    "HANDSHAKE_FAILED",
    "REFUSAL_LOG_INTERVAL_S",
    "REFUSAL_REASONS",
    "UNAUTHORIZED_KEY",
    "ClientReport",
    "Refusals",
    "Report",
    "Throttle",
    "refusal_reason",
    "watch",
]

log = logging.getLogger("roomcast.curve")

# Why the router refused a handshake: the label values of its refusal counter.
UNAUTHORIZED_KEY = "unauthorized_key"  # a good handshake, but the key is not authorized (ZAP)
HANDSHAKE_FAILED = "handshake_failed"  # no CURVE, another router key, or not ZeroMQ at all
REFUSAL_REASONS = (UNAUTHORIZED_KEY, HANDSHAKE_FAILED)
REFUSAL_LOG_INTERVAL_S = 10.0  # the router: at most one refusal line per reason this often
_CLIENT_LOG_INTERVAL_S = 60.0  # a client: a failing handshake's reminder line, this often
_WATCHED = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_MONITOR_STOPPED
)
_monitor_ids = itertools.count(1)  # inproc endpoints of the monitors (unique per process)

# A handshake event of a monitored socket: (event, value, endpoint), called on its monitor thread.
Report = Callable[[int, int, str], None]


def refusal_reason(event: int) -> str | None:
    """The router's refusal reason for a monitor event of a CURVE server socket (None: not one).

    ``EVENT_HANDSHAKE_FAILED_AUTH`` is the authenticator's "no" (the key is not authorized);
    ``_PROTOCOL`` is a peer without CURVE or whose handshake does not decrypt (it expects another
    router key); ``_NO_DETAIL`` is a peer that sent something else than ZeroMQ, or hung up.
    """
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return UNAUTHORIZED_KEY
    if event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
        return HANDSHAKE_FAILED
    return None


def _failure(event: int, value: int) -> str:
    """What a failed handshake's event says, for a log line (the same words on both ends)."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return "one end uses CURVE and the other does not"
        if value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
            return "the handshake does not decrypt: the client expects another router key"
        return f"protocol error 0x{value:x}"
    return "the connection closed during the handshake"


class Throttle:
    """At most one log line per key per ``interval_s``, counting those held back (thread-safe)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str, now: float) -> int | None:
        """Lines held back since the last one if a line for ``key`` may go out now, else None."""
        with self._lock:
            if key in self._next and now < self._next[key]:
                self._held[key] = self._held.get(key, 0) + 1
                return None
            self._next[key] = now + self.interval_s
            return self._held.pop(key, 0)

    def reset(self, key: str) -> None:
        """Forget ``key``: its next line goes out at once."""
        with self._lock:
            self._next.pop(key, None)
            self._held.pop(key, None)


def _more(held: int) -> str:
    return f" ({held} more since the last such line)" if held else ""


def watch(sock: zmq.Socket[Any], report: Report) -> None:
    """Call ``report`` with ``sock``'s handshake events, on a daemon thread, until it closes.

    Call before ``bind``/``connect`` (from the socket's thread), so no handshake is missed. The
    thread owns the monitor's PAIR socket and closes it when the monitored socket closes
    (``EVENT_MONITOR_STOPPED``) or the context terminates (``ETERM``), so ``term()`` never waits
    on it. The PAIR is not registered with the context: ``Context.destroy()`` (in tests) must
    not close it from another thread.
    """
    ctx = sock.context
    endpoint = f"inproc://roomcast.curve.monitor.{next(_monitor_ids)}"
    sock.monitor(endpoint, _WATCHED)
    pair: zmq.Socket[bytes] = zmq.Socket(ctx, zmq.PAIR)
    pair.setsockopt(zmq.LINGER, 0)
    pair.connect(endpoint)
    thread = threading.Thread(
        target=_read_monitor, args=(pair, report), name="roomcast-curve-monitor", daemon=True
    )
    thread.start()


def _read_monitor(pair: zmq.Socket[bytes], report: Report) -> None:
    try:
        while True:
            try:
                event = parse_monitor_message(pair.recv_multipart())
            except zmq.ZMQError:  # ETERM: the context is terminating
                return
            kind = int(event["event"])
            if kind == zmq.EVENT_MONITOR_STOPPED:
                return
            try:
                report(kind, int(event["value"]), event["endpoint"].decode("utf-8", "replace"))
            except Exception:  # a bug of ours: keep watching the socket
                log.exception("CURVE handshake report failed")
    finally:
        pair.close(linger=0)


class ClientReport:
    """A CURVE client socket's handshakes, logged: what the router refused and what to check.

    The router's "no" to our key, and a router without CURVE, are ERROR (this process cannot
    work until it is reconfigured, and libzmq does not retry that socket); a handshake that
    fails (another router key: the router just hangs up, and libzmq retries every
    ``RECONNECT_IVL``) is WARNING, first at once and then at most every minute until one
    succeeds.
    """

    def __init__(self) -> None:
        self._throttle = Throttle(_CLIENT_LOG_INTERVAL_S)

    def event(self, event: int, value: int, endpoint: str) -> None:
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._throttle.reset("failed")
        elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            log.error(
                "router %s refused our CURVE key (ZAP status %d): our public key is not among "
                "its authorized keys; this link stays down until it is authorized and this "
                "process restarts",
                endpoint,
                value,
            )
        elif (
            event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
        ):
            log.error("router %s does not use CURVE, but this process does", endpoint)
        elif event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
            held = self._throttle.allow("failed", time.monotonic())
            if held is not None:
                log.warning(
                    "CURVE handshake with router %s failed (%s): is our curve server key the "
                    "router's public key?%s",
                    endpoint,
                    _failure(event, value),
                    _more(held),
                )


class Refusals:
    """The router's refused handshakes: each counted, and logged (throttled) at WARNING.

    :meth:`event` runs on the monitor threads of the router's CURVE sockets and counts every
    refusal; :meth:`unauthorized` runs on the authenticator's thread and logs an unknown key's
    refusal with the peer's address (the monitor's event for it is counted, not logged again).
    """

    def __init__(self, refused: Callable[[str], None], where: str) -> None:
        self._refused = refused
        self.where = where
        self._throttle = Throttle(REFUSAL_LOG_INTERVAL_S)

    def event(self, event: int, value: int, endpoint: str) -> None:
        reason = refusal_reason(event)
        if reason is None:
            return
        self._refused(reason)
        if reason == UNAUTHORIZED_KEY:
            return
        held = self._throttle.allow(reason, time.monotonic())
        if held is None:
            log.debug("refused a CURVE handshake on %s again", endpoint)
            return
        log.warning(
            "refused a CURVE handshake on %s: %s%s", endpoint, _failure(event, value), _more(held)
        )

    def wrong_role(self, address: str, role: str, needed: str) -> None:
        """An authorized key used where its role is not admitted (logged like ``unauthorized``;
        the monitor's event counts it as an unauthorized key)."""
        held = self._throttle.allow(f"wrong_role:{role}", time.monotonic())
        if held is None:
            return
        log.warning(
            "refused a CURVE client from %s: its key's role (%s) may not use the %s%s",
            address,
            role,
            needed,
            _more(held),
        )

    def unauthorized(self, address: str) -> None:
        held = self._throttle.allow(UNAUTHORIZED_KEY, time.monotonic())
        if held is None:
            log.debug("refused a CURVE client from %s again (key not in %s)", address, self.where)
            return
        log.warning(
            "refused a CURVE client from %s: its public key is not in %s%s",
            address,
            self.where,
            _more(held),
        )
