"""Shared pieces of the fuzz tier: case budget, hypothesis settings, raw clients, health checks.

The fuzz tests throw hypothesis-generated garbage at real processes (architecture §5.5: bad input
never crashes a process or affects other connections). Each hypothesis example sends a batch
of 20-50 *cases* (frames, packets, ZeroMQ messages), so the case budget
``ROOMCAST_FUZZ_EXAMPLES`` (cases per target, default 10,000) costs only a few hundred
examples. A longer run on demand::

    ROOMCAST_FUZZ_EXAMPLES=200000 .venv/bin/python -m pytest tests/fuzz -s

(``-s`` shows the per-target summary lines). Between examples every process must still run and
have logged no ERROR/Traceback; every few examples a control client must still receive a
broadcast.

:class:`RawWs` is a blocking raw WebSocket client on a plain socket: it can send what no
well-behaved client library would (bad UTF-8, reserved bits, unknown opcodes, lies about
lengths) and splits what comes back itself.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from roomcast.bench.wsclient import client_frame, handshake_request, parse_handshake
from tests.conftest import TIMEOUT_UNIT as T
from tests.integration.harness import Proc

__all__ = [
    "BATCH_MAX",
    "BATCH_MIN",
    "CASES",
    "CHECK_EVERY",
    "TIMEOUT_S",
    "LogWatch",
    "RawWs",
    "Run",
    "fuzz_settings",
    "raw_frame",
    "strict_json",
]

CASES = int(os.environ.get("ROOMCAST_FUZZ_EXAMPLES", "10000"))
BATCH_MIN, BATCH_MAX = 30, 50
CHECK_EVERY = 25  # examples between control-client checks
# pytest-timeout bound of one fuzz target: generous per case, for 2 busy cores.
TIMEOUT_S = (120 + 0.05 * CASES) * T

_BAD_LOG = re.compile(r"\bERROR\b|\bCRITICAL\b|Traceback \(most recent call last\)")


def fuzz_settings(cases: int = CASES) -> settings:
    """Enough examples that even batches of :data:`BATCH_MIN` reach ``cases`` cases."""
    return settings(
        max_examples=max(1, math.ceil(cases / BATCH_MIN)),
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
        print_blob=True,
    )


class Run:
    """One fuzz target's run: cases sent, examples run, and named tallies for the summary."""

    def __init__(self, target: str, cases: int = CASES) -> None:
        self.target = target
        self.goal = cases
        self.cases = 0
        self.examples = 0
        self.tallies: dict[str, int] = {}
        self.started = time.monotonic()

    def tally(self, name: str, n: int = 1) -> None:
        self.tallies[name] = self.tallies.get(name, 0) + n

    def until_done(self, body: Callable[..., None], **strategies: Any) -> None:
        """Run ``body`` as a hypothesis test, again while fewer than ``goal`` cases were sent."""
        while self.cases < self.goal:
            before = self.cases
            fuzz_settings(self.goal - self.cases)(given(**strategies)(body))()
            assert self.cases > before, "a hypothesis run sent no case"

    def report(self) -> None:
        elapsed = time.monotonic() - self.started
        more = "".join(f", {k} {v}" for k, v in sorted(self.tallies.items()))
        print(
            f"\n[fuzz] {self.target}: {self.cases} cases in {self.examples} examples, "
            f"{elapsed:.1f}s ({self.cases / max(elapsed, 1e-9):.0f} cases/s){more}"
        )


class LogWatch:
    """Fails on new ERROR/Traceback lines in processes' logs (a few known ones allowed)."""

    def __init__(self, procs: list[Proc], allow: tuple[str, ...] = ()) -> None:
        self.procs = procs
        self.offsets = [p.log_size() for p in procs]
        self.allow = [re.compile(a) for a in allow]

    def check(self, *, alive: bool = True) -> None:
        for i, proc in enumerate(self.procs):
            if alive and not proc.alive():
                pytest.fail(f"{proc.name} died (exit {proc.popen.poll()})\n{proc.log_tail()}")
            size = proc.log_size()
            if size == self.offsets[i]:
                continue
            bad = [
                line
                for line in proc.bad_log_lines(self.offsets[i], pattern=_BAD_LOG)
                if not any(a.search(line) for a in self.allow)
            ]
            self.offsets[i] = size
            if bad:
                pytest.fail(
                    f"{proc.name} logged:\n  " + "\n  ".join(bad[:10]) + "\n" + proc.log_tail()
                )


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not json")


