"""Gateways come and go under traffic (issue 4, architecture §4 close codes, §7 shutdown).

Real processes throughout: a router, gateways, an SDK publisher in a thread and plain ``/ws``
clients that follow the client flow a load-balanced deployment relies on -- on a reconnect close
code (1001 going away, 4001 slow consumer, 4002 router unavailable) connect to *another* gateway
and re-join the rooms you were in. The gateway does not move anyone: the client does.

* scale up: a third gateway started while messages flow serves new clients at once, receives
  deliveries for its rooms (including a room only it has members of), and no client elsewhere
  misses or reorders a message;
* scale down: SIGTERM on a gateway under traffic hands its clients over (1001, reconnect to the
  others, rooms re-joined); clients elsewhere miss nothing, reconnected clients miss nothing
  after their re-join, and the router keeps no ghost member;
* SIGTERM order: readiness fails first (``/readyz`` 503 while the process still drains, never
  200 again), new connections are refused, clients get 1001 and re-join on the other gateway.

Loss accounting: a client gets every message published after its join was acknowledged
(architecture §5.1, acked membership), in order, until its connection closes. Messages published
while a client is between gateways are not for it: that gap is the reconnect, not a loss.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from roomcast import SyncCluster
from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import (
    Cluster,
    Gateway,
    Metrics,
    WsClient,
    fresh_room,
    gateway_proc,
    http_get,
    raw_ws_client,
    start_cluster,
)

# architecture §4: the close codes after which a client reconnects (to another gateway).
RECONNECT_CODES = frozenset({1001, 4001, 4002})
EVENT = "tick"


# ---------------------------------------------------------------------------- the client flow


@dataclass
class Session:
    """One connection of a client: where, which socket id, and what it received."""

    gateway: int
    sid: str
    mark: int  # messages the publisher had acked when this session's join was acked
    values: list[int] = field(default_factory=list)
    close_code: int | None = None


class FlowClient:
    """A plain ``/ws`` client that remembers its rooms and, told to reconnect, moves on.

    ``urls`` are every gateway's ``/ws`` address (a client-side list, or what a load balancer
    would pick from). ``reconnect(closed)`` tries the other gateways in turn (starting at a
    per-client offset, so that clients spread) and re-joins every room: the whole client flow.
    """

    def __init__(
        self,
        name: str,
        urls: list[str],
        first: int,
        rooms: Sequence[str],
        mark: Callable[[], int],
        *,
        spread: int = 0,
    ) -> None:
        self.name = name
        self.urls = urls
        self.spread = spread  # where in the list of the others this client starts looking
        self.rooms = list(rooms)
        self._mark = mark
        self.sessions: list[Session] = []
        self.ws = self._open(first)

    def _open(self, index: int) -> WsClient:
        ws = WsClient(self.urls[index], name=f"{self.name}@gw{index}")
        for room in self.rooms:
            ws.join(room)
        # Read the mark only after every join was acked: later publishes must all arrive.
        self.sessions.append(Session(index, ws.id, self._mark()))
        return ws

    @property
    def session(self) -> Session:
        return self.sessions[-1]

    def reconnect(self, closed: int) -> None:
        """After a reconnect code from gateway ``closed``: the next gateway that takes us."""
        others = [i for i in range(len(self.urls)) if i != closed]
        problems = []
        for step in range(len(others)):
            index = others[(self.spread + step) % len(others)]
            try:
                self.ws = self._open(index)
                return
            except (OSError, InvalidStatus, ConnectionClosed) as exc:  # that one is gone too
                problems.append(f"gw{index}: {type(exc).__name__}: {exc}")
        pytest.fail(f"{self.name}: no gateway took the reconnect: {problems}")

    def close(self) -> None:
        self.ws.close()


class Reader(threading.Thread):
    """Runs a :class:`FlowClient` in a thread: reads its events, reconnects on a reconnect code,
    until ``stop()`` (or its deadline). Problems are kept and re-raised by ``result()``."""

    def __init__(self, client: FlowClient, timeout: float) -> None:
        super().__init__(name=f"reader {client.name}", daemon=True)
        self.client = client
        self.deadline = time.monotonic() + timeout
        self._halt = threading.Event()
        self.problem: BaseException | None = None
        self.start()

    def run(self) -> None:
        client = self.client
        try:
            while not self._halt.is_set():
                if time.monotonic() > self.deadline:
                    raise AssertionError(f"{client.name}: reader still running at its deadline")
                ws = client.ws
                try:
                    ws._pump(0.05)
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd is not None else None
                    client.session.close_code = code
                    if code not in RECONNECT_CODES:
                        raise AssertionError(f"{client.name}: closed with {code}") from None
                    client.reconnect(client.session.gateway)
                    continue
                while ws.events:
                    event = ws.events.popleft()
                    assert event.event == EVENT, f"{client.name}: {event!r}"
                    client.session.values.append(event.data["k"])
        except BaseException as exc:  # handed to the test by result()
            self.problem = exc

    def stop(self) -> None:
        self._halt.set()

    def result(self) -> FlowClient:
        self.stop()
        self.join(10 * T)
        assert not self.is_alive(), f"{self.client.name}: reader did not stop"
        if self.problem is not None:
            raise self.problem
        return self.client


class Publisher(threading.Thread):
    """Publishes message ``k`` (``{"k": k}``) to ``rooms[k % len(rooms)]`` through the SDK,
    each acked before the next, until stopped; ``acked`` counts the acknowledged ones."""

    def __init__(self, commands: str, rooms: Sequence[str], timeout: float) -> None:
        super().__init__(name="publisher", daemon=True)
        self.sdk = SyncCluster(commands)
        self.rooms = list(rooms)
        self.deadline = time.monotonic() + timeout
        self.acked = 0
        self._halt = threading.Event()
        self.problem: BaseException | None = None
        self.start()

    def room_of(self, k: int) -> str:
        return self.rooms[k % len(self.rooms)]

    def run(self) -> None:
        try:
            k = 0
            while not self._halt.is_set():
                if time.monotonic() > self.deadline:
                    raise AssertionError("publisher still running at its deadline")
                self.sdk.sockets.broadcast(self.room_of(k), EVENT, {"k": k})
                k += 1
                self.acked = k
        except BaseException as exc:  # handed to the test by finish()
            self.problem = exc

    def wait_for(self, n: int, what: str) -> None:
        def enough() -> bool:
            if self.problem is not None:
                raise self.problem
            return self.acked >= n

        deadline_poll(enough, 20 * T, message=what)

    def finish(self) -> int:
        """Stop publishing; returns how many messages were published (all acked)."""
        self._halt.set()
        self.join(20 * T)
        assert not self.is_alive(), "publisher did not stop"
        self.sdk.close()
        if self.problem is not None:
            raise self.problem
        return self.acked


def _expected(pub: Publisher, room: str, start: int, end: int) -> list[int]:
    return [k for k in range(start, end) if pub.room_of(k) == room]


def _received_all_up_to(readers: Sequence[Reader], pub: Publisher, total: int) -> bool:
    """Every client's current session has its room's last message (or no message is due)."""
    for reader in readers:
        if reader.problem is not None:
            raise reader.problem
        client = reader.client
        due = _expected(pub, client.rooms[0], client.session.mark + 1, total)
        if due and (not client.session.values or client.session.values[-1] < due[-1]):
            return False
    return True


def _check_session(client: FlowClient, session: Session, pub: Publisher, end: int | None) -> None:
    """In order, no duplicate, nothing missing from its join ack to ``end`` (or its close)."""
    room = client.rooms[0]
    values = session.values
    where = f"{client.name} on gw{session.gateway} (mark {session.mark})"
    assert values == sorted(set(values)), f"{where}: out of order or duplicated: {values[:50]}"
    assert all(pub.room_of(k) == room for k in values), f"{where}: a message of another room"
    if end is None:  # closed under traffic: everything from the join ack to the last received
        end = values[-1] + 1 if values else session.mark + 1
    due = _expected(pub, room, session.mark + 1, end)
    missing = sorted(set(due) - set(values))
    assert not missing, f"{where}: missed {len(missing)} messages, first {missing[:10]}"
    # Before its mark a session may have some messages, but only a contiguous tail of them.
    if values:
        assert values == _expected(pub, room, values[0], end), f"{where}: a gap: {values[:50]}"


def _metrics(url: str) -> Metrics:
    status, text = http_get(url + "/metrics")
    assert status == 200, f"{url}/metrics: {status} {text[:200]}"
    return Metrics(text)


def _assert_nothing_lost(c: Cluster, gateways: Sequence[Gateway]) -> None:
    for gw in gateways:
        m = _metrics(gw.internal)
        assert m.get("roomcast_gateway_lost_total") == 0, f"{gw.proc.name}: sequence gap"
        assert m.get("roomcast_gateway_dropped_total") == 0, f"{gw.proc.name}: frames dropped"
    r = _metrics(c.router.info["http"])
    assert r.get("roomcast_router_fanout_dropped_total") == 0, "router: high-water-mark drops"


def _start_gateway(c: Cluster, name: str) -> Gateway:
    proc = gateway_proc(name, c.router.info)
    info = proc.wait_ready()
    gw = Gateway(proc, info["public"], info["internal"])
    c.gateways.append(gw)
    return gw


# ---------------------------------------------------------------------------------- scale up


@pytest.mark.timeout(120)
def test_third_gateway_started_under_traffic_serves_new_clients_and_nothing_is_lost() -> None:
    c = start_cluster(gateways=2)
    readers: list[Reader] = []
    pub: Publisher | None = None
    try:
        rooms = [fresh_room(f"up{i}") for i in range(4)]
        only_new = fresh_room("up-new")  # a room only the new gateway will have members of
        pub = Publisher(c.commands, [*rooms, only_new], 60 * T)
        urls = [g.ws_url for g in c.gateways]
        # One member per room on each running gateway, joined before the first message.
        for i, room in enumerate(rooms):
            for g in range(2):
                client = FlowClient(f"old{i}.{g}", urls, g, [room], lambda: pub.acked)
                readers.append(Reader(client, 60 * T))
        pub.wait_for(200, "messages flowing before the third gateway")

        gw2 = _start_gateway(c, "gateway2")
        assert http_get(gw2.public + "/readyz")[0] == 200
        deadline_poll(
            lambda: _metrics(c.router.info["http"]).get("roomcast_router_gateways") == 3,
            10 * T,
            message="the router counts three gateways",
        )
        urls.append(gw2.ws_url)  # clients now learn of it (a load balancer would add it)
        fresh: list[Reader] = []
        for i, room in enumerate([*rooms, only_new]):
            client = FlowClient(f"new{i}", urls, 2, [room], lambda: pub.acked)
            fresh.append(Reader(client, 60 * T))
        readers += fresh
        marks = [r.client.session.mark for r in fresh]
        pub.wait_for(max(marks) + 200, "messages flowing after the new clients joined")
        total = pub.finish()
        deadline_poll(
            lambda: _received_all_up_to(readers, pub, total),
            20 * T,
            message="every client has its room's last message",
        )
        clients = [r.result() for r in readers]
        readers = []

        for client in clients:
            assert len(client.sessions) == 1, f"{client.name} reconnected: {client.sessions}"
            _check_session(client, client.session, pub, total)
        for client in clients[-5:]:
            assert client.session.values, f"{client.name} on the new gateway got nothing"
        m2 = _metrics(gw2.internal)
        assert m2.get("roomcast_gateway_connections") == 5
        assert m2.get("roomcast_gateway_deliveries_total") > 0
        assert m2.get("roomcast_gateway_messages_out_total") == sum(
            len(cl.session.values) for cl in clients[-5:]
        )
        _assert_nothing_lost(c, c.gateways)
        print(
            f"\n{total} messages published; the third gateway delivered "
            f"{int(m2.get('roomcast_gateway_messages_out_total'))} of them to its 5 clients"
        )
        for client in clients:
            client.close()
        c.stop()
    finally:
        for reader in readers:
            reader.stop()
        if pub is not None and pub.is_alive():
            pub.finish()
        c.kill()


# -------------------------------------------------------------------------------- scale down


@pytest.mark.timeout(120)
def test_drained_gateway_hands_its_clients_to_the_others_under_traffic() -> None:
    c = start_cluster(gateways=3)
    readers: list[Reader] = []
    pub: Publisher | None = None
    try:
        rooms = [fresh_room(f"down{i}") for i in range(4)]
        pub = Publisher(c.commands, rooms, 60 * T)
        urls = [g.ws_url for g in c.gateways]
        for i, room in enumerate(rooms):
            for g in range(3):
                client = FlowClient(f"c{i}.{g}", urls, g, [room], lambda: pub.acked, spread=i)
                readers.append(Reader(client, 60 * T))
        pub.wait_for(pub.acked + 200, "messages flowing before the drain")

        drained = c.gateways[0]
        started = time.monotonic()
        assert drained.proc.stop() == 0  # SIGTERM; exit 0 within drain + 5 s
        print(f"\ngateway0 drained and exited in {time.monotonic() - started:.2f}s")
        moved = [r for r in readers if r.client.sessions[0].gateway == 0]
        assert len(moved) == len(rooms)
        deadline_poll(
            lambda: all(len(r.client.sessions) == 2 for r in moved),
            10 * T,
            message="every client of the drained gateway reconnected and re-joined",
        )
        marks = [r.client.session.mark for r in moved]
        pub.wait_for(max(marks) + 200, "messages flowing after the re-joins")
        total = pub.finish()
        deadline_poll(
            lambda: _received_all_up_to(readers, pub, total),
            20 * T,
            message="every client has its room's last message",
        )
        clients = [r.result() for r in readers]
        readers = []

        for client in clients:
            first = client.sessions[0]
            if first.gateway != 0:
                assert len(client.sessions) == 1, f"{client.name} reconnected: {client.sessions}"
                _check_session(client, first, pub, total)
                continue
            assert len(client.sessions) == 2, client.sessions
            assert first.close_code == 1001, f"{client.name}: closed with {first.close_code}"
            _check_session(client, first, pub, None)
            second = client.session
            assert second.gateway != 0 and second.close_code is None
            _check_session(client, second, pub, total)
        landed = {cl.session.gateway for cl in clients if cl.sessions[0].gateway == 0}
        assert landed == {1, 2}, f"the drained clients all went to {landed}: not spread"

        # The router dropped the drained sockets: each room holds exactly the current members.
        with SyncCluster(c.commands) as sdk:
            for room in rooms:
                want = sorted(cl.session.sid for cl in clients if cl.rooms[0] == room)
                deadline_poll(
                    lambda room=room, want=want: sorted(sdk.sockets.members(room)) == want,
                    10 * T,
                    message=f"{room} holds exactly its current members",
                )
        r = _metrics(c.router.info["http"])
        assert r.get("roomcast_router_sockets") == len(clients)
        _assert_nothing_lost(c, c.gateways[1:])
        for client in clients:
            client.close()
        c.stop()
    finally:
        for reader in readers:
            reader.stop()
        if pub is not None and pub.is_alive():
            pub.finish()
        c.kill()


# ---------------------------------------------------------------------------- SIGTERM order


class ReadinessProbe(threading.Thread):
    """Polls a ``/readyz`` as fast as it answers, recording ``(started, finished, status)``;
    status 0 means the connection was refused (nothing listens any more)."""

    def __init__(self, url: str, timeout: float) -> None:
        super().__init__(name="readiness probe", daemon=True)
        self.url = url
        self.deadline = time.monotonic() + timeout
        self.seen: list[tuple[float, float, int]] = []
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        refused = 0
        while not self._halt.is_set() and time.monotonic() < self.deadline and refused < 20:
            started = time.monotonic()
            try:
                status = http_get(self.url, timeout=2 * T)[0]
            except OSError:
                status = 0
            self.seen.append((started, time.monotonic(), status))
            refused = refused + 1 if status == 0 else 0

    def result(self) -> list[tuple[float, float, int]]:
        self._halt.set()
        self.join(10 * T)
        assert not self.is_alive(), "readiness probe did not stop"
        return self.seen


@pytest.mark.timeout(60)
def test_sigterm_readiness_fails_first_then_clients_rejoin_on_the_other_gateway() -> None:
    c = start_cluster(gateways=2)
    stuck: socket.socket | None = None
    clients: list[FlowClient] = []
    try:
        gw0, gw1 = c.gateways
        urls = [gw0.ws_url, gw1.ws_url]
        shared = fresh_room("term-shared")
        own = [fresh_room(f"term{i}") for i in range(3)]
        clients = [FlowClient(f"c{i}", urls, 0, [shared, own[i]], lambda: 0) for i in range(3)]
        watcher = WsClient(gw1.ws_url, name="watcher")
        c.clients.append(watcher)
        watcher.join(shared)
        stuck = raw_ws_client(gw0.public)[0]  # never reads nor answers a close
        readyz = gw0.internal + "/readyz"
        assert http_get(readyz)[0] == 200

        probe = ReadinessProbe(readyz, 30 * T)
        deadline_poll(lambda: len(probe.seen) >= 3, 5 * T, message="probe running")
        stopper: dict[str, Any] = {}

        def stop_gateway() -> None:
            try:
                stopper["rc"] = gw0.proc.stop()  # SIGTERM; asserts exit 0 within drain + 5 s
            except BaseException as exc:  # re-raised below, in the test's thread
                stopper["error"] = exc

        stop_thread = threading.Thread(target=stop_gateway, name="stop gateway0", daemon=True)
        stop_thread.start()

        # The client flow: 1001 -> readiness already failed -> reconnect elsewhere, re-join.
        closed_at: list[float] = []
        for client in clients:
            code = client.ws.wait_closed(10 * T)
            closed_at.append(time.monotonic())
            assert code == 1001, f"{client.name}: closed with {code}, expected 1001 (going away)"
            status = http_get(readyz)[0]
            assert status == 503, f"/readyz answered {status} after a client got 1001"
            client.reconnect(0)
            assert client.session.gateway == 1
        # A draining gateway takes no new client (its public listener is closed).
        with pytest.raises((OSError, InvalidStatus)):
            WsClient(gw0.ws_url, name="late")

        stop_thread.join((2 + 5) * 2 * T)
        assert not stop_thread.is_alive(), "gateway0 stop() did not return"
        if "error" in stopper:
            raise stopper["error"]
        assert stopper["rc"] == 0
        seen = probe.result()

        # Readiness: 200 ... 200, then 503 while draining, then nothing listening; never 200
        # again, and never 200 for a probe that started after the first client saw its 1001.
        statuses = [s for _, _, s in seen]
        first_down = next(i for i, s in enumerate(statuses) if s != 200)
        assert all(s != 200 for s in statuses[first_down:]), statuses
        assert 503 in statuses[first_down:], f"/readyz never answered 503: {statuses}"
        late_200 = [(t0, s) for t0, _, s in seen if s == 200 and t0 >= closed_at[0]]
        assert not late_200, f"/readyz was 200 after clients were told to go: {late_200}"
        drained_503 = [t1 - t0 for t0, t1, s in seen if s == 503]
        print(
            f"\n/readyz: {statuses.count(200)} x 200, {statuses.count(503)} x 503 "
            f"({seen[-1][1] - seen[first_down][0]:.2f}s of draining seen), then refused"
            f"; 503s answered in {1000 * max(drained_503):.1f} ms at most"
        )

        # The rooms were re-joined by the client flow: a broadcast reaches the new sockets,
        # and the router holds exactly them (the drained sockets left every room).
        with SyncCluster(c.commands) as sdk:
            sdk.sockets.broadcast(shared, "after", {"n": 1})
            for i in range(len(clients)):
                sdk.sockets.broadcast(own[i], "after", {"own": i})
            for i, client in enumerate(clients):
                # One publisher: its two broadcasts arrive in order (architecture §5.2).
                got = [client.ws.next_event(), client.ws.next_event()]
                assert got == [("after", {"n": 1}), ("after", {"own": i})], got
            assert watcher.next_event() == ("after", {"n": 1})
            want = sorted([watcher.id, *(cl.ws.id for cl in clients)])
            deadline_poll(
                lambda: sorted(sdk.sockets.members(shared)) == want,
                10 * T,
                message="the shared room holds exactly the watcher and the reconnected sockets",
            )
            for i, client in enumerate(clients):
                assert sdk.sockets.members(own[i]) == [client.ws.id]
        for client in clients:
            client.close()
        c.stop()
    finally:
        if stuck is not None:
            stuck.close()
        for client in clients:
            client.close()
        c.kill()
