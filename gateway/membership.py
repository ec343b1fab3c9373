"""The gateway's mirror of its own sockets' rooms (pure).

Authoritative for this gateway's sockets: filled from the router's ``MemberUpdate`` stream (in
order with deliveries), replayed to a restarted router on resync. Also answers "who here gets
this delivery": the union of local members of the rooms, minus ``omit``, once per socket.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

__all__ = ["LocalRooms"]


class LocalRooms:
    def __init__(self) -> None:
        self._rooms: dict[str, set[str]] = {}
        self._sockets: dict[str, set[str]] = {}

    def add_socket(self, sid: str) -> None:
        if sid not in self._sockets:
            self._sockets[sid] = set()
            self.join(sid, (sid,))

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
            mine.add(room)
            self._rooms.setdefault(room, set()).add(sid)

    def leave(self, sid: str, rooms: Iterable[str]) -> None:
        mine = self._sockets.get(sid)
        if mine is None:
            return
        for room in rooms:
            if room == sid:
                continue
            mine.discard(room)
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
            members = self._rooms.get(room)
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
        return self._sockets.get(sid, set())

    def __len__(self) -> int:
        return len(self._sockets)
