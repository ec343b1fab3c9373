"""A Tornado WebSocket server on 127.0.0.1 and a raw client that reads only when told to.

For tests of what the gateway's write path relies on: the client's receive buffer is small, so
once it stops reading the kernel fills and Tornado has to hold bytes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket

from roomcast.bench.wsclient import handshake_request
from tests.conftest import TIMEOUT_UNIT as T


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5 * T) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def raw_client(
    handler: type[tornado.websocket.WebSocketHandler], log: dict[str, Any]
) -> AsyncIterator[socket.socket]:
    """Serve ``handler`` (given ``log``) on /ws; yield a client that has sent its upgrade
    request and read nothing yet."""
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    app = tornado.web.Application([(r"/ws", handler, {"log": log})])
    server = tornado.httpserver.HTTPServer(app)
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
        yield client
    finally:
        client.close()
        server.stop()
        await asyncio.wait_for(server.close_all_connections(), 5 * T)
