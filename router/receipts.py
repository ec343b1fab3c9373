"""Publish confirmations in flight (pure): which gateways still have to say "queued".

A publish with ``confirm`` gets a router-wide id carried in its ``Deliver``; each gateway
answers ``Delivered{confirm, sockets}`` once it queued the message for its local sockets. The
reply goes out when the last gateway answered, or at the timeout with ``complete`` false. A
gateway that expires meanwhile simply never confirms.
"""

from __future__ import annotations

import dataclasses
import itertools

from roomcast.core import wire

__all__ = ["Confirmations", "Pending"]


@dataclasses.dataclass(slots=True)
class Pending:
    identity: bytes
    gateway: str | None  # the asker's gateway, when a gateway asked
    reply: wire.Reply  # gateways/sockets/omitted filled in; confirmed accumulates
    waiting: set[str]
    confirmed: int = 0


class Confirmations:
    def __init__(self) -> None:
        self._pending: dict[int, Pending] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._pending)

    def open(self, pending: Pending) -> int:
        confirm = next(self._ids)
        self._pending[confirm] = pending
        return confirm

    def delivered(self, confirm: int, gateway: str, sockets: int) -> Pending | None:
        """Record a gateway's confirmation; the pending entry once every gateway confirmed."""
        pending = self._pending.get(confirm)
        if pending is None or gateway not in pending.waiting:
            return None
        pending.waiting.discard(gateway)
        pending.confirmed += sockets
        if pending.waiting:
            return None
        return self._pending.pop(confirm)

    def expire(self, confirm: int) -> Pending | None:
        """The entry still waiting at its timeout (None if it completed)."""
        return self._pending.pop(confirm, None)

    @staticmethod
    def answer(pending: Pending, *, complete: bool) -> wire.Reply:
        return dataclasses.replace(pending.reply, confirmed=pending.confirmed, complete=complete)
