"""The wire codec: the only module that touches the generated protobuf code.

Everything else in roomcast handles the frozen dataclasses below, a tagged union (``Message``)
mirroring ``proto/roomcast.proto`` one to one; :func:`decode` is the only place bytes become
messages and :func:`encode` the only place messages become bytes. Bytes from a peer that do not
decode raise :class:`WireError` (count it and drop the message; never log the bytes).

Framing around a body (multipart ZeroMQ messages) lives here too: topics on the router's PUB
socket are NUL-terminated gateway ids (``g1`` never matches ``g10``) plus one cluster topic, and
each message for a gateway carries an 8-byte big-endian sequence number so gaps are detected.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Sequence
from typing import Any, ClassVar

from google.protobuf.message import DecodeError

from roomcast.core.errors import WireError
from roomcast.core.pb import roomcast_pb2 as pb

__all__ = [
    "CLUSTER_TOPIC",
    "PROTOCOL_VERSION",
    "Bundle",
    "CopyMembers",
    "Deliver",
    "Delivered",
    "Goodbye",
    "Heartbeat",
    "Hello",
    "HelloAck",
    "LeaveAll",
    "MemberUpdate",
    "Membership",
    "Message",
    "PeerState",
    "Publish",
    "Query",
    "QueryKind",
    "Reply",
    "Request",
    "Reset",
    "Resync",
    "Role",
    "RoomOffset",
    "RouterBeat",
    "RouterRole",
    "RouterState",
    "SetPresence",
    "SocketClose",
    "SocketOpen",
    "SocketRooms",
    "TrackPresence",
    "compatible",
    "decode",
    "encode",
    "gateway_topic",
    "pack_seq",
    "split_frames",
    "unpack_seq",
    "version_name",
]

# major * 100 + minor. A minor bump adds what older peers can ignore (new fields, new request
# kinds); a major bump is a change they cannot. Peers of another major version are refused at
# Hello; older minors keep working. 1.0: the cluster core. 1.1: CONNECT/DISCONNECT hook requests.
# 1.2: route-aware workers (Hello.routes), the requester's identity on requests (contexts).
# 2.0: Bundle (a gateway's stream packs a batch's messages into one sequenced message), Goodbye,
# the router state LEAVING. 2.1: per-start gateway sessions (routing id), answered gateway
# heartbeats, client joins (Membership.client), bounded recovery answers.
PROTOCOL_VERSION = 201

CLUSTER_TOPIC = b"*\x00"
_SEQ = struct.Struct(">Q")


class Role(enum.IntEnum):
    UNSPECIFIED = 0
    GATEWAY = 1
    CLIENT = 2
    WORKER = 3


class RouterRole(enum.IntEnum):
    UNSPECIFIED = 0
    PRIMARY = 1
    BACKUP = 2


class RouterState(enum.IntEnum):
    UNSPECIFIED = 0
    PRIMARY = 1
    BACKUP = 2
    ACTIVE = 3
    PASSIVE = 4
    LEAVING = 5


class QueryKind(enum.IntEnum):
    UNSPECIFIED = 0
    COUNT = 1
    MEMBERS = 2
    ROOMS = 3
    PRESENCE = 4
    PRESENCE_STATS = 5
    RECOVER = 6


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SocketRooms:
    socket: str = ""
    rooms: tuple[str, ...] = ()
    user: str = ""
    meta: bytes = b""
    context: bytes = b""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RoomOffset:
    room: str = ""
    epoch: str = ""
    offset: int = 0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    KIND: ClassVar[str] = "hello"
    ref: int = 0
    node_id: str = ""
    role: Role = Role.UNSPECIFIED
    protocol_version: int = PROTOCOL_VERSION
    routes: tuple[str, ...] = ()
    routes_known: bool = False
    busy: bool = False


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    KIND: ClassVar[str] = "heartbeat"
    node_id: str = ""
    ref: int = 0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Goodbye:
    KIND: ClassVar[str] = "goodbye"
    ref: int = 0
    node_id: str = ""
    role: Role = Role.UNSPECIFIED


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SocketOpen:
    KIND: ClassVar[str] = "socket_open"
    ref: int = 0
    sockets: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    contexts: tuple[bytes, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SocketClose:
    KIND: ClassVar[str] = "socket_close"
    sockets: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Membership:
    KIND: ClassVar[str] = "membership"
    ref: int = 0
    leave: bool = False
    sockets: tuple[str, ...] = ()
    rooms: tuple[str, ...] = ()
    recover: bool = False
    since_epoch: str = ""
    since_offset: int = 0
    client: bool = False
    recover_max_bytes: int = 0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LeaveAll:
    KIND: ClassVar[str] = "leave_all"
    ref: int = 0
    room: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CopyMembers:
    KIND: ClassVar[str] = "copy_members"
    ref: int = 0
    remove: bool = False
    source: str = ""
    rooms: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Publish:
    KIND: ClassVar[str] = "publish"
    ref: int = 0
    rooms: tuple[str, ...] = ()
    everyone: bool = False
    event: str = "message"
    data: bytes = b"null"
    omit: tuple[str, ...] = ()
    receipt: bool = False
    confirm: bool = False
    confirm_timeout_ms: int = 0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    KIND: ClassVar[str] = "query"
    ref: int = 0
    kind: QueryKind = QueryKind.UNSPECIFIED
    target: str = ""
    epoch: str = ""
    offset: int = 0
    max_bytes: int = 0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Resync:
    KIND: ClassVar[str] = "resync"
    ref: int = 0
    sockets: tuple[SocketRooms, ...] = ()
    last: bool = False


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    KIND: ClassVar[str] = "request"
    ref: int = 0
    socket: str = ""
    method: str = ""
    url: str = ""
    headers: bytes = b"{}"
    data: bytes = b"null"
    user: str = ""
    context: bytes = b""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SetPresence:
    KIND: ClassVar[str] = "set_presence"
    ref: int = 0
    socket: str = ""
    user: str = ""
    meta: bytes = b""
    context: bytes = b""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TrackPresence:
    KIND: ClassVar[str] = "track_presence"
    ref: int = 0
    room: str = ""
    enabled: bool = True


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Delivered:
    KIND: ClassVar[str] = "delivered"
    confirm: int = 0
    sockets: int = 0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HelloAck:
    KIND: ClassVar[str] = "hello_ack"
    ref: int = 0
    epoch: str = ""
    protocol_version: int = PROTOCOL_VERSION
    heartbeat_interval_ms: int = 0
    heartbeat_acks: bool = False


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    KIND: ClassVar[str] = "reply"
    ref: int = 0
    status: int = 200
    error: str = ""
    message: str = ""
    count: int = 0
    names: tuple[str, ...] = ()
    body: bytes = b""
    headers: bytes = b""
    gateways: int = 0
    sockets: int = 0
    omitted: int = 0
    confirmed: int = 0
    complete: bool = False


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MemberUpdate:
    KIND: ClassVar[str] = "member_update"
    joins: tuple[SocketRooms, ...] = ()
    leaves: tuple[SocketRooms, ...] = ()
    identities: tuple[SocketRooms, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Deliver:
    KIND: ClassVar[str] = "deliver"
    rooms: tuple[str, ...] = ()
    everyone: bool = False
    event: str = "message"
    data: bytes = b"null"
    omit: tuple[str, ...] = ()
    accepted_ns: int = 0
    confirm: int = 0
    offsets: tuple[RoomOffset, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RouterBeat:
    KIND: ClassVar[str] = "router_beat"
    epoch: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Bundle:
    KIND: ClassVar[str] = "bundle"
    bodies: tuple[bytes, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Reset:
    KIND: ClassVar[str] = "reset"
    epoch: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PeerState:
    """Router to router (a primary/backup pair): the sender's role, state and epoch."""

    KIND: ClassVar[str] = "peer_state"
    role: RouterRole = RouterRole.UNSPECIFIED
    state: RouterState = RouterState.UNSPECIFIED
    epoch: str = ""
    gateways: tuple[str, ...] = ()


