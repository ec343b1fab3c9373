"""The asyncio backend SDK: ``Cluster`` and its ``sails.sockets`` API, over one router connection.

Owns :class:`Link`, the protocol-level helper (one ZeroMQ DEALER to the router's ``--commands``
socket: lazy connect, ``Hello``, refs, reply futures, send order, timeouts), :class:`Sockets`
(``cluster.sockets``: argument checks and the mapping of each operation to one command), and
:class:`Cluster`, which ties them together. Sibling modules (Resourceful PubSub models, action
workers) build on :class:`Link` and :class:`Sockets` instead of touching the wire themselves.

Order (DESIGN.md §5.2): every command is written to the socket synchronously, before the calling
coroutine first suspends, so calls started in some order (``asyncio.gather``, ``create_task``)
reach the router in that order; when the router is not reachable yet, commands wait in one FIFO
backlog rather than racing each other.

This module does not validate what only the router knows (unknown socket ids, room limits): the
router's error replies come back as the typed exceptions of :mod:`roomcast.core.errors`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import secrets
from collections.abc import Callable
from types import TracebackType
from typing import TypeAlias

import zmq

from roomcast.core import rooms as _rooms
from roomcast.core import wire
from roomcast.core.errors import (
    BadRequest,
    InternalError,
    RouterUnavailable,
    StateError,
    Timeout,
    WireError,
    error_from_reply,
)
from roomcast.model import Model
from roomcast.requests import Response, SocketLike, SocketsLike, get_id, socket_ids
from roomcast.zmqio import BatchReader, new_context

__all__ = ["Cluster", "Command", "Link", "Rooms", "Sockets", "encode_json"]

log = logging.getLogger(__name__)

Command: TypeAlias = (
    wire.Hello
    | wire.Membership
    | wire.LeaveAll
    | wire.CopyMembers
    | wire.Publish
    | wire.Query
    | wire.Request
)
Rooms: TypeAlias = str | list[str] | tuple[str, ...]

# Backoff while no router is connected (IMMEDIATE makes sends fail fast): short first so a
# router that is just accepting the TCP connection costs a millisecond, capped so a long
# connect_timeout does not spin.
_RETRY_FIRST_S = 0.001
_RETRY_MAX_S = 0.05


def encode_json(value: object, what: str = "data") -> bytes:
    """Compact UTF-8 JSON, encoded once by the publisher; non-JSON values raise BadRequest."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")  # lone surrogates fail here (UnicodeEncodeError)
    except (TypeError, ValueError) as exc:
        # No repr of the value: it is the caller's payload.
        raise BadRequest(f"{what} is not json-serializable ({type(exc).__name__})") from None


class _Call:
    __slots__ = ("future", "timer")

    def __init__(self, future: asyncio.Future[wire.Reply]) -> None:
        self.future = future
        self.timer: asyncio.TimerHandle | None = None


