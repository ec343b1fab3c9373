"""The unmodified sails.io.js 1.2.1 client (socket.io-client 2.x, EIO=3) under Node.

A real router, two gateways and a real ``roomcast worker`` serving ``tests.integration.apps:app``
(started once for this module), driven through ``tests/js/sails_client.js``. Everything is
checked as sails.io.js hands it to the application: the callback's ``(body, JWR)``.

Negative checks use a marker: after the push that must not arrive, the SDK sends a marker to the
socket's own id room; it is accepted by the router after the push was (the action returned only
once the router acked its broadcast), so it is the next push the socket may see.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.harness import Cluster
from tests.integration.test_sails_support import (
    SDK_VERSION,
    NodeDriver,
    SailsCluster,
    assert_jwr_shape,
    extra_gateway,
    jwr_error_body,
)

# The worker logs the exception of /boom for the operator (never sent to the client).
BOOM_LOGGED = "POST /boom"  # in the ERROR line the worker logs


@pytest.fixture(scope="module")
def sdk(sc: SailsCluster) -> Iterator[Any]:
    from roomcast import SyncCluster

    client = SyncCluster(sc.commands)
    yield client
    client.close()


def token() -> str:
    return uuid.uuid4().hex


def echo_socket(js: NodeDriver, client: str) -> str:
    """The socket id the cluster knows ``client`` by, as an action sees it (``req.socket``)."""
    got = js.jwr(client, "get", "/echo")
    assert got["jwr"]["statusCode"] == 200, got
    sid = got["body"]["socket"]
    assert isinstance(sid, str) and sid, got
    return sid


def assert_marker_first(js: NodeDriver, sdk: Any, client: str, sid: str, event: str) -> None:
    """Nothing reached ``client`` as ``event`` before a marker the SDK sends now."""
    mark = token()
    sdk.sockets.broadcast(sid, event, {"marker": mark})
    assert js.event(client, event) == (event, [{"marker": mark}])


# ------------------------------------------------------------------------------ the clients


def test_node_driver_runs_the_pinned_client_versions(js: NodeDriver) -> None:
    assert js.info["versions"] == {
        "sails.io.js": SDK_VERSION,
        "socket.io-client": "2.5.0",
        "socket.io-client-v4": "4.8.1",
    }


def test_connect_reports_the_socket_id_the_actions_see(js: NodeDriver, sc: SailsCluster) -> None:
    for gateway in (0, 1):
        client, _ = js.sails(sc.public(gateway))
        assert js.state(client)["connected"] is True
        # socket.io-client 2 names the socket after the Engine.IO sid: the roomcast socket id.
        raw_id = js.state(client)["sid"]
        assert echo_socket(js, client) == raw_id


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize(
    ("via", "method"),
    [
        ("get", "GET"),
        ("post", "POST"),
        ("put", "PUT"),
        ("delete", "DELETE"),
        ("request", "PATCH"),  # io.socket.request({method: "patch", ...})
    ],
)
def test_verbs_round_trip_with_a_jwr(
    js: NodeDriver, sc: SailsCluster, via: str, method: str
) -> None:
    client, _ = js.sails(sc.public(1))
    data = {"n": 1, "text": "héllo", "list": [1, 2]}
    kw: dict[str, Any] = {}
    if via == "request":
        kw = {"method": method.lower(), "headers": {"x-custom": "yes"}}
    got = js.jwr(client, via, "/echo", data, **kw)
    assert got["jwrIsJWR"] is True and got["bodyIsError"] is False, got
    assert got["jwrError"] is None, got
    jwr = got["jwr"]
    assert_jwr_shape(jwr, 200)
    assert got["body"] == jwr["body"], "the callback's body is the JWR's body"
    body = jwr["body"]
    assert body["method"] == method
    assert body["url"] == "/echo"
    assert body["data"] == data
    assert body["is_socket"] is True
    if via == "request":
        assert body["headers"].get("x-custom") == "yes", body


@pytest.mark.parametrize("code", [200, 201, 418])
def test_status_headers_and_stripped_set_cookie(
    js: NodeDriver, sc: SailsCluster, code: int
) -> None:
    client, _ = js.sails(sc.public(0))
    got = js.jwr(client, "post", f"/status/{code}", {})
    jwr = got["jwr"]
    assert_jwr_shape(jwr, code)  # no set-cookie
    assert jwr["headers"].get("x-roomcast-test") == "1", jwr
    assert jwr["body"] == {"asked": str(code)}
    if code >= 400:  # sails.io.js attaches an Error to JWRs outside 2xx/3xx
        assert got["jwrError"].startswith(f"Server responded with a {code} status code"), got
    else:
        assert got["jwrError"] is None, got


def test_path_parameters(js: NodeDriver, sc: SailsCluster) -> None:
    client, _ = js.sails(sc.public(1))
    got = js.jwr(client, "get", "/user/42")
    assert_jwr_shape(got["jwr"], 200)
    assert got["body"] == {"id": "42", "params": {"id": "42"}}


def test_no_action_is_404(js: NodeDriver, sc: SailsCluster) -> None:
    client, _ = js.sails(sc.public(0))
    got = js.jwr(client, "get", "/no/such/action")
    assert_jwr_shape(got["jwr"], 404)
    assert jwr_error_body(got["jwr"])["error"] == "not_found"
    assert got["jwrError"].startswith("Server responded with a 404 status code"), got


def test_handler_exception_is_500_without_internals(js: NodeDriver, sc: SailsCluster) -> None:
    client, _ = js.sails(sc.public(1))
    got = js.jwr(client, "post", "/boom", {})
    assert_jwr_shape(got["jwr"], 500)
    jwr_error_body(got["jwr"])
    text = repr(got["jwr"])
    for leak in ("secret internals", "RuntimeError", "Traceback", "apps.py"):
        assert leak not in text, f"500 JWR leaks {leak!r}: {text}"
    # The worker logs the exception (ERROR + traceback) for the operator: expected here.
    sc.accept_log(sc.workers[0], "RuntimeError: secret internals", BOOM_LOGGED)


def test_no_worker_is_503(node: NodeDriver, cluster: Cluster) -> None:
    """The suite's shared cluster has no action worker at all."""
    try:
        client, _ = node.sails(cluster.gateways[0].public)
        got = node.jwr(client, "post", "/echo", {"a": 1})
        assert_jwr_shape(got["jwr"], 503)
        assert jwr_error_body(got["jwr"])["error"] == "no_worker"
    finally:
        node.close_all()


