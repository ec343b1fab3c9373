"""The asyncio backend SDK: :class:`Cluster`, one router connection and what is built on it.

Owns :class:`Cluster`, which ties the SDK's parts together: it opens a
:class:`~roomcast.link.Link` (:mod:`roomcast.link`: the connection, its order, timeouts and
failover) and hands it to :class:`~roomcast.sockets.Sockets` (:mod:`roomcast.sockets`: the
``sails.sockets`` API as ``cluster.sockets``), to Resourceful PubSub models
(:meth:`Cluster.model`) and to virtual requests routed to action workers
(:meth:`Cluster.request`). Sibling modules (models, action workers) build on :class:`Link` and
:class:`Sockets` instead of touching the wire themselves.

It also re-exports the names that lived here before that split (:class:`Link`,
:data:`Command`, :class:`Sockets`, :class:`Receipt`, :data:`Rooms`, :func:`encode_json`), so
``from roomcast.cluster import ...`` keeps working for applications, the gateway and workers.
"""

from __future__ import annotations

import json
import os
from types import TracebackType

from roomcast.core import wire
from roomcast.core.errors import BadRequest, InternalError, error_from_reply
from roomcast.core.limits import DEFAULT_MAX_PUBLISH_BYTES
from roomcast.curve import client_options
from roomcast.link import Command, Link
from roomcast.model import Model
from roomcast.requests import Response, SocketLike, get_id
from roomcast.sockets import Receipt, Rooms, Sockets, encode_json

__all__ = ["Cluster", "Command", "Link", "Receipt", "Rooms", "Sockets", "encode_json"]


class Cluster:
    """The asyncio SDK for one roomcast cluster, reached through its router.

    ``Cluster("tcp://127.0.0.1:5570")`` opens nothing: the connection is made on first use, on
    the running event loop (and stays bound to it). ``timeout`` bounds the wait for each reply,
    ``connect_timeout`` the wait for a router to take a command. Use ``async with``, or
    ``await cluster.close()``. For a router that requires CURVE, ``curve_key`` is the path of
    our ``.key_secret`` certificate and ``curve_server_key`` that of the router's public
    ``.key``: both are read here (``ValueError`` when unusable); a key the router does not
    accept looks like an unreachable router (``RouterUnavailable``). ``max_publish_bytes``
    bounds one broadcast's event + JSON data: a larger one raises ``PayloadTooLarge`` (413)
    before anything is sent; keep it at or below the router's ``--max-publish-bytes``, which
    refuses the same way (0 here leaves the decision to the router).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 2.0,
        curve_key: str | os.PathLike[str] | None = None,
        curve_server_key: str | os.PathLike[str] | None = None,
        max_publish_bytes: int = DEFAULT_MAX_PUBLISH_BYTES,
    ) -> None:
        if isinstance(max_publish_bytes, bool) or not isinstance(max_publish_bytes, int):
            raise TypeError("max_publish_bytes must be an int (bytes; 0: no local bound)")
        self._link = Link(
            url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            curve=client_options(curve_key or "", curve_server_key or ""),
        )
        self.sockets = Sockets(self._link, max_publish_bytes=max_publish_bytes)

    @property
    def url(self) -> str:
        return self._link.url

    def model(self, identity: str, *, primary_key: str = "id") -> Model:
        """Resourceful PubSub for one model identity (``User = cluster.model("user")``)."""
        return Model(self.sockets, identity, primary_key=primary_key)

    @property
    def link(self) -> Link:
        """The protocol-level connection, for sibling SDK modules (models, workers)."""
        return self._link

    async def request(
        self,
        socket: SocketLike,
        method: str,
        url: str,
        data: object = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Route a virtual request on behalf of ``socket`` to an action worker.

        A status the handler returned itself (any 4xx/5xx included) comes back in the
        :class:`Response`; what roomcast decided raises: ``NotFound`` (no action matches),
        ``ActionFailed`` (the handler raised), ``Timeout`` (too slow), ``NoWorker`` (none
        connected, or it went away).
        """
        if not isinstance(method, str) or not method:
            raise BadRequest("method must be a non-empty string")
        if not isinstance(url, str) or not url.startswith("/"):
            raise BadRequest("url must be a path starting with /")
        link = self._link
        msg = wire.Request(
            ref=link.next_ref(),
            socket=get_id(socket),
            method=method.upper(),
            url=url,
            headers=encode_json(headers or {}, "headers"),
            data=encode_json(data),
        )
        reply = await link.submit(msg)
        if reply.error:
            raise error_from_reply(reply.status, reply.error, reply.message, reply.body)
        try:
            body = json.loads(reply.body) if reply.body else None
            resp_headers = json.loads(reply.headers) if reply.headers else {}
        except ValueError:
            raise InternalError("action response is not valid json") from None
        if not isinstance(resp_headers, dict):
            raise InternalError("action response headers are not a json object")
        return Response(status=reply.status, body=body, headers=resp_headers)

    async def close(self) -> None:
        """Close the connection; calls still waiting raise RouterUnavailable. Idempotent."""
        await self._link.close()

    async def __aenter__(self) -> Cluster:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._link.closed else "open" if self._link.connected else "idle"
        return f"<Cluster {self._link.url} {state}>"
