"""Who may answer a virtual request, and a worker whose sync threads are all taken (issue 19).

* 19.8 — a local peer on the commands port (a raw ZeroMQ DEALER, no CURVE) used to be able to
  answer any request in flight: refs were sequential and a reply was accepted from anyone. Now
  refs are 64 random bits, and a reply counts only from the worker the request was sent to.
* 19.10 — sync handlers run on a bounded pool (``--sync-threads``): hung handlers that hold
  every thread make the next sync request answer 503 at once (not 504 after the timeout), the
  router's ``workers_busy`` gauge shows it, and requests go to another worker meanwhile.

Real router, gateway and workers; a real /ws client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import zmq

from roomcast.core import wire
from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.test_actions import APP, Env


class FakePeer:
    """A hand-rolled peer on the router's commands port (what any local process can open)."""

    def __init__(self, commands: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(commands)

    def send(self, msg: wire.Message) -> None:
        self.sock.send(wire.encode(msg))

    def recv(self, timeout: float) -> wire.Message:
        assert self.sock.poll(int(timeout * 1000)), f"nothing from the router in {timeout}s"
        return wire.decode(self.sock.recv_multipart()[-1])

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env(gateways=1)
    try:
        yield e
    except BaseException:
        e.kill()
        raise
    e.check()
    e.stop()


def _reply(ref: int, body: object) -> wire.Reply:
    return wire.Reply(ref=ref, status=200, body=json.dumps(body).encode(), headers=b"{}")


def test_only_the_worker_a_request_went_to_can_answer_it(env: Env) -> None:
    env.add_worker(APP)
    env.wait_workers(1)
    commands = env.cluster.commands
    served, intruder = FakePeer(commands), FakePeer(commands)
    try:
        # A (fake) worker that serves POST /fake, and receives the request for it.
        served.send(
            wire.Hello(
                node_id="fake", role=wire.Role.WORKER, routes=("POST /fake",), routes_known=True
            )
        )
        assert isinstance(served.recv(5 * T), wire.HelloAck)
        env.wait_workers(2)
        client = env.ws(0)
        ref = client.send_op("request", method="POST", url="/fake", data={}, headers={})
        request = served.recv(5 * T)
        assert isinstance(request, wire.Request) and request.url == "/fake"
        # Another peer learns the ref (the worst case) and answers first: dropped, counted.
        intruder.send(_reply(request.ref, {"forged": True}))
        deadline_poll(
            lambda: env.router_metrics().get("roomcast_router_foreign_replies_total") == 1,
            5 * T,
            message="the forged reply to be dropped and counted",
        )
        served.send(_reply(request.ref, {"real": True}))
        reply = client.wait_reply(ref)
        assert reply["statusCode"] == 200 and reply["body"] == {"real": True}, reply

        # Sequential guesses (what used to answer any request in flight) hit nothing: the real
        # worker's answer comes back.
        slow = client.send_op("request", method="POST", url="/slow", data={"seconds": 0.5 * T})
        for guess in range(1, 5001):
            intruder.send(_reply(guess, {"forged": True}))
        reply = client.wait_reply(slow)
        assert reply["statusCode"] == 200 and reply["body"] == {"slept": True}, reply
        assert env.router_metrics().get("roomcast_router_foreign_replies_total") == 1
        # Refs are not sequential: two requests in a row to the fake worker.
        refs = []
        for _ in range(2):
            ref = client.send_op("request", method="POST", url="/fake", data={}, headers={})
            request = served.recv(5 * T)
            assert isinstance(request, wire.Request)
            refs.append(request.ref)
            served.send(_reply(request.ref, {}))
            assert client.wait_reply(ref)["statusCode"] == 200
        assert abs(refs[1] - refs[0]) > 2**20, refs
    finally:
        served.close()
        intruder.close()


def test_hung_sync_handlers_answer_503_at_once_and_send_requests_elsewhere(env: Env) -> None:
    hung_for = 3 * T
    env.add_worker(APP, "--sync-threads", "2")
    env.wait_workers(1)
    client = env.ws(0)

    def sync_slow(seconds: float) -> int:
        return client.send_op("request", method="POST", url="/sync-slow", data={"seconds": seconds})

    hung = [sync_slow(hung_for) for _ in range(2)]
    deadline_poll(
        lambda: env.router_metrics().get("roomcast_router_workers_busy") == 1,
        5 * T,
        message="the worker to report every sync thread taken",
    )
    started = time.monotonic()
    reply = client.wait_reply(sync_slow(0))
    elapsed = time.monotonic() - started
    assert reply["statusCode"] == 503 and reply["body"]["error"] == "no_worker", reply
    assert elapsed < hung_for / 2, f"503 took {elapsed:.2f}s: not at once"
    # Async actions on the same worker are unaffected.
    echo = client.request("request", method="GET", url="/echo", data={}, headers={})
    assert echo["statusCode"] == 200, echo

    # A second worker: sync requests go to it while the first is busy.
    env.add_worker(APP)
    env.wait_workers(2)
    for _ in range(4):
        reply = client.wait_reply(sync_slow(0))
        assert reply["statusCode"] == 200, reply

    for ref in hung:
        assert client.wait_reply(ref, timeout=hung_for + 10 * T)["statusCode"] == 200
    deadline_poll(
        lambda: env.router_metrics().get("roomcast_router_workers_busy") == 0,
        5 * T,
        message="the worker to report a free thread again",
    )


def test_the_router_keeps_no_oversize_requester_context(env: Env) -> None:
    """A (hand-rolled) gateway registers two sockets, one with a context over the router's
    bound: requests on behalf of the first carry its context, the second's is dropped."""
    from roomcast import SyncCluster
    from router.server import MAX_CONTEXT_BYTES
    from tests.integration.test_versions import PeerGateway

    env.add_worker(APP)
    env.wait_workers(1)
    peer = PeerGateway(env.cluster.router, "fakegw")
    sdk = SyncCluster(env.cluster.commands)
    try:
        assert isinstance(peer.hello_until_answered(wire.PROTOCOL_VERSION), wire.HelloAck)
        small = json.dumps({"claims": {"sub": "ada"}, "headers": {"cookie": "c=1"}}).encode()
        big = json.dumps({"claims": {}, "headers": {"x-big": "v" * MAX_CONTEXT_BYTES}}).encode()
        peer.dealer.send(
            wire.encode(
                wire.SocketOpen(
                    ref=99, sockets=("fake-s1", "fake-s2"), users=("ada", ""), contexts=(small, big)
                )
            )
        )
        deadline_poll(lambda: sdk.sockets.count("fake-s2") == 1, 5 * T, message="registered")
        first = sdk.request("fake-s1", "GET", "/echo")
        assert first.body["user"] == "ada" and first.body["claims"] == {"sub": "ada"}
        assert first.body["headers"] == {"cookie": "c=1"}
        second = sdk.request("fake-s2", "GET", "/echo")
        assert second.body["headers"] == {} and second.body["claims"] == {}, second.body
    finally:
        sdk.close()
        peer.close()
