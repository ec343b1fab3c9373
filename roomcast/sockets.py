"""``cluster.sockets``: the ``sails.sockets`` API (:class:`Sockets`) and what a publish returns.

Owns the mapping of each ``sails.sockets`` operation to one command on a
:class:`~roomcast.link.Link`: argument checks (room names, socket ids, events, JSON payloads)
made before anything is sent, so a bad argument raises without a round trip or a connection,
and the reading of each reply into a result (:class:`Receipt` for a publish that asks for one).
:func:`encode_json` turns a caller's payload into the JSON bytes a command carries, here and for
the action requests and replies of :mod:`roomcast.cluster` and :mod:`roomcast.worker`.

It never touches a socket or the event loop: sending, ordering, timeouts and failover are the
link's. Nor does it check what only the router knows (unknown socket ids, room limits): the
router's error replies come back as the typed exceptions of :mod:`roomcast.core.errors`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, overload

from roomcast.core import rooms as _rooms
from roomcast.core import wire
from roomcast.core.errors import BadRequest
from roomcast.core.limits import DEFAULT_MAX_PUBLISH_BYTES, check_publish_size
from roomcast.requests import SocketLike, SocketsLike, get_id, socket_ids

if TYPE_CHECKING:
    from roomcast.link import Link

__all__ = ["Receipt", "Rooms", "Sockets", "encode_json", "sails_event_data"]

Rooms: TypeAlias = str | list[str] | tuple[str, ...]


def encode_json(value: object, what: str = "data") -> bytes:
    """Compact UTF-8 JSON, encoded once by the publisher; non-JSON values raise BadRequest."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")  # lone surrogates fail here (UnicodeEncodeError)
    except (TypeError, ValueError) as exc:
        # No repr of the value: it is the caller's payload.
        raise BadRequest(f"{what} is not json-serializable ({type(exc).__name__})") from None


def _room_list(value: object) -> list[str]:
    # rooms.as_room_list takes lists only; a tuple of names is just as clear in Python.
    return _rooms.as_room_list(list(value) if isinstance(value, tuple) else value)


def sails_event_data(event: object, data: object) -> tuple[object, object]:
    """Sails' optional ``eventName``: a second argument that is not a string is the data,
    sent as event ``"message"`` (with a third argument too, it is a mistake: 400). ``None``
    is not taken for data: as an event it is refused (400) like any other bad event."""
    if isinstance(event, str) or event is None:
        return event, data
    if data is not None:
        raise BadRequest("event must be a string (leave it out to send data as 'message')")
    return "message", event


def _event(event: object) -> str:
    if not isinstance(event, str) or not event:
        raise BadRequest("event must be a non-empty string")
    return event


