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
import dataclasses
import json
import logging
import os
import secrets
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, TypeAlias, overload

import zmq

from roomcast.core import rooms as _rooms
from roomcast.core import wire
from roomcast.core.errors import (
    BadRequest,
    InternalError,
    RouterPassive,
    RouterUnavailable,
    StateError,
    Timeout,
    WireError,
    error_from_reply,
)
from roomcast.curve import PLAIN, SocketOptions, client_options
from roomcast.model import Model
from roomcast.requests import Response, SocketLike, SocketsLike, get_id, socket_ids
from roomcast.zmqio import BatchReader, new_context

__all__ = ["Cluster", "Command", "Link", "Receipt", "Rooms", "Sockets", "encode_json"]

log = logging.getLogger(__name__)

Command: TypeAlias = (
    wire.Hello
    | wire.Membership
    | wire.LeaveAll
    | wire.CopyMembers
    | wire.Publish
    | wire.Query
    | wire.Request
    | wire.SetPresence
    | wire.TrackPresence
)
Rooms: TypeAlias = str | list[str] | tuple[str, ...]

# Backoff while no router is connected (IMMEDIATE makes sends fail fast): short first so a
# router that is just accepting the TCP connection costs a millisecond, capped so a long
# connect_timeout does not spin.
_RETRY_FIRST_S = 0.001
_RETRY_MAX_S = 0.05
# A primary/backup pair: pause before sending refused commands again, doubling while every
# router refuses (both standing by for a moment, as during a failover's first seconds).
_REFUSED_FIRST_S = 0.01
_REFUSED_MAX_S = 0.25
# ...and how long one router may take no command at all (nothing connected) before the next is
# tried: a live router on a LAN accepts the connection within milliseconds.
_SWITCH_AFTER_S = 0.5


