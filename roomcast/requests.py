"""Virtual requests and the socket arguments of the ``sails.sockets`` API (pure).

Owns :class:`Request` (what an action handler receives; the action worker builds it from a routed
``wire.Request``), :class:`Response` (what a virtual request returned), and the normalisation of
"a socket" arguments: a socket id, a request (anything with a ``str`` ``socket`` attribute), or a
list/tuple of those. Like Sails, a request stands for the socket that sent it, so
``join(req, room)`` and ``broadcast(..., omit=req)`` mean that socket.

Pure: no I/O, no clock, no zmq/asyncio; importable from anywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import KW_ONLY
from typing import Any, Protocol, TypeAlias

from roomcast.core.errors import BadRequest

__all__ = [
    "HasSocket",
    "Request",
    "Response",
    "SocketLike",
    "SocketsLike",
    "get_id",
    "socket_ids",
]


class HasSocket(Protocol):
    """Anything that names the socket it came from (a :class:`Request`, or an app's own type)."""

    @property
    def socket(self) -> str: ...


SocketLike: TypeAlias = str | HasSocket
SocketsLike: TypeAlias = SocketLike | list[SocketLike] | tuple[SocketLike, ...]


@dataclasses.dataclass(frozen=True)
class Request:
    """A virtual request from a connected socket, as an action handler sees it.

    ``socket`` is the cluster-wide id of the sending socket; ``params`` holds path parameters
    (``/user/:id`` -> ``{"id": "7"}``) over the query string's arguments (``query``).
    ``is_socket`` mirrors Sails' ``req.isSocket``.

    Who is asking, as the router knows the socket: ``user`` is the connection's identity (its
    token's ``sub``, or what a connect hook or ``set_presence`` set; None when anonymous),
    ``claims`` the verified token claims (``{}`` without a token). ``headers`` (names in lower
    case) are the request's own headers over the socket's handshake headers (the gateway's
    ``--handshake-headers`` allowlist: cookie, user-agent, accept-language, origin by default),
    as Sails merges them; ``handshake_headers`` are the latter alone.
    ``cluster`` is the worker's SDK handle (a ``Cluster`` for async handlers, a ``SyncCluster``
    for sync ones), typed ``Any`` so either reads naturally in a handler; it takes no part in
    equality or repr.
    """

    socket: str
    _: KW_ONLY
    method: str = ""
    url: str = ""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    data: object = None
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    is_socket: bool = True
    cluster: Any = dataclasses.field(default=None, repr=False, compare=False)
    user: str | None = None
    claims: dict[str, Any] = dataclasses.field(default_factory=dict)
    handshake_headers: dict[str, str] = dataclasses.field(default_factory=dict)
    query: dict[str, str] = dataclasses.field(default_factory=dict)
    route_params: dict[str, str] = dataclasses.field(default_factory=dict)

    def all_params(self) -> dict[str, Any]:
        """Sails' ``req.allParams()``: query, then body fields, then path parameters, merged
        (a later source wins; a body that is not an object adds nothing)."""
        body = self.data if isinstance(self.data, dict) else {}
        return {**self.query, **body, **self.route_params}

    def param(self, name: str, default: Any = None) -> Any:
        """Sails' ``req.param(name, default)``: the path parameter, else the body field, else
        the query argument, else ``default``."""
        if name in self.route_params:
            return self.route_params[name]
        if isinstance(self.data, dict) and name in self.data:
            return self.data[name]
        return self.query.get(name, default)


@dataclasses.dataclass(frozen=True)
class Response:
    """What a virtual request returned: HTTP-like status, JSON body, response headers."""

    status: int
    body: object = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def _one(value: object) -> str:
    # A request stands for its socket (Sails: sails.sockets.join(req, room)).
    sid = value if isinstance(value, str) else getattr(value, "socket", None)
    if not isinstance(sid, str):
        raise BadRequest("a socket must be a socket id or a request (with a str socket attribute)")
    if not sid:
        raise BadRequest("socket id must not be empty")
    return sid


def socket_ids(value: object) -> list[str]:
    """A socket id, a request, or a list/tuple of those, as a list of ids (duplicates dropped).

    An empty list/tuple gives ``[]``; anything else that is not one of the accepted forms, and
    empty ids, raise :class:`~roomcast.core.errors.BadRequest`.
    """
    if isinstance(value, (list, tuple)):
        # dict.fromkeys keeps first-seen order; a repeated id would only cost the router work.
        return list(dict.fromkeys(_one(v) for v in value))
    return [_one(value)]


def get_id(req: SocketLike) -> str:
    """The socket id of a request (Sails' ``sails.sockets.getId(req)``); an id maps to itself."""
    return _one(req)
