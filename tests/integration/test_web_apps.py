"""Existing web apps as action handlers (issue 15): a FastAPI app and a Flask app.

Real processes: a router, one gateway, and two workers — ``roomcast worker --asgi`` serving
``tests.integration.web_apps:api`` (FastAPI; the routes it announces are read from the app) and
``roomcast worker --wsgi`` serving ``web_apps:web`` (Flask, through a2wsgi) with
``--route '* /flask/*'``. The unmodified sails.io.js
client connects with a session cookie in its handshake and calls them with ``io.socket.get``
/ ``post``: their own routing, FastAPI's 422 validation errors and Flask's 400 as JWRs, their
own session-cookie auth (401 without it), and a join of the requesting socket to a room that
then receives a broadcast.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import Metrics, Proc, http_get
from tests.integration.test_sails_support import (
    SDK_QUERY,
    NodeDriver,
    SailsCluster,
    node_driver,
    sails_cluster,
)
from tests.integration.web_apps import flask_session_cookie


@pytest.fixture(scope="module")
def sc() -> Iterator[SailsCluster]:
    with sails_cluster(gateways=1, workers=0) as cluster:
        for name, flags in (
            ("fastapi", ["--asgi", "tests.integration.web_apps:api"]),
            ("flask", ["--wsgi", "tests.integration.web_apps:web", "--route", "* /flask/*"]),
        ):
            argv = ["-m", "roomcast.cli", "worker", *flags, "--router", cluster.commands]
            proc = Proc(name, argv)
            cluster.extra.append(proc)
            proc.wait_ready()
        yield cluster


@pytest.fixture
def js(sc: SailsCluster) -> Iterator[NodeDriver]:
    with node_driver() as driver:
        sc.check_healthy()
        yield driver
        driver.close_all()
    sc.check_healthy()


def connect(js: NodeDriver, sc: SailsCluster, cookie: str | None) -> str:
    headers = {"cookie": cookie} if cookie else None
    client, _ = js.sails(sc.public(0), query=SDK_QUERY, headers=headers, listen=["news", "message"])
    return client


def jwr(js: NodeDriver, client: str, via: str, url: str, data: Any = None) -> dict[str, Any]:
    got = js.jwr(client, via, url, data)
    return dict(got["jwr"])


def test_fastapi_routing_validation_and_session_auth(js: NodeDriver, sc: SailsCluster) -> None:
    alice = connect(js, sc, "session=s-alice; theme=dark")
    got = jwr(js, alice, "get", "/api/items/7?q=red")
    assert got["statusCode"] == 200, got
    assert got["body"] == {"id": 7, "q": "red", "user": "alice"}, got
    assert got["headers"]["content-type"] == "application/json", got
    # io.socket.get(url, data): the data reads as the query, as in Sails.
    got = jwr(js, alice, "get", "/api/items/8", {"q": "blue"})
    assert got["body"] == {"id": 8, "q": "blue", "user": "alice"}, got

    bad = jwr(js, alice, "get", "/api/items/not-a-number")
    assert bad["statusCode"] == 422, bad
    assert bad["body"]["detail"][0]["loc"] == ["path", "item_id"], bad

    invalid = jwr(js, alice, "post", "/api/items", {"name": "pen"})
    assert invalid["statusCode"] == 422, invalid
    assert invalid["body"]["detail"][0]["loc"] == ["body", "price"], invalid
    created = jwr(js, alice, "post", "/api/items", {"name": "pen", "price": 1.5})
    assert created["statusCode"] == 201, created
    assert created["body"] == {"created": {"name": "pen", "price": 1.5}, "user": "alice"}

    missing = jwr(js, alice, "get", "/api/nope")
    assert missing["statusCode"] == 404, missing  # no worker announces it: the router's 404

    def announced() -> bool:
        status, text = http_get(sc.cluster.router.info["http"] + "/metrics")
        assert status == 200
        metrics = Metrics(text)
        routes = ("GET /api/items/:item_id", "POST /api/rooms/:room/join", "* /flask/*")
        return all(metrics.get("roomcast_router_route_workers", route=r) == 1 for r in routes)

    # The FastAPI worker announced its own routes, read from the app (the gauge is refreshed
    # every router heartbeat).
    deadline_poll(announced, 5 * T, message="both workers' routes on the router's /metrics")

    stranger = connect(js, sc, None)
    refused = jwr(js, stranger, "get", "/api/items/7")
    assert refused["statusCode"] == 401 and refused["body"] == {"detail": "not signed in"}
    forged = connect(js, sc, "session=s-mallory")
    assert jwr(js, forged, "get", "/api/items/7")["statusCode"] == 401


def test_flask_routing_validation_and_session_auth(js: NodeDriver, sc: SailsCluster) -> None:
    bob = connect(js, sc, flask_session_cookie("bob"))
    got = jwr(js, bob, "get", "/flask/items/3")
    assert got["statusCode"] == 200 and got["body"] == {"id": 3, "user": "bob"}, got
    assert jwr(js, bob, "get", "/flask/items/x")["statusCode"] == 404  # Flask's converter
    bad = jwr(js, bob, "post", "/flask/items", {"nope": 1})
    assert bad["statusCode"] == 400 and bad["body"] == {"error": "name is required"}, bad
    created = jwr(js, bob, "post", "/flask/items", {"name": "mug"})
    assert created["statusCode"] == 201, created
    assert created["body"] == {"created": "mug", "user": "bob"}

    stranger = connect(js, sc, None)
    assert jwr(js, stranger, "get", "/flask/items/3")["statusCode"] == 401
    tampered = flask_session_cookie("bob")[:-2] + "xx"
    assert jwr(js, connect(js, sc, tampered), "get", "/flask/items/3")["statusCode"] == 401


@pytest.mark.parametrize(
    ("cookie", "prefix"),
    [("session=s-alice", "/api"), (flask_session_cookie("bob"), "/flask")],
    ids=["fastapi", "flask"],
)
def test_an_endpoint_joins_the_requesting_socket_to_a_room(
    js: NodeDriver, sc: SailsCluster, cookie: str, prefix: str
) -> None:
    from roomcast import SyncCluster

    client = connect(js, sc, cookie)
    room = f"news-{uuid.uuid4().hex[:8]}"
    got = jwr(js, client, "post", f"{prefix}/rooms/{room}/join")
    assert got["statusCode"] == 200 and got["body"]["joined"] == room, got
    sdk = SyncCluster(sc.commands)
    try:
        assert sdk.sockets.count(room) == 1
        sdk.sockets.broadcast(room, "news", {"hello": room})
        sdk.sockets.broadcast(room, {"no": "event"})  # Sails' broadcast(rooms, data)
    finally:
        sdk.close()
    assert js.event(client, "news") == ("news", [{"hello": room}])
    assert js.event(client, "message") == ("message", [{"no": "event"}])
