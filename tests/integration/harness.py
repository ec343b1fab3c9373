"""Integration-test harness: real roomcast processes and real WebSocket clients.

Owns: starting ``python -m router`` / ``python -m gateway`` (and helper scripts) as child
processes, waiting for their ``READY {json}`` line, stopping them with SIGTERM (exit 0 or the test
fails), failing on unexpected ERROR/Traceback lines in their stderr logs, a synchronous
plain-``/ws`` client (:class:`WsClient`) that matches replies to refs and buffers pushes, and a
Prometheus text parser. It relies only on the public contract (architecture §3-§6), never on
component internals.

Every wait has a deadline in units of ``tests.conftest.TIMEOUT_UNIT`` (scaled by
``ROOMCAST_TEST_TIMEOUT_FACTOR``). No sleep except inside ``deadline_poll``.
"""

from __future__ import annotations

import atexit
import base64
import inspect
import itertools
import json
import os
import pathlib
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import TIMEOUT_UNIT

__all__ = [
    "REPO",
    "Cluster",
    "Collector",
    "Event",
    "Gateway",
    "Metrics",
    "Proc",
    "WsClient",
    "first_order_violation",
    "fresh_room",
    "gateway_proc",
    "http_get",
    "router_proc",
    "run_bounded",
    "start_cluster",
]

REPO = pathlib.Path(__file__).resolve().parents[2]
T = TIMEOUT_UNIT

# Drain bound passed to every component in tests (seconds); stop() allows drain + 5 s
# (architecture §3).
DRAIN_TIMEOUT = 2.0

_R = TypeVar("_R")


def run_bounded(fn: Callable[[], _R], timeout: float, *, what: str = "call") -> _R:
    """Run a blocking call that may hang in a daemon thread; fail if it takes over ``timeout``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed back to the caller below
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"bounded {what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"{what} did not return within {timeout:.1f}s")
    if "error" in box:
        raise box["error"]
    return box["result"]  # type: ignore[no-any-return]


def fresh_room(prefix: str = "room") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------------------- HTTP

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore *_proxy env vars


def http_get(url: str, timeout: float | None = None) -> tuple[int, str]:
    """``(status, body)`` of a GET; HTTP error statuses are returned, not raised."""
    try:
        with _OPENER.open(url, timeout=timeout or 5 * T) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode("utf-8", "replace")


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics:
    """Parsed Prometheus text exposition: ``get(name, **labels)`` sums the matching samples."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE.match(line)
            if m is None:
                raise AssertionError(f"unparseable metrics line: {line!r}")
            name, labels, value = m.group(1), m.group(2) or "", m.group(3)
            self.samples.append((name, dict(_LABEL.findall(labels)), float(value)))

    def get(self, name: str, **labels: str) -> float:
        """Sum of samples named ``name`` whose labels include ``labels`` (0.0 when absent)."""
        return sum(
            v
            for n, ls, v in self.samples
            if n == name and all(ls.get(k) == want for k, want in labels.items())
        )

    def names(self) -> set[str]:
        return {n for n, _, _ in self.samples}


# ---------------------------------------------------------------------------------- processes

_BAD_LOG = re.compile(r"\bERROR\b|\bCRITICAL\b|Traceback \(most recent call last\)")