Message = (
    Hello
    | Heartbeat
    | Goodbye
    | SocketOpen
    | SocketClose
    | Membership
    | LeaveAll
    | CopyMembers
    | Publish
    | Query
    | Resync
    | Request
    | SetPresence
    | TrackPresence
    | Delivered
    | HelloAck
    | Reply
    | MemberUpdate
    | Deliver
    | RouterBeat
    | Reset
    | Bundle
    | PeerState
)

_TYPES: tuple[type[Message], ...] = Message.__args__

# Per message type, how each field converts: "s" scalar, "l" list of scalars, "r" list of
# SocketRooms, "o" list of RoomOffset, or an enum class. Computed once so encode/decode stay
# loops over tuples.
_SCALAR, _LIST, _ROOMS, _OFFSETS = "s", "l", "r", "o"


def _plan(cls: type) -> tuple[tuple[str, object], ...]:
    plan: list[tuple[str, object]] = []
    for f in dataclasses.fields(cls):
        t = str(f.type)
        if t == "tuple[SocketRooms, ...]":
            plan.append((f.name, _ROOMS))
        elif t == "tuple[RoomOffset, ...]":
            plan.append((f.name, _OFFSETS))
        elif t.startswith("tuple["):
            plan.append((f.name, _LIST))
        elif t == "Role":
            plan.append((f.name, Role))
        elif t == "QueryKind":
            plan.append((f.name, QueryKind))
        elif t == "RouterRole":
            plan.append((f.name, RouterRole))
        elif t == "RouterState":
            plan.append((f.name, RouterState))
        else:
            plan.append((f.name, _SCALAR))
    return tuple(plan)


