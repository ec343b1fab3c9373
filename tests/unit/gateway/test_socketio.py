"""gateway.socketio: Engine.IO v3/v4 and Socket.IO packets over WebSocket, parsed and encoded.

Parsing is table-driven over every packet a websocket-only server may receive; every encoder
returns a whole Engine.IO packet (``42[...]`` is an event) and is checked byte for byte.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway import socketio
from gateway.socketio import Packet, PacketError


def test_constants() -> None:
    assert socketio.SUPPORTED_EIO == (3, 4)
    assert socketio.PING == b"2"
    assert socketio.PONG == b"3"
    assert socketio.SIO_DISCONNECT == b"41"


# --- parse: good packets -------------------------------------------------------------------------

GOOD: list[Any] = [
    # Engine.IO
    pytest.param("2", Packet("ping"), id="ping"),
    pytest.param("2probe", Packet("ping", b"probe"), id="ping-probe"),
    pytest.param("2é", Packet("ping", "é".encode()), id="ping-utf8-payload"),
    pytest.param("3", Packet("pong"), id="pong"),
    pytest.param("3probe", Packet("pong"), id="pong-probe"),
    pytest.param("1", Packet("close"), id="close"),
    pytest.param("5", Packet("noop"), id="upgrade"),
    pytest.param("6", Packet("noop"), id="noop"),
    # Socket.IO CONNECT
    pytest.param("40", Packet("connect"), id="connect"),
    pytest.param('40{"token":"t"}', Packet("connect", args=({"token": "t"},)), id="connect-auth"),
    pytest.param("40{}", Packet("connect"), id="connect-empty-auth"),
    pytest.param("40null", Packet("connect"), id="connect-null-auth"),
    pytest.param("40/admin", Packet("connect", namespace="/admin"), id="connect-nsp"),
    pytest.param("40/admin,", Packet("connect", namespace="/admin"), id="connect-nsp-comma"),
    pytest.param(
        '40/admin,{"a":1}',
        Packet("connect", namespace="/admin", args=({"a": 1},)),
        id="connect-nsp-auth",
    ),
    pytest.param("40/", Packet("connect"), id="connect-root-nsp-explicit"),
    # Socket.IO DISCONNECT
    pytest.param("41", Packet("disconnect"), id="disconnect"),
    pytest.param("41/admin,", Packet("disconnect", namespace="/admin"), id="disconnect-nsp"),
    # Socket.IO EVENT
    pytest.param('42["ev"]', Packet("event", args=("ev",)), id="event-name-only"),
    pytest.param(
        '42["ev",1,{"a":[2]},null]',
        Packet("event", args=("ev", 1, {"a": [2]}, None)),
        id="event-args",
    ),
    pytest.param('4212["ev"]', Packet("event", ack=12, args=("ev",)), id="event-with-ack"),
    pytest.param('420["ev"]', Packet("event", ack=0, args=("ev",)), id="event-ack-zero"),
    pytest.param(
        '42' + "9" * 16 + '["ev"]',
        Packet("event", ack=9_999_999_999_999_999, args=("ev",)),
        id="event-16-digit-ack",
    ),
    pytest.param(
        '42/admin,["ev",1]', Packet("event", namespace="/admin", args=("ev", 1)), id="event-nsp"
    ),
    pytest.param(
        '42/admin,7["ev"]',
        Packet("event", namespace="/admin", ack=7, args=("ev",)),
        id="event-nsp-ack",
    ),
    pytest.param(
        '42["get",{"url":"/a","data":{},"headers":{},"method":"get"}]',
        Packet("event", args=("get", {"url": "/a", "data": {}, "headers": {}, "method": "get"})),
        id="event-sails-request",
    ),
    pytest.param('42[""]', Packet("event", args=("",)), id="event-empty-name"),
    pytest.param('42["é",1.5]', Packet("event", args=("é", 1.5)), id="event-utf8"),
    # Socket.IO ACK (the client answering a server emit)
    pytest.param("431[]", Packet("ack", ack=1), id="ack-no-args"),
    pytest.param('435[{"a":1},2]', Packet("ack", ack=5, args=({"a": 1}, 2)), id="ack-args"),
    pytest.param("43[1]", Packet("ack", args=(1,)), id="ack-without-id"),
    pytest.param('43/admin,2["x"]', Packet("ack", namespace="/admin", ack=2, args=("x",)),
                 id="ack-nsp"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_parse_good_packets(text: str, expected: Packet) -> None:
    assert socketio.parse(text) == expected


# --- parse: errors -------------------------------------------------------------------------------

BAD: list[Any] = [
    pytest.param("", "empty packet", id="empty"),
    # Engine.IO types a client may not send, and garbage
    pytest.param("0", "unknown engine.io packet type '0'", id="open-from-client"),
    pytest.param('0{"sid":"x"}', "unknown engine.io packet type '0'", id="open-with-payload"),
    pytest.param("7", "unknown engine.io packet type '7'", id="type-7"),
    pytest.param("x", "unknown engine.io packet type 'x'", id="letter"),
    pytest.param("{}", "unknown engine.io packet type '{'", id="json"),
    pytest.param("b4AAA", "unknown engine.io packet type 'b'", id="eio3-base64-binary"),
    # Socket.IO types
    pytest.param("4", "empty socket.io packet", id="empty-message"),
    pytest.param('451-["ev",{"_placeholder":true,"num":0}]', "binary packets are not supported",
                 id="binary-event"),
    pytest.param('461-[{"_placeholder":true,"num":0}]', "binary packets are not supported",
                 id="binary-ack"),
    pytest.param("45", "binary packets are not supported", id="binary-event-bare"),
    pytest.param('44{"message":"x"}', "unknown socket.io packet type '4'", id="connect-error"),
    pytest.param("47", "unknown socket.io packet type '7'", id="sio-type-7"),
    pytest.param("4x", "unknown socket.io packet type 'x'", id="sio-letter"),
    pytest.param('4["ev"]', "unknown socket.io packet type '['", id="sio-missing-type"),
    # bad json
    pytest.param('42["ev"', "packet payload is not valid json", id="truncated-json"),
    pytest.param("42[ev]", "packet payload is not valid json", id="unquoted"),
    pytest.param("42" + "[" * 100_000, "packet payload is not valid json", id="nesting-too-deep"),
    pytest.param('42["ev",NaN]', "packet payload is not valid json", id="nan"),
    pytest.param('42["ev",Infinity]', "packet payload is not valid json", id="infinity"),
    pytest.param('42["ev",-Infinity]', "packet payload is not valid json", id="minus-infinity"),
    pytest.param('40{"a":1', "packet payload is not valid json", id="connect-bad-json"),
    pytest.param('42' + "1" * 17 + '["ev"]', "packet payload is not valid json",
                 id="ack-over-16-digits"),
    pytest.param('42\u00b2["ev"]', "packet payload is not valid json", id="superscript-digit-ack"),
    pytest.param('42\u0663["ev"]', "packet payload is not valid json", id="arabic-indic-digit-ack"),
    pytest.param('42\uff11["ev"]', "packet payload is not valid json", id="fullwidth-digit-ack"),
    pytest.param('42/admin["ev"]', "event payload must be an array",
                 id="nsp-without-comma-swallows-payload"),
    pytest.param('42/admin["ev",1]', "packet payload is not valid json",
                 id="nsp-up-to-first-comma"),
    # connect payload
    pytest.param("40[1]", "connect payload must be an object", id="connect-array"),
    pytest.param('40"tok"', "connect payload must be an object", id="connect-string"),
    pytest.param('40/admin,"x"', "connect payload must be an object", id="connect-nsp-string"),
    # event / ack payload
    pytest.param("42", "event payload must be an array", id="event-no-payload"),
    pytest.param("427", "event payload must be an array", id="event-ack-no-payload"),
    pytest.param('42{"a":1}', "event payload must be an array", id="event-object"),
    pytest.param('42"ev"', "event payload must be an array", id="event-string"),
    pytest.param("42null", "event payload must be an array", id="event-null"),
    pytest.param("42[]", "event payload must start with the event name", id="event-empty"),
    pytest.param("42[1]", "event payload must start with the event name", id="event-number-name"),
    pytest.param('42[null,"ev"]', "event payload must start with the event name",
                 id="event-null-name"),
    pytest.param('42[["ev"]]', "event payload must start with the event name",
                 id="event-list-name"),
    pytest.param("43", "event payload must be an array", id="ack-no-payload"),
    pytest.param("431", "event payload must be an array", id="ack-id-no-payload"),
    pytest.param("431{}", "event payload must be an array", id="ack-object"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(PacketError) as info:
        socketio.parse(text)
    assert str(info.value) == message
    assert str(info.value)[:1].islower()


def test_errors_never_echo_the_payload() -> None:
    for text in ['42["s3cr3t"', '42{"s3cr3t":1}', '40["s3cr3t"]', '451-["s3cr3t"]']:
        with pytest.raises(PacketError) as info:
            socketio.parse(text)
        assert "s3cr3t" not in str(info.value), text


# --- encoders ------------------------------------------------------------------------------------


def test_encode_open() -> None:
    out = socketio.encode_open(
        "sid1", ping_interval_ms=25_000, ping_timeout_ms=20_000, max_payload=1_000_000
    )
    assert out == (
        b'0{"sid":"sid1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,'
        b'"maxPayload":1000000}'
    )
    assert json.loads(out[1:]) == {
        "sid": "sid1",
        "upgrades": [],
        "pingInterval": 25_000,
        "pingTimeout": 20_000,
        "maxPayload": 1_000_000,
    }


@pytest.mark.parametrize(
    ("eio", "sid", "expected"),
    [
        pytest.param(3, "abc", b"40", id="eio3-bare"),
        pytest.param(4, "abc", b'40{"sid":"abc"}', id="eio4-with-sid"),
        pytest.param(4, "A-b_9", b'40{"sid":"A-b_9"}', id="eio4-urlsafe-sid"),
    ],
)
def test_encode_connect(eio: int, sid: str, expected: bytes) -> None:
    out = socketio.encode_connect(eio, sid)
    assert out == expected
    if eio == 4:
        assert json.loads(out[2:]) == {"sid": sid}


ENCODED: list[Any] = [
    pytest.param(
        socketio.encode_event("chat", b'{"a":1}'),
        b'42["chat",{"a":1}]',
        ["chat", {"a": 1}],
        id="event",
    ),
    pytest.param(
        socketio.encode_event("message", b"null"),
        b'42["message",null]',
        ["message", None],
        id="event-null",
    ),
    pytest.param(
        socketio.encode_event('a"b\n', b" [1, 2] "),
        b'42["a\\"b\\n", [1, 2] ]',
        ['a"b\n', [1, 2]],
        id="event-escaped-name-verbatim-data",
    ),
    pytest.param(
        socketio.encode_event("ünï", '"ç"'.encode()),
        '42["ünï","ç"]'.encode(),
        ["ünï", "ç"],
        id="event-utf8",
    ),
    pytest.param(
        socketio.encode_ack(5, b'{"body":null,"headers":{},"statusCode":200}'),
        b'435[{"body":null,"headers":{},"statusCode":200}]',
        [{"body": None, "headers": {}, "statusCode": 200}],
        id="ack",
    ),
    pytest.param(socketio.encode_ack(0, b"1"), b"430[1]", [1], id="ack-zero"),
    pytest.param(
        socketio.encode_ack(12345678901234, b'"x"'), b'4312345678901234["x"]', ["x"], id="ack-big"
    ),
    pytest.param(
        socketio.encode_connect_error("/", "Invalid namespace"),
        b'44{"message":"Invalid namespace"}',
        {"message": "Invalid namespace"},
        id="connect-error-root",
    ),
    pytest.param(
        socketio.encode_connect_error("/admin", "Invalid namespace"),
        b'44/admin,{"message":"Invalid namespace"}',
        {"message": "Invalid namespace"},
        id="connect-error-nsp",
    ),
]


def _sio_json(packet: bytes) -> Any:
    """The JSON part of a ``4x[nsp,][id]json`` packet."""
    body = packet[2:]
    if body.startswith(b"/"):
        body = body[body.index(b",") + 1 :]
    return json.loads(body.lstrip(b"0123456789"))


@pytest.mark.parametrize(("encoded", "exact", "payload"), ENCODED)
def test_encoders(encoded: bytes, exact: bytes, payload: Any) -> None:
    assert encoded == exact
    assert encoded[:1] == b"4"  # an Engine.IO message carrying a Socket.IO packet
    assert _sio_json(encoded) == payload


def test_encode_event_splices_data_without_reparsing() -> None:
    data = b'{"big":[' + b"1," * 5_000 + b"1]}"
    assert socketio.encode_event("e", data) == b'42["e",' + data + b"]"


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        pytest.param(
            socketio.encode_event("chat", b'{"a":1}'),
            Packet("event", args=("chat", {"a": 1})),
            id="event",
        ),
        pytest.param(socketio.encode_ack(9, b'{"x":1}'), Packet("ack", ack=9, args=({"x": 1},)),
                     id="ack"),
        pytest.param(socketio.encode_connect(3, "s"), Packet("connect"), id="connect-eio3"),
        pytest.param(socketio.encode_connect(4, "s"), Packet("connect", args=({"sid": "s"},)),
                     id="connect-eio4"),
        pytest.param(socketio.SIO_DISCONNECT, Packet("disconnect"), id="disconnect"),
        pytest.param(socketio.PING, Packet("ping"), id="ping"),
        pytest.param(socketio.PONG, Packet("pong"), id="pong"),
    ],
)  # fmt: skip
def test_encoded_packets_parse_back(encoded: bytes, expected: Packet) -> None:
    """The grammar is symmetric: what we send parses with our own parser."""
    assert socketio.parse(encoded.decode()) == expected
