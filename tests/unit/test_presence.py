"""Presence and publish receipts, pure parts: counting in roomcast.core.topology, coalescing
in router/presence.py, confirmations in router/receipts.py (issue 8).

The hand-written cases pin each rule: a user with several tabs (on several gateways) counts
once as a user and once per connection; a :class:`Transition` is queued only for tracked rooms,
only on a user's first connection in and last one out; ``set_presence`` moves a socket's counts
from one user to the other; a resync restores identities and metadata; a user's metadata is
forgotten with the user's last connection. ``test_presence_matches_reference_model`` drives
thousands of random operations and checks presence, stats, user metadata, receipts and every
queued transition against a naive model after each step.
"""

from __future__ import annotations

import collections
import fnmatch
import functools
import json
import random
from collections.abc import Callable, Iterable

import pytest

from roomcast.core import wire
from roomcast.core.errors import Conflict, InvalidRoom, NoSuchSocket, TooManyRooms
from roomcast.core.topology import Topology, Transition
from router.presence import PRESENCE_EVENT, PresenceBuffer, encode_event
from router.receipts import Confirmations, Pending

TRACKED = ("chat:*", "lobby")


def tracked(room: str) -> bool:
    return any(fnmatch.fnmatchcase(room, p) for p in TRACKED)


@pytest.fixture
def topo() -> Topology:
    """Rooms ``chat:*`` and ``lobby`` are tracked. g1 holds ada's tab a1, bob's b1 and the
    anonymous x1; g2 holds ada's second tab a2 and the anonymous x2."""
    t = Topology(tracked=tracked)
    t.open_sockets("g1", ["a1", "b1", "x1"], ["ada", "bob"])  # x1: missing means anonymous
    t.open_sockets("g2", ["a2", "x2"], ["ada", ""])
    return t


def joined(room: str, *users: str) -> list[Transition]:
    return [Transition(room, u, True) for u in users]


def left(room: str, *users: str) -> list[Transition]:
    return [Transition(room, u, False) for u in users]


def counts(t: Topology, room: str) -> dict[str, int]:
    return {user: n for user, (n, _meta) in t.presence(room).items()}


# --- counting ------------------------------------------------------------------------------------


def test_tabs_count_once_as_a_user_and_each_as_a_connection(topo: Topology) -> None:
    topo.change(["a1", "a2", "b1", "x1", "x2"], ["chat:1"], leave=False)
    assert topo.presence("chat:1") == {"ada": (2, b""), "bob": (1, b"")}
    assert topo.presence_stats("chat:1") == (5, 2)  # anonymous sockets are connections only
    topo.change(["a1"], ["chat:1"], leave=True)
    assert counts(topo, "chat:1") == {"ada": 1, "bob": 1}
    assert topo.presence_stats("chat:1") == (4, 2)
    topo.change(["a2", "b1"], ["chat:1"], leave=True)
    assert topo.presence("chat:1") == {}
    assert topo.presence_stats("chat:1") == (2, 0)


def test_unknown_or_empty_room_has_no_presence(topo: Topology) -> None:
    assert topo.presence("nobody-here") == {}
    assert topo.presence_stats("nobody-here") == (0, 0)


def test_own_id_room_shows_its_socket(topo: Topology) -> None:
    assert topo.presence("a1") == {"ada": (1, b"")}
    assert topo.presence_stats("a1") == (1, 1)
    assert topo.presence_stats("x1") == (1, 0)


def test_metadata_of_one_connection_is_shown(topo: Topology) -> None:
    topo.change(["a1", "a2"], ["room"], leave=False)
    topo.set_presence("a1", "ada", b'{"tab":1}')
    topo.set_presence("a2", "ada", b'{"tab":2}')
    [(n, meta)] = topo.presence("room").values()
    assert n == 2
    assert meta in (b'{"tab":1}', b'{"tab":2}')
    assert topo.user_meta("ada") == b'{"tab":2}'  # the last one given, for events


def test_anonymous_sockets_cost_no_presence_state() -> None:
    t = Topology(tracked=lambda room: True)
    t.open_sockets("g1", ["s1", "s2"])
    t.change(["s1", "s2"], ["a", "b"], leave=False)
    assert t.presence("a") == {}
    assert t.presence_stats("a") == (2, 0)
    assert t.take_transitions() == []
    assert t._presence == {}


