"""Metrics stay bounded and well named on live processes (issue 4, architecture §8).

* Naming: every family a live router or gateway exposes is ``roomcast_router_*`` /
  ``roomcast_gateway_*``, snake_case, in base units (seconds, bytes), counters end in ``_total``,
  gauges do not, latency histograms are in seconds with sub-millisecond buckets, and the only
  label names are from a small fixed vocabulary (never a room, socket, user or gateway id).
* Cardinality: the set of series a gateway and the router expose after a small workload
  (10 connections, 10 rooms) is exactly the set they expose after the same kinds of operations
  at size (2,000 connections in 500 rooms, with many distinct room names, socket ids, bogus ops
  and unknown API operations). A label fed by client input would show up as new series.
* Scrape cost at that size is measured and printed (``-s`` shows it); it is reported in
  docs/operations.md, never asserted as a time.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import statistics
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import Cluster, Metrics, http_get, start_cluster

# --------------------------------------------------------------------------------- the rules

_SNAKE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
# Label names a roomcast metric may carry: small fixed sets of values, each.
# "route": the route patterns action workers announce (app code, capped at 200 values; client
# paths that match none count as "unmatched").
_ALLOWED_LABELS = {"reason", "code", "kind", "status", "op", "operation", "route", "le"}
# Units that are not base units (Prometheus: seconds, bytes), as name words.
_NON_BASE_UNITS = {
    "ms", "msec", "millis", "milliseconds", "us", "usec", "micros", "microseconds", "ns",
    "nanoseconds", "minutes", "hours", "days", "kb", "kib", "mb", "mib", "gb", "kilobytes",
    "megabytes", "percent", "pct",
}  # fmt: skip
_TIME_WORDS = {"latency", "duration", "time", "delay", "age", "elapsed", "wait"}
_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$")


def _families(text: str) -> dict[str, str]:
    """``{family name: type}`` from the ``# TYPE`` lines of a Prometheus text exposition."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _TYPE_LINE.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def naming_problems(text: str, prefix: str) -> list[str]:
    """Every breach of the naming rules in one exposition (empty when it follows them)."""
    families = _families(text)
    problems: list[str] = []
    if not families:
        return ["no metric families at all"]
    # prometheus_client adds a ``<name>_created`` gauge (creation timestamp) beside every
    # counter and histogram: a library artefact, checked only for its prefix.
    artefacts = {
        f"{name.removesuffix('_total')}_created"
        for name, kind in families.items()
        if kind in ("counter", "histogram", "summary")
    }
    for name, kind in families.items():
        if not name.startswith(prefix):
            problems.append(f"{name}: not {prefix}*")
        if name in artefacts:
            continue
        if not _SNAKE.match(name):
            problems.append(f"{name}: not snake_case")
        words = set(name.removeprefix(prefix).split("_"))
        if words & _NON_BASE_UNITS:
            problems.append(f"{name}: non-base unit {sorted(words & _NON_BASE_UNITS)}")
        if kind == "counter" and not name.endswith("_total"):
            problems.append(f"{name}: counter without _total")
        if kind != "counter" and name.endswith("_total"):
            problems.append(f"{name}: {kind} named _total")
        if words & _TIME_WORDS and not name.endswith("_seconds"):
            problems.append(f"{name}: a time not in _seconds")
        if kind in ("histogram", "summary") and name.endswith("_total"):
            problems.append(f"{name}: histogram named _total")
    metrics = Metrics(text)
    seconds_buckets: dict[str, set[float]] = {}
    for sample, labels, _ in metrics.samples:
        bad = set(labels) - _ALLOWED_LABELS
        if bad:
            problems.append(f"{sample}: label(s) {sorted(bad)} outside {sorted(_ALLOWED_LABELS)}")
        if sample.endswith("_seconds_bucket"):
            seconds_buckets.setdefault(sample, set()).add(float(labels["le"]))
    for sample, bounds in seconds_buckets.items():
        if min(bounds) > 0.0005:
            problems.append(f"{sample}: no bucket below 0.5 ms (sub-millisecond hops)")
    return problems


# ------------------------------------------------------------------------------ async clients

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _post(url: str, body: Any) -> tuple[int, Any]:
    """``(status, parsed JSON body)`` of a POST to the server API (errors returned, not raised)."""
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with _OPENER.open(req, timeout=10 * T) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


