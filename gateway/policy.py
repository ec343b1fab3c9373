"""Who may do what on a gateway (pure): connection identities and client room policies.

A connection's :class:`Identity` comes from its signed token (``sub`` and the ``rooms`` /
``publish`` claims) or is anonymous. Client-initiated join/leave and broadcast are allowed when a
room matches a pattern from the gateway's configuration or from the identity's claims. Patterns
are shell-style globs (``chat:*``, ``user:{user}``); ``{user}`` stands for the identity's user id,
so a token can grant "my own rooms" without listing them. Production's default is no pattern at
all (deny); ``roomcast dev`` allows ``*``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["ANONYMOUS", "Identity", "RoomPolicy"]


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    user: str | None = None  # the token's subject; usable as a presence identity
    join: tuple[str, ...] = ()  # room patterns from the token's "rooms" claim
    publish: tuple[str, ...] = ()  # room patterns from the token's "publish" claim
    claims: Mapping[str, Any] | None = dataclasses.field(default=None, compare=False)

    @property
    def anonymous(self) -> bool:
        return self.user is None


ANONYMOUS = Identity()


def _matches(patterns: Iterable[str], room: str, user: str | None) -> bool:
    for pattern in patterns:
        if "{user}" in pattern:
            if user is None:
                continue
            pattern = pattern.replace("{user}", fnmatch_escape(user))
        if fnmatch.fnmatchcase(room, pattern):
            return True
    return False


def fnmatch_escape(text: str) -> str:
    """``text`` as a literal inside a glob pattern."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in text)


@dataclasses.dataclass(frozen=True, slots=True)
class RoomPolicy:
    join: tuple[str, ...] = ()  # patterns any connection may join/leave
    publish: tuple[str, ...] = ()  # patterns any connection may broadcast to

    def may_join(self, identity: Identity, room: str) -> bool:
        return _matches(self.join, room, identity.user) or _matches(
            identity.join, room, identity.user
        )

    def may_publish(self, identity: Identity, room: str) -> bool:
        return _matches(self.publish, room, identity.user) or _matches(
            identity.publish, room, identity.user
        )

    def denied(self, identity: Identity, rooms: Iterable[str], *, publish: bool) -> str | None:
        """The first room the identity may not use (None when all are allowed)."""
        check = self.may_publish if publish else self.may_join
        for room in rooms:
            if not check(identity, room):
                return room
        return None
