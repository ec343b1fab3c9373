"""router.queries without sockets: each query kind's answer, presence limits, recovery JSON.

A topology with two sockets of one gateway (``s1`` as ada with metadata, ``s2`` anonymous)
in ``chat:1``, and a history of the ``chat:*`` rooms, answer every :class:`wire.QueryKind`.
Bad rooms, unknown kinds, oversized or non-JSON presence data are named errors. The recovery
answer splices each message's data JSON in verbatim.
"""

from __future__ import annotations

import json

import pytest

from roomcast.core import wire
from roomcast.core.errors import BadRequest, InvalidRoom, PayloadTooLarge
from roomcast.core.topology import Topology
from router import queries
from router.history import History, Recovery

Kind = wire.QueryKind


@pytest.fixture
def topo() -> Topology:
    t = Topology(tracked=lambda room: room.startswith("chat:"))
    t.add_gateway("g1")
    t.open_sockets("g1", ["s1", "s2"], ["ada"])
    t.set_presence("s1", "ada", b'{"name":"Ada"}')
    t.change(["s1", "s2"], ["chat:1"], leave=False)
    return t


@pytest.fixture
def history() -> History:
    h = History(patterns=["chat:*"], size=10, ttl_s=60.0, epoch="e")
    h.append(["chat:1"], "msg", b'{"n":1}', 0.0)
    h.append(["chat:1"], "msg", b"", 1.0)
    return h


def ask(topo: Topology, history: History, kind: Kind, target: str, **kw: object) -> wire.Reply:
    query = wire.Query(ref=7, kind=kind, target=target, **kw)  # type: ignore[arg-type]
    return queries.answer(query, topo, history, 2.0)


def test_count_members_and_rooms(topo: Topology, history: History) -> None:
    assert ask(topo, history, Kind.COUNT, "chat:1") == wire.Reply(ref=7, count=2)
    assert sorted(ask(topo, history, Kind.MEMBERS, "chat:1").names) == ["s1", "s2"]
    assert sorted(ask(topo, history, Kind.ROOMS, "s1").names) == ["chat:1", "s1"]
    assert ask(topo, history, Kind.COUNT, "empty") == wire.Reply(ref=7, count=0)


def test_presence_and_its_stats(topo: Topology, history: History) -> None:
    body = json.loads(ask(topo, history, Kind.PRESENCE, "chat:1").body)
    assert body == {"ada": {"connections": 1, "meta": {"name": "Ada"}}}
    stats = json.loads(ask(topo, history, Kind.PRESENCE_STATS, "chat:1").body)
    assert stats == {"connections": 2, "users": 1}  # every connection; one known user


def test_recover_splices_each_message_data_in(topo: Topology, history: History) -> None:
    reply = ask(topo, history, Kind.RECOVER, "chat:1", epoch="", offset=0)
    assert reply.ref == 7
    assert json.loads(reply.body) == {
        "recovered": True,
        "epoch": "e.1",
        "offset": 2,
        "messages": [
            {"offset": 1, "event": "msg", "data": {"n": 1}},
            {"offset": 2, "event": "msg", "data": None},  # no data: null
        ],
    }


def test_recovery_json_of_an_unrecoverable_position() -> None:
    body = queries.recovery(Recovery(False, "e.2", 5, ()))
    assert body == b'{"recovered":false,"epoch":"e.2","offset":5,"messages":[]}'


@pytest.mark.parametrize(
    ("kind", "target", "error"),
    [
        (Kind.COUNT, "", InvalidRoom),
        (Kind.MEMBERS, "a\x00b", InvalidRoom),
        (Kind.PRESENCE, "", InvalidRoom),
        (Kind.PRESENCE_STATS, "", InvalidRoom),
        (Kind.RECOVER, "", InvalidRoom),
        (Kind.UNSPECIFIED, "chat:1", BadRequest),
    ],
)
def test_bad_queries_are_named_errors(
    topo: Topology, history: History, kind: Kind, target: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        ask(topo, history, kind, target)


@pytest.mark.parametrize(
    ("user", "meta", "error"),
    [
        ("ada", b"", None),
        ("ada", b'{"x":1}', None),
        ("u" * queries.MAX_PRESENCE_USER_BYTES, b"", None),
        ("u" * (queries.MAX_PRESENCE_USER_BYTES + 1), b"", BadRequest),
        ("é" * (queries.MAX_PRESENCE_USER_BYTES // 2 + 1), b"", BadRequest),  # bytes, not chars
        ("ada", b'"' + b"m" * (queries.MAX_PRESENCE_META_BYTES - 2) + b'"', None),
        ("ada", b'"' + b"m" * (queries.MAX_PRESENCE_META_BYTES - 1) + b'"', PayloadTooLarge),
        ("ada", b"{not json", BadRequest),
    ],
)
def test_presence_limits(user: str, meta: bytes, error: type[Exception] | None) -> None:
    msg = wire.SetPresence(ref=1, socket="s1", user=user, meta=meta)
    if error is None:
        queries.check_presence(msg)
    else:
        with pytest.raises(error):
            queries.check_presence(msg)


def test_a_recovery_over_the_askers_bound_says_not_recovered_at_the_current_position() -> None:
    since = Recovery(True, "e.1", 3, ((2, "m", b'"' + b"x" * 100 + b'"'), (3, "m", b"1")))
    full, fits = queries.recovery_within(since, 0)
    assert fits and json.loads(full)["recovered"] is True
    assert queries.recovery_within(since, len(full)) == (full, True)
    capped, fits = queries.recovery_within(since, len(full) - 1)
    assert not fits
    assert json.loads(capped) == {"recovered": False, "epoch": "e.1", "offset": 3, "messages": []}
    assert queries.recovery(since, len(full) - 1) == capped
