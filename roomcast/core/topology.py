"""The router's room topology: who is where, exactly, cluster-wide.

Owns socket -> (gateway, rooms) and room -> gateway -> sockets. It is the single point where
membership changes are serialized, so acked membership holds by construction: a change is applied
here before it is acknowledged, and the router routes every later broadcast from this state.
Every mutating call validates first and applies all-or-nothing, then *returns* the per-gateway
changes the shell must send down (``MemberUpdate``) — nothing here performs I/O.

Invariants (checked by the unit tests): each registered socket is in its own-id room, which it
cannot leave (a socket id belongs to the gateway that registered it until that gateway closes it
or is dropped: another gateway's claim is refused);
``rooms[r][g]`` is non-empty and equals the sockets of gateway ``g`` that are in ``r``; a
socket is in at most ``max_rooms_per_socket`` rooms besides its own.

Presence: a socket may carry a user identity (and JSON metadata). Per room, the topology counts
connections per user, so "first connection of a user in, last one out" is an O(1) edge, queued
as a :class:`Transition` for rooms whose presence is tracked (``tracked`` decides once per room
when it comes into being, or ``track()`` flags it); the shell drains them with
``take_transitions()``. Anonymous sockets cost nothing here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

from roomcast.core.errors import Conflict, Forbidden, NoSuchSocket, TooManyRooms
from roomcast.core.rooms import MAX_ROOMS_PER_SOCKET, validate_room

__all__ = ["GatewayChanges", "Topology", "Transition"]


@dataclasses.dataclass(slots=True)
class GatewayChanges:
    """Membership changes for one gateway's sockets: socket -> rooms joined / left."""

    joins: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    leaves: dict[str, list[str]] = dataclasses.field(default_factory=dict)


Changes = dict[str, GatewayChanges]


@dataclasses.dataclass(frozen=True, slots=True)
class Transition:
    """A user's first connection entered ``room`` (joined) or its last one left it."""

    room: str
    user: str
    joined: bool


@dataclasses.dataclass(slots=True)
class _Socket:
    gateway: str
    rooms: set[str]
    user: str = ""
    meta: bytes = b""
    context: bytes = b""  # opaque to the topology: what the gateway said about the requester


