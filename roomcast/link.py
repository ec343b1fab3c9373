"""The SDK's one connection to the router: :class:`Link`, a ZeroMQ DEALER to its ``--commands``.

Owns everything between "send this command" and "here is its reply": the lazy connect on the
running event loop, ``Hello``, refs, reply futures, timeouts, the FIFO backlog (and the task that
flushes it) while no router takes commands, and failover across a primary/backup pair. The
rest of the client SDK (:mod:`roomcast.sockets`, :mod:`roomcast.cluster`, and models through
them) sends its commands through a :class:`Link` instead of touching the wire itself; an action
worker's own connection is :mod:`roomcast.worker`'s.

It takes commands already built (:data:`Command`) and checks their arguments no further than
encoding them requires; a reply means no more to it than its ref and its error, the rest is
its callers' to read. A ``router_passive`` refusal is sent again to the other router of a pair;
any other error reply becomes its typed exception in :meth:`Link.call` (or stays a ``Reply``
for a caller of :meth:`Link.submit`).

Order (architecture §5.2): every command is written to the socket synchronously, before the calling
coroutine first suspends, so calls started in some order (``asyncio.gather``, ``create_task``)
reach the router in that order; when the router is not reachable yet, commands wait in one FIFO
backlog rather than racing each other.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
from collections.abc import Callable
from typing import TypeAlias

import zmq

from roomcast.core import wire
from roomcast.core.errors import (
    BadRequest,
    RouterPassive,
    RouterUnavailable,
    StateError,
    Timeout,
    WireError,
    error_from_reply,
)
from roomcast.curve import PLAIN, SocketOptions
from roomcast.zmqio import BatchReader, new_context

__all__ = ["Command", "Link"]

# Still named for the module Link came from: logging configuration that names this logger, and
# the name printed on each of its lines (workers log with %(name)s), stay as they were.
log = logging.getLogger("roomcast.cluster")

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
            raise error_from_reply(reply.status, reply.error, reply.message, reply.body)
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
