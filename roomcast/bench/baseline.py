"""The bench's baseline: a minimal single-process Tornado broadcaster using plain ``write_message``.

This is what a straightforward Tornado app does, and what ``roomcast bench fanout --baseline``
and ``roomcast bench chat --baseline`` compare roomcast against in the same run: a room map
(room -> set of connections) in one process, and each broadcast encoded once and sent to every
member of its rooms with ``write_message`` (one call, one frame and one socket write per
recipient per message).

It speaks the subset of the plain ``/ws`` protocol (architecture §4) the bench drives, so the same
clients and publishers run against both: ``{"op":"welcome","socket":ID}`` on open, ``join`` and
``leave`` of ``rooms`` (or one ``room``) answered 200, ``broadcast`` to ``rooms`` pushed as
``{"op":"event","event":E,"data":D}`` once to every member of any of them, the sender left out
unless ``"echo": true`` (as the gateway does).

Run as a process: ``python -m roomcast.bench.baseline --host 127.0.0.1 --port 0`` prints
``READY {"public": "http://127.0.0.1:P"}``; SIGTERM closes the connections and exits 0.
Imports nothing from the gateway or the router.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import resource
import signal
import sys
from collections.abc import Sequence
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket

__all__ = ["Rooms", "build_parser", "main", "make_app"]

log = logging.getLogger("roomcast.bench.baseline")

_ids = itertools.count(1)
_DRAIN_S = 2.0  # how long SIGTERM waits for clients to answer the close


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Rooms:
    """The baseline's whole state: open connections, and room -> members."""

    def __init__(self) -> None:
        self.conns: set[Any] = set()
        self.members: dict[str, set[Any]] = {}

    def join(self, conn: Any, rooms: list[str]) -> None:
        for room in rooms:
            self.members.setdefault(room, set()).add(conn)

    def leave(self, conn: Any, rooms: list[str]) -> None:
        for room in rooms:
            members = self.members.get(room)
            if members is not None:
                members.discard(conn)
                if not members:
                    del self.members[room]

    def recipients(self, rooms: list[str]) -> set[Any] | list[Any]:
        if len(rooms) == 1:
            return list(self.members.get(rooms[0], ()))
        out: set[Any] = set()
        for room in rooms:
            out.update(self.members.get(room, ()))
        return out


def _rooms_of(msg: dict[str, Any]) -> list[str]:
    rooms = msg.get("rooms")
    if rooms is None and isinstance(msg.get("room"), str):
        rooms = [msg["room"]]
    if not isinstance(rooms, list):
        return []
    return [r for r in rooms if isinstance(r, str)]


class _Broadcaster(tornado.websocket.WebSocketHandler):
    state: Rooms

    def initialize(self, state: Rooms) -> None:
        self.state = state
        self.sid = f"b{next(_ids)}"
        self.joined: set[str] = set()

    def check_origin(self, origin: str) -> bool:
        return True

    def open(self, *args: str, **kwargs: str) -> None:
        self.set_nodelay(True)
        self.state.conns.add(self)
        self.write_message(_dumps({"op": "welcome", "socket": self.sid}))

    def on_close(self) -> None:
        self.state.conns.discard(self)
        self.state.leave(self, list(self.joined))
        self.joined.clear()

    def on_message(self, message: str | bytes) -> None:
        try:
            msg = json.loads(message)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        op, ref = msg.get("op"), msg.get("ref")
        if op == "join":
            rooms = _rooms_of(msg)
            self.state.join(self, rooms)
            self.joined.update(rooms)
        elif op == "leave":
            rooms = _rooms_of(msg)
            self.state.leave(self, rooms)
            self.joined.difference_update(rooms)
        elif op == "broadcast":
            payload = _dumps(
                {"op": "event", "event": msg.get("event", "message"), "data": msg.get("data")}
            )
            echo = msg.get("echo") is True
            for conn in self.state.recipients(_rooms_of(msg)):
                if echo or conn is not self:
                    try:
                        conn.write_message(payload)
                    except tornado.websocket.WebSocketClosedError:
                        pass
        if ref is not None and op in ("broadcast", "join", "leave"):
            reply = {"op": "reply", "ref": ref, "statusCode": 200, "body": {}, "headers": {}}
            self.write_message(_dumps(reply))


def make_app(state: Rooms) -> tornado.web.Application:
    return tornado.web.Application(
        [(r"/ws", _Broadcaster, {"state": state})], log_function=lambda handler: None
    )


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _serve(host: str, port: int) -> None:
    state = Rooms()
    conns = state.conns
    sockets = tornado.netutil.bind_sockets(port, host, backlog=4096)
    server = tornado.httpserver.HTTPServer(make_app(state))
    server.add_sockets(sockets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = sockets[0].getsockname()[1]
    sys.stdout.write("READY " + _dumps({"public": f"http://{host}:{bound}"}) + "\n")
    sys.stdout.flush()
    await stop.wait()
    server.stop()
    for conn in list(conns):
        conn.close(1001, "going away")
    deadline = loop.time() + _DRAIN_S
    while conns and loop.time() < deadline:
        await asyncio.sleep(0.05)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m roomcast.bench.baseline",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="The bench's baseline: one-process Tornado room map (plain write_message).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=0, help="port number to bind (0: a free one)")
    parser.add_argument(
        "--log-level", default="WARNING", help="least severe log level written to stderr"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper())
    _raise_fd_limit()
    asyncio.run(_serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
