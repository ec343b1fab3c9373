"""Abuse limits that hold at their defaults, on real gateway processes.

* A sustained frame flood, or a WebSocket ping flood, is closed with 4003 within seconds at the
  default --max-frames-per-second / --frame-burst / --abuse-strikes (before: a frame let
  through by the refill every millisecond reset the strikes, and pings were not counted at
  all), counted, while a bystander on the same gateway keeps being served (its p99 is printed).
* A client can never join another socket's own-id room, whatever the join policy (here the
  development policy, ``*``): that room carries the other socket's private messages.
* An action response larger than a connection may queue is an error to the requester, not a
  slow-consumer close (4001).
* A Socket.IO v4 connection that never sends CONNECT (nor so its token) is closed in seconds.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import (
    _LEGACY,
    Cluster,
    Metrics,
    Proc,
    http_get,
    raw_ws_client,
    run_all,
    start_cluster,
)
from tests.integration.load import Bystander, p99_ms, rss_bytes

MAX_FRAMES = 2_000_000  # every flood is bounded in count...
MAX_SECONDS = 10.0  # ...and in time (times TIMEOUT_UNIT)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = start_cluster(gateways=1)  # every limit at its default
    yield c
    c.stop()


def gw_metrics(cluster: Cluster) -> Metrics:
    status, text = http_get(cluster.gateways[0].internal + "/metrics")
    assert status == 200
    return Metrics(text)


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (an all-zero mask leaves the payload as it is)."""
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


class CloseWatcher(threading.Thread):
    """Reads (and drops) everything the gateway sends until its close frame; keeps its code."""

    def __init__(self, sock: socket.socket, buffered: bytes) -> None:
        super().__init__(name="close watcher", daemon=True)
        self.sock = sock
        self.buf = bytearray(buffered)
        self.code: int | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            until = time.monotonic() + (MAX_SECONDS + 10) * T
            while time.monotonic() < until and self.code is None:
                self._parse()
                if self.code is not None:
                    break
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    break
                self.buf += chunk
        except OSError:
            pass
        finally:
            self.done.set()

    def _parse(self) -> None:
        buf = self.buf
        while len(buf) >= 2:
            opcode, n, head = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, head = struct.unpack(">H", buf[2:4])[0], 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, head = struct.unpack(">Q", buf[2:10])[0], 10
            if len(buf) < head + n:
                return
            if opcode == 0x8:
                payload = bytes(buf[head : head + n])
                self.code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                return
            del buf[: head + n]


def flood(
    cluster: Cluster, frame: bytes, rate: float | None = None
) -> tuple[int | None, int, float]:
    """Send ``frame`` until the gateway closes, as fast as we can or at ``rate`` frames a
    second (the finding's 45,000/s: one refill token per millisecond always came through):
    (close code, frames sent, seconds)."""
    sock, _sid, rest = raw_ws_client(cluster.gateways[0].public)
    watcher = CloseWatcher(sock, rest)
    watcher.start()
    per_batch = 500 if rate is None else 45
    batch = frame * per_batch
    sent = 0
    started = time.monotonic()
    try:
        while (
            sent < MAX_FRAMES
            and time.monotonic() - started < MAX_SECONDS * T
            and not watcher.done.is_set()
        ):
            if rate is not None and sent > rate * (time.monotonic() - started):
                watcher.done.wait(0.001)  # pacing: ahead of the rate, hold back a moment
                continue
            sock.sendall(batch)
            sent += per_batch
    except OSError:
        pass  # closed under us: the watcher has (or had) the close frame
    watcher.done.wait(10 * T)
    elapsed = time.monotonic() - started
    sock.close()
    return watcher.code, sent, elapsed