def encode_json(value: object, what: str = "data") -> bytes:
    """Compact UTF-8 JSON, encoded once by the publisher; non-JSON values raise BadRequest."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")  # lone surrogates fail here (UnicodeEncodeError)
    except (TypeError, ValueError) as exc:
        # No repr of the value: it is the caller's payload.
        raise BadRequest(f"{what} is not json-serializable ({type(exc).__name__})") from None


class _Call:
    __slots__ = ("body", "future", "gen", "retry_until", "timer", "wait")

    def __init__(self, future: asyncio.Future[wire.Reply], body: bytes, wait: float) -> None:
        self.future = future
        self.wait = wait  # seconds the router may hold the reply on purpose (confirmations)
        self.body = body  # kept to send again to the other router of a pair after a refusal
        self.gen = -1  # the router connection it was last sent on (Link._generation)
        self.retry_until = 0.0  # after a first refusal: give up finding an active router then
        self.timer: asyncio.TimerHandle | None = None


class Link:
    """One DEALER connection to the router, bound to the event loop it is first used on.

    :meth:`submit` writes a command at once (or queues it behind earlier ones while no router is
    connected) and returns the future of its ``Reply``; :meth:`call` awaits it and raises the
    typed error of an error reply. Messages that answer no pending ref go to ``on_message``
    (workers receive routed requests that way) or are dropped.

    ``url`` may name a primary/backup pair, comma-separated (``tcp://a:5570,tcp://b:5570``).
    The link talks to one router at a time and turns to the next one when the current one
    takes no command for 0.5 s (nothing connected: its process is gone), refuses one
    with ``router_passive`` (it stands by and applied nothing: the command is sent again to the
    next router, transparently, for up to ``connect_timeout`` after that first refusal; then
    it fails with ``RouterUnavailable``), or lets one time out (the caller gets ``Timeout``,
    since it may have been applied; the next command goes to the next router).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 2.0,
        role: wire.Role = wire.Role.CLIENT,
        on_message: Callable[[wire.Message], None] | None = None,
        curve: SocketOptions = PLAIN,
    ) -> None:
        urls = tuple(u.strip() for u in url.split(",")) if isinstance(url, str) else ()
        if not urls or not all("://" in u for u in urls):
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
        self._curve = curve  # CURVE client options (roomcast/curve.py), applied to each DEALER
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
        self._socks: list[tuple[zmq.Socket[bytes], BatchReader]] = []
        # A primary/backup pair (several urls): which router we talk to, and since when.
        self._urls = urls
        self._current = 0
        self._generation = 0  # bumped on every switch: tells replies of one connection apart
        self._hello_gen = -1
        self._not_before = 0.0  # loop time: refused commands wait for this before going again
        self._refused_delay = _REFUSED_FIRST_S

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

    def submit(self, msg: Command, *, wait: float = 0.0) -> asyncio.Future[wire.Reply]:
        """Send ``msg`` now (in call order) and return the future of its reply.

        The future fails with :class:`Timeout` if no reply comes within ``timeout`` (plus
        ``wait``, for a command the router answers late on purpose: a publish waiting for
        confirmations) of the send, and with :class:`RouterUnavailable` if no router took the
        command within ``connect_timeout`` or the link is closed first.
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
        call = _Call(fut, body, wait)
        self._pending[ref] = call
        fut.add_done_callback(lambda _f: self._forget(ref))
        if self._need_hello:
            self._need_hello = False
            self._hello_ref = self.next_ref()
            hello = wire.Hello(ref=self._hello_ref, node_id=self.node_id, role=self.role)
            self._write(wire.encode(hello), 0)
        self._write(body, ref)
        return fut

    async def call(self, msg: Command, *, wait: float = 0.0) -> wire.Reply:
        """Send ``msg`` and return its successful reply; an error reply raises its typed error."""
        reply = await self.submit(msg, wait=wait)
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
        for sock, reader in self._socks:
            reader.stop()
            sock.close(linger=0)
        self._socks = []
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
        # One DEALER per router of a pair, all connected: commands go to the current one only,
        # but a reply from the other still arrives after a switch (none is ever dropped).
        ctx = new_context()
        socks: list[zmq.Socket[bytes]] = []
        try:
            for url in self._urls:
                sock = ctx.socket(zmq.DEALER)
                self._curve.apply(sock)
                socks.append(sock)
                # IMMEDIATE: never queue towards a router that is not connected, so a send that
                # would block means "router unavailable" instead of buffering silently.
                sock.setsockopt(zmq.IMMEDIATE, 1)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.ROUTING_ID, self.node_id.encode())
                sock.connect(url)
        except zmq.ZMQError as exc:
            for sock in socks:
                sock.close(linger=0)
            ctx.term()
            raise ValueError(f"cannot connect to {self.url!r}: {exc}") from None
        self._loop, self._ctx = loop, ctx
        self._socks = [(sock, BatchReader(sock, self._on_batch)) for sock in socks]
        for _sock, reader in self._socks:
            reader.start()
        self._sock, self._reader = self._socks[self._current]
        log.debug("> connecting %s as %s", self.url, self.node_id)

    def _write(self, body: bytes, ref: int) -> None:
        if not self._backlog and (self._loop is None or self._loop.time() >= self._not_before):
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
            self._hello_gen = self._generation
            return
        call = self._pending.get(ref)
        if call is not None and self._loop is not None:
            call.gen = self._generation
            call.timer = self._loop.call_later(self.timeout + call.wait, self._expire, ref)

    async def _flush(self) -> None:
        assert self._loop is not None
        loop = self._loop
        delay = _RETRY_FIRST_S
        deadline = loop.time() + self.connect_timeout
        # A pair: a router that takes nothing for this long (nothing connected: its process is
        # gone) is passed over for the next, until connect_timeout ends the wait for any.
        patience = min(self.connect_timeout / len(self._urls), _SWITCH_AFTER_S)
        switch_at = loop.time() + patience
        try:
            while self._backlog:
                body, ref = self._backlog[0]
                if ref and ref not in self._pending:  # cancelled by its caller while queued
                    self._backlog.popleft()
                    continue
                if loop.time() < self._not_before:
                    await asyncio.sleep(self._not_before - loop.time())
                    deadline = max(deadline, loop.time() + self.connect_timeout)
                    switch_at = loop.time() + patience
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
                    switch_at = loop.time() + patience
                    continue
                now = loop.time()
                if now >= deadline:
                    self._fail_backlog(
                        f"no router reachable at {self.url} within {self.connect_timeout:g} s"
                    )
                    return
                if len(self._urls) > 1 and now >= switch_at:
                    self._switch(f"it took no command within {patience:g} s")
                    switch_at = now + patience
                    continue
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
        call = self._pending.get(ref)
        if call is not None and len(self._urls) > 1 and call.gen == self._generation:
            self._switch(f"no reply within {self.timeout:g} s")  # the next command goes there
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
                elif msg.error == RouterPassive.code and len(self._urls) > 1:
                    self._refused(msg.ref, call, msg.message)
                elif not call.future.done():
                    self._refused_delay = _REFUSED_FIRST_S
                    call.future.set_result(msg)
            elif self._on_message is not None:
                self._on_message(msg)
            else:
                log.debug("< ignored %s", msg.KIND)

    def _on_hello_answer(self, msg: wire.Reply | wire.HelloAck) -> None:
        if isinstance(msg, wire.HelloAck):
            self._refused_delay = _REFUSED_FIRST_S
            if self.epoch and msg.epoch != self.epoch:
                log.info("router restarted (epoch %s -> %s)", self.epoch, msg.epoch)
            self.epoch = msg.epoch
        elif msg.error == RouterPassive.code and len(self._urls) > 1:
            if self._hello_gen == self._generation:
                self._switch_refused(msg.message)
        elif msg.status >= 400 or msg.error:
            log.warning("router refused hello: %s (%s)", msg.error, msg.message)

    # -- a primary/backup pair ------------------------------------------------------------

    def _switch(self, why: str) -> None:
        """Talk to the next router from now on; say Hello to it before anything else."""
        old, self._current = self._urls[self._current], (self._current + 1) % len(self._urls)
        self._generation += 1
        self._sock, self._reader = self._socks[self._current]
        log.info("turning from router %s to %s (%s)", old, self._urls[self._current], why)
        self._hello_ref = self.next_ref()
        hello = wire.Hello(ref=self._hello_ref, node_id=self.node_id, role=self.role)
        self._need_hello = False
        stale = [item for item in self._backlog if item[1] == 0]  # Hellos for the old router
        for item in stale:
            self._backlog.remove(item)
        self._backlog.appendleft((wire.encode(hello), 0))
        self._kick_flusher()

    def _switch_refused(self, message: str) -> None:
        """Switch after a refusal; pause first, longer while every router refuses."""
        assert self._loop is not None
        self._switch(message or "it is standing by")
        self._not_before = self._loop.time() + self._refused_delay
        self._refused_delay = min(self._refused_delay * 2, _REFUSED_MAX_S)

    def _refused(self, ref: int, call: _Call, message: str) -> None:
        """A standing-by router refused (and applied nothing): send it to the next router."""
        assert self._loop is not None
        now = self._loop.time()
        if not call.retry_until:
            call.retry_until = now + self.connect_timeout
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        if now >= call.retry_until:
            self._fail(
                ref,
                RouterUnavailable(
                    f"no active router among {self.url} within {self.connect_timeout:g} s "
                    f"(the last one said: {message or 'standing by'})"
                ),
            )
            return
        if call.gen == self._generation:
            self._switch_refused(message)
        # Back in ref order (refs grow with submission), after the Hello that leads a switch.
        index = next((i for i, (_b, r) in enumerate(self._backlog) if r > ref), len(self._backlog))
        self._backlog.insert(index, (call.body, ref))
        self._kick_flusher()

    def _kick_flusher(self) -> None:
        if self._flusher is None and self._backlog:
            assert self._loop is not None
            self._flusher = self._loop.create_task(self._flush())


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

    @overload
    async def broadcast(
        self,
        rooms: Rooms,
        event: str = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: Literal[False] = ...,
    ) -> int: ...

    @overload
    async def broadcast(
        self,
        rooms: Rooms,
        event: str = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: Literal[True],
        confirm: bool = ...,
        confirm_timeout: float = ...,
    ) -> Receipt: ...

    async def broadcast(
        self,
        rooms: Rooms,
        event: str = "message",
        data: object = None,
        *,
        omit: SocketsLike | None = None,
        receipt: bool = False,
        confirm: bool = False,
        confirm_timeout: float = 5.0,
    ) -> int | Receipt:
        """Send ``event`` once to every member of any of ``rooms`` except ``omit``.

        Returns how many gateways the router handed the message to; with ``receipt=True`` a
        :class:`Receipt` (exact socket counts), and with ``confirm=True`` too, only once every
        gateway confirmed it queued the message (or ``confirm_timeout`` passed).
        """
        return await self.publish(rooms, event, data, omit, receipt, confirm, confirm_timeout)

    @overload
    async def blast(
        self,
        event: str = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: Literal[False] = ...,
    ) -> int: ...

    @overload
    async def blast(
        self,
        event: str = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: Literal[True],
        confirm: bool = ...,
        confirm_timeout: float = ...,
    ) -> Receipt: ...

    async def blast(
        self,
        event: str = "message",
        data: object = None,
        *,
        omit: SocketsLike | None = None,
        receipt: bool = False,
        confirm: bool = False,
        confirm_timeout: float = 5.0,
    ) -> int | Receipt:
        """Send ``event`` to every connected socket in the cluster except ``omit``."""
        return await self.publish(None, event, data, omit, receipt, confirm, confirm_timeout)

    async def publish(
        self,
        rooms: Rooms | None,
        event: str,
        data: object,
        omit: SocketsLike | None,
        receipt: bool,
        confirm: bool,
        confirm_timeout: float,
    ) -> int | Receipt:
        """What broadcast (``rooms``) and blast (``None``) share; one signature whatever the
        receipt flags, so SyncSockets can forward to it without the overloads."""
        msg = wire.Publish(
            ref=self._link.next_ref(),
            rooms=() if rooms is None else tuple(_room_list(rooms)),
            everyone=rooms is None,
            event=_event(event),
            data=encode_json(data),
            omit=_omit(omit),
            **_receipt_fields(receipt, confirm, confirm_timeout),
        )
        reply = await self._link.call(msg, wait=confirm_timeout if confirm else 0.0)
        return _publish_result(reply, receipt, confirm)

    async def presence(self, room: str) -> dict[str, dict[str, Any]]:
        """Users in ``room``: ``{user: {"connections": n, "meta": ...}}`` (exact, cluster-wide)."""
        reply = await self._query(wire.QueryKind.PRESENCE, _rooms.validate_room(room))
        result: dict[str, dict[str, Any]] = json.loads(reply.body or b"{}")
        return result

    async def presence_stats(self, room: str) -> dict[str, int]:
        """``{"connections": n, "users": m}`` for ``room`` (anonymous sockets are connections)."""
        reply = await self._query(wire.QueryKind.PRESENCE_STATS, _rooms.validate_room(room))
        result: dict[str, int] = json.loads(reply.body or b"{}")
        return result

    async def set_presence(self, socket: SocketLike, user: str | None, meta: object = None) -> None:
        """Give a socket a presence identity (``None`` clears it) and small JSON metadata."""
        if user is not None and (not isinstance(user, str) or not user):
            raise BadRequest("user must be a non-empty string or None")
        link = self._link
        msg = wire.SetPresence(
            ref=link.next_ref(),
            socket=get_id(socket),
            user=user or "",
            meta=encode_json(meta, "meta") if meta is not None else b"",
        )
        await link.call(msg)

    async def track_presence(self, room: str, enabled: bool = True) -> None:
        """Push presence join/leave events to ``room``'s members (or stop)."""
        link = self._link
        room = _rooms.validate_room(room)
        await link.call(wire.TrackPresence(ref=link.next_ref(), room=room, enabled=enabled))

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


