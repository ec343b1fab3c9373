"""WebSocket keepalive on /ws: one shared timer pings every connection; silence past the
timeout closes a dead peer (counted as ping_timeout) while a live client stays connected."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import Cluster, fresh_room, raw_ws_client, start_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = start_cluster(gateways=1, gateway_args=["--ping-interval", "1", "--ping-timeout", "1"])
    yield c
    c.stop()


def test_a_peer_that_never_answers_pings_is_closed_and_a_live_one_stays(cluster: Cluster) -> None:
    def ping_timeouts() -> float:
        return cluster.metrics(0).get("roomcast_gateway_disconnects_total", reason="ping_timeout")

    before = ping_timeouts()
    live = cluster.ws(0)  # the websockets client answers pings by itself
    room = fresh_room()
    live.join(room)
    mute = raw_ws_client(cluster.gateways[0].public)[0]  # never reads: never answers a ping
    try:
        deadline_poll(lambda: ping_timeouts() >= before + 1, 10 * T, message="mute peer closed")
        # The live client went through the same pings and still gets messages.
        live.broadcast(room, {"still": "here"}, echo=True)
        assert live.next_event(5 * T).data == {"still": "here"}
    finally:
        mute.close()