# ------------------------------------------------------------------------------ pushes


def test_sdk_broadcast_to_the_socket_id_is_received_with_on(
    js: NodeDriver, sc: SailsCluster, sdk: Any
) -> None:
    a, _ = js.sails(sc.public(0), listen=["hello", "other"])
    b, _ = js.sails(sc.public(1), listen=["hello"])
    sid_a, sid_b = echo_socket(js, a), echo_socket(js, b)
    payload = {"text": "héllo", "n": [1, 2, 3], "nested": {"ok": True}}
    sdk.sockets.broadcast(sid_a, "hello", payload)
    sdk.sockets.broadcast(sid_b, "hello", "to b")
    sdk.sockets.broadcast(sid_a, "other", None)
    assert js.event(a, "hello") == ("hello", [payload])
    assert js.event(b, "hello") == ("hello", ["to b"])
    assert js.event(a, "other") == ("other", [None])
    assert_marker_first(js, sdk, b, sid_b, "hello")


def test_requester_omitted_from_shout_across_two_gateways(
    js: NodeDriver, sc: SailsCluster, sdk: Any
) -> None:
    room = f"shout-{token()[:12]}"
    shouter, _ = js.sails(sc.public(0), listen=["shout"])
    same_gw, _ = js.sails(sc.public(0), listen=["shout"])
    other_gw, _ = js.sails(sc.public(1), listen=["shout"])
    for client in (shouter, same_gw, other_gw):
        got = js.jwr(client, "post", "/rooms/join", {"room": room})
        assert got["jwr"]["statusCode"] == 200 and got["body"] == {"joined": room}, got
    got = js.jwr(shouter, "post", "/rooms/shout", {"room": room, "data": {"says": "hi"}})
    assert got["jwr"]["statusCode"] == 200, got
    assert js.event(same_gw, "shout") == ("shout", [{"says": "hi"}])
    assert js.event(other_gw, "shout") == ("shout", [{"says": "hi"}])
    assert_marker_first(js, sdk, shouter, echo_socket(js, shouter), "shout")


# ------------------------------------------------------------------------------ queue, disconnect


def test_requests_made_before_connecting_are_queued_then_answered(
    js: NodeDriver, sc: SailsCluster
) -> None:
    requests: list[dict[str, Any]] = [
        {"via": "get", "url": "/echo", "data": {"n": 1}},
        {"via": "post", "url": "/echo", "data": {"n": 2}},
        {"via": "get", "url": "/user/7"},
    ]
    client, reply = js.sails(sc.public(1), requests=requests, wait=False)
    # sails.io.js queued all three: the socket had not connected when they were made.
    assert [q["connected"] for q in reply["queued"]] == [False, False, False], reply
    assert reply["queueLength"] == 3, reply
    sid = js.seen(client, "connect")["sid"]
    first, second, third = (js.response(q["id"]) for q in reply["queued"])
    for got in (first, second, third):
        assert_jwr_shape(got["jwr"], 200)
    assert (first["body"]["method"], first["body"]["data"]) == ("GET", {"n": 1})
    assert (second["body"]["method"], second["body"]["data"]) == ("POST", {"n": 2})
    assert first["body"]["socket"] == second["body"]["socket"] == sid
    assert third["body"] == {"id": "7", "params": {"id": "7"}}


