"""A python-socketio client (python-socketio 5 / python-engineio 4: Engine.IO v4) against a real
cluster: websocket transport, the Sails SDK version in the query, virtual requests emitted with a
callback, and pushes received by event handlers; then ``Client`` and ``AsyncClient`` (aiohttp)
with their default transports (long-polling, then the upgrade) and held on polling."""

from __future__ import annotations

import asyncio
import queue
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import socketio  # type: ignore[import-untyped]

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import Event, WsClient
from tests.integration.test_sails_support import (
    SDK_QUERY,
    SailsCluster,
    assert_jwr_shape,
    jwr_error_body,
    sails_cluster,
)


@pytest.fixture(scope="module")
def sc() -> Iterator[SailsCluster]:
    with sails_cluster(gateways=2, workers=1) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def sdk(sc: SailsCluster) -> Iterator[Any]:
    from roomcast import SyncCluster

    client = SyncCluster(sc.commands)
    yield client
    client.close()


WEBSOCKET = ["websocket"]


class PyClient:
    """A ``socketio.Client`` whose every received event lands in a queue."""

    def __init__(
        self,
        public: str,
        *,
        query: str | None = SDK_QUERY,
        transports: list[str] | None = WEBSOCKET,
    ) -> None:
        """``transports``: None for python-socketio's default (polling, then websocket)."""
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        # Our own HTTP session, closed with the client: python-engineio drops its own without
        # closing it (an unclosed socket warning at exit).
        self.http = requests.Session()
        self.sio = socketio.Client(reconnection=False, http_session=self.http)
        self.sio.on("*", lambda event, *args: self.events.put((event, list(args))))
        url = public + (f"/?{query}" if query else "")
        self.sio.connect(url, transports=transports, wait_timeout=10 * T)

    def call(self, event: str, method: str, url: str, data: Any = None) -> Any:
        """Emit a virtual request with a callback; returns the callback's argument (the JWR)."""
        answers: queue.Queue[tuple[Any, ...]] = queue.Queue()
        ctx = {"method": method, "headers": {}, "data": data or {}, "url": url}
        self.sio.emit(event, ctx, callback=lambda *args: answers.put(args))
        try:
            args = answers.get(timeout=10 * T)
        except queue.Empty:
            pytest.fail(f"no callback for {event} {url} within {10 * T:.1f}s")
        assert len(args) == 1, args
        return args[0]

    def next_event(self) -> tuple[str, list[Any]]:
        try:
            return self.events.get(timeout=10 * T)
        except queue.Empty:
            pytest.fail(f"no event within {10 * T:.1f}s")

    def close(self) -> None:
        self.sio.disconnect()
        self.http.close()


@pytest.fixture
def clients(sc: SailsCluster) -> Iterator[list[PyClient]]:
    sc.check_healthy()
    made: list[PyClient] = []
    yield made
    for client in made:
        client.close()
    sc.check_healthy()


def test_speaks_engine_io_4_over_websocket(sc: SailsCluster, clients: list[PyClient]) -> None:
    client = PyClient(sc.public(0))
    clients.append(client)
    assert "EIO=4" in client.sio.eio.base_url
    assert client.sio.transport() == "websocket"
    assert client.sio.connected and client.sio.sid


def test_post_with_a_callback_gets_the_jwr(sc: SailsCluster, clients: list[PyClient]) -> None:
    client = PyClient(sc.public(1))
    clients.append(client)
    jwr = client.call("post", "post", "/echo", {"n": 1, "text": "héllo"})
    assert_jwr_shape(jwr, 200)
    body = jwr["body"]
    assert (body["method"], body["url"]) == ("POST", "/echo")
    assert body["data"] == {"n": 1, "text": "héllo"}
    assert body["socket"] == client.sio.sid and body["is_socket"] is True
    jwr = client.call("post", "post", "/status/201")
    assert_jwr_shape(jwr, 201)  # set-cookie stripped
    assert jwr["headers"].get("x-roomcast-test") == "1"
    jwr = client.call("get", "get", "/user/9")
    assert_jwr_shape(jwr, 200)
    assert jwr["body"] == {"id": "9", "params": {"id": "9"}}


def test_without_sdk_version_gets_400(sc: SailsCluster, clients: list[PyClient]) -> None:
    client = PyClient(sc.public(0), query=None)
    clients.append(client)
    jwr = client.call("post", "post", "/echo")
    assert_jwr_shape(jwr, 400)
    assert "__sails_io_sdk_version" in jwr_error_body(jwr)["message"]


