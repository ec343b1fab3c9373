"""Presence join/leave events, coalesced (pure).

The topology reports a :class:`~roomcast.core.topology.Transition` when a user's first
connection enters a tracked room or its last one leaves. Between two flushes the buffer keeps
only each user's net change per room (a tab reload — leave then join — says nothing), so a mass
disconnect becomes one event per room per interval, not one per user per member.

Event (name ``presence``, to the room's members)::

    {"room": "chat:1", "joined": [{"user": "ada", "meta": {...} | null}], "left": ["bob"]}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from roomcast.core.topology import Transition

__all__ = ["PRESENCE_EVENT", "PresenceBuffer", "encode_event"]

PRESENCE_EVENT = "presence"


class PresenceBuffer:
    def __init__(self) -> None:
        self._net: dict[str, dict[str, int]] = {}

    def add(self, transitions: Iterable[Transition]) -> None:
        for t in transitions:
            users = self._net.setdefault(t.room, {})
            users[t.user] = users.get(t.user, 0) + (1 if t.joined else -1)

    def __bool__(self) -> bool:
        return bool(self._net)

    def flush(self) -> dict[str, tuple[list[str], list[str]]]:
        """room -> (users who appeared, users who disappeared) since the last flush."""
        net, self._net = self._net, {}
        out: dict[str, tuple[list[str], list[str]]] = {}
        for room, users in net.items():
            joined = sorted(u for u, n in users.items() if n > 0)
            left = sorted(u for u, n in users.items() if n < 0)
            if joined or left:
                out[room] = (joined, left)
        return out


def encode_event(
    room: str, joined: list[str], left: list[str], meta: Callable[[str], bytes]
) -> bytes:
    """The event's JSON data; ``meta(user)`` gives a user's metadata JSON (b"" for none)."""

    def entry(user: str) -> dict[str, object]:
        raw = meta(user)
        return {"user": user, "meta": json.loads(raw) if raw else None}

    payload = {"room": room, "joined": [entry(u) for u in joined], "left": left}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
