"""``roomcast bench router``: the router process alone under a publish flood.

A real router process (``python -m router``) with stand-in gateways and a publisher on raw
ZeroMQ sockets in this process, so that the figure is the router's own: no Tornado, no
WebSocket clients. Each stand-in gateway says Hello, resyncs one socket into the one room, and
subscribes to its topic; a publish to that room therefore goes to every stand-in gateway (the
"targets"). For each number of targets it measures:

* **burst**: ``--publishes`` Publish commands sent back to back (each with a ref, as the SDK
  sends them, so the router also answers each); publishes/s is their number over the time from
  the first send to the last delivery on the observing gateway, and router CPU per publish is
  the router process's CPU time over the burst divided by the publishes;
* **steady**: ``--rate`` publishes/s for ``--duration`` seconds: router CPU per publish.

Every stand-in gateway must receive every publish once (checked after each phase; the other
gateways' messages wait in ZeroMQ's queues until then, so reading them costs the measurement
nothing). Loss is reported, never hidden.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import threading
import time
from typing import Any

import zmq

from roomcast.bench.common import BenchError, Options, Progress
from roomcast.bench.procs import Child, Fleet, cpu_times
from roomcast.core import wire

__all__ = ["RouterOptions", "run_router"]

_ROOM = "bench-router"
_SETUP_TIMEOUT_S = 10.0
_HEARTBEAT_S = 1.0
_HWM = 10_000_000  # queues that never drop within a bounded run (memory is what bounds it)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RouterOptions:
    targets: tuple[int, ...] = (1, 2, 10)
    publishes: int = 100_000
    rate: float = 2000.0
    duration_s: float = 5.0


class _StandIn:
    """A stand-in gateway: a DEALER with a gateway's routing id and a SUB on its topic."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], router: dict[str, Any], n: int):
        self.node_id = f"bench{n}"
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.ROUTING_ID, b"gw:" + self.node_id.encode())
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, _HWM)
        self.sub.setsockopt(zmq.SUBSCRIBE, wire.gateway_topic(self.node_id))
        self.sub.connect(router["fanout"])
        self.dealer.connect(router["commands"])
        self.received = 0

    def join(self) -> None:
        """Hello until acknowledged, then resync one socket into the room."""
        deadline = time.monotonic() + _SETUP_TIMEOUT_S
        hello = wire.encode(wire.Hello(ref=1, node_id=self.node_id, role=wire.Role.GATEWAY))
        resync = wire.Resync(
            ref=2,
            sockets=(wire.SocketRooms(socket=f"{self.node_id}-s", rooms=(_ROOM,)),),
            last=True,
        )
        stage = "hello"
        while stage != "ready":
            if time.monotonic() > deadline:
                raise BenchError(f"stand-in gateway {self.node_id}: no answer to its {stage}")
            if stage == "hello":
                self.dealer.send(hello)
            if not self.sub.poll(100):
                continue
            _, _, body = wire.split_frames(self.sub.recv_multipart())
            for msg in _unbundle(body):
                if stage == "hello" and isinstance(msg, wire.HelloAck):
                    stage = "resync"
                    self.dealer.send(wire.encode(resync))
                elif stage == "resync" and isinstance(msg, wire.Reply) and msg.ref == 2:
                    stage = "ready"

    def drain(self, want: int, timeout: float) -> int:
        """Read deliveries until ``want`` arrived in all or nothing came for ``timeout``."""
        while self.received < want and self.sub.poll(int(timeout * 1000)):
            parts = self.sub.recv_multipart()
            self.received += sum(m.KIND == "deliver" for m in _unbundle(parts[-1]))
        return self.received

    def close(self) -> None:
        self.dealer.close()
        self.sub.close()


def _unbundle(body: bytes) -> list[wire.Message]:
    """The messages in one message of a gateway's stream (a Bundle holds several)."""
    msg = wire.decode(body)
    if isinstance(msg, wire.Bundle):
        return [wire.decode(inner) for inner in msg.bodies]
    return [msg]


def _flood(sock: zmq.Socket[bytes], bodies: list[bytes], rate: float | None) -> float:
    """Send every body (paced at ``rate``/s if given); returns when the first one left."""
    started = time.monotonic()
    for i, body in enumerate(bodies):
        if rate is not None:
            due = started + i / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        sock.send(body)
    return started


def _bodies(count: int, start: int, payload: bytes) -> list[bytes]:
    return [
        wire.encode(wire.Publish(ref=start + i, rooms=(_ROOM,), event="tick", data=payload))
        for i in range(count)
    ]


