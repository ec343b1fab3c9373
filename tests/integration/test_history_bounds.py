"""History memory holds at its default bounds (the finding: 400 messages of ~1 MiB to 400 empty
history rooms grew the router from 38 to 453 MB, kept for the 300 s TTL).

Real router and gateway processes; a publisher SDK floods large messages to many history rooms
while a bystander's round trips are timed. Reports the router's RSS before/after and the
bystander's p99 (``-s`` shows them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import Cluster, Metrics, fresh_room, http_get, start_cluster

MIB = 1024 * 1024
DEFAULT_TOTAL = 64 * MIB  # --history-max-bytes default
ROOMS = 160
SIZE = 900 * 1024  # under the 1 MiB publish bound; ~140 MB in all


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def router_metrics(cluster: Cluster) -> Metrics:
    status, text = http_get(cluster.router.info["http"] + "/metrics")
    assert status == 200
    return Metrics(text)


class Bystander(threading.Thread):
    """Round trips (a broadcast to its own room, echoed back) until stopped; bounded."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(name="bystander", daemon=True)
        self.client = cluster.ws(1)
        self.room = fresh_room("bystander")
        self.client.join(self.room)
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            until = time.monotonic() + 60 * T
            while not self.stop.is_set() and time.monotonic() < until:
                started = time.monotonic()
                self.client.broadcast(self.room, {"t": started}, echo=True)
                self.client.next_event(10 * T, what="the bystander's echo")
                self.latencies.append(time.monotonic() - started)
        except BaseException as exc:  # handed to the test
            self.error = exc

    def p99_ms(self) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[int(0.99 * (len(ordered) - 1))]


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = start_cluster(gateways=2, router_args=("--history-rooms", "flood:*"))
    yield c
    c.stop()


def test_large_messages_to_many_history_rooms_stay_within_the_default_bound(
    cluster: Cluster,
) -> None:
    from roomcast import SyncCluster

    pid = cluster.router.popen.pid
    sdk = SyncCluster(cluster.commands)
    bystander = Bystander(cluster)
    try:
        sdk.sockets.count("warm-up")  # the SDK link exists before the baseline
        before = rss_bytes(pid)
        bystander.start()
        deadline_poll(lambda: len(bystander.latencies) >= 5, 10 * T, message="bystander warm")
        baseline_p99 = bystander.p99_ms()
        mark = len(bystander.latencies)
        payload = {"blob": "x" * SIZE}
        started = time.monotonic()
        for i in range(ROOMS):
            sdk.sockets.broadcast(f"flood:{i}", "big", payload)
        sdk.sockets.count("sync")  # every publish before this one was applied
        flood_s = time.monotonic() - started
        after = rss_bytes(pid)
        during = sorted(bystander.latencies[mark:])
        bystander.stop.set()
        bystander.join(10 * T)
        assert bystander.error is None, bystander.error
        m = router_metrics(cluster)
        kept = m.get("roomcast_router_history_bytes")
        evicted = m.get("roomcast_router_history_evicted_total", reason="total_bytes")
        p99 = 1000 * during[int(0.99 * (len(during) - 1))] if during else 0.0
        print(
            f"\nhistory flood: {ROOMS} x {SIZE} B in {flood_s:.1f}s; router RSS "
            f"{before / MIB:.0f} -> {after / MIB:.0f} MiB; history {kept / MIB:.1f} MiB kept, "
            f"{evicted:.0f} messages evicted; bystander p99 {baseline_p99:.1f} ms before, "
            f"{p99:.1f} ms during ({len(during)} round trips)"
        )
        assert 0 < kept <= DEFAULT_TOTAL
        assert evicted >= ROOMS - DEFAULT_TOTAL // SIZE - 1
        assert m.get("roomcast_router_history_rooms") <= DEFAULT_TOTAL // SIZE + 1
        # Without the bound the router would hold all ~140 MB until the TTL.
        assert after - before < DEFAULT_TOTAL + 40 * MIB, (before, after)
    finally:
        bystander.stop.set()
        sdk.close()
