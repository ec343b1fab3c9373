"""``roomcast.model``: Sails' Resourceful PubSub room names and payloads, against a recording
stand-in for ``cluster.sockets`` (our own API, not zmq), and ``SyncModel``'s delegation to it.

Payloads are Sails v1's (event name = identity):
``{"verb":"created","data":record,"id":pk}``, ``{"verb":"updated","data":changes,"id":pk
[,"previous":prev]}``, ``{"verb":"destroyed","id":pk[,"previous":prev]}``,
``{"id":pk,"verb":"addedTo","attribute":alias,"addedId":child}``,
``{"id":pk,"verb":"removedFrom","attribute":alias,"removedId":child}``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Coroutine
from typing import Any

import pytest

from roomcast.model import Model
from roomcast.requests import Request
from roomcast.sync_model import SyncModel

Call = tuple[str, tuple[Any, ...], dict[str, Any]]


class RecordingSockets:
    """Records every call in order; implements the ``SocketsApi`` protocol."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    async def join(self, sockets: Any, rooms: Any) -> None:
        self.calls.append(("join", (sockets, rooms), {}))

    async def leave(self, sockets: Any, rooms: Any) -> None:
        self.calls.append(("leave", (sockets, rooms), {}))

    async def add_room_members_to_rooms(self, src: Any, dests: Any) -> None:
        self.calls.append(("add_room_members_to_rooms", (src, dests), {}))

    async def remove_room_members_from_rooms(self, src: Any, dests: Any) -> None:
        self.calls.append(("remove_room_members_from_rooms", (src, dests), {}))

    async def broadcast(
        self, rooms: Any, event: str = "message", data: Any = None, *, omit: Any = None
    ) -> int:
        self.calls.append(("broadcast", (rooms, event, data), {"omit": omit}))
        return 1


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def model(identity: str = "user", **kw: Any) -> tuple[Model, RecordingSockets]:
    sockets = RecordingSockets()
    return Model(sockets, identity, **kw), sockets


def broadcast(rooms: Any, event: str, data: Any, omit: Any = None) -> Call:
    return ("broadcast", (rooms, event, data), {"omit": omit})


def json_equal(a: Any, b: Any) -> bool:
    return bool(json.loads(json.dumps(a)) == json.loads(json.dumps(b)))


# ---------------------------------------------------------------------------- room names


@pytest.mark.parametrize(
    ("identity", "id", "room"),
    [
        ("user", 7, "sails_model_user_7:user"),
        ("user", "7", "sails_model_user_7:user"),
        ("User", 7, "sails_model_user_7:user"),
        ("pet", "a-b_c", "sails_model_pet_a-b_c:pet"),
        ("chatmessage", 0, "sails_model_chatmessage_0:chatmessage"),
    ],
)
def test_get_room_name(identity: str, id: Any, room: str) -> None:
    m, _ = model(identity)
    assert m.get_room_name(id) == room


def test_class_room_and_identity() -> None:
    m, _ = model("User")
    assert m.identity == "user"
    assert m.class_room == "sails_model_create_user"
    assert m.primary_key == "id"


@pytest.mark.parametrize("identity", ["", None, 7])
def test_identity_must_be_a_non_empty_string(identity: Any) -> None:
    with pytest.raises(ValueError):
        Model(RecordingSockets(), identity)


# ------------------------------------------------------------------------- subscriptions


@pytest.mark.parametrize(
    ("ids", "rooms"),
    [
        (7, ["sails_model_user_7:user"]),
        ("7", ["sails_model_user_7:user"]),
        ([1, 2], ["sails_model_user_1:user", "sails_model_user_2:user"]),
        ((3,), ["sails_model_user_3:user"]),
    ],
)
def test_subscribe_and_unsubscribe_join_and_leave_the_record_rooms(
    ids: Any, rooms: list[str]
) -> None:
    m, sockets = model()
    req = Request("s1")
    run(m.subscribe(req, ids))
    run(m.unsubscribe("s1", ids))
    assert sockets.calls == [("join", (req, rooms), {}), ("leave", ("s1", rooms), {})]