# --- transitions ---------------------------------------------------------------------------------


def test_first_in_and_last_out_only(topo: Topology) -> None:
    topo.change(["a1"], ["chat:1"], leave=False)
    assert topo.take_transitions() == joined("chat:1", "ada")
    topo.change(["a2", "x1", "x2"], ["chat:1"], leave=False)  # a second tab, anonymous ones
    assert topo.take_transitions() == []
    topo.change(["a1", "x1"], ["chat:1"], leave=True)
    assert topo.take_transitions() == []
    topo.change(["a2"], ["chat:1"], leave=True)
    assert topo.take_transitions() == left("chat:1", "ada")
    assert topo.take_transitions() == []  # taken means gone


def test_untracked_rooms_and_own_rooms_queue_nothing(topo: Topology) -> None:
    topo.change(["a1", "b1"], ["other", "chatty"], leave=False)
    topo.close_sockets("g1", ["a1"])
    topo.open_sockets("g1", ["c1"], ["cy"])
    assert topo.take_transitions() == []
    assert counts(topo, "other") == {"bob": 1}  # counted all the same


def test_disconnects_and_gateway_loss_are_last_out(topo: Topology) -> None:
    topo.change(["a1", "a2", "b1", "x1"], ["chat:1", "lobby"], leave=False)
    assert sorted(topo.take_transitions(), key=repr) == sorted(
        joined("chat:1", "ada", "bob") + joined("lobby", "ada", "bob"), key=repr
    )
    topo.close_sockets("g1", ["a1"])  # ada still has a2 on g2
    assert topo.take_transitions() == []
    assert topo.drop_gateway("g1") == 2  # bob's only tab (and x1)
    assert sorted(topo.take_transitions(), key=repr) == sorted(
        left("chat:1", "bob") + left("lobby", "bob"), key=repr
    )
    topo.add_gateway("g2")  # a gateway saying Hello again loses its sockets until its resync
    assert sorted(topo.take_transitions(), key=repr) == sorted(
        left("chat:1", "ada") + left("lobby", "ada"), key=repr
    )
    assert topo.presence("chat:1") == {}


def test_leave_all_and_copy_members_count_users(topo: Topology) -> None:
    topo.change(["a1", "b1"], ["src"], leave=False)
    topo.copy_members("src", ["chat:9"], remove=False)
    assert sorted(topo.take_transitions(), key=repr) == joined("chat:9", "ada", "bob")
    topo.copy_members("src", ["chat:9"], remove=True)
    assert sorted(topo.take_transitions(), key=repr) == sorted(
        left("chat:9", "ada", "bob"), key=repr
    )
    topo.change(["a1", "a2"], ["chat:9", "lobby"], leave=False)
    topo.take_transitions()
    topo.leave_all("chat:9")
    assert sorted(topo.take_transitions(), key=repr) == sorted(
        left("chat:9", "ada") + left("lobby", "ada"), key=repr
    )


def test_track_flags_a_room_whatever_its_name(topo: Topology) -> None:
    topo.change(["a1"], ["plain"], leave=False)
    topo.track("plain", True)  # an existing room: tracked from now on (no event for ada)
    assert topo.take_transitions() == []
    topo.change(["b1"], ["plain"], leave=False)
    assert topo.take_transitions() == joined("plain", "bob")
    # A flag outlives the room emptying; a room flagged before it exists is tracked once it does.
    topo.change(["a1", "b1"], ["plain"], leave=True)
    assert sorted(topo.take_transitions(), key=repr) == sorted(
        left("plain", "ada", "bob"), key=repr
    )
    topo.track("later", True)
    topo.change(["a1", "b1"], ["plain", "later"], leave=False)
    assert sorted(topo.take_transitions(), key=repr) == sorted(
        joined("plain", "ada", "bob") + joined("later", "ada", "bob"), key=repr
    )
    # Unflagging stops the events, except for rooms the pattern tracks anyway.
    topo.track("plain", False)
    topo.track("lobby", False)
    topo.change(["a1"], ["plain"], leave=True)
    topo.change(["a1"], ["lobby"], leave=False)
    assert topo.take_transitions() == joined("lobby", "ada")
    with pytest.raises(InvalidRoom):
        topo.track("", True)


