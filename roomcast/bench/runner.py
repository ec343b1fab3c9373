"""One measured phase at a time: spread clients over agents, publish, wait, account, merge.

Owns :class:`Load`, the bench's view of a running load generator (client agents plus a
publisher agent) against some servers: :meth:`Load.connect` splits N clients over the agents,
:meth:`Load.deliver` runs one publishing phase and returns its figures (deliveries counted at the
clients, publish->receive latency, loss, CPU seconds and peak RSS of every process, the load
generator's own CPU). Every wait is bounded by the phase timeout, and a phase also ends when
nothing arrives for ``stall_s`` after the publisher finished (what is missing is then counted
as lost).
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from typing import Any

from roomcast.bench.common import BenchError, Options, Progress, latency_summary
from roomcast.bench.procs import (
    Agent,
    Child,
    Fleet,
    cpu_times,
    machine_busy_s,
    memory_kib,
    reset_peak,
)

__all__ = [
    "Load",
    "cpu_delta",
    "cpu_snapshot",
    "foreign_cpu",
    "merge_connects",
    "settle_rss",
]

_POLL_S = 0.25
_AGENT_SLACK_S = 15.0  # agents bound their own work by the phase timeout; the bench waits longer


def cpu_snapshot(children: list[Child]) -> dict[str, tuple[float, float, float]]:
    """CPU times of the children and the bench, and the machine's busy time (key ``*``)."""
    snap = {c.name: cpu_times(c.pid) for c in children}
    snap["bench"] = cpu_times(os.getpid())
    snap["*"] = (0.0, 0.0, machine_busy_s())
    return snap


def foreign_cpu(
    before: dict[str, tuple[float, float, float]], after: dict[str, tuple[float, float, float]]
) -> dict[str, float]:
    """The machine's busy CPU seconds over a phase, and how much of it was not the bench's.

    Other processes on a shared machine take CPU from the servers and the load generator; a
    large ``foreign_cpu_s`` means the phase's figures are not comparable with a quiet run.
    """
    busy = after["*"][2] - before["*"][2]
    ours = sum(cpu_delta(before, after, k)["cpu_s"] for k in before if k != "*")
    return {"busy_cpu_s": round(busy, 2), "foreign_cpu_s": round(max(0.0, busy - ours), 2)}


def cpu_delta(
    before: dict[str, tuple[float, float, float]],
    after: dict[str, tuple[float, float, float]],
    name: str,
) -> dict[str, float]:
    """CPU seconds of ``name`` between two snapshots (total precise, user/sys in 10 ms ticks)."""
    u0, s0, t0 = before.get(name, (0.0, 0.0, 0.0))
    u1, s1, t1 = after.get(name, (0.0, 0.0, 0.0))
    return {
        "cpu_s": round(max(0.0, t1 - t0), 4),
        "user_s": round(max(0.0, u1 - u0), 3),
        "sys_s": round(max(0.0, s1 - s0), 3),
    }


def merge_connects(answers: list[dict[str, Any]]) -> dict[str, Any]:
    errors: collections.Counter[str] = collections.Counter()
    for a in answers:
        errors.update(a.get("errors", {}))
    return {
        "connected": sum(a["connected"] for a in answers),
        "failed": sum(a["failed"] for a in answers),
        "errors": dict(errors.most_common(5)),
        "welcome_ms": [x for a in answers for x in a["welcome_ms"]],
        "joined_ms": [x for a in answers for x in a["joined_ms"]],
        "ids": [x for a in answers for x in a["ids"]],
        "wall_s": max((a["wall_s"] for a in answers), default=0.0),
    }


