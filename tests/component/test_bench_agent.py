"""roomcast.bench.agent, the chat bench's part: a load agent's clients publish as the plan says,
and its verdict catches wrong deliveries.

The agent object runs in the test's event loop against the bench's baseline app (a Tornado room
map) served in-process on 127.0.0.1 port 0: its clients join their rooms, publish a burst and a
paced run with ``chat_publish``, and ``collect`` checks every client's sequence numbers. Then
frames a correct server would never deliver (another room's sequence number, a repeat) are sent
through the same server, and the verdict must count them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from roomcast.bench import baseline
from roomcast.bench.agent import _Agent
from tests.component.test_bench_client import serve, wait_for
from tests.conftest import TIMEOUT_UNIT as T

PLAN = {"sockets": 20, "room_size": 5, "publishers_per_room": 2}  # 4 rooms of 5


def _chat(count: int, seq_start: int) -> dict[str, Any]:
    return {"plan": PLAN, "count": count, "seq_start": seq_start, "by_clients": True}


async def _publish(agent: _Agent, count: int, seq_start: int, rate: float = 0.0) -> None:
    await agent.arm()
    assert await agent.chat_publish(PLAN, count, 5 * T, rate=rate, seq_start=seq_start) == {}
    await wait_for(lambda: agent.chat_sent is not None and agent.tally.events == count * 4)


def test_chat_publish_reaches_each_room_but_the_sender_and_the_verdict_counts_wrongs() -> None:
    state = baseline.Rooms()

    async def body(port: int) -> None:
        agent = _Agent()
        try:
            url = f"ws://127.0.0.1:{port}/ws"
            conn = await agent.connect([url], 0, 20, ["g{g}"], 5 * T, group_size=5, record=True)
            assert conn["connected"] == 20 and sorted(agent.by_index) == list(range(20))
            assert {room: len(m) for room, m in state.members.items()} == {
                "g0": 5,
                "g1": 5,
                "g2": 5,
                "g3": 5,
            }

            await _publish(agent, 40, 100)  # a burst: 40 publishes, 4 deliveries each
            sent = agent.chat_sent
            assert sent is not None and sent["sent"] == 40 and sent["errors"] == {}
            got = await agent.collect(chat=_chat(40, 100))
            assert got["chat"] == {
                "received": 160,
                "lost": 0,
                "duplicated": 0,
                "misrouted": 0,
                "order_violations": 0,
            }
            assert got["error_frames"] == 0 and got["seqs"] == []

            await _publish(agent, 20, 200, rate=400.0)  # paced: 20 at 400/s
            sent = agent.chat_sent
            assert sent is not None and sent["sent"] == 20
            assert (sent["last_ns"] - sent["first_ns"]) / 1e9 >= 19 / 400 * 0.9
            got = await agent.collect(chat=_chat(20, 200))
            assert got["chat"]["received"] == 80 and got["chat"]["lost"] == 0

            # Wrong deliveries, made by hand: room 1's sequence number into room 0 (misrouted
            # for its 4 other members), and room 0's first publish once more (duplicated).
            await _publish(agent, 4, 300)
            sender = agent.by_index[1]  # in room 0, not its publisher for j = 0
            for seq in (301, 300):
                data = {"t": 0, "s": seq, "r": "g0", "p": ""}
                frame = {"op": "broadcast", "rooms": ["g0"], "event": "bench", "data": data}
                sender.send_text(json.dumps(frame).encode())
            await wait_for(lambda: agent.tally.events == 16 + 8)
            got = await agent.collect(chat=_chat(4, 300))
            assert got["chat"] == {
                "received": 24,
                "lost": 0,
                "duplicated": 3,  # clients 0 (the publisher of 300: misrouted), 2, 3, 4
                "misrouted": 5,  # 301 to clients 0, 2, 3, 4; 300 back to its publisher, 0
                "order_violations": 0,
            }

            # Lost: a phase whose publishes never left.
            await agent.arm()
            got = await agent.collect(chat=_chat(4, 400))
            assert got["chat"]["lost"] == 16 and got["chat"]["received"] == 0
        finally:
            await agent.disconnect(5 * T)
            await agent.close()
        await asyncio.wait_for(wait_for(lambda: not state.conns), 5 * T)

    asyncio.run(serve(baseline.make_app(state), body))
