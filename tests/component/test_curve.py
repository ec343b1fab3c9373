"""roomcast.curve's ServerCurve on real loopback sockets: who completes a handshake, and who not.

A CURVE server ROUTER (the router's options) and DEALER clients in the test: an authorized key
gets through; an unknown key, a plain socket and a client expecting another server key do not
(their sends never leave: ``IMMEDIATE`` finds no completed connection); the pair link's own key
gets through; a server whose authenticator is stopped refuses everyone (fail closed). The
authenticator thread stops cleanly and the context terminates.

Each refusal is counted by reason (the callback the router turns into a metric) and logged on
both ends: the server's lines are throttled per reason (a flood of refused clients gives one
line), a refused client says why. Neither ever logs a key, and the monitor threads end with
their sockets.
"""

from __future__ import annotations

import logging
import pathlib
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import zmq

from roomcast import curve
from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll

# How long a client that must be refused keeps trying; a good one gets through in milliseconds.
REFUSED_WINDOW_S = 0.5 * T


@pytest.fixture
def certs(tmp_path: pathlib.Path) -> pathlib.Path:
    curve.keygen(tmp_path, ["router", "client", "intruder"])
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    (authorized / "client.key").write_bytes((tmp_path / "client.key").read_bytes())
    return tmp_path


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


class Server:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], certs: pathlib.Path) -> None:
        self.refused: Counter[str] = Counter()  # updated on the monitor threads
        self.curve = curve.ServerCurve(
            ctx,
            certs / "router.key_secret",
            certs / "authorized",
            refused=lambda reason: self.refused.update([reason]),
        )
        self.curve.start()
        self.sock = ctx.socket(zmq.ROUTER)
        self.curve.server.apply(self.sock)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.url = f"tcp://127.0.0.1:{self.sock.bind_to_random_port('tcp://127.0.0.1')}"
        self.ctx = ctx

    def reaches(self, options: curve.SocketOptions, window: float) -> bool:
        """Whether a DEALER with ``options`` gets one message through within ``window`` s."""
        client = self.ctx.socket(zmq.DEALER)
        options.apply(client)
        client.setsockopt(zmq.IMMEDIATE, 1)
        client.setsockopt(zmq.LINGER, 0)
        client.connect(self.url)
        try:
            deadline = time.monotonic() + window
            while time.monotonic() < deadline:
                try:
                    client.send(b"hi", zmq.NOBLOCK)
                except zmq.Again:
                    time.sleep(0.01)
                    continue
                assert self.sock.poll(int(window * 1000)), "sent, but never received"
                _identity, body = self.sock.recv_multipart()
                return body == b"hi"
            return False
        finally:
            client.close()

    def close(self) -> None:
        self.sock.close()
        self.curve.stop()


@pytest.fixture
def server(ctx: zmq.Context[zmq.Socket[bytes]], certs: pathlib.Path) -> Iterator[Server]:
    srv = Server(ctx, certs)
    yield srv
    srv.close()


def test_authorized_client_gets_through(server: Server, certs: pathlib.Path) -> None:
    options = curve.client_options(certs / "client.key_secret", certs / "router.key")
    assert server.reaches(options, 10 * T)


def test_the_peer_router_gets_through(server: Server) -> None:
    assert server.reaches(server.curve.peer, 10 * T)


def server_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.getMessage().startswith("refused a CURVE")
    ]


def client_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and not r.getMessage().startswith("refused a CURVE")
    ]


