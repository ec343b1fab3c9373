"""gateway.membership: the gateway's mirror of its own sockets' rooms."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from gateway.membership import LocalRooms


def build(spec: Mapping[str, Iterable[str]]) -> LocalRooms:
    """Sockets (in this order) and the rooms each joins."""
    lr = LocalRooms()
    for sid, rooms in spec.items():
        lr.add_socket(sid)
        lr.join(sid, rooms)
    return lr


def assert_consistent(lr: LocalRooms) -> None:
    """The two indexes agree, no empty room entry is left behind, and own-id rooms are implicit
    (never stored: an idle socket costs no set) yet always reported."""
    for room, members in lr._rooms.items():
        assert members, f"empty room entry {room!r}"
        for sid in members:
            assert room in lr._sockets[sid]
            assert room != sid, f"{sid}'s own room stored explicitly"
    for sid, rooms in lr._sockets.items():
        assert sid in lr.rooms_of(sid), f"{sid} lost its own room"
        assert sid in lr.targets([sid]), f"{sid} not a target of its own room"
        for room in rooms:
            assert sid in lr._rooms[room]


# --- sockets -------------------------------------------------------------------------------------


def test_empty() -> None:
    lr = LocalRooms()
    assert len(lr) == 0
    assert list(lr.sockets()) == []
    assert lr.targets(["a"]) == set()
    assert lr.rooms_of("s1") == set()


def test_add_socket_puts_it_in_its_own_room() -> None:
    lr = LocalRooms()
    lr.add_socket("s1")
    assert len(lr) == 1
    assert list(lr.sockets()) == ["s1"]
    assert lr.rooms_of("s1") == {"s1"}
    assert lr.targets(["s1"]) == {"s1"}
    assert_consistent(lr)


def test_add_socket_twice_keeps_its_rooms() -> None:
    lr = build({"s1": ["a"]})
    lr.add_socket("s1")
    assert lr.rooms_of("s1") == {"s1", "a"}
    assert len(lr) == 1


def test_sockets_in_insertion_order() -> None:
    lr = build({"s2": [], "s1": [], "s3": []})
    assert list(lr.sockets()) == ["s2", "s1", "s3"]


def test_remove_socket_leaves_every_room_and_drops_empty_rooms() -> None:
    lr = build({"s1": ["a", "b"], "s2": ["b"]})
    lr.remove_socket("s1")
    assert len(lr) == 1
    assert lr.rooms_of("s1") == set()
    assert lr.targets(["a", "b", "s1"]) == {"s2"}
    assert set(lr._rooms) == {"b"}  # no empty entries left behind (own rooms are implicit)
    assert_consistent(lr)


@pytest.mark.parametrize("sid", ["ghost", "s1"])
def test_remove_unknown_or_already_removed_socket_is_ignored(sid: str) -> None:
    lr = build({"s1": ["a"]})
    lr.remove_socket("s1")
    lr.remove_socket(sid)
    assert len(lr) == 0
    assert lr._rooms == {}


# --- join / leave --------------------------------------------------------------------------------

# (start, ("join"|"leave", sid, rooms) steps, rooms_of each socket at the end)
STEPS: list[Any] = [
    pytest.param({"s1": []}, [("join", "s1", ["a", "b"])], {"s1": {"s1", "a", "b"}}, id="join"),
    pytest.param(
        {"s1": []}, [("join", "s1", ["a"]), ("join", "s1", ["a"])], {"s1": {"s1", "a"}},
        id="join-twice-is-idempotent",
    ),
    pytest.param({"s1": []}, [("join", "s1", [])], {"s1": {"s1"}}, id="join-nothing"),
    pytest.param(
        {"s1": []}, [("join", "s1", iter(["a", "b"]))], {"s1": {"s1", "a", "b"}},
        id="join-from-an-iterator",
    ),
    pytest.param({"s1": []}, [("join", "s1", ["s1"])], {"s1": {"s1"}}, id="join-own-room"),
    pytest.param({"s1": [], "s2": []}, [("join", "s1", ["s2"])],
                 {"s1": {"s1", "s2"}, "s2": {"s2"}}, id="join-another-sockets-room"),
    pytest.param({"s1": []}, [("join", "ghost", ["a"])], {"s1": {"s1"}, "ghost": set()},
                 id="join-unknown-socket-ignored"),
    pytest.param({"s1": ["a", "b"]}, [("leave", "s1", ["a"])], {"s1": {"s1", "b"}}, id="leave"),
    pytest.param({"s1": ["a"]}, [("leave", "s1", ["s1"])], {"s1": {"s1", "a"}},
                 id="leave-own-room-ignored"),
    pytest.param({"s1": ["a"]}, [("leave", "s1", ["s1", "a"])], {"s1": {"s1"}},
                 id="leave-own-room-ignored-others-left"),
    pytest.param({"s1": ["a"], "s2": ["b"]}, [("leave", "s1", ["b"])],
                 {"s1": {"s1", "a"}, "s2": {"s2", "b"}}, id="leave-room-not-joined"),
    pytest.param({"s1": ["a"]}, [("leave", "s1", ["nope"])], {"s1": {"s1", "a"}},
                 id="leave-unknown-room"),
    pytest.param({"s1": ["a"]}, [("leave", "ghost", ["a"])], {"s1": {"s1", "a"}, "ghost": set()},
                 id="leave-unknown-socket-ignored"),
    pytest.param({"s1": ["a"]}, [("leave", "s1", ["a"]), ("leave", "s1", ["a"])], {"s1": {"s1"}},
                 id="leave-twice"),
    pytest.param({"s1": ["a"], "s2": ["a"]}, [("leave", "s1", ["a"])],
                 {"s1": {"s1"}, "s2": {"s2", "a"}}, id="leave-keeps-other-members"),
    pytest.param({"s1": ["a"]}, [("leave", "s1", ["a"]), ("join", "s1", ["a"])],
                 {"s1": {"s1", "a"}}, id="rejoin"),
]  # fmt: skip


@pytest.mark.parametrize(("start", "steps", "rooms"), STEPS)
def test_join_leave(
    start: dict[str, list[str]],
    steps: list[tuple[str, str, Iterable[str]]],
    rooms: dict[str, set[str]],
) -> None:
    lr = build(start)
    for op, sid, names in steps:
        (lr.join if op == "join" else lr.leave)(sid, names)
    assert {sid: lr.rooms_of(sid) for sid in rooms} == rooms
    assert len(lr) == len(start)
    assert "ghost" not in set().union(*lr._rooms.values())
    assert_consistent(lr)


# --- targets -------------------------------------------------------------------------------------

WORLD = {"s1": ["a", "b"], "s2": ["b"], "s3": ["c"], "s4": []}

TARGETS: list[Any] = [
    pytest.param(["a"], (), {"s1"}, id="one-room"),
    pytest.param(["b"], (), {"s1", "s2"}, id="two-members"),
    pytest.param(["a", "b"], (), {"s1", "s2"}, id="union-once-per-socket"),
    pytest.param(["b", "a"], (), {"s1", "s2"}, id="order-irrelevant"),
    pytest.param(["a", "a"], (), {"s1"}, id="duplicate-room"),
    pytest.param(["a", "b", "c"], (), {"s1", "s2", "s3"}, id="three-rooms"),
    pytest.param([], (), set(), id="no-rooms"),
    pytest.param(["nope"], (), set(), id="unknown-room"),
    pytest.param(["nope", "c"], (), {"s3"}, id="unknown-room-first"),
    pytest.param(["c", "nope"], (), {"s3"}, id="unknown-room-last"),
    pytest.param(["s4"], (), {"s4"}, id="own-room"),
    pytest.param(["s4", "a"], (), {"s1", "s4"}, id="own-room-and-room"),
    pytest.param(["b"], ["s1"], {"s2"}, id="omit"),
    pytest.param(["a"], ["s1"], set(), id="omit-only-member"),
    pytest.param(["a", "b"], ["s2", "ghost"], {"s1"}, id="omit-with-unknown"),
    pytest.param(["a", "b", "c"], ["s1", "s2", "s3"], set(), id="omit-everyone"),
    pytest.param(["c"], ["s1"], {"s3"}, id="omit-non-member"),
    pytest.param(iter(["a", "c"]), iter(["s3"]), {"s1"}, id="iterators"),
    pytest.param(["s1", "a", "b"], ["s1"], {"s2"}, id="omitted-via-own-room-too"),
]


@pytest.mark.parametrize(("rooms", "omit", "expected"), TARGETS)
def test_targets(rooms: Iterable[str], omit: Iterable[str], expected: set[str]) -> None:
    lr = build(WORLD)
    assert lr.targets(rooms, omit) == expected
    # Asking never changes membership.
    assert {s: lr.rooms_of(s) for s in WORLD} == {s: {s, *r} for s, r in WORLD.items()}
    assert_consistent(lr)


def test_targets_omit_defaults_to_nobody() -> None:
    assert build(WORLD).targets(["b"]) == {"s1", "s2"}


def test_targets_after_remove_and_leave() -> None:
    lr = build(WORLD)
    lr.remove_socket("s1")
    lr.leave("s3", ["c"])
    assert lr.targets(["a", "b", "c"]) == {"s2"}


def test_rooms_of_unknown_socket_is_empty() -> None:
    assert build(WORLD).rooms_of("ghost") == set()


# --- against a reference model -------------------------------------------------------------------


def test_matches_a_reference_model() -> None:
    """Random (seeded) adds, removes, joins and leaves; every answer equals a naive model's."""
    rng = random.Random(20240607)
    sockets = [f"s{i}" for i in range(8)]
    rooms = ["a", "b", "c", "d", *sockets[:3]]
    lr = LocalRooms()
    model: dict[str, set[str]] = {}
    for _ in range(3000):
        sid = rng.choice(sockets)
        names = rng.sample(rooms, rng.randint(0, 3))
        action = rng.choice(["add", "remove", "join", "join", "leave", "leave"])
        if action == "add":
            lr.add_socket(sid)
            model.setdefault(sid, {sid})
        elif action == "remove":
            lr.remove_socket(sid)
            model.pop(sid, None)
        elif action == "join":
            lr.join(sid, names)
            if sid in model:
                model[sid] |= set(names)
        else:
            lr.leave(sid, names)
            if sid in model:
                model[sid] -= set(names) - {sid}
        assert_consistent(lr)
        assert len(lr) == len(model)
        assert set(lr.sockets()) == set(model)
        query = rng.sample(rooms, rng.randint(0, 4))
        omit = rng.sample(sockets, rng.randint(0, 2))
        expected = {s for s, r in model.items() if r & set(query)} - set(omit)
        assert lr.targets(query, omit) == expected
    for sid in sockets:
        assert lr.rooms_of(sid) == model.get(sid, set())
