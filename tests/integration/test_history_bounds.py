"""History memory holds at its default bounds (the finding: 400 messages of ~1 MiB to 400 empty
history rooms grew the router from 38 to 453 MB, kept for the 300 s TTL).

Real router and gateway processes; a publisher SDK floods large messages to many history rooms
while a bystander's round trips are timed. Reports the router's RSS before/after and the
bystander's p99 (``-s`` shows them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import Cluster, Metrics, http_get, start_cluster
from tests.integration.load import Bystander, p99_ms, rss_bytes

MIB = 1024 * 1024
DEFAULT_TOTAL = 64 * MIB  # --history-max-bytes default
ROOMS = 160
SIZE = 900 * 1024  # under the 1 MiB publish bound; ~140 MB in all


def router_metrics(cluster: Cluster) -> Metrics:
    status, text = http_get(cluster.router.info["http"] + "/metrics")
    assert status == 200
    return Metrics(text)


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
    bystander = Bystander(cluster.gateways[1].ws_url)
    try:
        sdk.sockets.count("warm-up")  # the SDK link exists before the baseline
        before = rss_bytes(pid)
        bystander.start()
        deadline_poll(lambda: bystander.mark() >= 5, 10 * T, message="bystander warm")
        baseline_p99 = p99_ms(bystander.latencies)
        mark = bystander.mark()
        payload = {"blob": "x" * SIZE}
        started = time.monotonic()
        for i in range(ROOMS):
            sdk.sockets.broadcast(f"flood:{i}", "big", payload)
        sdk.sockets.count("sync")  # every publish before this one was applied
        flood_s = time.monotonic() - started
        after = rss_bytes(pid)
        during = bystander.latencies[mark:]
        bystander.finish()
        m = router_metrics(cluster)
        kept = m.get("roomcast_router_history_bytes")
        evicted = m.get("roomcast_router_history_evicted_total", reason="total_bytes")
        p99 = p99_ms(during)
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
        bystander.stopping.set()
        bystander.client.close()
        sdk.close()
