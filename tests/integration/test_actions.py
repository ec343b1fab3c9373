"""Actions (architecture §4 ``request`` op, §6 actions contract) through real processes.

A router, gateways and ``roomcast worker`` processes serving ``tests.integration.apps:app`` (and
``apps_extra:extra``); plain ``/ws`` clients send ``{"op":"request",...}`` frames and get JWR-like
``{"op":"reply","ref","statusCode","body","headers"}`` replies; the SDK's ``request`` too.

Contract under test: no action 404; no worker 503 ``no_worker``; handler error 500 with neither
the exception text nor a trace in the reply (the traceback is in the worker's log); timeout 504;
path parameters and the query string in ``req.params``; ``req.cluster.sockets.join(req, room)``
from async and sync handlers; several workers share the load; a dead worker stops being used.

The action clusters here are private to this module (the session's shared cluster has no worker
and other modules rely on that). Each test checks afterwards that every process is alive and
logged no ERROR/Traceback, except where a test expects them and says so (``env.forgive()``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import websockets

import roomcast
from roomcast import ActionFailed, NotFound, NoWorker, Response, SyncCluster
from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import (
    Cluster,
    Event,
    Metrics,
    Proc,
    WsClient,
    fresh_room,
    http_get,
    run_all,
    start_cluster,
)

APP = "tests.integration.apps:app"
EXTRA = "tests.integration.apps_extra:extra"
# The main cluster's workers give up on a handler after this; its router waits much longer.
HANDLER_TIMEOUT = 1.0 * T
# What the harness's WebSocket client (websockets) sends as its handshake User-Agent.
WS_AGENT = (
    f"Python/{sys.version_info.major}.{sys.version_info.minor} websockets/{websockets.__version__}"
)
REQUEST_TIMEOUT = 10.0 * T
REPLY_KEYS = {"op", "ref", "statusCode", "body", "headers"}


# ----------------------------------------------------------------------------------- harness


class Env:
    """A router, gateways and action workers; log hygiene per test (see ``forgive``)."""

    def __init__(
        self,
        *,
        gateways: int = 2,
        router_args: Sequence[str] = (),
        gateway_args: Sequence[str] = (),
    ) -> None:
        self.cluster: Cluster = start_cluster(
            gateways=gateways, router_args=router_args, gateway_args=gateway_args
        )
        self.workers: list[Proc] = []
        self._clean_from: dict[Proc, int] = {}

    def add_worker(self, app: str = APP, *args: str) -> Proc:
        name = f"worker{len(self.workers)}"
        argv = ["-m", "roomcast.cli", "worker", app, "--router", self.cluster.commands, *args]
        proc = Proc(name, argv)
        self.workers.append(proc)
        info = proc.wait_ready()
        assert info.get("router") == self.cluster.commands, info
        return proc

    @property
    def procs(self) -> list[Proc]:
        return [*self.cluster.procs, *(w for w in self.workers if w.returncode is None)]

    def router_metrics(self) -> Metrics:
        status, text = http_get(self.cluster.router.info["http"] + "/metrics")
        assert status == 200, text[:200]
        return Metrics(text)

    def wait_workers(self, n: int) -> None:
        """Until the router counts ``n`` live workers (READY comes before the first Hello)."""
        deadline_poll(
            lambda: self.router_metrics().get("roomcast_router_workers") == n,
            10 * T,
            message=f"router to count {n} workers",
        )

    def ws(self, gateway: int = 0, **kw: Any) -> WsClient:
        return self.cluster.ws(gateway, **kw)

    # ------------------------------------------------------------------ hygiene

    def mark(self) -> None:
        for proc in self.procs:
            self._clean_from[proc] = proc.log_size()

    def forgive(self) -> None:
        """The errors logged so far were expected (checked by the test): start clean from here."""
        self.mark()

    def check(self) -> None:
        for proc in self.procs:
            if not proc.alive():
                pytest.fail(f"{proc.name} died (exit {proc.popen.poll()})\n{proc.log_tail()}")
            proc.check_log(self._clean_from.get(proc, 0))

    def stop(self) -> None:
        self.cluster.close_clients()
        live = [p for p in self.workers if p.returncode is None]  # not killed by its test
        checks: list[Callable[[], object]] = []
        for proc in live:
            checks += [proc.stop, lambda p=proc: p.check_log(self._clean_from.get(p, 0))]
        run_all([*checks, self.cluster.stop])

    def kill(self) -> None:
        for proc in self.workers:
            proc.kill()
        self.cluster.kill()


def hygiene(env: Env) -> Iterator[Env]:
    env.check()
    env.mark()
    yield env
    env.cluster.close_clients()
    env.check()


@pytest.fixture(scope="module")
def main_env() -> Iterator[Env]:
    """Router + two gateways + two workers of ``apps:app`` (handler timeout HANDLER_TIMEOUT)."""
    env = Env(router_args=["--request-timeout", str(REQUEST_TIMEOUT)])
    try:
        for _ in range(2):
            env.add_worker(APP, "--handler-timeout", str(HANDLER_TIMEOUT))
        env.wait_workers(2)
        env.mark()
    except BaseException:
        env.kill()
        raise
    yield env
    env.stop()


@pytest.fixture
def env(main_env: Env) -> Iterator[Env]:
    yield from hygiene(main_env)


@pytest.fixture
def sdk(main_env: Env) -> Iterator[SyncCluster]:
    client = SyncCluster(main_env.cluster.commands)
    try:
        yield client
    finally:
        client.close()


def call(
    client: WsClient,
    method: str,
    url: str,
    data: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """One ``request`` op; the reply has exactly the JWR-equivalent keys."""
    fields: dict[str, Any] = {"method": method, "url": url}
    if data is not None:
        fields["data"] = data
    if headers is not None:
        fields["headers"] = headers
    reply = client.request("request", timeout=timeout, **fields)
    assert set(reply) == REPLY_KEYS, f"reply keys {sorted(reply)}: {reply!r}"
    assert isinstance(reply["headers"], dict), reply
    return reply


def assert_error(reply: dict[str, Any], status: int, code: str) -> None:
    assert reply["statusCode"] == status, reply
    assert isinstance(reply["body"], dict) and reply["body"].get("error") == code, reply
    assert isinstance(reply["body"].get("message"), str) and reply["body"]["message"], reply


def assert_marker_next(sdk: SyncCluster, client: WsClient) -> None:
    """Nothing published before now reached ``client``: a marker to its id room comes first."""
    mark = uuid.uuid4().hex
    sdk.sockets.broadcast(client.id, "marker", mark)
    got = client.next_event()
    assert got == Event("marker", mark), f"{client}: expected only the marker, got {got}"


# --------------------------------------------------------------------------- request/reply


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_every_method_round_trips_a_jwr(env: Env, method: str) -> None:
    for gateway in (0, 1):
        client = env.ws(gateway)
        data = {"n": gateway, "text": "héllo ☃", "list": [1, None, True]}
        reply = call(client, method, "/echo", data, {"x-trace": "t-1"})
        assert reply["statusCode"] == 200, reply
        assert reply["headers"] == {}, reply
        body = reply["body"]
        assert body["method"] == method
        assert body["url"] == "/echo"
        assert body["data"] == data
        assert body["params"] == {}
        assert body["socket"] == client.id
        assert body["is_socket"] is True
        # The request's own headers over the handshake's (this client sends a User-Agent).
        assert body["headers"] == {"x-trace": "t-1", "user-agent": WS_AGENT}


def test_request_without_data_gives_the_handler_none(env: Env) -> None:
    reply = call(env.ws(1), "GET", "/echo")
    assert reply["statusCode"] == 200, reply
    assert reply["body"]["data"] is None, reply
    assert reply["body"]["headers"] == {"user-agent": WS_AGENT}, reply


def test_path_parameters_land_in_params(env: Env) -> None:
    client = env.ws(0)
    assert call(client, "GET", "/user/42")["body"] == {"id": "42", "params": {"id": "42"}}
    # Percent-encoding is decoded in a path parameter.
    assert call(client, "GET", "/user/a%20b%2Fc")["body"]["id"] == "a b/c"


def test_query_string_is_merged_into_params_and_path_params_win(env: Env) -> None:
    client = env.ws(1)
    reply = call(client, "GET", "/user/42?x=1&id=9&y=%C3%A9")
    assert reply["body"] == {"id": "42", "params": {"id": "42", "x": "1", "y": "é"}}, reply
    echoed = call(client, "POST", "/echo?a=1&a=2&empty=&flag", {"k": 1})["body"]
    # The last repeated argument wins; present-but-empty arguments are "" (as qs gives Sails).
    assert echoed["params"] == {"a": "2", "empty": "", "flag": ""}, echoed
    assert echoed["url"] == "/echo?a=1&a=2&empty=&flag" and echoed["data"] == {"k": 1}


def test_status_and_headers_come_from_the_handler_and_set_cookie_is_stripped(env: Env) -> None:
    client = env.ws(0)
    for code in (201, 302, 418, 503):
        reply = call(client, "POST", f"/status/{code}")
        assert reply["statusCode"] == code, reply
        assert reply["body"] == {"asked": str(code)}, reply
        # A socket carries no cookies (sails-hook-sockets drops set-cookie).
        assert reply["headers"] == {"x-roomcast-test": "1"}, reply


def test_no_matching_action_is_404(env: Env) -> None:
    client = env.ws(1)
    for method, url in [("GET", "/nope"), ("POST", "/user/7"), ("GET", "/echo/extra")]:
        assert_error(call(client, method, url), 404, "not_found")


def test_handler_exception_is_500_without_leaking_and_is_logged(env: Env) -> None:
    sizes = [w.log_size() for w in env.workers]
    client = env.ws(0)
    reply = call(client, "POST", "/boom", {"x": 1})
    assert_error(reply, 500, "action_failed")
    wire_text = json.dumps(reply)
    for secret in ("secret internals", "do not leak", "RuntimeError", "Traceback", "apps.py"):
        assert secret not in wire_text, f"{secret!r} leaked to the client: {wire_text}"
    # The worker that ran it logged the traceback and the exception text.
    logs = "".join(w.log_text()[size:] for w, size in zip(env.workers, sizes, strict=True))
    assert "Traceback (most recent call last)" in logs, logs
    assert "RuntimeError: secret internals: do not leak" in logs, logs
    assert "POST /boom" in logs, logs
    env.forgive()
    # The worker is fine afterwards.
    assert call(client, "GET", "/echo")["statusCode"] == 200


@pytest.mark.parametrize("url", ["/slow", "/sync-slow"])
def test_handler_past_handler_timeout_is_504_from_the_worker(env: Env, url: str) -> None:
    client = env.ws(1)
    before = env.router_metrics()
    started = time.monotonic()
    reply = call(client, "POST", url, {"seconds": 5 * HANDLER_TIMEOUT})
    elapsed = time.monotonic() - started
    assert_error(reply, 504, "timeout")
    assert HANDLER_TIMEOUT * 0.9 <= elapsed < REQUEST_TIMEOUT, elapsed
    # The worker answered (a 5xx reply through the router), not the router's own deadline.
    after = env.router_metrics()
    name = "roomcast_router_requests_answered_total"
    assert after.get(name, status="5xx") - before.get(name, status="5xx") == 1
    assert after.get(name, status="timeout") == before.get(name, status="timeout")
    # The client sees only 504: the worker's log says which action was too slow.
    line = f"action POST {url} timed out after {HANDLER_TIMEOUT:g} s"
    deadline_poll(lambda: any(line in w.log_text() for w in env.workers), 5 * T, message=repr(line))
    assert call(client, "GET", "/echo")["statusCode"] == 200


def test_handler_within_timeout_answers_200(env: Env) -> None:
    reply = call(env.ws(0), "POST", "/slow", {"seconds": 0.2 * HANDLER_TIMEOUT})
    assert reply["statusCode"] == 200 and reply["body"] == {"slept": True}, reply


def test_pipelined_requests_on_two_gateways_get_their_own_replies(env: Env) -> None:
    a, b = env.ws(0), env.ws(1)
    # Both clients use the same refs; the slow request is answered after the fast ones.
    slow_a = a.send_op("request", method="POST", url="/slow", data={"seconds": 0.3})
    fast_a = [a.send_op("request", method="POST", url="/echo", data={"i": i}) for i in range(5)]
    fast_b = [b.send_op("request", method="PUT", url="/echo", data={"i": i}) for i in range(5)]
    assert slow_a == 1 and fast_b[0] == 1
    for client, refs, method in ((a, fast_a, "POST"), (b, fast_b, "PUT")):
        for i, ref in enumerate(refs):
            reply = client.wait_reply(ref)
            assert reply["statusCode"] == 200, reply
            body = reply["body"]
            assert (body["method"], body["socket"], body["data"]) == (method, client.id, {"i": i})
    assert a.wait_reply(slow_a)["body"] == {"slept": True}
    assert not a.replies and not b.replies, (a.replies, b.replies)


# ------------------------------------------------------------------------------ rooms


@pytest.mark.parametrize("url", ["/rooms/join", "/sync/join"], ids=["async", "sync"])
def test_handler_joins_the_requester_then_an_sdk_broadcast_reaches_it(
    env: Env, sdk: SyncCluster, url: str
) -> None:
    room = fresh_room()
    a, b, outsider = env.ws(1), env.ws(0), env.ws(0)
    for client in (a, b):
        reply = call(client, "POST", url, {"room": room})
        assert reply["statusCode"] == 200 and reply["body"] == {"joined": room}, reply
    # The join is acked before the reply: the membership is visible cluster-wide at once.
    assert sorted(sdk.sockets.members(room)) == sorted([a.id, b.id])
    assert room in sdk.sockets.rooms(a.id)
    sdk.sockets.broadcast(room, "news", {"n": 1})
    assert a.next_event() == Event("news", {"n": 1})
    assert b.next_event() == Event("news", {"n": 1})
    assert_marker_next(sdk, outsider)


def test_handler_broadcast_omits_the_requester(env: Env, sdk: SyncCluster) -> None:
    room = fresh_room()
    a, b = env.ws(0), env.ws(1)
    for client in (a, b):
        call(client, "POST", "/rooms/join", {"room": room})
    reply = call(a, "POST", "/rooms/shout", {"room": room, "data": "hey"})
    assert reply["statusCode"] == 200, reply
    assert b.next_event() == Event("shout", "hey")
    assert_marker_next(sdk, a)


# ------------------------------------------------------------------------ load balancing


def test_requests_are_spread_round_robin_over_both_workers(env: Env) -> None:
    pids = {w.popen.pid for w in env.workers}
    assert len(pids) == 2
    client = env.ws(0)
    seen = Counter(call(client, "GET", "/echo")["body"]["worker"] for _ in range(20))
    assert set(seen) == pids, f"workers that answered: {dict(seen)}, live workers: {pids}"
    a, b = seen.values()
    assert abs(a - b) <= 1, f"round-robin should alternate: {dict(seen)}"


# ---------------------------------------------------------------------------------- SDK


def test_sync_sdk_request_returns_a_response(env: Env, sdk: SyncCluster) -> None:
    client = env.ws(1)
    resp = sdk.request(client.id, "get", "/echo?q=1", {"from": "sdk"}, {"x-sdk": "1"})
    assert isinstance(resp, Response)
    assert resp.status == 200
    assert resp.body["method"] == "GET" and resp.body["socket"] == client.id
    assert resp.body["data"] == {"from": "sdk"} and resp.body["params"] == {"q": "1"}
    # On behalf of a socket: its handshake headers under the ones given.
    assert resp.body["headers"] == {"x-sdk": "1", "user-agent": WS_AGENT}
    # An action's own status is a Response; routing failures raise typed errors.
    teapot = sdk.request(client.id, "POST", "/status/418")
    assert (teapot.status, teapot.body) == (418, {"asked": "418"})
    assert teapot.headers.get("x-roomcast-test") == "1"
    with pytest.raises(NotFound):
        sdk.request(client.id, "GET", "/nope")
    with pytest.raises(ActionFailed) as info:
        sdk.request(client.id, "POST", "/boom")
    assert "secret" not in str(info.value)
    env.forgive()


def test_async_sdk_request_returns_a_response(env: Env) -> None:
    client = env.ws(0)

    async def main() -> list[Response]:
        async with roomcast.Cluster(env.cluster.commands) as cluster:
            return list(
                await asyncio.gather(
                    cluster.request(client.id, "GET", "/echo"),
                    cluster.request(roomcast.Request(client.id), "DELETE", "/echo", [1, 2]),
                    cluster.request(client.id, "GET", "/user/5?z=0"),
                )
            )

    got, deleted, user = asyncio.run(main())
    assert isinstance(got, Response) and got.status == 200
    assert got.body["method"] == "GET" and got.body["socket"] == client.id
    assert deleted.body["method"] == "DELETE" and deleted.body["data"] == [1, 2]
    assert deleted.body["socket"] == client.id
    assert user == Response(200, {"id": "5", "params": {"id": "5", "z": "0"}}, {})


# ----------------------------------------------------------------- results the worker rejects


@pytest.fixture(scope="module")
def extra_env() -> Iterator[Env]:
    env = Env(gateways=1)
    try:
        env.add_worker(EXTRA)
        env.wait_workers(1)
        env.mark()
    except BaseException:
        env.kill()
        raise
    yield env
    env.stop()


@pytest.fixture
def xenv(extra_env: Env) -> Iterator[Env]:
    yield from hygiene(extra_env)


@pytest.mark.parametrize(
    "url",
    [
        "/not-json",
        "/nan",
        "/status-of/99",
        "/status-of/600",
        "/status-of/-1",
        "/status-of/4294967496",
    ],
)
def test_unusable_handler_result_is_a_prompt_500_and_logged(xenv: Env, url: str) -> None:
    [worker] = xenv.workers
    size = worker.log_size()
    started = time.monotonic()
    reply = call(xenv.ws(0), "GET", url, timeout=5 * T)
    # The handler's bug: never a 400 that blames the client, never a hang until the timeout.
    assert_error(reply, 500, "action_failed")
    assert time.monotonic() - started < 5 * T
    log_text = worker.log_text()[size:]
    assert f"GET {url.split('?')[0]}" in log_text and "unusable result" in log_text, log_text
    xenv.forgive()


def test_statuses_within_range_and_plain_bodies_pass_through(xenv: Env) -> None:
    client = xenv.ws(0)
    assert call(client, "GET", "/status-of/100")["statusCode"] == 100
    assert call(client, "GET", "/status-of/599")["statusCode"] == 599
    nothing = call(client, "GET", "/nothing")
    assert (nothing["statusCode"], nothing["body"]) == (200, None)
    # (True, "yes") is not (status, body): a bool is no status, so it is a JSON array body.
    first = call(client, "GET", "/bool-first")
    assert (first["statusCode"], first["body"]) == (200, [True, "yes"])


def test_sync_handler_gets_path_params_and_query(xenv: Env) -> None:
    reply = call(xenv.ws(0), "GET", "/sync/user/u%201?id=no&k=v")
    assert reply["statusCode"] == 200, reply
    assert reply["body"]["params"] == {"id": "u 1", "k": "v"}
    assert reply["body"]["sync"] is True


def test_star_action_answers_every_method(xenv: Env) -> None:
    client = xenv.ws(0)
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        reply = call(client, method, "/any")
        assert (reply["statusCode"], reply["body"]) == (200, {"method": method}), reply


# ------------------------------------------------------------------------------ no worker


def test_no_worker_is_503_until_one_connects_and_again_after_it_stops() -> None:
    env = Env(gateways=1)
    try:
        client = env.ws(0)
        assert_error(call(client, "GET", "/echo"), 503, "no_worker")
        with SyncCluster(env.cluster.commands) as sdk, pytest.raises(NoWorker):
            sdk.request(client.id, "GET", "/echo")
        worker = env.add_worker(APP)
        env.wait_workers(1)
        assert call(client, "GET", "/echo")["body"]["worker"] == worker.popen.pid
        worker.stop()
        worker.check_log()

        def refused() -> bool:
            reply = call(client, "GET", "/echo")
            if reply["statusCode"] == 200:
                return False
            assert_error(reply, 503, "no_worker")
            return True

        deadline_poll(refused, 10 * T, interval=0.05, message="503 after the worker stopped")
    except BaseException:
        env.kill()
        raise
    env.stop()


# ------------------------------------------------------------------------------ timeouts


def test_router_request_timeout_answers_504_before_a_slower_handler_timeout() -> None:
    """A sync handler sleeping past both deadlines: the earlier one (the router's) answers."""
    request_timeout, handler_timeout = 1.0 * T, 4.0 * T
    env = Env(gateways=1, router_args=["--request-timeout", str(request_timeout)])
    try:
        env.add_worker(APP, "--handler-timeout", str(handler_timeout))
        env.wait_workers(1)
        client = env.ws(0)
        name = "roomcast_router_requests_answered_total"
        started = time.monotonic()
        reply = call(client, "POST", "/sync-slow", {"seconds": 6 * T}, timeout=10 * T)
        elapsed = time.monotonic() - started
        assert_error(reply, 504, "timeout")
        # The router's deadline (checked once per heartbeat) fired, not the worker's.
        assert request_timeout * 0.9 <= elapsed < handler_timeout, elapsed
        metrics = env.router_metrics()
        assert metrics.get(name, status="timeout") == 1
        assert metrics.get(name, status="5xx") == 0
        # The worker's own 504 comes later; the router drops it: no second reply, no frame.
        window = handler_timeout - elapsed + 1.0 * T
        client.expect_no_event(window / T)
        assert not client.replies and not client.errors and not client.other
        assert env.router_metrics().get(name, status="5xx") == 0
        assert call(client, "GET", "/echo")["statusCode"] == 200
    except BaseException:
        env.kill()
        raise
    env.stop()


# ------------------------------------------------------------------------ worker failure


def failover_env(worker_timeout: float, request_timeout: float) -> Env:
    env = Env(
        gateways=1,
        router_args=[
            "--worker-timeout", str(worker_timeout),
            "--request-timeout", str(request_timeout),
        ],
    )  # fmt: skip
    for _ in range(2):
        env.add_worker(APP, "--heartbeat-interval", str(0.2 * T))
    env.wait_workers(2)
    return env


def test_sigkilled_worker_only_costs_its_in_flight_requests() -> None:
    worker_timeout, request_timeout = 1.5 * T, 3.0 * T
    env = failover_env(worker_timeout, request_timeout)
    try:
        doomed, survivor = env.workers
        client = env.ws(0)
        # One slow request in flight on each worker (round-robin), then SIGKILL one of them.
        slow = [
            client.send_op("request", method="POST", url="/slow", data={"seconds": 1.0 * T})
            for _ in range(2)
        ]
        deadline_poll(
            lambda: env.router_metrics().get("roomcast_router_requests_in_flight") == 2,
            5 * T,
            message="both slow requests forwarded",
        )
        killed_at = time.monotonic()
        doomed.kill()
        # Meanwhile the other worker keeps answering; count what fails until expiry is over.
        failed: list[dict[str, Any]] = []
        answered_by: Counter[int] = Counter()
        while time.monotonic() - killed_at < worker_timeout + request_timeout + 1.0 * T:
            reply = call(client, "GET", "/echo", timeout=request_timeout + 3 * T)
            if reply["statusCode"] == 200:
                answered_by[reply["body"]["worker"]] += 1
            else:
                failed.append(reply)
        assert set(answered_by) == {survivor.popen.pid}, answered_by
        assert failed == [], f"{len(failed)} requests failed after the kill: {failed[:3]}"
        # Of the two in-flight requests, only the one on the dead worker failed, and promptly:
        # once the worker expired, 503 no_worker (not a 504 at the request timeout).
        replies = sorted(
            (client.wait_reply(ref, 5 * T) for ref in slow), key=lambda r: r["statusCode"]
        )
        assert [r["statusCode"] for r in replies] == [200, 503], replies
        assert_error(replies[1], 503, "no_worker")
        assert env.router_metrics().get("roomcast_router_workers") == 1
        for _ in range(10):
            reply = call(client, "GET", "/echo")
            assert reply["statusCode"] == 200 and reply["body"]["worker"] == survivor.popen.pid
    except BaseException:
        env.kill()
        raise
    env.stop()


def test_frozen_worker_is_expired_after_worker_timeout_and_then_never_used() -> None:
    """SIGSTOP keeps the TCP connection up, so only the heartbeat timeout can find it out."""
    # A request stuck on the frozen worker fails (504) well before the worker expires (or 503 if
    # it is still pending at the expiry), so the
    # window holds requests of both kinds.
    worker_timeout, request_timeout = 3.0 * T, 1.0 * T
    env = failover_env(worker_timeout, request_timeout)
    frozen, survivor = env.workers
    try:
        client = env.ws(0)
        name = "roomcast_router_worker_expired_total"
        os.kill(frozen.popen.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        meanwhile: list[dict[str, Any]] = []
        while env.router_metrics().get(name) < 1:
            assert time.monotonic() - stopped_at < worker_timeout + request_timeout + 5 * T, (
                "the frozen worker was never expired"
            )
            meanwhile.append(call(client, "GET", "/echo", timeout=request_timeout + 3 * T))
        failed = [r for r in meanwhile if r["statusCode"] != 200]
        served = [r for r in meanwhile if r["statusCode"] == 200]
        for reply in failed:
            # Past --request-timeout: 504; still pending when the worker expired: 503.
            if reply["statusCode"] == 503:
                assert_error(reply, 503, "no_worker")
            else:
                assert_error(reply, 504, "timeout")
        # Round-robin sent the frozen worker at least one of them; the other kept answering.
        assert failed, f"no request reached the frozen worker: {meanwhile!r}"
        assert served, f"nothing was answered while the worker was frozen: {meanwhile!r}"
        assert {r["body"]["worker"] for r in served} == {survivor.popen.pid}
        assert len(failed) <= len(served) + 1, f"{len(failed)} failed, {len(served)} served"
        assert env.router_metrics().get("roomcast_router_workers") == 1
        # After expiry nothing fails and only the live worker answers.
        for _ in range(20):
            reply = call(client, "GET", "/echo", timeout=request_timeout + 3 * T)
            assert reply["statusCode"] == 200, f"failed after expiry: {reply!r}"
            assert reply["body"]["worker"] == survivor.popen.pid, reply
    except BaseException:
        os.kill(frozen.popen.pid, signal.SIGCONT)
        env.kill()
        raise
    # Thawed, it says Hello again and serves; its stale answers are dropped by the router.
    os.kill(frozen.popen.pid, signal.SIGCONT)
    env.wait_workers(2)
    env.stop()


def test_param_and_all_params_merge_path_body_and_query_like_sails(env: Env) -> None:
    reply = call(env.ws(0), "POST", "/params/7?id=q&page=2&name=q", {"id": "b", "name": "ada"})
    assert reply["statusCode"] == 200, reply
    assert reply["body"] == {
        "id": "7",
        "name": "ada",
        "page": "2",
        "missing": "default",
        "all": {"id": "7", "name": "ada", "page": "2"},
    }, reply