class Load:
    """Client agents and a publisher agent driving one set of servers."""

    def __init__(
        self,
        fleet: Fleet,
        servers: list[Child],
        clients: list[Agent],
        publisher: Agent | None,
        opts: Options,
        progress: Progress,
        label: str,
    ) -> None:
        self.fleet = fleet
        self.servers = servers
        self.clients = clients
        self.publisher = publisher
        self.opts = opts
        self.progress = progress
        self.label = label
        self.connected = 0

    # --- connections ---------------------------------------------------------------------------

    async def connect(
        self,
        urls: list[str],
        count: int,
        rooms: list[str],
        *,
        start: int = 0,
        group_size: int = 10,
        record: bool = False,
        concurrency: int = 0,
        want_ids: bool = False,
        sample_every: int | None = None,
    ) -> dict[str, Any]:
        """Open ``count`` clients (global indices ``start``..), agent k taking the k-th slice."""
        timeout = self.opts.phase_timeout_s
        parts = len(self.clients)
        bounds = [start + count * k // parts for k in range(parts + 1)]
        self.progress.say(f"{self.label}: connecting {count} clients", force=True)
        answers = await asyncio.gather(
            *(
                agent.call(
                    "connect",
                    timeout + _AGENT_SLACK_S,
                    urls=urls,
                    start=bounds[k],
                    stop=bounds[k + 1],
                    rooms=rooms,
                    timeout=timeout,
                    group_size=group_size,
                    sample_every=sample_every or self.opts.sample_every,
                    record=record,
                    concurrency=concurrency,
                    want_ids=want_ids,
                )
                for k, agent in enumerate(self.clients)
            )
        )
        merged = merge_connects(answers)
        self.connected += merged["connected"]
        return merged

    async def disconnect(self) -> None:
        await asyncio.gather(*(a.call("disconnect", 30.0, timeout=5.0) for a in self.clients))
        self.connected = 0

    async def progress_total(self) -> int:
        answers = await asyncio.gather(*(a.call("progress", 30.0) for a in self.clients))
        return sum(int(a["events"]) for a in answers)

    # --- a publishing phase --------------------------------------------------------------------

    async def deliver(
        self,
        phase: str,
        expected: int,
        publish: dict[str, Any],
        *,
        report: bool = True,
        by_clients: bool = False,
        collect: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Arm the clients, publish, wait for ``expected`` deliveries (bounded), and account.

        ``by_clients``: the client agents publish (``chat_publish`` with ``publish`` as its
        arguments), not the publisher agent. ``collect``: more arguments of the agents'
        ``collect`` (the chat bench's plan, for the per-client verdict).
        """
        assert by_clients or self.publisher is not None
        opts = self.opts
        timeout = opts.phase_timeout_s
        everyone: list[Child] = [*self.servers, *self.clients]
        if self.publisher is not None:
            everyone.append(self.publisher)
        await asyncio.gather(*(a.call("arm", 30.0) for a in self.clients))
        for server in self.servers:
            reset_peak(server.pid)
        before = cpu_snapshot(everyone)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + timeout
        pub_task: asyncio.Future[dict[str, Any]]
        if by_clients:  # started now; the agents answer `progress` while they publish
            pub_task = loop.create_future()
            pub_task.set_result(await self._publish(publish, by_clients))
        else:
            pub_task = asyncio.create_task(self._publish(publish, by_clients))
        received = last_change_total = 0
        last_change = started
        sent: list[Any] = []
        try:
            while True:
                await asyncio.sleep(_POLL_S)
                self.fleet.check_alive()
                progress = await asyncio.gather(*(a.call("progress", 30.0) for a in self.clients))
                received = sum(int(a["events"]) for a in progress)
                sent = [a.get("published") for a in progress]
                now = loop.time()
                if received != last_change_total:
                    last_change_total, last_change = received, now
                pct = 100.0 * received / expected if expected else 100.0
                self.progress.say(
                    f"{self.label} {phase}: {received:,}/{expected:,} delivered ({pct:.1f}%), "
                    f"{now - started:.1f} s"
                )
                published = pub_task.done() and (not by_clients or all(x is not None for x in sent))
                if received >= expected and published:
                    break
                if now >= deadline:
                    break
                if published and now - last_change >= opts.stall_s:
                    break
            pub = await asyncio.wait_for(pub_task, _AGENT_SLACK_S + timeout)
            if by_clients:
                pub = await self._client_publishes(sent)
        finally:
            if not pub_task.done():
                pub_task.cancel()
        if received < expected:
            # One last look: the poll may have stopped just before the tail arrived.
            received = await self.progress_total()
        after = cpu_snapshot(everyone)
        answers = await asyncio.gather(
            *(a.call("collect", 60.0, **(collect or {})) for a in self.clients)
        )
        wall = loop.time() - started
        result = self._account(phase, expected, pub, answers, before, after, wall)
        if report:
            self.progress.done(_one_line(self.label, phase, result))
        return result

    async def _publish(self, publish: dict[str, Any], by_clients: bool) -> dict[str, Any]:
        """The publisher agent's run; or (``by_clients``) only start the client agents' runs:
        their summaries come with their ``progress`` answers, merged by the poll loop."""
        wait = self.opts.phase_timeout_s + _AGENT_SLACK_S
        timeout = self.opts.phase_timeout_s
        if not by_clients:
            assert self.publisher is not None
            return await self.publisher.call("publish", wait, timeout=timeout, **publish)
        await asyncio.gather(
            *(a.call("chat_publish", 30.0, timeout=timeout, **publish) for a in self.clients)
        )
        return {}

    async def _client_publishes(self, sent: list[Any]) -> dict[str, Any]:
        """Merge the client agents' publish summaries (waiting, bounded, for the last ones)."""
        deadline = asyncio.get_running_loop().time() + _AGENT_SLACK_S
        while not all(x is not None for x in sent):
            if asyncio.get_running_loop().time() > deadline:
                raise BenchError(f"{self.label}: the client publishers did not finish")
            await asyncio.sleep(_POLL_S)
            answers = await asyncio.gather(*(a.call("progress", 30.0) for a in self.clients))
            sent = [a.get("published") for a in answers]
        errors: collections.Counter[str] = collections.Counter()
        for a in sent:
            errors.update(a["errors"])
        active = [a for a in sent if a["sent"]]
        return {
            "sent": sum(int(a["sent"]) for a in sent),
            "first_ns": min((int(a["first_ns"]) for a in active), default=0),
            "last_ns": max((int(a["last_ns"]) for a in active), default=0),
            "errors": dict(errors),
        }

    def _account(
        self,
        phase: str,
        expected: int,
        pub: dict[str, Any],
        answers: list[dict[str, Any]],
        before: dict[str, tuple[float, float, float]],
        after: dict[str, tuple[float, float, float]],
        wall: float,
    ) -> dict[str, Any]:
        received = sum(int(a["events"]) for a in answers)
        last_ns = max((int(a["last_ns"]) for a in answers if a["events"]), default=0)
        first_ns = int(pub["first_ns"])
        span_s = (last_ns - first_ns) / 1e9 if last_ns > first_ns else 0.0
        pub_span_s = (int(pub["last_ns"]) - first_ns) / 1e9
        latencies = [x for a in answers for x in a["latencies_ns"]]
        processes: dict[str, Any] = {}
        server_cpu = 0.0
        for server in self.servers:
            entry: dict[str, Any] = cpu_delta(before, after, server.name)
            mem = memory_kib(server.pid)
            entry["rss_kib"] = mem.get("VmRSS")
            entry["peak_rss_kib"] = mem.get("VmHWM")
            processes[server.name] = entry
            server_cpu += entry["cpu_s"]
        loadgen: dict[str, Any] = {}
        for agent in [*self.clients, *([self.publisher] if self.publisher else [])]:
            loadgen[agent.name] = cpu_delta(before, after, agent.name)
        loadgen["bench"] = cpu_delta(before, after, "bench")
        loadgen_cpu = sum(v["cpu_s"] for v in loadgen.values())
        closed = sum(int(a["closed"]) for a in answers)
        codes: collections.Counter[str] = collections.Counter()
        for a in answers:
            codes.update(a["close_codes"])
        verdicts = [a["chat"] for a in answers if a.get("chat")]
        verified = {k: sum(int(v[k]) for v in verdicts) for k in verdicts[0]} if verdicts else None
        return {
            "phase": phase,
            "verified": verified,
            "error_frames": sum(int(a.get("error_frames", 0)) for a in answers),
            "published": int(pub["sent"]),
            "publish_errors": pub["errors"],
            "expected": expected,
            "received": received,
            "lost": max(0, expected - received),
            "extra": max(0, received - expected),
            "duration_s": round(span_s, 4),
            "delivered_msgs_per_s": round(received / span_s, 1) if span_s > 0 else None,
            "published_msgs_per_s": (
                round(int(pub["sent"]) / pub_span_s, 1) if pub_span_s > 0 else None
            ),
            "latency": latency_summary(latencies),
            "order_violations": sum(int(a["order_violations"]) for a in answers),
            "min_per_client": min((int(a["min_per_client"]) for a in answers), default=0),
            "clients_closed": closed,
            "close_codes": dict(codes),
            "server_cpu_s": round(server_cpu, 3),
            "cpu_us_per_delivery": round(server_cpu / received * 1e6, 3) if received else None,
            "processes": processes,
            "loadgen_cpu_s": round(loadgen_cpu, 3),
            "loadgen": loadgen,
            "machine": foreign_cpu(before, after) | {"loadavg_1m": round(os.getloadavg()[0], 2)},
            "wall_s": round(wall, 3),
        }


def _one_line(label: str, phase: str, r: dict[str, Any]) -> str:
    rate = r["delivered_msgs_per_s"]
    lat = r["latency"]
    return (
        f"{label} {phase}: {r['received']:,}/{r['expected']:,} delivered, lost {r['lost']}, "
        f"{(rate or 0):,.0f} msgs/s, p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, "
        f"server CPU {r['server_cpu_s']} s, generator CPU {r['loadgen_cpu_s']} s"
    )


async def settle_rss(pid: int, timeout: float = 5.0) -> int:
    """VmRSS (KiB) once two samples 0.25 s apart differ by under 64 KiB (bounded)."""
    deadline = time.monotonic() + timeout
    last = memory_kib(pid).get("VmRSS", 0)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        now = memory_kib(pid).get("VmRSS", 0)
        if abs(now - last) < 64:
            return now
        last = now
    if not last:
        raise BenchError(f"cannot read the memory of process {pid}")
    return last
