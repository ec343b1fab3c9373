"""gateway.polling.PollOutlet under the hub's delivery loop (``fan_out``, ``write_queued``).

A polling session's outlet keeps payload fragments and gives them, joined into one payload,
only to a pending poll; without one, deliveries wait in the queue under the same bound as a
WebSocket's. Run in an event loop (the poll is a Future), with the session stood in for by
what the loop touches (``overflow``, the hub's ``mark_dirty``).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.connection import fan_out, write_queued
from gateway.eio_polling import decode_payload, fragment
from gateway.polling import PollOutlet


class Session(SimpleNamespace):
    """What the delivery loop needs of a session: its type (the frame cache key), overflow."""

    overflows = 0

    def overflow(self) -> None:
        self.overflows += 1


def outlet(eio: int, limit: int = 1 << 20) -> tuple[PollOutlet, Session]:
    session = Session()
    out = PollOutlet(limit, session, eio)  # type: ignore[arg-type]
    out.live = True
    return out, session


def deliver(out: PollOutlet, packet: bytes, *, direct: bool) -> list[Any]:
    dirty: list[Any] = []
    fan_out({"s": out}, ["s"], lambda conn: fragment(out.eio, packet), dirty, direct=direct)
    return dirty


@pytest.mark.parametrize("eio", [3, 4])
def test_without_a_poll_deliveries_wait_and_the_next_poll_takes_them_all(eio: int) -> None:
    out, _ = outlet(eio)
    for n in range(3):
        deliver(out, b'42["e",%d]' % n, direct=n == 0)  # direct or batched: both wait
    assert write_queued([out]) == (0, 0)  # no poll: nothing is written
    payload = out.collect()
    assert payload is not None
    assert decode_payload(eio, payload) == ['42["e",0]', '42["e",1]', '42["e",2]']
    assert out.collect() is None and out.pending == 0


@pytest.mark.parametrize("eio", [3, 4])
def test_a_pending_poll_gets_a_direct_delivery_or_the_batch_at_its_end(eio: int) -> None:
    async def scenario() -> None:
        out, _ = outlet(eio)
        loop = asyncio.get_running_loop()
        out.poll = loop.create_future()
        first = out.poll
        assert deliver(out, b"42[1]", direct=True) == []
        assert first.result() == fragment(eio, b"42[1]") and out.poll is None
        out.poll = second = loop.create_future()
        dirty = deliver(out, b"42[2]", direct=False) + deliver(out, b"42[3]", direct=False)
        assert not second.done()  # queued until the router batch ends
        writes, nbytes = write_queued(dirty)
        assert writes == 1 and second.done()
        assert decode_payload(eio, second.result()) == ["42[2]", "42[3]"]
        assert nbytes == len(second.result())

    asyncio.run(scenario())


def test_the_bound_cuts_a_session_that_does_not_poll() -> None:
    out, session = outlet(4, limit=64)
    for _ in range(3):
        deliver(out, b"42[" + b"x" * 20 + b"]", direct=False)
    assert session.overflows == 1  # the third would pass 64 bytes
    assert out.pending == 2 * 24  # 42[ + 20 bytes + ]


def test_hand_over_splits_the_queue_back_into_packets() -> None:
    out, _ = outlet(3)
    for packet in (b"2", '42["é🌍"]'.encode()):
        deliver(out, packet, direct=False)
    assert out.hand_over() == [b"2", '42["é🌍"]'.encode()]
    assert out.pending == 0 and out.collect() is None
