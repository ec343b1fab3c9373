"""Rooms across two gateways: the sails.sockets operations (architecture §5) via the SDK and /ws.

Negative checks use a marker, not a wait: after the broadcast that must not arrive, the same
publisher sends a marker to the socket's own id room; by per-publisher order (guarantee 2) the
marker is the next thing the socket may see.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import Cluster, Event, WsClient, fresh_room


def token() -> str:
    return uuid.uuid4().hex


def assert_nothing_before_marker(sdk: Any, *clients: WsClient) -> None:
    """Nothing the SDK published earlier reached ``clients`` (checked with a marker each)."""
    for client in clients:
        mark = token()
        sdk.sockets.broadcast(client.id, "marker", mark)
        got = client.next_event()
        assert got == Event("marker", mark), (
            f"{client}: expected nothing before the marker, got {got}"
        )


def assert_set_result(result: Any, expected: set[str]) -> None:
    """An exact list of names: the expected set, no duplicates."""
    names = list(result)
    assert sorted(names) == sorted(expected), f"got {names!r}, expected {sorted(expected)!r}"


def test_welcome_ids_are_unique_across_gateways(cluster: Cluster) -> None:
    clients = [cluster.ws(i % 2) for i in range(10)]
    assert len({c.id for c in clients}) == 10


def test_sdk_join_then_broadcast_reaches_members_on_both_gateways(
    cluster: Cluster, sdk: Any
) -> None:
    a, b, outsider = cluster.ws(0), cluster.ws(1), cluster.ws(1)
    room = fresh_room()
    sdk.sockets.join(a.id, room)
    sdk.sockets.join(b.id, room)
    sdk.sockets.broadcast(room, "greet", {"n": 1, "text": "héllo"})
    assert a.next_event() == Event("greet", {"n": 1, "text": "héllo"})
    assert b.next_event() == Event("greet", {"n": 1, "text": "héllo"})
    assert_nothing_before_marker(sdk, outsider)


def test_sdk_leave_stops_delivery(cluster: Cluster, sdk: Any) -> None:
    a, b = cluster.ws(0), cluster.ws(1)
    room = fresh_room()
    sdk.sockets.join(a.id, room)
    sdk.sockets.join(b.id, room)
    sdk.sockets.leave(b.id, room)
    sdk.sockets.broadcast(room, "after-leave", 1)
    assert a.next_event() == Event("after-leave", 1)
    assert_nothing_before_marker(sdk, b)


def test_client_join_and_leave_are_acked_before_reply(cluster: Cluster, sdk: Any) -> None:
    a, b = cluster.ws(0), cluster.ws(1)
    room = fresh_room()
    a.join(room)
    b.join(room)
    sdk.sockets.broadcast(room, "ev", "both")  # right after the replies: must reach both
    assert a.next_event() == Event("ev", "both")
    assert b.next_event() == Event("ev", "both")
    a.leave(room)
    sdk.sockets.broadcast(room, "ev", "only-b")
    assert b.next_event() == Event("ev", "only-b")
    assert_nothing_before_marker(sdk, a)


def test_default_event_is_message(cluster: Cluster, sdk: Any) -> None:
    a, b = cluster.ws(0), cluster.ws(1)
    room = fresh_room()
    a.join(room)
    b.join(room)
    sdk.sockets.broadcast(room, data={"x": 1})
    assert a.next_event() == Event("message", {"x": 1})
    assert b.next_event() == Event("message", {"x": 1})
    sdk.sockets.broadcast(room)
    assert a.next_event() == Event("message", None)
    assert b.next_event() == Event("message", None)
    a.broadcast(room, data="from-a")  # client broadcast without "event"
    assert b.next_event() == Event("message", "from-a")
    sdk.sockets.blast(data="blasted")
    assert a.next_event() == Event("message", "blasted")
    assert b.next_event() == Event("message", "blasted")


def test_blast_reaches_every_socket_and_honours_omit(cluster: Cluster, sdk: Any) -> None:
    a, b, c = cluster.ws(0), cluster.ws(1), cluster.ws(1)  # in no room but their own
    sdk.sockets.blast("announce", {"k": 1})
    for client in (a, b, c):
        assert client.next_event() == Event("announce", {"k": 1})
    sdk.sockets.blast("announce", {"k": 2}, omit=c.id)
    assert a.next_event() == Event("announce", {"k": 2})
    assert b.next_event() == Event("announce", {"k": 2})
    assert_nothing_before_marker(sdk, c)


def test_multi_room_broadcast_is_delivered_once_per_socket(cluster: Cluster, sdk: Any) -> None:
    a, d = cluster.ws(0), cluster.ws(0)
    b, c = cluster.ws(1), cluster.ws(1)
    r1, r2, r3 = fresh_room("r1"), fresh_room("r2"), fresh_room("r3")
    for room in (r1, r2, r3):
        sdk.sockets.join(a.id, room)
    for room in (r2, r3):
        sdk.sockets.join(b.id, room)
    sdk.sockets.join(c.id, r3)
    sdk.sockets.broadcast([r1, r2, r3], "multi", 7)
    for client in (a, b, c):
        assert client.next_event() == Event("multi", 7)
    assert_nothing_before_marker(sdk, a, b, c, d)


def test_client_multi_room_broadcast_is_delivered_once_per_socket(
    cluster: Cluster, sdk: Any
) -> None:
    sender = cluster.ws(0)
    a, b = cluster.ws(0), cluster.ws(1)
    r1, r2 = fresh_room("r1"), fresh_room("r2")
    for client in (a, b):
        client.join(r1)
        client.join(r2)
    sender.broadcast([r1, r2], "multi", event="m")
    sender.broadcast(r2, "second", event="m")  # same publisher: a duplicate would come first
    for client in (a, b):
        assert client.next_event() == Event("m", "multi")
        assert client.next_event() == Event("m", "second")


def test_omit_by_socket_id_and_by_request(cluster: Cluster, sdk: Any) -> None:
    from roomcast import Request

    a, b = cluster.ws(0), cluster.ws(1)
    room = fresh_room()
    sdk.sockets.join(a.id, room)
    sdk.sockets.join(Request(socket=b.id), room)  # a request is accepted wherever a socket is
    sdk.sockets.broadcast(room, "o", 1, omit=a.id)
    assert b.next_event() == Event("o", 1)
    assert_nothing_before_marker(sdk, a)
    sdk.sockets.broadcast(room, "o", 2, omit=Request(socket=b.id))
    assert a.next_event() == Event("o", 2)
    assert_nothing_before_marker(sdk, b)


def test_client_broadcast_omits_sender_unless_echo(cluster: Cluster) -> None:
    a, b = cluster.ws(0), cluster.ws(1)
    room = fresh_room()
    a.join(room)
    b.join(room)
    a.broadcast(room, 1, event="chat")
    a.broadcast(room, 2, event="chat", echo=False)
    a.broadcast(room, 3, event="chat", echo=True)
    assert [b.next_event() for _ in range(3)] == [Event("chat", n) for n in (1, 2, 3)]
    # Per-publisher order: had 1 or 2 been echoed, they would arrive before 3.
    assert a.next_event() == Event("chat", 3)


def test_client_broadcast_rooms_as_string_or_list(cluster: Cluster) -> None:
    a, b = cluster.ws(0), cluster.ws(1)
    room = fresh_room()
    b.join(room)
    a.broadcast(room, "as-string")
    a.broadcast([room], "as-list")
    assert b.next_event() == Event("message", "as-string")
    assert b.next_event() == Event("message", "as-list")


def test_leave_all_empties_rooms_but_keeps_own_id_room(cluster: Cluster, sdk: Any) -> None:
    a = cluster.ws(0)
    b, c = cluster.ws(1), cluster.ws(1)
    room, only_a, b_and_c = fresh_room("all"), fresh_room("a"), fresh_room("bc")
    for sock, rooms in ((a, (room, only_a)), (b, (room, b_and_c)), (c, (b_and_c,))):
        for r in rooms:
            sdk.sockets.join(sock.id, r)
    sdk.sockets.leave_all(room)
    assert_set_result(sdk.sockets.rooms(a.id), {a.id})
    assert_set_result(sdk.sockets.rooms(b.id), {b.id})
    assert_set_result(sdk.sockets.rooms(c.id), {c.id, b_and_c})
    assert sdk.sockets.count(room) == 0
    assert sdk.sockets.count(only_a) == 0
    assert_set_result(sdk.sockets.members(b_and_c), {c.id})
    sdk.sockets.broadcast([room, only_a], "gone", 1)
    sdk.sockets.broadcast(b_and_c, "bc", 2)
    assert c.next_event() == Event("bc", 2)
    assert_nothing_before_marker(sdk, a, b)
    sdk.sockets.broadcast(a.id, "own", 3)  # own id room kept
    assert a.next_event() == Event("own", 3)


def test_add_and_remove_room_members_across_gateways(cluster: Cluster, sdk: Any) -> None:
    a = cluster.ws(0)
    b, c = cluster.ws(1), cluster.ws(1)
    src, d1, d2 = fresh_room("src"), fresh_room("d1"), fresh_room("d2")
    sdk.sockets.join(a.id, src)
    sdk.sockets.join(b.id, src)
    sdk.sockets.add_room_members_to_rooms(src, [d1, d2])
    assert_set_result(sdk.sockets.members(d1), {a.id, b.id})
    assert_set_result(sdk.sockets.members(d2), {a.id, b.id})
    assert_set_result(sdk.sockets.rooms(a.id), {a.id, src, d1, d2})
    sdk.sockets.broadcast(d1, "d1", 1)
    assert a.next_event() == Event("d1", 1)
    assert b.next_event() == Event("d1", 1)
    assert_nothing_before_marker(sdk, c)

    sdk.sockets.add_room_members_to_rooms(c.id, [d1])  # source given as a socket id
    assert_set_result(sdk.sockets.members(d1), {a.id, b.id, c.id})

    sdk.sockets.remove_room_members_from_rooms(src, [d1])
    assert_set_result(sdk.sockets.members(d1), {c.id})
    assert_set_result(sdk.sockets.members(d2), {a.id, b.id})
    assert_set_result(sdk.sockets.members(src), {a.id, b.id})
    sdk.sockets.broadcast(d1, "d1", 2)
    assert c.next_event() == Event("d1", 2)
    assert_nothing_before_marker(sdk, a, b)

    sdk.sockets.remove_room_members_from_rooms(c.id, [d1])
    assert sdk.sockets.count(d1) == 0
    sdk.sockets.broadcast(d2, "d2", 3)
    assert a.next_event() == Event("d2", 3)
    assert b.next_event() == Event("d2", 3)
    assert_nothing_before_marker(sdk, c)


def test_count_members_rooms_are_exact_across_gateways(cluster: Cluster, sdk: Any) -> None:
    a, c = cluster.ws(0), cluster.ws(0)
    b = cluster.ws(1)
    room, other, empty = fresh_room("count"), fresh_room("other"), fresh_room("empty")
    sdk.sockets.join([a.id, b.id], room)  # a list of sockets
    sdk.sockets.join(c.id, room)
    sdk.sockets.join(a.id, other)
    assert sdk.sockets.count(room) == 3
    assert_set_result(sdk.sockets.members(room), {a.id, b.id, c.id})
    assert_set_result(sdk.sockets.rooms(a.id), {a.id, room, other})
    assert_set_result(sdk.sockets.rooms(b.id), {b.id, room})
    assert sdk.sockets.count(empty) == 0
    assert list(sdk.sockets.members(empty)) == []
    assert sdk.sockets.count(a.id) == 1
    assert_set_result(sdk.sockets.members(b.id), {b.id})

    sdk.sockets.join(a.id, room)  # joining twice changes nothing
    b.join(room)
    assert sdk.sockets.count(room) == 3
    assert_set_result(sdk.sockets.members(room), {a.id, b.id, c.id})

    sdk.sockets.leave(c.id, room)
    b.leave(room)
    assert sdk.sockets.count(room) == 1
    assert_set_result(sdk.sockets.members(room), {a.id})
    assert_set_result(sdk.sockets.rooms(b.id), {b.id})


def test_disconnect_removes_socket_from_rooms(cluster: Cluster, sdk: Any) -> None:
    a, b = cluster.ws(0), cluster.ws(1)
    room = fresh_room()
    a.join(room)
    b.join(room)
    assert sdk.sockets.count(room) == 2
    b.close()
    deadline_poll(lambda: sdk.sockets.count(room) == 1, 10 * T, message="count after disconnect")
    assert_set_result(sdk.sockets.members(room), {a.id})


def test_get_id_of_a_request(cluster: Cluster, sdk: Any) -> None:
    from roomcast import Request

    a = cluster.ws(1)
    assert sdk.sockets.get_id(Request(socket=a.id)) == a.id
