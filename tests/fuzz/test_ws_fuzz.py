"""Fuzz ``/ws`` (architecture §4, §5.5): malformed frames never crash the gateway or hurt others.

Each example opens a raw connection and sends a batch of frames: JSON objects shaped like ops
with random fields, random JSON, random text, deeply nested or huge-number JSON, binary frames,
pings and pongs. Then a sentinel op: its reply must come (a malformed frame gets an error reply
on /ws, never a close). Last, at most one frame that breaks the WebSocket itself (bad UTF-8,
reserved bits, unknown opcode, unmasked, a lying length, a fragment left open, raw garbage, a
close frame): the gateway may close, and must survive.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import strategies as st

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.fuzz.conftest import Control, connections_gauge, host_port
from tests.fuzz.strategies import ws_body_frames, ws_breakers
from tests.fuzz.support import (
    BATCH_MAX,
    BATCH_MIN,
    CHECK_EVERY,
    TIMEOUT_S,
    LogWatch,
    RawWs,
    Run,
    strict_json,
)
from tests.integration.harness import Cluster

pytestmark = pytest.mark.timeout(TIMEOUT_S)


def test_ws_frames(fuzz_cluster: Cluster, control: Control) -> None:
    host, port = host_port(fuzz_cluster.gateways[0].public)
    watch = LogWatch(fuzz_cluster.procs)
    run = Run("/ws frames")

    def example(welcome_first: bool, frames: list[tuple[int, bytes]], terminal: Any) -> None:
        ws = RawWs(host, port, "/ws", keep_events=True)
        try:
            if welcome_first:
                assert ws.wait_for(lambda: ws.has_text(b'"op":"welcome"'), 10 * T)
            for opcode, payload in frames:
                ws.send(opcode, payload)
            ref = uuid.uuid4().hex
            ws.text(f'{{"op":"leave","ref":"{ref}","room":"fuzz-sentinel"}}')
            needle = f'"ref":"{ref}"'.encode()
            assert ws.wait_for(lambda: ws.has_text(needle), 10 * T), (
                f"no reply to the sentinel (closed={ws.closed}, code={ws.close_code})"
            )
            assert not ws.closed, f"closed with {ws.close_code} by frames that keep /ws open"
            for opcode, payload in ws.frames:  # replies, errors: every text frame is json
                assert opcode != 0x1 or strict_json(payload), f"not json: {payload[:200]!r}"
            for payload in ws.events:  # pushes too (echoed broadcasts)
                assert strict_json(payload), f"push is not json: {payload[:200]!r}"
            run.cases += len(frames)
            if terminal is not None:
                ws.send_raw(terminal)
                run.cases += 1
                if ws.wait_closed(0.1 * T):
                    run.tally("closed_after_breaker")
        finally:
            ws.close()
        watch.check()
        run.examples += 1
        if run.examples % CHECK_EVERY == 0:
            control.check()

    run.until_done(
        example,
        welcome_first=st.booleans(),
        frames=st.lists(ws_body_frames, min_size=BATCH_MIN, max_size=BATCH_MAX),
        terminal=ws_breakers,
    )
    control.check()
    deadline_poll(
        lambda: connections_gauge(fuzz_cluster)() == 1,
        10 * T,
        message="gateway connections back to the control client only",
    )
    watch.check()
    run.report()
