"""The cluster guarantees of architecture §5 under load: acked membership, per-publisher order,
no silent loss, and slow consumers cut with 4001 without blocking anyone else."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from roomcast.bench.wsclient import client_frame
from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import (
    Cluster,
    Collector,
    Event,
    first_order_violation,
    fresh_room,
    raw_ws_client,
    start_cluster,
)

LOST = "roomcast_gateway_lost_total"


def lost_counts(cluster: Cluster) -> list[float]:
    return [cluster.metrics(i).get(LOST) for i in range(len(cluster.gateways))]


@pytest.mark.timeout(240)
def test_sdk_join_then_broadcast_from_another_process_1000_iterations(
    cluster: Cluster, sdk: Any, publisher: Any
) -> None:
    """Acked membership: once ``join`` returned, a broadcast by ANY publisher reaches the socket."""
    target = cluster.ws(1)  # gateway B; the SDK in this process, the publisher in another
    prefix = fresh_room("iter")
    for i in range(1000):
        room = f"{prefix}-{i}"
        sdk.sockets.join(target.id, room)
        publisher.broadcast(room, "iter", i)
        got = target.next_event(5 * T, what=f"iteration {i}")
        assert got == Event("iter", i), f"iteration {i}: got {got}"
        sdk.sockets.leave(target.id, room)  # stay far from the 1,000-rooms limit
    assert lost_counts(cluster) == [0, 0]


@pytest.mark.timeout(120)
def test_no_delivery_after_completed_leave_from_another_process(
    cluster: Cluster, sdk: Any, publisher: Any
) -> None:
    target = cluster.ws(1)
    prefix = fresh_room("left")
    for i in range(200):
        room = f"{prefix}-{i}"
        sdk.sockets.join(target.id, room)
        sdk.sockets.leave(target.id, room)
        publisher.broadcast(room, "left", i)  # after a completed leave: must not arrive
        publisher.broadcast(target.id, "marker", i)  # same publisher: ordered after it
        got = target.next_event(5 * T, what=f"iteration {i}")
        assert got == Event("marker", i), f"iteration {i}: expected only the marker, got {got}"


@pytest.mark.timeout(180)
def test_per_publisher_order_10000_pipelined_sdk_broadcasts(cluster: Cluster, sdk: Any) -> None:
    from roomcast import Cluster as SdkCluster

    n, chunk = 10_000, 500
    room = fresh_room("order")
    receivers = [cluster.ws(g, max_queue=None) for g in (0, 0, 1, 1)]
    for r in receivers:
        sdk.sockets.join(r.id, room)
    lost_before = lost_counts(cluster)
    collectors = [Collector(r, 90 * T, target=n) for r in receivers]

    async def publish() -> None:
        async with SdkCluster(cluster.commands) as pub:
            await pub.sockets.count(room)  # connected before the timed part
            for start in range(0, n, chunk):
                # Tasks start in creation order: that is the publication order.
                await asyncio.gather(
                    *(pub.sockets.broadcast(room, "seq", i) for i in range(start, start + chunk))
                )

    asyncio.run(asyncio.wait_for(publish(), 90 * T))
    for r, col in zip(receivers, collectors, strict=True):
        events = col.result()
        assert {e.event for e in events} == {"seq"}
        seqs = [e.data for e in events]
        bad = first_order_violation(seqs)
        assert bad is None, f"{r}: order broken at #{bad}: ... {seqs[max(bad - 3, 0) : bad + 3]}"
        assert seqs == list(range(n)), f"{r}: received {len(seqs)} of {n}"
    assert lost_counts(cluster) == lost_before


@pytest.mark.timeout(120)
def test_per_publisher_order_pipelined_client_broadcasts(cluster: Cluster) -> None:
    n = 500
    room = fresh_room("client-order")
    sender = cluster.ws(0, max_queue=None)
    receivers = [
        cluster.ws(0, max_queue=None),
        cluster.ws(1, max_queue=None),
        cluster.ws(1, max_queue=None),
    ]
    for r in receivers:
        r.join(room)
    collectors = [Collector(r, 60 * T, target=n) for r in receivers]
    refs = [sender.send_op("broadcast", rooms=room, event="seq", data=i) for i in range(n)]
    statuses = [sender.wait_reply(ref, 30 * T)["statusCode"] for ref in refs]
    assert statuses == [200] * n, f"non-200 replies: {sorted(set(statuses))}"
    for r, col in zip(receivers, collectors, strict=True):
        seqs = [e.data for e in col.result()]
        bad = first_order_violation(seqs)
        assert bad is None, f"{r}: order broken at #{bad}: ... {seqs[max(bad - 3, 0) : bad + 3]}"
        assert seqs == list(range(n))
    sender.expect_no_event(0.1)  # the sender itself is omitted (no echo)


# ------------------------------------------------------------------------ slow consumer

SEND_QUEUE_BYTES = 262_144
SLOW = "roomcast_gateway_disconnects_total"
DROPPED = "roomcast_gateway_dropped_total"


@pytest.fixture
def slow_cluster() -> Iterator[Cluster]:
    c = start_cluster(gateways=2, gateway_args=["--max-send-queue-bytes", str(SEND_QUEUE_BYTES)])
    yield c
    c.stop()


def keeping_up(collectors: list[Collector], at_least: int) -> None:
    """Wait until every collector has ``at_least`` events (fail at once if one stopped)."""
    deadline_poll(
        lambda: (
            any(col.problem for col in collectors)
            or all(len(col.events) >= at_least for col in collectors)
        ),
        10 * T,
        interval=0.001,
        message=f"steady clients to receive {at_least} messages",
    )
    for col in collectors:
        assert col.problem is None, f"steady client {col.client}: {col.problem}"


@pytest.mark.timeout(180)
def test_slow_consumer_is_cut_with_4001_and_others_keep_receiving(slow_cluster: Cluster) -> None:
    from roomcast import SyncCluster

    c = slow_cluster
    room = fresh_room("slow")
    # The slow client: a small TCP window and websockets' flow control (16 queued frames), and
    # the test never reads from it until the cut, so the gateway's queue for it grows.
    slow = c.ws(0, rcvbuf=4096, max_queue=16)
    steady = [c.ws(0, max_queue=None), c.ws(1, max_queue=None)]
    sdk = SyncCluster(c.commands)
    try:
        for client in (slow, *steady):
            sdk.sockets.join(client.id, room)
        base = c.metrics(0).get(SLOW, reason="slow_consumer")
        dropped_base = c.metrics(0).get(DROPPED, reason="slow_consumer")
        first_drop: tuple[float, int] | None = None  # diagnostics: when the gateway began dropping
        collectors = [Collector(s, 120 * T) for s in steady]
        pad = "x" * 1000  # ~1 KiB per message
        limit, sent, cut = 40_000, 0, False
        while sent < limit and not cut:
            sdk.sockets.broadcast(room, "load", {"seq": sent, "pad": pad})
            sent += 1
            if sent % 50 == 0:  # steady clients keep up: never more than ~50 KiB behind
                keeping_up(collectors, sent - 50)
            if sent % 100 == 0:
                m = c.metrics(0)
                cut = m.get(SLOW, reason="slow_consumer") > base
                if first_drop is None and m.get(DROPPED, reason="slow_consumer") > dropped_base:
                    first_drop = (time.monotonic(), sent)
        cut_seen = time.monotonic()
        assert cut, (
            f"no {SLOW}{{reason=slow_consumer}} increase after {sent} ~1 KiB messages "
            f"(send queue bound {SEND_QUEUE_BYTES} bytes)"
        )
    finally:
        sdk.close()
    for s, col in zip(steady, collectors, strict=True):
        seqs = [e.data["seq"] for e in col.result(target=sent)]
        assert seqs == list(range(sent)), (
            f"{s}: a steady client lost messages while another was slow: "
            f"got {len(seqs)} of {sent}, "
            f"first order violation at {first_order_violation(seqs)}"
        )
    drain_started = time.monotonic()
    code = slow.wait_closed(30 * T)
    closed_after = time.monotonic() - cut_seen
    got = [e.data["seq"] for e in slow.events]
    assert code == 4001, (
        f"slow client closed with {code}, expected 4001 (it read {len(got)} of {sent} events; "
        f"the close came {closed_after:.2f}s after the cut was seen, reading started "
        f"{drain_started - cut_seen:.2f}s after it; {DROPPED}{{reason=slow_consumer}} first rose "
        + (
            f"{cut_seen - first_drop[0]:.2f}s / {sent - first_drop[1]} messages before the "
            f"disconnect was counted)"
            if first_drop
            else "with it)"
        )
    )
    assert first_order_violation(got) is None
    assert len(got) < sent, "the slow client received everything: it was not cut for slowness"
    assert c.metrics(0).get(SLOW, reason="slow_consumer") == base + 1
    assert c.metrics(1).get(SLOW, reason="slow_consumer") == 0


# ------------------------------------------------------------- frames stay whole under pressure


def next_frame(data: bytes | bytearray, pos: int) -> tuple[int, bytes, int] | None:
    """The server frame (unmasked, unfragmented) at ``pos``: (opcode, payload, end), or None
    while it is incomplete; fails on a torn one."""
    if len(data) < pos + 2:
        return None
    assert data[pos] & 0x80, f"frame at byte {pos} is not final: {bytes(data[pos : pos + 16])!r}"
    assert data[pos] & 0x70 == 0, f"frame at byte {pos} has reserved bits: {data[pos]:#x}"
    assert not data[pos + 1] & 0x80, f"server frame at byte {pos} is masked"
    opcode, n, start = data[pos] & 0x0F, data[pos + 1] & 0x7F, pos + 2
    if n >= 126:
        width = 2 if n == 126 else 8
        if len(data) < start + width:
            return None
        n, start = int.from_bytes(data[start : start + width], "big"), start + width
    if len(data) < start + n:
        return None
    return opcode, bytes(data[start : start + n]), start + n


@pytest.mark.timeout(60)
def test_frames_stay_whole_while_the_kernel_is_full_and_tornado_answers_a_ping(
    cluster: Cluster, sdk: Any
) -> None:
    """Deliveries alone in their batch are written straight to the socket, and Tornado writes
    what the kernel did not take, and its own pong, to the same socket. A client that stops
    reading fills the kernel, so Tornado holds bytes; it pings, then reads slowly while
    deliveries keep coming (kernel space frees up while Tornado still holds some): every frame
    is whole, every event arrived once and in order, and the pong is among them."""
    sock, sid, rest = raw_ws_client(cluster.gateways[0].public, rcvbuf=4096)
    count = 300  # 4.8 MB in all, under 1 MB unread at a time (the send queue bound is 4 MiB)
    data = bytearray(rest)
    frames: list[tuple[int, bytes]] = []
    done = threading.Event()

    def read() -> None:
        deadline = time.monotonic() + 30 * T
        sock.settimeout(0.2 * T)
        pos = 0
        try:
            while time.monotonic() < deadline and sum(op == 0x1 for op, _ in frames) < count:
                try:
                    chunk = sock.recv(1 << 20)  # a slow client: it reads in bursts
                except TimeoutError:
                    continue
                if not chunk:
                    break
                data.extend(chunk)
                while (frame := next_frame(data, pos)) is not None:
                    frames.append(frame[:2])
                    pos = frame[2]
        finally:
            done.set()

    reader = threading.Thread(target=read, name="slow reader", daemon=True)
    try:
        room = fresh_room("whole")
        sdk.sockets.join(sid, room)
        pad = "x" * 16_000
        for i in range(count):
            sdk.sockets.broadcast(room, "whole", {"i": i, "pad": pad})
            if i == 40:
                sock.sendall(client_frame(0x9, b"still here"))
            elif i == 50:
                reader.start()
        assert done.wait(30 * T), "the slow reader did not finish"
    finally:
        sock.close()
    pongs = [payload for opcode, payload in frames if opcode == 0xA]
    events = [json.loads(payload) for opcode, payload in frames if opcode == 0x1]
    assert pongs == [b"still here"]
    assert [e["data"]["i"] for e in events] == list(range(count))
    assert all(e["event"] == "whole" and e["data"]["pad"] == pad for e in events)
    assert lost_counts(cluster) == [0, 0]
