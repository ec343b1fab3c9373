"""Bad input on ``/socket.io/``, sent as raw Engine.IO/Socket.IO text packets (EIO=4 and EIO=3).

Documented outcomes (gateway/sio_handler.py, architecture §4-§5):

* a packet that does not parse (malformed JSON, unknown Engine.IO or Socket.IO packet type,
  binary packets and frames) drops the client: a ``41`` disconnect packet, then close 1008;
* a bad virtual-request envelope is a 400 JWR through the ack when there is one, otherwise a
  ``sails:parseError`` event; the connection stays and keeps being served;
* a namespace other than ``/`` is refused (``44/<nsp>,{"message": ...}`` for CONNECT, a 400
  error for events); a frame over ``--max-frame-bytes`` gets ``41``, then close 1009;
* a request that is neither polling nor a WebSocket handshake gets Engine.IO's 400
  ``Transport unknown`` (polling's own bad input: test_socketio_polling_bad_input.py).

Each case also shows that other connections are unaffected: a sails.io.js client (Node) on the
offender's gateway and a plain ``/ws`` client on the other gateway, both in one room since the
module started, receive a fresh broadcast after every case.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from tests.integration.harness import Event, Metrics, WsClient, http_get
from tests.integration.test_sails_support import (
    SDK_VERSION,
    NodeDriver,
    SailsCluster,
    SioRaw,
    assert_jwr_shape,
    jwr_error_body,
    node_driver,
    sails_cluster,
)

EIOS = pytest.mark.parametrize("eio", [4, 3])


@pytest.fixture(scope="module")
def sc() -> Iterator[SailsCluster]:
    with sails_cluster(gateways=2, workers=1) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def sdk(sc: SailsCluster) -> Iterator[Any]:
    from roomcast import SyncCluster

    client = SyncCluster(sc.commands)
    yield client
    client.close()


class Bystanders:
    """A sails.io.js client on gateway 0 and a /ws client on gateway 1, in one room."""

    def __init__(self, sc: SailsCluster, js: NodeDriver, sdk: Any) -> None:
        self.js, self.sdk = js, sdk
        self.room = f"bystanders-{uuid.uuid4().hex[:12]}"
        self.sails, _ = js.sails(sc.public(0), listen=["news"])
        got = js.jwr(self.sails, "post", "/rooms/join", {"room": self.room})
        assert got["jwr"]["statusCode"] == 200, got
        self.ws = WsClient(sc.cluster.gateways[1].ws_url, name="bystander")
        sdk.sockets.join(self.ws.id, self.room)

    def assert_unaffected(self) -> None:
        mark = uuid.uuid4().hex
        self.sdk.sockets.broadcast(self.room, "news", mark)
        assert self.js.event(self.sails, "news") == ("news", [mark])
        assert self.ws.next_event() == Event("news", mark)
        assert self.js.state(self.sails)["connected"] is True

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
    """Per case: the cluster stays healthy and the bystanders keep receiving broadcasts."""
    sc.check_healthy()
    yield bystanders
    bystanders.assert_unaffected()
    sc.check_healthy()


@pytest.fixture
def offenders(sc: SailsCluster) -> Iterator[list[SioRaw]]:
    made: list[SioRaw] = []
    yield made
    for raw in made:
        raw.close()


def metrics(sc: SailsCluster, gateway: int = 0) -> Metrics:
    return sc.cluster.metrics(gateway)


def open_raw(sc: SailsCluster, offenders: list[SioRaw], eio: int, **kw: Any) -> SioRaw:
    raw = SioRaw(sc.public(0), eio=eio, **kw)
    offenders.append(raw)
    return raw


def assert_still_served(raw: SioRaw, ack_id: int = 900) -> None:
    """The connection survived: a good virtual request is answered with a 200 JWR."""
    raw.send(f'42{ack_id}["get",{{"method":"get","url":"/user/5","headers":{{}},"data":{{}}}}]')
    jwr = raw.ack(ack_id)
    assert_jwr_shape(jwr, 200)
    assert jwr["body"] == {"id": "5", "params": {"id": "5"}}


# ------------------------------------------------------------------ packets that do not parse

DROPPED = {
    "malformed json": '42["get",{"url":',
    "event payload not an array": '42{"url":"/echo"}',
    "event name not a string": "42[1,{}]",
    "empty event array": "42[]",
    "NaN in the payload": '42["get",NaN]',
    "ack id too long": '4212345678901234567890["get",{}]',
    "connect payload not an object": "40[1]",
    "empty frame": "",
    "empty socket.io packet": "4",
    "unknown engine.io packet type": "9hello",
    "unknown socket.io packet type": '47["x"]',
    "socket.io packet type out of range": "4x",
    "binary event": '451-["post",{"_placeholder":true,"num":0}]',
    "binary ack": '461-0[{"_placeholder":true,"num":0}]',
}


@EIOS
@pytest.mark.parametrize("packet", list(DROPPED.values()), ids=list(DROPPED))
def test_unparseable_packet_gets_disconnect_then_1008(
    sc: SailsCluster, check: Bystanders, offenders: list[SioRaw], eio: int, packet: str
) -> None:
    raw = open_raw(sc, offenders, eio)
    before = metrics(sc).get("roomcast_gateway_disconnects_total", reason="malformed_packet")
    raw.send(packet)
    code, packets = raw.wait_closed()
    assert (code, packets) == (1008, ["41"])
    after = metrics(sc).get("roomcast_gateway_disconnects_total", reason="malformed_packet")
    assert after == before + 1


@EIOS
def test_binary_websocket_frame_gets_disconnect_then_1008(
    sc: SailsCluster, check: Bystanders, offenders: list[SioRaw], eio: int
) -> None:
    raw = open_raw(sc, offenders, eio)
    raw.send(b"\x04" + json.dumps(["post", {"url": "/echo"}]).encode())
    assert raw.wait_closed() == (1008, ["41"])


# ------------------------------------------------------------------ bad virtual requests

BAD_ENVELOPES = {
    "argument not an object": '["get","/echo"]',
    "no argument": '["get"]',
    "url missing": '["get",{"method":"get"}]',
    "url not a path": '["get",{"url":"echo"}]',
    "url not a string": '["post",{"url":5}]',
    "method not the event": '["get",{"method":"post","url":"/echo"}]',
    "headers not an object": '["get",{"url":"/echo","headers":["x"]}]',
}


@EIOS
@pytest.mark.parametrize("args", list(BAD_ENVELOPES.values()), ids=list(BAD_ENVELOPES))
def test_bad_envelope_with_ack_gets_400_jwr(
    sc: SailsCluster, check: Bystanders, offenders: list[SioRaw], eio: int, args: str
) -> None:
    raw = open_raw(sc, offenders, eio)
    raw.send(f"4217{args}")
    jwr = raw.ack(17)
    assert_jwr_shape(jwr, 400)
    assert jwr_error_body(jwr)["error"] == "bad_request"
    assert_still_served(raw)


@EIOS
@pytest.mark.parametrize("args", list(BAD_ENVELOPES.values()), ids=list(BAD_ENVELOPES))
def test_bad_envelope_without_ack_gets_sails_parse_error(
    sc: SailsCluster, check: Bystanders, offenders: list[SioRaw], eio: int, args: str
) -> None:
    raw = open_raw(sc, offenders, eio)
    before = metrics(sc).get("roomcast_gateway_client_errors_total", code="bad_request")
    raw.send(f"42{args}")
    event, (error,) = raw.event()
    assert event == "sails:parseError"
    assert error["error"] == "bad_request" and isinstance(error["message"], str), error
    after = metrics(sc).get("roomcast_gateway_client_errors_total", code="bad_request")
    assert after == before + 1
    assert_still_served(raw)


def test_unknown_event_with_ack_gets_400_and_without_is_ignored(
    sc: SailsCluster, check: Bystanders, offenders: list[SioRaw]
) -> None:
    raw = open_raw(sc, offenders, 4)
    raw.send('423["subscribe",{"url":"/echo"}]')
    jwr = raw.ack(3)
    assert_jwr_shape(jwr, 400)
    assert jwr_error_body(jwr)["error"] == "bad_request"
    raw.send('42["subscribe",{"url":"/echo"}]')  # Sails ignores events it does not serve
    assert_still_served(raw)  # the next packet is the answer to this, not an error


def test_request_before_the_namespace_is_connected_gets_400(
    sc: SailsCluster, check: Bystanders, offenders: list[SioRaw]
) -> None:
    """EIO4: virtual requests before the client's CONNECT ``40`` are refused, not served."""
    raw = open_raw(sc, offenders, 4, connect_ns=False)
    raw.send('421["get",{"method":"get","url":"/user/1"}]')
    jwr = raw.ack(1)
    assert_jwr_shape(jwr, 400)
    assert "namespace" in jwr_error_body(jwr)["message"]
    raw.send("40")
    assert json.loads(str(raw.recv_skipping_pings())[2:]) == {"sid": raw.sid}
    assert_still_served(raw)


