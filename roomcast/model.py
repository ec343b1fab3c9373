"""Resourceful PubSub (Sails ``Model.subscribe`` / ``publish*``), on top of ``cluster.sockets``.

Room names and payloads are Sails v1's exactly: a record's room is
``sails_model_<identity>_<id>:<identity>``, the class room (watchers of new records)
``sails_model_create_<identity>``, and every notification is an event named ``<identity>``
with ``{"verb": "created"|"updated"|"destroyed"|"addedTo"|"removedFrom", ...}``. A given
``req`` (the requesting socket) is omitted from the notification.

Deviation from Sails' code (not its docs): ``publish_destroy`` empties the record's room, so
former subscribers stop getting messages for a record that no longer exists.
"""

from __future__ import annotations

from typing import Any, Protocol

from roomcast.requests import SocketLike, SocketsLike

__all__ = ["Model", "SocketsApi"]


class SocketsApi(Protocol):
    """The part of ``cluster.sockets`` a model needs (asyncio flavour)."""

    async def join(self, sockets: SocketsLike, rooms: str | list[str]) -> None: ...
    async def leave(self, sockets: SocketsLike, rooms: str | list[str]) -> None: ...
    async def add_room_members_to_rooms(self, src: SocketLike, dests: str | list[str]) -> None: ...
    async def remove_room_members_from_rooms(
        self, src: SocketLike, dests: str | list[str]
    ) -> None: ...
    async def broadcast(
        self,
        rooms: str | list[str],
        event: str = "message",
        data: Any = None,
        *,
        omit: SocketsLike | None = None,
        receipt: Any = False,
    ) -> Any: ...


def _ids(ids: Any) -> list[Any]:
    if isinstance(ids, (list, tuple, set, frozenset)):
        return list(ids)
    return [ids]


class Model:
    def __init__(self, sockets: SocketsApi, identity: str, *, primary_key: str = "id") -> None:
        if not identity or not isinstance(identity, str):
            raise ValueError("a model identity is a non-empty string")
        self.sockets = sockets
        self.identity = identity.lower()
        self.primary_key = primary_key

    # --- room names ------------------------------------------------------------------------

    def get_room_name(self, id: Any) -> str:
        return f"sails_model_{self.identity}_{id}:{self.identity}"

    @property
    def class_room(self) -> str:
        return f"sails_model_create_{self.identity}"

    def _rooms(self, ids: Any) -> list[str]:
        return [self.get_room_name(i) for i in _ids(ids)]

    # --- subscriptions ---------------------------------------------------------------------

    async def subscribe(self, req: SocketsLike, ids: Any) -> None:
        rooms = self._rooms(ids)
        if rooms:
            await self.sockets.join(req, rooms)

    async def unsubscribe(self, req: SocketsLike, ids: Any) -> None:
        rooms = self._rooms(ids)
        if rooms:
            await self.sockets.leave(req, rooms)

    async def watch(self, req: SocketsLike) -> None:
        await self.sockets.join(req, self.class_room)

    async def unwatch(self, req: SocketsLike) -> None:
        await self.sockets.leave(req, self.class_room)

    # --- notifications ---------------------------------------------------------------------

    async def publish(
        self, ids: Any, data: Any, req: SocketLike | None = None, *, receipt: bool = False
    ) -> Any:
        """Send ``data`` (no envelope) to the subscribers of each record; with ``receipt=True``
        return the :class:`roomcast.Receipt` (exact sockets reached and omitted)."""
        rooms = self._rooms(ids)
        if not rooms:
            return None
        if receipt:
            return await self.sockets.broadcast(rooms, self.identity, data, omit=req, receipt=True)
        await self.sockets.broadcast(rooms, self.identity, data, omit=req)
        return None

    async def publish_create(self, record: dict[str, Any], req: SocketLike | None = None) -> None:
        pk = record[self.primary_key]
        payload = {"verb": "created", "data": record, "id": pk}
        await self.sockets.broadcast(self.class_room, self.identity, payload, omit=req)
        # Introduce the new record to the watchers: they now get its updates too.
        await self.sockets.add_room_members_to_rooms(self.class_room, self.get_room_name(pk))

    async def publish_update(
        self,
        id: Any,
        changes: dict[str, Any],
        req: SocketLike | None = None,
        *,
        previous: dict[str, Any] | None = None,
    ) -> None:
        payload: dict[str, Any] = {"verb": "updated", "data": changes, "id": id}
        if previous is not None:
            payload["previous"] = previous
        await self.publish_raw(id, payload, req)

    async def publish_destroy(
        self,
        id: Any,
        req: SocketLike | None = None,
        *,
        previous: dict[str, Any] | None = None,
    ) -> None:
        payload: dict[str, Any] = {"verb": "destroyed", "id": id}
        if previous is not None:
            payload["previous"] = previous
        await self.publish_raw(id, payload, req)
        room = self.get_room_name(id)
        await self.sockets.remove_room_members_from_rooms(room, room)

    async def publish_add(
        self, id: Any, attribute: str, added_id: Any, req: SocketLike | None = None
    ) -> None:
        payload = {"id": id, "verb": "addedTo", "attribute": attribute, "addedId": added_id}
        await self.publish_raw(id, payload, req)

    async def publish_remove(
        self, id: Any, attribute: str, removed_id: Any, req: SocketLike | None = None
    ) -> None:
        payload = {"id": id, "verb": "removedFrom", "attribute": attribute, "removedId": removed_id}
        await self.publish_raw(id, payload, req)

    async def publish_raw(self, ids: Any, payload: Any, req: SocketLike | None) -> None:
        await self.sockets.broadcast(self._rooms(ids), self.identity, payload, omit=req)