class Client:
    """One plain ``/ws`` connection on the test's event loop (thousands of them are cheap)."""

    def __init__(self, ws: ClientConnection, sid: str) -> None:
        self.ws = ws
        self.sid = sid
        self._ref = 0

    @classmethod
    async def open(cls, url: str) -> Client:
        ws = await connect(
            url,
            compression=None,
            proxy=None,
            ping_interval=None,
            open_timeout=20 * T,
            close_timeout=5 * T,
            max_queue=None,
        )
        welcome = await cls._read(ws)
        assert welcome.get("op") == "welcome" and welcome.get("socket"), welcome
        return cls(ws, welcome["socket"])

    @staticmethod
    async def _read(ws: ClientConnection) -> dict[str, Any]:
        async with asyncio.timeout(20 * T):
            raw = await ws.recv()
        frame = json.loads(raw)
        assert isinstance(frame, dict), raw
        return frame

    async def send(self, op: str, **fields: Any) -> int:
        self._ref += 1
        await self.ws.send(json.dumps({"op": op, "ref": self._ref, **fields}))
        return self._ref

    async def replies(self, refs: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Read until every ref in ``refs`` is answered; no push may arrive meanwhile."""
        want = set(refs)
        got: dict[int, dict[str, Any]] = {}
        while want - got.keys():
            frame = await self._read(self.ws)
            assert frame.get("op") == "reply", f"{self.sid}: expected a reply, got {frame!r}"
            got[frame["ref"]] = frame
        return got

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        ref = await self.send(op, **fields)
        return (await self.replies([ref]))[ref]

    async def ok(self, op: str, **fields: Any) -> None:
        reply = await self.call(op, **fields)
        assert reply["statusCode"] == 200, f"{self.sid}: {op} {fields!r}: {reply!r}"

    async def event(self) -> Any:
        frame = await self._read(self.ws)
        assert frame.get("op") == "event", f"{self.sid}: expected an event, got {frame!r}"
        return frame["data"]

    async def close(self) -> None:
        await self.ws.close()


async def _gather_bounded(coros: Sequence[Any], limit: int = 100) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with sem:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


# -------------------------------------------------------------------------------- the workload


def _series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {(n, tuple(sorted(ls.items()))) for n, ls, _ in Metrics(text).samples}


def _scrape(url: str) -> str:
    status, text = http_get(url + "/metrics")
    assert status == 200, f"{url}/metrics: {status} {text[:200]}"
    return text


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _scrape_cost(url: str, pid: int, rounds: int = 200) -> dict[str, float]:
    """What ``rounds`` sequential GET /metrics cost: the scraper's wall time per scrape, the
    serving process's CPU time per scrape, and the size. GET /healthz on the same port gives
    the HTTP floor (what any request costs), so the exposition's own share can be read off."""
    floor = []
    for _ in range(rounds):
        started = time.perf_counter()
        assert http_get(url + "/healthz")[0] == 200
        floor.append(time.perf_counter() - started)
    times = []
    text = ""
    cpu = _cpu_seconds(pid)
    for _ in range(rounds):
        started = time.perf_counter()
        text = _scrape(url)
        times.append(time.perf_counter() - started)
    cpu = _cpu_seconds(pid) - cpu
    times.sort()
    return {
        "median_ms": 1000 * statistics.median(times),
        "p90_ms": 1000 * times[int(0.9 * (len(times) - 1))],
        "max_ms": 1000 * times[-1],
        "floor_ms": 1000 * statistics.median(floor),
        "cpu_ms": 1000 * cpu / rounds,
        "bytes": len(text.encode()),
        "series": len(Metrics(text).samples),
    }


async def _hostile(clients: Sequence[Client], api: str, n: int) -> None:
    """Client-chosen values that must never become label values: ``n`` distinct of each."""
    for i in range(n):
        client = clients[i % len(clients)]
        bogus = await client.call(f"bogus-{uuid.uuid4().hex}")
        assert bogus["statusCode"] == 400, bogus
        bad_room = await client.call("join", room="")
        assert bad_room["statusCode"] == 400, bad_room
        status, body = await asyncio.to_thread(_post, f"{api}/api/op-{uuid.uuid4().hex}", {})
        assert status == 404, (status, body)
        ghost = f"ghost-{uuid.uuid4().hex}"
        status, body = await asyncio.to_thread(
            _post, f"{api}/api/join", {"sockets": [ghost], "rooms": [f"r-{uuid.uuid4().hex}"]}
        )
        assert status == 404 and body["error"] == "no_such_socket", (status, body)
        # A broadcast to a room nobody is in: accepted, delivered nowhere.
        await client.ok("broadcast", rooms=f"empty-{uuid.uuid4().hex}", data=None)


async def _broadcast_to_rooms(
    sender: Client, members: dict[str, list[Client]], rooms: Sequence[str]
) -> None:
    """One broadcast per room (pipelined, acked), then every member but the sender gets it."""
    refs = [await sender.send("broadcast", rooms=room, data=room) for room in rooms]
    replies = await sender.replies(refs)
    assert all(r["statusCode"] == 200 for r in replies.values()), replies
    receivers = [(c, room) for room in rooms for c in members[room] if c is not sender]

    async def receive(client: Client, room: str) -> None:
        assert await client.event() == room, f"{client.sid} in {room}"

    await _gather_bounded([receive(c, room) for c, room in receivers], limit=len(receivers))


async def _workload(c: Cluster, report: dict[str, Any]) -> None:
    gw = c.gateways[0]
    url, api, router = gw.ws_url, gw.internal, c.router.info["http"]
    tag = uuid.uuid4().hex[:8]
    rooms = [f"bounds-{tag}-{i}" for i in range(500)]
    members: dict[str, list[Client]] = {room: [] for room in rooms}
    clients: list[Client] = []

    async def grow(total: int) -> None:
        """Open clients until ``total`` are open; client ``i`` joins ``rooms[i % 500]``."""
        new = await _gather_bounded([Client.open(url) for _ in range(total - len(clients))])
        start = len(clients)
        clients.extend(new)
        for i, client in enumerate(new, start):
            members[rooms[i % len(rooms)]].append(client)
        await _gather_bounded(
            [cl.ok("join", room=rooms[i % len(rooms)]) for i, cl in enumerate(new, start)]
        )

    async def churn(total: int) -> None:
        """One more client comes, joins, leaves and closes (client-initiated): back to total."""
        extra = await Client.open(url)
        await extra.ok("join", room=rooms[0])
        await extra.ok("leave", room=rooms[0])
        await extra.close()

        def back() -> bool:
            return Metrics(_scrape(api)).get("roomcast_gateway_connections") == total

        await asyncio.to_thread(_wait, back, "the churned client is gone")

    # Small: 10 connections, each in its own room, every kind of operation once.
    await grow(10)
    await _broadcast_to_rooms(clients[0], members, rooms[:10])
    await _hostile(clients[1:], api, 1)
    await churn(10)

    # Periodic traffic is one more kind of event: let the gateway's first heartbeat (1 s) in.
    def beat() -> bool:
        return Metrics(_scrape(router)).get("roomcast_router_commands_total", kind="heartbeat") > 0

    await asyncio.to_thread(_wait, beat, "the router counted a gateway heartbeat")
    small_gw, small_router = _scrape(api), _scrape(router)
    report["small"] = {
        "gateway": await asyncio.to_thread(_scrape_cost, api, gw.proc.popen.pid),
        "router": await asyncio.to_thread(_scrape_cost, router, c.router.popen.pid),
    }

    # At size: 2,000 connections in 500 rooms, the same kinds of operations, many values.
    started = time.perf_counter()
    await grow(2000)
    report["open_2000_s"] = time.perf_counter() - started
    await _broadcast_to_rooms(clients[0], members, rooms)
    await _hostile(clients[1:], api, 25)
    await churn(2000)
    big_gw, big_router = _scrape(api), _scrape(router)
    gm, rm = Metrics(big_gw), Metrics(big_router)
    assert gm.get("roomcast_gateway_connections") == 2000
    assert rm.get("roomcast_router_sockets") == 2000
    assert rm.get("roomcast_router_rooms") == 2000 + 500  # own-id rooms + the 500
    assert rm.get("roomcast_router_memberships") == 2000 + 2000
    report["big"] = {
        "gateway": await asyncio.to_thread(_scrape_cost, api, gw.proc.popen.pid),
        "router": await asyncio.to_thread(_scrape_cost, router, c.router.popen.pid),
    }
    report["series"] = {
        "gateway": (_series(small_gw), _series(big_gw)),
        "router": (_series(small_router), _series(big_router)),
    }
    report["ids"] = {cl.sid for cl in clients} | set(rooms)
    report["label_values"] = {v for _, ls, _ in [*gm.samples, *rm.samples] for v in ls.values()}
    await _gather_bounded([cl.close() for cl in clients], limit=500)


def _wait(fn: Any, what: str) -> None:
    deadline_poll(fn, 10 * T, 0.02, message=what)


# ----------------------------------------------------------------------------------- the tests


def test_metric_names_follow_the_rules_on_live_processes(cluster: Cluster) -> None:
    # Give the labelled families children first, all on gateway 0: a client op of each kind,
    # a client error, a client-initiated close, server API calls and a router command error.
    gw = cluster.gateways[0]
    client = cluster.ws(0)
    room = f"names-{uuid.uuid4().hex}"
    client.join(room)
    client.broadcast(room, 1, echo=True)
    client.next_event()
    client.leave(room)
    assert client.request("bogus")["statusCode"] == 400
    cluster.ws(0).close()
    assert _post(gw.internal + "/api/count", {"room": room})[0] == 200
    status, _ = _post(gw.internal + "/api/join", {"sockets": ["ghost"], "rooms": room})
    assert status == 404
    expected = {
        "roomcast_gateway_connections",
        "roomcast_gateway_disconnects_total",
        "roomcast_gateway_client_errors_total",
        "roomcast_gateway_api_requests_total",
        "roomcast_gateway_command_duration_seconds_bucket",
        "roomcast_gateway_delivery_latency_seconds_bucket",
    }

    # The close is counted when the gateway sees it: poll for the families to be there.
    def complete() -> str | None:
        text = _scrape(gw.internal)
        return text if expected <= Metrics(text).names() else None

    text = deadline_poll(complete, 10 * T, message=f"gateway 0 exposes {sorted(expected)}")
    texts = {"gateway 0": text}
    texts |= {f"gateway {i}": _scrape(g.internal) for i, g in enumerate(cluster.gateways) if i}
    for who, text in texts.items():
        problems = naming_problems(text, "roomcast_gateway_")
        assert not problems, f"{who}:\n  " + "\n  ".join(problems)
    text = _scrape(cluster.router.info["http"])
    problems = naming_problems(text, "roomcast_router_")
    assert not problems, "router:\n  " + "\n  ".join(problems)
    names = Metrics(text).names()
    assert {"roomcast_router_commands_total", "roomcast_router_command_errors_total"} <= names


def test_naming_rules_catch_bad_names() -> None:
    """The checker itself: each rule rejects what it should (so a pass above means something)."""
    bad = "\n".join(
        [
            "# TYPE roomcast_gateway_sends counter",
            "roomcast_gateway_sends_total 1",
            "# TYPE roomcast_gateway_queue_total gauge",
            "roomcast_gateway_queue_total 1",
            "# TYPE roomcast_gateway_latency_ms histogram",
            'roomcast_gateway_latency_ms_bucket{le="1.0"} 1',
            "# TYPE roomcast_gateway_write_latency gauge",
            "roomcast_gateway_write_latency 1",
            "# TYPE roomcast_gateway_members gauge",
            'roomcast_gateway_members{room="lobby"} 1',
            "# TYPE roomcast_gateway_send_seconds histogram",
            'roomcast_gateway_send_seconds_bucket{le="0.01"} 1',
            "# TYPE other_metric gauge",
            "other_metric 1",
        ]
    )
    problems = "\n".join(naming_problems(bad, "roomcast_gateway_"))
    for expected in (
        "roomcast_gateway_sends: counter without _total",
        "roomcast_gateway_queue_total: gauge named _total",
        "roomcast_gateway_latency_ms: non-base unit ['ms']",
        "roomcast_gateway_write_latency: a time not in _seconds",
        "label(s) ['room']",
        "roomcast_gateway_send_seconds_bucket: no bucket below 0.5 ms",
        "other_metric: not roomcast_gateway_*",
    ):
        assert expected in problems, f"{expected!r} not reported:\n{problems}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_series_are_the_same_with_10_rooms_as_with_2000_connections_in_500_rooms() -> None:
    c = start_cluster(gateways=1)
    try:
        report: dict[str, Any] = {}
        asyncio.run(_workload(c, report))
        for who, (small, big) in report["series"].items():
            assert small == big, (
                f"{who}: series differ between 10 rooms and 2,000 connections in 500 rooms\n"
                f"  new at size: {sorted(big - small)[:20]}\n"
                f"  gone at size: {sorted(small - big)[:20]}"
            )
        leaked = report["label_values"] & report["ids"]
        assert not leaked, f"room names or socket ids used as label values: {sorted(leaked)[:10]}"
        lines = [f"opened 2,000 connections (joined 500 rooms) in {report['open_2000_s']:.1f}s"]
        for size in ("small", "big"):
            for who in ("gateway", "router"):
                m = report[size][who]
                lines.append(
                    f"{size:5} {who:7}: {m['series']} series, {m['bytes']} bytes; "
                    f"GET /metrics median {m['median_ms']:.2f} ms, p90 {m['p90_ms']:.2f} ms, "
                    f"max {m['max_ms']:.2f} ms (GET /healthz median {m['floor_ms']:.2f} ms); "
                    f"process CPU {m['cpu_ms']:.2f} ms per scrape"
                )
        print("\nscrape cost\n  " + "\n  ".join(lines))
        c.stop()
    finally:
        c.kill()
