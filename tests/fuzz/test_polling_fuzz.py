"""Fuzz Engine.IO HTTP long-polling on ``/socket.io/`` (architecture §4): random POST payloads,
EIO=3 and 4.

Each example opens a polling session, POSTs a payload of packets the gateway's own parser
accepts (encoded the version's way), then a sentinel ping whose pong must come back in a poll
(the session stays); then at most one breaker: random bytes, a payload with a packet that must
drop the session, or a valid payload cut or padded (bad v3 lengths, empty v4 packets). A breaker
is answered 200 ``ok`` or refused 400/411/413 with the session closed, never anything else; the
gateway logs no error, the control client keeps receiving, and every session is gone at the end.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
import uuid

import pytest
from hypothesis import strategies as st

from gateway.eio_polling import PayloadError, decode_payload, encode_payload
from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.fuzz.conftest import Control, connections_gauge, host_port
from tests.fuzz.strategies import sio_accepted, sio_packets
from tests.fuzz.support import BATCH_MAX, BATCH_MIN, CHECK_EVERY, TIMEOUT_S, LogWatch, Run
from tests.integration.harness import Cluster

pytestmark = pytest.mark.timeout(TIMEOUT_S)


class Session:
    def __init__(self, host: str, port: int, eio: int, sdk_version: str | None) -> None:
        self.host, self.port, self.eio = host, port, eio
        self.query = {"EIO": str(eio), "transport": "polling"}
        if sdk_version:
            self.query["__sails_io_sdk_version"] = sdk_version
        status, body = self.request("GET", with_sid=False)
        assert status == 200, (status, body)
        (packet,) = decode_payload(eio, body)
        self.sid = json.loads(packet[1:])["sid"]
        self.seen: list[str] = []

    def request(
        self, method: str, body: bytes | None = None, *, with_sid: bool = True
    ) -> tuple[int, bytes]:
        query = dict(self.query, sid=self.sid) if with_sid else self.query
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10 * T)
        try:
            conn.request(method, "/socket.io/?" + urllib.parse.urlencode(query), body=body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def poll_until(self, wanted: str) -> bool:
        for _ in range(50):
            status, body = self.request("GET")
            if status != 200:
                return False
            self.seen += decode_payload(self.eio, body)
            if wanted in self.seen:
                return True
            if "1" in self.seen:
                return False
        return False

    def closed(self) -> bool:
        """The session is gone (its close packet, then an unknown sid)."""
        for _ in range(3):
            status, body = self.request("GET")
            if status == 400:
                return json.loads(body)["code"] == 1
            if "1" in decode_payload(self.eio, body):
                continue
        return False


def mangled(eio: int, packets: list[str], cut: int) -> bytes:
    payload = encode_payload(eio, [p.encode() for p in packets])
    return payload[: max(0, len(payload) - cut)] if cut > 0 else payload + b"\x1e" * -cut


def test_polling_payloads(fuzz_cluster: Cluster, control: Control) -> None:
    host, port = host_port(fuzz_cluster.gateways[0].public)
    watch = LogWatch(fuzz_cluster.procs)
    run = Run("/socket.io/ polling payloads")

    def example(
        eio: int, sdk_version: str | None, batch: list[str], breaker: tuple[str, bytes] | None
    ) -> None:
        session = Session(host, port, eio, sdk_version)
        open_ = True
        try:
            if eio == 4:
                assert session.request("POST", b"40") == (200, b"ok")
            # A v4 payload cannot carry a packet holding its separator (the client's either).
            body = [p for p in batch if sio_accepted(p) and (eio == 3 or "\x1e" not in p)]
            if body:
                status, answer = session.request(
                    "POST", encode_payload(eio, [p.encode() for p in body])
                )
                assert (status, answer) == (200, b"ok"), (status, answer)
            probe = uuid.uuid4().hex
            assert session.request("POST", encode_payload(eio, [f"2{probe}".encode()]))[0] == 200
            assert session.poll_until(f"3{probe}"), f"no pong to the sentinel: {session.seen[-5:]}"
            run.cases += len(body) + 1  # and the sentinel
            if breaker is not None:
                kind, data = breaker
                status, answer = session.request("POST", data)
                run.cases += 1
                run.tally(f"breaker_{kind}_{status}")
                try:
                    decode_payload(eio, data)
                    parses = True
                except PayloadError:
                    parses = False
                if not parses:
                    assert status == 400 and json.loads(answer)["code"] == 3, (status, answer)
                else:
                    assert status in (200, 413), (status, answer)
                if status != 200:
                    assert session.closed(), "a refused POST must close the session"
                    open_ = False
        finally:
            if open_:
                session.request("POST", encode_payload(eio, [b"1"]))
        watch.check()
        run.examples += 1
        if run.examples % CHECK_EVERY == 0:
            control.check()

    breakers = st.one_of(
        st.binary(max_size=60).map(lambda b: ("bytes", b)),
        st.tuples(st.sampled_from([3, 4]), st.lists(sio_packets(), min_size=1, max_size=4)).map(
            lambda t: ("packets", encode_payload(t[0], [p.encode() for p in t[1]]))
        ),
        st.tuples(
            st.sampled_from([3, 4]),
            st.lists(sio_packets(), min_size=1, max_size=4),
            st.integers(-2, 6),
        ).map(lambda t: ("mangled", mangled(*t))),
    )
    run.until_done(
        example,
        eio=st.sampled_from([3, 4]),
        sdk_version=st.sampled_from(["1.2.1", None]),
        batch=st.lists(sio_packets(), min_size=BATCH_MIN, max_size=BATCH_MAX),
        breaker=st.none() | breakers,
    )
    control.check()
    deadline_poll(
        lambda: connections_gauge(fuzz_cluster)() == 1,
        10 * T,
        message="gateway connections back to the control client only",
    )
    watch.check()
    run.report()
