"""Multi-host fault test (issue 7; architecture §7): router and gateways on separate network hosts.

The test builds its own hosts: Linux network namespaces for the router, two gateways and a
client host, each with one veth into a bridge in a "switch" namespace, addressed in a private
/24 (:data:`SUBNET`) that exists only inside those namespaces. Nothing in the machine's own
network namespace is touched; the namespaces are deleted in ``finally``.

Processes run with ``ip netns exec NS python -m ...`` bound to their host's address. The test
process (outside every namespace) drives them through an agent on the client host: this module
run as ``python -m tests.integration.test_netns`` (lean /ws clients + the SDK, one JSON command
per stdin line). Then a gateway's link is cut (``ip link set eth0 down`` inside its namespace):
the router expires it and counts are exact without its sockets, while the other gateway's
clients go on receiving; the link is healed: the gateway resyncs and counts are exact again,
its clients still connected. Skipped, with the reason printed, only where the kernel refuses
network namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import Metrics, Proc

SUBNET = "10.213.77"  # a /24 of the test's own hosts, inside its namespaces only
ROUTER_ADDR = f"{SUBNET}.1"
GATEWAY_ADDRS = (f"{SUBNET}.11", f"{SUBNET}.12")
CLIENT_ADDR = f"{SUBNET}.100"
HEARTBEAT = 0.5
GATEWAY_TIMEOUT = 2.0
ROUTER_TIMEOUT = 2.0
CLIENTS_PER_GATEWAY = 20

# `ip netns exec NS python ARGS...`, as the process itself (exec, so SIGTERM reaches it).
_LAUNCH = (
    "import os, sys; "
    "os.execvp('ip', ['ip', 'netns', 'exec', sys.argv[1], sys.executable, *sys.argv[2:]])"
)


# --------------------------------------------------------------------------- agent (client host)


async def _agent() -> int:
    """Serve the test from inside the client namespace: one JSON command per line."""
    from roomcast import Cluster
    from roomcast.bench.wsclient import WsClient, connect, stamp

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    loop.add_signal_handler(signal.SIGTERM, reader.feed_eof)  # SIGTERM: finish, exit 0
    clients: list[WsClient] = []
    sdk = Cluster(sys.argv[1], timeout=3.0, connect_timeout=1.0)

    async def on_connect(host: str, port: int, n: int, rooms: list[str]) -> dict[str, Any]:
        async def one() -> WsClient:
            client = await connect(host, port, "/ws", timeout=10.0, record=True)
            for room in rooms:
                reply = await client.request("join", 10.0, room=room)
                if reply.get("statusCode") != 200:
                    raise RuntimeError(f"join {room}: {reply}")
            return client

        opened = await asyncio.gather(*(one() for _ in range(n)))
        clients.extend(opened)
        return {"ids": [c.socket_id for c in opened]}

    async def on_query(rooms: list[str]) -> dict[str, Any]:
        counts = await asyncio.gather(*(sdk.sockets.count(r) for r in rooms))
        members = await asyncio.gather(*(sdk.sockets.members(r) for r in rooms))
        return {"counts": counts, "members": [sorted(m) for m in members]}

    async def on_broadcast(
        rooms: list[str], seq: int, wait: float, expect: list[str] | None = None
    ) -> dict[str, Any]:
        """Broadcast ``seq``; wait (bounded) until the ``expect`` clients (default: all) have
        it; answer which clients do not have it."""
        handed = await sdk.sockets.broadcast(rooms, "check", stamp(seq, ""))
        deadline = time.monotonic() + wait
        waiting = [c for c in clients if expect is None or c.socket_id in expect]
        while time.monotonic() < deadline:
            waiting = [c for c in waiting if seq not in c.parser.seqs]
            if not waiting:
                break
            await asyncio.sleep(0.02)
        missing = [c.socket_id for c in clients if seq not in c.parser.seqs]
        return {"gateways": handed, "missing": missing}

    async def on_status() -> dict[str, Any]:
        closed = {c.socket_id: c.close_code for c in clients if not c.is_open}
        return {"open": len(clients) - len(closed), "closed": closed}

    async def on_http(url: str) -> dict[str, Any]:
        def get() -> tuple[int, str]:
            import urllib.error
            import urllib.request

            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            try:
                with opener.open(url, timeout=3.0) as resp:
                    return resp.status, resp.read().decode()
            except urllib.error.HTTPError as exc:
                with exc:
                    return exc.code, exc.read().decode()
            except OSError as exc:
                return 0, str(exc)

        status, body = await asyncio.to_thread(get)
        return {"status": status, "body": body}

    handlers = {
        "connect": on_connect,
        "query": on_query,
        "broadcast": on_broadcast,
        "status": on_status,
        "http": on_http,
    }
    print("READY {}", flush=True)
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            try:
                answer = {"ok": True, **await handlers[cmd.pop("cmd")](**cmd)}
            except Exception as exc:  # reported to the test, which decides
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(answer), flush=True)
    finally:
        for c in clients:
            c.abort()
        await sdk.close()
    return 0


# --------------------------------------------------------------------------- the test side


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


class Hosts:
    """The namespaces: a switch with a bridge, and one namespace per host on it."""

    def __init__(self) -> None:
        tag = f"rc{os.getpid()}"
        self.switch = f"{tag}-sw"
        self.ns = {
            "router": f"{tag}-r",
            "gateway0": f"{tag}-g0",
            "gateway1": f"{tag}-g1",
            "client": f"{tag}-c",
        }
        self.addr = {
            "router": ROUTER_ADDR,
            "gateway0": GATEWAY_ADDRS[0],
            "gateway1": GATEWAY_ADDRS[1],
            "client": CLIENT_ADDR,
        }
        self.created: list[str] = []

    def create(self) -> None:
        ip("netns", "add", self.switch)
        self.created.append(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for i, (host, ns) in enumerate(self.ns.items()):
            ip("netns", "add", ns)
            self.created.append(ns)
            port = f"p{i}"
            ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", ns)  # fmt: skip
            ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{self.addr[host]}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def destroy(self) -> None:
        for ns in reversed(self.created):
            ip("netns", "del", ns, check=False)
        self.created.clear()

    def link(self, host: str, up: bool) -> None:
        ip("-n", self.ns[host], "link", "set", "eth0", "up" if up else "down")

    def proc(self, host: str, name: str, *argv: str) -> Proc:
        return Proc(name, ["-c", _LAUNCH, self.ns[host], *argv], stdin=name == "agent")


def namespaces_refused() -> str | None:
    """Why network namespaces cannot be used here, or None."""
    if shutil.which("ip") is None:
        return "the ip command (Debian iproute2) is not installed"
    probe = f"rc{os.getpid()}-probe"
    result = ip("netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"'ip netns add' failed: {result.stderr.strip() or result.returncode}"
    ip("netns", "del", probe, check=False)
    return None


class Agent:
    def __init__(self, proc: Proc) -> None:
        self.proc = proc

    def __call__(self, cmd: str, timeout: float = 20 * T, **args: Any) -> dict[str, Any]:
        self.proc.writeline(json.dumps({"cmd": cmd, **args}))
        answer: dict[str, Any] = json.loads(self.proc.readline(timeout))
        assert answer.get("ok") is True, f"agent {cmd}: {answer}"
        return answer

    def metrics(self, url: str) -> Metrics:
        answer = self("http", url=url + "/metrics")
        assert answer["status"] == 200, answer
        return Metrics(answer["body"])


@contextlib.contextmanager
def hosts() -> Iterator[Hosts]:
    why = namespaces_refused()
    if why is not None:
        print(f"\n[netns] skipped: {why}")
        pytest.skip(f"network namespaces unavailable: {why}")
    h = Hosts()
    try:
        h.create()
        yield h
    finally:
        h.destroy()


@pytest.mark.timeout(180)
def test_cut_gateway_link_expires_it_then_heal_resyncs() -> None:
    with hosts() as h:
        procs: list[Proc] = []
        try:
            _run(h, procs)
        except BaseException:
            for proc in procs:
                print(proc.log_tail(40))
            raise
        finally:
            for proc in procs:
                proc.kill()


def _run(h: Hosts, procs: list[Proc]) -> None:
    router = h.proc(
        "router", "router",
        "-m", "router",
        "--commands", f"tcp://{ROUTER_ADDR}:5570",
        "--fanout", f"tcp://{ROUTER_ADDR}:5571",
        "--http-host", ROUTER_ADDR,
        "--http-port", "5572",
        "--heartbeat-interval", str(HEARTBEAT),
        "--gateway-timeout", str(GATEWAY_TIMEOUT),
        "--drain-timeout", "2",
    )  # fmt: skip
    procs.append(router)
    rinfo = router.wait_ready()
    assert rinfo["commands"] == f"tcp://{ROUTER_ADDR}:5570", rinfo
    gws = []
    for i, name in enumerate(("gateway0", "gateway1")):
        addr = GATEWAY_ADDRS[i]
        gw = h.proc(
            name, name,
            "-m", "gateway",
            "--router", rinfo["commands"],
            "--fanout", rinfo["fanout"],
            "--host", addr,
            "--port", "8080",
            "--internal-host", addr,
            "--internal-port", "8081",
            "--env", "development",
            "--heartbeat-interval", str(HEARTBEAT),
            "--router-timeout", str(ROUTER_TIMEOUT),
            "--router-unavailable-close", "600",
            # No WebSocket ping may fall due while the link is cut.
            "--ping-interval", "300",
            "--ping-timeout", "200",
            "--drain-timeout", "2",
        )  # fmt: skip
        procs.append(gw)
        gws.append(gw)
    infos = [gw.wait_ready() for gw in gws]
    agent_proc = h.proc("client", "agent", "-m", "tests.integration.test_netns", rinfo["commands"])
    procs.append(agent_proc)
    agent_proc.wait_ready()
    agent = Agent(agent_proc)

    rooms = ["lobby", "ops"]
    ids: dict[str, list[str]] = {}
    for i, name in enumerate(("gateway0", "gateway1")):
        answer = agent("connect", host=GATEWAY_ADDRS[i], port=8080, n=CLIENTS_PER_GATEWAY,
                       rooms=rooms)  # fmt: skip
        ids[name] = answer["ids"]
    everyone = sorted(ids["gateway0"] + ids["gateway1"])

    def exact(expected: list[str]) -> bool:
        q = agent("query", rooms=rooms)
        return q["counts"] == [len(expected)] * len(rooms) and all(
            m == expected for m in q["members"]
        )

    assert exact(everyone), agent("query", rooms=rooms)
    assert not agent("broadcast", rooms=rooms, seq=1, wait=10 * T)["missing"]

    # Cut gateway1 off the network: the router stops hearing it and expires it.
    cut_at = time.monotonic()
    h.link("gateway1", up=False)
    deadline_poll(
        lambda: exact(sorted(ids["gateway0"])), 10 * GATEWAY_TIMEOUT * T, 0.05,
        message="the router expiring gateway1",
    )  # fmt: skip
    expiry_s = time.monotonic() - cut_at
    rm = agent.metrics(rinfo["http"])
    assert rm.get("roomcast_router_gateway_expired_total") == 1
    assert rm.get("roomcast_router_gateways") == 1
    # The other gateway's clients are not affected.
    answer = agent("broadcast", rooms=rooms, seq=2, wait=10 * T, expect=ids["gateway0"])
    assert set(answer["missing"]) <= set(ids["gateway1"]), answer
    assert answer["gateways"] == 1
    cut_s = time.monotonic() - cut_at

    # Heal: gateway1 is told it is unknown (or finds the router silent), says Hello, resyncs.
    healed_at = time.monotonic()
    h.link("gateway1", up=True)
    deadline_poll(lambda: exact(everyone), 30 * T, 0.05, message="exact counts after the heal")
    resync_s = time.monotonic() - healed_at
    g1 = agent.metrics(infos[1]["internal"])
    assert g1.get("roomcast_gateway_resyncs_total") >= 2, "gateway1 did not resync"
    assert agent("http", url=infos[1]["public"] + "/readyz")["status"] == 200
    status = agent("status")
    assert status["closed"] == {}, status  # every client stayed connected through the cut
    answer = agent("broadcast", rooms=rooms, seq=3, wait=10 * T)
    assert answer["missing"] == [] and answer["gateways"] == 2, answer
    print(
        f"\n[netns] cut gateway1's link: router expired it after {expiry_s:.2f}s "
        f"(gateway timeout {GATEWAY_TIMEOUT}s); partitioned {cut_s:.2f}s; after the heal "
        f"counts were exact again in {resync_s:.2f}s; {len(everyone)} clients, none closed"
    )

    for proc in [agent_proc, *gws, router]:
        proc.stop()
        proc.check_log()


if __name__ == "__main__":
    sys.exit(asyncio.run(_agent()))
