"""Engine.IO HTTP long-polling (``/socket.io/?transport=polling``) spoken raw: a session step
by step, the upgrade step by step, and bad input.

Documented outcomes (gateway/polling.py, architecture §4): an unknown ``sid`` is 400
``{"code":1,"message":"Session ID unknown"}``; a wrong ``EIO`` for a session, a malformed payload
(bad v3 length prefix, an empty v4 packet) and a second pending GET are 400 ``{"code":3,...}``;
a POST over ``--max-frame-bytes`` is 413 and one without a length 411; a POST body slower than
``--sio-post-body-timeout`` is cut. All but the unknown sid close the session. Each is counted
in ``roomcast_gateway_polling_errors_total{reason}``, and bystanders (a sails.io.js client held
on polling on the offender's gateway, a /ws client on the other) keep receiving broadcasts.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import connect

from gateway.eio_polling import decode_payload, encode_payload
from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import Event, Metrics, WsClient, http_get
from tests.integration.test_sails_support import (
    SDK_VERSION,
    NodeDriver,
    SailsCluster,
    extra_gateway,
    node_driver,
    sails_cluster,
)

EIOS = pytest.mark.parametrize("eio", [4, 3])
BODY_TIMEOUT_S = 1.0 * T


@pytest.fixture(scope="module")
def sc() -> Iterator[SailsCluster]:
    args = ("--sio-post-body-timeout", str(BODY_TIMEOUT_S), "--max-frame-bytes", "65536")
    with sails_cluster(gateways=2, workers=1, gateway_args=args) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def sdk(sc: SailsCluster) -> Iterator[Any]:
    from roomcast import SyncCluster

    client = SyncCluster(sc.commands)
    yield client
    client.close()


class PollRaw:
    """A raw Engine.IO polling session: one HTTP connection per request, as browsers may."""

    def __init__(self, base: str, eio: int = 4) -> None:
        url = urllib.parse.urlsplit(base)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.eio = eio
        status, body = self.request("GET", self.path(sid=False))
        assert status == 200, body
        (packet,) = decode_payload(eio, body)
        assert packet.startswith("0"), packet
        self.handshake = json.loads(packet[1:])
        self.sid: str = self.handshake["sid"]

    def path(self, *, sid: bool = True, eio: int | None = None) -> str:
        query = {"EIO": str(eio or self.eio), "transport": "polling"}
        query["__sails_io_sdk_version"] = SDK_VERSION
        if sid:
            query["sid"] = self.sid
        return "/socket.io/?" + urllib.parse.urlencode(query)

    def request(
        self, method: str, path: str, body: bytes | None = None, timeout: float | None = None
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout or 10 * T)
        try:
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def poll(self, **kw: Any) -> tuple[int, bytes]:
        return self.request("GET", self.path(**kw))

    def post(self, body: bytes, **kw: Any) -> tuple[int, bytes]:
        return self.request("POST", self.path(**kw), body)

    def packets_until(self, want: str) -> list[str]:
        """Poll until a packet starting with ``want`` arrives; returns everything received."""
        seen: list[str] = []
        for _ in range(20):
            status, body = self.poll()
            assert status == 200, body
            seen += decode_payload(self.eio, body)
            if any(p.startswith(want) for p in seen):
                return seen
        raise AssertionError(f"no {want!r} packet in {seen!r}")

    def assert_closed(self) -> None:
        """The session is gone: its last payload says close, or the sid is unknown now."""
        status, body = self.poll()
        if status == 200:
            assert "1" in decode_payload(self.eio, body), body
            status, body = self.poll()
        assert status == 400 and json.loads(body)["code"] == 1, (status, body)


def errors(sc: SailsCluster, reason: str, gateway: int = 0) -> float:
    return sc.cluster.metrics(gateway).get("roomcast_gateway_polling_errors_total", reason=reason)


class Bystanders:
    """A sails.io.js client held on polling on gateway 0 and a /ws client on gateway 1."""

    def __init__(self, sc: SailsCluster, js: NodeDriver, sdk: Any) -> None:
        self.js, self.sdk = js, sdk
        self.room = f"bystanders-{uuid.uuid4().hex[:12]}"
        self.sails, _ = js.sails(sc.public(0), listen=["news"], transports=["polling"])
        got = js.jwr(self.sails, "post", "/rooms/join", {"room": self.room})
        assert got["jwr"]["statusCode"] == 200, got
        self.ws = WsClient(sc.cluster.gateways[1].ws_url, name="bystander")
        sdk.sockets.join(self.ws.id, self.room)

    def assert_unaffected(self) -> None:
        mark = uuid.uuid4().hex
        self.sdk.sockets.broadcast(self.room, "news", mark)
        assert self.js.event(self.sails, "news") == ("news", [mark])
        assert self.ws.next_event() == Event("news", mark)
        state = self.js.state(self.sails)
        assert state["connected"] is True and state["transport"] == "polling"

    def close(self) -> None:
        self.ws.close()
        self.js.close_all()


@pytest.fixture(scope="module")
def bystanders(sc: SailsCluster, sdk: Any) -> Iterator[Bystanders]:
    with node_driver() as js:
        group = Bystanders(sc, js, sdk)
        yield group
        group.close()


@pytest.fixture
def check(sc: SailsCluster, bystanders: Bystanders) -> Iterator[Bystanders]:
    sc.check_healthy()
    yield bystanders
    bystanders.assert_unaffected()
    sc.check_healthy()


@EIOS
def test_a_raw_session_connects_and_round_trips(
    sc: SailsCluster, check: Bystanders, sdk: Any, eio: int
) -> None:
    raw = PollRaw(sc.public(0), eio)
    assert raw.handshake["upgrades"] == ["websocket"]
    if eio == 4:
        assert raw.post(b"40") == (200, b"ok")
    seen = raw.packets_until("40")
    sdk.sockets.broadcast(raw.sid, "news", "to you")
    seen = raw.packets_until("42")
    assert '42["news","to you"]' in seen
    if eio == 3:  # EIO3 clients ping over POST; the pong comes back in a poll
        assert raw.post(b"1:2") == (200, b"ok")
        assert "3" in raw.packets_until("3")
    assert raw.post(b"1:1" if eio == 3 else b"1") == (200, b"ok")
    raw.assert_closed()


@EIOS
def test_unknown_sid_is_400_code_1(sc: SailsCluster, check: Bystanders, eio: int) -> None:
    raw = PollRaw(sc.public(0), eio)
    before = errors(sc, "unknown_sid", gateway=1)
    # The same session asked of the other gateway (no sticky sessions): refused clearly.
    other = urllib.parse.urlsplit(sc.public(1))
    raw.host, raw.port = other.hostname or "", other.port or 80
    for status, body in (raw.poll(), raw.post(b"1:2" if eio == 3 else b"3")):
        assert status == 400
        assert json.loads(body) == {"code": 1, "message": "Session ID unknown"}
    assert errors(sc, "unknown_sid", gateway=1) == before + 2


def test_wrong_eio_for_a_session_is_400_code_3(sc: SailsCluster, check: Bystanders) -> None:
    raw = PollRaw(sc.public(0), 4)
    before = errors(sc, "bad_request")
    status, body = raw.poll(eio=3)
    assert status == 400 and json.loads(body) == {"code": 3, "message": "Bad request"}
    assert errors(sc, "bad_request") == before + 1


@pytest.mark.parametrize(
    ("eio", "body"),
    [(3, b"5:2"), (3, b"x:2"), (3, b"1:21:"), (4, b"3\x1e"), (4, b"bAQID"), (3, b"\xff")],
)
def test_malformed_payloads_are_400_and_close(
    sc: SailsCluster, check: Bystanders, eio: int, body: bytes
) -> None:
    raw = PollRaw(sc.public(0), eio)
    before = errors(sc, "bad_payload")
    status, answer = raw.post(body)
    assert status == 400 and json.loads(answer) == {"code": 3, "message": "Bad request"}
    assert errors(sc, "bad_payload") == before + 1
    raw.assert_closed()


def test_two_pending_polls_one_refused_and_the_session_closed(
    sc: SailsCluster, check: Bystanders
) -> None:
    raw = PollRaw(sc.public(0), 4)
    before = errors(sc, "poll_overlap")
    results: list[tuple[int, bytes]] = []
    threads = [threading.Thread(target=lambda: results.append(raw.poll())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20 * T)
    refused = [r for r in results if r[0] == 400]
    answered = [r for r in results if r[0] == 200]
    assert len(refused) == 1 and len(answered) == 1, results
    assert json.loads(refused[0][1]) == {"code": 3, "message": "Bad request"}
    assert "1" in decode_payload(4, answered[0][1])  # the waiting poll got the close packet
    assert errors(sc, "poll_overlap") == before + 1


def test_oversized_post_is_413_and_closes(sc: SailsCluster, check: Bystanders) -> None:
    raw = PollRaw(sc.public(0), 4)
    before = errors(sc, "too_large")
    status, _ = raw.post(b"4" + b"x" * 70000)
    assert status == 413
    assert errors(sc, "too_large") == before + 1
    raw.assert_closed()


def test_slow_post_body_is_cut_and_closes(sc: SailsCluster, check: Bystanders) -> None:
    raw = PollRaw(sc.public(0), 4)
    before = errors(sc, "body_timeout")
    with socket.create_connection((raw.host, raw.port), timeout=10 * T) as sock:
        head = f"POST {raw.path()} HTTP/1.1\r\nHost: {raw.host}\r\nContent-Length: 100\r\n\r\n"
        sock.sendall(head.encode() + b"42")  # and never the rest
        assert sock.recv(1024) == b"", "the server should cut the connection"
    deadline_poll(lambda: errors(sc, "body_timeout") == before + 1, 5 * T, message="counted")
    raw.assert_closed()


def test_cross_origin_polling_follows_the_allowlist(sc: SailsCluster, check: Bystanders) -> None:
    """No allowlist (development): any origin gets CORS with credentials on its requests."""
    raw = PollRaw(sc.public(0), 4)
    conn = http.client.HTTPConnection(raw.host, raw.port, timeout=10 * T)
    try:
        conn.request("OPTIONS", raw.path(), headers={"Origin": "http://app.example"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 204
        assert resp.getheader("Access-Control-Allow-Origin") == "http://app.example"
        assert resp.getheader("Access-Control-Allow-Credentials") == "true"
        assert "POST" in (resp.getheader("Access-Control-Allow-Methods") or "")
    finally:
        conn.close()


def test_allowlisted_origins_only(sc: SailsCluster) -> None:
    proc, public = extra_gateway(sc, "gw-origins", "--allowed-origin", "http://good.example")
    metrics_url = str(proc.info["internal"]) + "/metrics"
    raw = PollRaw(public, 4)  # no Origin: not a web page's request
    for origin, status in (("http://good.example", 200), ("http://evil.example", 403)):
        conn = http.client.HTTPConnection(raw.host, raw.port, timeout=10 * T)
        try:
            conn.request("GET", raw.path(sid=False), headers={"Origin": origin})
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        assert resp.status == status, body
        if status == 200:
            assert resp.getheader("Access-Control-Allow-Origin") == origin
        else:
            assert json.loads(body) == {"code": 4, "message": "Forbidden"}
            assert resp.getheader("Access-Control-Allow-Origin") is None
    _, text = http_get(metrics_url)
    assert Metrics(text).get("roomcast_gateway_polling_errors_total", reason="origin") == 1
    proc.stop()


def test_sessions_that_stop_polling_time_out_and_dropped_polls_close(sc: SailsCluster) -> None:
    proc, public = extra_gateway(
        sc, "gw-ping", "--sio-ping-interval", str(0.5 * T), "--sio-ping-timeout", str(0.5 * T)
    )
    metrics_url = str(proc.info["internal"]) + "/metrics"

    def metric(name: str, **labels: str) -> float:
        _, text = http_get(metrics_url)
        return Metrics(text).get(f"roomcast_gateway_{name}", **labels)

    silent = PollRaw(public, 4)
    assert silent.post(b"40") == (200, b"ok")
    deadline_poll(
        lambda: metric("disconnects_total", reason="ping_timeout") == 1,
        10 * T,
        message="the silent session to time out",
    )
    silent.assert_closed()
    # A client that drops its pending poll: the session is closed (as the reference does).
    dropping = PollRaw(public, 4)
    assert dropping.post(b"40") == (200, b"ok")
    assert dropping.packets_until("40")
    with socket.create_connection((dropping.host, dropping.port), timeout=10 * T) as sock:
        sock.sendall(f"GET {dropping.path()} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        deadline_poll(lambda: metric("polling_sessions") == 1, 5 * T, message="one session")
    deadline_poll(
        lambda: metric("polling_errors_total", reason="poll_closed") == 1,
        10 * T,
        message="the dropped poll to be counted",
    )
    deadline_poll(lambda: metric("polling_sessions") == 0, 5 * T, message="no session left")
    assert metric("connections") == 0
    proc.stop()


def test_requests_over_the_inbound_budget_get_429(sc: SailsCluster) -> None:
    """Each request and each packet spends from --max-frames-per-second / --frame-burst."""
    proc, public = extra_gateway(
        sc, "gw-budget", "--max-frames-per-second", "0.01", "--frame-burst", "4"
    )
    metrics_url = str(proc.info["internal"]) + "/metrics"
    raw = PollRaw(public, 4)
    assert raw.post(b"40") == (200, b"ok")  # the request and its packet: 2 of 4
    assert raw.poll()[0] == 200  # the CONNECT's answer: 3 of 4
    assert raw.post(b"3") == (200, b"ok")  # the request: 4 of 4 (the pong is refused)
    status, body = raw.post(b"3")
    assert status == 429 and json.loads(body) == {"code": 3, "message": "Too many requests"}
    _, text = http_get(metrics_url)
    assert Metrics(text).get("roomcast_gateway_polling_errors_total", reason="rate_limited") == 1
    proc.stop()


@EIOS
def test_upgrade_carries_the_socket_with_what_was_queued_and_in_flight(
    sc: SailsCluster, check: Bystanders, sdk: Any, eio: int
) -> None:
    """The upgrade step by step: ``2probe``/``3probe`` on the new WebSocket, a poll meanwhile
    gets a noop, a push during the upgrade and the answer to a virtual request made over
    polling both arrive on the WebSocket after ``5``; the old sid is gone from polling."""
    unknown = errors(sc, "unknown_sid")
    before = sc.cluster.metrics(0).get("roomcast_gateway_upgrades_total")
    raw = PollRaw(sc.public(0), eio)
    if eio == 4:
        assert raw.post(b"40") == (200, b"ok")
    raw.packets_until("40")
    slow = {"method": "post", "url": "/slow", "data": {"seconds": 0.5 * T}, "headers": {}}
    request = "421" + json.dumps(["post", slow])
    assert raw.post(encode_payload(eio, [request.encode()])) == (200, b"ok")
    url = sc.public(0).replace("http://", "ws://")
    query = f"EIO={eio}&transport=websocket&sid={raw.sid}"
    with connect(f"{url}/socket.io/?{query}", open_timeout=10 * T) as ws:
        ws.send("2probe")
        assert ws.recv(timeout=10 * T) == "3probe"
        assert decode_payload(eio, raw.poll()[1]) == ["6"]  # the paused poll is drained
        sdk.sockets.broadcast(raw.sid, "news", "during the upgrade")
        ws.send("5")
        got: list[str] = []
        while len(got) < 2:
            frame = ws.recv(timeout=10 * T)
            assert isinstance(frame, str)
            if frame != "2":
                got.append(frame)
        assert '42["news","during the upgrade"]' in got
        (ack,) = [f for f in got if f.startswith("431")]
        assert json.loads(ack[3:])[0]["statusCode"] == 200
        sdk.sockets.broadcast(raw.sid, "news", "after")
        frame = ws.recv(timeout=10 * T)
        while frame == "2":
            frame = ws.recv(timeout=10 * T)
        assert frame == '42["news","after"]'
        status, body = raw.poll()
        assert status == 400 and json.loads(body)["code"] == 1
    assert sc.cluster.metrics(0).get("roomcast_gateway_upgrades_total") == before + 1
    assert errors(sc, "unknown_sid") == unknown + 1


def test_a_draining_gateway_answers_pending_polls_with_close(sc: SailsCluster) -> None:
    """SIGTERM: the pending poll of each session gets the close packet, the gateway exits 0
    with a clean log (no task left pending on a poll)."""
    proc, public = extra_gateway(sc, "gw-drain")
    sessions = [PollRaw(public, eio) for eio in (4, 3)]
    for raw in sessions:
        if raw.eio == 4:
            assert raw.post(b"40") == (200, b"ok")
        raw.packets_until("40")
    metrics_url = str(proc.info["internal"]) + "/metrics"

    def gets() -> float:
        text = http_get(metrics_url)[1]
        return Metrics(text).get("roomcast_gateway_polling_requests_total", method="GET")

    before = gets()
    results: list[list[str]] = []

    def poll(raw: PollRaw) -> None:
        status, body = raw.poll()
        results.append(decode_payload(raw.eio, body) if status == 200 else [f"status {status}"])

    threads = [threading.Thread(target=poll, args=(raw,)) for raw in sessions]
    for thread in threads:
        thread.start()
    deadline_poll(lambda: gets() == before + 2, 10 * T, message="both polls to be pending")
    proc.stop()
    proc.check_log()
    for thread in threads:
        thread.join(10 * T)
    assert len(results) == 2
    for packets in results:
        assert "1" in packets, packets


def test_session_bound_and_idle_polls(sc: SailsCluster) -> None:
    """Polling sessions count against --max-connections (then 503, counted); a poll with
    nothing to say is answered with a noop after --sio-poll-timeout, and the session lives on."""
    proc, public = extra_gateway(
        sc, "gw-bound", "--max-connections", "1", "--sio-poll-timeout", str(1.0 * T)
    )
    metrics_url = str(proc.info["internal"]) + "/metrics"
    raw = PollRaw(public, 4)
    assert raw.post(b"40") == (200, b"ok")
    raw.packets_until("40")
    url = urllib.parse.urlsplit(public)
    conn = http.client.HTTPConnection(url.hostname or "", url.port or 80, timeout=10 * T)
    try:
        conn.request("GET", raw.path(sid=False))
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    assert resp.status == 503
    metrics = Metrics(http_get(metrics_url)[1])
    assert metrics.get("roomcast_gateway_polling_errors_total", reason="full") == 1
    assert metrics.get("roomcast_gateway_rejected_total", reason="max_connections") == 1
    started = time.monotonic()
    status, body = raw.poll()
    assert (status, decode_payload(4, body)) == (200, ["6"])
    assert time.monotonic() - started >= 0.9 * T
    assert raw.post(b"2probe") == (200, b"ok")  # still served
    assert "3probe" in raw.packets_until("3probe")
    proc.stop()


def test_a_session_that_stops_polling_is_cut_at_its_send_queue_bound(
    sc: SailsCluster, sdk: Any
) -> None:
    """Deliveries queue for the next poll within --max-send-queue-bytes; past it the session
    is closed as a slow consumer (counted), and the next poll gets the close packet."""
    proc, public = extra_gateway(sc, "gw-slow", "--max-send-queue-bytes", "8192")
    metrics_url = str(proc.info["internal"]) + "/metrics"
    raw = PollRaw(public, 4)
    assert raw.post(b"40") == (200, b"ok")
    raw.packets_until("40")
    sdk.sockets.broadcast(raw.sid, "news", "a" * 1000)
    sdk.sockets.broadcast(raw.sid, "news", "b" * 1000)
    seen = raw.packets_until('42["news","b')  # one payload, or two if a poll came between
    assert [p[:12] for p in seen if p.startswith("42")] == ['42["news","a', '42["news","b']
    for _ in range(12):  # 12 KB for a session that does not poll
        sdk.sockets.broadcast(raw.sid, "news", "c" * 1000)

    def slow() -> bool:
        text = http_get(metrics_url)[1]
        return Metrics(text).get("roomcast_gateway_disconnects_total", reason="slow_consumer") == 1

    deadline_poll(slow, 10 * T, message="the session to be cut as a slow consumer")
    raw.assert_closed()
    proc.stop()
