"""The gateway's mirror of its own sockets' rooms (pure).

Authoritative for this gateway's sockets: filled from the router's ``MemberUpdate`` stream (in
order with deliveries), replayed to a restarted router on resync. Also answers "who here gets
this delivery": the union of local members of the rooms, minus ``omit``, once per socket.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

__all__ = ["LocalRooms"]


# The rooms of a socket that joined nothing yet: shared, so an idle connection costs no set.
_NONE: frozenset[str] = frozenset()


class LocalRooms:
    """Explicit joins only: each socket's own-id room is implicit (no set per idle socket)."""

    def __init__(self) -> None:
        self._rooms: dict[str, set[str]] = {}
        self._sockets: dict[str, set[str] | frozenset[str]] = {}

    def add_socket(self, sid: str) -> None:
        if sid not in self._sockets:
            self._sockets[sid] = _NONE

    def remove_socket(self, sid: str) -> None:
        rooms = self._sockets.pop(sid, None)
        if rooms is None:
            return
        for room in rooms:
            members = self._rooms.get(room)
            if members is not None:
                members.discard(sid)
                if not members:
                    del self._rooms[room]

    def join(self, sid: str, rooms: Iterable[str]) -> None:
        mine = self._sockets.get(sid)
        if mine is None:  # closed meanwhile: the router hears of the close separately
            return
        for room in rooms:
            if room == sid:
                continue  # the own-id room is implicit
            if mine is _NONE:
                mine = self._sockets[sid] = set()
            mine.add(room)  # type: ignore[union-attr]
            self._rooms.setdefault(room, set()).add(sid)

    def leave(self, sid: str, rooms: Iterable[str]) -> None:
        mine = self._sockets.get(sid)
        if not mine:
            return
        for room in rooms:
            if room == sid:
                continue
            mine.discard(room)  # type: ignore[union-attr]
            members = self._rooms.get(room)
            if members is not None:
                members.discard(sid)
                if not members:
                    del self._rooms[room]

    def targets(self, rooms: Iterable[str], omit: Iterable[str] = ()) -> set[str] | frozenset[str]:
        """Local sockets in any of ``rooms``, each once, without ``omit``."""
        result: set[str] | frozenset[str] = frozenset()
        first = True
        for room in rooms:
            members: set[str] | frozenset[str] | None = self._rooms.get(room)
            if room in self._sockets:  # a local socket's own-id room
                members = members | {room} if members else frozenset((room,))
            if not members:
                continue
            if first:
                result, first = members, False
            else:
                result = result | members
        if omit:
            result = result - set(omit)
        return result

    def sockets(self) -> Iterator[str]:
        return iter(self._sockets)

    def rooms_of(self, sid: str) -> set[str]:
        """The socket's rooms, its own-id room included (a copy)."""
        mine = self._sockets.get(sid)
        if mine is None:
            return set()
        return {sid, *mine}

    def __len__(self) -> int:
        return len(self._sockets)
