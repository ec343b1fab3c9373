"""Error taxonomy shared by the router, the gateways and the SDK.

Every error a caller can act on is a :class:`RoomcastError` subclass that carries an HTTP-like
``status`` and a machine-readable ``code``; the same pair travels in ``Reply`` frames, in plain
WebSocket replies (``{"error": code, "message": text}``) and in HTTP API responses, so one table
maps between them.

* ``BadRequest`` (400 bad_request), ``InvalidRoom`` (400 invalid_room), ``Forbidden`` (403
  forbidden), ``NoSuchSocket`` (404 no_such_socket), ``NotFound`` (404 not_found),
  ``PayloadTooLarge`` (413 payload_too_large), ``TooManyRooms`` (429 too_many_rooms),
  ``RateLimited`` (429 rate_limited), ``ActionFailed`` (500 action_failed), ``InternalError``
  (500 internal), ``NoWorker`` (503 no_worker), ``RouterUnavailable`` (503 router_unavailable),
  ``RouterPassive`` (503 router_passive: a standby router refused a command it did not apply, so
  the caller may send it to the other router of the pair), ``Timeout`` (504 timeout),
  ``Conflict`` (409 conflict: a gateway id or socket id that another live peer holds).

``StateError`` (500 state_error) is a ``RoomcastError`` too, so ``except RoomcastError`` catches
everything the SDK raises: it means the calling code misused an object (a call after
``close()``, a cluster used from another event loop), never that a peer misbehaved.
``WireError`` is not for callers: a peer sent bytes we cannot decode (count and drop).

Errors that carry data (``NoSuchSocket.socket``, ``PayloadTooLarge.size``/``limit``,
``TooManyRooms.limit``) put it in :meth:`RoomcastError.as_body` next to ``error`` and
``message``; :func:`error_from_reply` reads it back, so the fields survive the trip through a
router or worker reply. Messages are lower case and never include payload bytes.
"""

from __future__ import annotations

import json as _json

__all__ = [
    "ActionFailed",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "InternalError",
    "InvalidRoom",
    "NoSuchSocket",
    "NoWorker",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RoomcastError",
    "RouterPassive",
    "RouterUnavailable",
    "StateError",
    "Timeout",
    "TooManyRooms",
    "WireError",
    "error_from_reply",
]


class RoomcastError(Exception):
    """Base of every error a roomcast caller may handle."""

    status: int = 500
    code: str = "internal"
    # Attributes that travel with the error (in as_body(), back through error_from_reply()).
    fields: tuple[str, ...] = ()

    def __init__(self, message: str | None = None) -> None:
        self.message = message if message is not None else self.code.replace("_", " ")
        super().__init__(self.message)

    def as_body(self) -> dict[str, object]:
        """The JSON error body used on every client-facing surface: code, message, fields."""
        body: dict[str, object] = {"error": self.code, "message": self.message}
        for name in self.fields:
            value = getattr(self, name, None)
            if value is not None:
                body[name] = value
        return body


class BadRequest(RoomcastError):
    status, code = 400, "bad_request"


class InvalidRoom(RoomcastError):
    status, code = 400, "invalid_room"


class Forbidden(RoomcastError):
    status, code = 403, "forbidden"


class NoSuchSocket(RoomcastError):
    status, code = 404, "no_such_socket"
    fields = ("socket",)
    socket: str | None = None  # class defaults: error_from_reply() bypasses __init__

    def __init__(self, message: str | None = None, *, socket: str | None = None) -> None:
        self.socket = socket
        super().__init__(message or (f"no such socket: {socket}" if socket else None))


class NotFound(RoomcastError):
    status, code = 404, "not_found"


class Conflict(RoomcastError):
    """A peer claimed a gateway id or socket id that another live peer holds (refused)."""

    status, code = 409, "conflict"


class PayloadTooLarge(RoomcastError):
    status, code = 413, "payload_too_large"
    fields = ("size", "limit")
    size: int = 0
    limit: int = 0

    def __init__(self, message: str | None = None, *, size: int = 0, limit: int = 0) -> None:
        self.size, self.limit = size, limit
        super().__init__(message or f"payload of {size} bytes exceeds the limit of {limit} bytes")


class TooManyRooms(RoomcastError):
    status, code = 429, "too_many_rooms"
    fields = ("limit",)
    limit: int = 0

    def __init__(self, message: str | None = None, *, limit: int = 0) -> None:
        self.limit = limit
        super().__init__(message or f"a socket may be in at most {limit} rooms")


class RateLimited(RoomcastError):
    status, code = 429, "rate_limited"


class ActionFailed(RoomcastError):
    status, code = 500, "action_failed"


class InternalError(RoomcastError):
    status, code = 500, "internal"


class NoWorker(RoomcastError):
    status, code = 503, "no_worker"


class RouterUnavailable(RoomcastError):
    status, code = 503, "router_unavailable"


class RouterPassive(RoomcastError):
    """A standby router refused the command and applied nothing: try the other router."""

    status, code = 503, "router_passive"


class Timeout(RoomcastError):
    status, code = 504, "timeout"


class WireError(Exception):
    """A peer sent something that is not a valid roomcast frame (remote misbehaviour)."""


class StateError(RoomcastError):
    """Local misuse of an object (a bug in the calling code, never caused by a peer)."""

    status, code = 500, "state_error"


_BY_CODE: dict[str, type[RoomcastError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        InvalidRoom,
        Forbidden,
        NoSuchSocket,
        NotFound,
        Conflict,
        PayloadTooLarge,
        TooManyRooms,
        RateLimited,
        ActionFailed,
        InternalError,
        NoWorker,
        RouterUnavailable,
        RouterPassive,
        Timeout,
        StateError,
    )
}


def error_from_reply(status: int, code: str, message: str, body: bytes = b"") -> RoomcastError:
    """Rebuild the typed error a reply describes (unknown codes keep their status).

    ``body`` is the reply's JSON error body (:meth:`RoomcastError.as_body`), when it has one:
    the error's fields are read back from it; a field of the wrong type is left at its default
    (the body crossed a process boundary).
    """
    cls = _BY_CODE.get(code)
    if cls is None:
        err = RoomcastError(message or code or None)
        err.status, err.code = status, code or "internal"
        return err
    err = cls.__new__(cls)
    RoomcastError.__init__(err, message or None)
    if cls.fields and body:
        try:
            data = _json.loads(body)
        except (ValueError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict):
            for name in cls.fields:
                value, default = data.get(name), getattr(cls, name, None)
                kind = type(default) if default is not None else str
                if isinstance(value, kind) and not isinstance(value, bool):
                    setattr(err, name, value)
    return err
