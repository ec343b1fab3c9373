"""Hypothesis strategies of the fuzz targets: JSON shapes, odd strings, wire messages, /ws frames,
Socket.IO packets."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from gateway import socketio
from roomcast.core import wire
from tests.fuzz.support import raw_frame

__all__ = [
    "NUMBERS",
    "json_text",
    "json_values",
    "mostly",
    "odd_strings",
    "sio_accepted",
    "sio_packets",
    "small_json",
    "uint32",
    "uint64",
    "wire_messages",
    "ws_body_frames",
    "ws_breakers",
    "ws_ops",
]

uint64 = st.integers(0, 2**64 - 1)
uint32 = st.integers(0, 2**32 - 1)

# Strings that sit on the edges of what room names, refs and events allow: empty, control
# characters, lone surrogates (JSON can carry them as \ud800 escapes), 256 bytes and just over.
odd_strings = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.characters(categories=["Cs", "Cc", "Co", "Zl", "Zs"]), max_size=6),
    st.sampled_from(
        [
            "",
            ":",
            "a" * 256,
            "a" * 257,
            "é" * 128,
            "é" * 129,
            "\x00",
            "\x7f",
            "\u0085",
            "sails_model_user_7:user",
            "*",
            "*\x00",
            "g\x00",
            "NaN",
        ]
    ),
)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN and infinities too: json.dumps writes them as NaN / Infinity
    odd_strings,
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_strings, inner, max_size=4),
    max_leaves=6,
)
# Cheaper to draw, for fields inside larger shapes.
small_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(odd_strings, inner, max_size=2),
    max_leaves=2,
)


def json_text(value: Any, ascii_only: bool) -> str:
    """JSON of ``value`` as the text of a frame (ASCII escapes when it holds lone surrogates)."""
    text = json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)
    try:
        text.encode()
    except UnicodeEncodeError:
        text = json.dumps(value, ensure_ascii=True, allow_nan=True)
    return text


_strs = st.text(max_size=16) | st.sampled_from(["", "lobby", "a" * 300, "*", "gw:x"])
_str_lists = st.lists(_strs, max_size=4).map(tuple)
_bytes = st.binary(max_size=64) | st.sampled_from([b"null", b"{}", b'{"a":1}', b"\xff\xfe", b"["])
_rooms = st.lists(st.builds(wire.SocketRooms, socket=_strs, rooms=_str_lists), max_size=3).map(
    tuple
)

# Every message type with random field values, valid or not (enum fields may be out of range).
wire_messages = st.one_of(
    st.builds(
        wire.Hello, ref=uint64, node_id=_strs, role=st.integers(0, 9), protocol_version=uint32
    ),
    st.builds(wire.Heartbeat, node_id=_strs),
    st.builds(wire.SocketOpen, ref=uint64, sockets=_str_lists),
    st.builds(wire.SocketClose, sockets=_str_lists),
    st.builds(
        wire.Membership, ref=uint64, leave=st.booleans(), sockets=_str_lists, rooms=_str_lists
    ),
    st.builds(wire.LeaveAll, ref=uint64, room=_strs),
    st.builds(wire.CopyMembers, ref=uint64, remove=st.booleans(), source=_strs, rooms=_str_lists),
    st.builds(
        wire.Publish,
        ref=uint64,
        rooms=_str_lists,
        everyone=st.booleans(),
        event=_strs,
        data=_bytes,
        omit=_str_lists,
    ),
    st.builds(wire.Query, ref=uint64, kind=st.integers(0, 9), target=_strs),
    st.builds(wire.Resync, ref=uint64, sockets=_rooms, last=st.booleans()),
    st.builds(
        wire.Request,
        ref=uint64,
        socket=_strs,
        method=_strs,
        url=_strs,
        headers=_bytes,
        data=_bytes,
    ),
    st.builds(
        wire.HelloAck,
        ref=uint64,
        epoch=_strs,
        protocol_version=uint32,
        heartbeat_interval_ms=uint32,
    ),
    st.builds(
        wire.Reply,
        ref=uint64,
        status=uint32,
        error=_strs,
        message=_strs,
        count=uint64,
        names=_str_lists,
        body=_bytes,
        headers=_bytes,
        gateways=uint32,
    ),
    st.builds(wire.MemberUpdate, joins=_rooms, leaves=_rooms),
    st.builds(
        wire.Deliver,
        rooms=_str_lists,
        everyone=st.booleans(),
        event=_strs,
        data=_bytes,
        omit=_str_lists,
        accepted_ns=uint64,
    ),
    st.builds(wire.RouterBeat, epoch=_strs),
    st.builds(wire.Reset, epoch=_strs),
)


# Raw bytes that break the WebSocket (or close it); the gateway may close, never crash.
ws_breakers = st.one_of(
    st.none(),
    st.binary(min_size=2, max_size=64).map(lambda p: raw_frame(0x8, p)),
    st.binary(min_size=1, max_size=64).map(lambda p: raw_frame(0x1, b"\xff" + p)),
    st.tuples(st.integers(1, 7), st.binary(max_size=16)).map(
        lambda t: raw_frame(0x1, t[1], rsv=t[0])
    ),
    st.sampled_from([0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xF]).map(lambda op: raw_frame(op, b"x")),
    st.binary(max_size=16).map(lambda p: raw_frame(0x1, p, masked=False)),
    st.integers(2**20 + 1, 2**63 - 1).map(lambda n: raw_frame(0x1, b"{}", declared=n)),
    st.binary(max_size=16).map(lambda p: raw_frame(0x1, p, fin=False) + raw_frame(0x2, p)),
    st.binary(min_size=126, max_size=200).map(lambda p: raw_frame(0x9, p)),
    st.binary(min_size=1, max_size=128),
)


def mostly(draw: Any, usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> Any:
    """A draw from ``usual`` about nine times in ten, else from ``rare`` (``st.one_of`` picks
    each branch about equally often, whatever is repeated in it)."""
    return draw(usual) if draw(st.integers(0, 9)) else draw(rare)


# --- /ws ------------------------------------------------------------------------------------

OP_NAMES = st.sampled_from(["join", "leave", "broadcast", "request", "welcome", "event", "reply"])
METHODS = st.sampled_from(["GET", "post", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "BREW"])
URLS = st.sampled_from(["/", "/chat/join", "x", "", "//", "/\x00", "/" + "a" * 3000])
# Rooms this connection joins and broadcasts to with echo, so it sees its own pushes too.
OWN_ROOMS = st.sampled_from(["fz-a", "fz-b"])
ROOMS = OWN_ROOMS | odd_strings | json_values
# Number literals at the edges of what a double holds (1e999 parses to inf in Python).
NUMBERS = st.sampled_from(
    ["1e999", "-1e999", "1E400", "0.1e-999", "1e308", "-0", "1.0", "9" * 400 + ".5", "1" * 30]
) | st.floats(allow_nan=False, allow_infinity=False).map(repr)

ws_ops = st.fixed_dictionaries(
    {},
    optional={
        "op": OP_NAMES | odd_strings | json_values,
        "ref": st.integers(-(2**70), 2**70) | odd_strings | json_values,
        "room": ROOMS,
        "rooms": ROOMS | st.lists(ROOMS, max_size=5),
        "event": odd_strings | json_values,
        "data": json_values,
        "echo": st.booleans() | json_values,
        "method": METHODS | json_values,
        "url": URLS | json_values,
        "headers": json_values | st.dictionaries(odd_strings, odd_strings, max_size=3),
    },
)

# (opcode, payload) frames that keep the WebSocket itself intact.
ws_body_frames = st.one_of(
    st.tuples(st.just(0x1), st.tuples(ws_ops, st.booleans()).map(lambda p: json_text(*p).encode())),
    st.tuples(
        st.just(0x1), st.tuples(json_values, st.booleans()).map(lambda p: json_text(*p).encode())
    ),
    st.tuples(st.just(0x1), st.text(max_size=200).map(str.encode)),
    st.tuples(st.just(0x1), st.integers(1, 100_000).map(lambda n: b"[" * n)),
    st.tuples(
        st.just(0x1),
        st.integers(4000, 6000).map(lambda n: b'{"op":"join","ref":' + b"7" * n + b"}"),
    ),
    st.tuples(
        st.just(0x1), OWN_ROOMS.map(lambda r: f'{{"op":"join","ref":0,"room":"{r}"}}'.encode())
    ),
    st.tuples(
        st.just(0x1),
        st.tuples(OWN_ROOMS, NUMBERS).map(
            lambda t: f'{{"op":"broadcast","rooms":"{t[0]}","echo":true,"data":{t[1]}}}'.encode()
        ),
    ),
    st.tuples(st.just(0x2), st.binary(max_size=200)),
    st.tuples(st.just(0x9), st.binary(max_size=125)),
    st.tuples(st.just(0xA), st.binary(max_size=125)),
)  # fmt: skip


# --- /socket.io/ ---------------------------------------------------------------------------

EVENTS = st.sampled_from(
    ["get", "post", "put", "patch", "delete", "options", "head", "GET", "message", "connect"]
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "method": EVENTS | odd_strings | small_json,
        "url": st.sampled_from(["/", "/chat/join", "x", "", "/\x00"]) | odd_strings | small_json,
        "headers": small_json | st.dictionaries(odd_strings, odd_strings, max_size=2),
        "data": small_json,
    },
)
event_args = st.tuples(EVENTS | odd_strings, st.lists(envelopes | small_json, max_size=2)).map(
    lambda t: [t[0], *t[1]]
)
payloads = st.none() | event_args | json_values | st.just([])


@st.composite
def sio_packets(draw: Any) -> str:
    """One Engine.IO packet as text: mostly well formed, so most reach the handler."""
    eio = mostly(draw, st.just("4"), st.sampled_from("012356") | st.text(max_size=1))
    if eio != "4":
        return eio + draw(st.text(max_size=12))
    sio = mostly(
        draw, st.sampled_from("0222222333"), st.sampled_from("1456789") | st.text(max_size=1)
    )
    namespace = mostly(
        draw,
        st.just(""),
        st.sampled_from(["/", "/,", "/admin,", "/x", "/a/b,"])
        | st.text(max_size=6).map(lambda t: "/" + t + ","),
    )
    ack = mostly(
        draw,
        st.sampled_from(["", "", "1"]) | st.integers(0, 10**6).map(str),
        st.sampled_from(["99999999999999999999", "0001", "-1"]),
    )
    if sio == "2":
        payload = mostly(draw, event_args, payloads)
    elif sio == "3":
        payload = mostly(draw, st.lists(json_values, max_size=3), payloads)
    elif sio == "0":
        payload = mostly(
            draw, st.none() | st.dictionaries(odd_strings, json_values, max_size=3), payloads
        )
    else:
        payload = mostly(draw, st.none(), payloads)
    body = "" if payload is None else json_text(payload, draw(st.booleans()))
    return "4" + sio + namespace + ack + body


def sio_accepted(packet: str) -> bool:
    """Whether the gateway keeps the connection after this packet (its own pure parser)."""
    try:
        parsed = socketio.parse(packet)
    except socketio.PacketError:
        return False
    return parsed.kind not in ("close", "disconnect")