@dataclasses.dataclass(frozen=True, slots=True)
class Receipt:
    """What a publish reached: ``sockets`` addressed (each once, ``omitted`` left out) on
    ``gateways``; with confirmation, ``confirmed`` sockets the gateways queued it for and
    whether every gateway answered in time (``complete``)."""

    gateways: int
    sockets: int
    omitted: int
    confirmed: int | None = None
    complete: bool | None = None


def _receipt_fields(receipt: bool, confirm: bool, timeout: float) -> dict[str, Any]:
    if not (receipt or confirm):
        return {}
    if confirm and not 0 < timeout <= 60:
        raise BadRequest("confirm_timeout must be within (0, 60] seconds")
    return {"receipt": True, "confirm": confirm, "confirm_timeout_ms": int(timeout * 1000)}


def _publish_result(reply: wire.Reply, receipt: bool, confirm: bool) -> int | Receipt:
    if not (receipt or confirm):
        return reply.gateways
    return Receipt(
        gateways=reply.gateways,
        sockets=reply.sockets,
        omitted=reply.omitted,
        confirmed=reply.confirmed if confirm else None,
        complete=reply.complete if confirm else None,
    )


def _omit(omit: SocketsLike | None) -> tuple[str, ...]:
    return () if omit is None else tuple(socket_ids(omit))


class Cluster:
    """The asyncio SDK for one roomcast cluster, reached through its router.

    ``Cluster("tcp://127.0.0.1:5570")`` opens nothing: the connection is made on first use, on
    the running event loop (and stays bound to it). ``timeout`` bounds the wait for each reply,
    ``connect_timeout`` the wait for a router to take a command. Use ``async with``, or
    ``await cluster.close()``. For a router that requires CURVE, ``curve_key`` is the path of
    our ``.key_secret`` certificate and ``curve_server_key`` that of the router's public
    ``.key``: both are read here (``ValueError`` when unusable); a key the router does not
    accept looks like an unreachable router (``RouterUnavailable``).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 2.0,
        curve_key: str | os.PathLike[str] | None = None,
        curve_server_key: str | os.PathLike[str] | None = None,
    ) -> None:
        self._link = Link(
            url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            curve=client_options(curve_key or "", curve_server_key or ""),
        )
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
