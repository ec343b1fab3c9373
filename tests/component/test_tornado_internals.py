"""The Tornado behaviour the gateway's direct writes rely on (gateway.connection).

The gateway writes pre-framed bytes straight to a WebSocket connection's socket whenever its
send queue has nothing pending or in flight, and counts in flight whatever Tornado holds: bytes
handed to ``IOStream.write`` until their Future resolves, and Tornado's own frames, which all
pass ``WebSocketProtocol13._write_frame``. Tornado is pinned for that; these tests fail first if
a new Tornado changes it: a real server on 127.0.0.1 and a raw client that stops reading (so
the kernel fills), pings, then reads everything.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import tornado.websocket
from tornado.iostream import IOStream

from roomcast.bench.wsclient import client_frame
from tests.component.rawws import raw_client, until
from tests.conftest import TIMEOUT_UNIT as T


class Recording(tornado.websocket.WebSocketProtocol13):
    """Records every frame Tornado writes by itself after the handshake."""

    written: list[int]

    def _write_frame(
        self, fin: bool, opcode: int, data: bytes, flags: int = 0
    ) -> asyncio.Future[None]:
        self.written.append(opcode)
        return super()._write_frame(fin, opcode, data, flags)


class Held(tornado.websocket.WebSocketHandler):
    def initialize(self, log: dict[str, Any]) -> None:
        self.log = log

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        params = tornado.websocket._WebSocketParams()
        protocol = Recording(self, False, params)
        protocol.written = self.log.setdefault("written", [])
        return protocol

    def open(self, *args: str, **kwargs: str) -> None:
        self.log["handler"] = self


async def with_raw_client(
    body: Callable[[socket.socket, IOStream, dict[str, Any]], Awaitable[None]],
) -> None:
    log: dict[str, Any] = {}
    async with raw_client(Held, log) as client:
        await until(lambda: "handler" in log, "the connection to open")
        stream = log["handler"].ws_connection.stream
        assert type(stream) is IOStream  # what the gateway's direct path requires
        await until(lambda: not stream.writing(), "the 101 response to be out")
        await body(client, stream, log)


async def read_until_done(client: socket.socket, done: asyncio.Future[None]) -> int:
    loop = asyncio.get_running_loop()
    received = 0
    async with asyncio.timeout(20 * T):
        while not done.done():
            chunk = await loop.sock_recv(client, 1 << 20)
            assert chunk, "server closed"
            received += len(chunk)
    await done
    return received


def test_writing_is_true_while_tornado_holds_bytes_and_an_empty_write_waits_for_them() -> None:
    async def body(client: socket.socket, stream: IOStream, log: dict[str, Any]) -> None:
        size = 16 << 20
        done = stream.write(b"x" * size)  # the client does not read: Tornado keeps the rest
        assert stream.writing()
        after = stream.write(b"")  # what Connection.open waits on when the 101 is not out
        assert not after.done()
        await read_until_done(client, after)
        assert done.done() and not stream.writing()

    asyncio.run(with_raw_client(body))


def test_tornado_writes_its_pong_and_close_through_write_frame() -> None:
    async def body(client: socket.socket, stream: IOStream, log: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, client_frame(0x9, b"are you there"))
        await until(lambda: 0xA in log["written"], "the pong")
        await loop.sock_sendall(client, client_frame(0x8, struct.pack(">H", 1000)))
        await until(lambda: 0x8 in log["written"], "the close frame")
        assert log["written"] == [0xA, 0x8]

    asyncio.run(with_raw_client(body))


def test_the_tcpserver_internals_gateway_listener_uses() -> None:
    """gateway/listener.py runs its own accept loop: it fills ``_sockets``/``_handlers`` (so
    ``stop()`` removes and closes them) and hands accepted sockets to ``_handle_connection``."""
    import inspect

    from tornado.httpserver import HTTPServer
    from tornado.tcpserver import TCPServer

    server = HTTPServer(lambda request: None)
    assert server._sockets == {} and server._handlers == {}
    params = list(inspect.signature(TCPServer._handle_connection).parameters)
    assert params == ["self", "connection", "address"], params
    stop = inspect.getsource(TCPServer.stop)
    assert "self._handlers.pop(fd)()" in stop and "sock.close()" in stop