@EIOS
def test_handshake_without_sdk_version_gets_400_jwr(
    sc: SailsCluster, check: Bystanders, offenders: list[SioRaw], eio: int
) -> None:
    raw = open_raw(sc, offenders, eio, query={})
    raw.send('425["get",{"method":"get","url":"/user/1"}]')
    jwr = raw.ack(5)
    assert_jwr_shape(jwr, 400)
    assert "__sails_io_sdk_version" in jwr_error_body(jwr)["message"]


@pytest.mark.parametrize("version", ["0.10.9", "banana", ""])
def test_too_old_or_bogus_sdk_version_gets_400_jwr(
    sc: SailsCluster, check: Bystanders, offenders: list[SioRaw], version: str
) -> None:
    raw = open_raw(sc, offenders, 4, query={"__sails_io_sdk_version": version})
    raw.send('421["get",{"method":"get","url":"/user/1"}]')
    assert_jwr_shape(raw.ack(1), 400)


@pytest.mark.parametrize("version", ["0.11.0", SDK_VERSION, "2.0.0-beta"])
def test_supported_sdk_versions_are_served(
    sc: SailsCluster, check: Bystanders, offenders: list[SioRaw], version: str
) -> None:
    raw = open_raw(sc, offenders, 4, query={"__sails_io_sdk_version": version})
    assert_still_served(raw)


