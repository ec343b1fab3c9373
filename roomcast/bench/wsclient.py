"""A lean WebSocket client for load generation: thousands of connections, millions of frames.

Owns the client side of RFC 6455 as the bench needs it: the HTTP/1.1 upgrade handshake (request
built and the ``101`` answer checked here), masked client frames (§5.3), and a bulk parser of
server frames (:class:`FrameParser`) that walks each receive buffer once, counts pushes without
decoding them, and JSON-decodes only the rest (welcome, replies, errors). A sampled client also
reads the send timestamp and sequence number of every push with a bytes search instead of a JSON
parse. One :class:`Tally` per process aggregates counts and latencies as frames arrive, so
collecting results costs nothing per client.

Does not: negotiate extensions or subprotocols, fragment what it sends, use the ``websockets``
library (its per-message coroutines and tasks would make the generator the bottleneck), or import
the gateway or router.

Pushes carry ``{"t": <CLOCK_MONOTONIC ns at publish>, "s": <seq>, ...}`` as their data (see
:func:`stamp`); CLOCK_MONOTONIC is shared by every process on one Linux host, so publish->receive
latency is measured across processes with no clock offset.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from typing import Any

__all__ = [
    "EVENT_PREFIX",
    "FrameParser",
    "HandshakeError",
    "ProtocolError",
    "Tally",
    "WsClient",
    "accept_key",
    "client_frame",
    "connect",
    "handshake_request",
    "parse_handshake",
    "stamp",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Every push of the plain /ws protocol starts with these bytes (gateway and baseline alike).
EVENT_PREFIX = b'{"op":"event"'
_T_KEY = b'"t":'
_S_KEY = b'"s":'
_MAX_HEAD_BYTES = 16 * 1024

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class HandshakeError(Exception):
    """The server did not answer the upgrade with a valid ``101 Switching Protocols``."""


class ProtocolError(Exception):
    """The server sent a frame a server must not send (masked, reserved bits, bad length)."""


# --- handshake ---------------------------------------------------------------------------------


def accept_key(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` value a server must answer ``key`` with (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def handshake_request(host: str, port: int, path: str, key: bytes) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode('ascii')}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "\r\n"
    ).encode("ascii")


def parse_handshake(head: bytes, key: bytes) -> None:
    """Check a response head (up to, without, the blank line); raises :class:`HandshakeError`."""
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/1.") or status[1] != b"101":
        raise HandshakeError(f"expected 101, got {lines[0][:80]!r}")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if headers.get(b"upgrade", b"").lower() != b"websocket":
        raise HandshakeError("response does not upgrade to websocket")
    if b"upgrade" not in headers.get(b"connection", b"").lower():
        raise HandshakeError("response lacks Connection: Upgrade")
    if headers.get(b"sec-websocket-accept") != accept_key(key):
        raise HandshakeError("wrong Sec-WebSocket-Accept")


# --- frames ------------------------------------------------------------------------------------


def client_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final frame from a client: always masked (RFC 6455 §5.3), with a fresh random key."""
    if mask is None:
        mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    if n:
        # XOR as one big integer: a Python loop per byte would cost microseconds per frame.
        repeated = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
            n, "big"
        )
    else:
        masked = b""
    return header + mask + masked


def stamp(seq: int, padding: str, now_ns: int | None = None) -> dict[str, Any]:
    """The data of a bench push: the publish time first (found fast by the parser), then seq."""
    return {"t": time.monotonic_ns() if now_ns is None else now_ns, "s": seq, "p": padding}


class Tally:
    """What every client of one process received, aggregated as it arrives."""

    __slots__ = ("events", "first_ns", "last_ns", "latencies_ns", "order_violations", "unstamped")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.events = 0
        self.first_ns = 0
        self.last_ns = 0
        self.latencies_ns: list[int] = []
        self.order_violations = 0
        self.unstamped = 0


class FrameParser:
    """Splits server frames out of a byte stream in bulk.

    :meth:`feed` walks the buffer once: each push (a text frame starting with
    :data:`EVENT_PREFIX`) is only counted, unless ``sample`` is set, in which case its ``t`` and
    ``s`` are read with a bytes search (latency into ``tally``, order checked, seqs kept when
    ``record``). Every other frame is returned as ``(opcode, payload)`` for the caller.
    Fragmented messages are not expected from our servers; continuation frames are returned
    as they come.
    """

    __slots__ = ("_buf", "events", "last_seq", "record", "sample", "seqs", "tally")

    def __init__(self, tally: Tally, *, sample: bool = False, record: bool = False) -> None:
        self.tally = tally
        self.sample = sample or record
        self.record = record
        self.events = 0
        self.last_seq = -1
        self.seqs: list[int] = []
        self._buf = b""

    def feed(self, data: bytes, now_ns: int) -> list[tuple[int, bytes]]:
        if self._buf:
            data = self._buf + data
            self._buf = b""
        others: list[tuple[int, bytes]] = []
        n = len(data)
        pos = 0
        events = 0
        sample = self.sample
        while n - pos >= 2:
            b0 = data[pos]
            length = data[pos + 1]
            if length < 126:
                start = pos + 2
            elif length == 126:
                if n - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            else:
                raise ProtocolError("masked frame from the server")
            end = start + length
            if end > n:
                break
            if b0 & 0x70:
                raise ProtocolError("reserved bits set without an extension")
            if b0 == 0x81 and data.startswith(EVENT_PREFIX, start):
                events += 1
                if sample:
                    self._sampled(data, start, end, now_ns)
            else:
                others.append((b0 & 0x0F, data[start:end]))
            pos = end
        if pos < n:
            self._buf = data[pos:]
        if events:
            self.events += events
            tally = self.tally
            if not tally.events:
                tally.first_ns = now_ns
            tally.events += events
            tally.last_ns = now_ns
        return others

    def _sampled(self, data: bytes, start: int, end: int, now_ns: int) -> None:
        tally = self.tally
        i = data.find(_T_KEY, start, end)
        j = data.find(b",", i + 4, end) if i >= 0 else -1
        k = data.find(_S_KEY, j, end) if j >= 0 else -1
        if k < 0:
            tally.unstamped += 1
            return
        m = k + 4
        while m < end and 0x30 <= data[m] <= 0x39:
            m += 1
        try:
            sent_ns = int(data[i + 4 : j])
            seq = int(data[k + 4 : m])
        except ValueError:
            tally.unstamped += 1
            return
        tally.latencies_ns.append(now_ns - sent_ns)
        if seq <= self.last_seq:
            tally.order_violations += 1
        self.last_seq = seq
        if self.record:
            self.seqs.append(seq)


