"""A load agent: ``python -m roomcast.bench.agent``, one process of the bench's load generator.

The bench starts agents as processes so that parsing millions of frames never runs in the
process that measures. An agent prints ``READY {}``, then reads one JSON command per stdin line
and writes exactly one JSON answer per line (``{"ok": true, ...}`` or ``{"ok": false, "error":
"..."}``); it exits on stdin EOF or SIGTERM. One agent plays whichever roles its commands ask for:

* clients: ``connect`` (open lean /ws clients, optionally joining rooms; times each),
  ``arm`` (reset the counters), ``progress``, ``collect`` (counts, latency samples, order checks),
  ``disconnect``;
* publisher: ``publish`` (a burst or a fixed rate, through the SDK ``Cluster`` or a /ws client);
* chat publishers: ``chat_publish`` (this agent's own clients broadcast to their rooms as
  :class:`~roomcast.bench.chatplan.ChatPlan` says), and ``collect`` with a ``chat`` plan
  verifies every client's deliveries against it;
* SDK caller: ``sdk`` (one join/leave/broadcast/count through its own ``Cluster``).

Every wait is bounded by the timeout the command carries. Does not import the gateway or router.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import signal
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from roomcast.bench.chatplan import ChatPlan, Verdict, verify
from roomcast.bench.common import padding_for
from roomcast.bench.wsclient import Tally, WsClient, connect, stamp

__all__ = ["main"]

_EVENT = "bench"


def _target(url: str) -> tuple[str, int, str]:
    parts = urllib.parse.urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"not a ws://host:port/path url: {url!r}")
    return parts.hostname, parts.port, parts.path or "/"


class _Agent:
    def __init__(self) -> None:
        self.tally = Tally()
        self.clients: list[WsClient] = []
        self.by_index: dict[int, WsClient] = {}  # global client index -> client
        self.expect: int | None = None
        self.cluster: Any = None  # roomcast.Cluster, imported on first use
        self.pub_ws: WsClient | None = None
        self.chat_task: asyncio.Task[None] | None = None
        self.chat_sent: dict[str, Any] | None = None  # the last chat_publish's, once done

    # --- clients -------------------------------------------------------------------------------

    async def connect(
        self,
        urls: list[str],
        start: int,
        stop: int,
        rooms: list[str],
        timeout: float,
        group_size: int = 10,
        sample_every: int = 10,
        record: bool = False,
        concurrency: int = 0,
        want_ids: bool = False,
    ) -> dict[str, Any]:
        targets = [_target(u) for u in urls]
        gate = asyncio.Semaphore(concurrency) if concurrency > 0 else None
        began = time.monotonic()

        async def one(i: int) -> tuple[int, WsClient, float, float]:
            host, port, path = targets[i % len(targets)]
            names = [fmt.format(i=i, g=i // group_size) for fmt in rooms]
            async with gate if gate is not None else contextlib.nullcontext():
                t0 = time.monotonic()
                client = await connect(
                    host,
                    port,
                    path,
                    timeout=timeout,
                    tally=self.tally,
                    # Every gateway gets its share of sampled clients (i % G picks the gateway).
                    sample=(i // len(targets)) % sample_every == 0,
                    record=record,
                )
                t1 = time.monotonic()
                try:
                    replies = await asyncio.gather(
                        *(client.request("join", timeout, room=room) for room in names)
                    )
                except BaseException:
                    client.abort()
                    raise
                for reply in replies:
                    if reply.get("statusCode") != 200:
                        client.abort()
                        raise RuntimeError(f"join answered {reply.get('statusCode')}")
                return i, client, t1 - t0, time.monotonic() - t0

        results = await asyncio.gather(
            *(one(i) for i in range(start, stop)), return_exceptions=True
        )
        welcome_ms: list[float] = []
        joined_ms: list[float] = []
        ids: list[str] = []
        errors: collections.Counter[str] = collections.Counter()
        for result in results:
            if isinstance(result, BaseException):
                errors[f"{type(result).__name__}: {result}"[:200]] += 1
                continue
            i, client, welcome_s, joined_s = result
            self.clients.append(client)
            self.by_index[i] = client
            welcome_ms.append(round(welcome_s * 1000, 3))
            joined_ms.append(round(joined_s * 1000, 3))
            if want_ids:
                ids.append(client.socket_id)
        return {
            "connected": len(welcome_ms),
            "failed": sum(errors.values()),
            "errors": dict(errors.most_common(5)),
            "welcome_ms": welcome_ms,
            "joined_ms": joined_ms,
            "ids": ids,
            "wall_s": round(time.monotonic() - began, 3),
            "total": len(self.clients),
        }

    async def arm(self, expect: int | None = None) -> dict[str, Any]:
        self.tally.reset()
        self.expect = expect
        for client in self.clients:
            parser = client.parser
            parser.events = 0
            parser.last_seq = -1
            parser.seqs = []
        return {}

    async def progress(self) -> dict[str, Any]:
        expect = self.expect
        done = sum(1 for c in self.clients if c.parser.events >= expect) if expect else 0
        return {
            "events": self.tally.events,
            "done": done,
            "clients": len(self.clients),
            "published": self.chat_sent,
        }

    async def collect(
        self, max_samples: int = 200_000, chat: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Counts and samples; with ``chat`` (a plan and a phase), each client's verdict too."""
        tally = self.tally
        samples = tally.latencies_ns
        if len(samples) > max_samples:
            step = len(samples) / max_samples
            samples = [samples[int(k * step)] for k in range(max_samples)]
        counts = [c.parser.events for c in self.clients]
        codes: collections.Counter[str] = collections.Counter(
            str(c.close_code) for c in self.clients if not c.is_open
        )
        verdict = self._verify(chat) if chat is not None else None
        seqs = [] if chat is not None else sorted(s for c in self.clients for s in c.parser.seqs)
        return {
            "chat": verdict.as_dict() if verdict is not None else None,
            "events": tally.events,
            "first_ns": tally.first_ns,
            "last_ns": tally.last_ns,
            "latencies_ns": samples,
            "latency_samples": len(tally.latencies_ns),
            "order_violations": tally.order_violations,
            "unstamped": tally.unstamped,
            "min_per_client": min(counts, default=0),
            "max_per_client": max(counts, default=0),
            "clients": len(self.clients),
            "closed": sum(codes.values()),
            "close_codes": dict(codes),
            "error_frames": sum(len(c.errors) for c in self.clients),
            "seqs": seqs,
        }

    def _verify(self, chat: dict[str, Any]) -> Verdict:
        plan = ChatPlan(**chat["plan"])
        total = Verdict()
        for i, client in self.by_index.items():
            total += verify(
                plan,
                i,
                client.parser.seqs,
                count=chat["count"],
                seq_start=chat["seq_start"],
                by_clients=chat["by_clients"],
            )
        return total

    async def disconnect(self, timeout: float) -> dict[str, Any]:
        self.by_index = {}
        clients, self.clients = self.clients, []
        codes = await asyncio.gather(*(c.close(timeout) for c in clients), return_exceptions=True)
        return {"closed": len(codes)}

    # --- publishing ----------------------------------------------------------------------------

    async def _cluster(self, url: str) -> Any:
        if self.cluster is None:
            from roomcast import Cluster

            self.cluster = Cluster(url)
            await self.cluster.sockets.count("bench-warmup")
        return self.cluster

    async def publish(
        self,
        mode: str,
        target: str,
        count: int,
        timeout: float,
        rooms: list[str] | None = None,
        cycle: int = 0,
        cycle_format: str = "g{g}",
        rate: float = 0.0,
        payload_bytes: int = 100,
        window: int = 256,
        seq_start: int = 0,
        tag_room: bool = False,
    ) -> dict[str, Any]:
        """``count`` broadcasts as fast as possible (rate 0) or paced at ``rate`` per second.

        With ``tag_room`` the data also names its room (``"r"``), as the chat bench's do.
        """
        loop = asyncio.get_running_loop()
        pad = padding_for(payload_bytes)
        fixed = list(rooms or [])
        send: Callable[[list[str], dict[str, Any]], asyncio.Future[Any] | None]
        if mode == "sdk":
            cluster = await self._cluster(target)

            def send(names: list[str], data: dict[str, Any]) -> asyncio.Future[Any] | None:
                fut: asyncio.Future[Any] = asyncio.ensure_future(
                    cluster.sockets.broadcast(names, _EVENT, data)
                )
                return fut

        elif mode == "ws":
            if self.pub_ws is None:
                host, port, path = _target(target)
                self.pub_ws = await connect(host, port, path, timeout=timeout)
            ws = self.pub_ws

            def send(names: list[str], data: dict[str, Any]) -> asyncio.Future[Any] | None:
                ws.send_json({"op": "broadcast", "rooms": names, "event": _EVENT, "data": data})
                return None

        else:
            raise ValueError(f"unknown publish mode {mode!r}")

        errors: collections.Counter[str] = collections.Counter()
        inflight: set[asyncio.Future[Any]] = set()

        def finished(fut: asyncio.Future[Any]) -> None:
            inflight.discard(fut)
            if not fut.cancelled() and fut.exception() is not None:
                errors[type(fut.exception()).__name__] += 1

        deadline = loop.time() + timeout
        start = loop.time()
        first_ns = last_ns = 0
        sent = 0
        async with asyncio.timeout_at(deadline):
            for j in range(count):
                if rate > 0:
                    delay = start + j / rate - loop.time()
                    if delay > 0.0005:
                        await asyncio.sleep(delay)
                names = [cycle_format.format(g=j % cycle)] if cycle else fixed
                now_ns = time.monotonic_ns()
                if not first_ns:
                    first_ns = now_ns
                data = stamp(seq_start + j, pad, now_ns)
                if tag_room:
                    data["r"] = names[0]
                fut = send(names, data)
                last_ns = now_ns
                sent += 1
                if fut is not None:
                    inflight.add(fut)
                    fut.add_done_callback(finished)
                    if len(inflight) >= window:
                        await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            if inflight:
                await asyncio.wait(inflight)
        acked_ns = time.monotonic_ns()
        return {
            "sent": sent,
            "first_ns": first_ns,
            "last_ns": last_ns,
            "acked_ns": acked_ns,
            "errors": dict(errors),
        }

    async def chat_publish(
        self,
        plan: dict[str, Any],
        count: int,
        timeout: float,
        rate: float = 0.0,
        payload_bytes: int = 100,
        seq_start: int = 0,
    ) -> dict[str, Any]:
        """Start this agent's share of ``count`` client publishes; answers at once.

        The clients publish in the background so that ``progress`` keeps answering; its
        ``published`` is this run's summary once the last publish left (or the timeout hit).
        """
        if self.chat_task is not None and not self.chat_task.done():
            raise RuntimeError("a chat_publish is still running")
        self.chat_sent = None
        self.chat_task = asyncio.create_task(
            self._chat_publish(ChatPlan(**plan), count, timeout, rate, payload_bytes, seq_start)
        )
        return {}

    async def _chat_publish(
        self,
        chat: ChatPlan,
        count: int,
        timeout: float,
        rate: float,
        payload_bytes: int,
        seq_start: int,
        yield_every: int = 32,
    ) -> None:
        """Publish ``j`` leaves at ``start + j / rate`` (as fast as possible when rate is 0)
        from the client the plan names, if that client is one of this agent's; the other
        agents run the same schedule for theirs, so together they make ``rate``. Each is a
        ``/ws`` broadcast op with echo off, its data naming the room and the sequence number.
        """
        mine = sorted(j for i in self.by_index for j in chat.published_by(i, count))
        pad = padding_for(payload_bytes).encode()
        event = _EVENT.encode()
        loop = asyncio.get_running_loop()
        start = loop.time()
        first_ns = last_ns = 0
        sent = 0
        errors: collections.Counter[str] = collections.Counter()
        try:
            async with asyncio.timeout(timeout):
                for n, j in enumerate(mine):
                    if rate > 0:
                        delay = start + j / rate - loop.time()
                        if delay > 0.0005:
                            await asyncio.sleep(delay)
                    elif n % yield_every == yield_every - 1:
                        await asyncio.sleep(0)  # let pushes and replies in between sends
                    room = chat.room_name(j % chat.rooms).encode()
                    now_ns = time.monotonic_ns()
                    if not first_ns:
                        first_ns = now_ns
                    frame = (
                        b'{"op":"broadcast","echo":false,"event":"' + event + b'","rooms":["'
                        + room + b'"],"data":{"t":' + str(now_ns).encode() + b',"s":'
                        + str(seq_start + j).encode() + b',"r":"' + room + b'","p":"' + pad
                        + b'"}}'
                    )  # fmt: skip
                    self.by_index[chat.publisher_of(j)].send_text(frame)
                    last_ns = now_ns
                    sent += 1
        except TimeoutError:
            errors["TimeoutError"] += 1
        self.chat_sent = {
            "sent": sent,
            "first_ns": first_ns,
            "last_ns": last_ns,
            "errors": dict(errors),
        }

    async def sdk(
        self,
        target: str,
        op: str,
        timeout: float,
        sockets: list[str] | None = None,
        rooms: list[str] | None = None,
        leave: list[str] | None = None,
        seq: int = 0,
        payload_bytes: int = 100,
    ) -> dict[str, Any]:
        cluster = await self._cluster(target)
        s = cluster.sockets
        async with asyncio.timeout(timeout):
            if op == "join":
                if leave:
                    await s.leave(sockets or [], leave)
                await s.join(sockets or [], rooms or [])
                return {}
            if op == "broadcast":
                data = stamp(seq, padding_for(payload_bytes))
                return {"result": await s.broadcast(rooms or [], _EVENT, data)}
            if op == "count":
                return {"result": await s.count((rooms or [""])[0])}
        raise ValueError(f"unknown sdk op {op!r}")

    async def close(self) -> None:
        if self.chat_task is not None:
            self.chat_task.cancel()
        for client in self.clients:
            client.abort()
        if self.pub_ws is not None:
            self.pub_ws.abort()
        if self.cluster is not None:
            await self.cluster.close()


_COMMANDS = (
    "connect",
    "arm",
    "progress",
    "collect",
    "disconnect",
    "publish",
    "chat_publish",
    "sdk",
)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.buffer.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
    sys.stdout.buffer.flush()


async def _serve() -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    agent = _Agent()
    sys.stdout.write("READY {}\n")
    sys.stdout.flush()
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            line_task = asyncio.ensure_future(reader.readline())
            done, _ = await asyncio.wait({line_task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if line_task not in done:
                line_task.cancel()
                break
            line = line_task.result()
            if not line:
                break
            try:
                cmd = json.loads(line)
                name = cmd.pop("cmd")
                if name not in _COMMANDS:
                    raise ValueError(f"unknown command {name!r}")
                answer = await getattr(agent, name)(**cmd)
            except Exception as exc:  # reported to the bench, which decides
                _emit({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]})
            else:
                _emit({"ok": True, **answer})
    finally:
        stopping.cancel()
        await agent.close()
    return 0


def main() -> int:
    return asyncio.run(_serve())


if __name__ == "__main__":
    sys.exit(main())
