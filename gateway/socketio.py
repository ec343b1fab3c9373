"""Engine.IO (v3 and v4) and Socket.IO (protocols 4 and 5) packets over WebSocket, pure.

Every ``encode_*`` returns a whole Engine.IO packet: Socket.IO packets already carry the
Engine.IO ``4`` (message) prefix, so ``42[...]`` is an event.

Only what a websocket-only server needs: the Engine.IO ``open``/``ping``/``pong``/``message``/
``close`` packets, and the Socket.IO ``CONNECT``/``DISCONNECT``/``EVENT``/``ACK`` packets on
the root namespace. EIO=3 is what sails.io.js 1.2.1 (socket.io-client 2.x) speaks: the client
pings and the server connects ``/`` on its own. EIO=4 (socket.io-client 3+/4.x): the server
pings and the client asks to connect ``/`` (``40``, optionally with an auth object).

Binary packets are not supported (Sails never sends them): they are a :class:`PacketError`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from gateway import strictjson

__all__ = [
    "PING",
    "PONG",
    "SIO_DISCONNECT",
    "SUPPORTED_EIO",
    "Packet",
    "PacketError",
    "encode_ack",
    "encode_connect",
    "encode_connect_error",
    "encode_event",
    "encode_open",
    "parse",
]

SUPPORTED_EIO = (3, 4)

# Engine.IO packet types
_E_OPEN, _E_CLOSE, _E_PING, _E_PONG, _E_MESSAGE, _E_UPGRADE, _E_NOOP = "0123456"
# Socket.IO packet types
_S_CONNECT, _S_DISCONNECT, _S_EVENT, _S_ACK = "0123"
_S_BINARY = "56"

PING = b"2"
PONG = b"3"
SIO_DISCONNECT = b"41"


class PacketError(Exception):
    """A client packet that does not parse (lower-case reason, no payload echoed)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Packet:
    """One inbound packet.

    ``kind``: ping, pong, close, noop, connect, disconnect, event or ack.
    """

    kind: str
    data: bytes = b""  # ping payload (EIO3 "2probe" style), echoed in the pong
    namespace: str = "/"
    ack: int | None = None
    args: tuple[Any, ...] = ()  # event: (name, *args); connect: (auth,) if any


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def parse(text: str) -> Packet:
    if not text:
        raise PacketError("empty packet")
    kind = text[0]
    if kind == _E_PING:
        return Packet("ping", text[1:].encode())
    if kind == _E_PONG:
        return Packet("pong")
    if kind == _E_CLOSE:
        return Packet("close")
    if kind in (_E_NOOP, _E_UPGRADE):
        return Packet("noop")
    if kind != _E_MESSAGE:
        raise PacketError(f"unknown engine.io packet type {kind!r}")
    return _parse_socket(text[1:])


def _parse_socket(text: str) -> Packet:
    if not text:
        raise PacketError("empty socket.io packet")
    kind, rest = text[0], text[1:]
    if kind in _S_BINARY:
        raise PacketError("binary packets are not supported")
    if kind not in (_S_CONNECT, _S_DISCONNECT, _S_EVENT, _S_ACK):
        raise PacketError(f"unknown socket.io packet type {kind!r}")
    namespace = "/"
    if rest.startswith("/"):
        end = rest.find(",")
        namespace, rest = (rest, "") if end < 0 else (rest[:end], rest[end + 1 :])
    digits = 0
    while digits < len(rest) and rest[digits] in "0123456789" and digits < 16:
        digits += 1
    ack = int(rest[:digits]) if digits else None
    rest = rest[digits:]
    payload: Any = None
    if rest:
        try:
            payload = strictjson.loads(rest)
        except (ValueError, RecursionError):
            raise PacketError("packet payload is not valid json") from None
    if kind == _S_CONNECT:
        if payload is not None and not isinstance(payload, dict):
            raise PacketError("connect payload must be an object")
        return Packet("connect", namespace=namespace, args=(payload,) if payload else ())
    if kind == _S_DISCONNECT:
        return Packet("disconnect", namespace=namespace)
    if not isinstance(payload, list):
        raise PacketError("event payload must be an array")
    if kind == _S_EVENT and (not payload or not isinstance(payload[0], str)):
        raise PacketError("event payload must start with the event name")
    return Packet(
        "event" if kind == _S_EVENT else "ack", namespace=namespace, ack=ack, args=tuple(payload)
    )


def encode_open(
    sid: str,
    *,
    ping_interval_ms: int,
    ping_timeout_ms: int,
    max_payload: int,
    upgrades: tuple[str, ...] = (),
) -> bytes:
    """The handshake; a polling session offers ``upgrades=("websocket",)``."""
    return b"0" + _dumps(
        {
            "sid": sid,
            "upgrades": list(upgrades),
            "pingInterval": ping_interval_ms,
            "pingTimeout": ping_timeout_ms,
            "maxPayload": max_payload,
        }
    )


def encode_connect(eio: int, sid: str) -> bytes:
    """Namespace ``/`` connected: bare for protocol 4 (EIO3), with the sid for protocol 5."""
    return b"40" if eio == 3 else b"40" + _dumps({"sid": sid})


def encode_connect_error(namespace: str, message: str) -> bytes:
    prefix = b"44" if namespace == "/" else b"44" + namespace.encode() + b","
    return prefix + _dumps({"message": message})


def encode_event(event: str, data_json: bytes) -> bytes:
    """``42["event",data]``; ``data_json`` is already JSON and is spliced in as is."""
    return b"42[" + _dumps(event) + b"," + data_json + b"]"


def encode_ack(ack: int, args_json: bytes) -> bytes:
    """``43<id>[...]``; ``args_json`` is the JSON of the single ack argument."""
    return b"43" + str(ack).encode() + b"[" + args_json + b"]"