# --- the connection ----------------------------------------------------------------------------


class WsClient(asyncio.Protocol):
    """One /ws connection: handshake, counted pushes, ref-matched replies, pong, close."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str = "/ws",
        *,
        tally: Tally | None = None,
        sample: bool = False,
        record: bool = False,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.host, self.port, self.path = host, port, path
        self.parser = FrameParser(tally or Tally(), sample=sample, record=record)
        self.socket_id = ""
        self.welcomed: asyncio.Future[str] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()
        self.close_code: int | None = None
        self.errors: list[dict[str, Any]] = []
        self._key = base64.b64encode(os.urandom(16))
        self._head = b""
        self._open = False
        self._transport: asyncio.Transport | None = None
        self._ref = 0
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(handshake_request(self.host, self.port, self.path, self._key))

    def data_received(self, data: bytes) -> None:
        if not self._open:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > _MAX_HEAD_BYTES:
                    self._fail(HandshakeError("response head too long"))
                return
            head, data = self._head[:end], self._head[end + 4 :]
            self._head = b""
            try:
                parse_handshake(head, self._key)
            except HandshakeError as exc:
                self._fail(exc)
                return
            self._open = True
            if not data:
                return
        try:
            others = self.parser.feed(data, time.monotonic_ns())
        except ProtocolError as exc:
            self._fail(exc)
            return
        for opcode, payload in others:
            self._control(opcode, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        error = exc or ConnectionError("connection closed")
        if not self.welcomed.done():
            self.welcomed.set_exception(error)
            self.welcomed.exception()  # retrieved: nobody may be waiting any more
        for fut in self._replies.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection closed"))
                fut.exception()
        self._replies.clear()
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    # --- frames --------------------------------------------------------------------------------

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_TEXT:
            try:
                msg = json.loads(payload)
            except ValueError:
                self.errors.append({"op": "undecodable"})
                return
            op = msg.get("op") if isinstance(msg, dict) else None
            if op == "welcome" and not self.welcomed.done():
                self.socket_id = str(msg.get("socket"))
                self.welcomed.set_result(self.socket_id)
            elif op == "reply":
                fut = self._replies.pop(msg.get("ref"), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            elif op == "error":
                self.errors.append(msg)
        elif opcode == OP_PING:
            self._send(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            if self.close_code is None:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self._send(OP_CLOSE, payload[:2])
            if self._transport is not None:
                self._transport.close()

    def _send(self, opcode: int, payload: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(client_frame(opcode, payload))

    def _fail(self, exc: Exception) -> None:
        if not self.welcomed.done():
            self.welcomed.set_exception(exc)
            self.welcomed.exception()
        if self._transport is not None:
            self._transport.abort()

    # --- API -----------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._open and self._transport is not None

    def send_json(self, obj: Any) -> None:
        self._send(OP_TEXT, json.dumps(obj, separators=(",", ":")).encode())

    def send_text(self, payload: bytes) -> None:
        self._send(OP_TEXT, payload)

    async def request(self, op: str, timeout: float, **fields: Any) -> dict[str, Any]:
        """Send ``{"op": op, "ref": n, ...}`` and return its reply (raises TimeoutError)."""
        self._ref += 1
        ref = self._ref
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[ref] = fut
        self.send_json({"op": op, "ref": ref, **fields})
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._replies.pop(ref, None)

    async def close(self, timeout: float) -> int | None:
        """Close handshake (1000), bounded by ``timeout``; then the transport is aborted."""
        if self._transport is not None and self.close_code is None:
            self._send(OP_CLOSE, (1000).to_bytes(2, "big"))
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except TimeoutError:
            if self._transport is not None:
                self._transport.abort()
        return self.close_code

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


async def connect(
    host: str,
    port: int,
    path: str = "/ws",
    *,
    timeout: float,
    tally: Tally | None = None,
    sample: bool = False,
    record: bool = False,
) -> WsClient:
    """Open a connection and wait for the gateway's ``welcome`` (bounded by ``timeout``)."""
    loop = asyncio.get_running_loop()
    client = WsClient(host, port, path, tally=tally, sample=sample, record=record)
    try:
        async with asyncio.timeout(timeout):
            await loop.create_connection(lambda: client, host, port)
            await asyncio.shield(client.welcomed)
    except BaseException:
        client.abort()
        raise
    return client