@pytest.mark.parametrize("who", ["unknown key", "plain", "wrong server key"])
def test_others_are_refused(
    server: Server, certs: pathlib.Path, who: str, caplog: pytest.LogCaptureFixture
) -> None:
    options = {
        "unknown key": curve.client_options(certs / "intruder.key_secret", certs / "router.key"),
        "plain": curve.PLAIN,
        "wrong server key": curve.client_options(
            certs / "client.key_secret", certs / "intruder.key"
        ),
    }[who]
    with caplog.at_level(logging.DEBUG):
        assert not server.reaches(options, REFUSED_WINDOW_S)
        # Counted and logged on the monitor threads: wait for them.
        deadline_poll(lambda: server.refused and server_lines(caplog), 5 * T, message="refusal")
    lines = server_lines(caplog)
    if who == "unknown key":
        # libzmq does not retry a refused key: one handshake, one count, one line (with the
        # peer's address, never the key).
        assert server.refused == {"unauthorized_key": 1}
        assert lines == [
            f"refused a CURVE client from 127.0.0.1: its public key is not in "
            f"{certs / 'authorized'}"
        ]
        deadline_poll(lambda: client_lines(caplog), 5 * T, message="the client's line")
        [line] = client_lines(caplog)
        assert line.levelno == logging.ERROR
        assert line.getMessage() == (
            f"router {server.url} refused our CURVE key (ZAP status 400): our public key is not "
            "among its authorized keys; this link stays down until it is authorized and this "
            "process restarts"
        )
    elif who == "plain":
        # The router hangs up at the greeting; if the client's READY was still unread, the
        # close is a reset, the client never sees why, and it retries.
        assert set(server.refused) == {"handshake_failed"}
        [line] = lines
        assert line in (
            f"refused a CURVE handshake on {server.url}: one end uses CURVE and the other does not",
            f"refused a CURVE handshake on {server.url}: the connection closed during the "
            "handshake",
        )
        assert client_lines(caplog) == []  # a plain client has no monitor: see the module doc
    else:
        # The router hangs up on a HELLO it cannot decrypt; libzmq retries every 100 ms, and
        # the throttle keeps it to one line on each end.
        assert set(server.refused) == {"handshake_failed"}
        assert lines == [
            f"refused a CURVE handshake on {server.url}: the handshake does not decrypt: the "
            "client expects another router key"
        ]
        [line] = client_lines(caplog)
        assert line.levelno == logging.WARNING
        assert line.getMessage() == (
            f"CURVE handshake with router {server.url} failed (the connection closed during the "
            "handshake): is our curve server key the router's public key?"
        )
    keys = {curve.public_key(certs / f"{n}.key").decode() for n in ("client", "intruder")}
    assert not any(k in caplog.text for k in keys)
    # The authorized client is unaffected, and its handshake is neither counted nor logged.
    refused = Counter(server.refused)
    good = curve.client_options(certs / "client.key_secret", certs / "router.key")
    assert server.reaches(good, 10 * T)
    if who != "wrong server key":  # that client may still have been retrying a moment ago
        assert server.refused == refused


def test_a_flood_of_refused_clients_is_counted_but_logged_once(
    server: Server, certs: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    intruder = curve.client_options(certs / "intruder.key_secret", certs / "router.key")
    clients = []
    with caplog.at_level(logging.WARNING):
        for _ in range(20):
            client = server.ctx.socket(zmq.DEALER)
            intruder.apply(client)
            client.setsockopt(zmq.LINGER, 0)
            client.connect(server.url)
            clients.append(client)
        deadline_poll(
            lambda: server.refused["unauthorized_key"] == 20, 10 * T, message="20 refusals"
        )
        for client in clients:
            client.close()
    assert server.refused == {"unauthorized_key": 20}
    assert len(server_lines(caplog)) == 1  # the next one would wait REFUSAL_LOG_INTERVAL_S
    good = curve.client_options(certs / "client.key_secret", certs / "router.key")
    assert server.reaches(good, 10 * T)


def test_monitor_threads_end_with_their_sockets(server: Server, certs: pathlib.Path) -> None:
    def monitors() -> int:
        return sum(t.name == "roomcast-curve-monitor" for t in threading.enumerate())

    before = monitors()  # the server socket's
    good = curve.client_options(certs / "client.key_secret", certs / "router.key")
    client = server.ctx.socket(zmq.DEALER)
    good.apply(client)
    assert monitors() == before + 1
    client.close()
    deadline_poll(lambda: monitors() == before, 5 * T, message="the monitor thread to end")
    curve.PLAIN.apply(plain := server.ctx.socket(zmq.DEALER))  # CURVE off: no monitor
    assert monitors() == before
    plain.close()


def test_without_its_authenticator_the_server_refuses_everyone(
    server: Server, certs: pathlib.Path
) -> None:
    server.curve.stop()
    good = curve.client_options(certs / "client.key_secret", certs / "router.key")
    assert not server.reaches(good, REFUSED_WINDOW_S)


def test_off_by_default(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    off = curve.ServerCurve(ctx, "", "")
    assert not off.enabled and off.server is curve.PLAIN and off.peer is curve.PLAIN
    off.start()  # nothing to start or stop
    off.stop()


def test_router_needs_both_files(ctx: zmq.Context[zmq.Socket[bytes]], certs: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="needs both"):
        curve.ServerCurve(ctx, certs / "router.key_secret", "")
    with pytest.raises(ValueError, match="needs both"):
        curve.ServerCurve(ctx, "", certs / "authorized")


def test_stop_lets_the_context_terminate(certs: pathlib.Path) -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    srv = Server(context, certs)
    srv.close()
    srv.curve.stop()  # idempotent
    context.term()  # would hang if the ZAP socket or its thread were left open
