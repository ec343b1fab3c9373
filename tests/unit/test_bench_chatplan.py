"""roomcast.bench.chatplan: the chat bench's arithmetic and its per-client verdict."""

from __future__ import annotations

import pytest

from roomcast.bench.chatplan import ChatPlan, Verdict, verify


@pytest.mark.parametrize(
    ("sockets", "room_size", "per_room"), [(0, 10, 1), (15, 10, 1), (10, 1, 1), (10, 5, 6)]
)
def test_plans_that_cannot_run_are_refused(sockets: int, room_size: int, per_room: int) -> None:
    with pytest.raises(ValueError):
        ChatPlan(sockets=sockets, room_size=room_size, publishers_per_room=per_room)


def test_every_publish_has_one_publisher_in_its_room_and_reaches_the_rest() -> None:
    plan = ChatPlan(sockets=40, room_size=10, publishers_per_room=2)
    assert plan.rooms == 4 and plan.room_name(3) == "g3"
    count = 37
    sent = sorted(j for c in range(plan.sockets) for j in plan.published_by(c, count))
    assert sent == list(range(count))  # each publish sent once, by exactly one client
    for j in range(count):
        assert plan.room_of(plan.publisher_of(j)) == j % plan.rooms
        assert j in plan.published_by(plan.publisher_of(j), count)
    for by_clients in (True, False):
        total = sum(len(plan.expected(c, 40, by_clients=by_clients)) for c in range(40))
        assert total == plan.deliveries(40, by_clients=by_clients)
    # Room r's publishers are its members r and r + 1 (mod 10): on both gateways in turn.
    assert [plan.publisher_of(j) for j in range(8)] == [0, 11, 22, 33, 1, 12, 23, 34]
    assert plan.published_by(5, count) == range(0)  # not a publisher of room 0
    assert plan.published_by(10, count) == range(0)  # room 1 starts at its member 1
    assert list(plan.published_by(12, count)) == [5, 13, 21, 29]
    assert plan.expected(12, 16, by_clients=True) == [1, 9]
    assert plan.expected(12, 16, by_clients=False) == range(1, 16, 4)


def _verdict(seqs: list[int], *, by_clients: bool = False) -> Verdict:
    plan = ChatPlan(sockets=20, room_size=10)
    return verify(plan, 12, seqs, count=10, seq_start=100, by_clients=by_clients)


@pytest.mark.parametrize(
    ("seqs", "by_clients", "want"),
    [
        ([101, 103, 105, 107, 109], False, Verdict(5)),
        ([103, 105, 107, 109], False, Verdict(4, lost=1)),
        ([101, 101, 103, 105, 107, 109], False, Verdict(6, duplicated=1)),
        ([101, 102, 103, 105, 107, 109, 1], False, Verdict(7, misrouted=2)),
        ([103, 101, 105, 107, 109], False, Verdict(5, order_violations=1)),
        # Client 12 (slot 1 of room 1) publishes only with two publishers: it gets all of room 1.
        ([101, 103, 105, 107, 109], True, Verdict(5)),
    ],
)
def test_verify_counts_each_kind_of_wrong(seqs: list[int], by_clients: bool, want: Verdict) -> None:
    assert _verdict(seqs, by_clients=by_clients) == want


def test_verify_a_publisher_must_not_get_its_own_and_order_is_per_publisher() -> None:
    plan = ChatPlan(sockets=20, room_size=10, publishers_per_room=2)
    # Room 0's publishers are clients 0 (j = 0, 4, 8) and 1 (j = 2, 6); client 2 gets all five.
    assert verify(plan, 0, [2, 6], count=10, seq_start=0, by_clients=True) == Verdict(2)
    got = verify(plan, 0, [0, 2, 6], count=10, seq_start=0, by_clients=True)
    assert got == Verdict(3, misrouted=1)
    # Publisher 0's 4 before publisher 1's 2 is fine; 8 before 4 (same publisher) is not.
    assert verify(plan, 2, [0, 4, 2, 8, 6], count=10, seq_start=0, by_clients=True) == Verdict(5)
    got = verify(plan, 2, [0, 8, 2, 4, 6], count=10, seq_start=0, by_clients=True)
    assert got == Verdict(5, order_violations=1)
    assert (Verdict(1, lost=2) + Verdict(3, misrouted=1)).as_dict() == {
        "received": 4,
        "lost": 2,
        "duplicated": 0,
        "misrouted": 1,
        "order_violations": 0,
    }