@pytest.mark.parametrize(
    ("kind", "rate"),
    [
        pytest.param(client_frame(0x1, b'{"op":"nothing"}'), 45_000.0, id="frames-45k-per-s"),
        pytest.param(client_frame(0x1, b'{"op":"nothing"}'), None, id="frames-flat-out"),
        pytest.param(client_frame(0x9, b""), None, id="pings-flat-out"),
    ],
)
def test_a_sustained_flood_is_closed_4003_at_the_defaults(
    cluster: Cluster, kind: bytes, rate: float | None
) -> None:
    abuse = gw_metrics(cluster).get("roomcast_gateway_disconnects_total", reason="abuse")
    bystander = Bystander(cluster.gateways[0].ws_url)
    bystander.start()
    try:
        deadline_poll(lambda: bystander.mark() >= 20, 10 * T, message="the bystander warm")
        quiet = p99_ms(bystander.latencies)
        mark = bystander.mark()
        pid = cluster.gateways[0].proc.popen.pid
        before = rss_bytes(pid)
        code, sent, seconds = flood(cluster, kind, rate)
        after = rss_bytes(pid)
        during = bystander.latencies[mark:]
        print(f"\ngateway RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB across the flood")
        print(
            f"\nflood ({'pings' if kind[0] == 0x89 else 'frames'}, {rate or 'max'}/s): close "
            f"{code} after {sent} "
            f"frames in {seconds:.2f}s; bystander p99 {quiet:.1f} ms quiet, "
            f"{p99_ms(during):.1f} ms during ({len(during)} round trips)"
        )
        assert code == 4003, (code, sent, seconds)
        assert seconds < 5 * T
        deadline_poll(
            lambda: (
                gw_metrics(cluster).get("roomcast_gateway_disconnects_total", reason="abuse")
                == abuse + 1
            ),
            5 * T,
            message="the abuse close counted",
        )
    finally:
        bystander.finish()


def test_a_client_cannot_join_another_sockets_own_room(cluster: Cluster) -> None:
    victim = cluster.ws(0)
    intruder = cluster.ws(0)
    reply = intruder.request("join", room=victim.id)
    assert reply["statusCode"] == 403, reply
    assert reply["body"]["error"] == "forbidden"
    # Its own room it may name (it is in it already), and other rooms as before.
    assert intruder.request("join", room=intruder.id)["statusCode"] == 200
    victim.broadcast(victim.id, {"private": True}, echo=True)
    assert victim.next_event(5 * T).data == {"private": True}
    intruder.expect_no_event(0.3 * T)


def test_an_action_response_over_the_send_queue_bound_is_an_error_not_a_4001() -> None:
    """The finding: a response larger than the connection's send queue disconnected the
    requester with 4001 (slow consumer). Now the requester gets a 500 action_failed."""
    small = start_cluster(gateways=1, gateway_args=["--max-send-queue-bytes", str(64 * 1024)])
    worker = Proc(
        "limits-worker",
        ["-m", "roomcast.cli", "worker", "tests.integration.apps_limits:limits",
         "--router", small.commands],
    )  # fmt: skip
    try:
        worker.wait_ready()
        client = small.ws(0)

        def served() -> dict[str, Any] | None:
            reply = client.request("request", method="GET", url="/blob/1")
            return reply if reply["statusCode"] == 200 else None

        deadline_poll(served, 10 * T, message="the worker serving")
        reply = client.request("request", method="GET", url="/blob/200")  # > 32 KiB
        assert reply["statusCode"] == 500, reply
        assert reply["body"]["error"] == "action_failed"
        assert "larger than a connection may be sent" in reply["body"]["message"]
        # Still connected and served.
        assert client.request("request", method="GET", url="/blob/1")["statusCode"] == 200
    finally:
        run_all([worker.stop, worker.check_log])
        small.stop()


def test_a_socketio_v4_client_that_never_connects_is_closed_within_seconds(
    cluster: Cluster,
) -> None:
    """The finding: a v4 connection without CONNECT (so without its token) held a
    --max-connections slot for 45 s. At the default --sio-connect-timeout it is 5 s."""
    url = cluster.gateways[0].public.replace("http://", "ws://", 1)
    url += "/socket.io/?EIO=4&transport=websocket"
    before = gw_metrics(cluster).get("roomcast_gateway_disconnects_total", reason="connect_timeout")
    with connect(url, open_timeout=10 * T, proxy=None, **_LEGACY) as conn:
        opened = time.monotonic()
        first = conn.recv(5 * T)
        assert isinstance(first, str) and first.startswith("0{"), first
        with pytest.raises(ConnectionClosed) as closed:
            while time.monotonic() - opened < 20 * T:
                conn.recv(20 * T)
        waited = time.monotonic() - opened
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008, closed.value
    assert 4.5 < waited < 5 + 2 * T, waited
    after = gw_metrics(cluster).get("roomcast_gateway_disconnects_total", reason="connect_timeout")
    assert after == before + 1
