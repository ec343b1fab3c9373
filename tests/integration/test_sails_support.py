"""Helpers shared by the Sails / Socket.IO integration tests; this module holds no tests.

(It is named ``test_sails_*`` because that is the file family these tests own; pytest collects
it and finds nothing to run.)

* :class:`SailsCluster`: a router, gateways (``--env development``) and real ``roomcast worker``
  processes serving ``tests.integration.apps:app`` (``python -m roomcast.cli worker ...`` from the
  repo root, as ``roomcast dev`` starts them).
* :class:`NodeDriver`: ``node tests/js/sails_client.js``, which holds real JS clients (sails.io.js
  1.2.1 over socket.io-client 2.x, raw socket.io-client 2.x and 4.x) and speaks JSON lines.
* :class:`SioRaw`: a raw Socket.IO client over the ``websockets`` sync client that sends exactly
  the Engine.IO/Socket.IO text packets a test gives it (EIO=3 or 4), for bad input and pings.

Every wait has a deadline in ``TIMEOUT_UNIT``s; nothing sleeps.
"""

from __future__ import annotations

import inspect
import itertools
import json
import shutil
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import REPO, Cluster, Proc, gateway_proc, start_cluster

__all__ = [
    "ACTIONS_APP",
    "SDK_QUERY",
    "SDK_VERSION",
    "NodeDriver",
    "SailsCluster",
    "SioRaw",
    "assert_jwr_shape",
    "extra_gateway",
    "header_names",
    "jwr_error_body",
    "node_driver",
    "sails_cluster",
    "worker_proc",
]

ACTIONS_APP = "tests.integration.apps:app"
# websockets >= 17.1 wants connect() as a context manager unless legacy=True (older ones lack it).
_LEGACY: dict[str, Any] = (
    {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}
)
SDK_VERSION = "1.2.1"
SDK_QUERY = f"__sails_io_sdk_version={SDK_VERSION}"
JS_DIR = REPO / "tests" / "js"
DRIVER = JS_DIR / "sails_client.js"


# ------------------------------------------------------------------------------ processes


def worker_proc(commands: str, app: str = ACTIONS_APP, name: str = "worker") -> Proc:
    """``roomcast worker APP --router COMMANDS`` (as ``python -m roomcast.cli``), not yet READY."""
    return Proc(name, ["-m", "roomcast.cli", "worker", app, "--router", commands])


@dataclass
class SailsCluster:
    """A :class:`Cluster` plus its action workers and any extra processes a test started.

    Logs are checked incrementally: :meth:`check_healthy` fails on ERROR/Traceback lines
    written since the previous check, and :meth:`accept_log` lets a test consume the ERROR it
    caused on purpose (a worker logs the exception of ``/boom``).
    """

    cluster: Cluster
    workers: list[Proc]
    extra: list[Proc] = field(default_factory=list)
    _checked: dict[str, int] = field(default_factory=dict)

    @property
    def commands(self) -> str:
        return self.cluster.commands

    def public(self, gateway: int) -> str:
        return self.cluster.gateways[gateway].public

    @property
    def procs(self) -> list[Proc]:
        return [*self.cluster.procs, *self.workers, *self.extra]

    def check_healthy(self) -> None:
        for proc in self.procs:
            if proc.returncode is not None:  # an extra process a test stopped on purpose
                continue
            if not proc.alive():
                pytest.fail(f"{proc.name} died (exit {proc.popen.poll()})\n{proc.log_tail()}")
            size = proc.log_size()
            proc.check_log(self._checked.get(proc.name, 0))
            self._checked[proc.name] = size

    def accept_log(self, proc: Proc, needle: str, error_line: str) -> None:
        """Wait for ``needle`` in ``proc``'s log (the last line of an expected traceback); the
        only bad lines since the last check may be ``error_line`` and "Traceback" headers."""
        since = self._checked.get(proc.name, 0)

        def logged() -> bool:
            with open(proc.log_path, "rb") as f:
                f.seek(since)
                return needle in f.read().decode("utf-8", "replace")

        deadline_poll(logged, 5 * T, message=f"{needle!r} in {proc.name}'s log")
        size = proc.log_size()
        unexpected = [
            line
            for line in proc.bad_log_lines(since)
            if error_line not in line and not line.startswith("Traceback (most recent call last)")
        ]
        if unexpected:
            pytest.fail(f"{proc.name}: unexpected log lines: {unexpected}\n{proc.log_tail()}")
        self._checked[proc.name] = size

    def stop(self) -> None:
        """SIGTERM everything (extra processes and workers, gateways, the router last): each
        must exit 0 with no unexpected log line since the last check."""
        failures: list[str] = []
        gateways = [g.proc for g in self.cluster.gateways]
        try:
            self.cluster.close_clients()
            for proc in [*self.extra, *self.workers, *gateways, self.cluster.router]:
                if proc.returncode is not None:  # stopped (and checked) by its test
                    continue
                since = self._checked.get(proc.name, 0)
                try:
                    proc.stop()
                    proc.check_log(since)
                except pytest.fail.Exception as exc:
                    failures.append(str(exc))
        finally:
            for proc in self.procs:
                proc.kill()
        if failures:
            pytest.fail("\n\n".join(failures))


