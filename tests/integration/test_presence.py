"""Presence and publish receipts (issue 8) with real processes and real clients.

The module's cluster: a router that tracks ``pres:*`` rooms (``--presence-rooms``; events every
``--presence-interval`` 0.1 s) and two development gateways that verify HS256 connection tokens
(``--token-secret-file``): a token's ``sub`` is the connection's presence identity, connections
without a token are anonymous. Clients: the harness's ``/ws`` client, a raw Socket.IO (EIO 4)
client with its token in the CONNECT packet, and, for hundreds of sockets, the bench's lean
client (``roomcast/bench/wsclient.py``) on a loop thread (:class:`Crowd`). A gateway killed
with ``kill -9``, a router restarted in place and a frozen gateway get clusters of their own.

Waiting: a join or leave acked over ``/ws`` and every SDK call are applied when answered, so
presence is asserted right after them; disconnects, expiry and resyncs are polled with a
deadline. "No presence event" is proved with a sentinel: a later transition whose event must be
the next one a watcher sees (one router stream, events published in transition order).

Measured figures (coalescing, memory per presence member, throughput with presence on and off)
are printed and merged into ``$ROOMCAST_PRESENCE_FIGURES`` (default: a JSON file in the temp
directory); docs/performance.md, section "Presence", quotes a run of them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import inspect
import itertools
import json
import os
import pathlib
import resource
import signal
import socket
import statistics
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import jwt
import pytest
from websockets.sync.client import ClientConnection, connect

from roomcast import Cluster as SdkCluster
from roomcast import SyncCluster
from roomcast.bench.procs import cpu_times
from roomcast.bench.wsclient import Tally
from roomcast.bench.wsclient import WsClient as LeanClient
from roomcast.bench.wsclient import connect as lean_connect
from roomcast.cluster import Receipt
from roomcast.core.topology import Topology
from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import (
    Cluster,
    Event,
    Gateway,
    Metrics,
    Proc,
    WsClient,
    fresh_room,
    gateway_proc,
    http_get,
    router_proc,
)

SECRET = "presence-test-secret-" + uuid.uuid4().hex  # HS256 wants >= 32 bytes
INTERVAL = 0.1  # --presence-interval (s)
TRACKED = "pres:*"  # --presence-rooms
# Liveness of the fault clusters (s): short, so a dead gateway or router shows within seconds.
HEARTBEAT = 0.5
GATEWAY_TIMEOUT = 2.0
ROUTER_TIMEOUT = 3.0
FIGURES_PATH = pathlib.Path(
    os.environ.get("ROOMCAST_PRESENCE_FIGURES")
    or pathlib.Path(tempfile.gettempdir()) / "roomcast-presence-figures.json"
)
EVENTS = "roomcast_router_presence_events_total"

_R = TypeVar("_R")


def token(user: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 3600}, SECRET, algorithm="HS256")


def users(prefix: str, n: int) -> list[str]:
    """``n`` user ids unique to this test run (user metadata is cluster-wide)."""
    tag = uuid.uuid4().hex[:6]
    return [f"{prefix}{i}-{tag}" for i in range(n)]


def user(prefix: str) -> str:
    return users(prefix, 1)[0]


def pevent(room: str, joined: Iterable[tuple[str, Any]] = (), left: Iterable[str] = ()) -> Event:
    """The router's coalesced presence event (router/presence.py), users sorted."""
    return Event(
        "presence",
        {
            "room": room,
            "joined": [{"user": u, "meta": m} for u, m in sorted(joined)],
            "left": sorted(left),
        },
    )


def record(name: str, figures: dict[str, Any]) -> None:
    """Print ``figures`` and merge them into the figures file under ``name``."""
    try:
        data = json.loads(FIGURES_PATH.read_text())
    except (OSError, ValueError):
        data = {}
    data[name] = {**figures, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    FIGURES_PATH.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"\n[presence figures] {name}: {json.dumps(figures, sort_keys=True)}")


# ------------------------------------------------------------------------------ clients

# websockets >= 17.1 wants connect() as a context manager unless legacy=True (as harness.py).
_LEGACY: dict[str, Any] = (
    {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}
)


class SioClient:
    """A raw Socket.IO v4 (EIO 4) client over WebSocket, its token in the CONNECT packet."""

    def __init__(self, url: str, user: str) -> None:
        self.name = f"sio:{user}"
        self.conn: ClientConnection = connect(
            url,
            compression=None,
            proxy=None,
            open_timeout=10 * T,
            close_timeout=5 * T,
            ping_interval=None,
            **_LEGACY,
        )
        self.events: collections.deque[Event] = collections.deque()
        self._acks = itertools.count(1)
        try:
            opened = self._recv()
            assert opened.startswith("0{"), opened
            self.conn.send("40" + json.dumps({"token": token(user)}))
            connected = self._recv()
            assert connected.startswith("40{"), connected
            self.id: str = json.loads(connected[2:])["sid"]
        except BaseException:
            self.close()
            raise

    def _recv(self, timeout: float | None = None) -> str:
        deadline = time.monotonic() + (10 * T if timeout is None else timeout)
        while True:
            packet = self.conn.recv(timeout=max(deadline - time.monotonic(), 0))
            assert isinstance(packet, str), packet
            if packet == "2":  # Engine.IO ping
                self.conn.send("3")
                continue
            return packet

    def _buffer(self, packet: str) -> bool:
        if packet.startswith("42"):
            args = json.loads(packet[2:])
            self.events.append(Event(args[0], args[1] if len(args) > 1 else None))
            return True
        return False

    def ask(self, event: str, arg: Any) -> Any:
        """``emit(event, arg, ack)``: the acknowledgement's JWR (events meanwhile buffered)."""
        ack = next(self._acks)
        self.conn.send(f"42{ack}" + json.dumps([event, arg]))
        deadline = time.monotonic() + 10 * T
        while True:
            packet = self._recv(max(deadline - time.monotonic(), 0))
            if self._buffer(packet):
                continue
            assert packet.startswith(f"43{ack}["), packet
            [jwr] = json.loads(packet[len(f"43{ack}") :])
            return jwr

    def next_event(self) -> Event:
        deadline = time.monotonic() + 10 * T
        while not self.events:
            packet = self._recv(max(deadline - time.monotonic(), 0))
            assert self._buffer(packet), f"{self.name}: expected an event, got {packet!r}"
        return self.events.popleft()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