def test_pattern_rooms_stop_being_tracked_only_by_name(topo: Topology) -> None:
    topo.change(["a1"], ["chat:1"], leave=False)
    topo.change(["a1"], ["chat:1"], leave=True)  # emptied, then created again
    topo.change(["a1"], ["chat:1"], leave=False)
    assert topo.take_transitions() == joined("chat:1", "ada") + left("chat:1", "ada") + joined(
        "chat:1", "ada"
    )


# --- set_presence --------------------------------------------------------------------------------


def test_set_presence_gives_an_anonymous_socket_a_user(topo: Topology) -> None:
    topo.change(["x1", "x2"], ["chat:1", "other"], leave=False)
    assert topo.set_presence("x1", "cy", b'{"v":1}') == "g1"  # returns the socket's gateway
    assert topo.take_transitions() == joined("chat:1", "cy")
    assert topo.presence("other") == {"cy": (1, b'{"v":1}')}
    assert topo.set_presence("x2", "cy", b"") == "g2"  # cy's second tab: no transition
    assert topo.take_transitions() == []
    assert counts(topo, "chat:1") == {"cy": 2}
    assert topo.user_meta("cy") == b'{"v":1}'  # an empty metadata does not erase it


def test_set_presence_moves_counts_from_one_user_to_another(topo: Topology) -> None:
    topo.change(["a1", "a2", "b1"], ["chat:1"], leave=False)
    topo.take_transitions()
    topo.set_presence("a1", "bob", b"")  # ada keeps a2; bob gets a second tab
    assert topo.take_transitions() == []
    assert counts(topo, "chat:1") == {"ada": 1, "bob": 2}
    topo.set_presence("a2", "dee", b"")  # ada's last tab becomes dee's first
    assert topo.take_transitions() == left("chat:1", "ada") + joined("chat:1", "dee")
    topo.set_presence("b1", "", b"")  # cleared: bob still has a1
    assert topo.take_transitions() == []
    topo.set_presence("a1", "", b"")
    assert topo.take_transitions() == left("chat:1", "bob")
    assert topo.presence("chat:1") == {"dee": (1, b"")}
    assert topo.presence_stats("chat:1") == (3, 1)


def test_set_presence_same_user_updates_metadata_only(topo: Topology) -> None:
    topo.change(["a1"], ["chat:1"], leave=False)
    topo.take_transitions()
    topo.set_presence("a1", "ada", b'{"away":true}')
    assert topo.take_transitions() == []
    assert topo.presence("chat:1") == {"ada": (1, b'{"away":true}')}


def test_set_presence_on_unknown_socket(topo: Topology) -> None:
    with pytest.raises(NoSuchSocket):
        topo.set_presence("ghost", "ada", b"")


def test_user_metadata_is_forgotten_with_the_last_connection(topo: Topology) -> None:
    """Otherwise the router would keep the metadata of every user it ever saw."""
    topo.set_presence("a1", "ada", b'{"v":1}')
    topo.close_sockets("g1", ["a1"])
    assert topo.user_meta("ada") == b'{"v":1}'  # a2 is still ada's
    topo.drop_gateway("g2")
    assert topo.user_meta("ada") == b""
    topo.set_presence("b1", "bob", b'{"v":2}')
    topo.set_presence("b1", "bo", b"")  # bob's only connection is someone else now
    assert topo.user_meta("bob") == b""
    topo.set_presence("b1", "bob", b'{"v":3}')
    topo.open_sockets("g1", ["b1"])  # the id opened again, anonymous
    assert topo.user_meta("bob") == b""
    assert topo._users == {}


# --- resync --------------------------------------------------------------------------------------


def test_resync_restores_identities_metadata_and_counts() -> None:
    t = Topology(tracked=tracked)
    t.resync(
        "g1",
        [("a1", ["chat:1", "other"]), ("a2", ["chat:1"]), ("x1", ["chat:1"])],
        {"a1": ("ada", b'{"tab":1}'), "a2": ("ada", b"")},
    )
    assert counts(t, "chat:1") == {"ada": 2}
    assert t.presence("other") == {"ada": (1, b'{"tab":1}')}
    assert t.presence_stats("chat:1") == (3, 1)
    assert t.user_meta("ada") == b'{"tab":1}'
    # A router that restarted learns who is there: one transition per user, not per tab.
    assert t.take_transitions() == joined("chat:1", "ada")
    # Without identities (an older gateway), sockets come back anonymous.
    t.resync("g2", [("b1", ["chat:1"])])
    assert t.presence_stats("chat:1") == (4, 1)
    assert t.take_transitions() == []


