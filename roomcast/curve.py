"""Optional CURVE encryption and authentication for the links between roomcast processes.

Owns everything that knows CURVE: reading pyzmq certificate files, the socket options that make
a socket a CURVE server or client, the router's authenticator, and ``python -m roomcast.curve
keygen`` (also ``roomcast keygen``). It does no I/O beyond reading (and, for keygen, writing) key
files, and never logs, reprs or puts into an error message a key: only file names.

Certificates are pyzmq's (``zmq.auth.create_certificates``): ``NAME.key`` holds a public key,
``NAME.key_secret`` the same public key and its secret key. Who holds what:

* the router: its own ``.key_secret`` (``--curve-secret-key``; both routers of a primary/backup
  pair use the same one, since gateways and clients know one router key) and a directory of the
  clients' public ``.key`` files (``--curve-authorized-keys``);
* each gateway, worker and SDK client: its own ``.key_secret`` (``--curve-key``) and the
  router's public ``.key`` (``--curve-server-key``).

With CURVE on, the router's bound sockets (commands, fanout, the pair link) are CURVE servers
and every socket connecting to them a CURVE client: traffic is encrypted, and a client whose
public key is not authorized, or that speaks plain ZeroMQ, or that expects another router key,
never completes its handshake (it sees the router as unreachable). CURVE is off when no key is
given; then :data:`PLAIN` options change nothing.

Refusals are visible on both ends, because a refused peer otherwise just looks like a router
that is down. :meth:`SocketOptions.apply` puts a socket monitor (``zmq_socket_monitor``) on every
CURVE socket, read by a small daemon thread that ends when the socket closes or the context
terminates; it is in ``apply`` because every CURVE socket of every roomcast process (gateway,
worker, SDK, the pair link) goes through it. A client logs the router's refusal of its key at
ERROR (libzmq does not retry a refused key or a mechanism mismatch on that socket) and a failed
handshake at WARNING, once per streak. The router counts each refused handshake by reason
(:data:`REFUSAL_REASONS`) through the callback :class:`ServerCurve` is given, and logs it at
WARNING at most once per reason per :data:`REFUSAL_LOG_INTERVAL_S` (a flood cannot fill the
log); an unauthorized key's line names the peer's IP address, which only the ZAP request
carries (the monitor reports our own bound endpoint).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

__all__ = [
    "HANDSHAKE_FAILED",
    "PLAIN",
    "REFUSAL_LOG_INTERVAL_S",
    "REFUSAL_REASONS",
    "UNAUTHORIZED_KEY",
    "ZAP_DOMAIN",
    "ServerCurve",
    "SocketOptions",
    "authorized_keys",
    "client_options",
    "keygen",
    "main",
    "public_key",
    "refusal_reason",
    "server_options",
]

log = logging.getLogger("roomcast.curve")

PathLike = str | os.PathLike[str]

# The ZAP domain of the router's CURVE sockets. With a domain set and ZAP_ENFORCE_DOMAIN, a
# handshake fails (closed) when no authenticator is running, instead of admitting any key.
ZAP_DOMAIN = b"roomcast"
_KEY_CHARS = 40  # a Z85-encoded 32-byte key
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # a certificate name (keygen)

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


@dataclasses.dataclass(frozen=True)
class SocketOptions:
    """Socket options to apply before ``bind``/``connect``; falsy for plain ZeroMQ (CURVE off).

    The values are keys: they are left out of ``repr`` (configs and logs may show this object).
    ``report`` receives the handshake events of the sockets these options are applied to (the
    router's refusal accounting, see :class:`ServerCurve`); a client without one logs its own.
    """

    mode: str = "plain"  # "plain", "server" or "client"
    options: tuple[tuple[int, int | bytes], ...] = dataclasses.field(default=(), repr=False)
    report: Report | None = dataclasses.field(default=None, repr=False, compare=False)

    def __bool__(self) -> bool:
        return bool(self.options)

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Set the options and, for a CURVE socket, watch its handshakes (see the module doc)."""
        for option, value in self.options:
            sock.setsockopt(option, value)
        report = self.report
        if report is None and self.mode == "client":
            report = _ClientReport().event
        if report is not None:
            _watch(sock, report)


PLAIN = SocketOptions()


def _load(path: PathLike, *, secret: bool) -> tuple[bytes, bytes | None]:
    name = os.fspath(path)
    if not os.path.exists(name):
        raise ValueError(f"CURVE certificate {name}: no such file")
    if not os.path.isfile(name):
        raise ValueError(f"CURVE certificate {name}: not a file")
    try:
        public, secret_key = zmq.auth.load_certificate(name)
    except OSError as exc:
        raise ValueError(f"cannot read CURVE certificate {name}: {exc.strerror or exc}") from None
    except ValueError:  # no public-key line
        raise ValueError(
            f"{name} is not a CURVE certificate (make one with `roomcast keygen`)"
        ) from None
    if not _is_key(public):
        raise ValueError(f"CURVE certificate {name}: its public-key is not a 40-character key")
    if not secret:
        return public, None
    if secret_key is None:
        raise ValueError(
            f"CURVE certificate {name} holds no secret key: give the .key_secret file, "
            "not the public .key"
        )
    if not _is_key(secret_key) or zmq.curve_public(secret_key) != public:
        raise ValueError(f"CURVE certificate {name}: its secret key does not match its public key")
    return public, secret_key


def _is_key(key: bytes) -> bool:
    if len(key) != _KEY_CHARS:
        return False
    try:
        z85.decode(key)
    except (ValueError, KeyError):  # KeyError: a character outside Z85's alphabet
        return False
    return True


def public_key(cert: PathLike) -> bytes:
    """The Z85 public key of a certificate (a ``.key`` or a ``.key_secret`` file)."""
    return _load(cert, secret=False)[0]


def server_options(secret_cert: PathLike) -> SocketOptions:
    """Options making a socket a CURVE server holding ``secret_cert`` (a ``.key_secret`` file)."""
    _public, secret = _load(secret_cert, secret=True)
    assert secret is not None
    options: list[tuple[int, int | bytes]] = [
        (zmq.CURVE_SERVER, 1),
        (zmq.CURVE_SECRETKEY, secret),
        (zmq.ZAP_DOMAIN, ZAP_DOMAIN),
    ]
    enforce = getattr(zmq, "ZAP_ENFORCE_DOMAIN", None)  # libzmq >= 4.3 (a draft option before)
    if enforce is not None:
        options.append((enforce, 1))
    return SocketOptions("server", tuple(options))


def client_options(own_secret_cert: PathLike, server_public_cert: PathLike) -> SocketOptions:
    """Options making a socket a CURVE client: our ``.key_secret``, the router's public ``.key``.

    Both empty: :data:`PLAIN` (CURVE off). Only one of them: ``ValueError``.
    """
    if not own_secret_cert and not server_public_cert:
        return PLAIN
    if not (own_secret_cert and server_public_cert):
        raise ValueError(
            "a CURVE client needs both its own secret key file (curve key) and the router's "
            "public key file (curve server key)"
        )
    public, secret = _load(own_secret_cert, secret=True)
    assert secret is not None
    server = public_key(server_public_cert)
    return SocketOptions(
        "client",
        (
            (zmq.CURVE_PUBLICKEY, public),
            (zmq.CURVE_SECRETKEY, secret),
            (zmq.CURVE_SERVERKEY, server),
        ),
    )


def authorized_keys(directory: PathLike) -> frozenset[bytes]:
    """The public keys of the ``*.key`` files in ``directory`` (a mounted Secret, say).

    Other files (``*.key_secret``, Kubernetes' ``..data`` links) are ignored. ``ValueError`` when
    the directory cannot be read, a ``.key`` file is not a certificate, or there is none.
    """
    name = os.fspath(directory)
    try:
        entries = sorted(e for e in os.listdir(name) if e.endswith(".key"))
    except OSError as exc:
        raise ValueError(f"cannot read the CURVE authorized keys directory {name}: {exc}") from None
    keys = frozenset(public_key(os.path.join(name, entry)) for entry in entries)
    if not keys:
        raise ValueError(
            f"no public certificates (*.key files) in the CURVE authorized keys directory {name}:"
            " no client could connect"
        )
    return keys


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


class _Throttle:
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


def _watch(sock: zmq.Socket[Any], report: Report) -> None:
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


class _ClientReport:
    """A CURVE client socket's handshakes, logged: what the router refused and what to check.

    The router's "no" to our key, and a router without CURVE, are ERROR (this process cannot
    work until it is reconfigured, and libzmq does not retry that socket); a handshake that
    fails (another router key: the router just hangs up, and libzmq retries every
    ``RECONNECT_IVL``) is WARNING, first at once and then at most every minute until one
    succeeds.
    """

    def __init__(self) -> None:
        self._throttle = _Throttle(_CLIENT_LOG_INTERVAL_S)

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


class _Refusals:
    """The router's refused handshakes: each counted, and logged (throttled) at WARNING.

    :meth:`event` runs on the monitor threads of the router's CURVE sockets and counts every
    refusal; :meth:`unauthorized` runs on the authenticator's thread and logs an unknown key's
    refusal with the peer's address (the monitor's event for it is counted, not logged again).
    """

    def __init__(self, refused: Callable[[str], None], where: str) -> None:
        self._refused = refused
        self.where = where
        self._throttle = _Throttle(REFUSAL_LOG_INTERVAL_S)

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


class _Authenticator(ThreadAuthenticator):
    """pyzmq's ZAP handler (on its own thread), admitting the keys of a fixed set.

    It is its own credentials provider so that a refusal can name the peer: the address is in
    the ZAP request (RFC 27: version, request id, domain, address, ...), not in the callback's
    arguments. Only the authenticator's thread touches ``_peer``.
    """

    def __init__(self, ctx: zmq.Context[Any], keys: frozenset[bytes], refusals: _Refusals) -> None:
        zap_log = logging.getLogger("roomcast.curve.zap")
        # pyzmq's handler logs each client's public key at DEBUG: keep keys out of our logs.
        zap_log.setLevel(max(zap_log.getEffectiveLevel(), logging.INFO))
        super().__init__(ctx, log=zap_log)
        self._keys = keys
        self._refusals = refusals
        self._peer = ""
        self.configure_curve_callback(ZAP_DOMAIN.decode(), credentials_provider=self)

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._peer = msg[3].decode("ascii", "replace")[:64] if len(msg) > 3 else ""
        await super().handle_zap_message(msg)

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self._keys:
            return True
        self._refusals.unauthorized(self._peer or "an unknown address")
        return False


class ServerCurve:
    """The router's CURVE side: off (``ServerCurve(ctx, "", "")``) or on with both files.

    :attr:`server` makes a bound socket a CURVE server whose refused handshakes go to
    ``refused(reason)`` (one of :data:`REFUSAL_REASONS`; a metric, on monitor threads) and to
    the log; :attr:`peer` makes the pair link's DEALER a client of the other router (which
    holds the same key pair). :meth:`start` runs the authenticator (a ZAP handler on its own
    thread, so handshakes are answered even while the router's loop is busy; call it before
    binding); :meth:`stop` stops it (after the sockets close, before the context terminates).
    It admits the keys of the authorized directory, read once at start-up, and the router's
    own (its peer's).
    """

    def __init__(
        self,
        ctx: zmq.Context[Any],
        secret_cert: PathLike,
        authorized_dir: PathLike,
        *,
        refused: Callable[[str], None] | None = None,
    ) -> None:
        self.server = self.peer = PLAIN
        self._ctx = ctx
        self._count = 0  # authorized client keys (for the log line)
        self._auth: _Authenticator | None = None
        self._keys: frozenset[bytes] = frozenset()
        self._refusals = _Refusals(refused or (lambda reason: None), os.fspath(authorized_dir))
        if not secret_cert and not authorized_dir:
            return
        if not (secret_cert and authorized_dir):
            raise ValueError(
                "CURVE on the router needs both its secret key file (curve secret key) and the "
                "directory of the clients' public keys (curve authorized keys)"
            )
        self.server = dataclasses.replace(server_options(secret_cert), report=self._refusals.event)
        self.peer = client_options(secret_cert, secret_cert)
        clients = authorized_keys(authorized_dir)
        self._count = len(clients)
        self._keys = clients | {public_key(secret_cert)}

    @property
    def enabled(self) -> bool:
        return bool(self.server)

    def start(self) -> None:
        if not self._keys or self._auth is not None:
            return
        auth = _Authenticator(self._ctx, self._keys, self._refusals)
        auth.start()  # binds the context's one ZAP endpoint: one authenticator per context
        self._auth = auth
        log.info(
            "CURVE on: the router's sockets are encrypted and admit only the %d client keys in %s",
            self._count,
            self._refusals.where,
        )

    def stop(self) -> None:
        auth, self._auth = self._auth, None
        if auth is not None:
            auth.stop()


# -- keygen -----------------------------------------------------------------------------------


def keygen(directory: PathLike, names: Iterable[str]) -> list[tuple[str, str]]:
    """Write ``NAME.key`` and ``NAME.key_secret`` (mode 0600) in ``directory`` for each name.

    Returns the (public, secret) file paths. Refuses to overwrite (``ValueError``), so a key
    already handed out is never replaced by accident.
    """
    base = os.fspath(directory)
    names = list(names)
    for name in names:
        if not _NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a certificate name (letters, digits, -, _)")
    if len(set(names)) != len(names):
        raise ValueError("a certificate name is given twice")
    for name in names:
        for suffix in (".key", ".key_secret"):
            if os.path.exists(os.path.join(base, name + suffix)):
                raise ValueError(f"{os.path.join(base, name + suffix)} exists; not overwriting it")
    os.makedirs(base, exist_ok=True)
    written = []
    for name in names:
        # The secret file is created 0600 before pyzmq writes it (it keeps the mode).
        secret_path = os.path.join(base, name + ".key_secret")
        os.close(os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        public_path, secret_path = zmq.auth.create_certificates(base, name)
        written.append((public_path, secret_path))
    return written


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m roomcast.curve") -> int:
    """``python -m roomcast.curve keygen DIR NAME...`` (also ``roomcast keygen DIR NAME...``)."""
    parser = argparse.ArgumentParser(prog=prog, description="CURVE certificates for roomcast.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    k = sub.add_parser(
        "keygen",
        help="write certificates",
        description=(
            "Write CURVE certificates for roomcast: NAME.key (public: give it to the peers) and "
            "NAME.key_secret (secret, mode 0600: only for its owner) in DIR. Typically `router`, "
            "then one name per kind of client (`gateway`, `worker`, `backend`)."
        ),
    )
    k.add_argument("directory", metavar="DIR", help="where to write (created if missing)")
    k.add_argument("names", metavar="NAME", nargs="+", help="certificate names")
    ns = parser.parse_args(argv)
    try:
        written = keygen(ns.directory, ns.names)
    except (OSError, ValueError) as exc:
        parser.exit(1, f"roomcast keygen: {exc}\n")
    for public_path, secret_path in written:
        print(f"{public_path}\n{secret_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
