"""The blocking backend SDK (``SyncCluster``) for Django, Flask and other threaded code.

Owns one private I/O thread per ``SyncCluster``, running its own asyncio loop and one
:class:`~roomcast.cluster.Cluster`; every blocking call hands a coroutine to that loop with
``asyncio.run_coroutine_threadsafe`` and waits for it. Submissions are made under a lock and the
loop starts them in submission order, and a ``Cluster`` writes each command before its coroutine
first suspends, so calls reach the router in the order they were made (architecture §5.2), from
one thread or several. :class:`SyncSockets` is its ``cluster.sockets``; the blocking models of
``cluster.model()`` are :mod:`roomcast.sync_model`'s (:class:`SyncModel`, re-exported here).

The thread, loop and connection start on first use, so a ``SyncCluster`` created at import time
in a pre-forking server (gunicorn ``--preload``) is fine; one used before a fork starts afresh
in the child.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

from roomcast.cluster import Cluster
from roomcast.core.errors import StateError, Timeout
from roomcast.core.limits import DEFAULT_MAX_PUBLISH_BYTES
from roomcast.requests import Response, SocketLike, SocketsLike, get_id
from roomcast.sockets import Receipt, Rooms
from roomcast.sync_model import SyncModel

__all__ = ["SyncCluster", "SyncModel", "SyncSockets"]

T = TypeVar("T")

# A forked child must not touch its parent's zmq context or loop (not even to close them):
# keeping a reference stops their finalizers from running in the child.
_ABANDONED_IN_FORK: list[object] = []

# Extra wait beyond the Cluster's own timeouts before deciding the I/O thread itself is stuck.
_IO_GRACE_S = 5.0


class _IOThread:
    """A daemon thread running one event loop until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            try:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


async def _shutdown(cluster: Cluster) -> None:
    await cluster.close()
    # close() failed every pending call; let their tasks finish so none is destroyed pending.
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.gather(*others, return_exceptions=True)


