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
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import zmq
import zmq.auth
from zmq.utils import z85

if TYPE_CHECKING:
    from zmq.auth.thread import ThreadAuthenticator

__all__ = [
    "PLAIN",
    "ZAP_DOMAIN",
    "ServerCurve",
    "SocketOptions",
    "authorized_keys",
    "client_options",
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
_KEY_CHARS = 40  # a Z85-encoded 32-byte key
_WARNED_KEYS_MAX = 1024  # unknown keys whose first refusal was logged at WARNING
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # a certificate name (keygen)


@dataclasses.dataclass(frozen=True)
class SocketOptions:
    """Socket options to apply before ``bind``/``connect``; falsy for plain ZeroMQ (CURVE off).

    The values are keys: they are left out of ``repr`` (configs and logs may show this object).
    """

    mode: str = "plain"  # "plain", "server" or "client"
    options: tuple[tuple[int, int | bytes], ...] = dataclasses.field(default=(), repr=False)

    def __bool__(self) -> bool:
        return bool(self.options)

    def apply(self, sock: zmq.Socket[Any]) -> None:
        for option, value in self.options:
            sock.setsockopt(option, value)


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


class _Keys:
    """The authenticator's credentials provider: admits the keys of a fixed set.

    Called on the authenticator's thread; it only reads the set, and logs each unknown key's
    first refusal at WARNING (without the key), the next ones at DEBUG.
    """

    def __init__(self, keys: frozenset[bytes], where: str) -> None:
        self._keys = keys
        self.where = where
        self._warned: set[bytes] = set()

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self._keys:
            return True
        if key not in self._warned and len(self._warned) < _WARNED_KEYS_MAX:
            self._warned.add(key)
            log.warning(
                "refused a CURVE client: its public key is not in %s (it will keep retrying)",
                self.where,
            )
        else:
            log.debug("refused a CURVE client again (key not in %s)", self.where)
        return False


class ServerCurve:
    """The router's CURVE side: off (``ServerCurve(ctx, "", "")``) or on with both files.

    :attr:`server` makes a bound socket a CURVE server; :attr:`peer` makes the pair link's
    DEALER a client of the other router (which holds the same key pair). :meth:`start` runs the
    authenticator (a ZAP handler on its own thread, so handshakes are answered even while the
    router's loop is busy; call it before binding); :meth:`stop` stops it (after the sockets
    close, before the context terminates). It admits the keys of the authorized directory, read
    once at start-up, and the router's own (its peer's).
    """

    def __init__(
        self, ctx: zmq.Context[Any], secret_cert: PathLike, authorized_dir: PathLike
    ) -> None:
        self.server = self.peer = PLAIN
        self._ctx = ctx
        self._count = 0  # authorized client keys (for the log line)
        self._auth: ThreadAuthenticator | None = None
        self._keys: _Keys | None = None
        if not secret_cert and not authorized_dir:
            return
        if not (secret_cert and authorized_dir):
            raise ValueError(
                "CURVE on the router needs both its secret key file (curve secret key) and the "
                "directory of the clients' public keys (curve authorized keys)"
            )
        self.server = server_options(secret_cert)
        self.peer = client_options(secret_cert, secret_cert)
        clients = authorized_keys(authorized_dir)
        self._count = len(clients)
        self._keys = _Keys(clients | {public_key(secret_cert)}, os.fspath(authorized_dir))

    @property
    def enabled(self) -> bool:
        return bool(self.server)

    def start(self) -> None:
        if self._keys is None or self._auth is not None:
            return
        from zmq.auth.thread import ThreadAuthenticator  # only routers need it

        zap_log = logging.getLogger("roomcast.curve.zap")
        # pyzmq's handler logs each client's public key at DEBUG: keep keys out of our logs.
        zap_log.setLevel(max(zap_log.getEffectiveLevel(), logging.INFO))
        auth = ThreadAuthenticator(self._ctx, log=zap_log)
        auth.configure_curve_callback(ZAP_DOMAIN.decode(), credentials_provider=self._keys)
        auth.start()  # binds the context's one ZAP endpoint: one authenticator per context
        self._auth = auth
        log.info(
            "CURVE on: the router's sockets are encrypted and admit only the %d client keys in %s",
            self._count,
            self._keys.where,
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