# ------------------------------------------------------------------ other namespaces


@EIOS
def test_connect_to_another_namespace_is_refused(
    sc: SailsCluster, check: Bystanders, offenders: list[SioRaw], eio: int
) -> None:
    raw = open_raw(sc, offenders, eio)
    raw.send("40/admin,")
    packet = raw.recv_skipping_pings()
    assert isinstance(packet, str) and packet.startswith("44/admin,"), packet
    assert json.loads(packet[len("44/admin,") :]) == {"message": "Invalid namespace"}
    assert_still_served(raw)


@EIOS
def test_event_on_another_namespace_gets_400(
    sc: SailsCluster, check: Bystanders, offenders: list[SioRaw], eio: int
) -> None:
    raw = open_raw(sc, offenders, eio)
    raw.send('42/admin,8["get",{"method":"get","url":"/user/1"}]')
    jwr = raw.ack(8)  # the gateway answers on "/" (see the report on issue 3)
    assert_jwr_shape(jwr, 400)
    assert "namespace" in jwr_error_body(jwr)["message"]
    raw.send('42/admin,["get",{"method":"get","url":"/user/1"}]')
    event, (error,) = raw.event()
    assert event == "sails:parseError" and error["error"] == "bad_request", error
    assert_still_served(raw)


# ------------------------------------------------------------------ sizes


@EIOS
def test_frame_over_the_limit_is_closed_1009(
    sc: SailsCluster, check: Bystanders, offenders: list[SioRaw], eio: int
) -> None:
    limit = 1024 * 1024  # the gateway's default --max-frame-bytes
    raw = open_raw(sc, offenders, eio)
    assert raw.handshake["maxPayload"] == limit
    before = metrics(sc).get("roomcast_gateway_disconnects_total", reason="frame_too_big")
    raw.send('42["post",{"method":"post","url":"/echo","data":"' + "x" * limit + '"}]')
    assert raw.wait_closed() == (1009, ["41"])  # a disconnect packet first, as for 1008
    after = metrics(sc).get("roomcast_gateway_disconnects_total", reason="frame_too_big")
    assert after == before + 1


def test_large_frame_under_the_limit_is_served(
    sc: SailsCluster, check: Bystanders, offenders: list[SioRaw]
) -> None:
    raw = open_raw(sc, offenders, 4)
    text = "y" * (512 * 1024)
    raw.send('421["post",{"method":"post","url":"/echo","data":"' + text + '"}]')
    jwr = raw.ack(1)
    assert_jwr_shape(jwr, 200)
    assert jwr["body"]["data"] == text


# ------------------------------------------------------------------ plain HTTP


@pytest.mark.parametrize("transport", ["flashsocket", "", "websocket"])
def test_other_transports_get_transport_unknown(
    sc: SailsCluster, check: Bystanders, transport: str
) -> None:
    """Polling is served (tests/integration/test_socketio_polling*.py); an unknown transport,
    none, or ``websocket`` without a WebSocket handshake is Engine.IO's "Transport unknown"."""
    status, body = http_get(sc.public(0) + f"/socket.io/?EIO=4&transport={transport}")
    assert status == 400
    assert json.loads(body) == {"code": 0, "message": "Transport unknown"}


def test_unsupported_engine_io_version_is_refused(sc: SailsCluster, check: Bystanders) -> None:
    with pytest.raises(InvalidStatus) as info:
        SioRaw(sc.public(0), eio=5)
    response = info.value.response
    assert response.status_code == 400
    assert json.loads(response.body or b"{}") == {
        "code": 5,
        "message": "Unsupported protocol version",
    }


def test_getcookie_answers_the_jsonp_callback(sc: SailsCluster, check: Bystanders) -> None:
    status, body = http_get(sc.public(1) + "/__getcookie")
    assert (status, body) == (200, "_sailsIoJSConnect();")