def test_receives_pushes_and_is_omitted_from_its_own_shout(
    sc: SailsCluster, clients: list[PyClient], sdk: Any
) -> None:
    client = PyClient(sc.public(0))
    clients.append(client)
    sid = client.sio.sid
    sdk.sockets.broadcast(sid, "hello", {"to": "python"})
    sdk.sockets.broadcast(sid, "second", [1, 2])
    assert client.next_event() == ("hello", [{"to": "python"}])
    assert client.next_event() == ("second", [[1, 2]])

    room = f"py-{uuid.uuid4().hex[:12]}"
    peer = WsClient(sc.cluster.gateways[1].ws_url)
    try:
        sdk.sockets.join(peer.id, room)
        assert_jwr_shape(client.call("post", "post", "/rooms/join", {"room": room}), 200)
        jwr = client.call("post", "post", "/rooms/shout", {"room": room, "data": "from py"})
        assert_jwr_shape(jwr, 200)
        assert peer.next_event() == Event("shout", "from py")
    finally:
        peer.close()
    mark = uuid.uuid4().hex
    sdk.sockets.broadcast(sid, "marker", mark)
    assert client.next_event() == ("marker", [mark]), "the requester was not omitted"


# ------------------------------------------------------------------ long-polling


@pytest.mark.parametrize("transports", [None, ["polling"]], ids=["default", "polling"])
def test_client_with_default_or_polling_transports(
    sc: SailsCluster, clients: list[PyClient], sdk: Any, transports: list[str] | None
) -> None:
    """``Client`` with no transports (polling, then the upgrade) or held on polling: joins via
    a virtual request on each gateway and receives the SDK's broadcasts."""
    room = f"py-poll-{uuid.uuid4().hex[:12]}"
    for gateway in (0, 1):
        client = PyClient(sc.public(gateway), transports=transports)
        clients.append(client)
        assert_jwr_shape(client.call("post", "post", "/rooms/join", {"room": room}), 200)
    if transports is None:
        deadline_poll(
            lambda: all(c.sio.transport() == "websocket" for c in clients),
            10 * T,
            message="both clients to upgrade to websocket",
        )
    else:
        assert all(c.sio.transport() == "polling" for c in clients)
    sdk.sockets.broadcast(room, "news", {"n": 1})
    for client in clients:
        assert client.next_event() == ("news", [{"n": 1}])
    big = "z" * (1024 * 1024 - 512)
    jwr = clients[0].call("post", "post", "/echo", {"big": big})
    assert jwr["body"]["data"]["big"] == big


@pytest.mark.parametrize("transports", [None, ["polling"]], ids=["default", "polling"])
def test_async_client_with_default_or_polling_transports(
    sc: SailsCluster, sdk: Any, transports: list[str] | None
) -> None:
    """``AsyncClient`` (aiohttp) the same way, on both gateways."""
    room = f"py-async-{uuid.uuid4().hex[:12]}"

    async def scenario() -> list[str]:
        made: list[Any] = []
        inboxes: list[asyncio.Queue[Any]] = []
        try:
            for gateway in (0, 1):
                inbox: asyncio.Queue[Any] = asyncio.Queue()
                sio = socketio.AsyncClient(reconnection=False)
                sio.on("news", inbox.put)
                made.append(sio)
                inboxes.append(inbox)
                url = sc.public(gateway) + f"/?{SDK_QUERY}"
                await sio.connect(url, transports=transports, wait_timeout=10 * T)
                ctx = {
                    "method": "post",
                    "headers": {},
                    "data": {"room": room},
                    "url": "/rooms/join",
                }
                jwr = await sio.call("post", ctx, timeout=10 * T)
                assert_jwr_shape(jwr, 200)
            if transports is None:
                for _ in range(int(100 * T)):
                    if all(s.transport() == "websocket" for s in made):
                        break
                    await asyncio.sleep(0.1)  # polling the client's state with a deadline
            await asyncio.to_thread(sdk.sockets.broadcast, room, "news", {"n": 2})
            for inbox in inboxes:
                assert await asyncio.wait_for(inbox.get(), 10 * T) == {"n": 2}
            return [s.transport() for s in made]
        finally:
            for sio in made:
                await sio.disconnect()

    sc.check_healthy()
    got = asyncio.run(scenario())
    assert got == (["websocket"] * 2 if transports is None else ["polling"] * 2)
    sc.check_healthy()
