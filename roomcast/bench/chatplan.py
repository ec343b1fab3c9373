"""Who publishes what to whom in ``roomcast bench chat``, and whether each client got exactly that.

Pure: no sockets, no clock. The bench, the load agents and the tests share one
:class:`ChatPlan`, so every figure is checked against the same arithmetic:

* client ``i`` (global index, ``0 <= i < sockets``) is in room ``i // room_size`` (named
  ``g<room>``); clients are spread over the gateways by ``i % gateways``, so a room of at least
  as many clients as there are gateways spans all of them;
* publish ``j`` of a phase (``0 <= j < count``, sequence number ``seq_start + j``) goes to room
  ``r = j % rooms``; in a client phase it is sent by publisher slot
  ``s = (j // rooms) % publishers_per_room`` of that room, its member ``(r + s) % room_size``
  (so that the publishers of consecutive rooms sit on different gateways), with ``echo`` off:
  that member does not get it. In an SDK phase it comes from outside the room and every member
  gets it.

:func:`verify` compares what one client received (sequence numbers in arrival order) with what
it should have: the lost, the duplicated, the misrouted (another room's, its own, or another
phase's) and the out-of-order (per publisher).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

__all__ = ["ChatPlan", "Verdict", "verify"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChatPlan:
    sockets: int
    room_size: int
    publishers_per_room: int = 1

    def __post_init__(self) -> None:
        if self.sockets < 1 or self.room_size < 2 or self.sockets % self.room_size:
            raise ValueError("sockets must be a positive multiple of a room size of at least 2")
        if not 1 <= self.publishers_per_room <= self.room_size:
            raise ValueError("publishers per room must be between 1 and the room size")

    @property
    def rooms(self) -> int:
        return self.sockets // self.room_size

    @staticmethod
    def room_name(room: int) -> str:
        return f"g{room}"

    def room_of(self, client: int) -> int:
        return client // self.room_size

    def publisher_of(self, j: int) -> int:
        """The client that sends publish ``j`` of a client phase."""
        room = j % self.rooms
        slot = (j // self.rooms) % self.publishers_per_room
        return room * self.room_size + (room + slot) % self.room_size

    def slot_of(self, client: int) -> int:
        """The publisher slot of ``client`` in its room (not a publisher: >= publishers)."""
        return (client % self.room_size - self.room_of(client)) % self.room_size

    def published_by(self, client: int, count: int) -> range:
        """The publishes ``j`` (of ``count``) that ``client`` sends in a client phase."""
        slot = self.slot_of(client)
        if slot >= self.publishers_per_room:
            return range(0)
        step = self.rooms * self.publishers_per_room
        return range(self.room_of(client) + self.rooms * slot, count, step)

    def expected(self, client: int, count: int, *, by_clients: bool) -> range | list[int]:
        """The publishes ``j`` (of ``count``) ``client`` must receive, in publish order."""
        every = range(self.room_of(client), count, self.rooms)
        if not by_clients or self.slot_of(client) >= self.publishers_per_room:
            return every
        own = set(self.published_by(client, count))
        return [j for j in every if j not in own]

    def deliveries(self, count: int, *, by_clients: bool) -> int:
        """Deliveries ``count`` publishes must make (all clients together)."""
        per_room = self.room_size - 1 if by_clients else self.room_size
        return count * per_room


@dataclasses.dataclass(frozen=True)
class Verdict:
    received: int = 0
    lost: int = 0
    duplicated: int = 0
    misrouted: int = 0
    order_violations: int = 0

    def __add__(self, other: Verdict) -> Verdict:
        return Verdict(*(a + b for a, b in zip(_fields(self), _fields(other), strict=True)))

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def _fields(v: Verdict) -> tuple[int, ...]:
    return (v.received, v.lost, v.duplicated, v.misrouted, v.order_violations)


def verify(
    plan: ChatPlan,
    client: int,
    seqs: Iterable[int],
    *,
    count: int,
    seq_start: int,
    by_clients: bool,
) -> Verdict:
    """What ``client`` received (sequence numbers, in arrival order) against the plan."""
    want = set(plan.expected(client, count, by_clients=by_clients))
    seen: set[int] = set()
    last: dict[int, int] = {}  # publisher slot -> last j received from it
    received = duplicated = misrouted = order = 0
    for seq in seqs:
        received += 1
        j = seq - seq_start
        if j not in want:
            misrouted += 1
            continue
        if j in seen:
            duplicated += 1
            continue
        seen.add(j)
        slot = (j // plan.rooms) % plan.publishers_per_room if by_clients else -1
        if last.get(slot, -1) > j:
            order += 1
        last[slot] = j
    return Verdict(received, len(want) - len(seen), duplicated, misrouted, order)
