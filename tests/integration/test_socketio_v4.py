"""socket.io-client 4.8 under Node (EIO=4, ``transports: ["websocket"]``, the SDK version in the
query) emitting Sails virtual requests as events with an ack, and Engine.IO heartbeats.

sails.io.js cannot wrap socket.io-client 4, so these clients speak the Sails protocol by hand, as
a current front-end does: ``socket.emit("post", {method, headers, data, url}, ack)``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import TIMEOUT_UNIT as T
from tests.integration.test_sails_support import (
    SDK_VERSION,
    NodeDriver,
    SailsCluster,
    SioRaw,
    assert_jwr_shape,
    extra_gateway,
    jwr_error_body,
)

# The worker logs the exception of /boom for the operator (never sent to the client).
BOOM_LOGGED = "POST /boom"  # in the ERROR line the worker logs

SDK = {"__sails_io_sdk_version": SDK_VERSION}


@pytest.fixture(scope="module")
def sdk(sc: SailsCluster) -> Iterator[Any]:
    from roomcast import SyncCluster

    client = SyncCluster(sc.commands)
    yield client
    client.close()


def ctx(method: str, url: str, data: Any = None, headers: dict[str, str] | None = None) -> Any:
    """The virtual request sails.io.js would send: ``{method, headers, data, url}``."""
    return {"method": method, "headers": headers or {}, "data": data or {}, "url": url}


def v4(js: NodeDriver, public: str, **kw: Any) -> tuple[str, str]:
    client, sid = js.sio(4, public, query=SDK, **kw)
    assert isinstance(sid, str) and sid
    return client, sid


@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete"])
def test_virtual_request_events_get_jwrs(js: NodeDriver, sc: SailsCluster, method: str) -> None:
    client, sid = v4(js, sc.public(0))
    data = {"n": 3, "text": "héllo"}
    (jwr,) = js.emit_ack(client, method, ctx(method, "/echo", data, {"x-custom": "v4"}))
    assert_jwr_shape(jwr, 200)
    body = jwr["body"]
    assert body["method"] == method.upper() and body["url"] == "/echo"
    assert body["data"] == data and body["headers"].get("x-custom") == "v4"
    assert body["socket"] == sid and body["is_socket"] is True


def test_status_header_and_set_cookie_stripped(js: NodeDriver, sc: SailsCluster) -> None:
    client, _ = v4(js, sc.public(1))
    (jwr,) = js.emit_ack(client, "post", ctx("post", "/status/202"))
    assert_jwr_shape(jwr, 202)
    assert jwr["headers"].get("x-roomcast-test") == "1"
    assert jwr["body"] == {"asked": "202"}


def test_path_params_404_and_500(js: NodeDriver, sc: SailsCluster) -> None:
    client, _ = v4(js, sc.public(1))
    (jwr,) = js.emit_ack(client, "get", ctx("get", "/user/abc"))
    assert_jwr_shape(jwr, 200)
    assert jwr["body"] == {"id": "abc", "params": {"id": "abc"}}
    (jwr,) = js.emit_ack(client, "get", ctx("get", "/nothing/here"))
    assert_jwr_shape(jwr, 404)
    assert jwr_error_body(jwr)["error"] == "not_found"
    (jwr,) = js.emit_ack(client, "post", ctx("post", "/boom"))
    assert_jwr_shape(jwr, 500)
    assert "secret" not in repr(jwr) and "RuntimeError" not in repr(jwr), jwr
    sc.accept_log(sc.workers[0], "RuntimeError: secret internals", BOOM_LOGGED)


def test_without_sdk_version_requests_get_400(js: NodeDriver, sc: SailsCluster) -> None:
    client, sid = js.sio(4, sc.public(0))
    assert sid
    (jwr,) = js.emit_ack(client, "get", ctx("get", "/echo"))
    assert_jwr_shape(jwr, 400)
    assert "__sails_io_sdk_version" in jwr_error_body(jwr)["message"]


def test_pushes_and_requester_omission_with_a_sails_io_js_peer(
    js: NodeDriver, sc: SailsCluster, sdk: Any
) -> None:
    """A v4 client (EIO4) and a sails.io.js client (EIO3) on different gateways share a room."""
    modern, sid = v4(js, sc.public(0), listen=["hello", "shout"])
    classic, _ = js.sails(sc.public(1), listen=["shout"])
    sdk.sockets.broadcast(sid, "hello", {"to": "v4"})
    assert js.event(modern, "hello") == ("hello", [{"to": "v4"}])
    room = f"mixed-{uuid.uuid4().hex[:12]}"
    (jwr,) = js.emit_ack(modern, "post", ctx("post", "/rooms/join", {"room": room}))
    assert_jwr_shape(jwr, 200)
    assert js.jwr(classic, "post", "/rooms/join", {"room": room})["jwr"]["statusCode"] == 200
    (jwr,) = js.emit_ack(modern, "post", ctx("post", "/rooms/shout", {"room": room, "data": 1}))
    assert_jwr_shape(jwr, 200)
    assert js.event(classic, "shout") == ("shout", [1])
    mark = uuid.uuid4().hex
    sdk.sockets.broadcast(sid, "shout", mark)
    assert js.event(modern, "shout") == ("shout", [mark]), "the shouter was not omitted"


def test_server_pings_keep_clients_and_drop_those_that_ignore_them(
    js: NodeDriver, sc: SailsCluster, sdk: Any
) -> None:
    """Engine.IO heartbeats on a gateway with a 1 s ping interval and a 1 s ping timeout.

    EIO4: the server pings; socket.io-client 4 answers and stays connected across several
    intervals, both when idle and when busy sending requests (engine.io-client resets its
    heartbeat timer only on a ping, so the server must ping whatever else the client sends),
    while a raw client that ignores the pings is disconnected (close 1001, without ``41``: the
    client should reconnect, and a disconnect packet would stop its reconnection).
    EIO3: the client pings; sails.io.js stays, a raw client that never pings is dropped.
    """
    interval, timeout = 1, 1
    flags = ["--sio-ping-interval", str(interval), "--sio-ping-timeout", str(timeout)]
    _, public = extra_gateway(sc, "gateway-pings", *flags)
    idle, idle_sid = v4(js, public, listen=["tick"])
    busy, _ = v4(js, public)
    classic, _ = js.sails(public, listen=["tick"])
    deaf4 = SioRaw(public, eio=4)
    deaf3 = SioRaw(public, eio=3)
    try:
        assert deaf4.handshake["pingInterval"] == interval * 1000
        assert deaf4.handshake["pingTimeout"] == timeout * 1000
        # The busy client sends a request every 100 ms: never a whole interval of silence.
        js.call("busy", client=busy, event="get", args=[ctx("get", "/user/1")], everyMs=100)
        started = time.monotonic()
        pings = {idle: 0, busy: 0}
        # Several intervals: at least four pings each, and longer than interval + timeout.
        while min(pings.values()) < 4 or time.monotonic() - started < 2 * (interval + timeout):
            remaining = started + 15 * T - time.monotonic()
            assert remaining > 0, f"too few pings: {pings}"
            msg = js.wait(
                lambda m: m.get("client") in pings and m.get("type") in ("ping", "disconnect"),
                remaining,
                what="pings",
            )
            assert msg["type"] == "ping", f"{msg['client']} was disconnected: {msg}"
            pings[msg["client"]] += 1
        work = js.call("idle", client=busy)
        assert work["sent"] >= 10 and work["acked"] >= work["sent"] - 1, work
        for client in (idle, busy, classic):
            assert js.state(client)["connected"] is True, client
        assert js.take_all(classic, "disconnect") == 0
        # Still served and still receiving pushes.
        assert js.jwr(classic, "get", "/user/2")["jwr"]["statusCode"] == 200
        sdk.sockets.broadcast(idle_sid, "tick", 1)
        assert js.event(idle, "tick") == ("tick", [1])

        code, packets = deaf4.wait_closed()
        assert code == 1001, (code, packets)
        assert "2" in packets, f"no ping before the close: {packets}"
        assert "41" not in packets, f"a disconnect packet would stop reconnection: {packets}"
        code, packets = deaf3.wait_closed()
        assert code == 1001, (code, packets)
        assert packets == [], "an EIO3 server never pings, and the close is not final"
    finally:
        deaf4.close()
        deaf3.close()
