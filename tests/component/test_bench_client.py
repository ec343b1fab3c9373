"""roomcast.bench.wsclient: the bench's lean WebSocket client, against a real Tornado server.

The frame codec is checked with bytes (RFC 6455 §5.2 lengths of 7, 16 and 64 bits, masking,
splitting at every byte), then the client talks to a Tornado server started in-process on
127.0.0.1 port 0: handshake, masked frames Tornado accepts, pushes of every length class
counted and sampled, replies by ref, ping -> pong, close codes both ways, a failed handshake.
The bench's baseline app is driven the same way.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket

from roomcast.bench import baseline
from roomcast.bench.wsclient import (
    EVENT_PREFIX,
    FrameParser,
    HandshakeError,
    ProtocolError,
    Tally,
    accept_key,
    client_frame,
    connect,
    handshake_request,
    parse_handshake,
    stamp,
)
from tests.conftest import TIMEOUT_UNIT as T

# --- bytes only --------------------------------------------------------------------------------


def server_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, n))
    elif n < 1 << 16:
        header = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    return header + payload


def event_payload(seq: int, t: int, pad: int = 0) -> bytes:
    data = {"t": t, "s": seq, "p": "x" * pad}
    compact = json.dumps(data, separators=(",", ":")).encode()
    return EVENT_PREFIX + b',"event":"e","data":' + compact + b"}"


def unmask(frame: bytes) -> tuple[int, bytes]:
    assert frame[0] & 0x80, "FIN"
    assert frame[1] & 0x80, "client frames must be masked"
    n = frame[1] & 0x7F
    pos = 2
    if n == 126:
        n, pos = struct.unpack(">H", frame[2:4])[0], 4
    elif n == 127:
        n, pos = struct.unpack(">Q", frame[2:10])[0], 10
    mask, body = frame[pos : pos + 4], frame[pos + 4 :]
    assert len(body) == n
    return frame[0] & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(body))


def test_accept_key_matches_rfc_6455_example() -> None:
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("size", [0, 1, 125, 126, 1000, 65535, 65536, 70000])
def test_client_frames_are_masked_with_every_length_encoding(size: int) -> None:
    payload = os.urandom(size)
    frame = client_frame(0x1, payload)
    header = 2 + (0 if size < 126 else 2 if size < 65536 else 8)
    assert len(frame) == header + 4 + size
    assert unmask(frame) == (0x1, payload)


def test_client_frame_uses_a_fresh_mask_each_time() -> None:
    payload = b"same payload"
    assert client_frame(0x1, payload) != client_frame(0x1, payload)


def test_parse_handshake_accepts_a_valid_101_and_rejects_others() -> None:
    key = base64.b64encode(b"0123456789abcdef")
    good = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key)
    )
    parse_handshake(good, key)
    with pytest.raises(HandshakeError):
        parse_handshake(good.replace(b"101", b"400"), key)
    with pytest.raises(HandshakeError):
        parse_handshake(good.replace(accept_key(key), b"bogus"), key)
    request = handshake_request("127.0.0.1", 8080, "/ws", key)
    assert request.startswith(b"GET /ws HTTP/1.1\r\n") and request.endswith(b"\r\n\r\n")


def test_parser_counts_events_of_every_length_split_at_every_byte() -> None:
    stream = b"".join(
        [
            server_frame(event_payload(0, 100)),  # 16-bit length (over 125 bytes)
            server_frame(b'{"op":"welcome","socket":"s1"}'),  # 7-bit, not an event
            server_frame(event_payload(1, 200, pad=70_000)),  # 64-bit length
            server_frame(b"hi", opcode=0x9),  # ping
            server_frame(event_payload(2, 300)),
        ]
    )
    for cut in [*range(0, 40), *range(len(stream) - 40, len(stream) + 1), 70_050]:
        tally = Tally()
        parser = FrameParser(tally, sample=True, record=True)
        others = parser.feed(stream[:cut], 1000) + parser.feed(stream[cut:], 1000)
        assert parser.events == tally.events == 3
        assert others == [(0x1, b'{"op":"welcome","socket":"s1"}'), (0x9, b"hi")]
        assert parser.seqs == [0, 1, 2]
        assert sorted(tally.latencies_ns) == [700, 800, 900]
        assert tally.order_violations == 0 and tally.unstamped == 0


def test_parser_byte_by_byte_and_order_violations() -> None:
    stream = b"".join(server_frame(event_payload(s, 5)) for s in (0, 1, 1, 3))
    tally = Tally()
    parser = FrameParser(tally, sample=True)
    for i in range(len(stream)):
        assert parser.feed(stream[i : i + 1], 10) == []
    assert tally.events == 4
    assert tally.order_violations == 1  # the repeated 1
    assert parser.seqs == []  # only kept when recording


def test_unsampled_parser_only_counts() -> None:
    tally = Tally()
    parser = FrameParser(tally)
    parser.feed(server_frame(event_payload(0, 1)) * 5, 50)
    assert tally.events == 5 and tally.latencies_ns == []
    assert tally.first_ns == tally.last_ns == 50


def test_parser_rejects_masked_and_reserved_bits() -> None:
    with pytest.raises(ProtocolError):
        FrameParser(Tally()).feed(bytes((0x81, 0x85)) + b"\0" * 9, 0)
    with pytest.raises(ProtocolError):
        FrameParser(Tally()).feed(bytes((0xC1, 0x01)) + b"x", 0)


def test_stamp_puts_time_first() -> None:
    data = json.dumps(stamp(7, "pad", now_ns=123), separators=(",", ":"))
    assert data == '{"t":123,"s":7,"p":"pad"}'


# --- against a real Tornado server -------------------------------------------------------------


class Peer(tornado.websocket.WebSocketHandler):
    """A test server: welcome on open, then does what each client frame asks."""

    def initialize(self, log: dict[str, Any]) -> None:
        self.log = log

    def open(self, *args: str, **kwargs: str) -> None:
        self.log["open"] = self
        self.write_message(json.dumps({"op": "welcome", "socket": "s1"}))

    def on_message(self, message: str | bytes) -> None:
        msg = json.loads(message)
        self.log.setdefault("received", []).append(msg)
        op = msg["op"]
        if op == "events":
            for seq, pad in enumerate(msg["pads"]):
                data = stamp(seq, "x" * pad)
                self.write_message(
                    json.dumps({"op": "event", "event": "e", "data": data}, separators=(",", ":"))
                )
        elif op == "ping":
            self.ping(b"are you there")
        elif op == "close":
            self.close(msg["code"], "bye")
        if "ref" in msg:
            self.write_message(json.dumps({"op": "reply", "ref": msg["ref"], "statusCode": 200}))

    def on_pong(self, data: bytes) -> None:
        self.log["pong"] = data

    def on_close(self) -> None:
        self.log["close_code"] = self.close_code


async def serve(
    app: tornado.web.Application, body: Callable[[int], Awaitable[None]], timeout: float = 10 * T
) -> None:
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    try:
        await asyncio.wait_for(body(sockets[0].getsockname()[1]), timeout)
    finally:
        server.stop()
        await asyncio.wait_for(server.close_all_connections(), 5 * T)


def peer_app(log: dict[str, Any]) -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/ws", Peer, {"log": log}),
            (r"/plain", tornado.web.RedirectHandler, {"url": "/elsewhere"}),
        ]
    )


async def wait_for(predicate: Callable[[], bool], timeout: float = 5 * T) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def test_handshake_requests_and_pushes_of_every_length() -> None:
    log: dict[str, Any] = {}

    async def body(port: int) -> None:
        tally = Tally()
        client = await connect("127.0.0.1", port, timeout=5 * T, tally=tally, sample=True)
        assert client.socket_id == "s1" and client.is_open
        pads = [1, 200, 70_000, 3]  # 7-bit (under 126 bytes), 16-bit and 64-bit lengths
        reply = await client.request("events", 5 * T, pads=pads)
        assert reply["statusCode"] == 200
        # Tornado unmasked what we masked: it got our frame intact.
        assert log["received"] == [{"op": "events", "ref": 1, "pads": pads}]
        await wait_for(lambda: tally.events == len(pads))
        assert client.parser.last_seq == len(pads) - 1
        assert len(tally.latencies_ns) == len(pads)
        assert all(0 <= lat < 10 * T * 1e9 for lat in tally.latencies_ns)
        assert await client.close(5 * T) == 1000  # the code the server echoed
        await wait_for(lambda: "close_code" in log)
        assert log["close_code"] == 1000

    asyncio.run(serve(peer_app(log), body))


def test_small_frames_and_bulk_arrival() -> None:
    log: dict[str, Any] = {}

    async def body(port: int) -> None:
        tally = Tally()
        client = await connect("127.0.0.1", port, timeout=5 * T, tally=tally)
        # Many frames written back to back arrive coalesced in few reads.
        await client.request("events", 5 * T, pads=[0] * 2000)
        await wait_for(lambda: tally.events == 2000)
        assert tally.latencies_ns == []  # not sampled: counted only
        await client.close(5 * T)

    asyncio.run(serve(peer_app(log), body))


def test_ping_gets_a_pong_and_server_close_code_is_kept() -> None:
    log: dict[str, Any] = {}

    async def body(port: int) -> None:
        client = await connect("127.0.0.1", port, timeout=5 * T)
        client.send_json({"op": "ping"})
        await wait_for(lambda: "pong" in log)
        assert log["pong"] == b"are you there"
        client.send_json({"op": "close", "code": 4001})
        assert await asyncio.wait_for(client.closed, 5 * T) == 4001
        assert not client.is_open

    asyncio.run(serve(peer_app(log), body))


def test_failed_handshake_raises() -> None:
    async def body(port: int) -> None:
        with pytest.raises(HandshakeError):
            await connect("127.0.0.1", port, "/plain", timeout=5 * T)
        with pytest.raises(HandshakeError):
            await connect("127.0.0.1", port, "/missing", timeout=5 * T)

    asyncio.run(serve(peer_app({}), body))


def test_baseline_broadcasts_to_the_members_of_a_room_but_the_sender() -> None:
    state = baseline.Rooms()

    async def body(port: int) -> None:
        tallies = [Tally() for _ in range(4)]
        clients = [
            await connect("127.0.0.1", port, timeout=5 * T, tally=t, sample=True) for t in tallies
        ]
        assert len({c.socket_id for c in clients}) == 4
        for client in clients[:3]:
            reply = await client.request("join", 5 * T, room="r")
            assert reply["statusCode"] == 200
        assert (await clients[3].request("join", 5 * T, rooms=["other"]))["statusCode"] == 200
        for seq in range(5):
            data = stamp(seq, "x" * 60)
            clients[0].send_json({"op": "broadcast", "rooms": ["r"], "event": "e", "data": data})
        await wait_for(lambda: tallies[1].events == 5 and tallies[2].events == 5)
        assert tallies[0].events == 0  # the sender is left out
        assert tallies[1].order_violations == 0 and len(tallies[1].latencies_ns) == 5
        # echo: the sender too; two rooms: once per member; after a leave: no more.
        both = {"op": "broadcast", "rooms": ["r", "other"], "echo": True, "event": "e"}
        clients[0].send_json(both | {"data": stamp(5, "")})
        await wait_for(lambda: tallies[0].events == 1 and tallies[3].events == 1)
        assert (await clients[2].request("leave", 5 * T, rooms=["r"]))["statusCode"] == 200
        last = {"op": "broadcast", "rooms": ["r"], "event": "e", "data": stamp(6, "")}
        clients[1].send_json(last)
        await wait_for(lambda: tallies[0].events == 2)
        assert [t.events for t in tallies] == [2, 6, 6, 1]
        for client in clients:
            await client.close(5 * T)
        await wait_for(lambda: not state.conns and not state.members)

    asyncio.run(serve(baseline.make_app(state), body))
