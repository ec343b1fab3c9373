"""A python-socketio client (python-socketio 5 / python-engineio 4: Engine.IO v4) against a real
cluster: websocket transport, the Sails SDK version in the query, virtual requests emitted with a
callback, and pushes received by event handlers."""

from __future__ import annotations

import queue
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import socketio  # type: ignore[import-untyped]

from tests.conftest import TIMEOUT_UNIT as T
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


class PyClient:
    """A ``socketio.Client`` whose every received event lands in a queue."""

    def __init__(self, public: str, *, query: str | None = SDK_QUERY) -> None:
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("*", lambda event, *args: self.events.put((event, list(args))))
        url = public + (f"/?{query}" if query else "")
        self.sio.connect(url, transports=["websocket"], wait_timeout=10 * T)

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