class Sockets:
    """``sails.sockets`` for the whole cluster (architecture §5), as ``cluster.sockets``.

    Arguments are checked before anything is sent: a bad room name raises
    :class:`~roomcast.core.errors.InvalidRoom` and a bad socket argument
    :class:`~roomcast.core.errors.BadRequest` without a round trip. Membership calls return once
    the router applied the change, so a broadcast accepted after that reaches the socket.
    """

    def __init__(self, link: Link, *, max_publish_bytes: int = DEFAULT_MAX_PUBLISH_BYTES) -> None:
        self._link = link
        # Publishes over it raise PayloadTooLarge before anything is sent (0: the router decides).
        self.max_publish_bytes = max_publish_bytes

    async def join(self, sockets: SocketsLike, rooms: Rooms) -> None:
        """Every socket in ``sockets`` joins every room in ``rooms`` (an empty list: no-op)."""
        await self._membership(sockets, rooms, leave=False)

    async def leave(self, sockets: SocketsLike, rooms: Rooms) -> None:
        """Every socket in ``sockets`` leaves every room in ``rooms``."""
        await self._membership(sockets, rooms, leave=True)

    async def leave_all(self, room: str) -> None:
        """Every member of ``room`` leaves ``room`` and every other room but its own id room."""
        link = self._link
        await link.call(wire.LeaveAll(ref=link.next_ref(), room=_rooms.validate_room(room)))

    async def add_room_members_to_rooms(self, src: SocketLike, dests: Rooms) -> None:
        """Every current member of ``src`` (a room, a socket id or a request) joins ``dests``."""
        await self._copy(src, dests, remove=False)

    async def remove_room_members_from_rooms(self, src: SocketLike, dests: Rooms) -> None:
        """Every current member of ``src`` leaves each of ``dests``."""
        await self._copy(src, dests, remove=True)

    @overload
    async def broadcast(
        self,
        rooms: Rooms,
        event: object = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: Literal[False] = ...,
        confirm: Literal[False] = ...,
        confirm_timeout: float = ...,
    ) -> int: ...

    @overload
    async def broadcast(
        self,
        rooms: Rooms,
        event: object = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: Literal[True],
        confirm: bool = ...,
        confirm_timeout: float = ...,
    ) -> Receipt: ...

    @overload
    async def broadcast(
        self,
        rooms: Rooms,
        event: object = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: bool = ...,
        confirm: Literal[True],
        confirm_timeout: float = ...,
    ) -> Receipt: ...

    @overload
    async def broadcast(
        self,
        rooms: Rooms,
        event: object = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: bool = ...,
        confirm: bool = ...,
        confirm_timeout: float = ...,
    ) -> int | Receipt: ...

    async def broadcast(
        self,
        rooms: Rooms,
        event: object = "message",
        data: object = None,
        *,
        omit: SocketsLike | None = None,
        receipt: bool = False,
        confirm: bool = False,
        confirm_timeout: float = 5.0,
    ) -> int | Receipt:
        """Send ``event`` once to every member of any of ``rooms`` except ``omit``.

        As in Sails, the event may be left out: ``broadcast(rooms, data)`` with a second
        argument that is not a string sends ``data`` as event ``"message"`` (``blast(data)``
        the same).

        Returns how many gateways the router handed the message to; with ``receipt=True`` a
        :class:`Receipt` (exact socket counts). ``confirm=True`` (a receipt, whatever
        ``receipt`` says) returns only once every gateway confirmed it queued the message (or
        ``confirm_timeout`` passed), with the confirmed counts in the receipt.
        """
        return await self.publish(rooms, event, data, omit, receipt, confirm, confirm_timeout)

    @overload
    async def blast(
        self,
        event: object = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: Literal[False] = ...,
        confirm: Literal[False] = ...,
        confirm_timeout: float = ...,
    ) -> int: ...

    @overload
    async def blast(
        self,
        event: object = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: Literal[True],
        confirm: bool = ...,
        confirm_timeout: float = ...,
    ) -> Receipt: ...

    @overload
    async def blast(
        self,
        event: object = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: bool = ...,
        confirm: Literal[True],
        confirm_timeout: float = ...,
    ) -> Receipt: ...

    @overload
    async def blast(
        self,
        event: object = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: bool = ...,
        confirm: bool = ...,
        confirm_timeout: float = ...,
    ) -> int | Receipt: ...

    async def blast(
        self,
        event: object = "message",
        data: object = None,
        *,
        omit: SocketsLike | None = None,
        receipt: bool = False,
        confirm: bool = False,
        confirm_timeout: float = 5.0,
    ) -> int | Receipt:
        """Send ``event`` to every connected socket in the cluster except ``omit``."""
        return await self.publish(None, event, data, omit, receipt, confirm, confirm_timeout)

    async def publish(
        self,
        rooms: Rooms | None,
        event: object,
        data: object,
        omit: SocketsLike | None,
        receipt: bool,
        confirm: bool,
        confirm_timeout: float,
    ) -> int | Receipt:
        """What broadcast (``rooms``) and blast (``None``) share; one signature whatever the
        receipt flags, so SyncSockets can forward to it without the overloads."""
        event, data = sails_event_data(event, data)
        event = _event(event)
        payload = encode_json(data)
        check_publish_size(event, payload, self.max_publish_bytes)
        msg = wire.Publish(
            ref=self._link.next_ref(),
            rooms=() if rooms is None else tuple(_room_list(rooms)),
            everyone=rooms is None,
            event=event,
            data=payload,
            omit=_omit(omit),
            **_receipt_fields(receipt, confirm, confirm_timeout),
        )
        reply = await self._link.call(msg, wait=confirm_timeout if confirm else 0.0)
        return _publish_result(reply, receipt, confirm)

    async def presence(self, room: str) -> dict[str, dict[str, Any]]:
        """Users in ``room``: ``{user: {"connections": n, "meta": ...}}`` (exact, cluster-wide)."""
        reply = await self._query(wire.QueryKind.PRESENCE, _rooms.validate_room(room))
        result: dict[str, dict[str, Any]] = json.loads(reply.body or b"{}")
        return result

    async def presence_stats(self, room: str) -> dict[str, int]:
        """``{"connections": n, "users": m}`` for ``room`` (anonymous sockets are connections)."""
        reply = await self._query(wire.QueryKind.PRESENCE_STATS, _rooms.validate_room(room))
        result: dict[str, int] = json.loads(reply.body or b"{}")
        return result

    async def set_presence(self, socket: SocketLike, user: str | None, meta: object = None) -> None:
        """Give a socket a presence identity (``None`` clears it) and small JSON metadata."""
        if user is not None and (not isinstance(user, str) or not user):
            raise BadRequest("user must be a non-empty string or None")
        link = self._link
        msg = wire.SetPresence(
            ref=link.next_ref(),
            socket=get_id(socket),
            user=user or "",
            meta=encode_json(meta, "meta") if meta is not None else b"",
        )
        await link.call(msg)

    async def track_presence(self, room: str, enabled: bool = True) -> None:
        """Push presence join/leave events to ``room``'s members (or stop)."""
        link = self._link
        room = _rooms.validate_room(room)
        await link.call(wire.TrackPresence(ref=link.next_ref(), room=room, enabled=enabled))

    async def count(self, room: str) -> int:
        """How many sockets are in ``room``, cluster-wide (exact)."""
        return (await self._query(wire.QueryKind.COUNT, _rooms.validate_room(room))).count

    async def members(self, room: str) -> list[str]:
        """The ids of the sockets in ``room``."""
        return list((await self._query(wire.QueryKind.MEMBERS, _rooms.validate_room(room))).names)

    async def rooms(self, socket: SocketLike) -> list[str]:
        """The rooms ``socket`` is in, its own id room included."""
        return list((await self._query(wire.QueryKind.ROOMS, get_id(socket))).names)

    def get_id(self, req: SocketLike) -> str:
        """The socket id of a request (Sails' ``sails.sockets.getId``)."""
        return get_id(req)

    async def _membership(self, sockets: SocketsLike, rooms: Rooms, *, leave: bool) -> None:
        ids = socket_ids(sockets)
        names = _room_list(rooms)
        if not ids:
            return
        link = self._link
        msg = wire.Membership(
            ref=link.next_ref(), leave=leave, sockets=tuple(ids), rooms=tuple(names)
        )
        await link.call(msg)

    async def _copy(self, src: SocketLike, dests: Rooms, *, remove: bool) -> None:
        source = _rooms.validate_room(get_id(src))
        names = _room_list(dests)
        link = self._link
        msg = wire.CopyMembers(
            ref=link.next_ref(), remove=remove, source=source, rooms=tuple(names)
        )
        await link.call(msg)

    async def _query(self, kind: wire.QueryKind, target: str) -> wire.Reply:
        link = self._link
        return await link.call(wire.Query(ref=link.next_ref(), kind=kind, target=target))


