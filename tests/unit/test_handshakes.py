"""roomcast.handshakes without sockets: which monitor events are refusals, and the log throttle.

The monitor threads and both ends' log lines run on real sockets in
``tests/component/test_curve.py`` and between processes in ``tests/integration/test_curve.py``;
the router's accounting (:class:`roomcast.handshakes.Refusals` behind a ``ServerCurve``) is fed
events by hand in ``tests/unit/test_curve.py``.
"""

from __future__ import annotations

import logging

import pytest
import zmq

from roomcast import handshakes


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (zmq.EVENT_HANDSHAKE_FAILED_AUTH, "unauthorized_key"),
        (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, "handshake_failed"),
        (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, "handshake_failed"),
        (zmq.EVENT_HANDSHAKE_SUCCEEDED, None),
        (zmq.EVENT_ACCEPTED, None),
    ],
)
def test_refusal_reason(event: int, reason: str | None) -> None:
    assert handshakes.refusal_reason(event) == reason
    assert reason is None or reason in handshakes.REFUSAL_REASONS


def test_throttle_lets_one_line_through_per_interval_and_counts_the_rest() -> None:
    throttle = handshakes.Throttle(10.0)
    assert throttle.allow("a", 100.0) == 0
    assert throttle.allow("a", 101.0) is None
    assert throttle.allow("b", 101.0) == 0  # each key has its own budget
    assert throttle.allow("a", 109.9) is None
    assert throttle.allow("a", 110.0) == 2  # two held back since the last line
    assert throttle.allow("a", 110.0) is None
    throttle.reset("a")  # a success: the next failure is news again
    assert throttle.allow("a", 111.0) == 0


URL = "tcp://10.0.0.5:5570"
MISMATCH = zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
CRYPTO = zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC


@pytest.mark.parametrize(
    ("event", "value", "level", "message"),
    [
        (
            zmq.EVENT_HANDSHAKE_FAILED_AUTH,
            400,
            logging.ERROR,
            f"router {URL} refused our CURVE key (ZAP status 400): our public key is not among "
            "its authorized keys; this link stays down until it is authorized and this process "
            "restarts",
        ),
        (
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
            MISMATCH,
            logging.ERROR,
            f"router {URL} does not use CURVE, but this process does",
        ),
        (
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
            CRYPTO,
            logging.WARNING,
            f"CURVE handshake with router {URL} failed (the handshake does not decrypt: the "
            "client expects another router key): is our curve server key the router's public "
            "key?",
        ),
        (
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
            zmq.PROTOCOL_ERROR_ZMTP_UNEXPECTED_COMMAND,
            logging.WARNING,
            f"CURVE handshake with router {URL} failed (protocol error 0x10000001): is our curve "
            "server key the router's public key?",
        ),
        (
            zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
            32,
            logging.WARNING,
            f"CURVE handshake with router {URL} failed (the connection closed during the "
            "handshake): is our curve server key the router's public key?",
        ),
    ],
)
def test_client_report_says_why(
    event: int, value: int, level: int, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="roomcast.curve"):
        handshakes.ClientReport().event(event, value, URL)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(level, message)]


def test_client_report_logs_a_failing_streak_once_until_a_success(
    caplog: pytest.LogCaptureFixture,
) -> None:
    report = handshakes.ClientReport()
    with caplog.at_level(logging.DEBUG, logger="roomcast.curve"):
        for _ in range(50):  # libzmq retries every 100 ms
            report.event(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 32, URL)
        assert len(caplog.records) == 1
        report.event(zmq.EVENT_HANDSHAKE_SUCCEEDED, 0, URL)
        assert len(caplog.records) == 1  # a success is not news
        report.event(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 32, URL)
    assert len(caplog.records) == 2  # a new streak is


def test_refusals_count_every_one_and_log_one_per_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counted: list[str] = []
    refusals = handshakes.Refusals(counted.append, "/keys")
    with caplog.at_level(logging.WARNING, logger="roomcast.curve"):
        for _ in range(3):
            refusals.event(zmq.EVENT_HANDSHAKE_SUCCEEDED, 0, URL)  # not a refusal
            refusals.event(zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400, URL)  # counted, not logged
            refusals.unauthorized("10.0.0.9")  # the authenticator's line
            refusals.event(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, CRYPTO, URL)
    assert counted == ["unauthorized_key", "handshake_failed"] * 3
    assert caplog.messages == [
        "refused a CURVE client from 10.0.0.9: its public key is not in /keys",
        f"refused a CURVE handshake on {URL}: the handshake does not decrypt: the client expects "
        "another router key",
    ]