def test_a_room_listed_twice_counts_once() -> None:
    """A resync naming a room twice once made ada count 2 there: a ghost after she left."""
    t = Topology(tracked=tracked)
    t.resync("g1", [("a1", ["chat:1", "chat:1"])], {"a1": ("ada", b"")})
    assert t.presence("chat:1") == {"ada": (1, b"")}
    assert t.take_transitions() == joined("chat:1", "ada")
    t.change(["a1"], ["chat:1"], leave=True)
    assert t.presence("chat:1") == {}
    assert t.presence_stats("chat:1") == (0, 0)
    assert t.take_transitions() == left("chat:1", "ada")


def test_resync_of_a_socket_replaces_its_identity() -> None:
    t = Topology(tracked=tracked)
    t.open_sockets("g1", ["s1"], ["ada"])
    t.change(["s1"], ["chat:1"], leave=False)
    t.take_transitions()
    t.resync("g1", [("s1", ["chat:1"])], {"s1": ("bob", b"")})
    assert t.take_transitions() == left("chat:1", "ada") + joined("chat:1", "bob")
    assert counts(t, "chat:1") == {"bob": 1}


# --- receipts ------------------------------------------------------------------------------------


def test_receipt_counts_each_socket_once_across_rooms(topo: Topology) -> None:
    topo.change(["a1", "a2", "b1"], ["r1"], leave=False)
    topo.change(["a1", "x1"], ["r2"], leave=False)
    assert topo.receipt(["r1"], [], everyone=False) == (3, 0)
    assert topo.receipt(["r1", "r2"], [], everyone=False) == (4, 0)  # a1 once
    assert topo.receipt(["r1", "r2", "r1", "nowhere"], [], everyone=False) == (4, 0)
    # omit: only members are omitted; duplicates and strangers count for nothing.
    assert topo.receipt(["r1", "r2"], ["a1", "a1", "x2", "ghost"], everyone=False) == (3, 1)
    assert topo.receipt(["r1"], ["a1", "a2", "b1"], everyone=False) == (0, 3)
    assert topo.receipt(["nowhere"], ["a1"], everyone=False) == (0, 0)
    assert topo.receipt([], [], everyone=False) == (0, 0)


def test_receipt_of_a_blast_counts_every_socket(topo: Topology) -> None:
    assert topo.receipt([], [], everyone=True) == (5, 0)
    assert topo.receipt([], ["a1", "x2", "x2", "ghost"], everyone=True) == (3, 2)
    topo.drop_gateway("g2")
    assert topo.receipt([], ["a1"], everyone=True) == (2, 1)


# --- PresenceBuffer ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transitions", "expected"),
    [
        ([], {}),
        (joined("r", "ada"), {"r": (["ada"], [])}),
        (left("r", "ada"), {"r": ([], ["ada"])}),
        # A tab reload or a quick reconnect says nothing, in either order.
        (joined("r", "ada") + left("r", "ada"), {}),
        (left("r", "ada") + joined("r", "ada"), {}),
        (joined("r", "ada") + left("r", "ada") + joined("r", "ada"), {"r": (["ada"], [])}),
        (left("r", "ada") + joined("r", "ada") + left("r", "ada"), {"r": ([], ["ada"])}),
        # Per room, users sorted; rooms whose changes cancel out are left out.
        (
            joined("r", "cy", "ada") + left("r", "bob") + joined("s", "ada") + left("s", "ada"),
            {"r": (["ada", "cy"], ["bob"])},
        ),
        (joined("r", "ada") + joined("s", "ada"), {"r": (["ada"], []), "s": (["ada"], [])}),
    ],
)
def test_buffer_keeps_the_net_change_per_user_and_room(
    transitions: list[Transition], expected: dict[str, tuple[list[str], list[str]]]
) -> None:
    buf = PresenceBuffer()
    buf.add(transitions)
    assert bool(buf) is bool(transitions)
    assert buf.flush() == expected
    assert not buf
    assert buf.flush() == {}