class Proc:
    """A child process that announces ``READY {json}`` on stdout and exits 0 on SIGTERM."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        stdin: bool = False,
        cwd: str | os.PathLike[str] | None = None,
        program: str | None = None,
    ) -> None:
        """``program`` (default: this Python) runs with ``argv`` from ``cwd`` (default: the
        repository)."""
        self.name = name
        self.argv = [program or sys.executable, *argv]
        fd, path = tempfile.mkstemp(prefix=f"roomcast-{name}-", suffix=".log")
        os.close(fd)
        self.log_path = pathlib.Path(path)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - child writes; closed in stop()
        # No ROOMCAST_* settings leak in from the caller's environment: flags say it all.
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=REPO if cwd is None else cwd,
            env=child_env,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(
            target=self._read_stdout, name=f"{name} stdout", daemon=True
        )
        self._reader.start()
        self.info: dict[str, Any] = {}
        self.stdout_extra: list[str] = []
        self.returncode: int | None = None
        self._stopped = False
        _LIVE.add(self)

    def _read_stdout(self) -> None:
        assert self.popen.stdout is not None
        try:
            for raw in self.popen.stdout:
                self._lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        except (OSError, ValueError):  # pipe closed by stop()
            pass
        finally:
            self._lines.put(None)

    # ------------------------------------------------------------------ lifecycle

    def wait_ready(self, timeout: float | None = None) -> dict[str, Any]:
        timeout = 15 * T if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                pytest.fail(f"{self.name}: no READY line within {timeout:.1f}s\n{self.log_tail()}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                rc = self.popen.wait(5 * T)
                pytest.fail(f"{self.name}: exited with {rc} before READY\n{self.log_tail()}")
            if line.startswith("READY "):
                try:
                    info = json.loads(line[len("READY ") :])
                except ValueError:
                    self.kill()
                    pytest.fail(f"{self.name}: READY line is not JSON: {line!r}")
                assert isinstance(info, dict), (
                    f"{self.name}: READY payload is not an object: {line!r}"
                )
                self.info = info
                return info
            self.stdout_extra.append(line)

    def readline(self, timeout: float) -> str:
        """The next stdout line after READY (helper processes answer on stdout)."""
        line = self.poll_line(timeout)
        if line is None:
            pytest.fail(f"{self.name}: no output line within {timeout:.1f}s\n{self.log_tail()}")
        return line

    def poll_line(self, timeout: float) -> str | None:
        """The next stdout line after READY, or None when none came within ``timeout``."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is None:
            pytest.fail(f"{self.name}: stdout closed (exit {self.popen.poll()})\n{self.log_tail()}")
        return line

    def writeline(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float | None = None) -> int:
        """SIGTERM, then wait for exit 0 within ``timeout`` (default: drain + 5 s, scaled)."""
        timeout = (DRAIN_TIMEOUT + 5) * T if timeout is None else timeout
        if self._stopped:
            return self.returncode if self.returncode is not None else -1
        early = self.popen.poll()
        if early is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                rc = self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(
                    f"{self.name}: still running {timeout:.1f}s after SIGTERM\n{self.log_tail()}"
                )
        else:
            rc = early
        self._finish(rc)
        if early is not None:
            pytest.fail(
                f"{self.name}: had already exited with {early} before SIGTERM\n{self.log_tail()}"
            )
        if rc != 0:
            pytest.fail(f"{self.name}: exit code {rc} after SIGTERM, expected 0\n{self.log_tail()}")
        return rc

    def kill(self) -> None:
        if self._stopped:
            return
        if self.popen.poll() is None:
            self.popen.kill()
        try:
            rc = self.popen.wait(10 * T)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable child
            rc = -9
        self._finish(rc)

    def _finish(self, rc: int) -> None:
        self.returncode = rc
        self._stopped = True
        _LIVE.discard(self)
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
        self._reader.join(5 * T)
        self._log.close()

    # ------------------------------------------------------------------ logs

    def log_text(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_tail(self, lines: int = 200) -> str:
        text = self.log_text().splitlines()[-lines:]
        return f"--- {self.name} stderr ({self.log_path}) ---\n" + "\n".join(text)

    def bad_log_lines(self, since: int = 0, *, pattern: re.Pattern[str] = _BAD_LOG) -> list[str]:
        with open(self.log_path, "rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", "replace")
        return [line for line in text.splitlines() if pattern.search(line)]

    def check_log(self, since: int = 0, *, pattern: re.Pattern[str] = _BAD_LOG) -> None:
        bad = self.bad_log_lines(since, pattern=pattern)
        if bad:
            pytest.fail(
                f"{self.name}: unexpected log lines:\n  "
                + "\n  ".join(bad[:20])
                + "\n"
                + self.log_tail()
            )


_LIVE: set[Proc] = set()


@atexit.register
def _kill_leftovers() -> None:
    """Never leave a child running if a test run is interrupted."""
    for proc in list(_LIVE):
        proc.kill()


def router_proc(*extra: str) -> Proc:
    return Proc(
        "router",
        [
            "-m", "router",
            "--commands", "tcp://127.0.0.1:0",
            "--fanout", "tcp://127.0.0.1:0",
            "--http-port", "0",
            "--drain-timeout", str(DRAIN_TIMEOUT),
            *extra,
        ],
    )  # fmt: skip


def gateway_proc(name: str, router_info: dict[str, Any], *extra: str) -> Proc:
    return Proc(
        name,
        [
            "-m", "gateway",
            "--router", router_info["commands"],
            "--fanout", router_info["fanout"],
            "--host", "127.0.0.1",
            "--port", "0",
            "--internal-port", "0",
            "--env", "development",
            "--drain-timeout", str(DRAIN_TIMEOUT),
            *extra,
        ],
    )  # fmt: skip


# ------------------------------------------------------------------------------ WebSocket client


def raw_ws_client(public: str, *, rcvbuf: int | None = None) -> tuple[socket.socket, str, bytes]:
    """A raw /ws client, welcomed: (socket, its id, bytes received after the welcome frame).

    For tests that need a client that stops reading (a slow client) or looks at the frames
    themselves; ``rcvbuf`` shrinks its kernel receive buffer before connecting.
    """
    parsed = urllib.parse.urlsplit(public)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5 * TIMEOUT_UNIT)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    buf = b""
    for _ in range(100):  # the 101 response, then the welcome frame (unmasked text)
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if sep and len(rest) >= 2 and len(rest) >= 2 + (rest[1] & 0x7F):
            break
        chunk = sock.recv(4096)
        assert chunk, f"raw client: connection closed after {buf!r}"
        buf += chunk
    else:
        pytest.fail(f"raw client: no welcome in {buf!r}")
    assert head.startswith(b"HTTP/1.1 101"), head
    assert rest[0] == 0x81 and b'"welcome"' in rest, rest
    end = 2 + (rest[1] & 0x7F)
    welcome = json.loads(rest[2:end])
    return sock, str(welcome["socket"]), rest[end:]