@dataclasses.dataclass(frozen=True, slots=True)
class Receipt:
    """What a publish reached: ``sockets`` addressed (each once, ``omitted`` left out) on
    ``gateways``; with confirmation, ``confirmed`` sockets the gateways queued it for and
    whether every gateway answered in time (``complete``)."""

    gateways: int
    sockets: int
    omitted: int
    confirmed: int | None = None
    complete: bool | None = None


def _receipt_fields(receipt: bool, confirm: bool, timeout: float) -> dict[str, Any]:
    if not (receipt or confirm):
        return {}
    if confirm and not 0 < timeout <= 60:
        raise BadRequest("confirm_timeout must be within (0, 60] seconds")
    return {"receipt": True, "confirm": confirm, "confirm_timeout_ms": int(timeout * 1000)}


def _publish_result(reply: wire.Reply, receipt: bool, confirm: bool) -> int | Receipt:
    if not (receipt or confirm):
        return reply.gateways
    return Receipt(
        gateways=reply.gateways,
        sockets=reply.sockets,
        omitted=reply.omitted,
        confirmed=reply.confirmed if confirm else None,
        complete=reply.complete if confirm else None,
    )


def _omit(omit: SocketsLike | None) -> tuple[str, ...]:
    return () if omit is None else tuple(socket_ids(omit))
