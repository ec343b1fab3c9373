"""Fault suite (issue 7; architecture §5.4, §7): real processes, real /ws clients, measured figures.

Each test breaks a running cluster the way production breaks it and checks what architecture §7
promises, then prints what it measured and records it in a JSON file
(``$ROOMCAST_FAULT_FIGURES``, default ``<tmp>/roomcast-fault-figures.json``; ``pytest -s`` shows
the printed lines):

* router ``kill -9`` and restart on the same ports, with 10,000 sockets in 1,000 rooms on two
  gateways: the gateways notice the new epoch within a heartbeat, keep every client connected,
  resync, report ready, and the SDK's count/members are exact again; SDK calls during the
  outage fail fast with ``RouterUnavailable``; time from restart to full resync;
* gateway ``kill -9``: the router expires it after ``--gateway-timeout`` and counts are exact;
* a partitioned gateway (SIGSTOP past the timeout, then SIGCONT) is reset and resyncs;
* a high-water-mark overflow at the router's PUB socket is counted at the router
  (``fanout_dropped``), at the gateway (``lost``, then a resync) and at the clients.

Clients are the bench's lean asyncio client (``roomcast.bench.wsclient``): thousands of
connections in this process. Every push the tests publish carries a sequence number in its
data (``{"t": ..., "s": seq}``), so each client counts what it missed during each fault.
``ROOMCAST_FAULT_SOCKETS`` / ``ROOMCAST_FAULT_ROOMS`` scale the restart test (default 10,000 /
1,000).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import functools
import json
import os
import pathlib
import re
import resource
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import pytest

from roomcast import Cluster as SdkCluster
from roomcast.bench.wsclient import Tally, WsClient, connect, stamp
from roomcast.core.errors import RoomcastError, RouterUnavailable, Timeout
from tests.conftest import TIMEOUT_UNIT as T
from tests.integration.harness import Metrics, Proc, gateway_proc, http_get, router_proc

SOCKETS = int(os.environ.get("ROOMCAST_FAULT_SOCKETS", "10000"))
ROOMS = int(os.environ.get("ROOMCAST_FAULT_ROOMS", "1000"))

# Liveness settings of the fault clusters (seconds): short, so faults show within seconds.
HEARTBEAT = 0.5
GATEWAY_TIMEOUT = 2.0
ROUTER_TIMEOUT = 3.0
ROUTER_FLAGS = ("--heartbeat-interval", str(HEARTBEAT), "--gateway-timeout", str(GATEWAY_TIMEOUT))
GATEWAY_FLAGS = (
    "--heartbeat-interval", str(HEARTBEAT),
    "--router-timeout", str(ROUTER_TIMEOUT),
    # Clients must survive every outage here: closing them (4002) is not what is tested.
    "--router-unavailable-close", "600",
)  # fmt: skip

FIGURES_PATH = pathlib.Path(
    os.environ.get("ROOMCAST_FAULT_FIGURES")
    or pathlib.Path(tempfile.gettempdir()) / "roomcast-fault-figures.json"
)
MARKER_BASE = 1_000_000_000  # seqs of check broadcasts; the fault publishers count from 1
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


# --------------------------------------------------------------------------- figures


def record(test: str, figures: dict[str, Any]) -> None:
    """Print ``figures`` and merge them into the JSON figures file under ``test``."""
    try:
        data = json.loads(FIGURES_PATH.read_text())
    except (OSError, ValueError):
        data = {}
    data[test] = {**figures, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    FIGURES_PATH.parent.mkdir(parents=True, exist_ok=True)
    FIGURES_PATH.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"\n[fault figures] {test}: {json.dumps(figures, sort_keys=True)}")
    print(f"[fault figures] recorded in {FIGURES_PATH}")


# --------------------------------------------------------------------------- processes


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held together while picked)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def fixed_router(ports: list[int], *extra: str) -> Proc:
    """A router bound to the given ports (commands, fanout, http): restartable in place."""
    commands, fanout, http = ports
    proc = router_proc(
        *ROUTER_FLAGS,
        "--commands", f"tcp://127.0.0.1:{commands}",
        "--fanout", f"tcp://127.0.0.1:{fanout}",
        "--http-port", str(http),
        *extra,
    )  # fmt: skip
    proc.wait_ready()
    return proc


class Gw:
    """One gateway process and its addresses."""

    def __init__(self, name: str, router_info: dict[str, Any], *extra: str) -> None:
        self.proc = gateway_proc(name, router_info, *GATEWAY_FLAGS, *extra)
        self.name = name
        self.public = ""
        self.internal = ""
        self.host = ""
        self.port = 0

    def ready(self) -> Gw:
        info = self.proc.wait_ready()
        self.public, self.internal = info["public"], info["internal"]
        host, port = self.public.split("//", 1)[1].rsplit(":", 1)
        self.host, self.port = host, int(port)
        return self

    def metrics(self) -> Metrics:
        status, text = http_get(self.internal + "/metrics")
        assert status == 200, f"{self.name} /metrics: {status}"
        return Metrics(text)

    def readyz(self) -> int:
        try:
            return http_get(self.public + "/readyz", timeout=2 * T)[0]
        except OSError:
            return 0


def start_gateways(router_info: dict[str, Any], n: int, *extra: str) -> list[Gw]:
    gws = [Gw(f"gateway{i}", router_info, *extra) for i in range(n)]
    return [g.ready() for g in gws]


def router_metrics(router: Proc) -> Metrics:
    status, text = http_get(router.info["http"] + "/metrics")
    assert status == 200, f"router /metrics: {status}"
    return Metrics(text)


@contextlib.contextmanager
def processes(*procs: Proc) -> Iterator[list[Proc]]:
    """Kill every process still running at the end (the tests stop the healthy ones first)."""
    tracked = list(procs)
    try:
        yield tracked
    except BaseException:
        for proc in tracked:  # what each process said, to explain the failure
            print(proc.log_tail(60))
        raise
    finally:
        for proc in tracked:
            proc.kill()


def stop_clean(procs: Iterable[Proc]) -> None:
    """SIGTERM -> exit 0, and no ERROR/Traceback in any log."""
    for proc in procs:
        proc.stop()
        proc.check_log()


def log_time(line: str) -> float:
    """The wall-clock time of a component log line (``%(asctime)s`` format)."""
    m = _LOG_TIME.match(line)
    assert m, f"no timestamp in log line {line!r}"
    stamp_ = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
    return stamp_.timestamp()


def first_log_line(proc: Proc, pattern: str, since: int = 0) -> str | None:
    with open(proc.log_path, "rb") as f:
        f.seek(since)
        for raw in f:
            line = raw.decode("utf-8", "replace")
            if re.search(pattern, line):
                return line
    return None


def raise_fd_limit(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else min(hard, max(soft, want))
    if target != resource.RLIM_INFINITY and target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


# --------------------------------------------------------------------------- async helpers


async def poll(fn: Callable[[], Any], timeout: float, interval: float = 0.02, *, what: str) -> Any:
    """Call ``fn`` (sync or async) until truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {what} (last: {result!r})")
        await asyncio.sleep(interval)


