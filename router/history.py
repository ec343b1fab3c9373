"""Per-room message history for recovery after a reconnect (pure; time passed in).

Rooms matching the configured globs keep their last ``size`` messages for ``ttl_s`` seconds,
each with an offset (1, 2, ...) and the room's epoch. A client that saw ``(epoch, offset)`` can
ask for what came after: it gets the missed messages in order (``recovered``), or an explicit
"not recoverable" when the epoch changed (router restart or failover, or the room's history
expired and started over) or the messages it missed were already dropped — Centrifugo's
``recovered`` semantics. A client deduplicates by offset: recovery after a re-join may repeat
a message that also arrived live.
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


@dataclasses.dataclass(slots=True)
class _Room:
    epoch: str
    last: int = 0
    entries: collections.deque[tuple[int, str, bytes, float]] = dataclasses.field(
        default_factory=collections.deque
    )


class History:
    def __init__(self, *, patterns: Sequence[str], size: int, ttl_s: float, epoch: str) -> None:
        self.patterns = tuple(patterns)
        self.size = size
        self.ttl_s = ttl_s
        self.epoch = epoch  # the router's: a restart or failover makes every position stale
        self._rooms: dict[str, _Room] = {}
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
        for name in rooms:
            if not self.enabled(name):
                continue
            room = self._room(name, now)
            room.last += 1
            room.entries.append((room.last, event, data, now))
            if len(room.entries) > self.size:
                room.entries.popleft()
            positions.append((name, room.epoch, room.last))
        return positions

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
            self._generation += 1
            room = self._rooms[name] = _Room(f"{self.epoch}.{self._generation}")
        return room

    def _prune(self, name: str, room: _Room, now: float) -> None:
        entries = room.entries
        while entries and now - entries[0][3] > self.ttl_s:
            entries.popleft()
        if not entries:
            # Nothing left to recover: forget the room; its next message starts a new epoch.
            del self._rooms[name]

    def sweep(self, now: float) -> None:
        """Drop expired messages and empty rooms (called from a timer, bounded memory)."""
        for name, room in list(self._rooms.items()):
            self._prune(name, room, now)