class Event(NamedTuple):
    event: str
    data: Any


_CLIENT_IDS = itertools.count(1)
# websockets >= 17.1 wants connect() as a context manager unless legacy=True (older ones lack it).
_LEGACY: dict[str, Any] = (
    {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}
)


class WsClient:
    """A plain ``/ws`` client (architecture §4) driven synchronously from the test.

    ``request()`` sends a frame with a fresh ``ref`` and reads until the matching reply, buffering
    pushes (``events``), other replies (``replies``) and ``op: error`` frames (``errors``).
    """

    def __init__(
        self,
        url: str,
        *,
        rcvbuf: int | None = None,
        max_queue: int | None = None,
        name: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.name = name or f"ws{next(_CLIENT_IDS)}"
        sock = None
        if rcvbuf is not None:  # a small TCP window, so a client that stops reading is felt at once
            host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(5 * T)
            sock.connect((host, int(port)))
        self.conn: ClientConnection = connect(
            url,
            sock=sock,
            compression=None,
            proxy=None,
            open_timeout=10 * T,
            close_timeout=5 * T,
            ping_interval=None,
            max_queue=max_queue,
            additional_headers=headers,
            **_LEGACY,
        )
        self._refs = itertools.count(1)
        self.events: deque[Event] = deque()
        self.replies: dict[Any, dict[str, Any]] = {}
        self.errors: deque[dict[str, Any]] = deque()
        self.other: list[Any] = []
        self.closed_code: int | None = None
        try:
            welcome = self._recv(10 * T)
        except TimeoutError:
            self.close()
            pytest.fail(f"{self.name}: no welcome frame from {url} within {10 * T:.1f}s")
        except BaseException:
            self.close()
            raise
        if (
            welcome.get("op") != "welcome"
            or not isinstance(welcome.get("socket"), str)
            or not welcome["socket"]
        ):
            self.close()
            pytest.fail(f"{self.name}: first frame is not a welcome: {welcome!r}")
        self.id: str = welcome["socket"]

    def __repr__(self) -> str:
        return f"<WsClient {self.name} {getattr(self, 'id', '?')}>"

    # ------------------------------------------------------------------ raw frames

    def send_json(self, obj: Any) -> None:
        self.conn.send(json.dumps(obj))

    def send_raw(self, data: str | bytes) -> None:
        self.conn.send(data)

    def _recv(self, timeout: float) -> dict[str, Any]:
        """One frame, parsed; raises TimeoutError (no frame in time) or ConnectionClosed."""
        raw = self.conn.recv(timeout=max(timeout, 0))
        assert isinstance(raw, str), f"{self.name}: gateway sent a binary frame: {raw[:80]!r}"
        frame = json.loads(raw)
        assert isinstance(frame, dict), f"{self.name}: frame is not a JSON object: {raw[:200]!r}"
        return frame

    def _dispatch(self, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        if op == "event":
            assert set(frame) >= {"event", "data"}, f"{self.name}: bad event frame {frame!r}"
            self.events.append(Event(frame["event"], frame["data"]))
        elif op == "reply":
            assert "ref" in frame, f"{self.name}: reply without ref {frame!r}"
            self.replies[frame["ref"]] = frame
        elif op == "error":
            self.errors.append(frame)
        else:
            self.other.append(frame)

    def _pump(self, timeout: float) -> bool:
        """Read and dispatch one frame; False on timeout. ConnectionClosed propagates."""
        try:
            frame = self._recv(timeout)
        except TimeoutError:
            return False
        self._dispatch(frame)
        return True

    # ------------------------------------------------------------------ ops

    def send_op(self, op: str, **fields: Any) -> int:
        """Send ``{"op": op, "ref": N, **fields}`` without waiting; returns the ref."""
        ref = next(self._refs)
        self.send_json({"op": op, "ref": ref, **fields})
        return ref

    def wait_reply(self, ref: Any, timeout: float | None = None) -> dict[str, Any]:
        timeout = 10 * T if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while ref not in self.replies:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"{self.name}: no reply to ref {ref} within {timeout:.1f}s")
            self._pump(remaining)
        return self.replies.pop(ref)

    def request(self, op: str, *, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        reply = self.wait_reply(self.send_op(op, **fields), timeout)
        assert reply.get("op") == "reply" and isinstance(reply.get("statusCode"), int), reply
        return reply

    def ok(self, op: str, **fields: Any) -> Any:
        reply = self.request(op, **fields)
        assert reply["statusCode"] == 200, f"{self.name}: {op} {fields!r} failed: {reply!r}"
        return reply.get("body")

    def join(self, room: str) -> Any:
        return self.ok("join", room=room)

    def leave(self, room: str) -> Any:
        return self.ok("leave", room=room)

    def broadcast(self, rooms: str | list[str], data: Any = None, **fields: Any) -> Any:
        return self.ok("broadcast", rooms=rooms, data=data, **fields)

    # ------------------------------------------------------------------ pushes

    def next_event(self, timeout: float | None = None, *, what: str = "") -> Event:
        timeout = 10 * T if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not self.events:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"{self.name}: no event within {timeout:.1f}s {what}".rstrip())
            self._pump(remaining)
        return self.events.popleft()

    def expect_no_event(self, window: float = 0.3) -> None:
        """Bounded negative check: nothing is pushed within ``window`` seconds (scaled)."""
        deadline = time.monotonic() + window * T
        while not self.events:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._pump(remaining)
        pytest.fail(f"{self.name}: unexpected event {self.events[0]!r}")

    def next_error(self, timeout: float | None = None) -> dict[str, Any]:
        timeout = 10 * T if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not self.errors:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"{self.name}: no op=error frame within {timeout:.1f}s")
            self._pump(remaining)
        return self.errors.popleft()

    def wait_closed(self, timeout: float | None = None) -> int | None:
        """Read (buffering frames) until the gateway closes; returns the close code received."""
        timeout = 10 * T if timeout is None else timeout
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"{self.name}: connection still open after {timeout:.1f}s")
                self._pump(remaining)
        except ConnectionClosed as exc:
            self.closed_code = exc.rcvd.code if exc.rcvd is not None else None
            return self.closed_code

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # already gone; nothing to tidy
            pass