async def gw_metrics(gw: Gw) -> Metrics:
    return await asyncio.to_thread(gw.metrics)


async def readyz(gw: Gw) -> int:
    return await asyncio.to_thread(gw.readyz)


class Fleet:
    """Lean /ws clients spread over gateways, the rooms each joined, and what each received."""

    def __init__(self) -> None:
        self.tally = Tally()
        self.clients: list[WsClient] = []
        self.gateway_of: dict[str, str] = {}  # socket id -> gateway name
        self.rooms_of: dict[str, set[str]] = {}  # socket id -> rooms joined (not its own)

    async def open(
        self, gws: list[Gw], n: int, rooms: list[str], *, concurrency: int = 200
    ) -> list[WsClient]:
        """``n`` clients, client ``i`` on gateway ``i % G`` in room ``(i // G) % R``: every room
        has members on every gateway."""
        gate = asyncio.Semaphore(concurrency)
        g = len(gws)

        async def one(i: int) -> WsClient:
            gw = gws[i % g]
            room = rooms[(i // g) % len(rooms)]
            async with gate:
                client = await connect(
                    gw.host, gw.port, "/ws", timeout=30 * T, tally=self.tally, record=True
                )
                try:
                    reply = await client.request("join", 30 * T, room=room)
                except BaseException:
                    client.abort()
                    raise
            assert reply.get("statusCode") == 200, f"join {room}: {reply}"
            self.gateway_of[client.socket_id] = gw.name
            self.rooms_of[client.socket_id] = {room}
            return client

        opened = list(await asyncio.gather(*(one(i) for i in range(n))))
        self.clients += opened
        return opened

    def members(self, room: str, gateway: str | None = None) -> set[str]:
        return {
            sid
            for sid, rooms in self.rooms_of.items()
            if room in rooms and (gateway is None or self.gateway_of[sid] == gateway)
        }

    def on(self, gateway: str) -> list[WsClient]:
        return [c for c in self.clients if self.gateway_of[c.socket_id] == gateway]

    def in_room(self, room: str) -> list[WsClient]:
        return [c for c in self.clients if room in self.rooms_of[c.socket_id]]

    def closed(self) -> collections.Counter[str]:
        return collections.Counter(str(c.close_code) for c in self.clients if not c.is_open)

    def drop(self, clients: Iterable[WsClient]) -> None:
        """Forget clients whose gateway died (their connections are gone)."""
        gone = {c.socket_id for c in clients}
        for c in self.clients:
            if c.socket_id in gone:
                c.abort()
        self.clients = [c for c in self.clients if c.socket_id not in gone]
        for sid in gone:
            self.rooms_of.pop(sid, None)
            self.gateway_of.pop(sid, None)

    async def close(self) -> None:
        for c in self.clients:
            c.abort()
        # No transport outlives the loop: wait (bounded) for every connection_lost.
        await asyncio.wait_for(
            asyncio.gather(*(asyncio.shield(c.closed) for c in self.clients)), 10 * T
        )


async def check_exact(
    sdk: SdkCluster, fleet: Fleet, rooms: list[str], *, members: bool = True
) -> list[str]:
    """Rooms whose SDK count (and members) differ from what the clients joined."""
    counts = await asyncio.gather(*(sdk.sockets.count(r) for r in rooms))
    wrong = [r for r, n in zip(rooms, counts, strict=True) if n != len(fleet.members(r))]
    if members and not wrong:
        listed = await asyncio.gather(*(sdk.sockets.members(r) for r in rooms))
        wrong = [r for r, m in zip(rooms, listed, strict=True) if set(m) != fleet.members(r)]
    return wrong


async def exact_soon(sdk: SdkCluster, fleet: Fleet, rooms: list[str]) -> bool:
    """True once count and members are exact (router errors during a resync count as no)."""
    try:
        return not await check_exact(sdk, fleet, rooms)
    except RoomcastError:
        return False


async def broadcast_reaches(
    sdk: SdkCluster, fleet: Fleet, clients: list[WsClient], rooms: list[str] | None, seq: int
) -> float:
    """Broadcast ``seq`` (to ``rooms``, or a blast); wait until every client has it."""
    started = time.monotonic()
    data = stamp(MARKER_BASE + seq, "")
    if rooms is None:
        await sdk.sockets.blast("check", data)
    else:
        await sdk.sockets.broadcast(rooms, "check", data)
    want = MARKER_BASE + seq

    def arrived() -> bool:
        return all(want in c.parser.seqs[-64:] for c in clients)

    def missing() -> str:
        gone = [c for c in clients if want not in c.parser.seqs[-64:]]
        return f"{len(gone)} of {len(clients)} clients (first: {gone[0].socket_id})"

    deadline = time.monotonic() + 30 * T
    while not arrived():
        if time.monotonic() >= deadline:
            pytest.fail(f"broadcast {seq} did not reach {missing()}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


class SeqPublisher:
    """Publishes numbered messages to ``rooms`` one at a time until stopped; records which the
    router accepted (and to how many gateways it handed each) and which failed, and how."""

    def __init__(self, sdk: SdkCluster, rooms: list[str], interval: float = 0.02) -> None:
        self.sdk = sdk
        self.rooms = rooms
        self.interval = interval
        self.accepted: dict[int, int] = {}  # seq -> gateways handed to
        self.failed: collections.Counter[str] = collections.Counter()
        self.fail_s: dict[str, float] = {}  # longest wait for each kind of failure
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.seq = 0

    def start(self) -> SeqPublisher:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def flowing(self, count: int = 10) -> None:
        """Wait (with a deadline) until the router accepted ``count`` messages: traffic is in
        flight before the fault, without a settle-sleep."""
        await poll(lambda: len(self.accepted) >= count, 10 * T, 0.01, what="the publisher flowing")

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.seq += 1
            started = time.monotonic()
            try:
                handed = await self.sdk.sockets.broadcast(self.rooms, "seq", stamp(self.seq, ""))
            except RoomcastError as exc:
                kind = type(exc).__name__
                self.failed[kind] += 1
                self.fail_s[kind] = max(self.fail_s.get(kind, 0.0), time.monotonic() - started)
            else:
                self.accepted[self.seq] = handed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def lost(self, clients: Iterable[WsClient]) -> dict[str, Any]:
        """Accepted messages each client missed, summed; and messages missed by any client."""
        accepted = set(self.accepted)
        per_message: set[int] = set()
        total = 0
        for c in clients:
            missed = accepted - set(c.parser.seqs)
            total += len(missed)
            per_message |= missed
        return {
            "published": self.seq,
            "accepted": len(accepted),
            "accepted_to_no_gateway": sum(1 for n in self.accepted.values() if n == 0),
            "refused": dict(self.failed),
            "refused_longest_wait_s": {k: round(v, 3) for k, v in self.fail_s.items()},
            "missed_deliveries": total,
            "messages_missed_by_someone": len(per_message),
        }


# --------------------------------------------------------------------------- (a) router restart


@pytest.mark.timeout(600)
def test_router_kill9_restart_same_ports_resyncs_10k_sockets() -> None:
    """kill -9 the router, restart it on the same ports: clients stay connected, the gateways
    notice the new epoch within a heartbeat, resync, turn ready, and membership is exact."""
    n_sockets, n_rooms = SOCKETS, ROOMS
    limit = raise_fd_limit(n_sockets + 1024)
    if limit < n_sockets + 256:  # a machine with a low hard limit: measure what fits
        n_sockets = max(100, limit - 512)
    ports = free_ports(3)
    router = fixed_router(ports)
    with processes(router) as procs:
        gws = start_gateways(router.info, 2)
        procs += [g.proc for g in gws]
        figures = asyncio.run(_router_restart(router, ports, gws, procs, n_sockets, n_rooms))
        stop_clean([*(g.proc for g in gws), procs[-1]])
    record("router_kill9_restart", figures)


async def _router_restart(
    router: Proc, ports: list[int], gws: list[Gw], procs: list[Proc], n_sockets: int, n_rooms: int
) -> dict[str, Any]:
    prefix = uuid.uuid4().hex[:8]
    rooms = [f"restart-{prefix}-{i}" for i in range(n_rooms)]
    fleet = Fleet()
    sdk = SdkCluster(router.info["commands"], timeout=5 * T, connect_timeout=0.5)
    publisher_sdk = SdkCluster(router.info["commands"], timeout=2 * T, connect_timeout=0.5)
    try:
        t0 = time.monotonic()
        await fleet.open(gws, n_sockets, rooms)
        connect_s = time.monotonic() - t0
        assert not await check_exact(sdk, fleet, rooms), "membership not exact before the fault"
        await broadcast_reaches(sdk, fleet, fleet.clients, None, 1)

        # Messages numbered by one publisher to 10 rooms (members on both gateways) all along.
        watched_rooms = rooms[:10]
        watched = [c for r in watched_rooms for c in fleet.in_room(r)]
        publisher = SeqPublisher(publisher_sdk, watched_rooms).start()
        await publisher.flowing(20)

        # A call in flight when the router dies ends in Timeout, and is never replayed to the
        # next router: freeze the router, send a join, then kill it.
        inflight_sdk = SdkCluster(router.info["commands"], timeout=1.5 * T, connect_timeout=0.5)
        ghost_room = f"ghost-{prefix}"
        await inflight_sdk.sockets.count(ghost_room)  # connected before the freeze
        os.kill(router.popen.pid, signal.SIGSTOP)
        inflight = asyncio.ensure_future(
            inflight_sdk.sockets.join(fleet.clients[0].socket_id, ghost_room)
        )
        # The join's command is sent (submitted to the frozen router's pipe) before the kill.
        await poll(lambda: inflight_sdk.link._pending, 5 * T, 0.001, what="the join sent")
        offsets = [g.proc.log_size() for g in gws]
        killed_at = time.monotonic()
        await asyncio.to_thread(router.kill)
        # The SDK during the outage: fails fast with RouterUnavailable, bounded by its
        # connect_timeout (0.5 s) -- never a hang, never a queued command replayed later.
        probe_started = time.monotonic()
        with pytest.raises(RouterUnavailable):
            await sdk.sockets.count(rooms[0])
        probe_s = time.monotonic() - probe_started
        assert probe_s < 0.5 + 1.0 * T, f"RouterUnavailable took {probe_s:.2f}s"
        for gw in gws:  # the gateways answer clients, they do not hang or close them
            assert gw.proc.alive(), gw.proc.log_tail()
        with pytest.raises(Timeout):
            await inflight
        inflight_s = time.monotonic() - killed_at
        await inflight_sdk.close()

        restart_wall = time.time()
        restarted_at = time.monotonic()
        new_router = router_proc(
            *ROUTER_FLAGS,
            "--commands", f"tcp://127.0.0.1:{ports[0]}",
            "--fanout", f"tcp://127.0.0.1:{ports[1]}",
            "--http-port", str(ports[2]),
        )  # fmt: skip
        procs.append(new_router)
        await asyncio.to_thread(new_router.wait_ready)
        router_ready_s = time.monotonic() - restarted_at

        ready_s = await _all_ready_after(gws, restarted_at)
        await poll(lambda: exact_soon(sdk, fleet, rooms), 60 * T, 0.05, what="exact membership")
        exact_s = time.monotonic() - restarted_at
        await publisher.stop()

        noticed = []
        resynced = []
        for gw, since in zip(gws, offsets, strict=True):
            line = first_log_line(gw.proc, r"router epoch changed|router link down", since)
            assert line is not None, f"{gw.name} never noticed the restart\n{gw.proc.log_tail()}"
            noticed.append(round(log_time(line) - restart_wall, 3))
            done = first_log_line(gw.proc, r"resynced with router epoch", since)
            assert done is not None, gw.proc.log_tail()
            resynced.append(round(log_time(done) - restart_wall, 3))
        # "Within a heartbeat" of the new router being up (its first beat may go out before the
        # gateways' SUB sockets have reconnected: allow one more, plus process start-up).
        for gw, t in zip(gws, noticed, strict=True):
            assert t <= router_ready_s + 2 * HEARTBEAT + 1.0 * T, f"{gw.name} noticed after {t}s"

        assert await sdk.sockets.count(ghost_room) == 0, "a stale command reached the new router"
        closed = fleet.closed()
        assert not closed, f"clients closed during the router restart: {dict(closed)}"
        blast_s = await broadcast_reaches(sdk, fleet, fleet.clients, None, 2)
        await broadcast_reaches(sdk, fleet, watched, watched_rooms, 3)
        lost = publisher.lost(watched)
        resyncs = [(await gw_metrics(g)).get("roomcast_gateway_resyncs_total") for g in gws]
        assert all(r >= 2 for r in resyncs), resyncs  # startup + after the restart
        assert not fleet.closed()
        return {
            "sockets": len(fleet.clients),
            "rooms": n_rooms,
            "gateways": len(gws),
            "connect_and_join_s": round(connect_s, 3),
            "sdk_router_unavailable_s": round(probe_s, 3),
            "sdk_inflight_call_timeout_s": round(inflight_s, 3),
            "outage_s": round(restarted_at - killed_at, 3),
            "router_start_to_ready_line_s": round(router_ready_s, 3),
            "restart_to_epoch_noticed_s": noticed,
            "restart_to_resynced_log_s": resynced,
            "restart_to_all_readyz_200_s": round(ready_s, 3),
            "restart_to_exact_membership_s": round(exact_s, 3),
            "blast_after_resync_reached_all_s": round(blast_s, 3),
            "clients_closed": 0,
            "messages_lost": {**lost, "watched_clients": len(watched)},
        }
    finally:
        await sdk.close()
        await publisher_sdk.close()
        await fleet.close()


async def _all_ready_after(gws: list[Gw], since: float) -> float:
    """Seconds from ``since`` until every gateway's /readyz is 200 again (after it noticed)."""

    async def all_ready() -> bool:
        codes = await asyncio.gather(*(readyz(g) for g in gws))
        return all(c == 200 for c in codes)

    # A gateway still "ready" on the old epoch would answer 200 too: wait for the resync count.
    async def resynced() -> bool:
        ms = await asyncio.gather(*(gw_metrics(g) for g in gws))
        return all(m.get("roomcast_gateway_resyncs_total") >= 2 for m in ms)

    await poll(resynced, 60 * T, 0.02, what="gateways resynced with the new router")
    await poll(all_ready, 30 * T, 0.02, what="/readyz 200 on every gateway")
    return time.monotonic() - since


# --------------------------------------------------------------------------- (b) gateway death


def _small_cluster(
    *router_extra: str, gateway_extra: tuple[str, ...] = ()
) -> tuple[Proc, list[Gw]]:
    router = router_proc(*ROUTER_FLAGS, *router_extra)
    router.wait_ready()
    try:
        return router, start_gateways(router.info, 2, *gateway_extra)
    except BaseException:
        router.kill()
        raise


@pytest.mark.timeout(180)
def test_gateway_kill9_is_expired_and_counts_are_exact() -> None:
    router, gws = _small_cluster()
    with processes(router, *(g.proc for g in gws)):
        figures = asyncio.run(_gateway_death(router, gws))
        stop_clean([gws[0].proc, router])
    record("gateway_kill9", figures)


async def _gateway_death(router: Proc, gws: list[Gw]) -> dict[str, Any]:
    rooms = [f"death-{uuid.uuid4().hex[:8]}-{i}" for i in range(5)]
    fleet = Fleet()
    sdk = SdkCluster(router.info["commands"], timeout=5 * T)
    pub_sdk = SdkCluster(router.info["commands"], timeout=5 * T)
    try:
        await fleet.open(gws, 60, rooms)
        assert not await check_exact(sdk, fleet, rooms)
        publisher = SeqPublisher(pub_sdk, rooms).start()
        await publisher.flowing()
        victim, survivor = gws[1], gws[0]
        dead = fleet.on(victim.name)
        killed_at = time.monotonic()
        victim.proc.kill()
        fleet.drop(dead)
        await poll(lambda: exact_soon(sdk, fleet, rooms), 10 * GATEWAY_TIMEOUT * T, 0.02,
                   what="the dead gateway's sockets removed")  # fmt: skip
        expiry_s = time.monotonic() - killed_at
        await publisher.stop()
        # Expiry comes after the timeout, at the first router check past it (one interval).
        assert expiry_s >= GATEWAY_TIMEOUT - HEARTBEAT - 0.1, expiry_s
        assert expiry_s <= GATEWAY_TIMEOUT + 2 * HEARTBEAT + 1.0 * T, expiry_s
        rm = await asyncio.to_thread(router_metrics, router)
        assert rm.get("roomcast_router_gateway_expired_total") == 1
        assert rm.get("roomcast_router_gateways") == 1
        assert rm.get("roomcast_router_sockets") == len(fleet.clients)
        survivors = fleet.on(survivor.name)
        await broadcast_reaches(sdk, fleet, survivors, rooms, 1)
        lost = publisher.lost(survivors)
        assert lost["missed_deliveries"] == 0, lost  # the survivors miss nothing
        assert not fleet.closed()
        return {
            "gateway_timeout_s": GATEWAY_TIMEOUT,
            "heartbeat_interval_s": HEARTBEAT,
            "kill_to_exact_counts_s": round(expiry_s, 3),
            "sockets_removed": len(dead),
            "messages_lost_at_surviving_clients": lost,
        }
    finally:
        await sdk.close()
        await pub_sdk.close()
        await fleet.close()


# --------------------------------------------------------------------------- (c) partition


@pytest.mark.timeout(180)
def test_partitioned_gateway_is_reset_and_resyncs() -> None:
    """SIGSTOP a gateway past --gateway-timeout: the router expires it. SIGCONT: it is told it
    is unknown (Reset) or finds the router silent, says Hello, resyncs; its clients' rooms are
    right again and they never noticed (no close)."""
    router, gws = _small_cluster()
    with processes(router, *(g.proc for g in gws)):
        figures = asyncio.run(_partition(router, gws))
        stop_clean([*(g.proc for g in gws), router])
    record("gateway_partition_sigstop", figures)


async def _partition(router: Proc, gws: list[Gw]) -> dict[str, Any]:
    rooms = [f"part-{uuid.uuid4().hex[:8]}-{i}" for i in range(5)]
    fleet = Fleet()
    sdk = SdkCluster(router.info["commands"], timeout=5 * T)
    pub_sdk = SdkCluster(router.info["commands"], timeout=5 * T)
    victim = gws[1]
    try:
        await fleet.open(gws, 60, rooms)
        assert not await check_exact(sdk, fleet, rooms)
        before = await gw_metrics(victim)
        resets_before = (await asyncio.to_thread(router_metrics, router)).get(
            "roomcast_router_resets_total"
        )
        publisher = SeqPublisher(pub_sdk, rooms).start()
        await publisher.flowing()
        offset = victim.proc.log_size()
        stopped_at = time.monotonic()
        os.kill(victim.proc.popen.pid, signal.SIGSTOP)
        try:
            present = fleet.on(gws[0].name)

            async def expired() -> bool:
                counts = await asyncio.gather(*(sdk.sockets.count(r) for r in rooms))
                return all(
                    n == len(fleet.members(r, gws[0].name))
                    for r, n in zip(rooms, counts, strict=True)
                )

            await poll(expired, 10 * GATEWAY_TIMEOUT * T, 0.02, what="the router expiring it")
            expiry_s = time.monotonic() - stopped_at
            # The fault's duration, not a wait for state: hold the partition until a heartbeat
            # past the expiry.
            await asyncio.sleep(HEARTBEAT)
        finally:
            os.kill(victim.proc.popen.pid, signal.SIGCONT)
        resumed_at = time.monotonic()

        async def resynced() -> bool:
            m = await gw_metrics(victim)
            return m.get("roomcast_gateway_resyncs_total") > before.get(
                "roomcast_gateway_resyncs_total"
            )

        await poll(resynced, 20 * T, 0.02, what="the partitioned gateway resyncing")
        await poll(lambda: exact_soon(sdk, fleet, rooms), 20 * T, 0.02, what="exact membership")
        resync_s = time.monotonic() - resumed_at
        await publisher.stop()
        assert await readyz(victim) == 200
        rm = await asyncio.to_thread(router_metrics, router)
        resets = rm.get("roomcast_router_resets_total") - resets_before
        told = first_log_line(
            victim.proc, r"router link down \((router reset|router silent)", offset
        )
        assert told is not None, victim.proc.log_tail()
        assert not fleet.closed(), dict(fleet.closed())
        await broadcast_reaches(sdk, fleet, fleet.clients, rooms, 1)
        victims = fleet.on(victim.name)
        return {
            "gateway_timeout_s": GATEWAY_TIMEOUT,
            "stop_to_expired_s": round(expiry_s, 3),
            "sigcont_to_resynced_exact_s": round(resync_s, 3),
            "router_resets_sent": resets,
            "how_the_gateway_learned": "reset" if "router reset" in told else "router silent",
            "messages_lost_at_partitioned_clients": publisher.lost(victims),
            "messages_lost_at_other_clients": publisher.lost(present),
        }
    finally:
        await sdk.close()
        await pub_sdk.close()
        await fleet.close()


# --------------------------------------------------------------------------- (d) HWM overflow


@pytest.mark.timeout(240)
def test_fanout_hwm_overflow_is_counted_and_resynced() -> None:
    """A stalled gateway overflows its pipe at the router (--fanout-hwm 10): the router counts
    the drops, the gateway counts the gap and resyncs, the clients count what they missed; the
    other gateway is not disturbed (beats keep reaching it)."""
    # A long gateway timeout: the stall must overflow the pipe, not expire the gateway.
    router, gws = _small_cluster("--fanout-hwm", "10", "--gateway-timeout", "60")
    with processes(router, *(g.proc for g in gws)):
        figures = asyncio.run(_overflow(router, gws))
        stop_clean([*(g.proc for g in gws), router])
    record("fanout_hwm_overflow", figures)


async def _overflow(router: Proc, gws: list[Gw]) -> dict[str, Any]:
    burst_room = f"burst-{uuid.uuid4().hex[:8]}"
    fleet = Fleet()
    sdk = SdkCluster(router.info["commands"], timeout=10 * T)
    healthy, victim = gws
    try:
        # The burst room's members are on the victim only; a few clients on the healthy one.
        victims = await fleet.open([victim], 3, [burst_room])
        others_room = f"calm-{uuid.uuid4().hex[:8]}"
        await fleet.open([healthy], 3, [others_room])
        rooms = [burst_room, others_room]
        assert not await check_exact(sdk, fleet, rooms)
        g_before = await gw_metrics(victim)
        h_before = await gw_metrics(healthy)
        r_before = await asyncio.to_thread(router_metrics, router)
        accepted: dict[int, int] = {}
        pad = "x" * 1000
        seq = 0

        def note(s: int, fut: asyncio.Future[int]) -> None:
            if fut.exception() is None:
                accepted[s] = fut.result()

        async def burst(n: int) -> None:
            nonlocal seq
            window: set[asyncio.Future[int]] = set()
            for _ in range(n):
                seq += 1
                fut = asyncio.ensure_future(
                    sdk.sockets.broadcast(burst_room, "seq", stamp(seq, pad))
                )
                fut.add_done_callback(functools.partial(note, seq))
                window.add(fut)
                if len(window) >= 256:
                    _, window = await asyncio.wait(window, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.gather(*window)

        os.kill(victim.proc.popen.pid, signal.SIGSTOP)
        try:

            async def dropped() -> float:
                rm = await asyncio.to_thread(router_metrics, router)
                return rm.get("roomcast_router_fanout_dropped_total") - r_before.get(
                    "roomcast_router_fanout_dropped_total"
                )

            sent_to_overflow = 0
            while not await dropped():
                assert sent_to_overflow < 200_000, "the router never dropped anything"
                await burst(1000)
                sent_to_overflow += 1000
            overflowed_at = time.monotonic()
            await burst(200)  # a few more while the pipe is full
            # Stay stalled until past the healthy gateway's router timeout (the fault's duration,
            # not a wait for state): its beats must go on meanwhile.
            until = overflowed_at + ROUTER_TIMEOUT + 2 * HEARTBEAT
            while time.monotonic() < until:
                await asyncio.sleep(0.1)
            assert await readyz(healthy) == 200, "the healthy gateway lost the router"
        finally:
            os.kill(victim.proc.popen.pid, signal.SIGCONT)
        resumed_at = time.monotonic()

        # The gap shows with the next message on the victim's topic: keep publishing.
        async def gap_seen() -> bool:
            await burst(1)
            m = await gw_metrics(victim)
            return m.get("roomcast_gateway_lost_total") > g_before.get(
                "roomcast_gateway_lost_total"
            )

        await poll(gap_seen, 30 * T, 0.05, what="the victim counting a sequence gap")

        async def resynced() -> bool:
            m = await gw_metrics(victim)
            return m.get("roomcast_gateway_resyncs_total") > g_before.get(
                "roomcast_gateway_resyncs_total"
            )

        await poll(resynced, 30 * T, 0.05, what="the victim resyncing after the gap")
        await poll(lambda: exact_soon(sdk, fleet, rooms), 20 * T, 0.05, what="exact membership")
        recovered_s = time.monotonic() - resumed_at
        await broadcast_reaches(sdk, fleet, fleet.clients, rooms, 1)

        rm = await asyncio.to_thread(router_metrics, router)
        gm = await gw_metrics(victim)
        hm = await gw_metrics(healthy)
        router_dropped = rm.get("roomcast_router_fanout_dropped_total") - r_before.get(
            "roomcast_router_fanout_dropped_total"
        )
        gateway_lost = gm.get("roomcast_gateway_lost_total") - g_before.get(
            "roomcast_gateway_lost_total"
        )
        acc = set(accepted)
        missed = [len(acc - set(c.parser.seqs)) for c in victims]
        slow = gm.get("roomcast_gateway_disconnects_total", reason="slow_consumer")
        assert router_dropped > 0 and gateway_lost > 0
        # No silent loss: what each client missed is what the router dropped at the HWM plus
        # what the gateway discarded after the gap until its resync (both counted). The
        # gateway's count is the first gap plus that discarded rest: at most what a client
        # missed.
        for m in missed:
            assert gateway_lost <= m <= router_dropped + gateway_lost, (
                m,
                router_dropped,
                gateway_lost,
            )
        assert not fleet.closed(), dict(fleet.closed())
        # The healthy gateway never lost the router while the victim's pipe was full.
        assert hm.get("roomcast_gateway_router_timeouts_total") == h_before.get(
            "roomcast_gateway_router_timeouts_total"
        )
        assert hm.get("roomcast_gateway_lost_total") == h_before.get("roomcast_gateway_lost_total")
        return {
            "fanout_hwm_messages": 10,
            "burst_payload_bytes": len(pad),
            "published_until_first_drop": sent_to_overflow,
            "published": seq,
            "accepted": len(acc),
            "accepted_to_no_gateway": sum(1 for n in accepted.values() if n == 0),
            "router_fanout_dropped": router_dropped,
            "gateway_lost_counted": gateway_lost,
            "client_missed_each": missed,
            "slow_consumer_closes": slow,
            "sigcont_to_resynced_exact_s": round(recovered_s, 3),
        }
    finally:
        await sdk.close()
        await fleet.close()