def test_buffer_collects_across_adds_until_flushed() -> None:
    buf = PresenceBuffer()
    buf.add(joined("r", "ada"))
    buf.add(iter(left("r", "ada") + joined("r", "bob")))  # any iterable
    assert buf.flush() == {"r": (["bob"], [])}
    buf.add(left("r", "bob"))
    assert buf.flush() == {"r": ([], ["bob"])}


def test_mass_disconnect_is_one_event_per_room() -> None:
    """5,000 users dropped by a gateway: one flush has one entry per tracked room."""
    t = Topology(tracked=tracked)
    users = [f"user{i}" for i in range(5000)]
    t.open_sockets("g1", [f"s{i}" for i in range(5000)], users)
    t.open_sockets("g2", ["watcher"], ["eve"])
    t.change([f"s{i}" for i in range(5000)], ["chat:1", "chat:2"], leave=False)
    t.change(["watcher"], ["chat:1"], leave=False)
    buf = PresenceBuffer()
    buf.add(t.take_transitions())
    buf.flush()
    t.drop_gateway("g1")
    buf.add(t.take_transitions())
    out = buf.flush()
    assert set(out) == {"chat:1", "chat:2"}
    assert out["chat:1"] == ([], sorted(users))
    assert t.presence("chat:1") == {"eve": (1, b"")}


def test_event_payload_is_the_documented_one() -> None:
    metas = {"ada": b'{"tab":1,"n":"\xc3\xa9"}', "bob": b""}
    data = encode_event("chat:1", ["ada", "bob"], ["cy"], lambda u: metas.get(u, b""))
    assert PRESENCE_EVENT == "presence"
    assert json.loads(data) == {
        "room": "chat:1",
        "joined": [{"user": "ada", "meta": {"tab": 1, "n": "é"}}, {"user": "bob", "meta": None}],
        "left": ["cy"],
    }
    assert b" " not in data and "é".encode() in data  # compact, UTF-8 as is
    empty = json.loads(encode_event("r", [], [], lambda u: b""))
    assert empty == {"room": "r", "joined": [], "left": []}


# --- Confirmations -------------------------------------------------------------------------------


def pending(*gateways: str, sockets: int = 0) -> Pending:
    reply = wire.Reply(ref=7, gateways=len(gateways), sockets=sockets, omitted=1)
    return Pending(b"client", None, reply, set(gateways))


def test_confirmed_once_every_gateway_answered() -> None:
    c = Confirmations()
    cid = c.open(pending("g1", "g2", sockets=5))
    assert len(c) == 1
    assert c.delivered(cid, "g1", 3) is None
    assert c.delivered(cid, "g1", 3) is None  # a duplicate counts once
    assert c.delivered(cid, "g9", 4) is None  # not asked
    done = c.delivered(cid, "g2", 2)
    assert done is not None and len(c) == 0
    answer = Confirmations.answer(done, complete=True)
    assert (answer.ref, answer.gateways, answer.sockets, answer.omitted) == (7, 2, 5, 1)
    assert (answer.confirmed, answer.complete) == (5, True)
    assert c.delivered(cid, "g2", 2) is None  # late: already answered
    assert c.expire(cid) is None  # the timeout finds nothing to answer


def test_timeout_answers_what_was_confirmed() -> None:
    c = Confirmations()
    first, second = c.open(pending("g1", "g2")), c.open(pending("g1"))
    assert first != second
    assert c.delivered(first, "g1", 4) is None
    late = c.expire(first)
    assert late is not None and late.waiting == {"g2"}
    answer = Confirmations.answer(late, complete=False)
    assert (answer.confirmed, answer.complete) == (4, False)
    assert c.delivered(first, "g2", 1) is None  # after the answer: ignored
    assert len(c) == 1
    assert c.expire(99) is None


def test_receipt_and_confirmations_agree_on_a_publish(topo: Topology) -> None:
    """The router's arithmetic: the receipt's sockets equal what the gateways queue when each
    gateway delivers to its members of the rooms minus omit."""
    topo.change(["a1", "b1", "a2"], ["r1"], leave=False)
    topo.change(["a1", "x2"], ["r2"], leave=False)
    rooms, omit = ["r1", "r2"], ["b1"]
    sockets, omitted = topo.receipt(rooms, omit, everyone=False)
    c = Confirmations()
    cid = c.open(pending(*sorted(topo.route(rooms)), sockets=sockets))
    done = None
    for gw in sorted(topo.route(rooms)):
        local = {s for r in rooms for s in topo.members(r) if topo.gateway_of(s) == gw}
        done = c.delivered(cid, gw, len(local - set(omit)))
    assert done is not None
    assert Confirmations.answer(done, complete=True).confirmed == sockets == 3
    assert omitted == 1