def test_subscribe_to_a_set_of_ids() -> None:
    m, sockets = model()
    run(m.subscribe("s1", {1, 2}))
    [(name, (who, rooms), _)] = sockets.calls
    assert (name, who) == ("join", "s1")
    assert sorted(rooms) == ["sails_model_user_1:user", "sails_model_user_2:user"]


def test_subscribe_to_no_ids_makes_no_call() -> None:
    m, sockets = model()
    run(m.subscribe("s1", []))
    run(m.unsubscribe("s1", ()))
    run(m.publish([], "x"))
    assert sockets.calls == []


def test_watch_and_unwatch_the_class_room() -> None:
    m, sockets = model("pet")
    req = Request("s2")
    run(m.watch(req))
    run(m.unwatch(["s1", req]))
    assert sockets.calls == [
        ("join", (req, "sails_model_create_pet"), {}),
        ("leave", (["s1", req], "sails_model_create_pet"), {}),
    ]


# ------------------------------------------------------------------------- notifications


def test_publish_sends_data_without_envelope() -> None:
    m, sockets = model()
    run(m.publish(7, {"text": "hi"}))
    run(m.publish([1, 2], "both", Request("s9")))
    assert sockets.calls == [
        broadcast(["sails_model_user_7:user"], "user", {"text": "hi"}),
        broadcast(
            ["sails_model_user_1:user", "sails_model_user_2:user"], "user", "both", Request("s9")
        ),
    ]


@pytest.mark.parametrize("req", [None, "s1", Request("s1")])
def test_publish_create_announces_then_introduces(req: Any) -> None:
    m, sockets = model()
    record = {"id": 41, "name": "Ada", "pets": [1]}
    run(m.publish_create(record, req))
    assert sockets.calls == [
        broadcast(
            "sails_model_create_user", "user", {"verb": "created", "data": record, "id": 41}, req
        ),
        ("add_room_members_to_rooms", ("sails_model_create_user", "sails_model_user_41:user"), {}),
    ]
    payload = sockets.calls[0][1][2]
    assert json_equal(payload, {"verb": "created", "data": record, "id": 41})


def test_publish_create_uses_the_primary_key() -> None:
    m, sockets = model("pet", primary_key="uid")
    run(m.publish_create({"uid": "p1", "id": "other"}))
    assert sockets.calls[0] == broadcast(
        "sails_model_create_pet",
        "pet",
        {"verb": "created", "data": {"uid": "p1", "id": "other"}, "id": "p1"},
    )
    assert sockets.calls[1] == (
        "add_room_members_to_rooms",
        ("sails_model_create_pet", "sails_model_pet_p1:pet"),
        {},
    )


def test_publish_update_without_previous_omits_the_key() -> None:
    m, sockets = model()
    run(m.publish_update(7, {"name": "new"}))
    [call] = sockets.calls
    assert call == broadcast(
        ["sails_model_user_7:user"], "user", {"verb": "updated", "data": {"name": "new"}, "id": 7}
    )
    assert "previous" not in call[1][2]


def test_publish_update_with_previous_and_requester() -> None:
    m, sockets = model()
    run(m.publish_update(7, {"name": "new"}, "s3", previous={"name": "old"}))
    assert sockets.calls == [
        broadcast(
            ["sails_model_user_7:user"],
            "user",
            {"verb": "updated", "data": {"name": "new"}, "id": 7, "previous": {"name": "old"}},
            "s3",
        )
    ]


def test_publish_update_with_an_empty_previous_keeps_it() -> None:
    """``previous={}`` was given (Sails sends it); only a missing one is omitted."""
    m, sockets = model()
    run(m.publish_update(7, {}, previous={}))
    assert sockets.calls[0][1][2] == {"verb": "updated", "data": {}, "id": 7, "previous": {}}


@pytest.mark.parametrize(
    ("previous", "payload"),
    [
        (None, {"verb": "destroyed", "id": 9}),
        (
            {"id": 9, "name": "x"},
            {"verb": "destroyed", "id": 9, "previous": {"id": 9, "name": "x"}},
        ),
    ],
)
def test_publish_destroy_notifies_then_empties_the_room(previous: Any, payload: Any) -> None:
    m, sockets = model()
    req = Request("s4")
    run(m.publish_destroy(9, req, previous=previous))
    room = "sails_model_user_9:user"
    assert sockets.calls == [
        broadcast([room], "user", payload, req),
        ("remove_room_members_from_rooms", (room, room), {}),
    ]


