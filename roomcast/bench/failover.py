"""``roomcast bench failover``: kill -9 the primary router of a pair; measure the takeover.

Each run starts a primary and a backup router (``--role primary|backup``; the backup connects
to the primary's ``--peer-bind``), G gateways given both, and N lean /ws clients in one room,
spread over the gateways, in this process. An SDK publisher (a ``Cluster`` given both routers,
primary first, in this process too) broadcasts to the room at a fixed rate without waiting for
each reply; every push carries its sequence number and the CLOCK_MONOTONIC time it was
published (:func:`roomcast.bench.wsclient.stamp`), and every client records, per push, the
sequence number and the time it arrived. After ``--before`` seconds the primary gets SIGKILL;
the publisher goes on for ``--after`` seconds.

Measured, from the kill:

* ``first_delivery_s``: to the first push, published after the kill, that reaches a client
  (it can only have gone through the backup) -- the failover figure;
* ``backup_serving_s``: to the backup's ``/readyz`` answering 200 (its takeover);
* ``gateways_ready_s``: to every gateway's ``/readyz`` answering 200 again (failed over and
  resynced: the resync time);
* loss by sequence number at the clients: what the publisher was told was accepted yet a client
  never received (``lost``), and what it could not publish (``publish_errors``, by error:
  ``Timeout`` for commands in flight to the dying primary, ``RouterUnavailable`` if no router
  took one within the SDK's ``connect_timeout``);
* with ``--restart`` (default), the primary restarted on its addresses must come back passive:
  it hears the active backup and stays out of the way (``restarted_primary_passive``).

Like the rest of the bench, servers are processes (``sys.executable -m router|gateway``); the
gateway and router packages are never imported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import secrets
import time
import urllib.error
import urllib.request
from typing import Any

from roomcast.bench.common import BenchError, Options, Progress, padding_for, percentile
from roomcast.bench.procs import Child, Fleet
from roomcast.bench.wsclient import Tally, WsClient, connect, stamp

__all__ = ["FailoverOptions", "run_failover"]

_EVENT = "bench"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclasses.dataclass(frozen=True, kw_only=True)
class FailoverOptions:
    clients: int = 100
    rate: float = 200.0  # broadcasts per second
    before_s: float = 2.0  # steady publishing before the kill
    after_s: float = 5.0  # publishing after the kill
    peer_timeout_s: float = 2.0  # the routers' --peer-timeout (their default)
    heartbeat_s: float = 1.0  # routers' and gateways' --heartbeat-interval (their default)
    runs: int = 1
    restart: bool = True  # restart the primary afterwards: it must come back passive


async def run_failover(
    opts: Options,
    f: FailoverOptions,
    progress: Progress,
    log_dir: pathlib.Path,
    profile_dir: pathlib.Path | None,
) -> dict[str, Any]:
    runs = []
    for k in range(f.runs):
        label = f"failover {k + 1}/{f.runs}" if f.runs > 1 else "failover"
        runs.append(await _one_run(opts, f, progress, log_dir, profile_dir, label))
    firsts = sorted(r["first_delivery_s"] for r in runs if r["first_delivery_s"] is not None)
    summary = {
        "runs": len(runs),
        "first_delivery_s": {
            "p50": round(percentile(firsts, 50), 3) if firsts else None,
            "max": round(firsts[-1], 3) if firsts else None,
        },
        "lost_max": max(r["lost"]["max_per_client"] for r in runs),
        "all_restarted_primaries_passive": all(
            r.get("restarted_primary_passive", True) for r in runs
        ),
    }
    return {"summary": summary, "runs": runs, "options": dataclasses.asdict(f)}


# --- one run -----------------------------------------------------------------------------------


async def _one_run(
    opts: Options,
    f: FailoverOptions,
    progress: Progress,
    log_dir: pathlib.Path,
    profile_dir: pathlib.Path | None,
    label: str,
) -> dict[str, Any]:
    timeout = min(opts.phase_timeout_s, 60.0)
    async with Fleet(log_dir, profile_dir, tag=f"failover-{secrets.token_hex(3)}") as fleet:
        primary, backup = await _pair(fleet, f, timeout)
        gateways = await _gateways(fleet, primary, backup, opts.gateways, f, timeout)
        progress.say(f"{label}: connecting {f.clients} clients", force=True)
        room = f"bench-failover-{secrets.token_hex(4)}"
        clients = await _clients(gateways, f.clients, room, timeout)
        commands = f"{primary.info['commands']},{backup.info['commands']}"
        publisher = _Publisher(commands, room, f.rate, opts.payload_bytes)
        try:
            pub_task = asyncio.create_task(publisher.run())
            await _until(lambda: all(c.parser.seqs for c in clients), timeout, "warm-up pushes")
            progress.say(f"{label}: publishing at {f.rate:g}/s; kill -9 in {f.before_s:g}s")
            await asyncio.sleep(f.before_s)
            fleet.check_alive()
            watch = asyncio.create_task(_watch(backup, gateways, timeout))
            killed_ns = time.monotonic_ns()
            primary.proc.kill()
            progress.say(f"{label}: primary killed; publishing {f.after_s:g}s more", force=True)
            await asyncio.sleep(f.after_s)
            publisher.stop()
            await asyncio.wait_for(pub_task, timeout)
            marks = await asyncio.wait_for(watch, timeout)
            await _settle(clients, publisher, opts.stall_s)
            result = _account(publisher, clients, killed_ns, marks, f)
            if f.restart:
                result["restarted_primary_passive"] = await _restart(fleet, primary, backup, f)
        finally:
            publisher.stop()
            for client in clients:
                client.abort()
    result["exit_codes"] = fleet.exit_codes
    progress.done(
        f"{label}: first delivery through the backup {result['first_delivery_s']} s after the "
        f"kill, gateways ready after {result['gateways_ready_s']} s, lost "
        f"{result['lost']['total']} (max {result['lost']['max_per_client']} per client), "
        f"publish errors {result['publish_errors']}"
    )
    return result


async def _pair(fleet: Fleet, f: FailoverOptions, timeout: float) -> tuple[Child, Child]:
    common = [
        "--commands", "tcp://127.0.0.1:0", "--fanout", "tcp://127.0.0.1:0", "--http-port", "0",
        "--heartbeat-interval", f"{f.heartbeat_s:g}", "--peer-timeout", f"{f.peer_timeout_s:g}",
        "--drain-timeout", "1", "--log-level", "INFO",
    ]  # fmt: skip
    primary = await fleet.server(
        "primary",
        "router",
        "router",
        [*common, "--role", "primary", "--peer-bind", "tcp://127.0.0.1:0"],
        timeout,
    )
    backup = await fleet.server(
        "backup",
        "router",
        "router",
        [*common, "--role", "backup", "--peer-connect", str(primary.info["peer"])],
        timeout,
    )

    async def settled() -> bool:
        return await _status(primary) == 200 and await _status(backup) == 503

    await _until_async(settled, timeout, "primary active, backup passive")
    return primary, backup


async def _gateways(
    fleet: Fleet, primary: Child, backup: Child, count: int, f: FailoverOptions, timeout: float
) -> list[Child]:
    args = [
        "--router", f"{primary.info['commands']},{backup.info['commands']}",
        "--fanout", f"{primary.info['fanout']},{backup.info['fanout']}",
        "--host", "127.0.0.1", "--port", "0", "--internal-port", "0",
        "--env", "development", "--heartbeat-interval", f"{f.heartbeat_s:g}",
        "--drain-timeout", "1", "--log-level", "INFO",
    ]  # fmt: skip
    return [
        await fleet.server(f"gateway-{i}", "gateway", "gateway", args, timeout)
        for i in range(count)
    ]


async def _clients(gateways: list[Child], count: int, room: str, timeout: float) -> list[WsClient]:
    targets = []
    for g in gateways:
        host, _, port = str(g.info["public"]).removeprefix("http://").rpartition(":")
        targets.append((host, int(port)))

    async def one(i: int) -> WsClient:
        host, port = targets[i % len(targets)]
        # Its own tally: arrival latencies then pair with the seqs it records, one for one.
        client = await connect(host, port, "/ws", timeout=timeout, tally=Tally(), record=True)
        reply = await client.request("join", timeout, room=room)
        if reply.get("statusCode") != 200:
            client.abort()
            raise BenchError(f"failover: join answered {reply.get('statusCode')}")
        return client

    return list(await asyncio.gather(*(one(i) for i in range(count))))


# --- the publisher -----------------------------------------------------------------------------


class _Publisher:
    """Broadcasts at a fixed rate through an SDK ``Cluster`` given both routers."""

    def __init__(self, url: str, room: str, rate: float, payload_bytes: int) -> None:
        self.url, self.room, self.rate = url, room, rate
        self.pad = padding_for(payload_bytes)
        self.sent_ns: list[int] = []
        self.outcome: dict[int, str] = {}  # seq -> "ok" / "ok-no-gateway" / exception name
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        from roomcast import Cluster

        loop = asyncio.get_running_loop()
        # A reply held up by the failover must not pace the others: never await one in line.
        async with Cluster(self.url, timeout=10.0, connect_timeout=10.0) as cluster:
            pending: set[asyncio.Task[None]] = set()
            start = loop.time()
            while not self._stop.is_set():
                seq = len(self.sent_ns)
                now_ns = time.monotonic_ns()
                self.sent_ns.append(now_ns)
                data = stamp(seq, self.pad, now_ns)
                task = asyncio.create_task(self._one(cluster, seq, data))
                pending.add(task)
                task.add_done_callback(pending.discard)
                delay = start + (seq + 1) / self.rate - loop.time()
                if delay > 0:
                    try:
                        await asyncio.wait_for(self._stop.wait(), delay)
                    except TimeoutError:
                        pass
            if pending:
                await asyncio.gather(*pending)

    async def _one(self, cluster: Any, seq: int, data: dict[str, Any]) -> None:
        try:
            gateways = await cluster.sockets.broadcast(self.room, _EVENT, data)
        except Exception as exc:  # counted by kind; the run goes on
            self.outcome[seq] = type(exc).__name__
        else:
            self.outcome[seq] = "ok" if gateways else "ok-no-gateway"


# --- watching and accounting -------------------------------------------------------------------


def _get(url: str) -> int:
    try:
        with _OPENER.open(url, timeout=2.0) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)
    except OSError:
        return 0


async def _status(child: Child, path: str = "/readyz", key: str = "http") -> int:
    return await asyncio.to_thread(_get, str(child.info[key]) + path)


async def _watch(backup: Child, gateways: list[Child], timeout: float) -> dict[str, int]:
    """When (monotonic ns) the backup serves, and when every gateway, having noticed the dead
    primary (its /readyz not 200), is ready again (failed over and resynced)."""
    marks: dict[str, int] = {}
    down = [False] * len(gateways)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(marks) < 2:
        if "backup" not in marks and await _status(backup) == 200:
            marks["backup"] = time.monotonic_ns()
        if "gateways" not in marks:
            codes = await asyncio.gather(*(_status(g, key="internal") for g in gateways))
            down = [was or code != 200 for was, code in zip(down, codes, strict=True)]
            if all(down) and all(code == 200 for code in codes):
                marks["gateways"] = time.monotonic_ns()
        await asyncio.sleep(0.01)
    return marks


async def _settle(clients: list[WsClient], publisher: _Publisher, stall_s: float) -> None:
    """Until nothing has arrived for a while, or every client has the last push."""
    last = len(publisher.sent_ns) - 1
    quiet_since, seen = time.monotonic(), -1
    while time.monotonic() - quiet_since < stall_s:
        if all(c.parser.seqs and c.parser.seqs[-1] == last for c in clients):
            return
        total = sum(len(c.parser.seqs) for c in clients)
        if total != seen:
            seen, quiet_since = total, time.monotonic()
        await asyncio.sleep(0.05)


def _account(
    publisher: _Publisher,
    clients: list[WsClient],
    killed_ns: int,
    marks: dict[str, int],
    f: FailoverOptions,
) -> dict[str, Any]:
    sent = publisher.sent_ns
    first_after = next((s for s, t in enumerate(sent) if t >= killed_ns), len(sent))
    first_ns: int | None = None
    lost_per_client: list[int] = []
    missing_all: set[int] = set()
    order_violations = duplicates = 0
    accepted = {s for s, o in publisher.outcome.items() if o.startswith("ok")}
    for client in clients:
        parser = client.parser
        seqs = parser.seqs
        for seq, latency in zip(seqs, parser.tally.latencies_ns, strict=False):
            if seq >= first_after and seq < len(sent):
                arrived = sent[seq] + latency
                if first_ns is None or arrived < first_ns:
                    first_ns = arrived
        got = set(seqs)
        duplicates += len(seqs) - len(got)
        order_violations += parser.tally.order_violations
        missing = accepted - got
        missing_all |= missing
        lost_per_client.append(len(missing))
    errors: dict[str, int] = {}
    for outcome in publisher.outcome.values():
        if not outcome.startswith("ok"):
            errors[outcome] = errors.get(outcome, 0) + 1

    def since_kill(ns: int | None) -> float | None:
        return round((ns - killed_ns) / 1e9, 3) if ns is not None else None

    lost_seqs = sorted(missing_all)
    return {
        "first_delivery_s": since_kill(first_ns),
        "backup_serving_s": since_kill(marks.get("backup")),
        "gateways_ready_s": since_kill(marks.get("gateways")),
        "published": len(sent),
        "published_after_kill": len(sent) - first_after,
        "accepted": len(accepted),
        "accepted_with_no_gateway": sum(
            1 for o in publisher.outcome.values() if o == "ok-no-gateway"
        ),
        "publish_errors": errors,
        "lost": {
            "total": sum(lost_per_client),
            "max_per_client": max(lost_per_client, default=0),
            "clients_with_loss": sum(1 for n in lost_per_client if n),
            # Relative to the kill: negative means published before it (the dying primary).
            "published_at_s": [round((sent[s] - killed_ns) / 1e9, 3) for s in lost_seqs[:20]],
        },
        "duplicates": duplicates,
        "order_violations": order_violations,
        "clients": len(clients),
        "rate_msgs_per_s": f.rate,
        "peer_timeout_s": f.peer_timeout_s,
        "heartbeat_s": f.heartbeat_s,
    }


async def _restart(fleet: Fleet, primary: Child, backup: Child, f: FailoverOptions) -> bool:
    """Restart the primary on its addresses; True when it stays passive and the backup serves."""
    info = primary.info
    args = [
        "--commands", str(info["commands"]), "--fanout", str(info["fanout"]),
        "--http-port", str(info["http"]).rsplit(":", 1)[1],
        "--heartbeat-interval", f"{f.heartbeat_s:g}", "--peer-timeout", f"{f.peer_timeout_s:g}",
        "--role", "primary", "--peer-bind", str(info["peer"]),
        "--drain-timeout", "1", "--log-level", "INFO",
    ]  # fmt: skip
    restarted = await fleet.server("primary-restarted", "router", "router", args, 30.0)
    deadline = time.monotonic() + 4 * f.peer_timeout_s
    while time.monotonic() < deadline:
        if await _status(restarted) == 200 or await _status(backup) != 200:
            return False
        await asyncio.sleep(0.05)
    return True


# --- waiting -----------------------------------------------------------------------------------


async def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"failover: no {what} within {timeout:g} s")
        await asyncio.sleep(0.02)


async def _until_async(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise BenchError(f"failover: no {what} within {timeout:g} s")
        await asyncio.sleep(0.05)
