"""``roomcast bench SCENARIO [options]``: flags, the run, and the one JSON document it prints.

Owns argument parsing (every flag also reads ``ROOMCAST_<FLAG>``, as everywhere in roomcast),
raising ``RLIMIT_NOFILE`` before any child starts (children inherit it), the working directory
for logs and profiles, the smoke verdict, and writing the result to stdout or ``--out``.
Progress goes to stderr. Exit status: 0 done, 1 the run failed (or the smoke check did), 2 bad
usage.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import pathlib
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from roomcast.bench.chat import MODES, ChatOptions, chat_smoke_verdict, run_chat
from roomcast.bench.chatplan import ChatPlan
from roomcast.bench.common import BenchError, Options, Progress, machine, revision
from roomcast.bench.failover import FailoverOptions, run_failover
from roomcast.bench.fanout import FanoutOptions, run_fanout, smoke_verdict
from roomcast.bench.procs import Fleet, raise_fd_limit
from roomcast.bench.profiles import summarize_dir
from roomcast.bench.router import RouterOptions, run_router
from roomcast.bench.scenarios import run_connect, run_consistency, run_memory, run_rooms
from roomcast.flags import EnvArgumentParser

__all__ = ["main"]

_SMOKE = {"subscribers": 200, "messages": 500, "duration": 0.0}
# chat: (default, smoke) of each flag whose default depends on --smoke
_CHAT = {
    "sockets": (1000, 200),
    "publishes": (20_000, 2000),
    "rate": (2000.0, 1000.0),
    "duration": (5.0, 1.0),
}


def _levels(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"not a comma-separated list of counts: {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError("counts must be positive")
    return values


def _parser() -> EnvArgumentParser:
    # Added to the parser itself, not to an argument group: only EnvArgumentParser.add_argument
    # wires the ROOMCAST_* variables.
    g = common = EnvArgumentParser(add_help=False)
    g.add_argument("--gateways", type=int, default=2, help="gateway processes to start")
    g.add_argument(
        "--client-procs", type=int, default=2, help="load-agent processes holding the clients"
    )
    g.add_argument("--payload-bytes", type=int, default=100, help="bytes of JSON data in each push")
    g.add_argument(
        "--sample-every",
        type=int,
        default=10,
        help="1 client in this many (clients) records the latency of every push it receives",
    )
    g.add_argument("--timeout", type=float, default=300.0, help="bound of each phase (seconds)")
    g.add_argument(
        "--stall", type=float, default=5.0, help="seconds without deliveries that end a phase"
    )
    g.add_argument(
        "--profile",
        metavar="DIR",
        default=None,
        help="run the servers under cProfile; save .prof/.txt files and logs in DIR",
    )
    g.add_argument("--out", metavar="FILE", default=None, help="write the JSON here, not stdout")
    g.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    parser = EnvArgumentParser(
        prog="roomcast bench",
        description=(
            "Benchmark roomcast on this machine (loopback only): starts a router and gateways "
            "as processes, drives them with lean WebSocket clients in separate load-agent "
            "processes, prints progress on stderr and one JSON document on stdout."
        ),
    )
    sub = parser.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")

    f = sub.add_parser(
        "fanout",
        parents=[common],
        help="one room, N subscribers over G gateways, one publisher (burst + fixed rate)",
        description="N subscribers in one room, one SDK publisher: burst, then a fixed rate.",
    )
    f.add_argument(
        "--subscribers",
        type=int,
        default=None,
        help="subscribing clients (default 1000; smoke 200)",
    )
    f.add_argument(
        "--messages", type=int, default=None, help="messages in the burst (default 2000; smoke 500)"
    )
    f.add_argument(
        "--rate",
        type=float,
        default=None,
        help="messages/s of the fixed-rate run (default: half the baseline's burst maximum)",
    )
    f.add_argument(
        "--duration", type=float, default=None, help="fixed-rate run seconds (default 5; 0 skips)"
    )
    f.add_argument("--baseline", action="store_true", help="also run the plain Tornado baseline")
    f.add_argument(
        "--smoke",
        action="store_true",
        help="CI guard: N=200, 500 messages, with baseline; fail on loss or a low ratio",
    )
    f.add_argument(
        "--min-ratio",
        type=float,
        default=2.0,
        help="smoke floor of the ratio roomcast/baseline of delivered messages/s in the burst",
    )
    f.add_argument(
        "--window",
        type=int,
        default=256,
        help="SDK broadcasts (messages) in flight during the burst",
    )

    c = sub.add_parser(
        "consistency",
        parents=[common],
        help="SDK join from one process, broadcast from another: %% received",
        description="K times: join a socket on gateway B (SDK process 1), broadcast (process 2).",
    )
    c.add_argument("--iterations", type=int, default=1000, help="runs of join + broadcast (count)")

    m = sub.add_parser(
        "memory",
        parents=[common],
        help="gateway RSS per idle connection",
        description="RSS per idle connection on one gateway at each count.",
    )
    m.add_argument(
        "--connections",
        default="1000,5000,10000",
        help="comma-separated counts of idle connections to measure at",
    )
    m.add_argument(
        "--baseline", action="store_true", help="also measure the plain Tornado baseline"
    )

    r = sub.add_parser(
        "rooms",
        parents=[common],
        help="many small rooms: personal room + group per socket, broadcasts to groups",
        description="S sockets, each in a personal room and a group; publisher -> groups.",
    )
    r.add_argument("--sockets", type=int, default=10000, help="connected sockets (count)")
    r.add_argument("--group-size", type=int, default=10, help="sockets per group")
    r.add_argument("--messages", type=int, default=20000, help="messages in the burst")
    r.add_argument(
        "--rate", type=float, default=None, help="messages per second (default: burst max / 2)"
    )
    r.add_argument("--duration", type=float, default=5.0, help="fixed-rate run seconds (0 skips)")

    ch = sub.add_parser(
        "chat",
        parents=[common],
        help="many rooms of K: client and SDK publishes to one room each (burst + fixed rate)",
        description=(
            "S sockets in rooms of K, every room spanning the gateways; members publish to "
            "their room with the /ws broadcast op (echo off) and an SDK Cluster publishes to "
            "each room in turn, as a burst and at a fixed rate. Every delivery is checked."
        ),
    )
    ch.add_argument(
        "--sockets", type=int, default=None, help="connected sockets (default 1000; smoke 200)"
    )
    ch.add_argument("--room-size", type=int, default=10, help="sockets per room (at least 2)")
    ch.add_argument(
        "--publishers-per-room",
        type=int,
        default=1,
        help="members of each room that publish to it, taking turns (count)",
    )
    ch.add_argument(
        "--publishes",
        type=int,
        default=None,
        help="publishes (messages) in each burst (default 20000; smoke 2000)",
    )
    ch.add_argument(
        "--rate",
        type=float,
        default=None,
        help="publishes per second of each fixed-rate run (default 2000; smoke 1000)",
    )
    ch.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of each fixed-rate run (default 5; smoke 1; 0 skips them)",
    )
    ch.add_argument(
        "--modes",
        default=",".join(MODES),
        help=(
            "who publishes, comma-separated: client (a member, /ws broadcast op, echo off), "
            "sdk (roomcast.Cluster; against the baseline a /ws client outside the rooms)"
        ),
    )
    ch.add_argument("--baseline", action="store_true", help="also run the plain Tornado room map")
    ch.add_argument(
        "--smoke",
        action="store_true",
        help="CI guard: 200 sockets, 2000-publish bursts, 1 s at 1000/s, with the baseline; "
        "fail on any wrong delivery or a low ratio",
    )
    ch.add_argument(
        "--min-ratio",
        type=float,
        default=0.1,
        help="smoke floor of the ratio roomcast/baseline of deliveries per second, client burst",
    )
    ch.add_argument(
        "--window",
        type=int,
        default=256,
        help="SDK broadcasts (messages) in flight during a burst",
    )

    ro = sub.add_parser(
        "router",
        parents=[common],
        help="the router process alone under a publish flood (raw ZeroMQ peers)",
        description=(
            "A router process with stand-in gateways and a publisher on raw ZeroMQ: "
            "publishes/s at saturation and router CPU per publish, per number of targets."
        ),
    )
    ro.add_argument(
        "--targets", default="1,2,10", help="target gateways per publish (comma-separated list)"
    )
    ro.add_argument(
        "--publishes", type=int, default=100_000, help="messages published in the burst"
    )
    ro.add_argument("--rate", type=float, default=2000.0, help="steady rate (publishes per second)")
    ro.add_argument(
        "--duration", type=float, default=5.0, help="steady-rate run (seconds; 0 skips it)"
    )

    k = sub.add_parser(
        "connect",
        parents=[common],
        help="avalanche of N connects + joins: time to joined",
        description="N clients connect at once and join a room; time from connect to joined.",
    )
    k.add_argument("--clients", type=int, default=2000, help="clients connecting at once (count)")

    fo = sub.add_parser(
        "failover",
        parents=[common],
        help="a primary/backup router pair: kill -9 the primary, time the takeover, count loss",
        description=(
            "Primary + backup routers, G gateways, N clients in one room, an SDK publisher at a "
            "fixed rate; SIGKILL the primary and measure the time to the first delivery "
            "through the backup, to every gateway resynced, and the messages lost."
        ),
    )
    d = FailoverOptions()
    fo.add_argument("--clients", type=int, default=d.clients, help="clients (in this process)")
    fo.add_argument("--rate", type=float, default=d.rate, help="broadcasts per second")
    fo.add_argument("--before", type=float, default=d.before_s, help="seconds before the kill")
    fo.add_argument("--after", type=float, default=d.after_s, help="seconds after the kill")
    fo.add_argument(
        "--peer-timeout",
        type=float,
        default=d.peer_timeout_s,
        help="the routers' --peer-timeout (seconds)",
    )
    fo.add_argument(
        "--heartbeat-interval",
        type=float,
        default=d.heartbeat_s,
        help="routers' and gateways' (seconds)",
    )
    fo.add_argument(
        "--runs", type=int, default=d.runs, help="runs (count): kill -9 this many times"
    )
    fo.add_argument(
        "--no-restart",
        action="store_true",
        help="skip restarting the primary (which must come back passive)",
    )
    return parser


def _check(parser: EnvArgumentParser, ns: Any) -> None:
    if ns.gateways < 1 or ns.client_procs < 1:
        parser.error("--gateways and --client-procs must be at least 1")
    if ns.timeout <= 0 or ns.stall <= 0 or ns.sample_every < 1 or ns.payload_bytes < 40:
        parser.error("--timeout/--stall must be > 0, --sample-every >= 1, --payload-bytes >= 40")
    if ns.scenario == "memory":
        try:
            ns.connections = _levels(ns.connections)
        except ValueError as exc:
            parser.error(f"--connections: {exc}")
    if ns.scenario == "router":
        try:
            _levels(ns.targets)
        except ValueError as exc:
            parser.error(f"--targets: {exc}")
        if ns.publishes < 1 or ns.rate < 0 or ns.duration < 0:
            parser.error("--publishes must be >= 1, --rate and --duration >= 0")
    if ns.scenario == "consistency" and ns.iterations < 1:
        parser.error("--iterations must be at least 1")
    if ns.scenario == "connect" and ns.clients < 1:
        parser.error("--clients must be at least 1")
    if ns.scenario == "failover" and (
        ns.clients < 1
        or ns.rate <= 0
        or ns.before < 0
        or ns.after <= 0
        or ns.peer_timeout <= 0
        or ns.heartbeat_interval <= 0
        or ns.runs < 1
    ):
        parser.error(
            "--clients/--runs must be >= 1, --rate/--after/--peer-timeout/--heartbeat-interval "
            "> 0, --before >= 0"
        )
    if ns.scenario == "rooms" and (ns.sockets < 1 or ns.group_size < 1 or ns.messages < 1):
        parser.error("--sockets, --group-size and --messages must be at least 1")
    if ns.scenario == "chat":
        for key, (default, smoke) in _CHAT.items():
            if getattr(ns, key) is None:
                setattr(ns, key, smoke if ns.smoke else default)
        if ns.smoke:
            ns.baseline = True
        modes = tuple(m.strip() for m in ns.modes.split(",") if m.strip())
        if not modes or set(modes) - set(MODES):
            parser.error(f"--modes: a comma-separated list of {', '.join(MODES)}")
        ns.modes = ",".join(modes)
        if ns.publishes < 1 or ns.rate <= 0 or ns.duration < 0 or ns.window < 1:
            parser.error("--publishes/--window must be >= 1, --rate > 0, --duration >= 0")
        try:
            ChatPlan(
                sockets=ns.sockets,
                room_size=ns.room_size,
                publishers_per_room=ns.publishers_per_room,
            )
        except ValueError as exc:
            parser.error(f"--sockets/--room-size/--publishers-per-room: {exc}")
        if ns.room_size < ns.gateways:
            parser.error("--room-size must be at least --gateways (every room spans them all)")
    if ns.scenario == "fanout":
        for key, default in (("subscribers", 1000), ("messages", 2000), ("duration", 5.0)):
            if getattr(ns, key) is None:
                setattr(ns, key, _SMOKE[key] if ns.smoke else default)
        if ns.smoke:
            ns.baseline = True
        if ns.subscribers < 1 or ns.messages < 1 or ns.duration < 0 or ns.window < 1:
            parser.error("--subscribers/--messages/--window must be >= 1, --duration >= 0")
        if ns.rate is not None and ns.rate <= 0:
            parser.error("--rate must be positive")


async def _scenario(
    ns: Any, opts: Options, progress: Progress, logs: pathlib.Path, prof: pathlib.Path | None
) -> dict[str, Any]:
    if ns.scenario == "fanout":
        f = FanoutOptions(
            subscribers=ns.subscribers,
            messages=ns.messages,
            rate=ns.rate,
            duration_s=ns.duration,
            baseline=ns.baseline,
            window=ns.window,
        )
        return await run_fanout(opts, f, progress, logs, prof)
    if ns.scenario == "chat":
        ch = ChatOptions(
            sockets=ns.sockets,
            room_size=ns.room_size,
            publishers_per_room=ns.publishers_per_room,
            publishes=ns.publishes,
            rate=ns.rate,
            duration_s=ns.duration,
            modes=tuple(ns.modes.split(",")),
            baseline=ns.baseline,
            window=ns.window,
        )
        return await run_chat(opts, ch, progress, logs, prof)
    if ns.scenario == "consistency":
        return await run_consistency(opts, ns.iterations, progress, logs, prof)
    if ns.scenario == "memory":
        return await run_memory(opts, ns.connections, ns.baseline, progress, logs, prof)
    if ns.scenario == "rooms":
        return await run_rooms(
            opts, ns.sockets, ns.group_size, ns.messages, ns.rate, ns.duration, progress, logs, prof
        )
    if ns.scenario == "router":
        ro = RouterOptions(
            targets=tuple(_levels(ns.targets)),
            publishes=ns.publishes,
            rate=ns.rate,
            duration_s=ns.duration,
        )
        return await run_router(opts, ro, progress, logs, prof)
    if ns.scenario == "failover":
        fo = FailoverOptions(
            clients=ns.clients,
            rate=ns.rate,
            before_s=ns.before,
            after_s=ns.after,
            peer_timeout_s=ns.peer_timeout,
            heartbeat_s=ns.heartbeat_interval,
            runs=ns.runs,
            restart=not ns.no_restart,
        )
        return await run_failover(opts, fo, progress, logs, prof)
    return await run_connect(opts, ns.clients, progress, logs, prof)


async def _run(ns: Any, argv: Sequence[str]) -> tuple[dict[str, Any], int]:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    fd_limit = raise_fd_limit()
    progress = Progress(not ns.quiet)
    prof = pathlib.Path(ns.profile).resolve() if ns.profile else None
    if prof is not None:
        prof.mkdir(parents=True, exist_ok=True)
        logs = prof
    else:
        logs = pathlib.Path(tempfile.mkdtemp(prefix="roomcast-bench-"))
    opts = Options(
        gateways=ns.gateways,
        client_procs=ns.client_procs,
        payload_bytes=ns.payload_bytes,
        sample_every=ns.sample_every,
        phase_timeout_s=ns.timeout,
        stall_s=ns.stall,
        profile_dir=str(prof) if prof else None,
        progress=not ns.quiet,
    )
    doc: dict[str, Any] = {
        "scenario": ns.scenario,
        "command": " ".join(["roomcast", "bench", *argv]),
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "revision": revision(),
        "fd_limit": list(fd_limit),
        "options": {k: v for k, v in vars(ns).items() if k != "scenario"},
    }
    status = 0
    ok = False
    try:
        if getattr(ns, "smoke", False):
            attempts: list[list[str]] = []
            for attempt in (1, 2):  # the machine is shared: one retry before failing
                try:
                    result = await _scenario(ns, opts, progress, logs, prof)
                    verdict = chat_smoke_verdict if ns.scenario == "chat" else smoke_verdict
                    problems = verdict(result, ns.min_ratio)
                except BenchError as exc:
                    result, problems = {}, [f"run failed: {exc}"]
                attempts.append(problems)
                if not problems:
                    break
                progress.done(f"smoke attempt {attempt} failed: {'; '.join(problems)}")
            doc["results"] = result
            doc["smoke"] = {
                "passed": not attempts[-1],
                "attempts": len(attempts),
                "problems": attempts,
                "min_ratio": ns.min_ratio,
            }
            status = 0 if not attempts[-1] else 1
        else:
            doc["results"] = await _scenario(ns, opts, progress, logs, prof)
        ok = status == 0
    finally:
        if prof is not None:
            doc["profiles"] = summarize_dir(prof)
        doc["log_warnings"] = dict(Fleet.notable)
        if ok and prof is None and not Fleet.notable:
            shutil.rmtree(logs, ignore_errors=True)
        else:
            doc["logs"] = str(logs)
        loop.remove_signal_handler(signal.SIGTERM)
    return doc, status


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not args:
        parser.print_help(sys.stderr)
        return 2
    ns = parser.parse_args(args)
    _check(parser, ns)
    try:
        doc, status = asyncio.run(_run(ns, args))
    except BenchError as exc:
        print(f"roomcast bench: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("roomcast bench: interrupted", file=sys.stderr)
        return 1
    text = json.dumps(doc, indent=2) + "\n"
    if ns.out:
        pathlib.Path(ns.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return status