class Crowd:
    """Hundreds of ``/ws`` connections (the bench's lean client) on an event loop thread."""

    def __init__(self) -> None:
        raise_fd_limit(20_000)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="crowd", daemon=True)
        self.thread.start()
        self.clients: list[LeanClient] = []

    def run(self, coro: Coroutine[Any, Any, _R], timeout: float) -> _R:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def connect(
        self,
        gateway: Gateway,
        who: Sequence[str | None],
        room: str | None = None,
        *,
        tally: Tally | None = None,
    ) -> list[LeanClient]:
        """One connection per entry of ``who`` (a user's token, or anonymous for None), each
        joined to ``room`` (acked) when given."""
        host, port = gateway.public.split("//", 1)[1].rsplit(":", 1)

        async def one(user: str | None, gate: asyncio.Semaphore) -> LeanClient:
            async with gate:
                path = "/ws" + (f"?token={token(user)}" if user else "")
                client = await lean_connect(host, int(port), path, timeout=10 * T, tally=tally)
                if room is not None:
                    reply = await client.request("join", 10 * T, room=room)
                    assert reply.get("statusCode") == 200, reply
                return client

        async def all_of_them() -> list[LeanClient]:
            gate = asyncio.Semaphore(64)
            return list(await asyncio.gather(*(one(u, gate) for u in who)))

        made = self.run(all_of_them(), 30 * T + len(who) * 0.05 * T)
        self.clients += made
        return made

    def abort(self, clients: Iterable[LeanClient]) -> None:
        """Cut connections at once (no close handshake), as a crashing browser would."""
        chosen = list(clients)

        async def cut() -> None:
            for client in chosen:
                client.abort()

        self.run(cut(), 10 * T)

    def close(self) -> None:
        async def close_all() -> None:
            await asyncio.gather(*(c.close(2 * T) for c in self.clients if c.is_open))

        try:
            self.run(close_all(), 30 * T)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10 * T)
            self.loop.close()


