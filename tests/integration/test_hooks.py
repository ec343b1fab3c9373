"""Sails' beforeConnect / afterDisconnect as actions (``CONNECT /``, ``DISCONNECT /``).

Gateways started with ``--connect-hook --disconnect-hook`` and a real ``roomcast worker`` serving
``tests.integration.apps:hooks``, whose ``on_connect`` refuses ``?deny=1`` and whose
``on_disconnect`` broadcasts ``"gone"`` ``{"socket": id}`` to every room the socket was in.

* A refused socket is closed with 1008 and never welcomed; an accepted one is welcomed only
  after the hook answered (the router counts one answered request per connection).
* Without a worker the connect hook cannot answer: the socket is closed with 1011.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from roomcast import SyncCluster
from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import (
    Cluster,
    Event,
    Metrics,
    Proc,
    WsClient,
    fresh_room,
    http_get,
    run_all,
    start_cluster,
)

HOOK_FLAGS = ("--connect-hook", "--disconnect-hook")
HOOKS_APP = "tests.integration.apps:hooks"
ANSWERED = "roomcast_router_requests_answered_total"


def router_metrics(cluster: Cluster) -> Metrics:
    status, text = http_get(cluster.router.info["http"] + "/metrics")
    assert status == 200, text[:200]
    return Metrics(text)


class HookCluster:
    def __init__(self, cluster: Cluster, worker: Proc) -> None:
        self.cluster = cluster
        self.worker = worker

    @property
    def procs(self) -> list[Proc]:
        return [*self.cluster.procs, self.worker]


@pytest.fixture(scope="module")
def hooked_cluster() -> Iterator[HookCluster]:
    cluster = start_cluster(gateways=2, gateway_args=HOOK_FLAGS)
    worker = Proc(
        "hooks-worker",
        ["-m", "roomcast.cli", "worker", HOOKS_APP, "--router", cluster.commands],
    )
    try:
        worker.wait_ready()
        deadline_poll(
            lambda: router_metrics(cluster).get("roomcast_router_workers") == 1,
            10 * T,
            message="the router to know the hooks worker",
        )
    except BaseException:
        worker.kill()
        cluster.kill()
        raise
    yield HookCluster(cluster, worker)
    run_all((cluster.stop, worker.stop, worker.check_log))


@pytest.fixture
def hooked(hooked_cluster: HookCluster) -> Iterator[HookCluster]:
    offsets = [p.log_size() for p in hooked_cluster.procs]
    yield hooked_cluster
    hooked_cluster.cluster.close_clients()
    for proc, since in zip(hooked_cluster.procs, offsets, strict=True):
        assert proc.alive(), f"{proc.name} died\n{proc.log_tail()}"
        proc.check_log(since)


@pytest.fixture
def sdk(hooked_cluster: HookCluster) -> Iterator[SyncCluster]:
    client = SyncCluster(hooked_cluster.cluster.commands)
    try:
        yield client
    finally:
        client.close()


def refused_code(url: str) -> int | None:
    """Connect and expect the gateway to close before any frame (no welcome, nothing else)."""
    with pytest.raises(ConnectionClosed) as info:
        WsClient(url).close()
    rcvd = info.value.rcvd
    return rcvd.code if rcvd is not None else None


# ------------------------------------------------------------------------------- connect


@pytest.mark.parametrize("gateway", [0, 1])
def test_accepted_connection_is_welcomed_and_usable(
    hooked: HookCluster, sdk: SyncCluster, gateway: int
) -> None:
    client = hooked.cluster.ws(gateway)
    room = fresh_room()
    sdk.sockets.join(client.id, room)
    sdk.sockets.broadcast(room, "hello", {"to": client.id})
    assert client.next_event() == Event("hello", {"to": client.id})


@pytest.mark.parametrize("gateway", [0, 1])
@pytest.mark.parametrize("query", ["?deny=1", "?x=1&deny=1", "?deny=1&x=%FF"])
def test_refused_connection_is_closed_1008_and_never_welcomed(
    hooked: HookCluster, gateway: int, query: str
) -> None:
    gw = hooked.cluster.gateways[gateway]
    name, reason = "roomcast_gateway_disconnects_total", "refused_by_connect_hook"
    before = hooked.cluster.metrics(gateway).get(name, reason=reason)
    assert refused_code(gw.ws_url + query) == 1008
    assert hooked.cluster.metrics(gateway).get(name, reason=reason) == before + 1


def test_query_that_is_not_utf8_does_not_break_the_hook(hooked: HookCluster) -> None:
    """``%FF`` decodes to a byte that is not UTF-8: the hook still answers (no hang)."""
    client = WsClient(hooked.cluster.gateways[0].ws_url + "?x=%FF&name=%C3%A9")
    hooked.cluster.clients.append(client)
    assert client.id


def test_only_welcomed_sockets_run_the_disconnect_hook() -> None:
    """A fresh cluster, so the router's request counter counts only this test's hooks."""
    cluster = start_cluster(gateways=1, gateway_args=HOOK_FLAGS)
    worker = Proc(
        "hooks-worker", ["-m", "roomcast.cli", "worker", HOOKS_APP, "--router", cluster.commands]
    )
    try:
        worker.wait_ready()
        deadline_poll(
            lambda: router_metrics(cluster).get("roomcast_router_workers") == 1,
            10 * T,
            message="the router to know the hooks worker",
        )
        assert refused_code(cluster.gateways[0].ws_url + "?deny=1") == 1008
        leaving, watcher = cluster.ws(0), cluster.ws(0)
        room = fresh_room()
        with SyncCluster(cluster.commands) as sdk:
            sdk.sockets.join([leaving.id, watcher.id], room)
        leaving.close()
        # Its DISCONNECT hook ran once "gone" arrives; by then the refused socket's would have.
        assert watcher.next_event() == Event("gone", {"socket": leaving.id})
        forwarded = router_metrics(cluster).get("roomcast_router_requests_forwarded_total")
        # CONNECT (refused) + CONNECT x2 + DISCONNECT (the one that left): no DISCONNECT for
        # a socket that was never welcomed.
        assert forwarded == 4, forwarded
    except BaseException:
        worker.kill()
        cluster.kill()
        raise
    cluster.stop()
    worker.stop()
    worker.check_log()


# ---------------------------------------------------------------------------- disconnect


def test_disconnect_hook_tells_the_rooms_the_socket_was_in(
    hooked: HookCluster, sdk: SyncCluster
) -> None:
    c = hooked.cluster
    leaving, peer1, peer2, bystander = c.ws(0), c.ws(1), c.ws(0), c.ws(1)
    room1, room2, other = fresh_room(), fresh_room(), fresh_room()
    sdk.sockets.join(leaving.id, [room1, room2])
    sdk.sockets.join(peer1.id, room1)
    sdk.sockets.join(peer2.id, room2)
    sdk.sockets.join(bystander.id, other)
    leaving.close()
    assert peer1.next_event() == Event("gone", {"socket": leaving.id})
    assert peer2.next_event() == Event("gone", {"socket": leaving.id})
    # The socket itself is out of every room by then.
    deadline_poll(lambda: sdk.sockets.count(room1) == 1, 5 * T, message="room1 without it")
    assert sdk.sockets.members(room2) == [peer2.id]
    # Nobody else heard of it: a marker (after the hook's broadcasts) comes first.
    for client in (peer1, peer2, bystander):
        mark = uuid.uuid4().hex
        sdk.sockets.broadcast(client.id, "marker", mark)
        assert client.next_event() == Event("marker", mark)


# ----------------------------------------------------------------------------- no worker


def test_connect_hook_without_a_worker_closes_1011() -> None:
    cluster = start_cluster(gateways=1, gateway_args=HOOK_FLAGS)
    try:
        gw = cluster.gateways[0]
        assert refused_code(gw.ws_url) == 1011
        assert refused_code(gw.ws_url + "?deny=1") == 1011
        reason = "connect_hook_failed"
        assert cluster.metrics(0).get("roomcast_gateway_disconnects_total", reason=reason) == 2
    except BaseException:
        cluster.kill()
        raise
    cluster.stop()


def test_disconnect_hook_without_a_worker_still_lets_sockets_come_and_go() -> None:
    cluster = start_cluster(gateways=1, gateway_args=["--disconnect-hook"])
    try:
        a, b = cluster.ws(0), cluster.ws(0)
        assert a.id != b.id
        a.close()
        with SyncCluster(cluster.commands) as sdk:
            deadline_poll(
                lambda: (
                    sdk.sockets.members(b.id) == [b.id]
                    and router_metrics(cluster).get("roomcast_router_sockets") == 1
                ),
                5 * T,
                message="the closed socket gone from the router",
            )
        assert cluster.ws(0).id not in (a.id, b.id)
    except BaseException:
        cluster.kill()
        raise
    cluster.stop()