# --- the reference model -------------------------------------------------------------------------

ROOMS = ["chat:1", "chat:2", "lobby", "plain", "other", "flagged"]
SOCKETS = [f"s{i}" for i in range(10)]
USERS = ["", "ada", "bob", "cy"]
METAS = [b"", b'{"v":1}', b'{"v":2}']
GATEWAYS = ["g1", "g2", "g3"]


class Model:
    """Who is who, naively: socket -> (user, meta), users' connection counts, last metadata.
    Membership itself comes from the Topology (tests/unit/test_topology.py checks it)."""

    def __init__(self, t: Topology) -> None:
        self.t = t
        self.ident: dict[str, tuple[str, bytes]] = {}
        self.conns: collections.Counter[str] = collections.Counter()
        self.last_meta: dict[str, bytes] = {}
        self.flagged: set[str] = set()

    def _down(self, sid: str) -> None:
        user, _meta = self.ident.pop(sid, ("", b""))
        if user:
            self.conns[user] -= 1
            if not self.conns[user]:
                del self.conns[user]
                self.last_meta.pop(user, None)

    def _up(self, sid: str, user: str, meta: bytes) -> None:
        self.ident[sid] = (user, meta)
        if user:
            self.conns[user] += 1
            if meta:
                self.last_meta[user] = meta

    def open(self, sids: Iterable[str], users: list[str], metas: dict[str, bytes]) -> None:
        for i, sid in enumerate(sids):
            self._down(sid)
            self._up(sid, users[i] if i < len(users) else "", metas.get(sid, b""))

    def forget(self, sids: Iterable[str]) -> None:
        for sid in sids:
            self._down(sid)

    def set_presence(self, sid: str, user: str, meta: bytes) -> None:
        old, _ = self.ident[sid]
        if old != user:
            self._down(sid)
            self._up(sid, user, b"")
        self.ident[sid] = (user, meta)
        if user and meta:
            self.last_meta[user] = meta

    def tracked(self, room: str) -> bool:
        return tracked(room) or room in self.flagged

    def users_in(self, room: str) -> collections.Counter[str]:
        return collections.Counter(
            self.ident[s][0] for s in self.t.members(room) if self.ident[s][0]
        )


def check_transitions(
    before: dict[str, set[str]], after: dict[str, set[str]], queued: list[Transition], m: Model
) -> None:
    state = {room: set(users) for room, users in before.items()}
    for tr in queued:
        assert m.tracked(tr.room), tr
        users = state[tr.room]
        if tr.joined:
            assert tr.user not in users, tr
            users.add(tr.user)
        else:
            assert tr.user in users, tr
            users.discard(tr.user)
    for room in ROOMS:
        if m.tracked(room):
            assert state[room] == after[room], room
        else:
            assert before[room] == state[room], room  # nothing queued for it


def check_state(t: Topology, m: Model, rng: random.Random) -> None:
    live = [s for s in SOCKETS if t.gateway_of(s) is not None]
    assert set(m.ident) == set(live)
    for room in ROOMS + live:
        members = t.members(room)
        expected = m.users_in(room)
        got = t.presence(room)
        assert {u: n for u, (n, _) in got.items()} == dict(expected), room
        for user, (_, meta) in got.items():
            assert meta in {m.ident[s][1] for s in members if m.ident[s][0] == user}
        assert t.presence_stats(room) == (len(members), len(expected))
    for user in USERS[1:]:
        assert t.user_meta(user) == m.last_meta.get(user, b""), user
    assert t._users == dict(m.conns)
    for users in t._presence.values():
        assert users and all(n > 0 for n in users.values())
    # Receipts: every member of any of the rooms once, minus omit.
    rooms = rng.sample(ROOMS, rng.randint(0, 3))
    omit = [rng.choice([*SOCKETS, "ghost"]) for _ in range(rng.randint(0, 3))]
    targets = {s for r in rooms for s in t.members(r)}
    assert t.receipt(rooms, omit, everyone=False) == (
        len(targets - set(omit)),
        len(targets & set(omit)),
    )
    assert t.receipt([], omit, everyone=True) == (
        len(set(live) - set(omit)),
        len(set(live) & set(omit)),
    )


