"""``roomcast bench fanout``: one room, N subscribers over G gateways, one publisher.

For each target (the baseline first when ``--baseline``, then roomcast) on fresh processes:
connect N clients that each join the room, warm up, run an unthrottled burst of M messages, then
(unless ``--duration 0``) a fixed-rate run. The rate defaults to half of the baseline's
measured maximum (half of roomcast's without a baseline), and both targets run at that same rate.
Figures of both targets are reported absolute and as roomcast/baseline ratios, and the
issue's acceptance checks are evaluated (``checks``). ``--smoke`` is the CI guard: small, with
the baseline, no rate run; it fails on any loss or a burst ratio under ``--min-ratio``, after
one retry.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable
from typing import Any

from roomcast.bench.common import BenchError, Options, Progress, ratio
from roomcast.bench.procs import Fleet
from roomcast.bench.runner import Load

__all__ = ["FanoutOptions", "profile_subdir", "run_fanout", "smoke_verdict"]

ROOM = "bench-fanout"
_WARMUP_MESSAGES = 20


@dataclasses.dataclass(frozen=True, kw_only=True)
class FanoutOptions:
    subscribers: int = 1000
    messages: int = 2000
    rate: float | None = None  # messages/s of the fixed-rate run; None: derived
    duration_s: float = 5.0  # of the fixed-rate run; 0 skips it
    baseline: bool = False
    window: int = 256  # SDK broadcasts in flight during the burst


async def _run_target(
    kind: str,
    opts: Options,
    f: FanoutOptions,
    rate: float | None,
    progress: Progress,
    log_dir: pathlib.Path,
    profile_dir: pathlib.Path | None,
) -> tuple[dict[str, Any], dict[str, int | None]]:
    timeout = opts.phase_timeout_s
    n = f.subscribers
    async with Fleet(log_dir, profile_dir, kind) as fleet:
        if kind == "roomcast":
            servers = await fleet.roomcast(opts.gateways, 60.0)
            urls = servers.ws_urls()
            children = servers.all
            mode, target = "sdk", servers.commands
        else:
            base = await fleet.baseline(60.0)
            urls = [str(base.info["public"]).replace("http://", "ws://", 1) + "/ws"]
            children = [base]
            mode, target = "ws", urls[0]
        names = [f"clients-{k}" for k in range(opts.client_procs)]
        agents = await fleet.agents([*names, "publisher"], 60.0)
        load = Load(fleet, children, agents[:-1], agents[-1], opts, progress, kind)
        conn = await load.connect(urls, n, [ROOM], concurrency=500)
        if conn["failed"]:
            raise BenchError(f"{kind}: {conn['failed']} of {n} clients failed: {conn['errors']}")
        result: dict[str, Any] = {"connect_wall_s": conn["wall_s"]}
        if mode == "sdk":
            count = await agents[-1].call(
                "sdk", timeout + 15, target=target, op="count", rooms=[ROOM], timeout=timeout
            )
            if count["result"] != n:
                raise BenchError(f"roomcast counts {count['result']} members in {ROOM}, not {n}")
        publish: dict[str, Any] = {"mode": mode, "target": target, "rooms": [ROOM]}
        publish |= {"payload_bytes": opts.payload_bytes, "window": f.window}
        warm = await load.deliver(
            "warm-up", n * _WARMUP_MESSAGES, publish | {"count": _WARMUP_MESSAGES}, report=False
        )
        seq = _WARMUP_MESSAGES
        if warm["lost"]:
            raise BenchError(f"{kind}: warm-up lost {warm['lost']} deliveries")
        burst = await load.deliver(
            "burst", n * f.messages, publish | {"count": f.messages, "seq_start": seq}
        )
        seq += f.messages
        result["burst"] = burst
        if f.duration_s > 0:
            if rate is None:
                rate = derive_rate(burst, n)
            count_rate = max(1, round(rate * f.duration_s))
            result["rate"] = await load.deliver(
                "rate",
                n * count_rate,
                publish | {"count": count_rate, "rate": rate, "seq_start": seq},
            )
            result["rate"]["rate_msgs_per_s"] = rate
        await load.disconnect()
    return result, fleet.exit_codes


def derive_rate(burst: dict[str, Any], subscribers: int) -> float:
    """Half of the publish rate the burst sustained (deliveries/s over subscribers)."""
    delivered = burst.get("delivered_msgs_per_s") or 0.0
    return max(1.0, round(delivered / subscribers / 2, 1))


_RATIO_KEYS: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    ("delivered_msgs_per_s", lambda r: r["delivered_msgs_per_s"]),
    ("p50_ms", lambda r: r["latency"]["p50_ms"]),
    ("p99_ms", lambda r: r["latency"]["p99_ms"]),
    ("max_ms", lambda r: r["latency"]["max_ms"]),
    ("server_cpu_s", lambda r: r["server_cpu_s"]),
    ("cpu_us_per_delivery", lambda r: r["cpu_us_per_delivery"]),
    ("loadgen_cpu_s", lambda r: r["loadgen_cpu_s"]),
    (
        "peak_rss_kib",
        lambda r: sum(p.get("peak_rss_kib") or 0 for p in r["processes"].values()),
    ),
)


def _ratios(ours: dict[str, Any], base: dict[str, Any]) -> dict[str, float | None]:
    return {key: ratio(get(ours), get(base)) for key, get in _RATIO_KEYS}


def _checks(result: dict[str, Any]) -> dict[str, Any]:
    """The acceptance checks of issue 5 that one fanout run can evaluate."""
    rc, base, ratios = result["roomcast"], result.get("baseline"), result.get("ratio", {})
    checks: dict[str, Any] = {"roomcast_burst_lost": rc["burst"]["lost"]}
    burst_ratio = ratios.get("burst", {}).get("delivered_msgs_per_s")
    if base is not None:
        checks["burst_ratio"] = burst_ratio
        checks["burst_at_least_10x"] = burst_ratio is not None and burst_ratio >= 10
        if "rate" in rc and "rate" in base:
            ours, theirs = rc["rate"], base["rate"]
            checks["rate_p99_not_worse"] = ours["latency"]["p99_ms"] <= theirs["latency"]["p99_ms"]
            a, b = ours["cpu_us_per_delivery"], theirs["cpu_us_per_delivery"]
            checks["rate_cpu_per_delivery_at_most_third"] = (
                a is not None and b is not None and a <= b / 3
            )
    return checks


async def run_fanout(
    opts: Options,
    f: FanoutOptions,
    progress: Progress,
    log_dir: pathlib.Path,
    profile_dir: pathlib.Path | None,
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    exits: dict[str, Any] = {}
    rate = f.rate
    if f.baseline:
        base, codes = await _run_target(
            "baseline", opts, f, rate, progress, log_dir, profile_subdir(profile_dir, "baseline")
        )
        exits["baseline"] = codes
        result["baseline"] = base
        if rate is None and "burst" in base:
            rate = derive_rate(base["burst"], f.subscribers)
    ours, codes = await _run_target(
        "roomcast", opts, f, rate, progress, log_dir, profile_subdir(profile_dir, "roomcast")
    )
    exits["roomcast"] = codes
    result["roomcast"] = ours
    if rate is None and "rate" in ours:
        rate = ours["rate"]["rate_msgs_per_s"]
    result["rate_msgs_per_s"] = rate
    result["rate_source"] = (
        "--rate" if f.rate is not None else ("baseline burst / 2" if f.baseline else "burst / 2")
    )
    if f.baseline:
        result["ratio"] = {
            phase: _ratios(ours[phase], result["baseline"][phase])
            for phase in ("burst", "rate")
            if phase in ours and phase in result["baseline"]
        }
    result["checks"] = _checks(result)
    result["exit_codes"] = exits
    return result


def profile_subdir(profile_dir: pathlib.Path | None, name: str) -> pathlib.Path | None:
    if profile_dir is None:
        return None
    path = profile_dir / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def smoke_verdict(result: dict[str, Any], min_ratio: float) -> list[str]:
    """Why a smoke run fails (empty: it passes): any loss, or a burst ratio under the floor."""
    problems = []
    for kind in ("baseline", "roomcast"):
        section = result.get(kind, {})
        for phase in ("burst", "rate"):
            if phase in section and section[phase]["lost"]:
                problems.append(f"{kind} {phase} lost {section[phase]['lost']} deliveries")
    burst_ratio = result.get("ratio", {}).get("burst", {}).get("delivered_msgs_per_s")
    if burst_ratio is None:
        problems.append("no roomcast/baseline burst ratio")
    elif burst_ratio < min_ratio:
        problems.append(f"burst ratio {burst_ratio} is under the floor {min_ratio}")
    return problems
