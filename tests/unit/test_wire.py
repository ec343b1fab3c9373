"""roomcast.core.wire: every message round-trips; peer garbage is a WireError; framing helpers."""

from __future__ import annotations

import dataclasses
import random
import typing

import pytest

from roomcast.core import wire
from roomcast.core.errors import WireError
from roomcast.core.pb import roomcast_pb2 as pb

ROOMS = (
    wire.SocketRooms(socket="s1", rooms=("a", "b:c"), user="ada", meta=b'{"tab":2}', context=b"{}"),
    wire.SocketRooms(socket="s2"),
)

# One instance of every message type with every field set away from its default.
SAMPLES: list[wire.Message] = [
    wire.Hello(
        ref=1,
        node_id="g1",
        role=wire.Role.GATEWAY,
        protocol_version=7,
        routes=("GET /a/:id", "* /b/*"),
        routes_known=True,
        busy=True,
    ),
    wire.Heartbeat(node_id="g1", ref=4),
    wire.Goodbye(ref=3, node_id="w-1", role=wire.Role.WORKER),
    wire.SocketOpen(ref=2, sockets=("s1", "s2"), users=("ada", ""), contexts=(b"{}", b"")),
    wire.SocketClose(sockets=("s1",)),
    wire.Membership(
        ref=3,
        leave=True,
        sockets=("s1", "s2"),
        rooms=("a", "b"),
        recover=True,
        since_epoch="e.1",
        since_offset=9,
        client=True,
        recover_max_bytes=65536,
    ),
    wire.LeaveAll(ref=4, room="sails_model_user_7:user"),
    wire.CopyMembers(ref=5, remove=True, source="src", rooms=("d1", "d2")),
    wire.Publish(
        ref=6,
        rooms=("a",),
        everyone=True,
        event="chat",
        data=b'{"x":1}',
        omit=("s1", "s2"),
        receipt=True,
        confirm=True,
        confirm_timeout_ms=2500,
    ),
    wire.Query(
        ref=7, kind=wire.QueryKind.MEMBERS, target="room", epoch="e.2", offset=3, max_bytes=9
    ),
    wire.Resync(ref=8, sockets=ROOMS, last=True),
    wire.Request(
        ref=9,
        socket="s1",
        method="POST",
        url="/chat/join",
        headers=b'{"a":"b"}',
        data=b"[1]",
        user="ada",
        context=b'{"claims":{}}',
    ),
    wire.HelloAck(
        ref=10, epoch="e1", protocol_version=2, heartbeat_interval_ms=500, heartbeat_acks=True
    ),
    wire.Reply(
        ref=2**64 - 1,
        status=404,
        error="no_such_socket",
        message="no such socket: s9",
        count=3,
        names=("x", "y"),
        body=b'{"ok":true}',
        headers=b"{}",
        gateways=2,
        sockets=9,
        omitted=1,
        confirmed=8,
        complete=True,
    ),
    wire.MemberUpdate(
        joins=ROOMS,
        leaves=(wire.SocketRooms(socket="s3", rooms=("z",)),),
        identities=(wire.SocketRooms(socket="s1", user="ada", meta=b"{}"),),
    ),
    wire.Deliver(
        rooms=("a", "b"),
        everyone=True,
        event="e",
        data=b"\x00\xff",
        omit=("s1",),
        accepted_ns=42,
        confirm=5,
        offsets=(wire.RoomOffset(room="a", epoch="e.1", offset=7),),
    ),
    wire.RouterBeat(epoch="e2"),
    wire.Bundle(bodies=(b"\x01", b"")),
    wire.Reset(epoch="e3"),
    wire.SetPresence(ref=11, socket="s1", user="ada", meta=b'{"tab":1}', context=b"{}"),
    wire.TrackPresence(ref=12, room="chat:1", enabled=False),
    wire.Delivered(confirm=7, sockets=42),
    wire.PeerState(
        role=wire.RouterRole.PRIMARY, state=wire.RouterState.ACTIVE, epoch="e4", gateways=("g1",)
    ),
]

ALL_TYPES: tuple[type, ...] = typing.get_args(wire.Message)


