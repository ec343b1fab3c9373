"""Fuzz the pure codecs directly (no processes): only their own errors, only valid JSON out.

What the process-level targets check end to end, checked here fast and exhaustively shrunk:
``plainws.parse`` raises only ``FrameError``, ``socketio.parse`` only ``PacketError``,
``sails.parse_virtual_request`` only ``RoomcastError``, ``wire.decode`` only ``WireError``; and
whatever JSON the gateway re-encodes from a client (broadcast data, request data and headers)
is JSON every parser takes. A quarter of the process targets' case budget: the process
targets reach the same code. Regression tests for the bugs the fuzzing found are at the end.
"""

from __future__ import annotations

import pytest
from hypothesis import strategies as st

from gateway import eio_polling, plainws, sails, socketio
from roomcast.core import wire
from roomcast.core.errors import RoomcastError, WireError
from tests.fuzz.strategies import (
    NUMBERS,
    json_text,
    json_values,
    sio_packets,
    wire_messages,
    ws_ops,
)
from tests.fuzz.support import BATCH_MAX, BATCH_MIN, CASES, TIMEOUT_S, Run, strict_json

pytestmark = pytest.mark.timeout(TIMEOUT_S)

PURE_CASES = max(1, CASES // 4)

texts = st.one_of(
    st.tuples(ws_ops, st.booleans()).map(lambda t: json_text(*t)),
    st.tuples(json_values, st.booleans()).map(lambda t: json_text(*t)),
    NUMBERS.map(lambda n: f'{{"op":"broadcast","rooms":"r","data":{n}}}'),
    NUMBERS.map(lambda n: f'{{"op":"request","ref":1,"url":"/","data":[{n}],"headers":{{}}}}'),
    st.text(max_size=60),
)


def test_plainws_parse() -> None:
    run = Run("plainws.parse", PURE_CASES)

    def example(batch: list[str]) -> None:
        for text in batch:
            try:
                op = plainws.parse(text)
            except plainws.FrameError as exc:
                assert isinstance(exc.error, RoomcastError)
                continue
            if isinstance(op, plainws.BroadcastOp):
                assert strict_json(op.data), op.data
            elif isinstance(op, plainws.RequestOp):
                assert strict_json(op.data) and strict_json(op.headers), op
        run.cases += len(batch)
        run.examples += 1

    run.until_done(example, batch=st.lists(texts, min_size=BATCH_MIN, max_size=BATCH_MAX))
    run.report()


def test_socketio_parse_and_virtual_requests() -> None:
    run = Run("socketio.parse + sails.parse_virtual_request", PURE_CASES)
    sio_texts = sio_packets() | NUMBERS.map(lambda n: f'42["post",{{"url":"/","data":{n}}}]')

    def example(batch: list[str]) -> None:
        for text in batch:
            try:
                packet = socketio.parse(text)
            except socketio.PacketError:
                continue
            if packet.kind == "event" and packet.args[0] in sails.VIRTUAL_METHODS:
                try:
                    req = sails.parse_virtual_request(packet.args[0], packet.args[1:])
                except RoomcastError:
                    continue
                assert strict_json(req.data) and strict_json(req.headers), req
        run.cases += len(batch)
        run.examples += 1

    run.until_done(example, batch=st.lists(sio_texts, min_size=BATCH_MIN, max_size=BATCH_MAX))
    run.report()


def test_eio_polling_payloads() -> None:
    """``eio_polling.decode_payload`` raises only ``PayloadError``, and what the gateway encodes
    (packets as a payload, v3 lengths in UTF-16 units) decodes back to the same packets."""
    run = Run("eio_polling.decode_payload", PURE_CASES)
    utf8_packets = sio_packets().filter(lambda p: _utf8(p) is not None)

    def example(eio: int, bodies: list[bytes], packets: list[str]) -> None:
        for body in bodies:
            try:
                decoded = eio_polling.decode_payload(eio, body)
            except eio_polling.PayloadError:
                continue
            assert decoded and all(decoded), (body, decoded)
        sendable = [p for p in packets if p and p[0] != "b" and (eio == 3 or "\x1e" not in p)]
        if sendable:
            payload = eio_polling.encode_payload(eio, [p.encode() for p in sendable])
            assert eio_polling.decode_payload(eio, payload) == sendable
        run.cases += len(bodies) + len(packets)
        run.examples += 1

    run.until_done(
        example,
        eio=st.sampled_from([3, 4]),
        bodies=st.lists(
            st.binary(max_size=40) | utf8_packets.map(lambda p: f"{len(p)}:{p}".encode()),
            min_size=BATCH_MIN,
            max_size=BATCH_MAX,
        ),
        packets=st.lists(utf8_packets, max_size=8),
    )
    run.report()


def _utf8(text: str) -> bytes | None:
    try:
        return text.encode()
    except UnicodeEncodeError:
        return None


def _encoded(msg: wire.Message) -> bytes | None:
    try:
        return wire.encode(msg)
    except (ValueError, TypeError):
        return None


def test_wire_decode() -> None:
    run = Run("wire.decode", PURE_CASES)
    bodies = st.one_of(
        st.binary(max_size=80),
        wire_messages.map(_encoded).filter(lambda b: b is not None),
        wire_messages.map(_encoded)
        .filter(lambda b: b is not None)
        .flatmap(lambda b: st.integers(0, len(b)).map(lambda i: b[:i] + b"\xff" + b[i:])),
    )

    def example(batch: list[bytes]) -> None:
        for body in batch:
            try:
                msg = wire.decode(body)
            except WireError:
                continue
            assert wire.decode(wire.encode(msg)) == msg  # what decodes, re-encodes the same
        run.cases += len(batch)
        run.examples += 1

    run.until_done(example, batch=st.lists(bodies, min_size=BATCH_MIN, max_size=BATCH_MAX))
    run.report()


# --- regressions -------------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1E400", "9" * 400 + ".5"])
def test_plainws_refuses_numbers_that_overflow_to_infinity(number: str) -> None:
    """Found by the /ws fuzz: ``1e999`` parsed to inf and went out as ``Infinity`` (not JSON)
    to every member of the room."""
    for text in (
        f'{{"op":"broadcast","rooms":"r","data":{number}}}',
        f'{{"op":"request","ref":1,"url":"/","data":{{"x":[{number}]}}}}',
        f'{{"op":"request","ref":1,"url":"/","headers":{{"x":{number}}}}}',
    ):
        with pytest.raises(plainws.FrameError) as info:
            plainws.parse(text)
        assert info.value.error.code == "bad_request"


@pytest.mark.parametrize("number", ["1e999", "-1E400"])
def test_socketio_refuses_numbers_that_overflow_to_infinity(number: str) -> None:
    with pytest.raises(socketio.PacketError):
        socketio.parse(f'42["post",{{"url":"/","data":{number}}}]')
    with pytest.raises(socketio.PacketError):
        socketio.parse(f"4312[{number}]")


@pytest.mark.parametrize("number", ["1e308", "-0", "0.1e-999", "1" * 30, "1.5"])
def test_large_but_finite_numbers_still_pass(number: str) -> None:
    op = plainws.parse(f'{{"op":"broadcast","rooms":"r","data":{number}}}')
    assert isinstance(op, plainws.BroadcastOp) and strict_json(op.data)
    packet = socketio.parse(f'42["post",{{"url":"/","data":{number}}}]')
    req = sails.parse_virtual_request("post", packet.args[1:])
    assert strict_json(req.data)