def raise_fd_limit(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else min(hard, max(soft, want))
    if target != resource.RLIM_INFINITY and target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# ------------------------------------------------------------------------------ clusters


class PresenceCluster(Cluster):
    """A router and token-verifying development gateways; clients as a user or anonymous."""

    sdk: SyncCluster

    def ws_as(self, gateway: int, user: str | None = None) -> WsClient:
        url = self.gateways[gateway].ws_url + (f"?token={token(user)}" if user else "")
        client = WsClient(url, name=user or None)
        self.clients.append(client)
        return client

    def sio_as(self, gateway: int, user: str) -> SioClient:
        base = self.gateways[gateway].public.replace("http://", "ws://", 1)
        client = SioClient(f"{base}/socket.io/?EIO=4&transport=websocket", user)
        self.clients.append(client)  # type: ignore[arg-type]  # closed like the others
        return client

    def router_metrics(self) -> Metrics:
        status, text = http_get(self.router.info["http"] + "/metrics")
        assert status == 200, status
        return Metrics(text)

    def presence(self, room: str) -> dict[str, Any]:
        return self.sdk.sockets.presence(room)

    def stats(self, room: str) -> dict[str, int]:
        return self.sdk.sockets.presence_stats(room)

    def settled(self, room: str, presence: dict[str, Any], stats: dict[str, int]) -> None:
        """Poll until the router's presence of ``room`` is exactly this (after disconnects)."""

        def exact() -> bool:
            return self.presence(room) == presence and self.stats(room) == stats

        deadline_poll(exact, 15 * T, 0.02, message=f"presence of {room} to become {presence}")


def secret_file() -> pathlib.Path:
    fd, path = tempfile.mkstemp(prefix="roomcast-presence-secret-")
    os.write(fd, SECRET.encode() + b"\n")
    os.close(fd)
    return pathlib.Path(path)


def start_presence_cluster(
    *,
    gateways: int = 2,
    router_args: Sequence[str] = (),
    gateway_args: Sequence[str] = (),
    router: Proc | None = None,
) -> PresenceCluster:
    started: list[Proc] = []
    try:
        if router is None:
            router = router_proc(
                "--presence-rooms", TRACKED, "--presence-interval", str(INTERVAL), *router_args
            )
            started.append(router)
            router.wait_ready()
        secret = secret_file()
        procs = [
            gateway_proc(
                f"gateway{i}", router.info, "--token-secret-file", str(secret), *gateway_args
            )
            for i in range(gateways)
        ]
        started += procs
        gws = []
        for proc in procs:
            info = proc.wait_ready()
            gws.append(Gateway(proc, info["public"], info["internal"]))
        cluster = PresenceCluster(router, gws)
        cluster.sdk = SyncCluster(router.info["commands"])
        return cluster
    except BaseException:
        for proc in started:
            proc.kill()
        raise


def stop_presence_cluster(cluster: PresenceCluster) -> None:
    cluster.sdk.close()
    cluster.stop()


@pytest.fixture(scope="module")
def module_cluster() -> Iterator[PresenceCluster]:
    cluster = start_presence_cluster()
    yield cluster
    stop_presence_cluster(cluster)


@pytest.fixture
def pc(module_cluster: PresenceCluster) -> Iterator[PresenceCluster]:
    """Per test: its clients are closed afterwards; no process died or logged an ERROR."""
    module_cluster.check_healthy()
    offsets = module_cluster.log_offsets()
    yield module_cluster
    module_cluster.close_clients()
    module_cluster.check_healthy(offsets)


@contextlib.contextmanager
def own_cluster(**kw: Any) -> Iterator[PresenceCluster]:
    """A cluster of its own for a test that kills or freezes processes; stopped cleanly."""
    cluster = start_presence_cluster(**kw)
    try:
        yield cluster
    except BaseException:
        for proc in cluster.procs:
            print(proc.log_tail(40))
        cluster.sdk.close()
        cluster.kill()
        raise
    stop_presence_cluster(cluster)


# ------------------------------------------------------------------------------ helpers


class Watcher:
    """Presence events seen by one client, checked against what every watcher must see."""

    def __init__(self, client: WsClient | SioClient) -> None:
        self.client = client
        self.seen: list[Event] = []

    def next(self) -> Event:
        event = self.client.next_event()
        self.seen.append(event)
        return event

    def until(self, room: str, done: Callable[[set[str], set[str]], bool]) -> list[Event]:
        """Presence events of ``room`` until ``done(joined users, left users)`` holds."""
        got: list[Event] = []
        joined: set[str] = set()
        left: set[str] = set()
        while not done(joined, left):
            event = self.next()
            assert event.event == "presence" and event.data["room"] == room, event
            got.append(event)
            for entry in event.data["joined"]:
                assert entry["user"] not in joined, f"{entry['user']} joined twice: {got}"
                joined.add(entry["user"])
            for user in event.data["left"]:
                assert user not in left, f"{user} left twice: {got}"
                left.add(user)
        return got


def expect(watchers: Iterable[Watcher], event: Event) -> None:
    for w in watchers:
        got = w.next()
        assert got == event, f"{w.client.name}: expected {event}, got {got}"


def sentinel(pc: PresenceCluster, room: str, watchers: Sequence[Watcher], gateway: int = 0) -> None:
    """A fresh user's socket joins and leaves ``room`` (tracked): each watcher's next events
    must be exactly those two, so nothing else was pending for it."""
    name = user("sentinel")
    probe = pc.ws_as(gateway, name)
    probe.join(room)
    expect(watchers, pevent(room, joined=[(name, None)]))
    probe.leave(room)
    expect(watchers, pevent(room, left=[name]))


def vmrss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ============================================================================ presence counts


def test_presence_across_two_gateways_with_several_tabs(pc: PresenceCluster) -> None:
    """ada has three tabs (two gateways, /ws and Socket.IO), bob two, cy one, plus two
    anonymous sockets: every surface (SDK, /ws op, Socket.IO event) answers the same exact
    numbers, after each join, leave, disconnect and identity change."""
    room = fresh_room("room")  # not tracked: counting does not depend on events
    ada, bob, cy = user("ada"), user("bob"), user("cy")
    ada0, ada1, ada_sio = pc.ws_as(0, ada), pc.ws_as(1, ada), pc.sio_as(0, ada)
    bob1, bob2 = pc.ws_as(1, bob), pc.ws_as(1, bob)
    cy0, anon0, anon1 = pc.ws_as(0, cy), pc.ws_as(0), pc.ws_as(1)
    for client in (ada0, ada1, bob1, bob2, cy0, anon0, anon1):
        client.join(room)
    pc.sdk.sockets.join(ada_sio.id, room)

    def who(**conns: int) -> dict[str, Any]:
        names = {"ada": ada, "bob": bob, "cy": cy}
        return {names[k]: {"connections": n, "meta": None} for k, n in conns.items()}

    expected, stats = who(ada=3, bob=2, cy=1), {"connections": 8, "users": 3}
    assert pc.presence(room) == expected
    assert pc.stats(room) == stats
    # /ws (a client may ask about a room it may join) and Socket.IO give the same answer.
    assert anon1.ok("presence", room=room) == expected
    assert anon1.ok("presence_stats", room=room) == stats
    jwr = ada_sio.ask("roomcast:presence", {"room": room})
    assert (jwr["statusCode"], jwr["body"]) == (200, expected)
    jwr = ada_sio.ask("roomcast:presence_stats", {"room": room})
    assert (jwr["statusCode"], jwr["body"]) == (200, stats)
    assert pc.presence(fresh_room("empty")) == {}

    ada0.leave(room)  # acked: exact at once
    assert pc.presence(room) == who(ada=2, bob=2, cy=1)
    assert pc.stats(room) == {"connections": 7, "users": 3}
    bob1.close()  # disconnects: exact once the gateways told the router
    ada_sio.close()
    anon1.close()
    pc.settled(room, who(ada=1, bob=1, cy=1), {"connections": 4, "users": 3})
    # An identity from the SDK: the anonymous socket becomes cy's second tab, with metadata.
    pc.sdk.sockets.set_presence(anon0.id, cy, {"tab": 2})
    got = pc.presence(room)
    assert got[cy]["connections"] == 2 and got[cy]["meta"] in (None, {"tab": 2}), got
    assert pc.stats(room) == {"connections": 4, "users": 3}
    bob2.close()
    cy0.close()
    last = {ada: {"connections": 1, "meta": None}, cy: {"connections": 1, "meta": {"tab": 2}}}
    pc.settled(room, last, {"connections": 2, "users": 2})


def test_socketio_token_in_connect_is_in_presence_once_connected(pc: PresenceCluster) -> None:
    """Anonymous sockets are allowed here, so a Socket.IO v4 client is registered before its
    CONNECT packet brings the token. Its identity must reach the router before the CONNECT is
    answered; it used to be lost for ~8% of such clients (registered anonymous for good) when
    the CONNECT came while the anonymous registration was on its way."""
    for i in range(60):
        name = user("sio")
        client = pc.sio_as(i % 2, name)
        assert pc.presence(client.id) == {name: {"connections": 1, "meta": None}}, i
        client.close()


def test_presence_ops_refuse_bad_rooms(pc: PresenceCluster) -> None:
    client = pc.ws_as(0, user("ada"))
    for op in ("presence", "presence_stats"):
        reply = client.request(op, room="")
        assert reply["statusCode"] == 400 and reply["body"]["error"] == "invalid_room", reply
        reply = client.request(op)
        assert reply["statusCode"] == 400, reply
    assert client.ok("presence", room=client.id) == {client.name: {"connections": 1, "meta": None}}


# ============================================================================ join/leave events


def test_events_arrive_once_per_user_transition(pc: PresenceCluster) -> None:
    """First tab in, last tab out, identity changes: exactly one event each, to every member
    on both gateways (and none for a second tab, a tab leaving, an identity already there)."""
    room = "pres:" + uuid.uuid4().hex[:12]
    ada, bob, cy, dee = (user(name) for name in ("ada", "bob", "cy", "dee"))
    w0, w1 = pc.ws_as(0), pc.ws_as(1)  # anonymous watchers: no transition of their own
    w0.join(room)
    w1.join(room)
    watchers = [Watcher(w0), Watcher(w1)]
    transitions = 0

    ada1, ada2 = pc.ws_as(0, ada), pc.ws_as(1, ada)
    ada1.join(room)
    expect([*watchers, Watcher(ada1)], pevent(room, joined=[(ada, None)]))
    transitions += 1
    ada2.join(room)  # a second tab: nothing
    ada1.leave(room)  # one of two tabs leaves: nothing
    bob1 = pc.ws_as(1, bob)
    bob1.join(room)  # the next event is bob's: ada's tabs said nothing
    expect([*watchers, Watcher(ada2), Watcher(bob1)], pevent(room, joined=[(bob, None)]))
    transitions += 1
    ada2.close()  # ada's last tab: she is gone
    expect([*watchers, Watcher(bob1)], pevent(room, left=[ada]))
    transitions += 1
    # Identities from the SDK: an anonymous member becomes cy (with metadata), then bob (cy
    # leaves; bob was already there: no join), then anonymous again after bob's tab closed.
    pc.sdk.sockets.set_presence(w0.id, cy, {"status": "busy"})
    expect(watchers, pevent(room, joined=[(cy, {"status": "busy"})]))
    transitions += 1
    pc.sdk.sockets.set_presence(w0.id, bob)
    expect(watchers, pevent(room, left=[cy]))
    transitions += 1
    bob1.close()  # bob still has w0: nothing; the next event is dee's
    pc.sdk.sockets.set_presence(w1.id, dee)
    expect(watchers, pevent(room, joined=[(dee, None)]))
    transitions += 1
    pc.sdk.sockets.set_presence(w0.id, None)
    expect(watchers, pevent(room, left=[bob]))
    transitions += 1
    sentinel(pc, room, watchers, gateway=1)
    for w in watchers:
        assert len(w.seen) == transitions + 2, w.seen  # + the sentinel's two
    assert pc.stats(room) == {"connections": 2, "users": 1}


def test_untracked_rooms_get_no_events_until_flagged(pc: PresenceCluster) -> None:
    """Events are for rooms matching --presence-rooms or flagged with track_presence."""
    room, tracked = fresh_room("plain"), "pres:" + uuid.uuid4().hex[:12]
    ada, bob = users("ada", 2)
    watcher = pc.ws_as(0)
    watcher.join(room)
    watcher.join(tracked)
    watchers = [Watcher(watcher)]
    pc.ws_as(1, ada).join(room)
    sentinel(pc, tracked, watchers)  # nothing came for the untracked room
    pc.sdk.sockets.track_presence(room)
    bob1 = pc.ws_as(1, bob)
    bob1.join(room)
    expect(watchers, pevent(room, joined=[(bob, None)]))
    pc.sdk.sockets.track_presence(room, False)
    bob1.leave(room)
    sentinel(pc, tracked, watchers)


def test_mass_disconnect_is_coalesced(pc: PresenceCluster) -> None:
    """400 sockets of 200 users (two tabs each) on one gateway drop at once: every watcher gets
    each user's "left" exactly once, in a few batched events, not one per user."""
    room = "pres:" + uuid.uuid4().hex[:12]
    n_users, tabs, n_watchers = 200, 2, 6
    watchers = [Watcher(pc.ws_as(i % 2)) for i in range(n_watchers)]
    for w in watchers:
        assert isinstance(w.client, WsClient)
        w.client.join(room)
    names = users("mass", n_users)
    crowd = Crowd()
    try:
        before_join = pc.router_metrics().get(EVENTS)
        crowd_clients = crowd.connect(pc.gateways[1], [u for u in names for _ in range(tabs)], room)
        sockets = n_users * tabs
        assert pc.stats(room) == {"connections": sockets + n_watchers, "users": n_users}
        everyone = set(names)
        join_events = [w.until(room, lambda j, _l: j == everyone) for w in watchers]
        assert all(e == join_events[0] for e in join_events), "every watcher saw the same"
        after_join = pc.router_metrics().get(EVENTS)

        started = time.monotonic()
        crowd.abort(crowd_clients)
        left_events = [w.until(room, lambda _j, lft: lft == everyone) for w in watchers]
        elapsed = time.monotonic() - started
        for events in left_events:
            assert events == left_events[0], "every watcher saw the same"
            assert all(e.data["joined"] == [] for e in events), events
        sentinel(pc, room, watchers)
        after_leave = pc.router_metrics().get(EVENTS) - 2  # the sentinel's two
        assert pc.stats(room) == {"connections": n_watchers, "users": 0}
    finally:
        crowd.close()
    leave_events = len(left_events[0])
    # Batched by the 0.1 s window: bounded by the time the drop took, never per user.
    assert leave_events <= 2 + elapsed / INTERVAL, (leave_events, elapsed)
    assert leave_events < n_users / 10
    assert after_leave - after_join == leave_events  # the router sent exactly those
    members_before = sockets + n_watchers
    record(
        "mass_disconnect",
        {
            "users": n_users,
            "sockets": sockets,
            "watchers": n_watchers,
            "join_transitions": n_users,
            "join_events_published": after_join - before_join,
            "leave_transitions": n_users,
            "leave_events_published": leave_events,
            "leave_pushes_to_members": leave_events * n_watchers,
            "naive_members_x_transitions": members_before * n_users,
            "naive_transitions_x_remaining_members": n_users * n_watchers,
            "disconnect_to_last_event_s": round(elapsed, 3),
        },
    )


# ============================================================================ faults


def test_gateway_kill9_presence_is_exact_after_expiry() -> None:
    """kill -9 a gateway: once the router expires it (--gateway-timeout), presence is exact
    (users with a tab elsewhere stay, with fewer connections) and members get one event
    listing every user who disappeared."""
    with own_cluster(
        router_args=("--heartbeat-interval", str(HEARTBEAT), "--gateway-timeout",
                     str(GATEWAY_TIMEOUT)),
        gateway_args=("--heartbeat-interval", str(HEARTBEAT), "--router-timeout",
                      str(ROUTER_TIMEOUT)),
    ) as pc:  # fmt: skip
        room = "pres:" + uuid.uuid4().hex[:12]
        ada, bob, cy = user("ada"), user("bob"), user("cy")
        watchers = [Watcher(pc.ws_as(0)) for _ in range(3)]
        survivors = [pc.ws_as(0, ada), pc.ws_as(0, cy)]
        doomed = [pc.ws_as(1, ada), pc.ws_as(1, ada), pc.ws_as(1, bob), pc.ws_as(1, bob)]
        for client in [*(w.client for w in watchers), *survivors, *doomed]:
            assert isinstance(client, WsClient)
            client.join(room)
        mass = users("gone", 300)
        crowd = Crowd()
        try:
            crowd.connect(pc.gateways[1], mass, room)
            everyone = {ada, bob, cy, *mass}
            for w in watchers:
                w.until(room, lambda j, _l: j == everyone)
            assert pc.stats(room) == {"connections": 3 + 2 + 4 + 300, "users": 303}
            expired_before = pc.router_metrics().get("roomcast_router_gateway_expired_total")
            events_before = pc.router_metrics().get(EVENTS)

            victim = pc.gateways.pop(1)
            victim.proc.kill()  # SIGKILL: no goodbye to the router
            pc.settled(
                room,
                {ada: {"connections": 1, "meta": None}, cy: {"connections": 1, "meta": None}},
                {"connections": 3 + 2, "users": 2},
            )
            # One expiry drops every socket of the gateway in one step: one event per room.
            expect(watchers, pevent(room, left=[bob, *mass]))
            metrics = pc.router_metrics()
            assert metrics.get("roomcast_router_gateway_expired_total") == expired_before + 1
            assert metrics.get(EVENTS) == events_before + 1
            assert metrics.get("roomcast_router_sockets") == 3 + 2
            sentinel(pc, room, watchers)
            record(
                "gateway_kill9",
                {
                    "users_gone": len(mass) + 1,
                    "members_left": 5,
                    "events_published": 1,
                    "naive_transitions_x_remaining_members": (len(mass) + 1) * 5,
                },
            )
        finally:
            crowd.close()


def test_router_restart_presence_is_exact_after_resync() -> None:
    """kill -9 the router and restart it on the same ports: once every gateway resynced
    (/readyz 200), presence is exact again, identities and metadata set through the SDK
    included, and events carry on (a restored user is announced at most once, nobody
    "leaves")."""
    ports = free_ports(3)
    fixed = (
        "--commands", f"tcp://127.0.0.1:{ports[0]}",
        "--fanout", f"tcp://127.0.0.1:{ports[1]}",
        "--http-port", str(ports[2]),
        "--presence-rooms", TRACKED, "--presence-interval", str(INTERVAL),
        "--heartbeat-interval", str(HEARTBEAT), "--gateway-timeout", str(GATEWAY_TIMEOUT),
    )  # fmt: skip

    def fixed_router() -> Proc:
        proc = router_proc(*fixed)
        proc.wait_ready()
        return proc

    router = fixed_router()
    with own_cluster(
        router=router,
        gateway_args=("--heartbeat-interval", str(HEARTBEAT), "--router-timeout",
                      str(ROUTER_TIMEOUT), "--router-unavailable-close", "600"),
    ) as pc:  # fmt: skip
        room, plain = "pres:" + uuid.uuid4().hex[:12], fresh_room("plain")
        ada, bob, dee, eve = (user(name) for name in ("ada", "bob", "dee", "eve"))
        w0, w1 = pc.ws_as(0), pc.ws_as(1)
        tabs = [pc.ws_as(0, ada), pc.ws_as(1, ada), pc.ws_as(1, bob)]
        dee_sock = pc.ws_as(0)
        for client in (w0, w1, *tabs, dee_sock):
            client.join(room)
            client.join(plain)
        pc.sdk.sockets.set_presence(dee_sock.id, dee, {"role": "host"})
        watchers = [Watcher(w0), Watcher(w1)]
        for w in watchers:
            w.until(room, lambda j, _l: j == {ada, bob, dee})
        expected = {
            ada: {"connections": 2, "meta": None},
            bob: {"connections": 1, "meta": None},
            dee: {"connections": 1, "meta": {"role": "host"}},
        }
        stats = {"connections": 6, "users": 3}
        for r in (room, plain):
            assert pc.presence(r) == expected and pc.stats(r) == stats
        pc.sdk.close()

        pc.router.kill()  # SIGKILL
        pc.router = fixed_router()

        def resynced_and_ready() -> bool:
            for gw in pc.gateways:
                resyncs = Metrics(http_get(gw.internal + "/metrics")[1]).get(
                    "roomcast_gateway_resyncs_total"
                )
                if resyncs < 2 or http_get(gw.public + "/readyz")[0] != 200:
                    return False
            return True

        deadline_poll(resynced_and_ready, 30 * T, 0.05, message="both gateways resynced")
        pc.sdk = SyncCluster(pc.router.info["commands"])
        for r in (room, plain):
            assert pc.presence(r) == expected, r
            assert pc.stats(r) == stats, r
        # The new router learnt everyone from the resyncs: members may hear each restored
        # user "joined" once (what its predecessor had said is lost); nobody "left".
        eve_tab = pc.ws_as(1, eve)
        eve_tab.join(room)
        for w in watchers:
            events = w.until(room, lambda j, _l: eve in j)
            assert all(e.data["left"] == [] for e in events), events
            announced = {e["user"]: e["meta"] for ev in events for e in ev.data["joined"]}
            assert set(announced) <= {ada, bob, dee, eve}, announced  # each once (until())
            assert announced.get(dee, {"role": "host"}) == {"role": "host"}, announced
        # Transitions after the restart are exact again.
        tabs[2].close()
        expect(watchers, pevent(room, left=[bob]))
        sentinel(pc, room, watchers)
        pc.settled(plain, {ada: expected[ada], dee: expected[dee]}, {"connections": 5, "users": 2})


# ============================================================================ receipts


def test_receipts_match_the_sockets_that_received(pc: PresenceCluster) -> None:
    """Receipts count each socket once across rooms and exclude omit; confirmed counts the
    sockets the gateways queued it for. Both match the clients that actually received it:
    those expected get it, the others see only a marker sent right after."""
    r1, r2, r3, nobody = (fresh_room("rcpt") for _ in range(4))
    a, b, c, d, e, outsider = (pc.ws_as(i % 2) for i in range(6))
    membership = {a: [r1, r2], b: [r1], c: [r2, r3], d: [r1, r2], e: [r1], outsider: []}
    for client, rooms in membership.items():
        for room in rooms:
            client.join(room)
    everyone = list(membership)
    sockets = pc.sdk.sockets
    seq = itertools.count()

    def receivers(result: Receipt, event: str) -> int:
        """How many clients got ``event`` (each at most once) before their marker."""
        got = 0
        for client in everyone:
            mark = f"mark-{next(seq)}"
            sockets.broadcast(client.id, "marker", mark)
            first = client.next_event()
            if first.event == event:
                got += 1
                first = client.next_event()
            assert first == Event("marker", mark), f"{client}: {first}"
        return got

    cases: list[tuple[list[str], list[Any], int, int, int]] = [
        ([r1, r2], [e.id], 2, 4, 1),  # a and d in both rooms: once each
        ([r1, r2, r3], [], 2, 5, 0),
        ([r2, r3], [a.id, b.id, "no-such-socket"], 2, 2, 1),  # b: not a member, not omitted
        ([r3], [], 1, 1, 0),
        ([nobody], [], 0, 0, 0),
    ]
    for rooms, omit, gateways, expect_sockets, omitted in cases:
        for confirm in (False, True):
            event = f"ev-{next(seq)}"
            result = sockets.broadcast(
                rooms, event, 1, omit=omit, receipt=True, confirm=confirm, confirm_timeout=10 * T
            )
            confirmed = expect_sockets if confirm else None
            assert result == Receipt(
                gateways, expect_sockets, omitted, confirmed, True if confirm else None
            ), (rooms, omit)
            assert receivers(result, event) == result.sockets, (rooms, omit, confirm)
    # A blast counts every socket of the cluster: once the router knows exactly ours.
    deadline_poll(
        lambda: pc.router_metrics().get("roomcast_router_sockets") == len(everyone),
        10 * T,
        message="the router to know exactly this test's sockets",
    )
    result = sockets.blast("bl-1", 1, omit=[outsider.id], receipt=True)
    assert result == Receipt(2, 5, 1)
    assert receivers(result, "bl-1") == 5
    result = sockets.blast("bl-2", 2, receipt=True, confirm=True, confirm_timeout=10 * T)
    assert result == Receipt(2, 6, 0, 6, True)
    assert receivers(result, "bl-2") == 6
    # The asyncio SDK answers the same.

    async def via_async() -> Receipt:
        async with SdkCluster(pc.commands) as sdk:
            return await sdk.sockets.broadcast([r1, r2], "as-1", 3, receipt=True, confirm=True)

    assert asyncio.run(via_async()) == Receipt(2, 5, 0, 5, True)
    assert receivers(Receipt(2, 5, 0), "as-1") == 5
    assert sockets.broadcast(r1, "plain", 0) == 2  # without receipt: gateways, as before
    assert receivers(Receipt(2, 4, 0), "plain") == 4


def test_confirm_waits_for_a_frozen_gateway_until_its_timeout() -> None:
    """A gateway that cannot confirm (SIGSTOP) makes the receipt incomplete at
    confirm_timeout, with what the others confirmed; the SDK waits that long even when it is
    longer than its own reply timeout."""
    with own_cluster(
        router_args=("--gateway-timeout", "60"),
        gateway_args=("--router-timeout", "60", "--router-unavailable-close", "600"),
    ) as pc:
        room = fresh_room("frozen")
        a, b = pc.ws_as(0), pc.ws_as(1)
        a.join(room)
        b.join(room)
        frozen = pc.gateways[1].proc
        # Short SDK timeouts: the confirmation wait comes on top of them (a 6.5 s wait is
        # longer than SyncCluster's own bound of timeout + connect_timeout + 5 s).
        impatient = SyncCluster(pc.commands, timeout=0.5, connect_timeout=0.5)
        try:
            os.kill(frozen.popen.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                result = impatient.sockets.broadcast(
                    room, "late", 1, receipt=True, confirm=True, confirm_timeout=6.5
                )
                waited = time.monotonic() - started
            finally:
                os.kill(frozen.popen.pid, signal.SIGCONT)
            assert result == Receipt(2, 2, 0, 1, False)
            assert 6.0 < waited < 6.5 + 5 * T, waited
            assert a.next_event() == Event("late", 1)
            assert b.next_event() == Event("late", 1)  # queued for it; delivered once thawed
            result = impatient.sockets.broadcast(
                room, "ok", 2, receipt=True, confirm=True, confirm_timeout=5
            )
            assert result == Receipt(2, 2, 0, 2, True)
            assert [a.next_event(), b.next_event()] == [Event("ok", 2)] * 2
        finally:
            impatient.close()


# ============================================================================ figures


def _topology_bytes(sockets: int, tabs: int, rooms: int, room_size: int) -> float:
    """tracemalloc bytes per socket of a Topology: ``sockets`` sockets on one gateway, each in
    its own room and in ``rooms`` tracked rooms of ``room_size`` sockets; ``tabs`` sockets per
    user (0: anonymous)."""
    gc.collect()
    tracemalloc.start()
    try:
        t = Topology(tracked=lambda room: room.startswith("pres:"))
        t.add_gateway("g1")
        ids = [f"sock{i:012d}" for i in range(sockets)]  # 16 characters, like real ids
        names = [f"user-{i // tabs:08d}" for i in range(sockets)] if tabs else []
        t.open_sockets("g1", ids, names)
        for r in range(rooms):
            for start in range(0, sockets, room_size):
                t.change(ids[start : start + room_size], [f"pres:{r}-{start}"], leave=False)
        t.take_transitions()
        del ids, names
        gc.collect()
        size, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return size / sockets


def memory_per_member() -> dict[str, int]:
    """The router's presence state in bytes, measured on the Topology it runs: what an
    identity adds to a connection (its own room included), and what each (user, room)
    presence entry adds in a large room and in rooms of 10."""
    n = 20_000
    anon0, one0 = _topology_bytes(n, 0, 0, n), _topology_bytes(n, 1, 0, n)
    anon_big, one_big = _topology_bytes(n, 0, 4, n), _topology_bytes(n, 1, 4, n)
    anon_small, one_small = _topology_bytes(n, 0, 4, 10), _topology_bytes(n, 1, 4, 10)
    two_small = _topology_bytes(n, 2, 4, 10)
    identity = one0 - anon0
    return {
        "anonymous_connection_B": round(anon0),
        "anonymous_membership_large_room_B": round((anon_big - anon0) / 4),
        "anonymous_membership_room_of_10_B": round((anon_small - anon0) / 4),
        "identity_per_connection_B": round(identity),
        "presence_entry_large_room_B": round(((one_big - anon_big) - identity) / 4),
        "presence_entry_room_of_10_B": round(((one_small - anon_small) - identity) / 4),
        "presence_total_per_connection_2_tabs_4_rooms_of_10_B": round(two_small - anon_small),
    }


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_figures_memory_per_member_and_throughput_with_presence_on_and_off() -> None:
    """Same run, same processes: deliveries/s to N identified sockets in a tracked room
    (presence on) vs N anonymous sockets in an untracked room (presence off), bursts
    alternated; and the router's memory for presence state (RSS of the real process, and a
    per-structure breakdown measured with tracemalloc on the same Topology it runs)."""
    n, messages, rounds, window = 200, 1500, 5, 64
    with own_cluster() as pc:
        crowd = Crowd()
        try:
            on_room, off_room, mem_room = (fresh_room(p) for p in ("on", "off", "mem"))
            tallies = {"on": Tally(), "off": Tally()}
            names = users("tp", n // 2)
            for i, gw in enumerate(pc.gateways):  # half the subscribers on each gateway
                half = names[i * n // 4 : (i + 1) * n // 4]
                crowd.connect(gw, [u for u in half for _ in range(2)], on_room, tally=tallies["on"])
                crowd.connect(gw, [None] * (n // 2), off_room, tally=tallies["off"])
            # Tracked from now on (no events for who is there): presence fully on for on_room.
            pc.sdk.sockets.track_presence(on_room)
            assert pc.stats(on_room) == {"connections": n, "users": n // 2}
            assert pc.stats(off_room) == {"connections": n, "users": 0}

            servers = {"router": pc.router.popen.pid}
            servers |= {f"gateway{i}": g.proc.popen.pid for i, g in enumerate(pc.gateways)}

            async def burst(room: str, tally: Tally, receipt: bool) -> dict[str, float]:
                """One burst: deliveries/s at the clients, server CPU per delivery."""
                data = {"p": "x" * 100}
                async with SdkCluster(pc.commands) as sdk:
                    gate = asyncio.Semaphore(window)
                    target = tally.events + messages * n

                    async def one() -> None:
                        async with gate:
                            if receipt:
                                got = await sdk.sockets.broadcast(room, "m", data, receipt=True)
                                assert got.sockets == n
                            else:
                                await sdk.sockets.broadcast(room, "m", data)

                    cpu0 = {k: cpu_times(pid)[2] for k, pid in servers.items()}
                    started = time.monotonic_ns()
                    await asyncio.gather(*(one() for _ in range(messages)))
                    deadline = time.monotonic() + 60 * T
                    while tally.events < target:
                        assert time.monotonic() < deadline, (tally.events, target)
                        await asyncio.sleep(0.005)
                    cpu1 = {k: cpu_times(pid)[2] for k, pid in servers.items()}
                    assert tally.events == target, "no loss, no duplicate"
                    deliveries = messages * n
                    return {
                        "rate": deliveries / ((tally.last_ns - started) / 1e9),
                        "server_cpu_us": sum(cpu1[k] - cpu0[k] for k in servers) / deliveries * 1e6,
                        "router_cpu_us_per_publish": (cpu1["router"] - cpu0["router"])
                        / messages
                        * 1e6,
                    }

            modes = ("off", "on", "on+receipt")
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in modes}
            crowd.run(burst(off_room, tallies["off"], False), 120 * T)  # warm-up
            for _ in range(rounds):
                for mode in modes:
                    room = off_room if mode == "off" else on_room
                    tally = tallies["off"] if mode == "off" else tallies["on"]
                    runs[mode].append(crowd.run(burst(room, tally, mode == "on+receipt"), 120 * T))
            median = {
                mode: {k: statistics.median(r[k] for r in runs[mode]) for k in runs[mode][0]}
                for mode in modes
            }
            # Presence state is not on the delivery path: no costlier within noise (CPU per
            # delivery is the steady figure on a shared machine; rates move with foreign load).
            assert median["on"]["server_cpu_us"] < 1.5 * median["off"]["server_cpu_us"], median
            assert median["on"]["rate"] > 0.5 * median["off"]["rate"], median

            # Router RSS: k anonymous sockets, then the same sockets given identities.
            k = 4000
            pid = pc.router.popen.pid
            for gw in pc.gateways:
                crowd.connect(gw, [None] * (k // 2), mem_room)
            mem_sockets = pc.sdk.sockets.members(mem_room)
            assert len(mem_sockets) == k
            rss0 = vmrss_kib(pid)
            mem_users = users("mem", k // 2)

            async def identify() -> None:
                async with SdkCluster(pc.commands) as sdk:
                    gate = asyncio.Semaphore(window)

                    async def one(i: int, sid: str) -> None:
                        async with gate:
                            await sdk.sockets.set_presence(sid, mem_users[i // 2])

                    await asyncio.gather(*(one(i, s) for i, s in enumerate(mem_sockets)))

            crowd.run(identify(), 120 * T)
            assert pc.stats(mem_room) == {"connections": k, "users": k // 2}
            rss1 = vmrss_kib(pid)
        finally:
            crowd.close()
    breakdown = memory_per_member()
    record(
        "throughput_and_memory",
        {
            "subscribers": n,
            "messages_per_burst": messages,
            "rounds": rounds,
            "median": {m: {k: round(v, 3) for k, v in f.items()} for m, f in median.items()},
            "deliveries_per_s_all": {m: [round(r["rate"]) for r in runs[m]] for m in modes},
            "router_rss_identify_sockets": k,
            "router_rss_delta_per_identified_connection_B": round((rss1 - rss0) * 1024 / k),
            "topology_bytes": breakdown,
            "cpus": os.cpu_count(),
        },
    )


def test_presence_identities_are_bounded(pc: PresenceCluster) -> None:
    from roomcast import BadRequest, PayloadTooLarge

    client = pc.ws_as(0)
    with pytest.raises(PayloadTooLarge):
        pc.sdk.sockets.set_presence(client.id, "ada", {"blob": "x" * 2000})
    with pytest.raises(BadRequest):
        pc.sdk.sockets.set_presence(client.id, "u" * 300)
    pc.sdk.sockets.set_presence(client.id, "ada", {"tab": 1})  # within bounds: accepted
    room = fresh_room("bounded")
    client.join(room)
    assert pc.sdk.sockets.presence(room) == {"ada": {"connections": 1, "meta": {"tab": 1}}}