def _id(msg: object) -> str:
    return type(msg).__name__


def test_samples_cover_every_message_type() -> None:
    assert {type(m) for m in SAMPLES} == set(ALL_TYPES)
    for msg in SAMPLES:
        for field in dataclasses.fields(msg):
            assert getattr(msg, field.name) != field.default, (_id(msg), field.name)


def test_message_types_mirror_the_proto_schema() -> None:
    frame = pb.Frame.DESCRIPTOR
    kinds = {cls.KIND for cls in ALL_TYPES}  # type: ignore[attr-defined]
    assert kinds == {f.name for f in frame.oneofs_by_name["body"].fields}
    for cls in ALL_TYPES:
        sub = frame.fields_by_name[cls.KIND].message_type  # type: ignore[attr-defined]
        assert sub is not None
        assert {f.name for f in dataclasses.fields(cls)} == set(sub.fields_by_name), cls


@pytest.mark.parametrize("msg", SAMPLES, ids=_id)
def test_round_trip(msg: wire.Message) -> None:
    data = wire.encode(msg)
    assert isinstance(data, bytes)
    decoded = wire.decode(data)
    assert decoded == msg
    assert type(decoded) is type(msg)


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
def test_round_trip_defaults(cls: type) -> None:
    msg = cls()
    assert wire.decode(wire.encode(msg)) == msg


@pytest.mark.parametrize("role", list(wire.Role), ids=lambda r: r.name)
def test_every_role_round_trips_as_enum(role: wire.Role) -> None:
    decoded = wire.decode(wire.encode(wire.Hello(role=role)))
    assert isinstance(decoded, wire.Hello)
    assert decoded.role is role


@pytest.mark.parametrize("kind", list(wire.QueryKind), ids=lambda k: k.name)
def test_every_query_kind_round_trips_as_enum(kind: wire.QueryKind) -> None:
    decoded = wire.decode(wire.encode(wire.Query(kind=kind)))
    assert isinstance(decoded, wire.Query)
    assert decoded.kind is kind


@pytest.mark.parametrize("state", list(wire.RouterState), ids=lambda s: s.name)
@pytest.mark.parametrize("role", list(wire.RouterRole), ids=lambda r: r.name)
def test_every_peer_state_round_trips_as_enums(
    role: wire.RouterRole, state: wire.RouterState
) -> None:
    decoded = wire.decode(wire.encode(wire.PeerState(role=role, state=state)))
    assert isinstance(decoded, wire.PeerState)
    assert decoded.role is role and decoded.state is state


def test_nested_socket_rooms_decode_to_tuples() -> None:
    decoded = wire.decode(wire.encode(wire.Resync(sockets=ROOMS)))
    assert isinstance(decoded, wire.Resync)
    assert isinstance(decoded.sockets, tuple)
    assert all(isinstance(s, wire.SocketRooms) for s in decoded.sockets)
    assert all(isinstance(s.rooms, tuple) for s in decoded.sockets)


def test_unicode_survives() -> None:
    msg = wire.Membership(sockets=("s1",), rooms=("чат", "🎉", "a:b"))
    assert wire.decode(wire.encode(msg)) == msg


def test_messages_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        wire.Heartbeat().node_id = "x"  # type: ignore[misc]


# --- peer garbage --------------------------------------------------------------------------------


def _raw_frame(**fields: int) -> bytes:
    """A Frame built directly on the schema, for values the dataclasses cannot express."""
    frame = pb.Frame()
    ((kind, value),) = fields.items()
    if kind == "role":
        frame.hello.role = value  # type: ignore[assignment]
    else:
        frame.query.kind = value  # type: ignore[assignment]
    return frame.SerializeToString()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff", id="one-byte"),
        pytest.param(b"\xff\xff\xff\xff", id="bad-tag"),
        pytest.param(b"garbage garbage", id="ascii"),
        pytest.param(b"\x0a", id="length-missing"),
        pytest.param(b"\x0a\x05abc", id="length-overruns"),
        pytest.param(b"\x0a\x04\x12\x02\xff\xfe", id="invalid-utf8-string"),
        pytest.param(b"\xa2\x06\x00", id="unknown-oneof-field"),
        pytest.param(b"\x08\x01", id="wrong-wire-type"),
        pytest.param(_raw_frame(role=99), id="unknown-role"),
        pytest.param(_raw_frame(kind=7), id="unknown-query-kind"),
    ],
)
def test_garbage_is_a_wire_error(data: bytes) -> None:
    with pytest.raises(WireError):
        wire.decode(data)


