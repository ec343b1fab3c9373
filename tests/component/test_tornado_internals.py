"""The Tornado internals the gateway's write path reads (gateway.connection.write_queued).

The gateway writes pre-framed bytes straight to a WebSocket connection's socket when Tornado
has nothing buffered, and decides that from ``WebSocketProtocol13.stream`` and IOStream's two
write indices rather than ``writing()``. Tornado is pinned for that; these tests fail first if a
new Tornado moves them: a real server on 127.0.0.1, a raw client that stops reading so the
kernel fills, then reads everything so Tornado drains.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket
from tornado.iostream import IOStream

from roomcast.bench.wsclient import handshake_request
from tests.conftest import TIMEOUT_UNIT as T


class Held(tornado.websocket.WebSocketHandler):
    def initialize(self, log: dict[str, Any]) -> None:
        self.log = log

    def open(self, *args: str, **kwargs: str) -> None:
        self.log["handler"] = self


def buffered(stream: IOStream) -> bool:
    """What gateway.connection.write_queued tests before writing to the socket directly."""
    return stream._total_write_index != stream._total_write_done_index


async def wait_for(log: dict[str, Any], key: str) -> Any:
    async with asyncio.timeout(5 * T):
        while key not in log:
            await asyncio.sleep(0.005)
    return log[key]


def test_write_indices_track_what_tornado_buffers() -> None:
    log: dict[str, Any] = {}

    async def body() -> None:
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
        server = tornado.httpserver.HTTPServer(
            tornado.web.Application([(r"/ws", Held, {"log": log})])
        )
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        try:
            await loop.sock_connect(client, ("127.0.0.1", port))
            key = base64.b64encode(os.urandom(16))
            await loop.sock_sendall(client, handshake_request("127.0.0.1", port, "/ws", key))
            handler = await wait_for(log, "handler")
            stream = handler.ws_connection.stream
            assert type(stream) is IOStream
            async with asyncio.timeout(5 * T):  # the 101 response leaves Tornado's buffer
                while buffered(stream):
                    await asyncio.sleep(0.005)
            assert not stream.writing()

            # The client does not read: the kernel takes part, Tornado keeps the rest.
            size = 16 << 20
            done = stream.write(b"x" * size)
            assert buffered(stream) and stream.writing()

            received = 0
            async with asyncio.timeout(20 * T):
                while not done.done():
                    chunk = await loop.sock_recv(client, 1 << 20)
                    assert chunk, "server closed"
                    received += len(chunk)
            await done
            assert not buffered(stream) and not stream.writing()
            # Whatever followed the 101 response is the payload, all of it through Tornado.
            assert received > size - (4 << 20)
        finally:
            client.close()
            server.stop()
            await asyncio.wait_for(server.close_all_connections(), 5 * T)

    asyncio.run(body())
