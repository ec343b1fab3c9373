"""The publish size bound, on every path a message enters by, and errors that keep their fields.

A router with ``--max-publish-bytes 20000`` and two gateways: gateway 0 with the default send
queue (4 MiB), gateway 1 with ``--max-send-queue-bytes 16384`` (below the router's bound, the
misconfiguration the gateway must survive). Both accept client frames up to 100 kB, so a client's
oversize broadcast reaches the router.

* The SDK refuses a publish over its own bound (1 MiB by default) before sending anything: the
  2 MiB then 5 MiB broadcasts of the issue raise ``PayloadTooLarge`` and the subscriber stays.
* The router refuses one over ``--max-publish-bytes`` with 413 ``payload_too_large`` whichever
  way it came (SDK, HTTP server API, a client's broadcast op), counted in
  ``roomcast_router_command_errors_total{code="payload_too_large"}``; the error's ``size`` and
  ``limit`` survive the trip.
* A gateway never writes a message larger than a connection's whole send-queue bound (not even
  by a direct write): the subscriber stays connected, and
  ``roomcast_gateway_dropped_total{reason="oversize"}`` counts it.
* ``NoSuchSocket.socket`` names the socket after a router round trip; after ``close()`` the SDK
  raises a ``RoomcastError`` (``StateError``).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from roomcast import Cluster, NoSuchSocket, PayloadTooLarge, RoomcastError, SyncCluster
from roomcast.core.errors import StateError
from tests.conftest import TIMEOUT_UNIT as T
from tests.integration.harness import (
    Cluster as Procs,
)
from tests.integration.harness import (
    Gateway,
    Metrics,
    WsClient,
    fresh_room,
    gateway_proc,
    http_get,
    router_proc,
)

ROUTER_LIMIT = 20_000
SMALL_QUEUE = 16_384
SDK_DEFAULT = 1024 * 1024


@pytest.fixture(scope="module")
def procs() -> Iterator[Procs]:
    router = router_proc("--max-publish-bytes", str(ROUTER_LIMIT))
    started = [router]
    try:
        info = router.wait_ready()
        frames = ("--max-frame-bytes", "100000")
        g0 = gateway_proc("gateway0", info, *frames)
        g1 = gateway_proc("gateway1", info, *frames, "--max-send-queue-bytes", str(SMALL_QUEUE))
        started += [g0, g1]
        gws = [Gateway(p, p.wait_ready()["public"], p.info["internal"]) for p in (g0, g1)]
    except BaseException:
        for proc in started:
            proc.kill()
        raise
    cluster = Procs(router, gws)
    yield cluster
    cluster.stop()


@pytest.fixture
def env(procs: Procs) -> Iterator[Procs]:
    offsets = procs.log_offsets()
    yield procs
    procs.close_clients()
    procs.check_healthy(offsets)


def router_metrics(procs: Procs) -> Metrics:
    status, text = http_get(str(procs.router.info["http"]) + "/metrics")
    assert status == 200
    return Metrics(text)


def refused_at_router(procs: Procs) -> float:
    return router_metrics(procs).get(
        "roomcast_router_command_errors_total", code="payload_too_large"
    )


def subscriber(procs: Procs, gateway: int, room: str) -> WsClient:
    client = procs.ws(gateway)
    client.join(room)
    return client


def still_subscribed(procs: Procs, room: str, *clients: WsClient) -> None:
    """Each client is still connected and its next event is a small broadcast sent now (so the
    oversize one was neither delivered nor the cause of a close)."""

    async def small() -> None:
        async with Cluster(procs.commands) as cluster:
            await cluster.sockets.broadcast(room, "small", {"n": 1})

    asyncio.run(small())
    for client in clients:
        event = client.next_event(10 * T, what="the small broadcast")
        assert event == ("small", {"n": 1}), event
        assert client.closed_code is None


def test_sdk_refuses_the_issue_broadcasts_before_sending(env: Procs) -> None:
    room = fresh_room()
    sub = subscriber(env, 0, room)
    published = router_metrics(env).get("roomcast_router_publishes_total")

    async def go() -> list[PayloadTooLarge]:
        errors = []
        async with Cluster(env.commands) as cluster:
            for mib in (2, 5):
                with pytest.raises(PayloadTooLarge) as info:
                    await cluster.sockets.broadcast(room, "big", "x" * (mib << 20))
                errors.append(info.value)
        return errors

    for err, mib in zip(asyncio.run(go()), (2, 5), strict=True):
        assert err.status == 413 and err.code == "payload_too_large"
        assert err.limit == SDK_DEFAULT and err.size == (mib << 20) + 2 + len("big")
    with SyncCluster(env.commands) as sync, pytest.raises(PayloadTooLarge):
        sync.sockets.broadcast(room, "big", "x" * (2 << 20))
    # Nothing reached the router.
    assert router_metrics(env).get("roomcast_router_publishes_total") == published
    still_subscribed(env, room, sub)


def test_router_refuses_over_its_bound_and_the_error_keeps_its_fields(env: Procs) -> None:
    room = fresh_room()
    sub = subscriber(env, 0, room)
    before = refused_at_router(env)

    async def go() -> PayloadTooLarge:
        # No local bound: the router decides.
        async with Cluster(env.commands, max_publish_bytes=0) as cluster:
            with pytest.raises(PayloadTooLarge) as info:
                await cluster.sockets.broadcast(room, "big", "x" * 30_000)
            return info.value

    err = asyncio.run(go())
    assert (err.size, err.limit) == (30_002 + len("big"), ROUTER_LIMIT)
    assert refused_at_router(env) == before + 1
    still_subscribed(env, room, sub)


def test_http_api_broadcast_over_the_bound_is_413(env: Procs) -> None:
    room = fresh_room()
    sub = subscriber(env, 0, room)
    before = refused_at_router(env)
    body = json.dumps({"rooms": room, "event": "big", "data": "x" * 30_000}).encode()
    req = urllib.request.Request(
        env.gateways[0].internal + "/api/broadcast",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as info:
        opener.open(req, timeout=10 * T)
    with info.value as resp:
        assert resp.code == 413
        answer = json.loads(resp.read())
    assert answer["error"] == "payload_too_large", answer
    assert (answer["size"], answer["limit"]) == (30_002 + len("big"), ROUTER_LIMIT), answer
    assert refused_at_router(env) == before + 1
    still_subscribed(env, room, sub)


def test_client_broadcast_over_the_bound_is_413(env: Procs) -> None:
    room = fresh_room()
    sub = subscriber(env, 1, room)
    sender = env.ws(0)
    reply = sender.request("broadcast", rooms=room, event="big", data="x" * 30_000)
    assert reply["statusCode"] == 413, reply
    assert reply["body"]["error"] == "payload_too_large", reply
    assert reply["body"]["limit"] == ROUTER_LIMIT, reply
    still_subscribed(env, room, sub)


def test_a_message_over_a_connections_whole_bound_is_skipped_not_written(env: Procs) -> None:
    # 18 kB: under the router's bound, over gateway 1's send queue (16 kB), under gateway 0's.
    room = fresh_room()
    near, far = subscriber(env, 0, room), subscriber(env, 1, room)
    dropped = env.metrics(1).get("roomcast_gateway_dropped_total", reason="oversize")

    async def go() -> None:
        async with Cluster(env.commands) as cluster:
            await cluster.sockets.broadcast(room, "big", "y" * 18_000)

    asyncio.run(go())
    event = near.next_event(10 * T, what="the 18 kB broadcast on the 4 MiB gateway")
    assert event.event == "big" and len(event.data) == 18_000
    still_subscribed(env, room, far)  # far's next event is the small one: big was skipped
    after = env.metrics(1).get("roomcast_gateway_dropped_total", reason="oversize")
    assert after == dropped + 1


def test_errors_keep_their_fields_and_every_sdk_error_is_a_roomcast_error(env: Procs) -> None:
    async def go() -> tuple[NoSuchSocket, BaseException]:
        cluster = Cluster(env.commands)
        with pytest.raises(NoSuchSocket) as missing:
            await cluster.sockets.join("no-such-socket", fresh_room())
        await cluster.close()
        with pytest.raises(RoomcastError) as closed:
            await cluster.sockets.count("room")
        return missing.value, closed.value

    missing, closed = asyncio.run(go())
    assert missing.socket == "no-such-socket"
    assert isinstance(closed, StateError) and closed.code == "state_error"
    sync = SyncCluster(env.commands)
    sync.close()
    with pytest.raises(RoomcastError):
        sync.sockets.count("room")
