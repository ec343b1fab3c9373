"""roomcast.core.topology: exact membership, all-or-nothing changes, per-gateway edges.

The hand-written cases pin each operation; ``test_matches_reference_model`` drives thousands of
random operations through both the Topology and a naive socket -> rooms model, and checks the
results, the returned changes and the invariants of the topology.py docstring after every step.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence

import pytest

from roomcast.core.errors import Conflict, Forbidden, InvalidRoom, NoSuchSocket, TooManyRooms
from roomcast.core.rooms import MAX_ROOMS_PER_SOCKET
from roomcast.core.topology import GatewayChanges, Topology


@pytest.fixture
def topo() -> Topology:
    """g1 holds s1 and s2, g2 holds s3."""
    t = Topology()
    t.add_gateway("g1")
    t.add_gateway("g2")
    t.open_sockets("g1", ["s1", "s2"])
    t.open_sockets("g2", ["s3"])
    return t


def joins(**per_socket: list[str]) -> GatewayChanges:
    return GatewayChanges(joins=dict(per_socket))


def leaves(**per_socket: list[str]) -> GatewayChanges:
    return GatewayChanges(leaves=dict(per_socket))


# --- gateways and sockets ------------------------------------------------------------------------


def test_new_socket_is_in_its_own_room(topo: Topology) -> None:
    assert topo.rooms_of("s1") == ["s1"]
    assert topo.members("s1") == ["s1"]
    assert topo.count("s1") == 1
    assert topo.gateway_of("s1") == "g1"
    assert topo.gateway_of("s3") == "g2"
    assert topo.gateway_of("nope") is None
    assert topo.stats() == (2, 3, 3)
    assert topo.memberships() == 3


def test_default_limit_is_the_contract() -> None:
    assert Topology().max_rooms_per_socket == MAX_ROOMS_PER_SOCKET == 1000


def test_gateways(topo: Topology) -> None:
    assert sorted(topo.gateways()) == ["g1", "g2"]
    assert topo.has_gateway("g1")
    assert not topo.has_gateway("g3")


def test_open_sockets_registers_unknown_gateway() -> None:
    t = Topology()
    t.open_sockets("g9", ["s1"])
    assert t.has_gateway("g9")
    assert t.gateway_of("s1") == "g9"


def test_another_gateways_socket_id_is_refused_all_or_nothing(topo: Topology) -> None:
    # A peer claiming a live socket's id would receive that socket's private messages.
    topo.change(["s1"], ["a"], leave=False)
    with pytest.raises(Conflict):
        topo.open_sockets("g2", ["s9", "s1"])
    assert topo.gateway_of("s1") == "g1"
    assert topo.gateway_of("s9") is None  # nothing of the refused batch was applied
    assert topo.rooms_of("s1") == ["a", "s1"]
    assert topo.route(["s1"]) == {"g1"}


def test_reopening_a_socket_on_its_own_gateway_resets_its_rooms(topo: Topology) -> None:
    topo.change(["s1"], ["a"], leave=False)
    topo.open_sockets("g1", ["s1"])
    assert topo.rooms_of("s1") == ["s1"]
    assert topo.count("a") == 0


def test_a_resync_skips_socket_ids_another_gateway_holds(topo: Topology) -> None:
    assert topo.resync("g2", [("s1", ["a"]), ("s8", ["a"])]) == 1
    assert topo.gateway_of("s1") == "g1"
    assert topo.members("a") == ["s8"]


def test_a_clients_join_never_reaches_another_sockets_own_room(topo: Topology) -> None:
    with pytest.raises(Forbidden):
        topo.change(["s2"], ["s1"], leave=False, reserve_own_rooms=True)
    with pytest.raises(Forbidden):  # not even together with the owner, nor with other rooms
        topo.change(["s1", "s2"], ["a", "s1"], leave=False, reserve_own_rooms=True)
    assert topo.members("s1") == ["s1"]
    assert topo.members("a") == []
    assert topo.change(["s1"], ["s1"], leave=False, reserve_own_rooms=True) == {}  # its own
    assert topo.change(["s2"], ["a"], leave=False, reserve_own_rooms=True) == {
        "g1": joins(s2=["a"])
    }
    # Leaving is never refused, and a backend (no reservation) may still join it.
    topo.change(["s2"], ["s1"], leave=False)
    assert topo.change(["s2"], ["s1"], leave=True, reserve_own_rooms=True) == {
        "g1": leaves(s2=["s1"])
    }


def test_close_sockets_ignores_other_gateways_and_unknown_ids(topo: Topology) -> None:
    topo.change(["s1", "s3"], ["a"], leave=False)
    assert topo.close_sockets("g2", ["s1", "s3", "nope", "s3"]) == 1
    assert topo.gateway_of("s1") == "g1"
    assert topo.gateway_of("s3") is None
    assert topo.members("a") == ["s1"]
    assert topo.count("s3") == 0
    with pytest.raises(NoSuchSocket):
        topo.rooms_of("s3")
    assert topo.close_sockets("g3", ["s1"]) == 0
    assert not topo.has_gateway("g3")


def test_drop_gateway_removes_its_members_everywhere(topo: Topology) -> None:
    topo.change(["s1", "s2", "s3"], ["a", "b"], leave=False)
    assert topo.drop_gateway("g1") == 2
    assert not topo.has_gateway("g1")
    assert topo.members("a") == ["s3"]
    assert topo.count("b") == 1
    assert topo.route(["a", "b", "s1", "s2"]) == {"g2"}
    assert topo.gateway_of("s1") is None
    assert topo.stats() == (1, 1, 3)
    assert topo.drop_gateway("g1") == 0
    assert topo.drop_gateway("never") == 0


def test_add_gateway_again_forgets_its_old_sockets(topo: Topology) -> None:
    topo.change(["s1"], ["a"], leave=False)
    assert topo.add_gateway("g1") == 2
    assert topo.has_gateway("g1")
    assert topo.count("a") == 0
    assert topo.gateway_of("s2") is None
    assert topo.add_gateway("g1") == 0
    assert topo.add_gateway("g3") == 0


# --- membership ----------------------------------------------------------------------------------


def test_join_returns_changes_per_gateway(topo: Topology) -> None:
    changes = topo.change(["s1", "s3"], ["a", "b"], leave=False)
    assert changes == {"g1": joins(s1=["a", "b"]), "g2": joins(s3=["a", "b"])}
    assert sorted(topo.members("a")) == ["s1", "s3"]
    assert topo.rooms_of("s1") == ["a", "b", "s1"]


def test_join_is_idempotent(topo: Topology) -> None:
    topo.change(["s1"], ["a"], leave=False)
    assert topo.change(["s1"], ["a"], leave=False) == {}
    # Only the new room is reported; duplicates in the call are applied once.
    assert topo.change(["s1", "s1"], ["a", "b", "b"], leave=False) == {"g1": joins(s1=["b"])}
    assert topo.count("a") == 1
    assert topo.memberships() == 3 + 2


def test_leave_returns_changes_and_is_idempotent(topo: Topology) -> None:
    topo.change(["s1", "s2", "s3"], ["a", "b"], leave=False)
    changes = topo.change(["s2", "s3"], ["b", "never-joined"], leave=True)
    assert changes == {"g1": leaves(s2=["b"]), "g2": leaves(s3=["b"])}
    assert topo.members("b") == ["s1"]
    assert topo.change(["s2", "s3"], ["b"], leave=True) == {}
    assert topo.change(["s1"], ["b"], leave=True) == {"g1": leaves(s1=["b"])}
    assert topo.count("b") == 0
    assert topo.route(["b"]) == set()


def test_own_room_cannot_be_joined_or_left(topo: Topology) -> None:
    assert topo.change(["s1"], ["s1"], leave=False) == {}
    assert topo.change(["s1"], ["s1"], leave=True) == {}
    assert topo.rooms_of("s1") == ["s1"]
    assert topo.leave_all("s1") == {}
    assert topo.rooms_of("s1") == ["s1"]


def test_a_socket_may_join_another_sockets_room(topo: Topology) -> None:
    assert topo.change(["s3"], ["s1"], leave=False) == {"g2": joins(s3=["s1"])}
    assert sorted(topo.members("s1")) == ["s1", "s3"]
    assert topo.route(["s1"]) == {"g1", "g2"}
    # leave_all of a socket's room: everyone leaves everything but their own room.
    assert topo.leave_all("s1") == {"g2": leaves(s3=["s1"])}
    assert topo.members("s1") == ["s1"]


@pytest.mark.parametrize("leave", [False, True])
def test_unknown_socket_changes_nothing(topo: Topology, leave: bool) -> None:
    topo.change(["s1"], ["b"], leave=False)
    with pytest.raises(NoSuchSocket) as info:
        topo.change(["s1", "s3", "ghost"], ["a", "b"], leave=leave)
    assert info.value.socket == "ghost"
    assert info.value.status == 404
    assert topo.rooms_of("s1") == ["b", "s1"]
    assert topo.rooms_of("s3") == ["s3"]
    assert topo.count("a") == 0


@pytest.mark.parametrize("leave", [False, True])
@pytest.mark.parametrize("bad", ["", "x" * 257, "tab\there", 7])
def test_invalid_room_changes_nothing(topo: Topology, leave: bool, bad: object) -> None:
    topo.change(["s1"], ["b"], leave=False)
    with pytest.raises(InvalidRoom):
        topo.change(["s1", "s3"], ["a", "b", bad], leave=leave)  # type: ignore[list-item]
    assert topo.rooms_of("s1") == ["b", "s1"]
    assert topo.rooms_of("s3") == ["s3"]


def test_invalid_room_is_reported_before_unknown_socket(topo: Topology) -> None:
    with pytest.raises(InvalidRoom):
        topo.change(["ghost"], [""], leave=False)


def test_too_many_rooms_is_all_or_nothing() -> None:
    t = Topology(max_rooms_per_socket=3)
    t.open_sockets("g1", ["s1", "s2"])
    assert t.change(["s1"], ["a", "b"], leave=False) == {"g1": joins(s1=["a", "b"])}
    # s1 would reach 4: nobody joins anything.
    with pytest.raises(TooManyRooms) as info:
        t.change(["s2", "s1"], ["c", "d"], leave=False)
    assert info.value.limit == 3
    assert info.value.status == 429
    assert t.rooms_of("s1") == ["a", "b", "s1"]
    assert t.rooms_of("s2") == ["s2"]
    # Exactly at the limit is fine; rooms already held and the own room do not count.
    assert t.change(["s1"], ["a", "b", "c", "s1"], leave=False) == {"g1": joins(s1=["c"])}
    assert t.change(["s2"], ["s2", "a", "b", "c"], leave=False) == {"g1": joins(s2=["a", "b", "c"])}
    # Another socket's own room is a room like any other.
    with pytest.raises(TooManyRooms):
        t.change(["s2"], ["s1"], leave=False)
    assert t.change(["s1"], ["a", "b", "c", "s1"], leave=False) == {}
    with pytest.raises(TooManyRooms):
        t.change(["s1"], ["e"], leave=False)
    # Leaving is never limited, and frees a slot.
    assert t.change(["s1"], ["a"], leave=True) == {"g1": leaves(s1=["a"])}
    assert t.change(["s1"], ["e"], leave=False) == {"g1": joins(s1=["e"])}


def test_zero_room_limit_still_allows_the_own_room() -> None:
    t = Topology(max_rooms_per_socket=0)
    t.open_sockets("g1", ["s1"])
    assert t.change(["s1"], ["s1"], leave=False) == {}
    with pytest.raises(TooManyRooms):
        t.change(["s1"], ["a"], leave=False)


def test_empty_socket_list_still_validates_rooms(topo: Topology) -> None:
    assert topo.change([], ["a"], leave=False) == {}
    with pytest.raises(InvalidRoom):
        topo.change([], [""], leave=False)


def test_leave_all(topo: Topology) -> None:
    topo.change(["s1", "s3"], ["a", "b"], leave=False)
    topo.change(["s2"], ["b"], leave=False)
    changes = topo.leave_all("a")
    assert set(changes) == {"g1", "g2"}
    assert changes["g1"].joins == {} and changes["g2"].joins == {}
    assert {s: sorted(r) for s, r in changes["g1"].leaves.items()} == {"s1": ["a", "b"]}
    assert {s: sorted(r) for s, r in changes["g2"].leaves.items()} == {"s3": ["a", "b"]}
    assert topo.count("a") == 0
    assert topo.members("b") == ["s2"]  # s2 was not in "a"
    assert topo.rooms_of("s1") == ["s1"]
    assert topo.rooms_of("s3") == ["s3"]
    assert topo.leave_all("a") == {}
    assert topo.leave_all("unknown-room") == {}


def test_leave_all_rejects_invalid_room(topo: Topology) -> None:
    with pytest.raises(InvalidRoom):
        topo.leave_all("")


def test_copy_members_across_gateways(topo: Topology) -> None:
    topo.change(["s1", "s3"], ["src"], leave=False)
    topo.change(["s3"], ["d1"], leave=False)
    changes = topo.copy_members("src", ["d1", "d2"], remove=False)
    assert changes == {"g1": joins(s1=["d1", "d2"]), "g2": joins(s3=["d2"])}
    assert sorted(topo.members("d2")) == ["s1", "s3"]
    assert topo.members("src") != [] and topo.count("s2") == 1
    assert topo.copy_members("src", ["d1", "d2"], remove=False) == {}
    changes = topo.copy_members("src", ["d1"], remove=True)
    assert changes == {"g1": leaves(s1=["d1"]), "g2": leaves(s3=["d1"])}
    assert topo.count("d1") == 0
    assert topo.count("src") == 2


def test_copy_members_from_a_socket_id_and_an_empty_room(topo: Topology) -> None:
    assert topo.copy_members("s2", ["d"], remove=False) == {"g1": joins(s2=["d"])}
    assert topo.copy_members("empty", ["d"], remove=False) == {}
    assert topo.copy_members("empty", ["d"], remove=True) == {}
    assert topo.members("d") == ["s2"]


def test_copy_members_into_a_members_own_room_is_skipped(topo: Topology) -> None:
    topo.change(["s1", "s2"], ["src"], leave=False)
    assert topo.copy_members("src", ["s1"], remove=False) == {"g1": joins(s2=["s1"])}
    assert topo.copy_members("src", ["s1"], remove=True) == {"g1": leaves(s2=["s1"])}
    assert topo.rooms_of("s1") == ["s1", "src"]


@pytest.mark.parametrize("remove", [False, True])
def test_copy_members_invalid_rooms_change_nothing(topo: Topology, remove: bool) -> None:
    topo.change(["s1", "s3"], ["src"], leave=False)
    with pytest.raises(InvalidRoom):
        topo.copy_members("", ["d"], remove=remove)
    with pytest.raises(InvalidRoom):
        topo.copy_members("src", ["d", "bad\x00"], remove=remove)
    assert topo.count("d") == 0
    assert topo.rooms_of("s1") == ["s1", "src"]


def test_copy_members_respects_the_room_limit() -> None:
    t = Topology(max_rooms_per_socket=2)
    t.open_sockets("g1", ["s1", "s2"])
    t.change(["s1", "s2"], ["src"], leave=False)
    t.change(["s2"], ["x"], leave=False)
    with pytest.raises(TooManyRooms):
        t.copy_members("src", ["d"], remove=False)
    assert t.count("d") == 0


# --- routing and introspection -------------------------------------------------------------------


def test_route_returns_exactly_the_gateways_with_members(topo: Topology) -> None:
    topo.change(["s1"], ["a"], leave=False)
    topo.change(["s3"], ["b"], leave=False)
    assert topo.route(["a"]) == {"g1"}
    assert topo.route(["b"]) == {"g2"}
    assert topo.route(["a", "b", "none"]) == {"g1", "g2"}
    assert topo.route([]) == set()
    assert topo.route(["none"]) == set()
    assert topo.route(iter(["a"])) == {"g1"}  # any iterable
    topo.change(["s1"], ["a"], leave=True)
    assert topo.route(["a"]) == set()


def test_counts_members_and_rooms_are_exact(topo: Topology) -> None:
    topo.change(["s1", "s2", "s3"], ["a"], leave=False)
    topo.change(["s1"], ["b", "c"], leave=False)
    assert topo.count("a") == 3
    assert sorted(topo.members("a")) == ["s1", "s2", "s3"]
    assert topo.count("b") == 1 and topo.members("b") == ["s1"]
    assert topo.count("nope") == 0 and topo.members("nope") == []
    assert topo.rooms_of("s1") == ["a", "b", "c", "s1"]
    assert topo.rooms_of("s2") == ["a", "s2"]
    assert topo.stats() == (2, 3, 6)
    assert topo.memberships() == 3 + 3 + 2
    with pytest.raises(NoSuchSocket) as info:
        topo.rooms_of("ghost")
    assert info.value.socket == "ghost"


def test_members_of_a_room_split_across_gateways_sum_up(topo: Topology) -> None:
    topo.change(["s1", "s2", "s3"], ["a"], leave=False)
    topo.close_sockets("g1", ["s2"])
    assert topo.count("a") == 2
    assert sorted(topo.members("a")) == ["s1", "s3"]


# --- resync --------------------------------------------------------------------------------------


def test_resync_replays_a_gateways_state() -> None:
    t = Topology(max_rooms_per_socket=2)
    t.open_sockets("g2", ["s1"])
    t.change(["s1"], ["old"], leave=False)
    t.resync(
        "g2",
        [
            ("s1", ["a", "a", "s1", "", "bad\n", "x" * 300, "b", "c", "d"]),  # "old" forgotten
            ("s2", []),
            ("s3", ("z",)),
        ],
    )
    assert t.gateway_of("s1") == "g2"
    assert t.rooms_of("s1") == ["a", "b", "s1"]  # invalid and over-limit rooms dropped
    assert t.rooms_of("s2") == ["s2"]
    assert t.rooms_of("s3") == ["s3", "z"]
    assert t.count("old") == 0
    assert t.route(["a", "z"]) == {"g2"}


def test_resync_on_a_fresh_topology_registers_the_gateway() -> None:
    t = Topology()
    t.resync("g1", [("s1", ["r"])])
    assert t.has_gateway("g1")
    assert t.members("r") == ["s1"]


# --- model-based ---------------------------------------------------------------------------------

MAX_ROOMS = 3
GATEWAYS = ["g0", "g1", "g2"]
SOCKETS = [f"s{i}" for i in range(8)]
VALID_ROOMS = ["a", "b", "c", "d", "e", "s0", "s1", "sails_model_user_7:user"]
INVALID_ROOMS = ["", "x" * 257, "bad\n"]


def _valid(room: str) -> bool:
    return room not in INVALID_ROOMS


class Model:
    """The naive reference: socket -> (gateway, rooms incl. its own), nothing else."""

    def __init__(self) -> None:
        self.sockets: dict[str, tuple[str, set[str]]] = {}
        self.gateways: set[str] = set()

    def snapshot(self) -> dict[str, tuple[str, frozenset[str]]]:
        return {s: (g, frozenset(r)) for s, (g, r) in self.sockets.items()}

    def of(self, gateway: str) -> list[str]:
        return [s for s, (g, _) in self.sockets.items() if g == gateway]

    def members(self, room: str) -> list[str]:
        return [s for s, (_, r) in self.sockets.items() if room in r]

    def open(self, gateway: str, sockets: Sequence[str]) -> None:
        if any(s in self.sockets and self.sockets[s][0] != gateway for s in sockets):
            raise Conflict()
        self.gateways.add(gateway)
        for s in sockets:
            self.sockets[s] = (gateway, {s})

    def add_gateway(self, gateway: str) -> int:
        n = self.drop_gateway(gateway)
        self.gateways.add(gateway)
        return n

    def drop_gateway(self, gateway: str) -> int:
        if gateway not in self.gateways:
            return 0
        self.gateways.discard(gateway)
        mine = self.of(gateway)
        for s in mine:
            del self.sockets[s]
        return len(mine)

    def close(self, gateway: str, sockets: Sequence[str]) -> int:
        n = 0
        for s in sockets:
            if s in self.sockets and self.sockets[s][0] == gateway:
                del self.sockets[s]
                n += 1
        return n

    def resync(self, gateway: str, items: Sequence[tuple[str, Sequence[str]]]) -> int:
        refused = 0
        for s, rooms in items:
            if s in self.sockets and self.sockets[s][0] != gateway:
                refused += 1
                continue
            self.open(gateway, [s])
            held = self.sockets[s][1]
            for r in rooms:
                if _valid(r) and r not in held and len(held) - 1 < MAX_ROOMS:
                    held.add(r)
        return refused

    def change(self, sockets: Sequence[str], rooms: Sequence[str], leave: bool) -> None:
        if not all(_valid(r) for r in rooms):
            raise InvalidRoom()
        if any(s not in self.sockets for s in sockets):
            raise NoSuchSocket()
        for s in sockets:
            held = self.sockets[s][1]
            if not leave and len((held | set(rooms)) - {s}) > MAX_ROOMS and set(rooms) - held:
                raise TooManyRooms()
        for s in sockets:
            held = self.sockets[s][1]
            if leave:
                held -= set(rooms) - {s}
            else:
                held |= set(rooms)

    def leave_all(self, room: str) -> None:
        if not _valid(room):
            raise InvalidRoom()
        for s in self.members(room):
            self.sockets[s] = (self.sockets[s][0], {s})

    def copy(self, source: str, rooms: Sequence[str], remove: bool) -> None:
        if not _valid(source):
            raise InvalidRoom()
        self.change(self.members(source), rooms, remove)


Edges = dict[str, tuple[dict[str, set[str]], dict[str, set[str]]]]


def expected_edges(
    before: dict[str, tuple[str, frozenset[str]]], after: dict[str, tuple[str, frozenset[str]]]
) -> Edges:
    edges: Edges = {}
    for s, (g, old) in before.items():
        new = after[s][1]
        if old == new:
            continue
        j, lv = edges.setdefault(g, ({}, {}))
        if new - old:
            j[s] = set(new - old)
        if old - new:
            lv[s] = set(old - new)
    return edges


def actual_edges(changes: dict[str, GatewayChanges]) -> Edges:
    edges: Edges = {}
    for g, ch in changes.items():
        assert ch.joins or ch.leaves, "empty GatewayChanges returned"
        for per in (ch.joins, ch.leaves):
            for rooms in per.values():
                assert rooms and len(rooms) == len(set(rooms)), rooms
        edges[g] = (
            {s: set(r) for s, r in ch.joins.items()},
            {s: set(r) for s, r in ch.leaves.items()},
        )
    return edges


def check_invariants(t: Topology, m: Model) -> None:
    # The docstring's invariants, on the internals.
    for s, entry in t._sockets.items():
        assert s in entry.rooms, f"{s} lost its own room"
        assert len(entry.rooms) - 1 <= t.max_rooms_per_socket
        assert s in t._gateways[entry.gateway]
    for room, by_gateway in t._rooms.items():
        assert by_gateway, f"empty room entry {room!r}"
        for g, members in by_gateway.items():
            assert members, f"empty gateway entry {room!r}/{g}"
            expected = {s for s, e in t._sockets.items() if e.gateway == g and room in e.rooms}
            assert members == expected, (room, g)
    for g, owned in t._gateways.items():
        assert owned == {s for s, e in t._sockets.items() if e.gateway == g}
    # The public view equals the model.
    assert sorted(t.gateways()) == sorted(m.gateways)
    every_room = set().union(*(r for _, r in m.sockets.values()))
    assert t.stats() == (len(m.gateways), len(m.sockets), len(every_room))
    assert t.memberships() == sum(len(r) for _, r in m.sockets.values())
    for s in SOCKETS:
        if s in m.sockets:
            assert t.gateway_of(s) == m.sockets[s][0]
            assert t.rooms_of(s) == sorted(m.sockets[s][1])
        else:
            assert t.gateway_of(s) is None
    for room in every_room | set(VALID_ROOMS):
        expected_members = m.members(room)
        assert sorted(t.members(room)) == sorted(expected_members), room
        assert t.count(room) == len(expected_members)
        assert t.route([room]) == {m.sockets[s][0] for s in expected_members}


def test_matches_reference_model() -> None:
    rng = random.Random(1234)
    t = Topology(max_rooms_per_socket=MAX_ROOMS)
    m = Model()
    rooms_pool = VALID_ROOMS * 4 + INVALID_ROOMS
    sockets_pool = [*SOCKETS, "ghost"]
    outcomes: dict[str, int] = {}

    def some(pool: list[str], most: int) -> list[str]:
        return [rng.choice(pool) for _ in range(rng.randint(0, most))]

    for step in range(4000):
        op = rng.choices(
            ["open", "close", "join", "leave", "leave_all", "copy", "resync", "add", "drop"],
            weights=[10, 6, 30, 14, 6, 12, 4, 2, 2],
        )[0]
        g = rng.choice(GATEWAYS)
        before = m.snapshot()
        expected_error: type[Exception] | None = None
        changes: dict[str, GatewayChanges] | None = None
        if op == "open":
            sids = some(SOCKETS, 2)
            try:
                m.open(g, sids)
            except Conflict:
                expected_error = Conflict
                with pytest.raises(Conflict):
                    t.open_sockets(g, sids)
                assert m.snapshot() == before
            else:
                t.open_sockets(g, sids)
        elif op == "close":
            sids = some(sockets_pool, 3)
            assert t.close_sockets(g, sids) == m.close(g, sids)
        elif op == "add":
            assert t.add_gateway(g) == m.add_gateway(g)
        elif op == "drop":
            assert t.drop_gateway(g) == m.drop_gateway(g)
        elif op == "resync":
            items = [(s, some(rooms_pool, 6)) for s in some(SOCKETS, 3)]
            assert t.resync(g, items) == m.resync(g, items)
        else:
            call_t: Callable[[], dict[str, GatewayChanges]]
            call_m: Callable[[], None]
            if op in ("join", "leave"):
                sids = some(sockets_pool if rng.random() < 0.1 else SOCKETS, 3)
                rooms = some(rooms_pool, 3)
                call_t = functools.partial(t.change, sids, rooms, leave=op == "leave")
                call_m = functools.partial(m.change, sids, rooms, op == "leave")
            elif op == "leave_all":
                room = rng.choice(rooms_pool)
                call_t = functools.partial(t.leave_all, room)
                call_m = functools.partial(m.leave_all, room)
            else:
                source, rooms = rng.choice(rooms_pool), some(rooms_pool, 2)
                remove = rng.random() < 0.4
                call_t = functools.partial(t.copy_members, source, rooms, remove=remove)
                call_m = functools.partial(m.copy, source, rooms, remove)

            try:
                call_m()
            except (Forbidden, InvalidRoom, NoSuchSocket, TooManyRooms) as exc:
                expected_error = type(exc)
            if expected_error is not None:
                with pytest.raises(expected_error):
                    call_t()
                assert m.snapshot() == before  # the model is unchanged, so must t be
            else:
                changes = call_t()
                assert actual_edges(changes) == expected_edges(before, m.snapshot()), step
        key = op if expected_error is None else f"{op}:{expected_error.__name__}"
        outcomes[key] = outcomes.get(key, 0) + 1
        check_invariants(t, m)

    # The run exercised every path, failures included (the seed is fixed; this guards edits).
    for key in [
        "join:TooManyRooms",
        "join:InvalidRoom",
        "join:NoSuchSocket",
        "copy:TooManyRooms",
        "open:Conflict",
    ]:
        assert outcomes.get(key, 0) > 0, (key, outcomes)


def test_requester_context_travels_with_the_socket() -> None:
    topo = Topology()
    topo.open_sockets("g1", ["s1", "s2"], ["ada"], [b'{"claims":{}}'])
    assert topo.requester("s1") == ("g1", "ada", b'{"claims":{}}')
    assert topo.requester("s2") == ("g1", "", b"")
    assert topo.requester("nope") is None
    topo.set_context("s2", b"c2")
    topo.set_presence("s2", "bob", b"")
    assert topo.requester("s2") == ("g1", "bob", b"c2")
    fresh = Topology()  # a restarted (or standby) router learns it from the gateway's resync
    fresh.resync("g1", [("s1", ["r"])], {"s1": ("ada", b"")}, {"s1": b"c1"})
    assert fresh.requester("s1") == ("g1", "ada", b"c1")
