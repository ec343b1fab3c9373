"""Process contract (architecture §3, §4, §7): READY lines, health endpoints, metrics,
SIGTERM -> exit 0, and the SDK's behaviour when the router is not there."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from typing import Any

import pytest

from tests.conftest import TIMEOUT_UNIT as T
from tests.integration.harness import (
    Cluster,
    Metrics,
    fresh_room,
    http_get,
    router_proc,
    run_bounded,
    start_cluster,
)

QUICK = 10 * T  # "quickly": an SDK call against a missing router fails within this
TRACEBACK_ONLY = re.compile(r"Traceback \(most recent call last\)|\bCRITICAL\b")


def test_ready_lines_carry_real_addresses(cluster: Cluster) -> None:
    info = cluster.router.info
    assert re.fullmatch(r"tcp://127\.0\.0\.1:[1-9]\d*", info["commands"]), info
    assert re.fullmatch(r"tcp://127\.0\.0\.1:[1-9]\d*", info["fanout"]), info
    assert re.fullmatch(r"http://127\.0\.0\.1:[1-9]\d*", info["http"]), info
    ports = {info["commands"], info["fanout"], info["http"]}
    for gw in cluster.gateways:
        assert re.fullmatch(r"http://127\.0\.0\.1:[1-9]\d*", gw.public), gw.proc.info
        assert re.fullmatch(r"http://127\.0\.0\.1:[1-9]\d*", gw.internal), gw.proc.info
        ports |= {gw.public, gw.internal}
    assert len(ports) == 3 + 2 * len(cluster.gateways)


def test_healthz_and_readyz_are_200_when_connected(cluster: Cluster) -> None:
    for gw in cluster.gateways:
        for path in ("/healthz", "/readyz"):
            status, body = http_get(gw.public + path)
            assert status == 200, f"{gw.proc.name} {path}: {status} {body[:200]}"


def test_metrics_endpoints_serve_prometheus_text(cluster: Cluster) -> None:
    for i in range(len(cluster.gateways)):
        names = cluster.metrics(i).names()
        assert any(n.startswith("roomcast_gateway_") for n in names), sorted(names)[:50]
    status, text = http_get(cluster.router.info["http"] + "/metrics")
    assert status == 200, f"router /metrics: {status} {text[:200]}"
    assert any(n.startswith("roomcast_router_") for n in Metrics(text).names())


@pytest.mark.timeout(60)
def test_sigterm_drains_gateway_with_clients_1001_then_router_exit_0() -> None:
    c = start_cluster(gateways=1)
    try:
        clients = [c.ws(0) for _ in range(3)]
        room = fresh_room("drain")
        for client in clients:
            client.join(room)
        started = time.monotonic()
        assert c.gateways[0].proc.stop() == 0  # fails the test unless exit 0 within drain + 5 s
        elapsed = time.monotonic() - started
        for client in clients:
            code = client.wait_closed(5 * T)
            assert code == 1001, f"{client}: closed with {code} on gateway drain, expected 1001"
        assert c.router.stop() == 0
        for proc in c.procs:
            proc.check_log()
        print(f"gateway drained 3 clients and exited in {elapsed:.2f}s")
    finally:
        c.kill()


@pytest.mark.timeout(60)
def test_sigterm_router_with_gateway_attached_exits_0() -> None:
    c = start_cluster(gateways=1)
    try:
        c.ws(0)
        assert c.router.stop() == 0
        c.router.check_log()
        # The gateway now has no router: it may complain (WARNING or ERROR), but must not crash
        # and must still drain and exit 0 on SIGTERM.
        assert c.gateways[0].proc.alive()
        assert c.gateways[0].proc.stop() == 0
        c.gateways[0].proc.check_log(pattern=TRACEBACK_ONLY)
    finally:
        c.kill()


@pytest.mark.timeout(60)
def test_sdk_calls_fail_quickly_once_the_router_stopped() -> None:
    from roomcast import SyncCluster
    from roomcast.core.errors import RouterUnavailable, Timeout

    router = router_proc()
    try:
        router.wait_ready()
        sdk = SyncCluster(router.info["commands"])
        room = fresh_room()
        try:
            assert sdk.sockets.count(room) == 0
            assert router.stop() == 0
            router.check_log()
            calls: dict[str, Any] = {
                "count": lambda: sdk.sockets.count(room),
                "broadcast": lambda: sdk.sockets.broadcast(room, "e", 1),
                "join": lambda: sdk.sockets.join("some-socket", room),
            }
            for name, call in calls.items():
                started = time.monotonic()
                with pytest.raises((RouterUnavailable, Timeout)):
                    run_bounded(call, QUICK, what=f"SyncCluster {name} without a router")
                elapsed = time.monotonic() - started
                print(f"{name}: failed after {elapsed:.3f}s")
        finally:
            run_bounded(sdk.close, 10 * T, what="SyncCluster.close without a router")
    finally:
        router.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(60)
def test_async_sdk_without_a_router_fails_quickly() -> None:
    from roomcast import Cluster as SdkCluster
    from roomcast.core.errors import RouterUnavailable, Timeout

    url = f"tcp://127.0.0.1:{free_port()}"  # nothing listens here

    async def go() -> BaseException | None:
        async with SdkCluster(url) as cluster:
            try:
                await cluster.sockets.broadcast(fresh_room(), "e", 1)
            except (RouterUnavailable, Timeout) as exc:
                return exc
        return None

    started = time.monotonic()
    try:
        err = asyncio.run(asyncio.wait_for(go(), QUICK))
    except TimeoutError:
        pytest.fail(f"async Cluster broadcast + close without a router took over {QUICK:.1f}s")
    assert err is not None, "broadcast without a router returned normally"
    print(f"failed with {type(err).__name__} after {time.monotonic() - started:.3f}s")
