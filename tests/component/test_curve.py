"""roomcast.curve's ServerCurve on real loopback sockets: who completes a handshake, and who not.

A CURVE server ROUTER (the router's options) and DEALER clients in the test: an authorized key
gets through; an unknown key, a plain socket and a client expecting another server key do not
(their sends never leave: ``IMMEDIATE`` finds no completed connection); the pair link's own key
gets through; a server whose authenticator is stopped refuses everyone (fail closed). The
authenticator thread stops cleanly and the context terminates.
"""

from __future__ import annotations

import logging
import pathlib
import time
from collections.abc import Iterator

import pytest
import zmq

from roomcast import curve
from tests.conftest import TIMEOUT_UNIT as T

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
        self.curve = curve.ServerCurve(ctx, certs / "router.key_secret", certs / "authorized")
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
    refusals = [r for r in caplog.records if r.levelno >= logging.WARNING]
    if who == "unknown key":
        # Once at WARNING however often it retries, and never with the key itself.
        assert [r.getMessage() for r in refusals] == [
            f"refused a CURVE client: its public key is not in {certs / 'authorized'} "
            "(it will keep retrying)"
        ]
    else:
        assert refusals == []
    keys = {curve.public_key(certs / f"{n}.key").decode() for n in ("client", "intruder")}
    assert not any(k in caplog.text for k in keys)
    # The authorized client is unaffected.
    good = curve.client_options(certs / "client.key_secret", certs / "router.key")
    assert server.reaches(good, 10 * T)


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
