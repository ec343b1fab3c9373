"""The router's room topology: who is where, exactly, cluster-wide.

Owns socket -> (gateway, rooms) and room -> gateway -> sockets. It is the single point where
membership changes are serialized, so acked membership holds by construction: a change is applied
here before it is acknowledged, and the router routes every later broadcast from this state.
Every mutating call validates first and applies all-or-nothing, then *returns* the per-gateway
changes the shell must send down (``MemberUpdate``) — nothing here performs I/O.

Invariants (checked by the unit tests): each registered socket is in its own-id room, which it
cannot leave; ``rooms[r][g]`` is non-empty and equals the sockets of gateway ``g`` that are in
``r``; a socket is in at most ``max_rooms_per_socket`` rooms besides its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from roomcast.core.errors import NoSuchSocket, TooManyRooms
from roomcast.core.rooms import MAX_ROOMS_PER_SOCKET, validate_room

__all__ = ["GatewayChanges", "Topology"]


@dataclasses.dataclass(slots=True)
class GatewayChanges:
    """Membership changes for one gateway's sockets: socket -> rooms joined / left."""

    joins: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    leaves: dict[str, list[str]] = dataclasses.field(default_factory=dict)


Changes = dict[str, GatewayChanges]


@dataclasses.dataclass(slots=True)
class _Socket:
    gateway: str
    rooms: set[str]