@contextmanager
def sails_cluster(
    *, gateways: int = 2, workers: int = 1, gateway_args: Sequence[str] = ()
) -> Iterator[SailsCluster]:
    """Start a router, ``gateways`` gateways and ``workers`` workers; stop all (exit 0) after."""
    cluster = start_cluster(gateways=gateways, gateway_args=gateway_args)
    procs: list[Proc] = []
    try:
        procs = [worker_proc(cluster.commands, name=f"worker{i}") for i in range(workers)]
        for proc in procs:
            info = proc.wait_ready()
            assert info.get("router") == cluster.commands, info
    except BaseException:
        for proc in procs:
            proc.kill()
        cluster.kill()
        raise
    sc = SailsCluster(cluster, procs)
    try:
        yield sc
    except BaseException:
        for proc in [*sc.extra, *procs]:
            proc.kill()
        cluster.kill()
        raise
    sc.stop()


def extra_gateway(sc: SailsCluster, name: str, *args: str) -> tuple[Proc, str]:
    """One more gateway on ``sc``'s router (own flags); returns it and its public URL."""
    proc = gateway_proc(name, sc.cluster.router.info, *args)
    sc.extra.append(proc)
    info = proc.wait_ready()
    return proc, str(info["public"])


# ------------------------------------------------------------------------------ node clients


# The driver's transports unless a test asks otherwise (tests/js/sails_client.js).
WEBSOCKET_ONLY: tuple[str, ...] = ("websocket",)


