"""ZeroMQ sockets driven from an asyncio (or Tornado) event loop, in batches.

One loop wake-up drains many messages with non-blocking reads (a naive ``await recv`` per message
is 3-5x slower). The ZeroMQ FD is edge-triggered: after draining and after any send on the same
socket, ``EVENTS`` must be checked again or a pending message can go unnoticed, so the reader
re-arms itself with ``call_soon`` whenever ``POLLIN`` is still set; code that sends on a socket
outside the batch callback calls :meth:`BatchReader.kick`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import zmq

__all__ = ["BatchReader", "BindError", "bind", "new_context"]

log = logging.getLogger(__name__)

Batch = list[list[bytes]]


def new_context() -> zmq.Context[zmq.Socket[bytes]]:
    """A fresh (non-global) context, so tests can run several components in one process."""
    return zmq.Context()


class BindError(Exception):
    """An address could not be bound (in use, not ours, malformed): ``url`` and why."""

    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(f"cannot bind {url}: {reason}")


def bind(sock: zmq.Socket[bytes], url: str) -> str:
    """Bind ``sock`` to ``url`` (port 0: any free port) and return the endpoint it got.

    Raises :class:`BindError` naming the address when it cannot be had."""
    wanted = url
    if url.endswith(":0"):
        url = url[:-2] + ":*"
    try:
        sock.bind(url)
    except zmq.ZMQError as exc:
        raise BindError(wanted, zmq.strerror(exc.errno or 0).lower()) from None
    endpoint: bytes = sock.getsockopt(zmq.LAST_ENDPOINT)  # type: ignore[assignment]
    return endpoint.decode()


class BatchReader:
    """Calls ``on_batch`` with up to ``batch_size`` multipart messages per loop turn.

    ``user_id``: append to each message, as one more part, the ZAP ``User-Id`` its connection
    was admitted with (a CURVE key's role, roomcast.curve); slower, so only with CURVE on."""

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        on_batch: Callable[[Batch], None],
        *,
        batch_size: int = 1024,
        user_id: bool = False,
    ) -> None:
        self._sock = sock
        self._on_batch = on_batch
        self._batch_size = batch_size
        self._user_id = user_id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._closed = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.FD, self._on_readable)
        self.kick()

    def stop(self) -> None:
        if self._loop is not None and not self._closed:
            self._closed = True
            try:
                self._loop.remove_reader(self._sock.FD)
            except (ValueError, OSError, zmq.ZMQError):
                pass

    def kick(self) -> None:
        """Schedule a drain (after sending on this socket from outside ``on_batch``)."""
        if self._loop is not None and not self._scheduled and not self._closed:
            self._scheduled = True
            self._loop.call_soon(self._on_readable)

    def _on_readable(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        sock = self._sock
        batch: Batch = []
        recv = sock.recv_multipart
        try:
            if self._user_id:
                while len(batch) < self._batch_size:
                    frames = recv(zmq.NOBLOCK, copy=False)
                    try:
                        user = str(frames[-1].get("User-Id") or "")
                    except zmq.ZMQError:  # no ZAP on this connection
                        user = ""
                    batch.append([f.bytes for f in frames] + [user.encode()])
            while len(batch) < self._batch_size:
                batch.append(recv(zmq.NOBLOCK))
        except zmq.Again:
            pass
        except zmq.ZMQError as exc:  # socket closed under us during shutdown
            log.debug("zmq recv stopped: %s", exc)
            return
        if batch:
            try:
                self._on_batch(batch)
            except Exception:
                log.exception("batch handler failed")
        try:
            events: int = sock.getsockopt(zmq.EVENTS)  # type: ignore[assignment]
            more = bool(events & zmq.POLLIN)
        except zmq.ZMQError:
            return
        if more:
            self.kick()