class Collector(threading.Thread):
    """Reads a client's pushes in a thread (so its TCP window never closes) until ``target``
    events have arrived (``target`` may be set later), the connection closes, or the deadline."""

    def __init__(self, client: WsClient, timeout: float, target: int | None = None) -> None:
        super().__init__(name=f"collect {client.name}", daemon=True)
        self.client = client
        self.target = target
        self.deadline = time.monotonic() + timeout
        self.events: list[Event] = []
        self.problem: str | None = None
        self.start()

    def run(self) -> None:
        client = self.client
        try:
            while self.target is None or len(self.events) < self.target:
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    self.problem = f"timed out with {len(self.events)} of {self.target} events"
                    return
                if not client.events:
                    client._pump(min(remaining, 0.05))
                while client.events:
                    self.events.append(client.events.popleft())
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            self.problem = f"connection closed (code {code}) after {len(self.events)} events"
        except BaseException as exc:  # reported by result()
            self.problem = f"{type(exc).__name__}: {exc}"

    def result(self, target: int | None = None) -> list[Event]:
        if target is not None:
            self.target = target
        self.join(max(self.deadline - time.monotonic(), 0) + 5 * T)
        if self.is_alive():
            pytest.fail(f"{self.client.name}: collector still running")
        if self.problem:
            pytest.fail(f"{self.client.name}: {self.problem}")
        return self.events


