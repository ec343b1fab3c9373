"""Socket.IO clients with their default options: Engine.IO HTTP long-polling, then the upgrade.

socket.io-client 4 (EIO=4) and sails.io.js 1.2.1 over socket.io-client 2 (EIO=3) under Node,
with no ``transports`` option (polling first, then WebSocket) or held on polling
(``["polling"]``): they connect, join rooms through virtual requests and receive the SDK's
broadcasts across two gateways, like WebSocket clients.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.test_sails_support import (
    SDK_VERSION,
    NodeDriver,
    SailsCluster,
    assert_jwr_shape,
    extra_gateway,
)

SDK = {"__sails_io_sdk_version": SDK_VERSION}
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def sdk(sc: SailsCluster) -> Iterator[Any]:
    from roomcast import SyncCluster

    client = SyncCluster(sc.commands)
    yield client
    client.close()


def ctx(method: str, url: str, data: Any = None) -> Any:
    return {"method": method, "headers": {}, "data": data or {}, "url": url}


def metric(sc: SailsCluster, gateway: int, name: str, **labels: str) -> float:
    return sc.cluster.metrics(gateway).get(f"roomcast_gateway_{name}", **labels)


def join(js: NodeDriver, client: str, room: str) -> None:
    (jwr,) = js.emit_ack(client, "post", ctx("post", "/rooms/join", {"room": room}))
    assert_jwr_shape(jwr, 200)


def test_v4_default_transports_poll_then_upgrade_and_get_broadcasts(
    js: NodeDriver, sc: SailsCluster, sdk: Any
) -> None:
    upgrades = metric(sc, 0, "upgrades_total")
    room = f"poll-{uuid.uuid4().hex[:12]}"
    a, sid_a = js.sio(4, sc.public(0), query=SDK, transports=None, listen=["news"])
    b, sid_b = js.sio(4, sc.public(1), query=SDK, transports=None, listen=["news"])
    assert sid_a and sid_b
    assert js.seen(a, "upgrade")["transport"] == "websocket"
    assert js.seen(b, "upgrade")["transport"] == "websocket"
    assert js.state(a)["transport"] == "websocket"
    assert metric(sc, 0, "upgrades_total") >= upgrades + 1
    join(js, a, room)
    join(js, b, room)
    sdk.sockets.broadcast(room, "news", {"n": 1})
    assert js.event(a, "news") == ("news", [{"n": 1}])
    assert js.event(b, "news") == ("news", [{"n": 1}])
    # The socket kept its id through the upgrade: a push to it by id arrives.
    sdk.sockets.broadcast(sid_a, "news", "direct")
    assert js.event(a, "news") == ("news", ["direct"])


def test_v4_held_on_polling_joins_receives_and_carries_a_mib(
    js: NodeDriver, sc: SailsCluster, sdk: Any
) -> None:
    room = f"poll-{uuid.uuid4().hex[:12]}"
    a, sid_a = js.sio(4, sc.public(0), query=SDK, transports=["polling"], listen=["news"])
    b, _ = js.sio(4, sc.public(1), query=SDK, transports=["polling"], listen=["news"])
    assert sid_a
    assert js.state(a)["transport"] == "polling"
    assert metric(sc, 0, "polling_sessions") >= 1
    join(js, a, room)
    join(js, b, room)
    sdk.sockets.broadcast(room, "news", {"n": 2})
    assert js.event(a, "news") == ("news", [{"n": 2}])
    assert js.event(b, "news") == ("news", [{"n": 2}])
    # 1 MiB each way: a client's POST (echoed back in the ack) and a push from the SDK.
    big = "x" * (MIB - 512)
    (jwr,) = js.emit_ack(a, "post", ctx("post", "/echo", {"big": big}))
    assert_jwr_shape(jwr, 200)
    assert jwr["body"]["data"]["big"] == big
    sdk.sockets.broadcast(room, "news", big)
    assert js.event(b, "news") == ("news", [big])
    assert js.state(a)["transport"] == "polling"


def test_v4_polling_pushes_arrive_while_a_post_is_in_flight(
    js: NodeDriver, sc: SailsCluster, sdk: Any
) -> None:
    """Pushes reach a polling client while its POSTs are under way: a 1 MiB one, and a stream
    of small ones whose answers come back meanwhile."""
    a, sid_a = js.sio(4, sc.public(0), query=SDK, transports=["polling"], listen=["news"])
    assert sid_a
    big = "y" * (MIB - 512)
    sent = js.call(
        "emit", client=a, event="post", args=[ctx("post", "/echo", {"b": big})], ack=True
    )
    sdk.sockets.broadcast(sid_a, "news", "during")
    assert js.event(a, "news") == ("news", ["during"])
    (jwr,) = js.ack(int(sent["id"]), a)
    assert jwr["body"]["data"]["b"] == big
    js.call("busy", client=a, event="post", args=[ctx("post", "/echo", {"x": 1})], everyMs=5)
    for n in range(20):
        sdk.sockets.broadcast(sid_a, "news", n)
        assert js.event(a, "news") == ("news", [n])
    done = js.call("idle", client=a)
    assert done["sent"] > 0

    def all_acked() -> bool:
        return int(js.call("idle", client=a)["acked"]) == done["sent"]

    deadline_poll(all_acked, 10 * T, message="every busy request to be answered")
    assert js.state(a)["connected"] is True


def test_sails_io_js_polling_then_websocket(js: NodeDriver, sc: SailsCluster, sdk: Any) -> None:
    """sails.io.js 1.2.1 configured with ``transports: ['polling', 'websocket']`` (EIO=3)."""
    room = f"poll-{uuid.uuid4().hex[:12]}"
    classic, _ = js.sails(sc.public(0), listen=["shout"], transports=["polling", "websocket"])
    held, _ = js.sails(sc.public(1), listen=["shout"], transports=["polling"])
    assert js.seen(classic, "upgrade")["transport"] == "websocket"
    for client in (classic, held):
        reply = js.jwr(client, "post", "/rooms/join", {"room": room})
        assert reply["jwr"]["statusCode"] == 200
    sdk.sockets.broadcast(room, "shout", "héllo 🌍")
    assert js.event(classic, "shout") == ("shout", ["héllo 🌍"])
    assert js.event(held, "shout") == ("shout", ["héllo 🌍"])
    assert js.state(held)["transport"] == "polling"


def test_heartbeats_over_polling_keep_both_versions_connected(
    js: NodeDriver, sc: SailsCluster, sdk: Any
) -> None:
    """Short heartbeats: the v4 server's pings and the v3 client's pings travel in polls and
    POSTs; after several intervals both clients are still connected and served. One broadcast
    reaches a v3 and a v4 polling client of one gateway, each in its own payload encoding."""
    interval = 0.5 * T
    _, public = extra_gateway(
        sc, "gw-beat", "--sio-ping-interval", str(interval), "--sio-ping-timeout", str(interval)
    )
    modern, sid = js.sio(4, public, query=SDK, transports=["polling"], listen=["news"])
    classic, _ = js.sails(public, listen=["news"], transports=["polling"])
    assert sid
    for _ in range(3):
        js.seen(modern, "ping", timeout=10 * T)  # engine.io-client 6 reports each server ping
    room = f"beat-{uuid.uuid4().hex[:12]}"
    join(js, modern, room)
    assert js.jwr(classic, "post", "/rooms/join", {"room": room})["jwr"]["statusCode"] == 200
    sdk.sockets.broadcast(room, "news", "still here")
    assert js.event(modern, "news") == ("news", ["still here"])
    assert js.event(classic, "news") == ("news", ["still here"])
    for client in (modern, classic):
        state = js.state(client)
        assert state["connected"] is True and state["transport"] == "polling"