class Link:
    """One DEALER connection to the router, bound to the event loop it is first used on.

    :meth:`submit` writes a command at once (or queues it behind earlier ones while no router is
    connected) and returns the future of its ``Reply``; :meth:`call` awaits it and raises the
    typed error of an error reply. Messages that answer no pending ref go to ``on_message``
    (workers receive routed requests that way) or are dropped.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 2.0,
        role: wire.Role = wire.Role.CLIENT,
        on_message: Callable[[wire.Message], None] | None = None,
    ) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise ValueError(f"router url must look like tcp://host:port, got {url!r}")
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeout and connect_timeout must be positive")
        self.url = url
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.role = role
        self.node_id = "c" + secrets.token_hex(8)
        self.epoch = ""  # the router's, from HelloAck; changes when the router restarts
        self.dropped = 0  # undecodable frames from the router
        self._on_message = on_message
        self._ref = 0
        self._pending: dict[int, _Call] = {}
        # (body, ref) in send order; ref 0 marks the Hello, which expects no future.
        self._backlog: collections.deque[tuple[bytes, int]] = collections.deque()
        self._flusher: asyncio.Task[None] | None = None
        self._need_hello = True
        self._hello_ref = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._reader: BatchReader | None = None
        self._closed = False

    @property
    def connected(self) -> bool:
        """Whether the socket exists (first use happened); says nothing about the router."""
        return self._sock is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def next_ref(self) -> int:
        # The protocol wants a non-zero ref, unique per connection, on every command.
        self._ref += 1
        return self._ref

    def submit(self, msg: Command) -> asyncio.Future[wire.Reply]:
        """Send ``msg`` now (in call order) and return the future of its reply.

        The future fails with :class:`Timeout` if no reply comes within ``timeout`` of the send,
        and with :class:`RouterUnavailable` if no router took the command within
        ``connect_timeout`` or the link is closed first.
        """
        ref = msg.ref
        if ref in self._pending or ref <= 0:
            raise StateError(f"ref {ref} is not a fresh ref from next_ref()")
        try:
            body = wire.encode(msg)
        except ValueError:  # a str field with lone surrogates: protobuf wants valid UTF-8
            raise BadRequest(f"{msg.KIND} carries a string that is not valid unicode") from None
        loop = self._ensure_open()  # after every check: bad arguments never open a connection
        fut: asyncio.Future[wire.Reply] = loop.create_future()
        call = _Call(fut)
        self._pending[ref] = call
        fut.add_done_callback(lambda _f: self._forget(ref))
        if self._need_hello:
            self._need_hello = False
            self._hello_ref = self.next_ref()
            hello = wire.Hello(ref=self._hello_ref, node_id=self.node_id, role=self.role)
            self._write(wire.encode(hello), 0)
        self._write(body, ref)
        return fut

    async def call(self, msg: Command) -> wire.Reply:
        """Send ``msg`` and return its successful reply; an error reply raises its typed error."""
        reply = await self.submit(msg)
        if reply.status >= 400 or reply.error:
            raise error_from_reply(reply.status, reply.error, reply.message)
        return reply

    async def close(self) -> None:
        """Fail what is in flight with RouterUnavailable, then close the socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            try:
                await flusher
            except asyncio.CancelledError:
                pass
        self._backlog.clear()
        self._fail_all("cluster closed before the router replied")
        if self._reader is not None:
            self._reader.stop()
        if self._sock is not None:
            self._sock.close(linger=0)
        if self._ctx is not None:
            self._ctx.term()
        self._reader = self._sock = self._ctx = None

    # -- internals ------------------------------------------------------------------------

    def _ensure_open(self) -> asyncio.AbstractEventLoop:
        if self._closed:
            raise StateError("cluster is closed")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._connect(loop)
        elif loop is not self._loop:
            # The socket's FD is registered with one loop and its futures belong to it.
            raise StateError("a Cluster can only be used from the event loop it first ran on")
        return loop

    def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        ctx = new_context()
        sock = ctx.socket(zmq.DEALER)
        try:
            # IMMEDIATE: never queue towards a router that is not connected, so a send that
            # would block means "router unavailable" instead of buffering silently.
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTING_ID, self.node_id.encode())
            sock.connect(self.url)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            ctx.term()
            raise ValueError(f"cannot connect to {self.url!r}: {exc}") from None
        self._loop, self._ctx, self._sock = loop, ctx, sock
        self._reader = BatchReader(sock, self._on_batch)
        self._reader.start()
        log.debug("> connecting %s as %s", self.url, self.node_id)

    def _write(self, body: bytes, ref: int) -> None:
        if not self._backlog:
            try:
                sent = self._try_send(body)
            except RouterUnavailable as exc:
                # Failures travel through the future, like every other outcome of a command.
                if ref == 0:
                    self._need_hello = True
                else:
                    self._fail(ref, exc)
                return
            if sent:
                self._sent(ref)
                return
        self._backlog.append((body, ref))
        if self._flusher is None:
            assert self._loop is not None
            self._flusher = self._loop.create_task(self._flush())

    def _try_send(self, body: bytes) -> bool:
        assert self._sock is not None and self._reader is not None
        try:
            self._sock.send(body, zmq.NOBLOCK)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            raise RouterUnavailable(f"cannot send to the router: {exc}") from None
        # The FD is edge-triggered: a send can consume the edge that announced a reply.
        self._reader.kick()
        return True

    def _sent(self, ref: int) -> None:
        if ref == 0:
            return
        call = self._pending.get(ref)
        if call is not None and self._loop is not None:
            call.timer = self._loop.call_later(self.timeout, self._expire, ref)

    async def _flush(self) -> None:
        assert self._loop is not None
        loop = self._loop
        delay = _RETRY_FIRST_S
        deadline = loop.time() + self.connect_timeout
        try:
            while self._backlog:
                body, ref = self._backlog[0]
                if ref and ref not in self._pending:  # cancelled by its caller while queued
                    self._backlog.popleft()
                    continue
                try:
                    sent = self._try_send(body)
                except RouterUnavailable as exc:
                    self._fail_backlog(exc.message)
                    return
                if sent:
                    self._backlog.popleft()
                    self._sent(ref)
                    delay = _RETRY_FIRST_S
                    deadline = loop.time() + self.connect_timeout
                    continue
                now = loop.time()
                if now >= deadline:
                    self._fail_backlog(
                        f"no router reachable at {self.url} within {self.connect_timeout:g} s"
                    )
                    return
                await asyncio.sleep(min(delay, deadline - now))
                delay = min(delay * 2, _RETRY_MAX_S)
        finally:
            if self._flusher is asyncio.current_task():
                self._flusher = None

    # One exception instance per future: a shared one would collect every raiser's traceback.

    def _fail_backlog(self, message: str) -> None:
        for _body, ref in self._backlog:
            if ref == 0:
                self._need_hello = True  # the router never saw it: say it with the next command
            else:
                self._fail(ref, RouterUnavailable(message))
        self._backlog.clear()

    def _fail_all(self, message: str) -> None:
        for ref in list(self._pending):
            self._fail(ref, RouterUnavailable(message))

    def _fail(self, ref: int, exc: Exception) -> None:
        call = self._pending.get(ref)
        if call is not None and not call.future.done():
            call.future.set_exception(exc)

    def _expire(self, ref: int) -> None:
        self._fail(ref, Timeout(f"no reply from the router within {self.timeout:g} s"))

    def _forget(self, ref: int) -> None:
        call = self._pending.pop(ref, None)
        if call is not None and call.timer is not None:
            call.timer.cancel()

    def _on_batch(self, batch: list[list[bytes]]) -> None:
        for parts in batch:
            try:
                msg = wire.decode(parts[-1])
            except WireError:
                self.dropped += 1
                log.debug("< dropped an undecodable frame from the router")
                continue
            if isinstance(msg, (wire.Reply, wire.HelloAck)) and msg.ref == self._hello_ref:
                self._on_hello_answer(msg)
            elif isinstance(msg, wire.Reply):
                call = self._pending.get(msg.ref)
                if call is None:
                    # Late (after Timeout) or cancelled: its caller has moved on.
                    log.debug("< reply for unknown ref %d", msg.ref)
                elif not call.future.done():
                    call.future.set_result(msg)
            elif self._on_message is not None:
                self._on_message(msg)
            else:
                log.debug("< ignored %s", msg.KIND)

    def _on_hello_answer(self, msg: wire.Reply | wire.HelloAck) -> None:
        if isinstance(msg, wire.HelloAck):
            if self.epoch and msg.epoch != self.epoch:
                log.info("router restarted (epoch %s -> %s)", self.epoch, msg.epoch)
            self.epoch = msg.epoch
        elif msg.status >= 400 or msg.error:
            log.warning("router refused hello: %s (%s)", msg.error, msg.message)


