"""Bad input (architecture §4, §5.5): each gets its documented error reply or close code, and
never affects other connections: a bystander in the same room (on the other gateway) keeps
receiving afterwards, and so does the offender when its connection is kept."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import Cluster, Event, WsClient, fresh_room

MAX_FRAME = 1024 * 1024  # default --max-frame-bytes


@dataclass
class Pair:
    offender: WsClient  # gateway 0
    bystander: WsClient  # gateway 1
    room: str
    sdk: Any

    def assert_unaffected(self, *, offender_open: bool = True) -> None:
        mark = uuid.uuid4().hex
        self.sdk.sockets.broadcast(self.room, "after", mark)
        assert self.bystander.next_event() == Event("after", mark)
        if offender_open:
            assert self.offender.next_event() == Event("after", mark)


@pytest.fixture
def pair(cluster: Cluster, sdk: Any) -> Pair:
    offender, bystander = cluster.ws(0), cluster.ws(1)
    room = fresh_room("bad")
    offender.join(room)
    bystander.join(room)
    return Pair(offender, bystander, room, sdk)


def assert_error_body(frame: dict[str, Any], status: int, code: str | None = None) -> None:
    assert frame.get("statusCode") == status, frame
    body = frame.get("body")
    assert isinstance(body, dict), frame
    assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), frame
    if code is not None:
        assert body["error"] == code, frame


# ------------------------------------------------------------------ frames without a usable ref


@pytest.mark.parametrize(
    "text", ["{not json", "", '{"op": "join", "ref": 1, "room": ', "\u00ff\u0000"]
)
def test_malformed_json_gets_400_bad_request_error(pair: Pair, text: str) -> None:
    pair.offender.send_raw(text)
    err = pair.offender.next_error()
    assert err.get("op") == "error", err
    assert_error_body(err, 400, "bad_request")
    pair.assert_unaffected()


@pytest.mark.parametrize("text", ["[]", "42", '"join"', "null", '[{"op": "join"}]'])
def test_json_that_is_not_an_object_gets_400_error(pair: Pair, text: str) -> None:
    pair.offender.send_raw(text)
    err = pair.offender.next_error()
    assert_error_body(err, 400)
    pair.assert_unaffected()


def test_unknown_op_without_ref_gets_400_error(pair: Pair) -> None:
    pair.offender.send_json({"op": "frobnicate", "room": pair.room})
    assert_error_body(pair.offender.next_error(), 400)
    pair.assert_unaffected()


# ------------------------------------------------------------------ frames with a ref


@pytest.mark.parametrize(
    "frame",
    [
        {"op": "frobnicate"},
        {"op": "JOIN", "room": "x"},
        {"op": 5},
        {"op": None},
        {},
    ],
    ids=["unknown", "wrong-case", "op-int", "op-null", "no-op"],
)
def test_unknown_or_missing_op_with_ref_gets_400_reply(pair: Pair, frame: dict[str, Any]) -> None:
    ref = 77
    pair.offender.send_json({**frame, "ref": ref})
    reply = pair.offender.wait_reply(ref)
    assert reply.get("op") == "reply", reply
    assert_error_body(reply, 400)
    pair.assert_unaffected()


INVALID_ROOMS = {
    "empty": "",
    "257-bytes": "x" * 257,
    "258-utf8-bytes": "é" * 129,  # 129 characters, 258 bytes
    "nul": "a\x00b",
    "newline": "line\nbreak",
    "tab": "a\tb",
    "escape": "\x1b[31mred",
    "del": "a\x7f",
}


@pytest.mark.parametrize("op", ["join", "leave", "broadcast"])
@pytest.mark.parametrize("name", list(INVALID_ROOMS.values()), ids=list(INVALID_ROOMS))
def test_invalid_room_name_gets_400_invalid_room(pair: Pair, op: str, name: str) -> None:
    fields = {"rooms": name, "data": 1} if op == "broadcast" else {"room": name}
    reply = pair.offender.request(op, **fields)
    assert_error_body(reply, 400, "invalid_room")
    pair.assert_unaffected()


def test_broadcast_with_one_invalid_room_in_list_is_rejected_whole(pair: Pair) -> None:
    reply = pair.offender.request("broadcast", rooms=[pair.room, ""], event="partial", data=1)
    assert_error_body(reply, 400, "invalid_room")
    pair.assert_unaffected()  # the bystander's next event is "after", not "partial"


def unique_room(name: str) -> str:
    """``name`` made unique per test; a name at the 256-byte limit keeps its byte length."""
    prefix = uuid.uuid4().hex[:8]
    size = len(name.encode())
    if size + len(prefix) <= 256:
        return prefix + name
    while len(name.encode()) > size - len(prefix):
        name = name[1:]
    return prefix + "x" * (size - len(prefix) - len(name.encode())) + name


@pytest.mark.parametrize(
    "name",
    ["x" * 256, "é" * 128, "sails_model_user_7:user", "🎉 party", "a b"],
    ids=["256-bytes", "256-utf8-bytes", "colon", "emoji", "space"],
)
def test_valid_room_names_at_the_limits_are_accepted(cluster: Cluster, sdk: Any, name: str) -> None:
    a, b = cluster.ws(0), cluster.ws(1)
    room = unique_room(name)
    if len(name.encode()) == 256:
        assert len(room.encode()) == 256  # exactly at the limit
    a.join(room)
    sdk.sockets.join(b.id, room)
    assert sdk.sockets.count(room) == 2
    a.broadcast(room, "ok", echo=True)
    assert a.next_event() == Event("message", "ok")
    assert b.next_event() == Event("message", "ok")


@pytest.mark.parametrize(
    "rooms",
    [42, {}, None, [], [1], [["nested"]], True, {"room": "x"}],
    ids=["int", "object", "null", "empty-list", "int-list", "nested-list", "bool", "dict"],
)
def test_broadcast_rooms_of_wrong_type_gets_400(pair: Pair, rooms: Any) -> None:
    reply = pair.offender.request("broadcast", rooms=rooms, event="wrong", data=1)
    assert_error_body(reply, 400)
    pair.assert_unaffected()


def test_broadcast_without_rooms_gets_400(pair: Pair) -> None:
    reply = pair.offender.request("broadcast", event="wrong", data=1)
    assert_error_body(reply, 400)
    pair.assert_unaffected()


@pytest.mark.parametrize("room", [42, None, {}, True], ids=["int", "null", "object", "bool"])
def test_join_room_of_wrong_type_gets_400(pair: Pair, room: Any) -> None:
    reply = pair.offender.request("join", room=room)
    assert_error_body(reply, 400)
    pair.assert_unaffected()


def test_join_without_room_gets_400(pair: Pair) -> None:
    reply = pair.offender.request("join")
    assert_error_body(reply, 400)
    pair.assert_unaffected()


# ------------------------------------------------------------------ sizes and frame types


def test_frame_over_max_frame_bytes_is_closed_1009(pair: Pair) -> None:
    head = json.dumps({"op": "broadcast", "ref": 1, "rooms": pair.room, "event": "big", "data": ""})
    text = head[:-3] + '"' + "y" * (MAX_FRAME + 1 - len(head)) + '"}'
    assert len(text.encode()) == MAX_FRAME + 1
    try:
        pair.offender.send_raw(text)
    except ConnectionClosed:
        pass  # the gateway may close before the whole frame is written
    code = pair.offender.wait_closed()
    assert code == 1009, f"expected close 1009 for a {MAX_FRAME + 1}-byte frame, got {code}"
    assert not [e for e in pair.offender.events if e.event == "big"]
    pair.assert_unaffected(offender_open=False)
    # The cut socket is gone from the cluster (SocketClose has no reply: poll).
    deadline_poll(lambda: pair.sdk.sockets.count(pair.room) == 1, 10 * T, message="offender gone")


def test_large_frame_under_the_limit_is_delivered(pair: Pair) -> None:
    data = "L" * (512 * 1024)
    pair.offender.broadcast(pair.room, data, event="large")
    assert pair.bystander.next_event() == Event("large", data)
    pair.assert_unaffected()


def test_binary_frame_gets_400_or_close_1003(pair: Pair) -> None:
    frame = json.dumps({"op": "join", "ref": 1, "room": fresh_room("bin")}).encode()
    pair.offender.send_raw(frame)
    deadline = time.monotonic() + 10 * T
    outcome: Any = None
    try:
        while outcome is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail("no error reply, error frame or close after a binary frame")
            pair.offender._pump(remaining)
            if 1 in pair.offender.replies:
                outcome = pair.offender.replies.pop(1)
            elif pair.offender.errors:
                outcome = pair.offender.errors.popleft()
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else None
        assert code == 1003, f"binary frame: closed with {code}, expected 400 or close 1003"
        pair.assert_unaffected(offender_open=False)
        return
    assert_error_body(outcome, 400)
    pair.assert_unaffected()


# ------------------------------------------------------------------ limits and SDK errors


@pytest.mark.timeout(120)
def test_too_many_rooms_gets_429(pair: Pair) -> None:
    from roomcast.core.errors import TooManyRooms

    prefix = fresh_room("many")
    joined = 1  # pair.room
    reply: dict[str, Any] = {}
    for i in range(1001):
        reply = pair.offender.request("join", room=f"{prefix}-{i}")
        if reply["statusCode"] != 200:
            break
        joined += 1
    assert_error_body(reply, 429, "too_many_rooms")
    # ">1,000 rooms per socket": 1,000 joined rooms (999 if the own id room counts too).
    assert joined in (999, 1000), f"429 after {joined} joined rooms"
    with pytest.raises(TooManyRooms):
        pair.sdk.sockets.join(pair.offender.id, f"{prefix}-sdk")
    rooms = list(pair.sdk.sockets.rooms(pair.offender.id))
    assert len(rooms) == len(set(rooms)) == joined + 1  # + its own id room
    pair.assert_unaffected()


def test_request_without_worker_gets_503_no_worker(pair: Pair) -> None:
    reply = pair.offender.request("request", method="POST", url="/chat/join", data={}, headers={})
    assert_error_body(reply, 503, "no_worker")
    pair.assert_unaffected()


def test_sdk_join_unknown_socket_raises_no_such_socket(pair: Pair) -> None:
    from roomcast.core.errors import NoSuchSocket

    with pytest.raises(NoSuchSocket):
        pair.sdk.sockets.join("no-such-socket-" + uuid.uuid4().hex, pair.room)
    with pytest.raises(NoSuchSocket):
        pair.sdk.sockets.leave("no-such-socket-" + uuid.uuid4().hex, pair.room)
    assert pair.sdk.sockets.count(pair.room) == 2
    pair.assert_unaffected()


def test_sdk_join_of_a_disconnected_socket_raises_no_such_socket(
    cluster: Cluster, sdk: Any
) -> None:
    from roomcast.core.errors import NoSuchSocket

    gone = cluster.ws(1)
    gone_id = gone.id
    gone.close()
    room = fresh_room()

    def raises() -> bool:
        try:
            sdk.sockets.join(gone_id, room)
        except NoSuchSocket:
            return True
        sdk.sockets.leave(gone_id, room)
        return False

    deadline_poll(raises, 10 * T, message="NoSuchSocket for a closed socket")
    assert sdk.sockets.count(room) == 0


@pytest.mark.parametrize("name", ["", "x" * 257, "a\nb"], ids=["empty", "257-bytes", "newline"])
def test_sdk_invalid_room_raises_invalid_room(pair: Pair, name: str) -> None:
    from roomcast.core.errors import InvalidRoom

    with pytest.raises(InvalidRoom):
        pair.sdk.sockets.join(pair.offender.id, name)
    with pytest.raises(InvalidRoom):
        pair.sdk.sockets.broadcast(name, "e", 1)
    pair.assert_unaffected()
