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

Keys have roles, from their file names in that directory: ``gateway*.key`` (gateways),
``worker*.key`` (action workers), ``backend*.key`` (SDK clients). Only gateway keys (and the
router's own) may subscribe to the fanout, which carries every delivery and every gateway id;
the commands port admits every authorized key, and the router checks each message's role (the
ZAP User-Id set here): only gateway keys may speak as a gateway, only worker keys as a worker.
A key whose name has none of those prefixes keeps the old meaning, any role, and the router
warns about it at start-up.
* each gateway, worker and SDK client: its own ``.key_secret`` (``--curve-key``) and the
  router's public ``.key`` (``--curve-server-key``).

With CURVE on, the router's bound sockets (commands, fanout, the pair link) are CURVE servers
and every socket connecting to them a CURVE client: traffic is encrypted, and a client whose
public key is not authorized, or that speaks plain ZeroMQ, or that expects another router key,
never completes its handshake (it sees the router as unreachable). CURVE is off when no key is
given; then :data:`PLAIN` options change nothing.

Refusals are visible on both ends (:mod:`roomcast.handshakes`): :meth:`SocketOptions.apply`
puts a socket monitor on every CURVE socket, because every CURVE socket of every roomcast
process (gateway, worker, SDK, the pair link) goes through it. A client logs why the router
refused it; the router counts each refused handshake through the callback :class:`ServerCurve`
is given, and logs it (throttled). An unauthorized key's line names the peer's IP address,
which only the ZAP request carries, so the authenticator here reports it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from roomcast.handshakes import ClientReport, Refusals, Report, watch

__all__ = [
    "ANY_ROLE",
    "FANOUT_ZAP_DOMAIN",
    "PLAIN",
    "ROLES",
    "ZAP_DOMAIN",
    "ServerCurve",
    "SocketOptions",
    "authorized_keys",
    "client_options",
    "key_roles",
    "keygen",
    "main",
    "public_key",
    "server_options",
]

log = logging.getLogger("roomcast.curve")

PathLike = str | os.PathLike[str]

# The ZAP domain of the router's CURVE sockets. With a domain set and ZAP_ENFORCE_DOMAIN, a
# handshake fails (closed) when no authenticator is running, instead of admitting any key.
ZAP_DOMAIN = b"roomcast"
FANOUT_ZAP_DOMAIN = b"roomcast-fanout"  # the fanout: gateway keys only
ROLES = ("gateway", "worker", "backend")  # key roles, by file-name prefix
ANY_ROLE = "any"  # a key file named without a role prefix (older layouts)
_KEY_CHARS = 40  # a Z85-encoded 32-byte key
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # a certificate name (keygen)


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
        """Set the options and, for a CURVE socket, watch its handshakes (roomcast.handshakes)."""
        for option, value in self.options:
            sock.setsockopt(option, value)
        report = self.report
        if report is None and self.mode == "client":
            report = ClientReport().event
        if report is not None:
            watch(sock, report)


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


