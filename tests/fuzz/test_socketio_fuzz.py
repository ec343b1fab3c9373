"""Fuzz ``/socket.io/`` (architecture §4, §5.5): random Engine.IO/Socket.IO packets, EIO=3 and 4.

Packets are drawn from the grammar (Engine.IO type, Socket.IO type, namespace, ack id, JSON
payload: events named by HTTP methods with random request envelopes, random events, random
JSON) with random edits, so most of them parse and reach the handler. The gateway's own pure
parser sorts each batch: packets it accepts are sent first, then a sentinel ping whose pong
must come back (the connection stays); then at most one packet that must drop the client (does
not parse, a disconnect, a binary frame, random text or bytes) or breaks the WebSocket itself.
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import strategies as st

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.fuzz.conftest import Control, connections_gauge, host_port
from tests.fuzz.strategies import sio_accepted, sio_packets, ws_breakers
from tests.fuzz.support import BATCH_MAX, BATCH_MIN, CHECK_EVERY, TIMEOUT_S, LogWatch, RawWs, Run
from tests.integration.harness import Cluster

pytestmark = pytest.mark.timeout(TIMEOUT_S)

sio_breakers = st.one_of(
    sio_packets().filter(lambda p: not sio_accepted(p)).map(lambda p: (0x1, p.encode())),
    st.text(max_size=40).map(lambda t: (0x1, t.encode())),
    st.binary(max_size=40).map(lambda b: (0x2, b)),
    ws_breakers.map(lambda raw: (None, raw)),
)


def test_socketio_packets(fuzz_cluster: Cluster, control: Control) -> None:
    host, port = host_port(fuzz_cluster.gateways[0].public)
    watch = LogWatch(fuzz_cluster.procs)
    run = Run("/socket.io/ packets")

    def example(
        eio: int,
        sdk_version: str | None,
        connect_first: bool,
        batch: list[str],
        breaker: tuple[int | None, bytes] | None,
    ) -> None:
        query = f"EIO={eio}&transport=websocket"
        if sdk_version:
            query += f"&__sails_io_sdk_version={sdk_version}"
        ws = RawWs(host, port, f"/socket.io/?{query}")
        try:
            assert ws.wait_for(lambda: ws.has_text(b'"sid"'), 10 * T), "no engine.io open packet"
            if eio == 3 or connect_first:
                if eio == 4:
                    ws.text("40")
                # The namespace connect: sent once the router registered the socket.
                assert ws.wait_for(lambda: any(p.startswith(b"40") for _, p in ws.frames), 10 * T)
            body = [p for p in batch if sio_accepted(p)]
            rest = [p for p in batch if not sio_accepted(p)]
            for packet in body:
                ws.text(packet)
            probe = uuid.uuid4().hex
            ws.text("2" + probe)
            pong = ("3" + probe).encode()
            assert ws.wait_for(lambda: any(p == pong for _, p in ws.frames), 10 * T), (
                f"no pong to the sentinel (closed={ws.closed}, code={ws.close_code})"
            )
            run.cases += len(body)
            end = [(0x1, rest[0].encode())] if rest else []
            if breaker is not None:
                end.append(breaker)
            if end:
                opcode, data = end[0]
                ws.send_raw(data) if opcode is None else ws.send(opcode, data)
                run.cases += 1
                if ws.wait_closed(0.1 * T):
                    run.tally("dropped_after_breaker")
        finally:
            ws.close()
        watch.check()
        run.examples += 1
        if run.examples % CHECK_EVERY == 0:
            control.check()

    run.until_done(
        example,
        eio=st.sampled_from([3, 4]),
        sdk_version=st.sampled_from(["1.2.1", "0.10.0", None]),
        connect_first=st.booleans(),
        batch=st.lists(sio_packets(), min_size=BATCH_MIN, max_size=BATCH_MAX),
        breaker=st.none() | sio_breakers,
    )
    control.check()
    deadline_poll(
        lambda: connections_gauge(fuzz_cluster)() == 1,
        10 * T,
        message="gateway connections back to the control client only",
    )
    watch.check()
    run.report()