_PLANS: dict[str, tuple[type[Message], tuple[tuple[str, object], ...]]] = {
    cls.KIND: (cls, _plan(cls)) for cls in _TYPES
}


def encode(msg: Message) -> bytes:
    """Serialize one message to a ``Frame`` body."""
    frame = pb.Frame()
    sub = getattr(frame, msg.KIND)
    sub.SetInParent()
    for name, how in _PLANS[msg.KIND][1]:
        value = getattr(msg, name)
        if not value:
            continue  # the field's default (0, "", b"", False, empty): proto3 omits it anyway
        if how is _LIST:
            getattr(sub, name).extend(value)
        elif how is _ROOMS:
            target = getattr(sub, name)
            for item in value:
                target.add(
                    socket=item.socket,
                    rooms=item.rooms,
                    user=item.user,
                    meta=item.meta,
                    context=item.context,
                )
        elif how is _OFFSETS:
            target = getattr(sub, name)
            for item in value:
                target.add(room=item.room, epoch=item.epoch, offset=item.offset)
        else:
            setattr(sub, name, value)
    return frame.SerializeToString()


def decode(data: bytes) -> Message:
    """Parse one ``Frame`` body; raise :class:`WireError` for anything that is not one."""
    frame = pb.Frame()
    try:
        frame.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise WireError("undecodable frame") from exc
    kind = frame.WhichOneof("body")
    if kind is None:
        raise WireError("frame carries no message")
    cls, plan = _PLANS[kind]
    sub = getattr(frame, kind)
    kwargs: dict[str, Any] = {}
    for name, how in plan:
        value = getattr(sub, name)
        if how is _LIST:
            kwargs[name] = tuple(value)
        elif how is _ROOMS:
            kwargs[name] = tuple(
                SocketRooms(
                    socket=i.socket,
                    rooms=tuple(i.rooms),
                    user=i.user,
                    meta=i.meta,
                    context=i.context,
                )
                for i in value
            )
        elif how is _OFFSETS:
            kwargs[name] = tuple(
                RoomOffset(room=i.room, epoch=i.epoch, offset=i.offset) for i in value
            )
        elif how is _SCALAR:
            kwargs[name] = value
        else:
            try:
                kwargs[name] = how(value)  # type: ignore[operator]
            except ValueError:
                raise WireError(f"unknown {name} {value}") from None
    return cls(**kwargs)


def compatible(version: int) -> bool:
    """Whether a peer speaking ``version`` can talk to us (same major version)."""
    return version // 100 == PROTOCOL_VERSION // 100


def version_name(version: int) -> str:
    return f"{version // 100}.{version % 100}"


def gateway_topic(gateway_id: str) -> bytes:
    """The PUB topic of one gateway; NUL-terminated so no id is a prefix of another's topic."""
    if "\x00" in gateway_id or not gateway_id:
        raise ValueError("gateway id must be non-empty and contain no NUL")
    return b"g" + gateway_id.encode() + b"\x00"


def pack_seq(seq: int) -> bytes:
    return _SEQ.pack(seq)


def unpack_seq(data: bytes) -> int:
    if len(data) != _SEQ.size:
        raise WireError("bad sequence frame")
    value: int = _SEQ.unpack(data)[0]
    return value


def split_frames(parts: Sequence[bytes]) -> tuple[bytes, bytes, bytes]:
    """(topic, seq, body) of a PUB message; raise WireError if it has another shape."""
    if len(parts) != 3:
        raise WireError(f"expected 3 frames, got {len(parts)}")
    return parts[0], parts[1], parts[2]
