"""The plain ``/ws`` JSON protocol (contract: architecture §4), as a pure codec.

``parse`` turns one inbound text frame into an op or raises :class:`FrameError` carrying the
client's ``ref`` (when usable) and a typed error; the ``encode_*`` functions build outbound
payloads. No I/O, no clock: the Tornado handler feeds frames in and writes what comes out.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from gateway import strictjson
from roomcast.core.errors import BadRequest, RoomcastError
from roomcast.core.rooms import as_room_list, validate_room

__all__ = [
    "BroadcastOp",
    "FrameError",
    "MembershipOp",
    "Op",
    "PresenceOp",
    "RequestOp",
    "dumps",
    "encode_error",
    "encode_event",
    "encode_raw_reply",
    "encode_reply",
    "encode_welcome",
    "parse",
]

Ref = int | str
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"})


def dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclasses.dataclass(frozen=True, slots=True)
class MembershipOp:
    ref: Ref
    rooms: list[str]
    leave: bool
    # join with recovery: {"op":"join","room":R,"recover":true,"since":{"epoch":E,"offset":N}}
    recover: bool = False
    since_epoch: str = ""
    since_offset: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class BroadcastOp:
    ref: Ref | None
    rooms: list[str]
    event: str
    data: bytes  # JSON, re-encoded by us (never the client's raw bytes)
    echo: bool


@dataclasses.dataclass(frozen=True, slots=True)
class RequestOp:
    ref: Ref
    method: str
    url: str
    data: bytes
    headers: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class PresenceOp:
    """Who is in a room (``stats``: only the numbers of connections and unique users)."""

    ref: Ref
    room: str
    stats: bool


Op = MembershipOp | BroadcastOp | RequestOp | PresenceOp


class FrameError(Exception):
    """A frame we reject: reply to ``ref`` if usable, else send an ``error`` op."""

    def __init__(self, ref: Ref | None, error: RoomcastError) -> None:
        super().__init__(error.message)
        self.ref = ref
        self.error = error


def _utf8(text: str) -> str:
    """``text``, or UnicodeEncodeError if it holds a lone surrogate (a ``"\\ud800"`` escape)."""
    text.encode()
    return text


def _ref(frame: dict[str, Any]) -> Ref | None:
    ref = frame.get("ref")
    if isinstance(ref, bool) or not isinstance(ref, (int, str)):
        return None
    if isinstance(ref, str):
        try:
            ref.encode()
        except UnicodeEncodeError:  # a lone surrogate: a reply could not echo it
            return None
    return ref


def parse(text: str) -> Op:
    """Parse one client frame."""
    try:
        frame = strictjson.loads(text)
    except (ValueError, RecursionError):
        raise FrameError(None, BadRequest("frame is not valid json")) from None
    if not isinstance(frame, dict):
        raise FrameError(None, BadRequest("frame must be a json object"))
    ref = _ref(frame)
    try:
        return _parse_op(frame, ref)
    except RoomcastError as err:
        raise FrameError(ref, err) from None
    except UnicodeEncodeError:
        raise FrameError(ref, BadRequest("strings must be valid unicode")) from None


def _parse_op(frame: dict[str, Any], ref: Ref | None) -> Op:
    op = frame.get("op")
    if op == "broadcast":
        event = frame.get("event", "message")
        if not isinstance(event, str) or not event:
            raise BadRequest("event must be a non-empty string")
        echo = frame.get("echo", False)
        if not isinstance(echo, bool):
            raise BadRequest("echo must be a boolean")
        return BroadcastOp(
            ref, as_room_list(frame.get("rooms")), _utf8(event), dumps(frame.get("data")), echo
        )
    if op not in ("join", "leave", "request", "presence", "presence_stats"):
        raise BadRequest(f"unknown op {op[:64]!r}" if isinstance(op, str) else "missing op")
    if ref is None:
        raise BadRequest(f"{op} needs a ref (integer or string)")
    if op == "request":
        method = frame.get("method", "GET")
        url = frame.get("url")
        headers = frame.get("headers", {})
        if not isinstance(method, str) or method.upper() not in _METHODS:
            raise BadRequest("method must be one of " + ", ".join(sorted(_METHODS)))
        if not isinstance(url, str) or not url.startswith("/"):
            raise BadRequest("url must be a path starting with /")
        if not isinstance(headers, dict):
            raise BadRequest("headers must be an object")
        return RequestOp(ref, method.upper(), _utf8(url), dumps(frame.get("data")), dumps(headers))
    if op in ("presence", "presence_stats"):
        return PresenceOp(ref, validate_room(frame.get("room")), op == "presence_stats")
    rooms = as_room_list(frame.get("room", frame.get("rooms")))
    since = frame.get("since")
    recover = frame.get("recover", since is not None)
    if op == "leave" or not recover:
        return MembershipOp(ref, rooms, op == "leave")
    if recover is not True or len(rooms) != 1:
        raise BadRequest("recover must be true, on a join of exactly one room")
    if since is None:  # a first join: learn the room's position, recover nothing
        return MembershipOp(ref, rooms, False, True)
    if not isinstance(since, dict):
        raise BadRequest("since must be an object {epoch, offset}")
    epoch, offset = since.get("epoch"), since.get("offset")
    if not isinstance(epoch, str) or isinstance(offset, bool) or not isinstance(offset, int):
        raise BadRequest("since needs a string epoch and an integer offset")
    if not 0 <= offset < 2**63:
        raise BadRequest("since.offset out of range")
    return MembershipOp(ref, rooms, False, True, _utf8(epoch), offset)


def encode_welcome(socket: str) -> bytes:
    return dumps({"op": "welcome", "socket": socket})


def encode_reply(ref: Ref, status: int, body: object = None) -> bytes:
    return dumps({"op": "reply", "ref": ref, "statusCode": status, "body": body, "headers": {}})


def encode_raw_reply(ref: Ref, status: int, body_json: bytes, headers_json: bytes) -> bytes:
    """A reply whose body and headers are already JSON (action responses)."""
    return (
        b'{"op":"reply","ref":'
        + dumps(ref)
        + b',"statusCode":'
        + str(int(status)).encode()
        + b',"body":'
        + (body_json or b"null")
        + b',"headers":'
        + (headers_json or b"{}")
        + b"}"
    )


def encode_error(status: int, body: object) -> bytes:
    return dumps({"op": "error", "statusCode": status, "body": body})


def encode_event(event: str, data_json: bytes, history_json: bytes = b"") -> bytes:
    """A push; ``data_json`` is the publisher's JSON, spliced in without re-parsing.
    ``history_json`` (rooms that keep a history): ``{"room": {"epoch": E, "offset": N}}``."""
    tail = b',"history":' + history_json + b"}" if history_json else b"}"
    return b'{"op":"event","event":' + dumps(event) + b',"data":' + data_json + tail