def _room_list(value: object) -> list[str]:
    # rooms.as_room_list takes lists only; a tuple of names is just as clear in Python.
    return _rooms.as_room_list(list(value) if isinstance(value, tuple) else value)


def _event(event: object) -> str:
    if not isinstance(event, str) or not event:
        raise BadRequest("event must be a non-empty string")
    return event


class Sockets:
    """``sails.sockets`` for the whole cluster (DESIGN.md §5), as ``cluster.sockets``.

    Arguments are checked before anything is sent: a bad room name raises
    :class:`~roomcast.core.errors.InvalidRoom` and a bad socket argument
    :class:`~roomcast.core.errors.BadRequest` without a round trip. Membership calls return once
    the router applied the change, so a broadcast accepted after that reaches the socket.
    """

    def __init__(self, link: Link) -> None:
        self._link = link

    async def join(self, sockets: SocketsLike, rooms: Rooms) -> None:
        """Every socket in ``sockets`` joins every room in ``rooms`` (an empty list: no-op)."""
        await self._membership(sockets, rooms, leave=False)

    async def leave(self, sockets: SocketsLike, rooms: Rooms) -> None:
        """Every socket in ``sockets`` leaves every room in ``rooms``."""
        await self._membership(sockets, rooms, leave=True)

    async def leave_all(self, room: str) -> None:
        """Every member of ``room`` leaves ``room`` and every other room but its own id room."""
        link = self._link
        await link.call(wire.LeaveAll(ref=link.next_ref(), room=_rooms.validate_room(room)))

    async def add_room_members_to_rooms(self, src: SocketLike, dests: Rooms) -> None:
        """Every current member of ``src`` (a room, a socket id or a request) joins ``dests``."""
        await self._copy(src, dests, remove=False)

    async def remove_room_members_from_rooms(self, src: SocketLike, dests: Rooms) -> None:
        """Every current member of ``src`` leaves each of ``dests``."""
        await self._copy(src, dests, remove=True)

    async def broadcast(
        self,
        rooms: Rooms,
        event: str = "message",
        data: object = None,
        *,
        omit: SocketsLike | None = None,
    ) -> int:
        """Send ``event`` once to every member of any of ``rooms`` except ``omit``.

        Returns how many gateways the router handed the message to.
        """
        msg = wire.Publish(
            ref=self._link.next_ref(),
            rooms=tuple(_room_list(rooms)),
            event=_event(event),
            data=encode_json(data),
            omit=_omit(omit),
        )
        return (await self._link.call(msg)).gateways

    async def blast(
        self, event: str = "message", data: object = None, *, omit: SocketsLike | None = None
    ) -> int:
        """Send ``event`` to every connected socket in the cluster except ``omit``."""
        msg = wire.Publish(
            ref=self._link.next_ref(),
            everyone=True,
            event=_event(event),
            data=encode_json(data),
            omit=_omit(omit),
        )
        return (await self._link.call(msg)).gateways

    async def count(self, room: str) -> int:
        """How many sockets are in ``room``, cluster-wide (exact)."""
        return (await self._query(wire.QueryKind.COUNT, _rooms.validate_room(room))).count

    async def members(self, room: str) -> list[str]:
        """The ids of the sockets in ``room``."""
        return list((await self._query(wire.QueryKind.MEMBERS, _rooms.validate_room(room))).names)

    async def rooms(self, socket: SocketLike) -> list[str]:
        """The rooms ``socket`` is in, its own id room included."""
        return list((await self._query(wire.QueryKind.ROOMS, get_id(socket))).names)

    def get_id(self, req: SocketLike) -> str:
        """The socket id of a request (Sails' ``sails.sockets.getId``)."""
        return get_id(req)

    async def _membership(self, sockets: SocketsLike, rooms: Rooms, *, leave: bool) -> None:
        ids = socket_ids(sockets)
        names = _room_list(rooms)
        if not ids:
            return
        link = self._link
        msg = wire.Membership(
            ref=link.next_ref(), leave=leave, sockets=tuple(ids), rooms=tuple(names)
        )
        await link.call(msg)

    async def _copy(self, src: SocketLike, dests: Rooms, *, remove: bool) -> None:
        source = _rooms.validate_room(get_id(src))
        names = _room_list(dests)
        link = self._link
        msg = wire.CopyMembers(
            ref=link.next_ref(), remove=remove, source=source, rooms=tuple(names)
        )
        await link.call(msg)

    async def _query(self, kind: wire.QueryKind, target: str) -> wire.Reply:
        link = self._link
        return await link.call(wire.Query(ref=link.next_ref(), kind=kind, target=target))


def _omit(omit: SocketsLike | None) -> tuple[str, ...]:
    return () if omit is None else tuple(socket_ids(omit))


class Cluster:
    """The asyncio SDK for one roomcast cluster, reached through its router.

    ``Cluster("tcp://127.0.0.1:5570")`` opens nothing: the connection is made on first use, on
    the running event loop (and stays bound to it). ``timeout`` bounds the wait for each reply,
    ``connect_timeout`` the wait for a router to take a command. Use ``async with``, or
    ``await cluster.close()``.
    """

    def __init__(self, url: str, *, timeout: float = 10.0, connect_timeout: float = 2.0) -> None:
        self._link = Link(url, timeout=timeout, connect_timeout=connect_timeout)
        self.sockets = Sockets(self._link)

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
            raise error_from_reply(reply.status, reply.error, reply.message)
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
