"""The bench's other scenarios: ``consistency``, ``memory``, ``rooms`` and ``connect``.

* consistency: one socket on gateway B; K times, SDK process 1 joins it to a fresh room and, as
  soon as that join returned, SDK process 2 broadcasts to the room (the bench relays between
  them); the percentage of the K broadcasts the socket received (architecture §5.1: must be 100).
* memory: RSS of one gateway per idle connection, (RSS at N - RSS before) / N, cumulatively at
  each requested N (and of the baseline the same way, with ``--baseline``: Tornado's floor).
* rooms: S sockets, each joining a personal room and a group of ``--group-size``; a publisher
  broadcasts to the groups round-robin (burst, then a fixed-rate run).
* connect: an avalanche of N connects, each followed by a join; time from connect to joined.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import secrets
import time
from typing import Any

from roomcast.bench.common import (
    BenchError,
    Options,
    Progress,
    latency_summary,
    percentile,
    ratio,
)
from roomcast.bench.fanout import derive_rate
from roomcast.bench.procs import Child, Fleet
from roomcast.bench.runner import Load, cpu_delta, cpu_snapshot, foreign_cpu, settle_rss

__all__ = ["run_connect", "run_consistency", "run_memory", "run_rooms"]


def _timing(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {
        "p50_ms": round(percentile(s, 50), 3),
        "p95_ms": round(percentile(s, 95), 3),
        "p99_ms": round(percentile(s, 99), 3),
        "max_ms": round(s[-1], 3) if s else 0.0,
    }


# --- consistency -------------------------------------------------------------------------------


async def run_consistency(
    opts: Options,
    iterations: int,
    progress: Progress,
    log_dir: pathlib.Path,
    profile_dir: pathlib.Path | None,
) -> dict[str, Any]:
    timeout = opts.phase_timeout_s
    async with Fleet(log_dir, profile_dir) as fleet:
        servers = await fleet.roomcast(max(2, opts.gateways), 60.0)
        client, sdk1, sdk2 = await fleet.agents(["clients-0", "sdk-1", "sdk-2"], 60.0)
        target = servers.commands
        gateway_b = servers.ws_urls()[1]
        load = Load(fleet, servers.all, [client], None, opts, progress, "consistency")
        conn = await load.connect([gateway_b], 1, [], record=True, want_ids=True, sample_every=1)
        if conn["connected"] != 1:
            raise BenchError(f"consistency: the client on gateway B failed: {conn['errors']}")
        sid = conn["ids"][0]
        await client.call("arm", 30.0, expect=iterations)
        for sdk in (sdk1, sdk2):  # connect both SDKs before the clock starts
            await sdk.call("sdk", 30.0, target=target, op="count", rooms=["x"], timeout=10.0)
        tag = secrets.token_hex(4)
        previous: list[str] = []
        started = time.monotonic()
        deadline = started + timeout
        done = 0
        for i in range(iterations):
            if time.monotonic() > deadline:
                break
            room = f"consistency-{tag}-{i}"
            await sdk1.call(
                "sdk", 30.0, target=target, op="join", sockets=[sid], rooms=[room],
                leave=previous, timeout=10.0,
            )  # fmt: skip
            await sdk2.call(
                "sdk", 30.0, target=target, op="broadcast", rooms=[room], seq=i,
                payload_bytes=opts.payload_bytes, timeout=10.0,
            )  # fmt: skip
            previous = [room]  # a socket may be in 1,000 rooms: leave each one behind
            done += 1
            if i % 50 == 0:
                progress.say(f"consistency: {i + 1}/{iterations} join+broadcast pairs")
        loop_s = time.monotonic() - started
        stall_deadline = time.monotonic() + opts.stall_s
        while time.monotonic() < stall_deadline:
            if await load.progress_total() >= done:
                break
            await asyncio.sleep(0.05)
        got = await client.call("collect", 60.0)
        await load.disconnect()
    seqs: list[int] = got["seqs"]
    unique = set(seqs)
    received = len(unique & set(range(done)))
    missing = sorted(set(range(done)) - unique)
    result = {
        "iterations": done,
        "received": received,
        "received_percent": round(100.0 * received / done, 3) if done else 0.0,
        "missing": missing[:50],
        "duplicates": len(seqs) - len(unique),
        "order_violations": got["order_violations"],
        "pairs_per_s": round(done / loop_s, 1) if loop_s > 0 else None,
        "latency": latency_summary(got["latencies_ns"]),
        "exit_codes": fleet.exit_codes,
    }
    progress.done(
        f"consistency: {received}/{done} received ({result['received_percent']}%), "
        f"{result['duplicates']} duplicates"
    )
    return result


# --- memory ------------------------------------------------------------------------------------


async def run_memory(
    opts: Options,
    levels: list[int],
    with_baseline: bool,
    progress: Progress,
    log_dir: pathlib.Path,
    profile_dir: pathlib.Path | None,
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    async with Fleet(log_dir, profile_dir) as fleet:
        servers = await fleet.roomcast(1, 60.0)
        result["roomcast"] = await _memory_levels(
            fleet, servers.gateways[0], servers.all, servers.ws_urls(), levels, opts, progress
        )
    result["exit_codes"] = {"roomcast": fleet.exit_codes}
    if with_baseline:
        async with Fleet(log_dir, profile_dir, "baseline") as fleet:
            base = await fleet.baseline(60.0)
            url = str(base.info["public"]).replace("http://", "ws://", 1) + "/ws"
            result["baseline"] = await _memory_levels(
                fleet, base, [base], [url], levels, opts, progress
            )
        result["exit_codes"]["baseline"] = fleet.exit_codes
        ours, theirs = result["roomcast"]["levels"], result["baseline"]["levels"]
        result["ratio"] = [
            {
                "connections": a["connections"],
                "kib_per_connection": ratio(a["kib_per_connection"], b["kib_per_connection"]),
            }
            for a, b in zip(ours, theirs, strict=True)
        ]
    return result


async def _memory_levels(
    fleet: Fleet,
    server: Child,
    servers: list[Child],
    urls: list[str],
    levels: list[int],
    opts: Options,
    progress: Progress,
) -> dict[str, Any]:
    names = [f"clients-{k}" for k in range(opts.client_procs)]
    agents = await fleet.agents(names, 60.0)
    label = f"memory {server.role}"
    load = Load(fleet, servers, agents, None, opts, progress, label)
    # Warm up: the first connections load code and grow pools that later ones reuse.
    await load.connect(urls, 200, [], concurrency=200)
    await load.disconnect()
    before = await settle_rss(server.pid)
    current = 0
    rows = []
    for level in sorted(set(levels)):
        conn = await load.connect(
            urls, level - current, [], start=current, concurrency=500, sample_every=1 << 30
        )
        if conn["failed"]:
            raise BenchError(f"{label}: {conn['failed']} connections failed at {level}")
        current = level
        rss = await settle_rss(server.pid)
        rows.append(
            {
                "connections": level,
                "rss_kib": rss,
                "kib_per_connection": round((rss - before) / level, 2),
                "fds": len(os.listdir(f"/proc/{server.pid}/fd")),
                "connect_wall_s": conn["wall_s"],
            }
        )
        progress.done(
            f"{label}: {level} idle connections: RSS {rss} KiB "
            f"({rows[-1]['kib_per_connection']} KiB per connection)"
        )
    await load.disconnect()
    return {"process": server.name, "rss_before_kib": before, "levels": rows}


# --- rooms -------------------------------------------------------------------------------------


async def run_rooms(
    opts: Options,
    sockets: int,
    group_size: int,
    messages: int,
    rate: float | None,
    duration_s: float,
    progress: Progress,
    log_dir: pathlib.Path,
    profile_dir: pathlib.Path | None,
) -> dict[str, Any]:
    groups = -(-sockets // group_size)
    sizes = [min(group_size, sockets - g * group_size) for g in range(groups)]

    def expected(first: int, count: int) -> int:
        return sum(sizes[(first + j) % groups] for j in range(count))

    async with Fleet(log_dir, profile_dir) as fleet:
        servers = await fleet.roomcast(opts.gateways, 60.0)
        names = [f"clients-{k}" for k in range(opts.client_procs)]
        agents = await fleet.agents([*names, "publisher"], 60.0)
        load = Load(fleet, servers.all, agents[:-1], agents[-1], opts, progress, "rooms")
        conn = await load.connect(
            servers.ws_urls(), sockets, ["p{i}", "g{g}"], group_size=group_size, concurrency=500
        )
        if conn["failed"]:
            raise BenchError(f"rooms: {conn['failed']} of {sockets} clients failed")
        publish: dict[str, Any] = {"mode": "sdk", "target": servers.commands, "cycle": groups}
        publish |= {"cycle_format": "g{g}", "payload_bytes": opts.payload_bytes}
        warm = min(groups, 100)
        await load.deliver("warm-up", expected(0, warm), publish | {"count": warm}, report=False)
        # Each phase starts its cycle at group 0 again (cycle index = message index).
        burst = await load.deliver(
            "burst", expected(0, messages), publish | {"count": messages, "seq_start": warm}
        )
        result: dict[str, Any] = {
            "sockets": sockets,
            "groups": groups,
            "group_size": group_size,
            "connect_wall_s": conn["wall_s"],
            "burst": burst,
        }
        if duration_s > 0:
            if rate is None:
                rate = derive_rate(burst, group_size)
            count = max(1, round(rate * duration_s))
            result["rate"] = await load.deliver(
                "rate",
                expected(0, count),
                publish | {"count": count, "rate": rate, "seq_start": warm + messages},
            )
            result["rate"]["rate_msgs_per_s"] = rate
        await load.disconnect()
    result["exit_codes"] = fleet.exit_codes
    return result


# --- connect -----------------------------------------------------------------------------------


async def run_connect(
    opts: Options,
    clients: int,
    progress: Progress,
    log_dir: pathlib.Path,
    profile_dir: pathlib.Path | None,
) -> dict[str, Any]:
    room = "bench-connect"
    async with Fleet(log_dir, profile_dir) as fleet:
        servers = await fleet.roomcast(opts.gateways, 60.0)
        names = [f"clients-{k}" for k in range(opts.client_procs)]
        agents = await fleet.agents([*names, "publisher"], 60.0)
        load = Load(fleet, servers.all, agents[:-1], agents[-1], opts, progress, "connect")
        everyone = [*servers.all, *agents]
        before = cpu_snapshot(everyone)
        conn = await load.connect(servers.ws_urls(), clients, [room], concurrency=0)
        after = cpu_snapshot(everyone)
        count = await agents[-1].call(
            "sdk", 30.0, target=servers.commands, op="count", rooms=[room], timeout=10.0
        )
        await load.disconnect()
    cpu = {name: cpu_delta(before, after, name)["cpu_s"] for name in before if name != "*"}
    result = {
        "clients": clients,
        "connected": conn["connected"],
        "failed": conn["failed"],
        "errors": conn["errors"],
        "room_count": count["result"],
        "wall_s": conn["wall_s"],
        "connects_per_s": round(conn["connected"] / conn["wall_s"], 1) if conn["wall_s"] else None,
        "welcome": _timing(conn["welcome_ms"]),
        "joined": _timing(conn["joined_ms"]),
        "cpu_s": cpu,
        "machine": foreign_cpu(before, after),
        "exit_codes": fleet.exit_codes,
    }
    progress.done(
        f"connect: {conn['connected']}/{clients} joined in {conn['wall_s']} s, "
        f"p50 {result['joined']['p50_ms']} ms, p95 {result['joined']['p95_ms']} ms"
    )
    return result