def _phase(
    router: Child,
    gateways: list[_StandIn],
    publisher: zmq.Socket[bytes],
    bodies: list[bytes],
    rate: float | None,
    stall_s: float,
) -> dict[str, Any]:
    want = [g.received + len(bodies) for g in gateways]
    observer = gateways[0]
    replies = 0

    def count_replies() -> None:
        nonlocal replies
        while replies < len(bodies) and publisher.poll(int(stall_s * 1000)):
            publisher.recv()
            replies += 1

    cpu0 = cpu_times(router.pid)[2]
    reader = threading.Thread(target=count_replies, name="replies", daemon=True)
    reader.start()
    sent_at = _flood(publisher, bodies, rate)
    observer.drain(want[0], stall_s)
    finished = time.monotonic()
    cpu = cpu_times(router.pid)[2] - cpu0
    reader.join(stall_s + 1)
    for g, n in zip(gateways[1:], want[1:], strict=True):
        g.drain(n, stall_s)
    elapsed = finished - sent_at
    publishes = len(bodies)
    lost = sum(n - g.received for g, n in zip(gateways, want, strict=True))
    return {
        "publishes": publishes,
        "seconds": round(elapsed, 3),
        "publishes_per_s": round(publishes / elapsed) if elapsed > 0 else None,
        "router_cpu_s": round(cpu, 3),
        "router_cpu_us_per_publish": round(cpu / publishes * 1e6, 2),
        "replies": replies,
        "lost_deliveries": lost,
    }


async def run_router(
    opts: Options,
    ro: RouterOptions,
    progress: Progress,
    log_dir: pathlib.Path,
    profile_dir: pathlib.Path | None,
) -> dict[str, Any]:
    argv = ["--commands", "tcp://127.0.0.1:0", "--fanout", "tcp://127.0.0.1:0"]
    argv += ["--http-port", "0", "--log-level", "WARNING", "--fanout-hwm", str(_HWM)]
    async with Fleet(log_dir, profile_dir) as fleet:
        router = await fleet.server("router", "router", "router", argv, opts.phase_timeout_s)
        result = await asyncio.to_thread(_run, router, opts, ro, progress)
    result["exit_codes"] = fleet.exit_codes
    return result


def _run(router: Child, opts: Options, ro: RouterOptions, progress: Progress) -> dict[str, Any]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    payload = b'{"pad":"' + b"x" * max(0, opts.payload_bytes - 10) + b'"}'
    results: list[dict[str, Any]] = []
    gateways: list[_StandIn] = []
    publisher = ctx.socket(zmq.DEALER)
    publisher.setsockopt(zmq.LINGER, 0)
    publisher.setsockopt(zmq.SNDHWM, _HWM)
    publisher.setsockopt(zmq.RCVHWM, _HWM)
    publisher.connect(router.info["commands"])
    joined: list[_StandIn] = []  # the heartbeat thread's: each dealer is used by one thread
    stop = threading.Event()

    def beat() -> None:
        # Stand-in gateways heartbeat like real ones, or the router expires them mid-run.
        while not stop.wait(_HEARTBEAT_S):
            for g in list(joined):
                g.dealer.send(wire.encode(wire.Heartbeat(node_id=g.node_id)))

    beating = threading.Thread(target=beat, name="heartbeats", daemon=True)
    beating.start()
    try:
        ref = 0
        for targets in sorted(ro.targets):
            while len(gateways) < targets:
                g = _StandIn(ctx, router.info, len(gateways))
                g.join()
                gateways.append(g)
                joined.append(g)
            progress.say(f"router: burst of {ro.publishes} publishes to {targets} gateways")
            bodies = _bodies(ro.publishes, ref + 1, payload)
            ref += len(bodies)
            burst = _phase(router, gateways, publisher, bodies, None, opts.stall_s)
            row: dict[str, Any] = {"targets": targets, "burst": burst}
            if ro.duration_s > 0 and ro.rate > 0:
                count = int(ro.rate * ro.duration_s)
                progress.say(f"router: {ro.rate:g} publishes/s for {ro.duration_s:g}s")
                bodies = _bodies(count, ref + 1, payload)
                ref += len(bodies)
                row["steady"] = _phase(router, gateways, publisher, bodies, ro.rate, opts.stall_s)
                row["steady"]["rate"] = ro.rate
            results.append(row)
            progress.done(
                f"router, {targets} targets: {burst['publishes_per_s']} publishes/s, "
                f"{burst['router_cpu_us_per_publish']} µs CPU each"
            )
    finally:
        stop.set()
        beating.join()
        publisher.close()
        for g in gateways:
            g.close()
        ctx.term()
    return {"payload_bytes": opts.payload_bytes, "runs": results}
