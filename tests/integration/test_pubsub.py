"""Resourceful PubSub (architecture §5, issue 3) against Sails' exact room names and payloads.

Real router + two gateways (the session's shared cluster); plain ``/ws`` clients on both
gateways; the model API driven through both SDK flavours — ``roomcast.Cluster.model`` (asyncio,
run on an event loop owned by the test thread) and ``roomcast.SyncCluster.model``. Every payload
is compared JSON-equal after parsing with what Sails sends:

* ``publish(ids, data)``: ``data`` itself, event = identity;
* ``publish_create``: ``{"verb":"created","data":record,"id":pk}`` to the class room
  ``sails_model_create_<identity>``, whose members then get the record's later notifications;
* ``publish_update``: ``{"verb":"updated","data":changes,"id":pk[,"previous":prev]}``;
* ``publish_destroy``: ``{"verb":"destroyed","id":pk[,"previous":prev]}``, then the room is empty;
* ``publish_add`` / ``publish_remove``: ``{"id","verb":"addedTo"/"removedFrom","attribute",
  "addedId"/"removedId"}``.

Negative checks use a marker: the same publisher then sends a marker to the socket's own id room;
by per-publisher order (guarantee 2) the marker is the next thing the socket may receive.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import roomcast
from roomcast import Request, SyncCluster
from roomcast.model import Model
from roomcast.sync import SyncModel
from tests.integration.harness import Cluster, Event, WsClient


def token() -> str:
    return uuid.uuid4().hex


def fresh_identity() -> str:
    return "m" + uuid.uuid4().hex[:10]


class _Blocking:
    """Calls ``target``'s coroutine methods to completion on ``loop``; other attributes as is."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run_until_complete(attr(*args, **kwargs))

        return call


class Flavour:
    """One SDK flavour with a blocking surface: ``model(identity)``, ``sockets``, ``close()``."""

    name: str
    sockets: Any
    raw_model: Callable[[str], Any]

    def model(self, identity: str, **kw: Any) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class AsyncFlavour(Flavour):
    name = "async"

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()

        async def make() -> roomcast.Cluster:
            return roomcast.Cluster(url)

        self.cluster = self.loop.run_until_complete(make())
        self.sockets = _Blocking(self.cluster.sockets, self.loop)

    def raw_model(self, identity: str, **kw: Any) -> Any:
        return self.cluster.model(identity, **kw)

    def model(self, identity: str, **kw: Any) -> Any:
        return _Blocking(self.cluster.model(identity, **kw), self.loop)

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.cluster.close())
        finally:
            self.loop.close()


class SyncFlavour(Flavour):
    name = "sync"

    def __init__(self, url: str) -> None:
        self.cluster = SyncCluster(url)
        self.sockets = self.cluster.sockets

    def raw_model(self, identity: str, **kw: Any) -> Any:
        return self.cluster.model(identity, **kw)

    def model(self, identity: str, **kw: Any) -> Any:
        return self.cluster.model(identity, **kw)

    def close(self) -> None:
        self.cluster.close()


