"""Per-room message history for recovery after a reconnect (pure; time passed in).

Rooms matching the configured globs keep their last ``size`` messages for ``ttl_s`` seconds,
each with an offset (1, 2, ...) and the room's epoch. A client that saw ``(epoch, offset)`` can
ask for what came after: it gets the missed messages in order (``recovered``), or an explicit
"not recoverable" when the epoch changed (router restart or failover, or the room's history
expired and started over) or the messages it missed were already dropped — Centrifugo's
``recovered`` semantics. A client deduplicates by offset: recovery after a re-join may repeat
a message that also arrived live.

Memory is bounded three ways, because the router is the one process the cluster depends on and
any client allowed to publish to a history room grows it: bytes per room (``room_max_bytes``:
the room's oldest messages go first), bytes in total (``max_bytes``) and rooms (``max_rooms``):
past either of those the least recently written room loses its oldest messages (or, for the
room count, the whole room). A message larger than a room's bound is not kept at all. Every
eviction is counted by reason (``take_evictions``) for the shell's metric; clients whose
messages were evicted get ``recovered: false``, as for any gap.
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
from collections.abc import Sequence

__all__ = ["History", "Recovery"]


@dataclasses.dataclass(frozen=True, slots=True)
class Recovery:
    recovered: bool
    epoch: str
    offset: int  # the room's latest offset (0 when it has no history yet)
    messages: tuple[tuple[int, str, bytes], ...]  # (offset, event, data JSON)


# What one kept message costs besides its event and data (tuple, deque slot, offset, time):
# counted so that a flood of tiny messages is bounded too.
ENTRY_OVERHEAD_BYTES = 160

# Eviction reasons (the metric's label values).
ROOM_BYTES, TOTAL_BYTES, ROOMS, TOO_LARGE = "room_bytes", "total_bytes", "rooms", "too_large"


@dataclasses.dataclass(slots=True)
class _Room:
    epoch: str
    last: int = 0
    size_bytes: int = 0
    entries: collections.deque[tuple[int, str, bytes, float]] = dataclasses.field(
        default_factory=collections.deque
    )


def entry_bytes(event: str, data: bytes) -> int:
    return len(event) + len(data) + ENTRY_OVERHEAD_BYTES


class History:
    def __init__(
        self,
        *,
        patterns: Sequence[str],
        size: int,
        ttl_s: float,
        epoch: str,
        room_max_bytes: int = 1024 * 1024,
        max_bytes: int = 64 * 1024 * 1024,
        max_rooms: int = 10_000,
    ) -> None:
        self.patterns = tuple(patterns)
        self.size = size
        self.ttl_s = ttl_s
        self.epoch = epoch  # the router's: a restart or failover makes every position stale
        self.room_max_bytes = room_max_bytes
        self.max_bytes = max_bytes
        self.max_rooms = max_rooms
        # Least recently written first: dicts keep insertion order, and a write re-inserts.
        self._rooms: dict[str, _Room] = {}
        self._bytes = 0
        self._evicted: collections.Counter[str] = collections.Counter()
        self._generation = 0
        self._enabled: dict[str, bool] = {}

    def enabled(self, room: str) -> bool:
        if not self.patterns or self.size <= 0:
            return False
        cached = self._enabled.get(room)
        if cached is None:
            if len(self._enabled) > 100_000:
                self._enabled.clear()  # bounded memo, not a leak
            cached = any(fnmatch.fnmatchcase(room, p) for p in self.patterns)
            self._enabled[room] = cached
        return cached

    def append(
        self, rooms: Sequence[str], event: str, data: bytes, now: float
    ) -> list[tuple[str, str, int]]:
        """Record a publish in every history room among ``rooms``: (room, epoch, offset)."""
        positions = []
        cost = entry_bytes(event, data)
        for name in rooms:
            if not self.enabled(name):
                continue
            room = self._room(name, now)
            room.last += 1
            positions.append((name, room.epoch, room.last))
            if cost > self.room_max_bytes:
                # Never kept: a client that missed it gets recovered: false (a gap).
                self._evicted[TOO_LARGE] += 1
                self._drop_oldest(name, room, len(room.entries), ROOM_BYTES)
                continue
            room.entries.append((room.last, event, data, now))
            room.size_bytes += cost
            self._bytes += cost
            if len(room.entries) > self.size:
                self._drop_oldest(name, room, 1, None)
            while room.size_bytes > self.room_max_bytes:
                self._drop_oldest(name, room, 1, ROOM_BYTES)
        self._enforce_total()
        return positions

    def take_evictions(self) -> dict[str, int]:
        """Messages (or, for ``rooms``, rooms) evicted since the last call, by reason."""
        evicted, self._evicted = dict(self._evicted), collections.Counter()
        return evicted

    def bytes(self) -> int:
        return self._bytes

    def _drop_oldest(self, name: str, room: _Room, n: int, reason: str | None) -> None:
        """Drop a room's ``n`` oldest messages, counted under ``reason`` (None: its size)."""
        for _ in range(n):
            if not room.entries:
                break
            _o, event, data, _t = room.entries.popleft()
            cost = entry_bytes(event, data)
            room.size_bytes -= cost
            self._bytes -= cost
            if reason is not None:
                self._evicted[reason] += 1

    def _enforce_total(self) -> None:
        while self._bytes > self.max_bytes and self._rooms:
            name = next(iter(self._rooms))  # the least recently written room
            room = self._rooms[name]
            self._drop_oldest(name, room, 1, TOTAL_BYTES)
            if not room.entries:
                del self._rooms[name]

    def since(self, name: str, epoch: str, offset: int, now: float) -> Recovery:
        room = self._rooms.get(name)
        if room is not None:
            self._prune(name, room, now)
            room = self._rooms.get(name)
        if room is None:
            return Recovery(False, "", 0, ())
        if epoch == "" and offset == 0:
            # The client joined while the room had no history: it missed everything since the
            # room's first message, which is recoverable if nothing was dropped yet.
            epoch = room.epoch
        if epoch != room.epoch or offset > room.last:
            return Recovery(False, room.epoch, room.last, ())
        oldest = room.entries[0][0] if room.entries else room.last + 1
        if offset + 1 < oldest:
            return Recovery(False, room.epoch, room.last, ())  # the gap was already dropped
        missed = tuple((o, e, d) for o, e, d, _t in room.entries if o > offset)
        return Recovery(True, room.epoch, room.last, missed)

    def rooms(self) -> int:
        return len(self._rooms)

    def _room(self, name: str, now: float) -> _Room:
        room = self._rooms.get(name)
        if room is not None:
            self._prune(name, room, now)
            room = self._rooms.get(name)
        if room is None:
            while len(self._rooms) >= max(self.max_rooms, 1):
                oldest = next(iter(self._rooms))
                room_out = self._rooms[oldest]
                self._drop_oldest(oldest, room_out, len(room_out.entries), None)
                del self._rooms[oldest]
                self._evicted[ROOMS] += 1
            self._generation += 1
            room = self._rooms[name] = _Room(f"{self.epoch}.{self._generation}")
        else:
            # Most recently written last: the total bounds evict from the other end.
            del self._rooms[name]
            self._rooms[name] = room
        return room

    def _prune(self, name: str, room: _Room, now: float) -> None:
        entries = room.entries
        while entries and now - entries[0][3] > self.ttl_s:
            self._drop_oldest(name, room, 1, None)
        if not entries:
            # Nothing left to recover: forget the room; its next message starts a new epoch.
            del self._rooms[name]

    def sweep(self, now: float) -> None:
        """Drop expired messages and empty rooms (called from a timer, bounded memory)."""
        for name, room in list(self._rooms.items()):
            self._prune(name, room, now)
