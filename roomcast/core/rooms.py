"""Room names and limits (contract: architecture §3).

A room name is 1-256 UTF-8 bytes with no control characters; ``:`` is allowed
(``sails_model_user_7:user``). Every socket is also in the room named by its own id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from roomcast.core.errors import BadRequest, InvalidRoom

__all__ = [
    "MAX_ROOMS_PER_SOCKET",
    "MAX_ROOM_BYTES",
    "as_room_list",
    "validate_room",
    "validate_rooms",
]

MAX_ROOM_BYTES = 256
MAX_ROOMS_PER_SOCKET = 1000

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def validate_room(name: object) -> str:
    """Return ``name`` if it is a valid room name, else raise :class:`InvalidRoom`."""
    if not isinstance(name, str):
        raise InvalidRoom("room name must be a string")
    size = len(name.encode("utf-8", "surrogatepass"))
    if size == 0 or size > MAX_ROOM_BYTES:
        raise InvalidRoom(f"room name must be 1-{MAX_ROOM_BYTES} utf-8 bytes, got {size}")
    if _CONTROL.search(name):
        raise InvalidRoom("room name must not contain control characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRoom("room name must be valid unicode") from None
    return name


def validate_rooms(names: Iterable[object]) -> list[str]:
    return [validate_room(n) for n in names]


def as_room_list(value: object) -> list[str]:
    """A room or a list of rooms (client and API input) as a validated, non-empty list."""
    if isinstance(value, str):
        return [validate_room(value)]
    if isinstance(value, list) and value:
        return validate_rooms(value)
    raise BadRequest("rooms must be a room name or a non-empty list of room names")
