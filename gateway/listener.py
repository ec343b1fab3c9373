"""The gateway's HTTP listeners: timeouts, a connection bound that counts half-open connections,
and an accept loop that backs off when the process runs out of file descriptors.

Tornado's defaults hold a connection whose headers trickle in for an hour, count nothing before
a WebSocket upgrade, and, when ``accept()`` fails with EMFILE, raise from the accept handler on
every loop turn: 100% CPU, a traceback per turn, and health checks that time out. Here:

* headers must arrive within ``header_timeout_s`` and a request body within ``body_timeout_s``
  (Tornado's ``idle_connection_timeout`` / ``body_timeout``);
* every accepted connection counts (``pending``) until its HTTP exchange ends — upgraded to a
  WebSocket (the hub counts it from then on), answered, or timed out — and a connection that
  ``admit(pending)`` refuses is answered ``503`` and closed in the accept loop itself, so
  refusals never hold descriptors;
* EMFILE/ENFILE (and ENOBUFS/ENOMEM) stop accepting on that socket for a backoff that doubles
  from ``BACKOFF_MIN_S`` to ``BACKOFF_MAX_S``, counted and logged once per pause; the kernel
  keeps the waiting connections in the listen backlog meanwhile.

Relies on two TCPServer internals (``_sockets``/``_handlers`` for ``stop()``, and
``_handle_connection``) that tests/component/test_tornado_internals.py pins.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

import tornado.httpserver
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

__all__ = ["BACKOFF_MAX_S", "BACKOFF_MIN_S", "Listener", "connection_caps"]

log = logging.getLogger("roomcast.gateway.listener")

BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 1.0
_ACCEPTS_PER_TURN = 128  # then let the loop serve others (Tornado uses its backlog, 128)
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_FULL_BODY = b'{"error":"max_connections","message":"this gateway is full: connect to another"}'
_FULL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_FULL_BODY), _FULL_BODY)
)


class Listener(tornado.httpserver.HTTPServer):
    """An HTTPServer with a connection bound, and an accept loop that backs off."""

    pending = 0  # connections in their HTTP exchange (not yet upgraded, answered or closed)
    _admit: Callable[[int], bool] = staticmethod(lambda pending: True)
    _refused: Callable[[], None] = staticmethod(lambda: None)
    _accept_failed: Callable[[str], None] = staticmethod(lambda reason: None)

    def limit(
        self,
        *,
        admit: Callable[[int], bool],
        refused: Callable[[], None],
        accept_failed: Callable[[str], None],
    ) -> None:
        """``admit(pending)``: whether one more connection may start; ``refused()`` counts a
        503; ``accept_failed(reason)`` counts an accept() that ran out of resources."""
        self._admit = admit
        self._refused = refused
        self._accept_failed = accept_failed

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = self._accept_loop(sock)

    def handle_stream(self, stream: IOStream, address: Any) -> None:
        self.pending += 1
        super().handle_stream(stream, address)

    def _refuse(self, conn: socket.socket) -> None:
        """503 and close at once: a refused connection must not hold a descriptor."""
        self._refused()
        try:
            conn.setblocking(False)
            conn.send(_FULL)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # it went away already, or its buffer is full: the close says enough
        conn.close()

    def on_close(self, server_conn: object) -> None:
        self.pending -= 1
        super().on_close(server_conn)

    def _accept_loop(self, sock: socket.socket) -> Callable[[], None]:
        io_loop = IOLoop.current()
        state = {"removed": False, "paused": False, "backoff": BACKOFF_MIN_S}

        def resume() -> None:
            if state["removed"] or not state["paused"]:
                return
            state["paused"] = False
            io_loop.add_handler(sock, on_readable, IOLoop.READ)

        def on_readable(fd: Any, events: int) -> None:
            for _ in range(_ACCEPTS_PER_TURN):
                if state["removed"]:
                    return
                try:
                    conn, address = sock.accept()
                except BlockingIOError:
                    return
                except ConnectionAbortedError:
                    continue
                except OSError as exc:
                    if exc.errno not in _OUT_OF_RESOURCES:
                        raise
                    delay = float(state["backoff"])
                    state["backoff"] = min(delay * 2, BACKOFF_MAX_S)
                    state["paused"] = True
                    io_loop.remove_handler(sock)
                    io_loop.call_later(delay, resume)
                    reason = errno.errorcode.get(exc.errno or 0, "oserror").lower()
                    self._accept_failed(reason)
                    log.warning(
                        "accept() failed (%s): pausing accepts on port %d for %.2fs",
                        reason,
                        sock.getsockname()[1],
                        delay,
                    )
                    return
                state["backoff"] = BACKOFF_MIN_S
                if not self._admit(self.pending):
                    self._refuse(conn)
                    continue
                self._handle_connection(conn, address)

        def remove() -> None:
            if not state["paused"]:
                io_loop.remove_handler(sock)
            state["removed"] = True

        io_loop.add_handler(sock, on_readable, IOLoop.READ)
        return remove


def connection_caps(max_connections: int, open_files: int, in_use: int) -> tuple[int, int]:
    """(soft, hard): --max-connections, lowered so that clients never take the descriptors the
    process needs for everything else (``in_use`` now, plus a reserve for the internal port,
    health checks and the API's router link). Past ``soft`` a request is answered 503 once
    read; past ``hard`` (a quarter of the reserve later) a connection is closed at accept."""
    reserve = min(1024, max(open_files // 4, 64))
    soft = max(1, min(max_connections, open_files - in_use - reserve))
    return soft, soft + reserve // 4
