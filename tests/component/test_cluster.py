"""roomcast.cluster and roomcast.sync against a real ZeroMQ ROUTER that plays the router.

The fake router runs in a thread on tcp://127.0.0.1 (random port), decodes every command with
``wire.decode`` and answers with whatever the test's handler returns, so each test controls the
router's side exactly: reply order, error replies, silence, garbage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import pytest
import zmq

import roomcast
from roomcast import (
    BadRequest,
    Cluster,
    Forbidden,
    InvalidRoom,
    NoSuchSocket,
    NoWorker,
    Request,
    Response,
    RoomcastError,
    RouterUnavailable,
    StateError,
    SyncCluster,
    Timeout,
    TooManyRooms,
)
from roomcast.core import wire
from tests.conftest import TIMEOUT_UNIT, deadline_poll

# Waits that are instant on an idle machine but must not flake on a loaded 2-core CI box.
DEADLINE_S = 10 * TIMEOUT_UNIT

Handler = Callable[[wire.Message], Iterable["wire.Message | bytes"]]


def answer(msg: wire.Message) -> list[wire.Message | bytes]:
    """A well-behaved router: HelloAck to Hello, a 200 Reply to every command."""
    if isinstance(msg, wire.Hello):
        return [wire.HelloAck(ref=msg.ref, epoch="e1", heartbeat_interval_ms=1000)]
    if isinstance(msg, wire.Publish):
        return [wire.Reply(ref=msg.ref, gateways=2)]
    if isinstance(msg, wire.Query):
        return [wire.Reply(ref=msg.ref, count=3, names=("s1", "s2"))]
    ref = getattr(msg, "ref", 0)
    return [wire.Reply(ref=ref)] if ref else []


class FakeRouter:
    """A ROUTER socket on loopback, served by a thread that applies ``handler`` to each command."""

    def __init__(self, port: int = 0, handler: Handler = answer) -> None:
        self.handler = handler
        self._received: list[wire.Message] = []
        self._lock = threading.Lock()
        self._outbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._error: BaseException | None = None
        self._identity = b""
        self.url = ""
        self._thread = threading.Thread(target=self._run, args=(port,), daemon=True)
        self._thread.start()
        assert self._bound.wait(DEADLINE_S)
        if self._error is not None:
            raise self._error

    def _run(self, port: int) -> None:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            try:
                if port:
                    sock.bind(f"tcp://127.0.0.1:{port}")
                else:
                    port = sock.bind_to_random_port("tcp://127.0.0.1")
                self.url = f"tcp://127.0.0.1:{port}"
            except BaseException as exc:
                self._error = exc
                return
            finally:
                self._bound.set()
            while not self._stop.is_set():
                while not self._outbox.empty():
                    sock.send_multipart([self._identity, self._outbox.get()])
                # The poll timeout only bounds how late stop() and send() are noticed.
                if not sock.poll(5):
                    continue
                identity, body = sock.recv_multipart()
                self._identity = identity
                msg = wire.decode(body)
                with self._lock:
                    self._received.append(msg)
                for out in self.handler(msg):
                    data = out if isinstance(out, bytes) else wire.encode(out)
                    sock.send_multipart([identity, data])
        finally:
            sock.close()
            ctx.term()

    def send(self, msg: wire.Message) -> None:
        """Send ``msg`` to the last peer, from the router thread."""
        self._outbox.put(wire.encode(msg))

    @property
    def received(self) -> list[wire.Message]:
        with self._lock:
            return list(self._received)

    def commands(self) -> list[wire.Message]:
        return [m for m in self.received if not isinstance(m, wire.Hello)]

    def wait_for(self, predicate: Callable[[list[wire.Message]], bool]) -> None:
        deadline_poll(lambda: predicate(self.received), DEADLINE_S, 0.005, message="the router")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(DEADLINE_S)
        assert not self._thread.is_alive()


@pytest.fixture
def router() -> Iterator[FakeRouter]:
    r = FakeRouter()
    yield r
    r.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def no_ref(msg: wire.Message) -> wire.Message:
    return dataclasses.replace(msg, ref=0) if hasattr(msg, "ref") else msg  # type: ignore[arg-type]


class Sock:
    def __init__(self, socket: str) -> None:
        self.socket = socket


REQ = Request("s1", method="POST", url="/chat/join")


# -- asyncio Cluster ----------------------------------------------------------------------


def test_lazy_connect_says_hello_first(router: FakeRouter) -> None:
    cluster = Cluster(router.url)  # no event loop needed: nothing happens yet
    assert not cluster.link.connected and "idle" in repr(cluster)

    async def main() -> int:
        async with cluster:
            assert not cluster.link.connected
            return await cluster.sockets.count("lobby")

    assert asyncio.run(main()) == 3
    hello, query = router.received
    assert isinstance(hello, wire.Hello)
    assert hello.role is wire.Role.CLIENT
    assert hello.node_id == cluster.link.node_id and hello.node_id
    assert hello.protocol_version == wire.PROTOCOL_VERSION
    assert no_ref(query) == wire.Query(kind=wire.QueryKind.COUNT, target="lobby")
    assert hello.ref and query.ref and hello.ref != query.ref  # type: ignore[union-attr]
    assert cluster.link.epoch == "e1"
    assert "closed" in repr(cluster)


def test_replies_are_matched_by_ref(router: FakeRouter) -> None:
    held: list[wire.Query] = []

    def reverse(msg: wire.Message) -> list[wire.Message | bytes]:
        if not isinstance(msg, wire.Query):
            return list(answer(msg))
        held.append(msg)
        if len(held) < 3:
            return []
        return [wire.Reply(ref=q.ref, count=int(q.target[1:])) for q in reversed(held)]

    router.handler = reverse

    async def main() -> list[int]:
        async with Cluster(router.url) as cluster:
            s = cluster.sockets
            return list(await asyncio.gather(s.count("r1"), s.count("r2"), s.count("r3")))

    assert asyncio.run(main()) == [1, 2, 3]


@pytest.mark.parametrize(
    ("status", "code", "exc_type"),
    [
        (404, "no_such_socket", NoSuchSocket),
        (400, "invalid_room", InvalidRoom),
        (400, "bad_request", BadRequest),
        (403, "forbidden", Forbidden),
        (429, "too_many_rooms", TooManyRooms),
        (503, "no_worker", NoWorker),
        (418, "short_and_stout", RoomcastError),
    ],
)
def test_error_replies_raise_typed_errors(
    router: FakeRouter, status: int, code: str, exc_type: type[RoomcastError]
) -> None:
    def refuse(msg: wire.Message) -> list[wire.Message | bytes]:
        if isinstance(msg, wire.Membership):
            return [wire.Reply(ref=msg.ref, status=status, error=code, message="nope: s9")]
        return list(answer(msg))

    router.handler = refuse

    async def main() -> None:
        async with Cluster(router.url) as cluster:
            with pytest.raises(exc_type) as info:
                await cluster.sockets.join("s9", "lobby")
            assert (info.value.status, info.value.code, info.value.message) == (
                status,
                code,
                "nope: s9",
            )
            # The connection is still good after an error.
            assert await cluster.sockets.count("lobby") == 3

    asyncio.run(main())


def test_timeout_then_late_reply_is_ignored(router: FakeRouter) -> None:
    first: list[wire.Query] = []

    def slow_once(msg: wire.Message) -> list[wire.Message | bytes]:
        if not isinstance(msg, wire.Query):
            return list(answer(msg))
        if not first:
            first.append(msg)  # no answer: the caller times out
            return []
        # The late answer to the first query arrives just before the second one's.
        return [wire.Reply(ref=first[0].ref, count=99), wire.Reply(ref=msg.ref, count=2)]

    router.handler = slow_once

    async def main() -> None:
        async with Cluster(router.url, timeout=0.5) as cluster:
            with pytest.raises(Timeout):
                await cluster.sockets.count("a")
            assert await cluster.sockets.count("b") == 2

    asyncio.run(main())


def test_router_unavailable_when_nothing_listens() -> None:
    url = f"tcp://127.0.0.1:{free_port()}"

    async def main() -> None:
        async with Cluster(url, connect_timeout=0.2) as cluster:
            started = time.monotonic()
            results = await asyncio.gather(
                cluster.sockets.count("a"),
                cluster.sockets.broadcast("a"),
                cluster.sockets.join("s1", "a"),
                return_exceptions=True,
            )
            assert all(isinstance(r, RouterUnavailable) for r in results), results
            assert time.monotonic() - started < 5.0
            with pytest.raises(RouterUnavailable):  # and again, not stuck
                await cluster.sockets.count("a")

    asyncio.run(main())


def test_commands_wait_for_a_router_that_starts_later() -> None:
    port = free_port()

    async def main() -> None:
        async with Cluster(f"tcp://127.0.0.1:{port}", connect_timeout=DEADLINE_S) as cluster:
            first = asyncio.ensure_future(cluster.sockets.broadcast("a", data=1))
            second = asyncio.ensure_future(cluster.sockets.broadcast("a", data=2))
            deadline = time.monotonic() + DEADLINE_S
            while not cluster.link.connected:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.005)
            late_router = FakeRouter(port)
            try:
                assert await first == 2 and await second == 2
                kinds = [type(m) for m in late_router.received]
                assert kinds == [wire.Hello, wire.Publish, wire.Publish]
                assert [m.data for m in late_router.commands()] == [b"1", b"2"]  # type: ignore[union-attr]
            finally:
                late_router.close()

    asyncio.run(main())


def test_close_fails_calls_in_flight_and_refuses_new_ones(router: FakeRouter) -> None:
    router.handler = lambda msg: answer(msg) if isinstance(msg, wire.Hello) else []

    async def main() -> None:
        cluster = Cluster(router.url)
        pending = asyncio.ensure_future(cluster.sockets.members("a"))
        deadline = time.monotonic() + DEADLINE_S
        while not router.commands():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        await cluster.close()
        with pytest.raises(RouterUnavailable):
            await pending
        with pytest.raises(StateError):
            await cluster.sockets.count("a")
        await cluster.close()  # idempotent
        assert "closed" in repr(cluster)

    asyncio.run(main())


def test_close_before_use_opens_nothing() -> None:
    async def main() -> None:
        cluster = Cluster("tcp://127.0.0.1:1")
        await cluster.close()
        assert not cluster.link.connected
        with pytest.raises(StateError):
            await cluster.sockets.blast()

    asyncio.run(main())


def test_pipelined_calls_reach_the_router_in_call_order(router: FakeRouter) -> None:
    async def main() -> None:
        async with Cluster(router.url) as cluster:
            s = cluster.sockets
            calls = []
            for i in range(100):
                calls.append(
                    s.join(f"s{i}", "room") if i % 10 == 0 else s.broadcast("room", "n", i)
                )
            await asyncio.gather(*calls)

    asyncio.run(main())
    seen = []
    for msg in router.commands():
        if isinstance(msg, wire.Publish):
            seen.append(json.loads(msg.data))
        else:
            assert isinstance(msg, wire.Membership)
            seen.append(msg.sockets[0])
    assert seen == [f"s{i}" if i % 10 == 0 else i for i in range(100)]


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            lambda c: c.sockets.join("s1", "lobby"),
            wire.Membership(sockets=("s1",), rooms=("lobby",)),
        ),
        (
            lambda c: c.sockets.join([REQ, "s2", Sock("s3"), "s2"], ("a", "b")),
            wire.Membership(sockets=("s1", "s2", "s3"), rooms=("a", "b")),
        ),
        (
            lambda c: c.sockets.leave(REQ, ["a"]),
            wire.Membership(leave=True, sockets=("s1",), rooms=("a",)),
        ),
        (lambda c: c.sockets.leave_all("a"), wire.LeaveAll(room="a")),
        (
            lambda c: c.sockets.add_room_members_to_rooms(REQ, "b"),
            wire.CopyMembers(source="s1", rooms=("b",)),
        ),
        (
            lambda c: c.sockets.remove_room_members_from_rooms("a", ["b", "c"]),
            wire.CopyMembers(remove=True, source="a", rooms=("b", "c")),
        ),
        (
            lambda c: c.sockets.broadcast("a", "chat", {"text": "héllo", "n": [1, None]}),
            wire.Publish(rooms=("a",), event="chat", data='{"text":"héllo","n":[1,null]}'.encode()),
        ),
        (
            lambda c: c.sockets.broadcast(["a", "sails_model_user_7:user"]),
            wire.Publish(rooms=("a", "sails_model_user_7:user"), event="message", data=b"null"),
        ),
        (
            lambda c: c.sockets.blast("tick", 1, omit=REQ),
            wire.Publish(everyone=True, event="tick", data=b"1", omit=("s1",)),
        ),
        (
            lambda c: c.sockets.count("a"),
            wire.Query(kind=wire.QueryKind.COUNT, target="a"),
        ),
        (
            lambda c: c.sockets.members("a"),
            wire.Query(kind=wire.QueryKind.MEMBERS, target="a"),
        ),
        (
            lambda c: c.sockets.rooms(REQ),
            wire.Query(kind=wire.QueryKind.ROOMS, target="s1"),
        ),
        (
            lambda c: c.request(REQ, "post", "/chat/join", {"x": 1}, {"h": "v"}),
            wire.Request(
                socket="s1", method="POST", url="/chat/join", headers=b'{"h":"v"}', data=b'{"x":1}'
            ),
        ),
    ],
)
def test_each_call_sends_one_command(router: FakeRouter, call, expected) -> None:
    async def main() -> None:
        async with Cluster(router.url) as cluster:
            await call(cluster)

    asyncio.run(main())
    (sent,) = router.commands()
    assert sent.ref  # type: ignore[union-attr]
    assert no_ref(sent) == expected


def test_results_come_from_the_reply(router: FakeRouter) -> None:
    def reply(msg: wire.Message) -> list[wire.Message | bytes]:
        if isinstance(msg, wire.Request):
            return [wire.Reply(ref=msg.ref, status=201, body=b'{"ok":true}', headers=b'{"x":"1"}')]
        return list(answer(msg))

    router.handler = reply

    async def main() -> None:
        async with Cluster(router.url) as cluster:
            s = cluster.sockets
            assert await s.broadcast("a", data=1) == 2
            assert await s.blast() == 2
            assert await s.count("a") == 3
            assert await s.members("a") == ["s1", "s2"]
            assert await s.rooms("s1") == ["s1", "s2"]
            await s.join("s1", "a")
            assert s.get_id(REQ) == "s1"
            response = await cluster.request("s1", "GET", "/x")
            assert response == Response(status=201, body={"ok": True}, headers={"x": "1"})

    asyncio.run(main())


@pytest.mark.parametrize(
    ("omit", "expected"),
    [
        (None, ()),
        ("s9", ("s9",)),
        (REQ, ("s1",)),
        (Sock("s7"), ("s7",)),
        (["s9", REQ, Sock("s7")], ("s9", "s1", "s7")),
        (("s9", "s9"), ("s9",)),
        ([], ()),
    ],
)
def test_omit_is_normalised_to_socket_ids(router: FakeRouter, omit, expected) -> None:
    async def main() -> None:
        async with Cluster(router.url) as cluster:
            await cluster.sockets.broadcast("a", "e", omit=omit)
            await cluster.sockets.blast("e", omit=omit)

    asyncio.run(main())
    assert [m.omit for m in router.commands()] == [expected, expected]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("call", "exc_type"),
    [
        (lambda c: c.sockets.join("s1", ""), InvalidRoom),
        (lambda c: c.sockets.join("s1", ["a", "b\x00"]), InvalidRoom),
        (lambda c: c.sockets.join("s1", "x" * 257), InvalidRoom),
        (lambda c: c.sockets.join("s1", []), BadRequest),
        (lambda c: c.sockets.join("s1", 5), BadRequest),
        (lambda c: c.sockets.join("", "a"), BadRequest),
        (lambda c: c.sockets.leave(None, "a"), BadRequest),
        (lambda c: c.sockets.leave_all("\n"), InvalidRoom),
        (lambda c: c.sockets.add_room_members_to_rooms("a", ""), InvalidRoom),
        (lambda c: c.sockets.remove_room_members_from_rooms(7, "a"), BadRequest),
        (lambda c: c.sockets.broadcast([], "e"), BadRequest),
        (lambda c: c.sockets.broadcast("a", ""), BadRequest),
        (lambda c: c.sockets.broadcast("a", "e", object()), BadRequest),
        (lambda c: c.sockets.broadcast("a", "e", float("nan")), BadRequest),
        (lambda c: c.sockets.broadcast("a", "e", omit=[""]), BadRequest),
        (lambda c: c.sockets.broadcast("a", "e", "\ud800"), BadRequest),
        (lambda c: c.sockets.broadcast("a", "\ud800"), BadRequest),
        (lambda c: c.sockets.join("\ud800", "a"), BadRequest),
        (lambda c: c.sockets.blast(None), BadRequest),
        (lambda c: c.sockets.count(""), InvalidRoom),
        (lambda c: c.sockets.members(None), InvalidRoom),
        (lambda c: c.sockets.rooms(""), BadRequest),
        (lambda c: c.request("s1", "GET", "no-slash"), BadRequest),
        (lambda c: c.request("s1", "", "/x"), BadRequest),
    ],
)
def test_bad_arguments_fail_without_a_round_trip(router: FakeRouter, call, exc_type) -> None:
    async def main() -> None:
        async with Cluster(router.url) as cluster:
            with pytest.raises(exc_type):
                await call(cluster)
            assert not cluster.link.connected  # nothing was sent, not even Hello
            await cluster.sockets.count("ok")

    asyncio.run(main())
    assert [type(m) for m in router.received] == [wire.Hello, wire.Query]


def test_joining_no_sockets_is_a_no_op(router: FakeRouter) -> None:
    async def main() -> None:
        async with Cluster(router.url) as cluster:
            await cluster.sockets.join([], "a")
            await cluster.sockets.leave((), ["a", "b"])
            assert not cluster.link.connected

    asyncio.run(main())
    assert router.received == []


def test_undecodable_frames_are_dropped(router: FakeRouter) -> None:
    def garbage_first(msg: wire.Message) -> list[wire.Message | bytes]:
        if isinstance(msg, wire.Query):
            return [b"\xff\xfe not a frame", *answer(msg)]
        return list(answer(msg))

    router.handler = garbage_first

    async def main() -> None:
        async with Cluster(router.url) as cluster:
            assert await cluster.sockets.count("a") == 3
            assert cluster.link.dropped == 1

    asyncio.run(main())


def test_a_cluster_is_bound_to_its_first_loop(router: FakeRouter) -> None:
    cluster = Cluster(router.url)
    asyncio.run(cluster.sockets.count("a"))

    async def elsewhere() -> None:
        with pytest.raises(StateError):
            await cluster.sockets.count("a")
        await cluster.close()

    asyncio.run(elsewhere())


@pytest.mark.parametrize(
    "kwargs", [{"timeout": 0}, {"connect_timeout": -1}, {"url": "127.0.0.1:5570"}]
)
def test_bad_configuration_fails_at_construction(kwargs) -> None:
    args = {"url": "tcp://127.0.0.1:5570", **kwargs}
    with pytest.raises(ValueError):
        Cluster(**args)
    with pytest.raises(ValueError):
        SyncCluster(**args)


def test_model_publishes_through_the_cluster(router: FakeRouter) -> None:
    async def main() -> None:
        async with Cluster(router.url) as cluster:
            user = cluster.model("User")
            await user.publish_update(7, {"name": "Ann"}, REQ)

    asyncio.run(main())
    (sent,) = router.commands()
    assert isinstance(sent, wire.Publish)
    assert (sent.rooms, sent.event, sent.omit) == (("sails_model_user_7:user",), "user", ("s1",))
    assert json.loads(sent.data) == {"verb": "updated", "data": {"name": "Ann"}, "id": 7}


def test_top_level_exports() -> None:
    assert roomcast.Cluster is Cluster and roomcast.SyncCluster is SyncCluster
    assert issubclass(roomcast.NoSuchSocket, roomcast.RoomcastError)


def test_names_split_out_of_roomcast_cluster_still_import_from_it() -> None:
    from roomcast import cluster, link, sockets

    assert (cluster.Link, cluster.Command) == (link.Link, link.Command)
    assert (cluster.Sockets, cluster.Receipt) == (sockets.Sockets, sockets.Receipt)
    assert (cluster.Rooms, cluster.encode_json) == (sockets.Rooms, sockets.encode_json)
    assert roomcast.Receipt is sockets.Receipt
    assert set(cluster.__all__) >= {"Cluster", "Link", "Sockets", "Receipt", "encode_json"}


# -- SyncCluster --------------------------------------------------------------------------


def io_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("roomcast-io-")]


def test_sync_cluster_round_trip(router: FakeRouter) -> None:
    def refuse_s9(msg: wire.Message) -> list[wire.Message | bytes]:
        if isinstance(msg, wire.Membership) and "s9" in msg.sockets:
            return [wire.Reply(ref=msg.ref, status=404, error="no_such_socket", message="x")]
        return list(answer(msg))

    router.handler = refuse_s9
    with SyncCluster(router.url) as cluster:
        assert io_threads() == []  # lazy: no thread until first use
        s = cluster.sockets
        s.join(REQ, "a")
        s.leave("s1", ["a"])
        s.leave_all("a")
        s.add_room_members_to_rooms("a", "b")
        s.remove_room_members_from_rooms(REQ, "b")
        assert s.broadcast("a", "e", {"k": 1}, omit=REQ) == 2
        assert s.blast("e") == 2
        assert s.count("a") == 3
        assert s.members("a") == ["s1", "s2"]
        assert s.rooms(REQ) == ["s1", "s2"]
        assert s.get_id(REQ) == "s1"
        assert cluster.request(REQ, "GET", "/x").status == 200
        with pytest.raises(NoSuchSocket):
            s.join("s9", "a")
        with pytest.raises(InvalidRoom):
            s.join("s1", "")
        assert len(io_threads()) == 1
    assert io_threads() == []
    with pytest.raises(StateError):
        cluster.sockets.count("a")
    cluster.close()  # idempotent
    kinds = [m.KIND for m in router.commands()]
    assert kinds == [
        "membership",
        "membership",
        "leave_all",
        "copy_members",
        "copy_members",
        "publish",
        "publish",
        "query",
        "query",
        "query",
        "request",
        "membership",
    ]


def test_sync_calls_keep_each_threads_order(router: FakeRouter) -> None:
    with SyncCluster(router.url) as cluster:

        def publish(t: int) -> None:
            for i in range(25):
                cluster.sockets.broadcast("a", "e", [t, i])

        threads = [threading.Thread(target=publish, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE_S)
    per_thread: dict[int, list[int]] = {}
    for msg in router.commands():
        t, i = json.loads(msg.data)  # type: ignore[union-attr]
        per_thread.setdefault(t, []).append(i)
    assert per_thread == {t: list(range(25)) for t in range(4)}


def test_sync_close_fails_a_blocked_call(router: FakeRouter) -> None:
    router.handler = lambda msg: answer(msg) if isinstance(msg, wire.Hello) else []
    cluster = SyncCluster(router.url)
    outcome: list[BaseException] = []

    def blocked() -> None:
        try:
            cluster.sockets.count("a")
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=blocked)
    thread.start()
    router.wait_for(lambda seen: any(isinstance(m, wire.Query) for m in seen))
    cluster.close()
    thread.join(DEADLINE_S)
    assert len(outcome) == 1 and isinstance(outcome[0], RouterUnavailable)
    assert io_threads() == []


def test_sync_router_unavailable() -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    with SyncCluster(url, connect_timeout=0.2) as cluster, pytest.raises(RouterUnavailable):
        cluster.sockets.blast()
    assert io_threads() == []