def test_presence_matches_reference_model() -> None:
    rng = random.Random(8)
    t = Topology(max_rooms_per_socket=4, tracked=tracked)
    m = Model(t)
    outcomes: collections.Counter[str] = collections.Counter()

    def some(pool: list[str], most: int) -> list[str]:
        return [rng.choice(pool) for _ in range(rng.randint(0, most))]

    for step in range(5000):
        op = rng.choices(
            ["open", "close", "join", "leave", "leave_all", "copy", "set", "track", "resync",
             "add", "drop"],
            weights=[10, 5, 25, 12, 3, 6, 15, 4, 3, 1, 1],
        )[0]  # fmt: skip
        g = rng.choice(GATEWAYS)
        before = {room: set(m.users_in(room)) for room in ROOMS}
        queued_before = t.take_transitions()
        assert queued_before == [], step
        if op == "open":
            sids, users = some(SOCKETS, 3), some(USERS, 3)
            if any(t.gateway_of(s) not in (None, g) for s in sids):
                with pytest.raises(Conflict):  # another gateway's socket: nothing changes
                    t.open_sockets(g, sids, users)
                op = "open:Conflict"
            else:
                t.open_sockets(g, sids, users)
                m.open(sids, users, {})
        elif op == "close":
            sids = some([*SOCKETS, "ghost"], 3)
            mine = {s for s in sids if t.gateway_of(s) == g}
            assert t.close_sockets(g, sids) == len(mine)
            m.forget(mine)
        elif op in ("add", "drop"):
            mine = {s for s in SOCKETS if t.gateway_of(s) == g}
            (t.add_gateway if op == "add" else t.drop_gateway)(g)
            m.forget(mine)
        elif op == "resync":
            items = [(s, some(ROOMS, 3)) for s in dict.fromkeys(some(SOCKETS, 3))]
            identities = {
                s: (rng.choice(USERS[1:]), rng.choice(METAS))
                for s, _ in items
                if rng.random() < 0.7
            }
            mine = [(s, r) for s, r in items if t.gateway_of(s) in (None, g)]
            assert t.resync(g, items, identities) == len(items) - len(mine)
            m.open(
                [s for s, _ in mine],
                [identities.get(s, ("", b""))[0] for s, _ in mine],
                {s: meta for s, (_, meta) in identities.items()},
            )
        elif op == "set":
            sid, user, meta = rng.choice(SOCKETS), rng.choice(USERS), rng.choice(METAS)
            if sid in m.ident:
                assert t.set_presence(sid, user, meta) == t.gateway_of(sid)
                m.set_presence(sid, user, meta)
            else:
                with pytest.raises(NoSuchSocket):
                    t.set_presence(sid, user, meta)
                op = "set:NoSuchSocket"
        elif op == "track":
            room, enabled = rng.choice(ROOMS), rng.random() < 0.6
            t.track(room, enabled)
            (m.flagged.add if enabled else m.flagged.discard)(room)
        else:
            call: Callable[[], object]
            if op in ("join", "leave"):
                call = functools.partial(
                    t.change, some(SOCKETS, 3), some(ROOMS, 3), leave=op == "leave"
                )
            elif op == "leave_all":
                call = functools.partial(t.leave_all, rng.choice(ROOMS))
            else:
                call = functools.partial(
                    t.copy_members,
                    rng.choice(ROOMS + SOCKETS),
                    some(ROOMS, 2),
                    remove=rng.random() < 0.4,
                )
            try:
                call()
            except (NoSuchSocket, TooManyRooms) as exc:
                op = f"{op}:{type(exc).__name__}"
        outcomes[op] += 1
        after = {room: set(m.users_in(room)) for room in ROOMS}
        check_transitions(before, after, t.take_transitions(), m)
        check_state(t, m, rng)

    for key in ["set", "set:NoSuchSocket", "join:TooManyRooms", "join:NoSuchSocket", "resync"]:
        assert outcomes[key] > 0, (key, outcomes)