def test_publish_add_and_remove() -> None:
    m, sockets = model()
    run(m.publish_add(7, "pets", 99))
    run(m.publish_remove(7, "pets", "p2", Request("s5")))
    room = ["sails_model_user_7:user"]
    assert sockets.calls == [
        broadcast(room, "user", {"id": 7, "verb": "addedTo", "attribute": "pets", "addedId": 99}),
        broadcast(
            room,
            "user",
            {"id": 7, "verb": "removedFrom", "attribute": "pets", "removedId": "p2"},
            Request("s5"),
        ),
    ]


# ------------------------------------------------------------------------------ SyncModel


class FakeSyncCluster:
    """Stands in for ``SyncCluster``: ``run(make)`` runs ``make(cluster)`` to completion."""

    def __init__(self) -> None:
        self.sockets = RecordingSockets()
        self.models: list[tuple[str, str]] = []

    def model(self, identity: str, *, primary_key: str = "id") -> Model:
        self.models.append((identity, primary_key))
        return Model(self.sockets, identity, primary_key=primary_key)

    def run(self, make: Any) -> Any:
        return asyncio.run(make(self))


def test_sync_model_is_still_importable_from_roomcast_sync() -> None:
    from roomcast import sync

    assert sync.SyncModel is SyncModel and "SyncModel" in sync.__all__


def test_sync_model_room_names_need_no_cluster() -> None:
    m = SyncModel(None, "User")  # type: ignore[arg-type]
    assert m.identity == "user"
    assert m.get_room_name(7) == "sails_model_user_7:user"
    assert m.class_room == "sails_model_create_user"


def test_sync_model_delegates_every_call_with_its_arguments() -> None:
    fake = FakeSyncCluster()
    m = SyncModel(fake, "Pet", primary_key="uid")  # type: ignore[arg-type]
    req = Request("s1")
    m.subscribe(req, [1, 2])
    m.unsubscribe("s1", 1)
    m.watch(req)
    m.unwatch("s1")
    m.publish(1, "d", req)
    m.publish_create({"uid": "u1"}, "s2")
    m.publish_update(1, {"a": 1}, "s3", previous={"a": 0})
    m.publish_destroy(2, previous={"b": 1})
    m.publish_add(3, "toys", 4, req)
    m.publish_remove(3, "toys", 4)
    assert set(fake.models) == {("pet", "uid")}

    direct = RecordingSockets()
    d = Model(direct, "pet", primary_key="uid")

    async def same() -> None:
        await d.subscribe(req, [1, 2])
        await d.unsubscribe("s1", 1)
        await d.watch(req)
        await d.unwatch("s1")
        await d.publish(1, "d", req)
        await d.publish_create({"uid": "u1"}, "s2")
        await d.publish_update(1, {"a": 1}, "s3", previous={"a": 0})
        await d.publish_destroy(2, previous={"b": 1})
        await d.publish_add(3, "toys", 4, req)
        await d.publish_remove(3, "toys", 4)

    run(same())
    assert fake.sockets.calls == direct.calls


PUBLIC = [
    "subscribe",
    "unsubscribe",
    "watch",
    "unwatch",
    "publish",
    "publish_create",
    "publish_update",
    "publish_destroy",
    "publish_add",
    "publish_remove",
    "get_room_name",
]


@pytest.mark.parametrize("name", PUBLIC)
def test_sync_model_has_the_same_signatures_as_model(name: str) -> None:
    def params(cls: type) -> list[tuple[str, Any, Any]]:
        sig = inspect.signature(getattr(cls, name))
        return [(p.name, p.kind, p.default) for p in sig.parameters.values()]

    assert params(SyncModel) == params(Model)
    assert inspect.iscoroutinefunction(getattr(Model, name)) == (name != "get_room_name")
    assert not inspect.iscoroutinefunction(getattr(SyncModel, name))