class NodeDriver:
    """``tests/js/sails_client.js``: real JS Socket.IO clients, driven by JSON lines.

    ``call()`` sends a command and returns its immediate reply; later lines (responses to
    requests, acks, what a client saw) are buffered and taken with :meth:`wait`.
    """

    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None:
            pytest.fail("node is not on PATH (scripts/bootstrap needs Node.js 20)")
        for pkg in ("sails.io.js", "socket.io-client", "socket.io-client-v4"):
            if not (JS_DIR / "node_modules" / pkg / "package.json").is_file():
                pytest.fail(f"tests/js/node_modules/{pkg} is missing: run scripts/bootstrap")
        # Proc runs the Python interpreter: exec node in its place (same pid, same pipes).
        exec_node = "import os, sys; os.execv(sys.argv[1], sys.argv[1:])"
        self.proc = Proc("node", ["-c", exec_node, node, str(DRIVER)], stdin=True)
        self.info = self.proc.wait_ready()
        self._ids = itertools.count(1)
        self._clients = itertools.count(1)
        self.lines: list[dict[str, Any]] = []
        self.open: list[str] = []  # clients not closed yet

    # --------------------------------------------------------------- plumbing

    def _pull(self, timeout: float) -> None:
        self._take(self.proc.readline(timeout))

    def pull_for(self, seconds: float) -> None:
        """Buffer whatever the driver prints within ``seconds`` (silence is no failure)."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            line = self.proc.poll_line(remaining)
            if line is not None:
                self._take(line)

    def _take(self, line: str) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            pytest.fail(f"node driver printed a non-JSON line: {line!r}\n{self.proc.log_tail()}")
        assert isinstance(msg, dict), line
        if msg.get("type") == "fail":
            pytest.fail(f"node driver command failed: {msg!r}\n{self.proc.log_tail()}")
        self.lines.append(msg)

    def wait(
        self, match: Callable[[dict[str, Any]], bool], timeout: float | None = None, what: str = ""
    ) -> dict[str, Any]:
        """The first line (buffered or yet to come) that ``match``es, taken from the buffer."""
        timeout = 10 * T if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            for i, msg in enumerate(self.lines):
                if match(msg):
                    return self.lines.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(
                    f"node driver: nothing matching {what or match} within {timeout:.1f}s; "
                    f"buffered: {self.lines[-10:]!r}"
                )
            self._pull(remaining)

    def next_id(self) -> int:
        return next(self._ids)

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one command; return its immediate reply (``ok``/``sent``/``state``)."""
        cid = fields.pop("id", None) or self.next_id()
        self.proc.writeline(json.dumps({"id": cid, "op": op, **fields}))
        reply = self.wait(
            lambda m: m.get("id") == cid and m.get("type") in ("ok", "sent", "state"),
            what=f"the reply to {op} #{cid}",
        )
        reply["id"] = cid
        return reply

    def client_name(self, prefix: str) -> str:
        name = f"{prefix}{next(self._clients)}"
        self.open.append(name)
        return name

    def close_all(self) -> None:
        """Close every client made so far (end of a test) and drop what is buffered."""
        while self.open:
            self.call("close", client=self.open.pop())
        self.lines.clear()

    # --------------------------------------------------------------- what clients saw

    def seen(self, client: str, kind: str, timeout: float | None = None) -> dict[str, Any]:
        return self.wait(
            lambda m: m.get("client") == client and m.get("type") == kind,
            timeout,
            what=f"{kind} on {client}",
        )

    def take_all(self, client: str, kind: str) -> int:
        """How many ``kind`` lines of ``client`` are buffered (taken from the buffer)."""
        keep = [m for m in self.lines if not (m.get("client") == client and m.get("type") == kind)]
        taken = len(self.lines) - len(keep)
        self.lines[:] = keep
        return taken

    def event(self, client: str, event: str | None = None, timeout: float | None = None) -> Any:
        """The next push ``client`` received (of ``event``, if given); returns its args."""
        msg = self.wait(
            lambda m: (
                m.get("client") == client
                and m.get("type") == "event"
                and (event is None or m.get("event") == event)
            ),
            timeout,
            what=f"event {event or '*'} on {client}",
        )
        return msg["event"], msg["args"]

    def response(self, cid: int, timeout: float | None = None) -> dict[str, Any]:
        return self.wait(
            lambda m: m.get("id") == cid and m.get("type") == "response",
            timeout,
            what=f"the callback of request #{cid}",
        )

    def ack(self, cid: int, client: str, timeout: float | None = None) -> list[Any]:
        """The ack of emit ``cid``; fails at once if ``client`` disconnects first."""
        msg = self.wait(
            lambda m: (
                (m.get("id") == cid and m.get("type") == "ack")
                or (m.get("client") == client and m.get("type") == "disconnect")
            ),
            timeout,
            what=f"the ack of emit #{cid}",
        )
        if msg.get("type") == "disconnect":
            pytest.fail(f"{client} disconnected ({msg.get('reason')}) before the ack of #{cid}")
        return list(msg["args"])

    # --------------------------------------------------------------- sails.io.js

    def sails(
        self,
        url: str,
        *,
        listen: Sequence[str] = (),
        requests: Sequence[dict[str, Any]] = (),
        query: str | None = None,
        headers: dict[str, str] | None = None,
        wait: bool = True,
        reconnect: bool = False,
        rejoin: dict[str, Any] | None = None,
        transports: Sequence[str] | None = WEBSOCKET_ONLY,
    ) -> tuple[str, dict[str, Any]]:
        """``io.sails.connect(url)``; returns the client name and the command's reply (which
        says which of ``requests``, made before connecting, sails.io.js queued). ``reconnect``,
        ``rejoin`` and ``transports`` (None: the library's default): see
        tests/js/sails_client.js."""
        name = self.client_name("sails")
        fields: dict[str, Any] = {"client": name, "url": url, "listen": list(listen)}
        fields.update(reconnect=reconnect, rejoin=rejoin)
        if transports != WEBSOCKET_ONLY:
            fields["transports"] = None if transports is None else list(transports)
        if query is not None:
            fields["query"] = query
        if headers is not None:
            fields["headers"] = headers
        if requests:
            fields["requests"] = [{"id": self.next_id(), **r} for r in requests]
        reply = self.call("sails", **fields)
        if wait:
            self.seen(name, "connect")
        return name, reply

    def request(
        self,
        client: str,
        via: str,
        url: str,
        data: Any = None,
        *,
        method: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        """Start a sails.io.js request (``io.socket.<via>`` or ``.request``); returns its id."""
        fields: dict[str, Any] = {"client": client, "via": via, "url": url}
        if data is not None:
            fields["data"] = data
        if method is not None:
            fields["method"] = method
        if headers is not None:
            fields["headers"] = headers
        sent = self.call("request", **fields)
        assert sent["connected"] is True, f"{client} is not connected: {sent!r}"
        return int(sent["id"])

    def jwr(self, client: str, via: str, url: str, data: Any = None, **kw: Any) -> dict[str, Any]:
        """A request's callback arguments: ``{"body", "jwr", "jwrIsJWR", "jwrError", ...}``."""
        return self.response(self.request(client, via, url, data, **kw))

    # --------------------------------------------------------------- raw socket.io-client

    def sio(
        self,
        version: int,
        url: str,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        auth: dict[str, str] | None = None,
        listen: Sequence[str] = (),
        wait: bool = True,
        reconnect: bool = False,
        rejoin: dict[str, Any] | None = None,
        transports: Sequence[str] | None = WEBSOCKET_ONLY,
    ) -> tuple[str, str | None]:
        """A raw socket.io-client ``version``.x socket; returns its name and (once connected)
        its socket id. ``reconnect``, ``rejoin`` and ``transports`` (None: the library's
        default, polling then the upgrade): see tests/js/sails_client.js."""
        name = self.client_name(f"sio{version}-")
        fields: dict[str, Any] = {"client": name, "version": version, "url": url}
        fields.update(reconnect=reconnect, rejoin=rejoin)
        if transports != WEBSOCKET_ONLY:
            fields["transports"] = None if transports is None else list(transports)
        if query is not None:
            fields["query"] = query
        if headers is not None:
            fields["headers"] = headers
        if auth is not None:
            fields["auth"] = auth
        fields["listen"] = list(listen)
        self.call("sio", **fields)
        sid = None
        if wait:
            sid = self.seen(name, "connect")["sid"]
        return name, sid

    def emit_ack(self, client: str, event: str, *args: Any) -> list[Any]:
        sent = self.call("emit", client=client, event=event, args=list(args), ack=True)
        return self.ack(int(sent["id"]), client)

    def emit(self, client: str, event: str, *args: Any) -> None:
        self.call("emit", client=client, event=event, args=list(args), ack=False)

    def on(self, client: str, event: str) -> None:
        self.call("on", client=client, event=event)

    def state(self, client: str) -> dict[str, Any]:
        return self.call("state", client=client)

    def disconnect(self, client: str) -> None:
        self.call("disconnect", client=client)

    def stop(self) -> None:
        self.proc.stop()
        self.proc.check_log()


@contextmanager
def node_driver() -> Iterator[NodeDriver]:
    driver = NodeDriver()
    try:
        yield driver
    except BaseException:
        driver.proc.kill()
        raise
    driver.stop()


# ------------------------------------------------------------------------------ JWR checks


def header_names(headers: dict[str, Any]) -> set[str]:
    return {k.lower() for k in headers}


def assert_jwr_shape(jwr: Any, status: int) -> None:
    """A JWR as Sails sends it: exactly ``{body, headers, statusCode}``, no set-cookie."""
    assert isinstance(jwr, dict), jwr
    assert set(jwr) == {"body", "headers", "statusCode"}, jwr
    assert jwr["statusCode"] == status, jwr
    assert isinstance(jwr["headers"], dict), jwr
    assert "set-cookie" not in header_names(jwr["headers"]), jwr


# ------------------------------------------------------------------------------ raw Socket.IO


class SioRaw:
    """A Socket.IO client that sends exactly the text packets it is given (and ignores pings).

    Opens ``/socket.io/?EIO=<eio>&transport=websocket`` (plus ``query``), checks the Engine.IO
    open packet and, when ``connect``, connects the ``/`` namespace (EIO4 sends ``40``; EIO3 is
    connected by the server) and waits for the server's ``40``.
    """

    def __init__(
        self,
        public: str,
        *,
        eio: int = 4,
        query: dict[str, str] | None = None,
        connect_ns: bool = True,
        max_size: int | None = 2**22,
    ) -> None:
        params = {"EIO": str(eio), "transport": "websocket"}
        if query is None:
            query = {"__sails_io_sdk_version": SDK_VERSION}
        params.update(query)
        url = (
            public.replace("http://", "ws://", 1) + "/socket.io/?" + urllib.parse.urlencode(params)
        )
        self.eio = eio
        self.conn: ClientConnection = connect(
            url,
            compression=None,
            proxy=None,
            open_timeout=10 * T,
            close_timeout=5 * T,
            ping_interval=None,
            max_size=max_size,
            **_LEGACY,
        )
        self.received: list[str | bytes] = []
        self.close_code: int | None = None
        try:
            opened = self.recv()
            assert isinstance(opened, str) and opened.startswith("0"), opened
            self.handshake = json.loads(opened[1:])
            assert set(self.handshake) >= {"sid", "pingInterval", "pingTimeout"}, opened
            self.sid: str = self.handshake["sid"]
            if connect_ns:
                if eio == 4:
                    self.send("40")
                connected = self.recv()
                assert isinstance(connected, str) and connected.startswith("40"), connected
                if eio == 4:
                    assert json.loads(connected[2:]) == {"sid": self.sid}, connected
                else:
                    assert connected == "40", connected
        except BaseException:
            self.close()
            raise

    def send(self, packet: str | bytes) -> None:
        self.conn.send(packet)

    def recv(self, timeout: float | None = None) -> str | bytes:
        """The next packet (pings included); TimeoutError or ConnectionClosed otherwise."""
        data = self.conn.recv(timeout=10 * T if timeout is None else timeout)
        self.received.append(data)
        return data

    def recv_skipping_pings(self, timeout: float | None = None) -> str | bytes:
        timeout = 10 * T if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            packet = self.recv(max(deadline - time.monotonic(), 0))
            if packet != "2":
                return packet

    def ack(self, ack_id: int, timeout: float | None = None) -> Any:
        """The single argument of the ack ``43<ack_id>[arg]`` (the next non-ping packet)."""
        packet = self.recv_skipping_pings(timeout)
        prefix = f"43{ack_id}"
        assert isinstance(packet, str) and packet.startswith(prefix + "["), packet
        args = json.loads(packet[len(prefix) :])
        assert isinstance(args, list) and len(args) == 1, packet
        return args[0]

    def event(self, timeout: float | None = None) -> tuple[str, list[Any]]:
        """The next event packet ``42["name", ...]`` as (name, args)."""
        packet = self.recv_skipping_pings(timeout)
        assert isinstance(packet, str) and packet.startswith("42["), packet
        args = json.loads(packet[2:])
        return args[0], args[1:]

    def wait_closed(self, timeout: float | None = None) -> tuple[int | None, list[str | bytes]]:
        """Read until the server closes; returns the close code and the packets read meanwhile."""
        timeout = 10 * T if timeout is None else timeout
        deadline = time.monotonic() + timeout
        start = len(self.received)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"socket.io connection still open after {timeout:.1f}s")
                try:
                    self.recv(remaining)
                except TimeoutError:
                    continue
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd is not None else None
        return self.close_code, self.received[start:]

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # already gone
            pass


def jwr_error_body(jwr: dict[str, Any]) -> dict[str, Any]:
    body = jwr["body"]
    assert isinstance(body, dict), jwr
    assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), jwr
    return body
