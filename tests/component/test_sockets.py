"""roomcast.sockets: what broadcast and blast return for each receipt/confirm combination.

The runtime decides in ``_publish_result``: a plain publish returns the number of gateways, and
``receipt=True`` or ``confirm=True`` (either one) a :class:`Receipt`, whose ``confirmed`` and
``complete`` are set only with ``confirm``. The overloads of ``Sockets`` and ``SyncSockets``
promise the same: the ``assert_type`` calls below are checked when mypy runs on this file
(``.venv/bin/mypy tests/component/test_sockets.py``) and do nothing at run time, where the
equality checks hold the runtime to its side of the promise.
The fake router (tests/component/test_cluster.py) answers every publish at once.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import assert_type

import pytest

from roomcast import Cluster, Receipt, SyncCluster
from roomcast.core import wire
from tests.component.test_cluster import FakeRouter, answer

RECEIPT = Receipt(gateways=2, sockets=5, omitted=1)
CONFIRMED = Receipt(gateways=2, sockets=5, omitted=1, confirmed=4, complete=True)
# (receipt, confirm) -> what broadcast and blast return.
EXPECTED: dict[tuple[bool, bool], int | Receipt] = {
    (False, False): 2,
    (True, False): RECEIPT,
    (False, True): CONFIRMED,
    (True, True): CONFIRMED,
}


def counts(msg: wire.Message) -> list[wire.Message | bytes]:
    """Publishes get the counts of a receipt whether or not one was asked for."""
    if not isinstance(msg, wire.Publish):
        return list(answer(msg))
    confirmed = 4 if msg.confirm else 0
    reply = wire.Reply(
        ref=msg.ref, gateways=2, sockets=5, omitted=1, confirmed=confirmed, complete=msg.confirm
    )
    return [reply]


@pytest.fixture
def router() -> Iterator[FakeRouter]:
    r = FakeRouter(handler=counts)
    yield r
    r.close()


def _publishes(router: FakeRouter) -> list[tuple[bool, bool, int]]:
    sent = [m for m in router.commands() if isinstance(m, wire.Publish)]
    return [(m.receipt, m.confirm, m.confirm_timeout_ms) for m in sent]


@pytest.mark.parametrize(("receipt", "confirm"), list(itertools.product([False, True], repeat=2)))
def test_flags_decide_the_result_and_the_command(
    router: FakeRouter, receipt: bool, confirm: bool
) -> None:
    # Plain bools, not literals: the catch-all overloads, typed int | Receipt.
    async def main() -> list[int | Receipt]:
        async with Cluster(router.url) as cluster:
            s = cluster.sockets
            a = await s.broadcast("a", "e", receipt=receipt, confirm=confirm, confirm_timeout=1.5)
            b = await s.blast("e", receipt=receipt, confirm=confirm, confirm_timeout=1.5)
            return [assert_type(a, int | Receipt), assert_type(b, int | Receipt)]

    results = asyncio.run(main())
    with SyncCluster(router.url) as cluster:
        s = cluster.sockets
        a = s.broadcast("a", "e", receipt=receipt, confirm=confirm, confirm_timeout=1.5)
        b = s.blast("e", receipt=receipt, confirm=confirm, confirm_timeout=1.5)
        assert_type(a, int | Receipt)
        assert_type(b, int | Receipt)
        results += [a, b]
    assert results == [EXPECTED[receipt, confirm]] * 4
    # The router is asked for a receipt whenever either flag is set, for confirmations only
    # with confirm (and then the timeout travels too; without confirm it is not checked).
    asked = (True, confirm, 1500) if receipt or confirm else (False, False, 0)
    assert _publishes(router) == [asked] * 4


def test_async_overloads_match_the_runtime(router: FakeRouter) -> None:
    flag = bool(len(router.url))  # a bool mypy cannot narrow to a literal

    async def main() -> None:
        async with Cluster(router.url) as cluster:
            s = cluster.sockets
            assert assert_type(await s.broadcast("a"), int) == 2
            assert assert_type(await s.broadcast("a", receipt=False, confirm=False), int) == 2
            assert assert_type(await s.broadcast("a", confirm_timeout=2), int) == 2
            assert assert_type(await s.broadcast("a", receipt=True), Receipt) == RECEIPT
            assert assert_type(await s.broadcast("a", receipt=True, confirm=False), Receipt) == (
                RECEIPT
            )
            assert assert_type(await s.broadcast("a", confirm=True), Receipt) == CONFIRMED
            assert assert_type(await s.broadcast("a", receipt=False, confirm=True), Receipt) == (
                CONFIRMED
            )
            assert assert_type(await s.broadcast("a", receipt=True, confirm=True), Receipt) == (
                CONFIRMED
            )
            assert assert_type(await s.broadcast("a", receipt=flag), int | Receipt) == RECEIPT
            assert assert_type(await s.blast(), int) == 2
            assert assert_type(await s.blast(receipt=True), Receipt) == RECEIPT
            assert assert_type(await s.blast(confirm=True), Receipt) == CONFIRMED
            assert assert_type(await s.blast(confirm=flag), int | Receipt) == CONFIRMED

    asyncio.run(main())


def test_sync_overloads_match_the_runtime(router: FakeRouter) -> None:
    flag = bool(len(router.url))
    with SyncCluster(router.url) as cluster:
        s = cluster.sockets
        assert assert_type(s.broadcast("a"), int) == 2
        assert assert_type(s.broadcast("a", receipt=False, confirm=False), int) == 2
        assert assert_type(s.broadcast("a", confirm_timeout=2), int) == 2
        assert assert_type(s.broadcast("a", receipt=True), Receipt) == RECEIPT
        assert assert_type(s.broadcast("a", receipt=True, confirm=False), Receipt) == RECEIPT
        assert assert_type(s.broadcast("a", confirm=True), Receipt) == CONFIRMED
        assert assert_type(s.broadcast("a", receipt=False, confirm=True), Receipt) == CONFIRMED
        assert assert_type(s.broadcast("a", receipt=True, confirm=True), Receipt) == CONFIRMED
        assert assert_type(s.broadcast("a", receipt=flag), int | Receipt) == RECEIPT
        assert assert_type(s.blast(), int) == 2
        assert assert_type(s.blast(receipt=True), Receipt) == RECEIPT
        assert assert_type(s.blast(confirm=True), Receipt) == CONFIRMED
        assert assert_type(s.blast(confirm=flag), int | Receipt) == CONFIRMED