def assert_failed_by_disconnect(got: dict[str, Any]) -> None:
    """What sails.io.js 1.2.1 does with in-flight requests when its socket disconnects
    (sails.io.js, ``self.on('disconnect', ...)``): every pending callback is called once with
    ``(new Error('The socket disconnected before the request completed.'),
    {body: null, statusCode: 0, headers: {}})`` — an Error as the body and a plain object
    (not a JWR) as the second argument."""
    assert got["bodyIsError"] is True, got
    assert got["body"] == {"error": "The socket disconnected before the request completed."}
    assert got["jwrIsJWR"] is False, got
    assert got["jwr"] == {"body": None, "statusCode": 0, "headers": {}}, got


def test_client_disconnect_fails_pending_callbacks(js: NodeDriver, sc: SailsCluster) -> None:
    client, _ = js.sails(sc.public(0))
    pending = [js.request(client, "post", "/slow", {"seconds": 2}) for _ in range(2)]
    js.disconnect(client)
    for rid in pending:
        assert_failed_by_disconnect(js.response(rid))
    assert js.seen(client, "disconnect")["reason"] == "io client disconnect"
    assert js.state(client)["connected"] is False


def test_gateway_drain_fails_pending_callbacks(js: NodeDriver, sc: SailsCluster) -> None:
    """A server-side disconnect (the gateway drains on SIGTERM) fails in-flight requests too.
    The drain closes the transport without Socket.IO's disconnect packet, as a restarting
    Socket.IO server does: a 'transport close', which the client's reconnection acts on (an
    'io server disconnect' would stop it for good; test_rolling_deploy.py reconnects)."""
    gateway, public = extra_gateway(sc, "gateway-drained")
    client, _ = js.sails(public)
    assert echo_socket(js, client)
    rid = js.request(client, "post", "/slow", {"seconds": 2})
    gateway.stop()  # SIGTERM: drains, exits 0
    gateway.check_log()
    assert_failed_by_disconnect(js.response(rid))
    assert js.seen(client, "disconnect")["reason"] == "transport close"


# ------------------------------------------------------------------------------ the handshake


def test_handshake_without_sdk_version_gets_400_jwr(js: NodeDriver, sc: SailsCluster) -> None:
    """Raw socket.io-client 2 without ``__sails_io_sdk_version``: connected, but every virtual
    request is refused with a 400 JWR (Sails answers such clients; we do with a 400)."""
    client, sid = js.sio(2, sc.public(0), listen=["sails:parseError"])
    assert sid
    ctx = {"method": "get", "url": "/echo", "data": {}, "headers": {}}
    (jwr,) = js.emit_ack(client, "get", ctx)
    assert_jwr_shape(jwr, 400)
    body = jwr_error_body(jwr)
    assert body["error"] == "bad_request" and "__sails_io_sdk_version" in body["message"], body
    # Without an ack the same refusal comes back as Sails' parse-error event.
    js.emit(client, "get", ctx)
    _, (error,) = js.event(client, "sails:parseError")
    assert error == body
    # With the version in the query, the same raw client is served.
    served, _ = js.sio(2, sc.public(0), query={"__sails_io_sdk_version": SDK_VERSION})
    (jwr,) = js.emit_ack(served, "get", ctx)
    assert_jwr_shape(jwr, 200)
    assert jwr["body"]["method"] == "GET"


def test_sails_parse_error_for_a_bad_envelope_without_ack(js: NodeDriver, sc: SailsCluster) -> None:
    """A real socket.io-client 2 socket with the SDK version sends a malformed virtual request
    without an ack: the gateway answers with ``sails:parseError`` and the socket stays usable."""
    client, _ = js.sio(2, sc.public(1), query={"__sails_io_sdk_version": SDK_VERSION})
    js.on(client, "sails:parseError")
    js.emit(client, "post", "not an envelope")
    _, (error,) = js.event(client, "sails:parseError")
    assert error["error"] == "bad_request", error
    (jwr,) = js.emit_ack(client, "post", {"method": "post", "url": "/user/1", "data": {}})
    assert_jwr_shape(jwr, 404)  # GET-only action: the socket still works