class SyncCluster:
    """``Cluster`` with plain blocking methods: ``SyncCluster(url).sockets.broadcast(...)``.

    Thread-safe. ``close()`` (or ``with SyncCluster(url) as cluster:``) stops the I/O thread;
    a forgotten one is a daemon thread and does not keep the process alive. ``curve_key`` and
    ``curve_server_key``: CURVE key files, as for :class:`Cluster`.
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
        # Fail on a bad url, timeout or key file here, in the caller's frame, not on first use.
        Cluster(
            url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            curve_key=curve_key,
            curve_server_key=curve_server_key,
            max_publish_bytes=max_publish_bytes,
        )
        self._max_publish_bytes = max_publish_bytes
        self._curve_key = curve_key
        self._curve_server_key = curve_server_key
        self.url = url
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._io: _IOThread | None = None
        self._cluster: Cluster | None = None
        self._pid = 0
        self._closed = False
        self.sockets = SyncSockets(self)

    def run(self, make: Callable[[Cluster], Coroutine[Any, Any, T]], *, wait: float = 0.0) -> T:
        """Run ``make(cluster)`` on the I/O thread and wait for its result (for SDK modules);
        ``wait``: seconds the router may hold the reply on purpose (publish confirmations)."""
        with self._lock:
            if self._closed:
                raise StateError("cluster is closed")
            if self._pid != os.getpid():
                self._start()
            assert self._io is not None and self._cluster is not None
            if threading.current_thread() is self._io.thread:
                # Waiting here would block the very loop that has to answer.
                raise StateError("a SyncCluster cannot be called from its own i/o thread")
            # The coroutine is created only once it is sure to be scheduled, so a racing
            # close() can never leave one un-awaited.
            fut = asyncio.run_coroutine_threadsafe(make(self._cluster), self._io.loop)
        try:
            return fut.result(self._timeout + self._connect_timeout + _IO_GRACE_S + wait)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise Timeout("the roomcast i/o thread did not answer in time") from None

    def model(self, identity: str, *, primary_key: str = "id") -> SyncModel:
        """Blocking Resourceful PubSub for one model identity."""
        return SyncModel(self, identity, primary_key=primary_key)

    def request(
        self,
        socket: SocketLike,
        method: str,
        url: str,
        data: object = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Route a virtual request on behalf of ``socket`` (see :meth:`Cluster.request`)."""
        return self.run(lambda c: c.request(socket, method, url, data, headers))

    def close(self) -> None:
        """Close the connection and stop the I/O thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            io, cluster = self._io, self._cluster
            self._io = self._cluster = None
            if io is None or cluster is None:
                return
            if self._pid != os.getpid():
                _ABANDONED_IN_FORK.append((io, cluster))
                return
            try:
                asyncio.run_coroutine_threadsafe(_shutdown(cluster), io.loop).result(
                    self._connect_timeout + _IO_GRACE_S
                )
            finally:
                io.stop()

    def _start(self) -> None:
        if self._io is not None:
            _ABANDONED_IN_FORK.append((self._io, self._cluster))
        self._io = _IOThread(f"roomcast-io-{id(self):x}")
        self._cluster = Cluster(
            self.url,
            timeout=self._timeout,
            connect_timeout=self._connect_timeout,
            curve_key=self._curve_key,
            curve_server_key=self._curve_server_key,
            max_publish_bytes=self._max_publish_bytes,
        )
        self._pid = os.getpid()

    def __enter__(self) -> SyncCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._io is not None else "idle"
        return f"<SyncCluster {self.url} {state}>"


class SyncSockets:
    """``sails.sockets`` as blocking calls; same arguments, results and errors as the async API."""

    def __init__(self, cluster: SyncCluster) -> None:
        self._cluster = cluster

    def join(self, sockets: SocketsLike, rooms: Rooms) -> None:
        self._cluster.run(lambda c: c.sockets.join(sockets, rooms))

    def leave(self, sockets: SocketsLike, rooms: Rooms) -> None:
        self._cluster.run(lambda c: c.sockets.leave(sockets, rooms))

    def leave_all(self, room: str) -> None:
        self._cluster.run(lambda c: c.sockets.leave_all(room))

    def add_room_members_to_rooms(self, src: SocketLike, dests: Rooms) -> None:
        self._cluster.run(lambda c: c.sockets.add_room_members_to_rooms(src, dests))

    def remove_room_members_from_rooms(self, src: SocketLike, dests: Rooms) -> None:
        self._cluster.run(lambda c: c.sockets.remove_room_members_from_rooms(src, dests))

    @overload
    def broadcast(
        self,
        rooms: Rooms,
        event: object = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: Literal[False] = ...,
        confirm: Literal[False] = ...,
        confirm_timeout: float = ...,
    ) -> int: ...

    @overload
    def broadcast(
        self,
        rooms: Rooms,
        event: object = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: Literal[True],
        confirm: bool = ...,
        confirm_timeout: float = ...,
    ) -> Receipt: ...

    @overload
    def broadcast(
        self,
        rooms: Rooms,
        event: object = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: bool = ...,
        confirm: Literal[True],
        confirm_timeout: float = ...,
    ) -> Receipt: ...

    @overload
    def broadcast(
        self,
        rooms: Rooms,
        event: object = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: bool = ...,
        confirm: bool = ...,
        confirm_timeout: float = ...,
    ) -> int | Receipt: ...

    def broadcast(
        self,
        rooms: Rooms,
        event: object = "message",
        data: object = None,
        *,
        omit: SocketsLike | None = None,
        receipt: bool = False,
        confirm: bool = False,
        confirm_timeout: float = 5.0,
    ) -> int | Receipt:
        """See :meth:`roomcast.sockets.Sockets.broadcast`."""

        return self._publish(rooms, event, data, omit, receipt, confirm, confirm_timeout)

    @overload
    def blast(
        self,
        event: object = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: Literal[False] = ...,
        confirm: Literal[False] = ...,
        confirm_timeout: float = ...,
    ) -> int: ...

    @overload
    def blast(
        self,
        event: object = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: Literal[True],
        confirm: bool = ...,
        confirm_timeout: float = ...,
    ) -> Receipt: ...

    @overload
    def blast(
        self,
        event: object = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: bool = ...,
        confirm: Literal[True],
        confirm_timeout: float = ...,
    ) -> Receipt: ...

    @overload
    def blast(
        self,
        event: object = ...,
        data: object = ...,
        *,
        omit: SocketsLike | None = ...,
        receipt: bool = ...,
        confirm: bool = ...,
        confirm_timeout: float = ...,
    ) -> int | Receipt: ...

    def blast(
        self,
        event: object = "message",
        data: object = None,
        *,
        omit: SocketsLike | None = None,
        receipt: bool = False,
        confirm: bool = False,
        confirm_timeout: float = 5.0,
    ) -> int | Receipt:
        """See :meth:`roomcast.sockets.Sockets.blast`."""

        return self._publish(None, event, data, omit, receipt, confirm, confirm_timeout)

    def _publish(
        self,
        rooms: Rooms | None,
        event: object,
        data: object,
        omit: SocketsLike | None,
        receipt: bool,
        confirm: bool,
        confirm_timeout: float,
    ) -> int | Receipt:
        args = (rooms, event, data, omit, receipt, confirm, confirm_timeout)
        wait = confirm_timeout if confirm else 0.0
        return self._cluster.run(lambda c: c.sockets.publish(*args), wait=wait)

    def presence(self, room: str) -> dict[str, dict[str, Any]]:
        return self._cluster.run(lambda c: c.sockets.presence(room))

    def presence_stats(self, room: str) -> dict[str, int]:
        return self._cluster.run(lambda c: c.sockets.presence_stats(room))

    def set_presence(self, socket: SocketLike, user: str | None, meta: object = None) -> None:
        self._cluster.run(lambda c: c.sockets.set_presence(socket, user, meta))

    def track_presence(self, room: str, enabled: bool = True) -> None:
        self._cluster.run(lambda c: c.sockets.track_presence(room, enabled))

    def count(self, room: str) -> int:
        return self._cluster.run(lambda c: c.sockets.count(room))

    def members(self, room: str) -> list[str]:
        return self._cluster.run(lambda c: c.sockets.members(room))

    def rooms(self, socket: SocketLike) -> list[str]:
        return self._cluster.run(lambda c: c.sockets.rooms(socket))

    def get_id(self, req: SocketLike) -> str:
        return get_id(req)