def server_options(secret_cert: PathLike, domain: bytes = ZAP_DOMAIN) -> SocketOptions:
    """Options making a socket a CURVE server holding ``secret_cert`` (a ``.key_secret`` file)."""
    _public, secret = _load(secret_cert, secret=True)
    assert secret is not None
    options: list[tuple[int, int | bytes]] = [
        (zmq.CURVE_SERVER, 1),
        (zmq.CURVE_SECRETKEY, secret),
        (zmq.ZAP_DOMAIN, domain),
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


def key_roles(directory: PathLike) -> dict[bytes, str]:
    """Each authorized public key's role, from its file name (see the module docstring)."""
    name = os.fspath(directory)
    roles: dict[bytes, str] = {}
    for entry in sorted(e for e in os.listdir(name) if e.endswith(".key")):
        role = next((r for r in ROLES if entry.startswith(r)), ANY_ROLE)
        roles[public_key(os.path.join(name, entry))] = role
    return roles


class _Authenticator(ThreadAuthenticator):
    """pyzmq's ZAP handler (on its own thread), admitting the keys of a fixed set.

    It is its own credentials provider so that a refusal can name the peer: the address is in
    the ZAP request (RFC 27: version, request id, domain, address, ...), not in the callback's
    arguments. Only the authenticator's thread touches ``_peer``.
    """

    def __init__(
        self,
        ctx: zmq.Context[Any],
        keys: frozenset[bytes],
        refusals: Refusals,
        roles: dict[bytes, str] | None = None,
    ) -> None:
        zap_log = logging.getLogger("roomcast.curve.zap")
        # pyzmq's handler logs each client's public key at DEBUG: keep keys out of our logs.
        zap_log.setLevel(max(zap_log.getEffectiveLevel(), logging.INFO))
        super().__init__(ctx, log=zap_log)
        self._keys = keys
        self._roles = roles or {}
        self._refusals = refusals
        self._peer = ""
        self.configure_curve_callback(ZAP_DOMAIN.decode(), credentials_provider=self)
        self.configure_curve_callback(FANOUT_ZAP_DOMAIN.decode(), credentials_provider=self)

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._peer = msg[3].decode("ascii", "replace")[:64] if len(msg) > 3 else ""
        await super().handle_zap_message(msg)

    def callback(self, domain: str, key: bytes) -> bool:
        if key not in self._keys:
            self._refusals.unauthorized(self._peer or "an unknown address")
            return False
        role = self._roles.get(key, "router")  # not in the directory: the router's own key
        if domain == FANOUT_ZAP_DOMAIN.decode() and role not in ("gateway", "router", ANY_ROLE):
            self._refusals.wrong_role(self._peer or "an unknown address", role, "fanout")
            return False
        return True

    def curve_user_id(self, client_public_key: bytes) -> str:
        """The ZMQ ``User-Id`` of a peer's messages: its key's role (never the key)."""
        return self._roles.get(z85.encode(client_public_key), "router")


class ServerCurve:
    """The router's CURVE side: off (``ServerCurve(ctx, "", "")``) or on with both files.

    :attr:`server` makes a bound socket a CURVE server whose refused handshakes go to
    ``refused(reason)`` (a reason of :data:`roomcast.handshakes.REFUSAL_REASONS`, on monitor
    threads: the router's metric) and to the log; :attr:`peer` makes the pair link's DEALER a
    client of the other router (which holds the same key pair). :meth:`start` runs the
    authenticator (a ZAP handler on its own thread, so handshakes are answered even while the
    router's loop is busy; call it before binding); :meth:`stop` stops it (after the sockets
    close, before the context terminates). It admits the keys of the authorized directory,
    read once at start-up, and the router's own (its peer's).
    """

    def __init__(
        self,
        ctx: zmq.Context[Any],
        secret_cert: PathLike,
        authorized_dir: PathLike,
        *,
        refused: Callable[[str], None] | None = None,
    ) -> None:
        self.server = self.peer = self.fanout = PLAIN
        self._roles: dict[bytes, str] = {}
        self._ctx = ctx
        self._count = 0  # authorized client keys (for the log line)
        self._auth: _Authenticator | None = None
        self._keys: frozenset[bytes] = frozenset()
        self._refusals = Refusals(refused or (lambda reason: None), os.fspath(authorized_dir))
        if not secret_cert and not authorized_dir:
            return
        if not (secret_cert and authorized_dir):
            raise ValueError(
                "CURVE on the router needs both its secret key file (curve secret key) and the "
                "directory of the clients' public keys (curve authorized keys)"
            )
        self.server = dataclasses.replace(server_options(secret_cert), report=self._refusals.event)
        self.fanout = dataclasses.replace(
            server_options(secret_cert, FANOUT_ZAP_DOMAIN), report=self._refusals.event
        )
        self.peer = client_options(secret_cert, secret_cert)
        clients = authorized_keys(authorized_dir)
        self._count = len(clients)
        self._keys = clients | {public_key(secret_cert)}
        self._roles = key_roles(authorized_dir)

    @property
    def enabled(self) -> bool:
        return bool(self.server)

    def start(self) -> None:
        if not self._keys or self._auth is not None:
            return
        auth = _Authenticator(self._ctx, self._keys, self._refusals, self._roles)
        auth.start()  # binds the context's one ZAP endpoint: one authenticator per context
        self._auth = auth
        log.info(
            "CURVE on: the router's sockets are encrypted and admit only the %d client keys in %s",
            self._count,
            self._refusals.where,
        )
        untyped = sum(1 for role in self._roles.values() if role == ANY_ROLE)
        if untyped:
            log.warning(
                "%d CURVE keys in %s have no role prefix (gateway*, worker*, backend*): they may "
                "act as any role, a gateway's included",
                untyped,
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