class Topology:
    def __init__(self, *, max_rooms_per_socket: int = MAX_ROOMS_PER_SOCKET) -> None:
        self.max_rooms_per_socket = max_rooms_per_socket
        self._sockets: dict[str, _Socket] = {}
        self._rooms: dict[str, dict[str, set[str]]] = {}
        self._gateways: dict[str, set[str]] = {}

    # --- gateways and sockets ---------------------------------------------------------------

    def add_gateway(self, gateway: str) -> int:
        """(Re)register a gateway with no sockets; returns how many sockets it had before."""
        dropped = self.drop_gateway(gateway)
        self._gateways[gateway] = set()
        return dropped

    def drop_gateway(self, gateway: str) -> int:
        """Forget a gateway and all its sockets; returns how many sockets it had."""
        sockets = self._gateways.pop(gateway, None)
        if sockets is None:
            return 0
        for sid in list(sockets):
            self._forget(sid)
        return len(sockets)

    def has_gateway(self, gateway: str) -> bool:
        return gateway in self._gateways

    def gateways(self) -> list[str]:
        return list(self._gateways)

    def open_sockets(self, gateway: str, sockets: Iterable[str]) -> None:
        """Register new connections of ``gateway``, each in its own-id room."""
        owned = self._gateways.setdefault(gateway, set())
        for sid in sockets:
            if sid in self._sockets:
                self._forget(sid)
            self._sockets[sid] = _Socket(gateway, set())
            owned.add(sid)
            self._add(sid, sid)

    def close_sockets(self, gateway: str, sockets: Iterable[str]) -> int:
        """Forget connections; ids owned by another gateway are ignored. Returns how many."""
        closed = 0
        for sid in sockets:
            entry = self._sockets.get(sid)
            if entry is not None and entry.gateway == gateway:
                self._forget(sid)
                closed += 1
        return closed

    def resync(self, gateway: str, sockets: Iterable[tuple[str, Sequence[str]]]) -> None:
        """Apply a gateway's replayed state: sockets with their rooms (invalid rooms dropped)."""
        for sid, rooms in sockets:
            self.open_sockets(gateway, (sid,))
            entry = self._sockets[sid]
            for room in rooms:
                if len(entry.rooms) > self.max_rooms_per_socket:
                    break
                if room != sid and _valid(room):
                    self._add(sid, room)

    # --- membership ----------------------------------------------------------------------------

    def change(self, sockets: Sequence[str], rooms: Sequence[str], *, leave: bool) -> Changes:
        """join (or leave) every socket to (from) every room, all-or-nothing."""
        for room in rooms:
            validate_room(room)
        entries = [self._entry(sid) for sid in sockets]
        if not leave:
            for sid, entry in zip(sockets, entries, strict=True):
                new = len(set(rooms) - entry.rooms - {sid})
                if new and len(entry.rooms) - 1 + new > self.max_rooms_per_socket:
                    raise TooManyRooms(limit=self.max_rooms_per_socket)
        changes: Changes = {}
        for sid, entry in zip(sockets, entries, strict=True):
            for room in rooms:
                if room == sid:
                    continue
                if leave:
                    if room in entry.rooms:
                        self._remove(sid, room)
                        _note(changes, entry.gateway, sid, room, leave=True)
                elif room not in entry.rooms:
                    self._add(sid, room)
                    _note(changes, entry.gateway, sid, room, leave=False)
        return changes

    def leave_all(self, room: str) -> Changes:
        """Every member of ``room`` leaves every room except its own-id room."""
        validate_room(room)
        changes: Changes = {}
        for sid in self.members(room):
            entry = self._sockets[sid]
            for r in list(entry.rooms):
                if r != sid:
                    self._remove(sid, r)
                    _note(changes, entry.gateway, sid, r, leave=True)
        return changes

    def copy_members(self, source: str, rooms: Sequence[str], *, remove: bool) -> Changes:
        """Every current member of ``source`` joins (or leaves) each of ``rooms``."""
        validate_room(source)
        return self.change(self.members(source), rooms, leave=remove)

    # --- routing and introspection ------------------------------------------------------------

    def route(self, rooms: Iterable[str]) -> set[str]:
        """Gateways that hold at least one member of any of ``rooms``."""
        gateways: set[str] = set()
        for room in rooms:
            by_gateway = self._rooms.get(room)
            if by_gateway:
                gateways.update(by_gateway)
        return gateways

    def count(self, room: str) -> int:
        return sum(len(s) for s in self._rooms.get(room, {}).values())

    def members(self, room: str) -> list[str]:
        return [sid for s in self._rooms.get(room, {}).values() for sid in s]

    def rooms_of(self, socket: str) -> list[str]:
        return sorted(self._entry(socket).rooms)

    def gateway_of(self, socket: str) -> str | None:
        entry = self._sockets.get(socket)
        return entry.gateway if entry else None

    def stats(self) -> tuple[int, int, int]:
        """(gateways, sockets, rooms) for gauges."""
        return len(self._gateways), len(self._sockets), len(self._rooms)

    def memberships(self) -> int:
        """Total (socket, room) pairs, own-id rooms included."""
        return sum(len(e.rooms) for e in self._sockets.values())

    # --- internals -----------------------------------------------------------------------------

    def _entry(self, socket: str) -> _Socket:
        entry = self._sockets.get(socket)
        if entry is None:
            raise NoSuchSocket(socket=socket)
        return entry

    def _add(self, sid: str, room: str) -> None:
        entry = self._sockets[sid]
        entry.rooms.add(room)
        self._rooms.setdefault(room, {}).setdefault(entry.gateway, set()).add(sid)

    def _remove(self, sid: str, room: str) -> None:
        entry = self._sockets[sid]
        entry.rooms.discard(room)
        by_gateway = self._rooms.get(room)
        if by_gateway is None:
            return
        members = by_gateway.get(entry.gateway)
        if members is not None:
            members.discard(sid)
            if not members:
                del by_gateway[entry.gateway]
                if not by_gateway:
                    del self._rooms[room]

    def _forget(self, sid: str) -> None:
        entry = self._sockets[sid]
        for room in list(entry.rooms):
            self._remove(sid, room)
        del self._sockets[sid]
        owned = self._gateways.get(entry.gateway)
        if owned is not None:
            owned.discard(sid)


def _note(changes: Changes, gateway: str, sid: str, room: str, *, leave: bool) -> None:
    per = changes.get(gateway)
    if per is None:
        per = changes[gateway] = GatewayChanges()
    (per.leaves if leave else per.joins).setdefault(sid, []).append(room)


def _valid(room: str) -> bool:
    try:
        validate_room(room)
    except Exception:
        return False
    return True
