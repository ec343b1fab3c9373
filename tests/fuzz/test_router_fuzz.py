"""Fuzz the router's command socket (architecture §5.5, docs/protocol.md): garbage from any peer.

Each example connects a raw ZeroMQ DEALER with a drawn routing id (the default, random bytes,
or a gateway's ``gw:<id>`` with a random or garbage id) and sends a batch of messages: random
bytes, empty messages, multipart messages of the wrong shape, undecodable protobuf, and valid
frames of every message type with random field values (out-of-range enums, unknown refs,
invalid rooms, a gateway's commands from a client and the other way round). The router must
take every one (its ``commands_total`` + ``wire_errors_total`` grow by the batch size), stay up,
log no ERROR, and keep serving the real cluster: a control client still gets broadcasts.
"""

from __future__ import annotations

from typing import Any

import pytest
import zmq
from hypothesis import strategies as st

from roomcast.core import wire
from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.fuzz.conftest import Control, connections_gauge
from tests.fuzz.strategies import mostly, wire_messages
from tests.fuzz.support import BATCH_MAX, BATCH_MIN, CHECK_EVERY, TIMEOUT_S, LogWatch, Run
from tests.integration.harness import Cluster, Metrics, http_get

pytestmark = pytest.mark.timeout(TIMEOUT_S)

# Routing ids: ZeroMQ wants 1-255 bytes, not starting with a zero byte.
identities = st.one_of(
    st.none(),
    st.binary(min_size=1, max_size=40).filter(lambda b: b[0] != 0),
    st.text(max_size=20).map(lambda t: b"gw:" + t.encode()),
    st.binary(max_size=20).map(lambda b: b"gw:" + b),
    st.sampled_from([b"gw:", b"gw:\x00", b"gw:fuzz", b"gw:\xff\xfe"]),
)


def _encoded(msg: wire.Message) -> bytes:
    try:
        return wire.encode(msg)
    except (ValueError, TypeError):  # e.g. an enum value protobuf will not hold
        return b"\x0a"


bodies = st.one_of(
    wire_messages.map(_encoded),
    wire_messages.map(_encoded).flatmap(
        lambda b: st.integers(0, max(len(b) - 1, 0)).map(lambda i: b[:i])  # truncated
    ),
    st.binary(max_size=80),
    st.just(b""),
)


@st.composite
def messages(draw: Any) -> list[bytes]:
    """Mostly one frame (the router's shape), sometimes several."""
    return mostly(draw, bodies.map(lambda b: [b]), st.lists(bodies, min_size=2, max_size=4))


def command_count(router_http: str) -> float:
    status, text = http_get(router_http + "/metrics")
    assert status == 200
    m = Metrics(text)
    return m.get("roomcast_router_commands_total") + m.get("roomcast_router_wire_errors_total")


def test_router_commands(fuzz_cluster: Cluster, control: Control) -> None:
    router_http = fuzz_cluster.router.info["http"]
    watch = LogWatch(fuzz_cluster.procs)
    ctx = zmq.Context()
    run = Run("router command socket")

    def example(identity: bytes | None, batch: list[list[bytes]]) -> None:
        before = command_count(router_http)
        sock = ctx.socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.LINGER, 1000)
            if identity is not None:
                sock.setsockopt(zmq.ROUTING_ID, identity)
            sock.connect(fuzz_cluster.commands)
            for parts in batch:
                sock.send_multipart(parts)
            # Every message reaches the router's loop and is counted there, decoded or not.
            deadline_poll(
                lambda: command_count(router_http) >= before + len(batch),
                10 * T,
                message="the router taking the whole batch",
            )
        finally:
            sock.close()
        run.cases += len(batch)
        watch.check()
        run.examples += 1
        if run.examples % CHECK_EVERY == 0:
            control.check()

    try:
        run.until_done(
            example,
            identity=identities,
            batch=st.lists(messages(), min_size=BATCH_MIN, max_size=BATCH_MAX),
        )
    finally:
        ctx.term()
    control.check()
    deadline_poll(
        lambda: connections_gauge(fuzz_cluster)() == 1,
        10 * T,
        message="gateway connections back to the control client only",
    )
    watch.check()
    run.report()
