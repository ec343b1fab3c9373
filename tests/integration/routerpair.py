"""A primary/backup router pair with gateways and a worker as real processes, and the load
that failover and deploy tests put through it: an SDK publisher of sequence-numbered ticks and a
recorder of one client's pushes. Shared by test_failover.py and test_rolling_deploy.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from websockets.exceptions import ConnectionClosed

from roomcast import Cluster as SdkCluster
from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import (
    DRAIN_TIMEOUT,
    Event,
    Gateway,
    Metrics,
    Proc,
    WsClient,
    http_get,
    run_all,
)

__all__ = [
    "APP",
    "CLIENTS_PER_GATEWAY",
    "GATEWAY_FLAGS",
    "GATEWAY_TIMEOUT",
    "HEARTBEAT",
    "PEER_INTERVAL",
    "PEER_TIMEOUT",
    "PUBLISH_INTERVAL",
    "ROUTER_FLAGS",
    "ROUTER_TIMEOUT",
    "LinkProxy",
    "Pair",
    "Publisher",
    "Recorder",
    "metrics_at",
    "port_of",
    "ready_status",
    "router_proc",
]

HEARTBEAT = 0.5
GATEWAY_TIMEOUT = 2.0
ROUTER_TIMEOUT = 2.0
PEER_TIMEOUT = 1.0
PEER_INTERVAL = PEER_TIMEOUT / 4
ROUTER_FLAGS = (
    "--heartbeat-interval", str(HEARTBEAT),
    "--gateway-timeout", str(GATEWAY_TIMEOUT),
    "--peer-timeout", str(PEER_TIMEOUT),
    "--worker-timeout", "3",
)  # fmt: skip
GATEWAY_FLAGS = (
    "--heartbeat-interval", str(HEARTBEAT),
    "--router-timeout", str(ROUTER_TIMEOUT),
)  # fmt: skip
APP = "tests.integration.apps:app"
CLIENTS_PER_GATEWAY = 3
PUBLISH_INTERVAL = 0.01


# --- processes ---------------------------------------------------------------------------------


def router_proc(
    name: str,
    role: str,
    *,
    commands: str = "tcp://127.0.0.1:0",
    fanout: str = "tcp://127.0.0.1:0",
    http_port: int = 0,
    peer: tuple[str, str] = ("", ""),
    extra: Sequence[str] = (),
) -> Proc:
    bind, connect = peer
    argv = [
        "-m", "router", "--role", role,
        "--commands", commands, "--fanout", fanout, "--http-port", str(http_port),
        "--drain-timeout", str(DRAIN_TIMEOUT), *ROUTER_FLAGS, *extra,
    ]  # fmt: skip
    if bind:
        argv += ["--peer-bind", bind]
    if connect:
        argv += ["--peer-connect", connect]
    proc = Proc(name, argv)
    proc.wait_ready()
    return proc


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def ready_status(proc: Proc) -> int:
    return http_get(proc.info["http"] + "/readyz", timeout=2 * T)[0]


def metrics_at(url: str) -> Metrics:
    status, text = http_get(url + "/metrics")
    assert status == 200, text[:200]
    return Metrics(text)


class Pair:
    """A primary and a backup router, gateways given both, and optionally a worker."""

    def __init__(
        self,
        *,
        gateways: int,
        worker: bool,
        link_proxy: bool = False,
        router_args: Sequence[str] = (),
    ) -> None:
        self.router_args = tuple(router_args)
        self.procs: list[Proc] = []
        self.proxy: LinkProxy | None = None
        self.clients: list[WsClient] = []
        try:
            self.primary = self._add(
                router_proc("primary", "primary", peer=("tcp://127.0.0.1:0", ""), extra=router_args)
            )
            peer = self.primary.info["peer"]
            if link_proxy:
                self.proxy = LinkProxy(port_of(peer))
                peer = f"tcp://127.0.0.1:{self.proxy.port}"
            self.backup = self._add(
                router_proc("backup", "backup", peer=("", peer), extra=router_args)
            )
            deadline_poll(
                lambda: ready_status(self.primary) == 200 and ready_status(self.backup) == 503,
                10 * T,
                message="primary active and backup passive",
            )
            self.gateways = [self._gateway(i) for i in range(gateways)]
            self.worker = None
            if worker:
                argv = ["-m", "roomcast.cli", "worker", APP, "--router", self.commands]
                argv += ["--heartbeat-interval", str(HEARTBEAT)]
                self.worker = self._add(Proc("worker", argv))
                self.worker.wait_ready()
                for router in (self.primary, self.backup):  # workers register with both
                    deadline_poll(
                        lambda r=router: self.router_metrics(r).get("roomcast_router_workers") == 1,
                        10 * T,
                        message=f"{router.name} to know the worker",
                    )
        except BaseException:
            self.kill()
            raise

    def _add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def _gateway(self, i: int, *, port: int = 0, internal_port: int = 0) -> Gateway:
        fanouts = f"{self.primary.info['fanout']},{self.backup.info['fanout']}"
        argv = [
            "-m", "gateway", "--router", self.commands, "--fanout", fanouts,
            "--host", "127.0.0.1", "--port", str(port), "--internal-port", str(internal_port),
            "--env", "development", "--drain-timeout", str(DRAIN_TIMEOUT), *GATEWAY_FLAGS,
            *self.gateway_extra(),
        ]  # fmt: skip
        name = f"gateway{i}" if not port else f"gateway{i}-replacement"
        proc = self._add(Proc(name, argv))
        info = proc.wait_ready()
        return Gateway(proc, info["public"], info["internal"])

    def gateway_extra(self) -> Sequence[str]:
        """More gateway flags (a subclass's)."""
        return ()

    def replace_gateway(self, i: int) -> float:
        """What a rolling deploy does to one gateway pod: SIGTERM (it drains and must exit 0
        with a clean log), then a new gateway on the same ports (what the Service sends clients
        to next). Returns when the drained one exited (time.monotonic())."""
        old = self.gateways[i]
        old.proc.stop()
        exited = time.monotonic()
        old.proc.check_log()
        self.gateways[i] = self._gateway(
            i, port=port_of(old.public), internal_port=port_of(old.internal)
        )
        return exited

    @property
    def commands(self) -> str:
        """What the SDK, gateways and workers are given: both routers, primary first."""
        return f"{self.primary.info['commands']},{self.backup.info['commands']}"

    def router_metrics(self, router: Proc) -> Metrics:
        return metrics_at(router.info["http"])

    def gateway_metrics(self, i: int) -> Metrics:
        return metrics_at(self.gateways[i].internal)

    def switches(self) -> float:
        """How often the gateways turned from one router to the other, all told."""
        name = "roomcast_gateway_router_switches_total"
        return sum(self.gateway_metrics(i).get(name) for i in range(len(self.gateways)))

    def gateways_ready(self) -> bool:
        return all(http_get(g.internal + "/readyz")[0] == 200 for g in self.gateways)

    def ws(self, gateway: int) -> WsClient:
        client = WsClient(self.gateways[gateway].ws_url)
        self.clients.append(client)
        return client

    def restart_primary(self) -> None:
        """The primary again, on the same addresses (gateways and SDK know only those)."""
        self.restart("primary")

    def restart(self, role: str) -> Proc:
        """The router of ``role`` again, on its same addresses; returns the new process."""
        old = self.primary if role == "primary" else self.backup
        info = old.info
        # The primary binds the router-router link; the backup connects to it.
        peer = (info["peer"], "") if role == "primary" else ("", self.primary.info["peer"])
        new = self._add(
            router_proc(
                f"{role}-restarted",
                role,
                commands=info["commands"],
                fanout=info["fanout"],
                http_port=port_of(info["http"]),
                peer=peer,
                extra=self.router_args,
            )
        )
        if role == "primary":
            self.primary = new
        else:
            self.backup = new
        return new

    def __enter__(self) -> Pair:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        """Stop everything cleanly (exit 0, clean logs) after a passing block; kill it all
        after a failing one, so the failure is the one reported."""
        if kind is None:
            self.stop()
        else:
            self.kill()

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        order = [p for p in self.procs if p.name.startswith(("gateway", "worker"))]
        order += [p for p in self.procs if p not in order]
        live = [p for p in order if p.returncode is None]  # not killed by the test
        try:
            run_all(check for proc in live for check in (proc.stop, proc.check_log))
        finally:
            if self.proxy is not None:
                self.proxy.close()

    def kill(self) -> None:
        for client in self.clients:
            client.close()
        for proc in self.procs:
            proc.kill()
        if self.proxy is not None:
            self.proxy.close()


class LinkProxy:
    """A TCP forwarder on the router-router link only: :meth:`cut` breaks it, :meth:`heal`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._accepting(self._server)

    def _accepting(self, server: socket.socket) -> None:
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                down, _ = server.accept()
            except OSError:
                return  # cut: the listening socket is shut down
            try:
                up = socket.create_connection(("127.0.0.1", self.target_port), timeout=5 * T)
            except OSError:
                down.close()
                continue
            up.settimeout(None)
            with self._lock:
                if server.fileno() == -1:  # cut meanwhile: this pair never joins the link
                    down.close()
                    up.close()
                    return
                self._conns += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
            self._server.close()
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def heal(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR
        self._accepting(self._server)

    def close(self) -> None:
        self.cut()


# --- load ------------------------------------------------------------------------------------


class Recorder(threading.Thread):
    """Reads one client's pushes (its TCP window never closes) and stamps each on arrival."""

    def __init__(self, client: WsClient) -> None:
        super().__init__(name=f"record {client.name}", daemon=True)
        self.client = client
        self.got: list[tuple[float, Event]] = []
        self.problem: str | None = None
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        client = self.client
        try:
            while not self._halt.is_set():
                if not client.events:
                    client._pump(0.02)
                while client.events:
                    self.got.append((time.monotonic(), client.events.popleft()))
        except ConnectionClosed as exc:
            self.problem = f"connection closed ({exc.rcvd.code if exc.rcvd else None})"

    def finish(self) -> list[tuple[float, Event]]:
        self._halt.set()
        self.join(5 * T)
        assert not self.is_alive(), f"{self.client.name}: recorder stuck"
        assert self.problem is None, f"{self.client.name}: {self.problem}"
        return self.got


class Publisher(threading.Thread):
    """An SDK publisher (both routers in its url) broadcasting seq-numbered ticks at a fixed
    rate without waiting for each reply, so a reply held up by the failover delays nothing."""

    def __init__(self, url: str, room: str) -> None:
        super().__init__(name="publisher", daemon=True)
        self.url, self.room = url, room
        self.sent_at: list[float] = []
        self.outcome: dict[int, str] = {}  # seq -> "ok:<gateways>" or the exception's name
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        async with SdkCluster(self.url, timeout=3 * T, connect_timeout=10 * T) as cluster:
            tasks = []
            while not self._halt.is_set():
                seq = len(self.sent_at)
                self.sent_at.append(time.monotonic())
                coro = cluster.sockets.broadcast(self.room, "tick", {"s": seq})
                tasks.append(asyncio.ensure_future(self._one(seq, coro)))
                await asyncio.sleep(PUBLISH_INTERVAL)
            await asyncio.gather(*tasks)

    async def _one(self, seq: int, coro: Any) -> None:
        try:
            self.outcome[seq] = f"ok:{await coro}"
        except Exception as exc:  # recorded: the test judges
            self.outcome[seq] = type(exc).__name__

    def finish(self) -> None:
        self._halt.set()
        self.join(30 * T)
        assert not self.is_alive(), "publisher stuck"
