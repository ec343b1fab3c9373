#!/usr/bin/env python3
"""Socket.IO deliveries to long-polling clients against WebSocket clients, in the same run.

    .venv/bin/python scripts/bench_polling.py [--clients 200] [--messages 500] [--rounds 2]
                                             [--rate MSGS_PER_S]

Starts a router and one gateway (the test harness's processes), then, for each transport in
turn, connects ``--clients`` raw Engine.IO v4 clients (aiohttp long-polling, or websockets),
joins them to one room through the SDK and publishes ``--messages`` broadcasts to it, as fast
as the SDK sends them. It reports deliveries/s (messages x clients, from the first publish to
the last receipt) and the gateway's CPU time per delivery (utime + stime from /proc). With
``--rate`` the publishes are paced, so that each poll carries about one message (the costly
case for polling: one HTTP request and response per delivery). Clients
and servers share the machine, so the figures compare the transports; they are not capacity.
Needs the test extra (aiohttp, websockets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import sys
import time
import uuid
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import aiohttp
import websockets

from gateway.eio_polling import decode_payload
from roomcast import SyncCluster
from tests.integration.harness import start_cluster

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


class Counter:
    def __init__(self, total: int) -> None:
        self.total = total
        self.got = 0
        self.done = asyncio.Event()
        self.last = 0.0

    def add(self, n: int) -> None:
        self.got += n
        if self.got >= self.total:
            self.last = time.perf_counter()
            self.done.set()


async def polling_client(base: str, sids: list[str], counter: Counter, stop: asyncio.Event) -> None:
    url = base + "/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            (packet,) = decode_payload(4, await resp.read())
        sid = json.loads(packet[1:])["sid"]
        url += f"&sid={sid}"
        async with http.post(url, data=b"40") as resp:
            await resp.read()
        connected = False
        while not stop.is_set():
            async with http.get(url) as resp:
                body = await resp.read()
            packets = decode_payload(4, body)
            events = sum(1 for p in packets if p.startswith("42"))
            if events:
                counter.add(events)
            if "2" in packets:
                async with http.post(url, data=b"3") as resp:
                    await resp.read()
            if not connected and any(p.startswith("40") for p in packets):
                connected = True
                sids.append(sid)


async def ws_client(base: str, sids: list[str], counter: Counter, stop: asyncio.Event) -> None:
    url = base.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()  # the open packet
        await ws.send("40")
        while not stop.is_set():
            try:
                packet = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            if isinstance(packet, bytes):
                continue
            if packet.startswith("42"):
                counter.add(1)
            elif packet == "2":
                await ws.send("3")
            elif packet.startswith("40"):
                sids.append(json.loads(packet[2:])["sid"])


async def run_one(
    transport: str, base: str, sdk: Any, pid: int, clients: int, messages: int, rate: float
) -> dict[str, Any]:
    counter = Counter(clients * messages)
    stop = asyncio.Event()
    sids: list[str] = []
    make = polling_client if transport == "polling" else ws_client
    tasks = [asyncio.create_task(make(base, sids, counter, stop)) for _ in range(clients)]
    deadline = time.monotonic() + 60
    while len(sids) < clients and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(sids) == clients, f"{len(sids)} of {clients} {transport} clients connected"
    room = f"bench-{uuid.uuid4().hex[:8]}"
    for sid in sids:
        await asyncio.to_thread(sdk.sockets.join, sid, room)
    data = {"text": "x" * 100}
    cpu0 = cpu_seconds(pid)
    start = time.perf_counter()
    for n in range(messages):
        await asyncio.to_thread(sdk.sockets.broadcast, room, "bench", data)
        if rate:
            await asyncio.sleep(max(0.0, start + (n + 1) / rate - time.perf_counter()))
    await asyncio.wait_for(counter.done.wait(), 120)
    cpu = cpu_seconds(pid) - cpu0
    elapsed = counter.last - start
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    deliveries = clients * messages
    return {
        "transport": transport,
        "rate": rate or "max",
        "clients": clients,
        "messages": messages,
        "deliveries": deliveries,
        "seconds": round(elapsed, 3),
        "deliveries_per_s": round(deliveries / elapsed),
        "gateway_cpu_s": round(cpu, 3),
        "gateway_cpu_us_per_delivery": round(cpu / deliveries * 1e6, 2),
    }


async def main_async(args: argparse.Namespace) -> None:
    cluster = start_cluster(gateways=1)
    sdk = SyncCluster(cluster.commands)
    try:
        gateway = cluster.gateways[0]
        pid = gateway.proc.popen.pid
        for _ in range(args.rounds):
            for transport in ("websocket", "polling"):
                result = await run_one(
                    transport, gateway.public, sdk, pid, args.clients, args.messages, args.rate
                )
                print(json.dumps(result), flush=True)
    finally:
        sdk.close()
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s (0: unpaced)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
