"""gateway.connection.Outlet against a real Tornado WebSocket connection on 127.0.0.1.

The gateway writes frames straight to a client's socket only when nothing is pending or in
flight; whatever Tornado holds for the connection (the remainder of a write the kernel did not
take, or Tornado's own pong) must count as in flight until Tornado has flushed it, or a direct
write would overtake it and tear the stream. A raw client that stops reading fills the kernel,
so these states are reached for real, then it reads everything and checks the byte stream.
The handler is a bare Tornado handler with the gateway's protocol (``_Protocol``) and an
Outlet; the only stand-in is the hub's ``mark_dirty``, recorded.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import tornado.iostream
import tornado.websocket

from gateway.connection import Outlet, _Protocol
from gateway.frames import text_frame
from gateway.sendqueue import FIRST, QUEUED
from roomcast.bench.wsclient import client_frame
from tests.component.rawws import raw_client, until
from tests.conftest import TIMEOUT_UNIT as T

BIG = 8 << 20  # far past what the kernel buffers for a client that does not read


class Peer(tornado.websocket.WebSocketHandler):
    """What Outlet and _Protocol need of a gateway Connection, and nothing else."""

    def initialize(self, log: dict[str, Any]) -> None:
        self.log = log
        self.close_cause: str | None = None
        self.queue = Outlet(1 << 30, self)  # type: ignore[arg-type]
        self.gateway = SimpleNamespace(mark_dirty=log.setdefault("dirty", []).append)

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        return _Protocol(self, False, tornado.websocket._WebSocketParams())  # type: ignore[arg-type]

    def ws_stream(self) -> tornado.iostream.IOStream | None:
        ws = self.ws_connection
        return ws.stream if ws is not None else None

    def open(self, *args: str, **kwargs: str) -> None:
        assert self.ws_connection is not None and self.ws_connection.stream is not None
        self.queue.sock = self.ws_connection.stream.socket
        self.log["outlet"] = self.queue


def frames_in(data: bytes) -> list[tuple[int, bytes]]:
    """Server frames (unmasked) as (opcode, payload); fails on a torn stream."""
    out = []
    pos = 0
    while pos < len(data):
        assert data[pos] & 0x80 and not data[pos] & 0x70, f"torn frame at byte {pos}"
        opcode, n, pos = data[pos] & 0x0F, data[pos + 1] & 0x7F, pos + 2
        if n >= 126:
            width = 2 if n == 126 else 8
            n, pos = int.from_bytes(data[pos : pos + width], "big"), pos + width
        assert pos + n <= len(data), f"frame at byte {pos} runs past the end"
        out.append((opcode, data[pos : pos + n]))
        pos += n
    return out


async def with_stuck_client(
    body: Callable[[socket.socket, Outlet, list[Outlet]], Awaitable[bytes]],
) -> list[tuple[int, bytes]]:
    """Runs ``body`` with a raw client that reads only when ``body`` says; returns the frames
    the client received after the handshake (``body`` returns them raw)."""
    log: dict[str, Any] = {}
    async with raw_client(Peer, log) as client:
        await until(lambda: "outlet" in log, "the connection to open")
        head = b""
        while b"\r\n\r\n" not in head:
            head += await asyncio.get_running_loop().sock_recv(client, 1)  # the 101 response
        return frames_in(await body(client, log["outlet"], log["dirty"]))


async def read_all(client: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    async with asyncio.timeout(20 * T):
        while len(data) < size:
            chunk = await loop.sock_recv(client, 1 << 20)
            assert chunk, "server closed"
            data += chunk
    return bytes(data)


def test_a_remainder_tornado_holds_is_in_flight_until_flushed() -> None:
    big = text_frame(b"x" * BIG)
    small = text_frame(b'{"after":"big"}')

    async def body(client: socket.socket, out: Outlet, dirty: list[Outlet]) -> bytes:
        out.send_now(big)  # the kernel takes part; Tornado holds the rest
        assert out.inflight > 0
        assert out.push(small) == QUEUED  # behind the held bytes: no write scheduled
        assert out.take() is None  # nothing may overtake them
        data = await read_all(client, len(big))
        await until(lambda: out in dirty, "the queued frame to be due")  # Tornado flushed
        assert out.inflight == 0
        frame = out.take()
        assert frame == small
        out.send_now(frame)
        return data + await read_all(client, len(big) + len(small) - len(data))

    frames = asyncio.run(with_stuck_client(body))
    assert frames == [(0x1, b"x" * BIG), (0x1, b'{"after":"big"}')]


def test_tornado_own_pong_counts_in_flight_while_it_is_buffered() -> None:
    big = text_frame(b"y" * BIG)

    async def body(client: socket.socket, out: Outlet, dirty: list[Outlet]) -> bytes:
        loop = asyncio.get_running_loop()
        out.send_now(big)
        held = out.inflight
        assert held > 0
        await loop.sock_sendall(client, client_frame(0x9, b"ping!"))
        await until(lambda: out.inflight > held, "the pong counted in flight")
        assert out.inflight == held + len(b"ping!") + 2
        pong = len(b"ping!") + 2
        data = await read_all(client, len(big) + pong)
        await until(lambda: out.inflight == 0, "everything flushed")
        assert out.push(b"\x81\x02hi") == FIRST  # idle again: a write may be scheduled
        return data

    frames = asyncio.run(with_stuck_client(body))
    assert frames == [(0x1, b"y" * BIG), (0xA, b"ping!")]