def first_order_violation(values: Sequence[Any]) -> int | None:
    """Index of the first value not strictly greater than its predecessor (None if ordered)."""
    for i in range(1, len(values)):
        if not values[i] > values[i - 1]:
            return i
    return None


# ---------------------------------------------------------------------------------- cluster


@dataclass
class Gateway:
    proc: Proc
    public: str
    internal: str

    @property
    def ws_url(self) -> str:
        return self.public.replace("http://", "ws://", 1) + "/ws"


@dataclass
class Cluster:
    """A router and its gateways; ``ws(i)`` opens a client on gateway ``i`` (closed per test)."""

    router: Proc
    gateways: list[Gateway]
    clients: list[WsClient] = field(default_factory=list)

    @property
    def commands(self) -> str:
        return str(self.router.info["commands"])

    @property
    def procs(self) -> list[Proc]:
        return [self.router, *(g.proc for g in self.gateways)]

    def ws(self, gateway: int = 0, **kw: Any) -> WsClient:
        client = WsClient(self.gateways[gateway].ws_url, **kw)
        self.clients.append(client)
        return client

    def metrics(self, gateway: int) -> Metrics:
        status, text = http_get(self.gateways[gateway].internal + "/metrics")
        assert status == 200, f"gateway {gateway} /metrics: {status} {text[:200]}"
        return Metrics(text)

    def close_clients(self) -> None:
        while self.clients:
            self.clients.pop().close()

    def log_offsets(self) -> list[int]:
        return [p.log_size() for p in self.procs]

    def check_healthy(self, offsets: Iterable[int] | None = None) -> None:
        """Every process still runs and logged no ERROR/Traceback since ``offsets``."""
        for proc, since in zip(self.procs, offsets or itertools.repeat(0), strict=False):
            if not proc.alive():
                pytest.fail(f"{proc.name} died (exit {proc.popen.poll()})\n{proc.log_tail()}")
            proc.check_log(since)

    def stop(self) -> None:
        """Close clients, SIGTERM gateways then the router; every exit must be 0 and logs clean."""
        self.close_clients()
        procs = [*(g.proc for g in self.gateways), self.router]
        run_all(check for proc in procs for check in (proc.stop, proc.check_log))

    def kill(self) -> None:
        self.close_clients()
        for proc in self.procs:
            proc.kill()


def run_all(checks: Iterable[Callable[[], object]]) -> None:
    """Run every check even after one fails (so every process is stopped and every log read),
    then fail once with all their messages."""
    failures: list[str] = []
    for check in checks:
        try:
            check()
        except pytest.fail.Exception as exc:
            failures.append(str(exc))
    if failures:
        pytest.fail("\n\n".join(failures))


def start_cluster(
    *,
    gateways: int = 2,
    router_args: Sequence[str] = (),
    gateway_args: Sequence[str] = (),
) -> Cluster:
    router = router_proc(*router_args)
    started: list[Proc] = [router]
    try:
        info = router.wait_ready()
        for key in ("commands", "fanout", "http"):
            assert isinstance(info.get(key), str), f"router READY lacks {key!r}: {info!r}"
        procs = [gateway_proc(f"gateway{i}", info, *gateway_args) for i in range(gateways)]
        started += procs
        gws = []
        for proc in procs:
            ginfo = proc.wait_ready()
            for key in ("public", "internal"):
                assert isinstance(ginfo.get(key), str), (
                    f"{proc.name} READY lacks {key!r}: {ginfo!r}"
                )
            gws.append(Gateway(proc, ginfo["public"], ginfo["internal"]))
        return Cluster(router, gws)
    except BaseException:
        for proc in started:
            proc.kill()
        raise