def test_unknown_enum_names_the_field_not_the_bytes() -> None:
    with pytest.raises(WireError, match=r"^unknown role 99$"):
        wire.decode(_raw_frame(role=99))


@pytest.mark.parametrize("msg", SAMPLES, ids=_id)
def test_every_truncation_is_a_wire_error(msg: wire.Message) -> None:
    data = wire.encode(msg)
    for cut in range(len(data)):
        with pytest.raises(WireError):
            wire.decode(data[:cut])


def test_random_bytes_never_escape_as_another_exception() -> None:
    rng = random.Random(20240611)
    for _ in range(3000):
        data = rng.randbytes(rng.randrange(0, 40))
        try:
            msg = wire.decode(data)
        except WireError:
            continue
        assert type(msg) in ALL_TYPES


def test_random_bit_flips_never_escape_as_another_exception() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        data = bytearray(wire.encode(rng.choice(SAMPLES)))
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        try:
            msg = wire.decode(bytes(data))
        except WireError:
            continue
        assert type(msg) in ALL_TYPES


# --- framing -------------------------------------------------------------------------------------

GATEWAY_IDS = ["g", "g1", "g10", "g100", "g2", "1", "10", "*", "gateway-a", "gateway-ab", "é"]


def test_gateway_topic_is_never_a_prefix_of_another() -> None:
    topics = {gid: wire.gateway_topic(gid) for gid in GATEWAY_IDS}
    assert len(set(topics.values())) == len(GATEWAY_IDS)
    everything = [*topics.values(), wire.CLUSTER_TOPIC]
    for a in everything:
        for b in everything:
            if a is not b:
                assert not b.startswith(a), (a, b)


def test_gateway_topic_shape() -> None:
    assert wire.gateway_topic("g1") == b"gg1\x00"
    assert wire.gateway_topic("g10") == b"gg10\x00"
    assert wire.gateway_topic("é") == "gé\x00".encode()
    assert wire.CLUSTER_TOPIC == b"*\x00"


@pytest.mark.parametrize("bad", ["", "g\x001", "\x00"])
def test_gateway_topic_rejects_bad_ids(bad: str) -> None:
    with pytest.raises(ValueError):
        wire.gateway_topic(bad)


@pytest.mark.parametrize("seq", [0, 1, 255, 256, 2**32, 2**64 - 1])
def test_seq_round_trip(seq: int) -> None:
    packed = wire.pack_seq(seq)
    assert len(packed) == 8
    assert wire.unpack_seq(packed) == seq


def test_seq_is_big_endian() -> None:
    assert wire.pack_seq(1) == b"\x00" * 7 + b"\x01"
    assert wire.pack_seq(0x0102030405060708) == bytes(range(1, 9))


@pytest.mark.parametrize("data", [b"", b"\x00" * 7, b"\x00" * 9], ids=len)
def test_unpack_seq_rejects_wrong_length(data: bytes) -> None:
    with pytest.raises(WireError):
        wire.unpack_seq(data)


def test_split_frames() -> None:
    assert wire.split_frames([b"t", b"s", b"b"]) == (b"t", b"s", b"b")
    assert wire.split_frames((b"t", b"", b"")) == (b"t", b"", b"")


@pytest.mark.parametrize("count", [0, 1, 2, 4])
def test_split_frames_rejects_other_shapes(count: int) -> None:
    with pytest.raises(WireError, match=f"got {count}"):
        wire.split_frames([b"x"] * count)


def test_all_is_complete() -> None:
    for name in wire.__all__:
        assert hasattr(wire, name), name
    defined = {
        name
        for name, value in vars(wire).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == wire.__name__
    }
    assert defined <= set(wire.__all__), defined - set(wire.__all__)
