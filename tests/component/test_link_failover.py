"""roomcast.link.Link with a primary/backup pair (``tcp://a,tcp://b``) against fake routers.

The fake routers (tests/component/test_cluster.py) run on loopback; one plays a standby that
refuses with ``router_passive``, one an active router, or one is absent (nothing listens).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from roomcast import Cluster, RouterUnavailable, SyncCluster, Timeout
from roomcast.core import wire
from roomcast.core.errors import RouterPassive
from tests.component.test_cluster import DEADLINE_S, FakeRouter, answer


def passive(msg: wire.Message) -> list[wire.Message | bytes]:
    ref = getattr(msg, "ref", 0)
    refusal = wire.Reply(ref=ref, status=503, error="router_passive", message="standing by")
    return [refusal] if ref else []


def silent(msg: wire.Message) -> list[wire.Message | bytes]:
    return []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def standby() -> Iterator[FakeRouter]:
    r = FakeRouter(handler=passive)
    yield r
    r.close()


@pytest.fixture
def active() -> Iterator[FakeRouter]:
    r = FakeRouter(handler=answer)
    yield r
    r.close()


def _kinds(router: FakeRouter) -> list[str]:
    return [m.KIND for m in router.received]


def test_a_refusal_is_sent_again_to_the_other_router_in_order(
    standby: FakeRouter, active: FakeRouter
) -> None:
    async def main() -> list[int]:
        async with Cluster(f"{standby.url},{active.url}", connect_timeout=DEADLINE_S) as c:
            counts = await asyncio.gather(*(c.sockets.count(f"r{i}") for i in range(5)))
            await c.sockets.broadcast("r", "e", 1)
            return counts

    assert asyncio.run(main()) == [3] * 5
    # The standby saw the Hello and the first commands (and applied nothing); the active one
    # got a Hello first, then every command, in the order they were made.
    assert _kinds(standby)[0] == "hello"
    assert _kinds(active)[0] == "hello"
    targets = [m.target for m in active.commands() if isinstance(m, wire.Query)]
    assert targets == [f"r{i}" for i in range(5)]
    assert active.commands()[-1].KIND == "publish"


def test_an_unreachable_router_is_skipped(active: FakeRouter) -> None:
    dead = f"tcp://127.0.0.1:{_free_port()}"

    async def main() -> int:
        async with Cluster(f"{dead},{active.url}", connect_timeout=1.0) as c:
            return await c.sockets.count("room")

    started = time.monotonic()
    assert asyncio.run(main()) == 3
    # Half of connect_timeout on the dead one (its share), then the live one at once.
    assert 0.4 <= time.monotonic() - started < DEADLINE_S


def test_when_every_router_refuses_the_call_fails_after_connect_timeout() -> None:
    one, two = FakeRouter(handler=passive), FakeRouter(handler=passive)
    try:

        async def main() -> None:
            async with Cluster(f"{one.url},{two.url}", connect_timeout=0.5) as c:
                await c.sockets.count("room")

        started = time.monotonic()
        with pytest.raises(RouterUnavailable, match="no active router"):
            asyncio.run(main())
        assert 0.5 <= time.monotonic() - started < DEADLINE_S
        # Backed off between rounds, not a hot loop at round-trip speed.
        assert len(one.received) + len(two.received) < 100
    finally:
        one.close()
        two.close()


def test_a_timeout_raises_and_the_next_call_goes_to_the_next_router(active: FakeRouter) -> None:
    mute = FakeRouter(handler=silent)
    try:

        async def main() -> int:
            async with Cluster(f"{mute.url},{active.url}", timeout=0.3) as c:
                with pytest.raises(Timeout):
                    await c.sockets.count("first")
                return await c.sockets.count("second")

        assert asyncio.run(main()) == 3
        assert [m.target for m in mute.commands() if isinstance(m, wire.Query)] == ["first"]
        assert [m.target for m in active.commands() if isinstance(m, wire.Query)] == ["second"]
    finally:
        mute.close()


def test_a_single_router_that_stands_by_raises_router_passive(standby: FakeRouter) -> None:
    with SyncCluster(standby.url) as c, pytest.raises(RouterPassive):
        c.sockets.count("room")


def test_urls_are_checked(active: FakeRouter) -> None:
    for bad in (f"{active.url},", f"{active.url},127.0.0.1:1", ","):
        with pytest.raises(ValueError):
            Cluster(bad)