class Topology:
    def __init__(
        self,
        *,
        max_rooms_per_socket: int = MAX_ROOMS_PER_SOCKET,
        tracked: Callable[[str], bool] = lambda room: False,
    ) -> None:
        self.max_rooms_per_socket = max_rooms_per_socket
        self._sockets: dict[str, _Socket] = {}
        self._rooms: dict[str, dict[str, set[str]]] = {}
        self._gateways: dict[str, set[str]] = {}
        # Presence: room -> user -> connections, only for sockets that carry a user.
        self._presence: dict[str, dict[str, int]] = {}
        self._is_tracked = tracked
        self._flagged: set[str] = set()  # rooms the backend asked to track
        self._tracked: set[str] = set()  # existing rooms whose transitions are queued
        self._transitions: list[Transition] = []
        # Last metadata per user, for presence events (only users that set one), dropped with
        # the user's last connection: ``_users`` counts each user's connections cluster-wide.
        self._user_meta: dict[str, bytes] = {}
        self._users: dict[str, int] = {}

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

    def open_sockets(
        self,
        gateway: str,
        sockets: Iterable[str],
        users: Sequence[str] = (),
        contexts: Sequence[bytes] = (),
    ) -> None:
        """Register new connections of ``gateway``, each in its own-id room (``users``: their
        presence identities, ``contexts``: what action workers learn about them, in the same
        order; missing or empty means none).

        All-or-nothing: an id that another gateway holds raises :class:`Conflict` (a peer
        claiming someone else's socket would receive its private messages)."""
        sockets = list(sockets)
        for sid in sockets:
            entry = self._sockets.get(sid)
            if entry is not None and entry.gateway != gateway:
                raise Conflict(f"socket id {sid} belongs to another gateway")
        owned = self._gateways.setdefault(gateway, set())
        for i, sid in enumerate(sockets):
            if sid in self._sockets:
                self._forget(sid)
            user = users[i] if i < len(users) else ""
            context = contexts[i] if i < len(contexts) else b""
            self._sockets[sid] = _Socket(gateway, set(), user, context=context)
            self._user_up(user)
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

    def resync(
        self,
        gateway: str,
        sockets: Iterable[tuple[str, Sequence[str]]],
        identities: Mapping[str, tuple[str, bytes]] | None = None,
        contexts: Mapping[str, bytes] | None = None,
    ) -> int:
        """Apply a gateway's replayed state: sockets with their rooms (invalid rooms dropped)
        and, in ``identities``, the presence identity and metadata of those that have one (in
        ``contexts``, their requester contexts). Returns how many sockets were refused because
        another gateway holds their id."""
        identities = identities or {}
        contexts = contexts or {}
        refused = 0
        for sid, rooms in sockets:
            user, meta = identities.get(sid, ("", b""))
            owner = self._sockets.get(sid)
            if owner is not None and owner.gateway != gateway:
                refused += 1
                continue
            self.open_sockets(gateway, (sid,), (user,), (contexts.get(sid, b""),))
            entry = self._sockets[sid]
            entry.meta = meta
            if user and meta:
                self._user_meta[user] = meta
            for room in rooms:
                if len(entry.rooms) > self.max_rooms_per_socket:
                    break
                if room != sid and _valid(room):
                    self._add(sid, room)
        return refused

    # --- membership ----------------------------------------------------------------------------

    def change(
        self,
        sockets: Sequence[str],
        rooms: Sequence[str],
        *,
        leave: bool,
        reserve_own_rooms: bool = False,
    ) -> Changes:
        """join (or leave) every socket to (from) every room, all-or-nothing.

        ``reserve_own_rooms`` (a client's own join): a room that is another live socket's id
        is refused with :class:`Forbidden`, since it carries that socket's private messages. A
        backend may still join a socket to another's room (Sails allows it)."""
        for room in rooms:
            validate_room(room)
        entries = [self._entry(sid) for sid in sockets]
        if not leave and reserve_own_rooms:
            for room in rooms:
                if room in self._sockets and any(sid != room for sid in sockets):
                    raise Forbidden(f"room {room} is another socket's own room")
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

    # --- presence ------------------------------------------------------------------------------

    def set_presence(self, socket: str, user: str, meta: bytes) -> str:
        """Give a socket a presence identity ("" clears it); returns its gateway."""
        entry = self._entry(socket)
        if user != entry.user:
            for room in entry.rooms:
                self._count_out(entry, room)
            self._user_down(entry.user)
            entry.user = user
            self._user_up(user)
            for room in entry.rooms:
                self._count_in(entry, room)
        entry.meta = meta
        if user and meta:
            self._user_meta[user] = meta
        return entry.gateway

    def set_context(self, socket: str, context: bytes) -> None:
        """Replace what action workers learn about a socket's requester (its gateway's word)."""
        self._entry(socket).context = context

    def requester(self, socket: str) -> tuple[str, str, bytes] | None:
        """(gateway, user, context) of a socket, or None when it is not registered."""
        entry = self._sockets.get(socket)
        return None if entry is None else (entry.gateway, entry.user, entry.context)

    def track(self, room: str, enabled: bool) -> None:
        """Flag a room for presence transitions, whether or not it matches ``tracked``."""
        validate_room(room)
        if enabled:
            self._flagged.add(room)
            if room in self._rooms:
                self._tracked.add(room)
        else:
            self._flagged.discard(room)
            if not self._is_tracked(room):
                self._tracked.discard(room)

    def take_transitions(self) -> list[Transition]:
        transitions, self._transitions = self._transitions, []
        return transitions

    def presence(self, room: str) -> dict[str, tuple[int, bytes]]:
        """user -> (connections, metadata of one of them) in ``room``."""
        result: dict[str, tuple[int, bytes]] = {}
        counts = self._presence.get(room, {})
        for sid in self.members(room):
            entry = self._sockets[sid]
            if entry.user and entry.user not in result:
                result[entry.user] = (counts.get(entry.user, 0), entry.meta)
        return result

    def presence_stats(self, room: str) -> tuple[int, int]:
        """(connections, unique users) in ``room``; anonymous connections count as connections."""
        return self.count(room), len(self._presence.get(room, {}))

    def user_meta(self, user: str) -> bytes:
        """The metadata last given to any connection of ``user`` (b"" if none, or once the
        user has no connection left)."""
        return self._user_meta.get(user, b"")

    def receipt(
        self, rooms: Sequence[str], omit: Sequence[str], *, everyone: bool
    ) -> tuple[int, int]:
        """(sockets a publish reaches, members it leaves out by omit): exact, deduplicated."""
        if everyone:
            total = len(self._sockets)
            omitted = sum(1 for sid in set(omit) if sid in self._sockets)
            return total - omitted, omitted
        targets: set[str] = set()
        for room in rooms:
            for members in self._rooms.get(room, {}).values():
                targets |= members
        omitted = len(targets.intersection(omit))
        return len(targets) - omitted, omitted

    def _user_up(self, user: str) -> None:
        if user:
            self._users[user] = self._users.get(user, 0) + 1

    def _user_down(self, user: str) -> None:
        if not user:
            return
        n = self._users.get(user, 0) - 1
        if n > 0:
            self._users[user] = n
        else:
            self._users.pop(user, None)
            self._user_meta.pop(user, None)

    def _count_in(self, entry: _Socket, room: str) -> None:
        if not entry.user:
            return
        users = self._presence.setdefault(room, {})
        n = users.get(entry.user, 0) + 1
        users[entry.user] = n
        if n == 1 and room in self._tracked:
            self._transitions.append(Transition(room, entry.user, True))

    def _count_out(self, entry: _Socket, room: str) -> None:
        if not entry.user:
            return
        users = self._presence.get(room)
        if users is None:
            return
        n = users.get(entry.user, 0) - 1
        if n > 0:
            users[entry.user] = n
            return
        users.pop(entry.user, None)
        if not users:
            del self._presence[room]
        if room in self._tracked:
            self._transitions.append(Transition(room, entry.user, False))

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
        if room in entry.rooms:
            return  # a room listed twice (a resync) must not count the socket's user twice
        entry.rooms.add(room)
        by_gateway = self._rooms.get(room)
        if by_gateway is None:
            by_gateway = self._rooms[room] = {}
            if room != sid and (room in self._flagged or self._is_tracked(room)):
                self._tracked.add(room)
        by_gateway.setdefault(entry.gateway, set()).add(sid)
        self._count_in(entry, room)

    def _remove(self, sid: str, room: str) -> None:
        entry = self._sockets[sid]
        entry.rooms.discard(room)
        by_gateway = self._rooms.get(room)
        if by_gateway is None:
            return
        members = by_gateway.get(entry.gateway)
        if members is not None and sid in members:
            members.discard(sid)
            self._count_out(entry, room)
            if not members:
                del by_gateway[entry.gateway]
                if not by_gateway:
                    del self._rooms[room]
                    if room not in self._flagged:
                        self._tracked.discard(room)

    def _forget(self, sid: str) -> None:
        entry = self._sockets[sid]
        for room in list(entry.rooms):
            self._remove(sid, room)
        del self._sockets[sid]
        self._user_down(entry.user)
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