@pytest.fixture(params=["async", "sync"])
def sdk(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[Flavour]:
    flavour: Flavour = (AsyncFlavour if request.param == "async" else SyncFlavour)(cluster.commands)
    try:
        yield flavour
    finally:
        flavour.close()


def assert_only_marker(sdk: Flavour, *clients: WsClient) -> None:
    """Nothing this publisher sent earlier reached ``clients`` (a marker each comes next)."""
    for client in clients:
        mark = token()
        sdk.sockets.broadcast(client.id, "marker", mark)
        got = client.next_event()
        assert got == Event("marker", mark), f"{client}: expected only the marker, got {got}"


def expect(client: WsClient, event: str, data: Any) -> None:
    got = client.next_event(what=f"({event} {data!r})")
    assert got == Event(event, data), f"{client}: got {got}, expected {Event(event, data)}"


# --------------------------------------------------------------------------- room names


def test_room_names_are_sails_and_are_the_rooms_the_router_holds(
    cluster: Cluster, sdk: Flavour
) -> None:
    raw = sdk.raw_model("user")
    assert isinstance(raw, Model if sdk.name == "async" else SyncModel)
    user = sdk.model("user")
    assert user.get_room_name(7) == "sails_model_user_7:user"
    assert user.get_room_name("ab-c") == "sails_model_user_ab-c:user"
    assert user.class_room == "sails_model_create_user"
    assert sdk.model("User").get_room_name(7) == "sails_model_user_7:user"  # identity lowercased
    a = cluster.ws(1)
    user.subscribe(a.id, 7)
    user.watch(a.id)
    assert set(sdk.sockets.rooms(a.id)) == {
        a.id,
        "sails_model_user_7:user",
        "sails_model_create_user",
    }
    assert a.id in sdk.sockets.members("sails_model_user_7:user")
    user.unsubscribe(a.id, 7)
    user.unwatch(a.id)
    assert sdk.sockets.rooms(a.id) == [a.id]


# --------------------------------------------------------------------- subscribe / publish


def test_publish_sends_data_without_envelope_to_subscribers_on_both_gateways(
    cluster: Cluster, sdk: Flavour
) -> None:
    ident = fresh_identity()
    m = sdk.model(ident)
    a, b, c = cluster.ws(0), cluster.ws(1), cluster.ws(0)
    m.subscribe(a.id, [1, 2])
    m.subscribe(Request(b.id), 1)  # a request stands for its socket
    assert sdk.sockets.count(m.get_room_name(1)) == 2
    assert sdk.sockets.count(m.get_room_name(2)) == 1
    m.publish(1, {"text": "hi", "n": [1, 2]})
    expect(a, ident, {"text": "hi", "n": [1, 2]})
    expect(b, ident, {"text": "hi", "n": [1, 2]})
    # Several ids: once per socket.
    m.publish([1, 2], "both")
    expect(a, ident, "both")
    expect(b, ident, "both")
    m.publish(2, None)
    expect(a, ident, None)
    assert_only_marker(sdk, a, b, c)


def test_unsubscribe_stops_delivery(cluster: Cluster, sdk: Flavour) -> None:
    ident = fresh_identity()
    m = sdk.model(ident)
    a, b = cluster.ws(0), cluster.ws(1)
    for client in (a, b):
        m.subscribe(client.id, [5, 6])
    m.unsubscribe(Request(a.id), [5, 6])
    m.unsubscribe(b.id, 5)
    assert sdk.sockets.count(m.get_room_name(5)) == 0
    assert sdk.sockets.count(m.get_room_name(6)) == 1
    m.publish([5, 6], "after")
    expect(b, ident, "after")
    assert_only_marker(sdk, a, b)


@pytest.mark.parametrize("as_request", [True, False], ids=["Request", "id"])
def test_publish_omits_the_requester(cluster: Cluster, sdk: Flavour, as_request: bool) -> None:
    ident = fresh_identity()
    m = sdk.model(ident)
    requester, other = cluster.ws(0), cluster.ws(1)
    for client in (requester, other):
        m.subscribe(client.id, 3)
    req: Any = Request(requester.id) if as_request else requester.id
    m.publish(3, {"x": 1}, req)
    expect(other, ident, {"x": 1})
    assert_only_marker(sdk, requester)


# ------------------------------------------------------------------------ notifications


@pytest.mark.parametrize("as_request", [True, False], ids=["Request", "id"])
def test_publish_create_notifies_watchers_and_introduces_the_record(
    cluster: Cluster, sdk: Flavour, as_request: bool
) -> None:
    ident = fresh_identity()
    m = sdk.model(ident)
    w1, w2, requester, outsider = cluster.ws(0), cluster.ws(1), cluster.ws(0), cluster.ws(1)
    for client in (w1, w2, requester):
        m.watch(client.id)
    assert sdk.sockets.count(f"sails_model_create_{ident}") == 3
    record = {"id": 41, "name": "Ada", "tags": ["x"], "owner": None}
    req: Any = Request(requester.id) if as_request else requester.id
    m.publish_create(record, req)
    created = {"verb": "created", "data": record, "id": 41}
    expect(w1, ident, created)
    expect(w2, ident, created)
    assert_only_marker(sdk, requester, outsider)
    # Introduce-on-create: every watcher now subscribes to the new record's room.
    room = m.get_room_name(41)
    assert sorted(sdk.sockets.members(room)) == sorted([w1.id, w2.id, requester.id])
    m.publish_update(41, {"name": "Ada L."})
    updated = {"verb": "updated", "data": {"name": "Ada L."}, "id": 41}
    for client in (w1, w2, requester):
        expect(client, ident, updated)
    assert_only_marker(sdk, outsider)


def test_unwatch_stops_created_notifications(cluster: Cluster, sdk: Flavour) -> None:
    ident = fresh_identity()
    m = sdk.model(ident)
    a, b = cluster.ws(0), cluster.ws(1)
    m.watch(a.id)
    m.watch(Request(b.id))
    m.unwatch(Request(a.id))
    m.publish_create({"id": "k1"})
    expect(b, ident, {"verb": "created", "data": {"id": "k1"}, "id": "k1"})
    assert_only_marker(sdk, a)
    assert sdk.sockets.members(m.get_room_name("k1")) == [b.id]


def test_publish_create_uses_the_models_primary_key(cluster: Cluster, sdk: Flavour) -> None:
    ident = fresh_identity()
    m = sdk.model(ident, primary_key="uid")
    a = cluster.ws(1)
    m.watch(a.id)
    m.publish_create({"uid": "u-9", "id": "not-this"})
    expect(a, ident, {"verb": "created", "data": {"uid": "u-9", "id": "not-this"}, "id": "u-9"})
    assert sdk.sockets.members(m.get_room_name("u-9")) == [a.id]


def test_publish_update_with_and_without_previous(cluster: Cluster, sdk: Flavour) -> None:
    ident = fresh_identity()
    m = sdk.model(ident)
    a, b = cluster.ws(0), cluster.ws(1)
    for client in (a, b):
        m.subscribe(client.id, 8)
    m.publish_update(8, {"name": "new"})
    plain = {"verb": "updated", "data": {"name": "new"}, "id": 8}
    for client in (a, b):
        got = client.next_event()
        assert got == Event(ident, plain), got
        assert "previous" not in got.data
    m.publish_update(8, {"name": "newer"}, previous={"name": "new", "id": 8})
    full = {
        "verb": "updated",
        "data": {"name": "newer"},
        "id": 8,
        "previous": {"name": "new", "id": 8},
    }
    expect(a, ident, full)
    expect(b, ident, full)
    # With a requester: omitted.
    m.publish_update(8, {"name": "x"}, Request(a.id), previous={"name": "newer"})
    expect(
        b, ident, {"verb": "updated", "data": {"name": "x"}, "id": 8, "previous": {"name": "newer"}}
    )
    assert_only_marker(sdk, a, b)


def test_publish_destroy_notifies_then_empties_the_room(cluster: Cluster, sdk: Flavour) -> None:
    ident = fresh_identity()
    m = sdk.model(ident)
    a, b, c = cluster.ws(0), cluster.ws(1), cluster.ws(1)
    for client in (a, b):
        m.subscribe(client.id, [20, 21])
    m.subscribe(c.id, 21)
    m.publish_destroy(20, previous={"id": 20, "name": "gone"})
    destroyed = {"verb": "destroyed", "id": 20, "previous": {"id": 20, "name": "gone"}}
    expect(a, ident, destroyed)
    expect(b, ident, destroyed)
    room = m.get_room_name(20)
    assert sdk.sockets.count(room) == 0
    assert sdk.sockets.members(room) == []
    assert room not in sdk.sockets.rooms(a.id)
    # A later publish to the destroyed record reaches nobody...
    m.publish(20, "ghost")
    assert_only_marker(sdk, a, b, c)
    # ...while the other record's room is untouched.
    assert sdk.sockets.count(m.get_room_name(21)) == 3
    # Without previous (and a requester omitted).
    m.publish_destroy(21, c.id)
    for client in (a, b):
        got = client.next_event()
        assert got == Event(ident, {"verb": "destroyed", "id": 21}), got
        assert "previous" not in got.data
    assert_only_marker(sdk, c)
    assert sdk.sockets.count(m.get_room_name(21)) == 0


def test_publish_add_and_remove(cluster: Cluster, sdk: Flavour) -> None:
    ident = fresh_identity()
    m = sdk.model(ident)
    a, b = cluster.ws(1), cluster.ws(0)
    for client in (a, b):
        m.subscribe(client.id, 30)
    m.publish_add(30, "pets", 99)
    added = {"id": 30, "verb": "addedTo", "attribute": "pets", "addedId": 99}
    expect(a, ident, added)
    expect(b, ident, added)
    m.publish_remove(30, "pets", 99)
    removed = {"id": 30, "verb": "removedFrom", "attribute": "pets", "removedId": 99}
    expect(a, ident, removed)
    expect(b, ident, removed)
    # A requester (as a Request, then as an id) is omitted.
    m.publish_add(30, "pets", "p2", Request(b.id))
    expect(a, ident, {"id": 30, "verb": "addedTo", "attribute": "pets", "addedId": "p2"})
    m.publish_remove(30, "pets", "p2", a.id)
    expect(b, ident, {"id": 30, "verb": "removedFrom", "attribute": "pets", "removedId": "p2"})
    assert_only_marker(sdk, a, b)


def test_publish_can_return_a_receipt(cluster: Cluster, sdk: Flavour) -> None:
    ident = fresh_identity()
    m = sdk.model(ident)
    a, b, c = cluster.ws(0), cluster.ws(1), cluster.ws(0)
    m.subscribe(a.id, [1, 2])
    m.subscribe(b.id, 1)
    m.subscribe(c.id, 2)
    # Records 1 and 2 share a: once per socket, and the requester is left out and counted.
    receipt = m.publish([1, 2], {"n": 1}, Request(c.id), receipt=True)
    assert (receipt.sockets, receipt.omitted) == (2, 1), receipt
    assert receipt.gateways == 2
    expect(a, ident, {"n": 1})
    expect(b, ident, {"n": 1})
    assert m.publish(1, {"n": 2}) is None  # without receipt: nothing to return
    expect(a, ident, {"n": 2})
    expect(b, ident, {"n": 2})
    assert_only_marker(sdk, a, b, c)
