"""``roomcast bench chat``: many small rooms, each message reaching a handful of sockets.

S sockets in rooms of K (``g0``, ``g1``, ...), spread over the gateways so that every room spans
all of them (client ``i`` is on gateway ``i % G``, in room ``i // K``; see
:mod:`roomcast.bench.chatplan`). For each target (the plain-Tornado room map of
:mod:`roomcast.bench.baseline` first with ``--baseline``, then roomcast) on fresh processes, and
for each publishing mode:

* ``client``: members of each room publish to it with the ``/ws`` ``broadcast`` op, echo off,
  so each publish reaches K - 1 sockets;
* ``sdk``: one ``roomcast.Cluster`` publishes to each room in turn (K deliveries each); against
  the baseline, which has no SDK, a ``/ws`` client outside the rooms publishes instead;

it runs a burst of ``--publishes`` and then ``--rate`` publishes/s for ``--duration`` seconds
(both targets at the same rate). Every client records the sequence number of every push, and
the agents check them against the plan: lost, duplicated, misrouted and out-of-order (per
publisher) deliveries are counted, never inferred from totals. Each phase reports deliveries/s,
publish->receive latency, CPU per publish of each server process (router; each gateway, which
every publish crosses) and server CPU per delivery; with the baseline, roomcast/baseline ratios.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable
from typing import Any

from roomcast.bench.chatplan import ChatPlan
from roomcast.bench.common import BenchError, Options, Progress, ratio
from roomcast.bench.fanout import profile_subdir
from roomcast.bench.procs import Fleet
from roomcast.bench.runner import Load

__all__ = ["MODES", "ChatOptions", "chat_smoke_verdict", "run_chat"]

MODES = ("client", "sdk")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChatOptions:
    sockets: int = 1000
    room_size: int = 10
    publishers_per_room: int = 1
    publishes: int = 20_000  # in each burst
    rate: float = 2000.0  # publishes/s of each fixed-rate run
    duration_s: float = 5.0  # of each fixed-rate run; 0 skips them
    modes: tuple[str, ...] = MODES
    baseline: bool = False
    window: int = 256  # SDK broadcasts in flight during a burst

    @property
    def plan(self) -> ChatPlan:
        return ChatPlan(
            sockets=self.sockets,
            room_size=self.room_size,
            publishers_per_room=self.publishers_per_room,
        )


def _plan_args(plan: ChatPlan) -> dict[str, int]:
    return dataclasses.asdict(plan)


async def _run_target(
    kind: str,
    opts: Options,
    c: ChatOptions,
    progress: Progress,
    log_dir: pathlib.Path,
    profile_dir: pathlib.Path | None,
) -> tuple[dict[str, Any], dict[str, int | None]]:
    plan = c.plan
    plan_args = _plan_args(plan)
    timeout = opts.phase_timeout_s
    async with Fleet(log_dir, profile_dir, kind) as fleet:
        if kind == "roomcast":
            servers = await fleet.roomcast(opts.gateways, 60.0)
            urls = servers.ws_urls()
            children = servers.all
            sdk_mode, target = "sdk", servers.commands
        else:
            base = await fleet.baseline(60.0)
            urls = [str(base.info["public"]).replace("http://", "ws://", 1) + "/ws"]
            children = [base]
            sdk_mode, target = "ws", urls[0]
        names = [f"clients-{k}" for k in range(opts.client_procs)]
        agents = await fleet.agents([*names, "publisher"], 60.0)
        load = Load(fleet, children, agents[:-1], agents[-1], opts, progress, f"{kind} chat")
        conn = await load.connect(
            urls,
            plan.sockets,
            ["g{g}"],
            group_size=plan.room_size,
            concurrency=500,
            record=True,  # every client keeps every sequence number: the verdict needs them
        )
        if conn["failed"]:
            raise BenchError(f"{kind}: {conn['failed']} of {plan.sockets} clients failed")
        if kind == "roomcast":
            for room in (0, plan.rooms - 1):
                name = plan.room_name(room)
                count = await agents[-1].call(
                    "sdk", timeout + 15, target=target, op="count", rooms=[name], timeout=timeout
                )
                if count["result"] != plan.room_size:
                    raise BenchError(f"roomcast counts {count['result']} members in {name}")
        seq = 0

        async def phase(name: str, mode: str, count: int, rate: float, report: bool) -> Any:
            nonlocal seq
            by_clients = mode == "client"
            collect = {"chat": {"plan": plan_args, "count": count, "seq_start": seq}}
            collect["chat"]["by_clients"] = by_clients
            publish: dict[str, Any] = {"count": count, "rate": rate, "seq_start": seq}
            publish["payload_bytes"] = opts.payload_bytes
            if by_clients:
                publish["plan"] = plan_args
            else:
                publish |= {"mode": sdk_mode, "target": target, "cycle": plan.rooms}
                publish |= {"cycle_format": "g{g}", "window": c.window, "tag_room": True}
            expected = plan.deliveries(count, by_clients=by_clients)
            result = await load.deliver(
                name, expected, publish, report=report, by_clients=by_clients, collect=collect
            )
            seq += count
            _per_publish(result)
            return result

        phases: dict[str, Any] = {}
        for mode in c.modes:
            warm = await phase(f"{mode} warm-up", mode, plan.rooms, 0.0, False)
            if warm["lost"] or _wrong(warm):
                raise BenchError(f"{kind}: the {mode} warm-up went wrong: {warm['verified']}")
            phases[f"{mode}-burst"] = await phase(f"{mode} burst", mode, c.publishes, 0.0, True)
            if c.duration_s > 0:
                n = max(1, round(c.rate * c.duration_s))
                result = await phase(f"{mode} rate", mode, n, c.rate, True)
                result["rate_publishes_per_s"] = c.rate
                phases[f"{mode}-rate"] = result
        await load.disconnect()
    return {"connect_wall_s": conn["wall_s"], "phases": phases}, fleet.exit_codes


def _wrong(result: dict[str, Any]) -> int:
    """Deliveries the verdict says were wrong: lost, duplicated, misrouted or out of order."""
    v = result.get("verified") or {}
    return sum(int(v.get(k, 0)) for k in ("lost", "duplicated", "misrouted", "order_violations"))


def _per_publish(result: dict[str, Any]) -> None:
    """CPU microseconds per publish of each server process, and of all of them together (and,
    for roomcast, named as the issue asks: the router's per publish, each gateway's per
    message)."""
    published = result["published"]
    per = {
        name: round(p["cpu_s"] / published * 1e6, 2) if published else None
        for name, p in result["processes"].items()
    }
    result["cpu_us_per_publish"] = per
    if "router" in per:  # every room spans every gateway: each publish is a message to each
        result["router_cpu_us_per_publish"] = per["router"]
        result["gateway_cpu_us_per_message"] = {
            name: value for name, value in per.items() if name.startswith("gateway")
        }
    result["server_cpu_us_per_publish"] = (
        round(result["server_cpu_s"] / published * 1e6, 2) if published else None
    )


_RATIO_KEYS: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    ("delivered_msgs_per_s", lambda r: r["delivered_msgs_per_s"]),
    ("p50_ms", lambda r: r["latency"]["p50_ms"]),
    ("p99_ms", lambda r: r["latency"]["p99_ms"]),
    ("max_ms", lambda r: r["latency"]["max_ms"]),
    ("server_cpu_us_per_publish", lambda r: r["server_cpu_us_per_publish"]),
    ("cpu_us_per_delivery", lambda r: r["cpu_us_per_delivery"]),
)


def _checks(ours: dict[str, Any]) -> dict[str, Any]:
    """Issue 14's targets for the chat shape, on this run's roomcast figures (client mode)."""
    checks: dict[str, Any] = {}
    burst, rate = ours.get("client-burst"), ours.get("client-rate")
    if burst is not None:
        checks["burst_nothing_wrong"] = burst["lost"] == 0 and _wrong(burst) == 0
        delivered = burst["delivered_msgs_per_s"] or 0
        checks["burst_at_least_150k_deliveries_per_s"] = delivered >= 150e3
    if rate is not None:
        cpu = rate["cpu_us_per_delivery"]
        checks["rate_cpu_per_delivery_at_most_20us"] = cpu is not None and cpu <= 20
        checks["rate_p50_at_most_1ms"] = rate["latency"]["p50_ms"] <= 1
        checks["rate_p99_at_most_10ms"] = rate["latency"]["p99_ms"] <= 10
    return checks


async def run_chat(
    opts: Options,
    c: ChatOptions,
    progress: Progress,
    log_dir: pathlib.Path,
    profile_dir: pathlib.Path | None,
) -> dict[str, Any]:
    plan = c.plan
    result: dict[str, Any] = {
        "sockets": plan.sockets,
        "room_size": plan.room_size,
        "rooms": plan.rooms,
        "gateways": opts.gateways,
        "publishers_per_room": plan.publishers_per_room,
        "publishes_per_burst": c.publishes,
        "rate_publishes_per_s": c.rate if c.duration_s > 0 else None,
        "rate_duration_s": c.duration_s,
    }
    exits: dict[str, Any] = {}
    if c.baseline:
        base, codes = await _run_target(
            "baseline", opts, c, progress, log_dir, profile_subdir(profile_dir, "baseline")
        )
        exits["baseline"] = codes
        result["baseline"] = base
    ours, codes = await _run_target(
        "roomcast", opts, c, progress, log_dir, profile_subdir(profile_dir, "roomcast")
    )
    exits["roomcast"] = codes
    result["roomcast"] = ours
    if c.baseline:
        theirs = result["baseline"]["phases"]
        result["ratio"] = {
            name: {key: ratio(get(phase), get(theirs[name])) for key, get in _RATIO_KEYS}
            for name, phase in ours["phases"].items()
            if name in theirs
        }
    result["checks"] = _checks(ours["phases"])
    result["exit_codes"] = exits
    return result


def chat_smoke_verdict(result: dict[str, Any], min_ratio: float) -> list[str]:
    """Why a chat smoke run fails (empty: it passes): any delivery missing, duplicated,
    misrouted or out of order in any phase of either target, or a client-burst ratio of
    deliveries/s under the floor."""
    problems = []
    for kind in ("baseline", "roomcast"):
        for name, phase in result.get(kind, {}).get("phases", {}).items():
            if phase["lost"] or _wrong(phase):
                problems.append(f"{kind} {name}: lost {phase['lost']}, {phase['verified']}")
    burst_ratio = result.get("ratio", {}).get("client-burst", {}).get("delivered_msgs_per_s")
    if burst_ratio is None:
        problems.append("no roomcast/baseline client-burst ratio")
    elif burst_ratio < min_ratio:
        problems.append(f"client-burst ratio {burst_ratio} is under the floor {min_ratio}")
    return problems
