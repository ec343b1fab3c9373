"""Who is asking (issue 15): ``req.user``, ``req.claims`` and the handshake's headers in actions.

A primary/backup router pair, two gateways with token authentication and a real worker serving
``tests.integration.apps:app`` (its ``GET /echo`` returns what the handler saw). Three real
clients connect with a token and a cookie: unmodified sails.io.js (socket.io-client 2, the
cookie as ``initialConnectionHeaders``), socket.io-client 4 (``extraHeaders``) and a ``/ws``
WebSocket. Each one's action sees the token's ``sub`` as ``req.user``, its claims as
``req.claims`` and the cookie in ``req.headers`` (and the user a backend set with
``set_presence``) — and still does after one gateway restarts and after the primary router is
killed (the backup learns the contexts from the gateways'
resyncs; nothing is kept on a gateway that the router does not also have).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import WsClient
from tests.integration.routerpair import Pair
from tests.integration.test_sails_support import SDK_QUERY, SDK_VERSION, NodeDriver, node_driver

SECRET = "requester-tests-hs256-secret-0123456789abcdef"


def token(sub: str, **claims: Any) -> str:
    payload = {"sub": sub, "exp": int(time.time()) + 3600, **claims}
    return jwt.encode(payload, SECRET, algorithm="HS256")


class TokenPair(Pair):
    """The router pair, with gateways that verify tokens (anonymous still allowed)."""

    secret_file = ""

    def gateway_extra(self) -> list[str]:
        return [
            "--token-secret-file", self.secret_file,
            "--handshake-headers", "cookie,user-agent,accept-language,origin,x-tenant",
        ]  # fmt: skip


@pytest.fixture
def pair(tmp_path: Any) -> Iterator[TokenPair]:
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    TokenPair.secret_file = str(secret)
    with TokenPair(gateways=2, worker=True) as p:
        yield p


@pytest.fixture
def js() -> Iterator[NodeDriver]:
    with node_driver() as driver:
        yield driver
        driver.close_all()


def _echo_body(jwr: dict[str, Any]) -> dict[str, Any]:
    assert jwr["statusCode"] == 200, jwr
    body = jwr["body"]
    assert isinstance(body, dict), jwr
    return body


def _check(body: dict[str, Any], user: str, cookie: str, sub: str = "", **claims: Any) -> None:
    assert body["user"] == user, body
    assert body["claims"]["sub"] == (sub or user) and body["claims"]["exp"] > time.time(), body
    for name, value in claims.items():
        assert body["claims"][name] == value, body
    assert body["headers"]["cookie"] == cookie, body
    assert "authorization" not in body["headers"], body  # never passed on
    assert body["headers"]["x-asked"] == "yes", body  # the request's own header, merged over


def test_sails_sio4_and_ws_actions_know_who_is_asking(pair: TokenPair, js: NodeDriver) -> None:
    g0, g1 = pair.gateways
    ask = {"x-asked": "yes"}  # a request's own headers go over the handshake's

    sails_cookie = "sails.sid=s%3Aalice-session"
    sails, _ = js.sails(
        g0.public,
        query=f"{SDK_QUERY}&token={token('alice', role='admin')}",
        headers={"cookie": sails_cookie, "x-tenant": "acme"},
    )

    def sails_body() -> dict[str, Any]:
        got = js.jwr(sails, "request", "/echo", method="get", headers=ask)
        return _echo_body(got["jwr"])

    v4_cookie = "sid=bob-session; theme=dark"
    v4, _ = js.sio(
        4,
        g1.public,
        query={"__sails_io_sdk_version": SDK_VERSION, "token": token("bob", plan="pro")},
        headers={"cookie": v4_cookie},
    )

    def v4_body() -> dict[str, Any]:
        envelope = {"method": "get", "url": "/echo", "data": {}, "headers": ask}
        (jwr,) = js.emit_ack(v4, "get", envelope)
        return _echo_body(jwr)

    # socket.io-client 4 with the token in its CONNECT auth payload (not the handshake): the
    # socket is identified after it was opened, and the router still gets its claims.
    dave_cookie = "sid=dave-session"
    dave, _ = js.sio(
        4,
        g0.public,
        query={"__sails_io_sdk_version": SDK_VERSION},
        headers={"cookie": dave_cookie},
        auth={"token": token("dave", team="blue")},
    )

    def dave_body() -> dict[str, Any]:
        envelope = {"method": "get", "url": "/echo", "data": {}, "headers": ask}
        (jwr,) = js.emit_ack(dave, "get", envelope)
        return _echo_body(jwr)

    ws_cookie = "sid=carol-session"
    ws = WsClient(
        g0.ws_url + "?token=" + token("carol"),
        headers={"Cookie": ws_cookie, "Authorization": "Bearer ignored-when-a-query-token"},
    )
    pair.clients.append(ws)

    def ws_body() -> dict[str, Any]:
        reply = ws.request("request", method="GET", url="/echo", data={}, headers=ask)
        return _echo_body(reply)

    def check_all(stage: str) -> None:
        got = sails_body()
        _check(got, "alice", sails_cookie, role="admin")
        assert got["headers"]["x-tenant"] == "acme", (stage, got)  # an operator's x- header
        _check(v4_body(), "bob", v4_cookie, plan="pro")
        _check(dave_body(), "dave", dave_cookie, team="blue")
        _check(ws_body(), ws_user, ws_cookie, sub="carol")

    ws_user = "carol"
    check_all("connected")

    # The SDK changes a socket's user (set_presence): every request from then on says so, and
    # so does the router that takes over below (it learns it from the gateway's resync).
    from roomcast import SyncCluster

    sdk = SyncCluster(pair.commands)
    try:
        sdk.sockets.set_presence(ws.id, "carol@acme")
    finally:
        sdk.close()
    ws_user = "carol@acme"
    check_all("after set_presence")

    # One gateway restarts: its clients come back (same credentials), the others are untouched.
    pair.gateways[1].proc.stop()
    pair.gateways[1] = pair._gateway(2)
    v4, _ = js.sio(
        4,
        pair.gateways[1].public,
        query={"__sails_io_sdk_version": SDK_VERSION, "token": token("bob", plan="pro")},
        headers={"cookie": v4_cookie},
    )
    check_all("after a gateway restart")

    # The primary dies: the backup serves, knowing every socket's requester from the resyncs.
    switches = pair.switches()
    pair.primary.kill()
    deadline_poll(
        lambda: pair.switches() >= switches + 2 and pair.gateways_ready(),
        20 * T,
        message="both gateways switched to the backup and resynced",
    )
    deadline_poll(
        lambda: pair.router_metrics(pair.backup).get("roomcast_router_workers") == 1,
        10 * T,
        message="the backup to know the worker",
    )
    check_all("after a router failover")