def _finite(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise ValueError("number out of range")
    return value


def strict_json(payload: bytes) -> bool:
    """Whether ``payload`` is JSON that every parser takes (no NaN/Infinity, no overflow)."""
    try:
        json.loads(payload, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError):
        return False
    return True


def raw_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    declared: int | None = None,
) -> bytes:
    """A client frame with every field chosen, including wrong ones (``declared`` length)."""
    n = len(payload) if declared is None else declared
    b0 = (0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0x0F)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        header = bytes((b0, mask_bit | n))
    elif n < 1 << 16:
        header = bytes((b0, mask_bit | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((b0, mask_bit | 127)) + n.to_bytes(8, "big")
    if not masked:
        return header + payload
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + body


_PUSH_PREFIXES = (b'{"op":"event"', b"42[")  # a /ws push, a Socket.IO event
_SEQ = re.compile(rb'"s":(\d+)')


class RawWs:
    """A blocking WebSocket client on a raw socket (tests only: never reused across threads).

    Server frames are split here (no client library in the way); pushes (/ws events and
    Socket.IO events) go to ``seqs`` (the ``"s"`` of test markers) and, with ``keep_events``,
    ``events``; every other frame to ``frames``.
    """

    def __init__(
        self, host: str, port: int, path: str, *, timeout: float = 5 * T, keep_events: bool = False
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(handshake_request(host, port, path, key))
        head = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in head:
            if time.monotonic() > deadline or len(head) > 65536:
                raise OSError("no handshake answer")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError(f"closed during the handshake: {head[:200]!r}")
            head += chunk
        head, rest = head.split(b"\r\n\r\n", 1)
        parse_handshake(head, key)
        self.frames: list[tuple[int, bytes]] = []  # every non-push frame, in order
        self.seqs: list[int] = []  # "s" of every push that carries one
        self.events: list[bytes] = []  # every push, with keep_events
        self.keep_events = keep_events
        self.close_code: int | None = None
        self.closed = False
        self._buf = b""
        if rest:
            self._feed(rest)

    # --- sending -------------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> bool:
        if self.closed:
            return False
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True
            return False
        return True

    def send(self, opcode: int, payload: bytes) -> bool:
        return self.send_raw(client_frame(opcode, payload))

    def text(self, payload: str | bytes) -> bool:
        return self.send(0x1, payload.encode() if isinstance(payload, str) else payload)

    # --- receiving -----------------------------------------------------------------------------

    def _split(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf + data if self._buf else data
        out: list[tuple[int, bytes]] = []
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            assert not b1 & 0x80, "the server sent a masked frame"
            assert not b0 & 0x70, "the server set reserved bits"
            length, start = b1 & 0x7F, pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length, start = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, start = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            if n - start < length:
                break
            out.append((b0 & 0x0F, buf[start : start + length]))
            pos = start + length
        self._buf = buf[pos:]
        return out

    def _feed(self, data: bytes) -> None:
        for opcode, payload in self._split(data):
            if opcode == 0x1 and payload.startswith(_PUSH_PREFIXES):
                m = _SEQ.search(payload)
                if m:
                    self.seqs.append(int(m.group(1)))
                if self.keep_events:
                    self.events.append(payload)
                continue
            if opcode == 0x8:
                if self.close_code is None:
                    self.close_code = int.from_bytes(payload[:2], "big") if payload else 1005
                    self.send(0x8, payload[:2])
                self.closed = True
            elif opcode == 0x9:
                self.send(0xA, payload)
            self.frames.append((opcode, payload))

    def pump(self, timeout: float) -> bool:
        """Read once (up to ``timeout``); False when the connection is gone or nothing came."""
        if self.closed:
            return False
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return False
        except OSError:
            self.closed = True
            return False
        if not data:
            self.closed = True
            return False
        self._feed(data)
        return True

    def wait_for(self, pred: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
        """Read until ``pred()`` holds (True) or the connection closes / time runs out;
        ``pred`` is asked again at least every ``step`` seconds."""
        deadline = time.monotonic() + timeout
        while not pred():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                return pred()
            self.pump(min(remaining, step))
        return True

    def has_text(self, needle: bytes) -> bool:
        return any(op == 0x1 and needle in payload for op, payload in self.frames)

    def wait_closed(self, timeout: float) -> bool:
        return self.wait_for(lambda: self.closed, timeout)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()
