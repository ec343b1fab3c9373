"""CURVE between processes (issue 6; roomcast/curve.py), with real processes and key files.

Certificates are made with ``roomcast keygen`` in a temporary directory: the router's, one for
the gateways, one for the SDK backend, one for the worker (all three authorized), and an
intruder's (not authorized). A CURVE router with two CURVE gateways and a CURVE worker then
passes the core join/broadcast test across gateways (through the SDK, through ``/ws`` clients,
through the gateway's HTTP API, and through the worker's async and sync clusters). A peer
without the right key is refused: a gateway with an unauthorized key, with no CURVE at all, or
expecting another router key never prints READY; SDK clients in those cases get
``RouterUnavailable`` within their connect timeout. Each refused handshake counts in the
router's ``roomcast_router_curve_refused_total{reason}`` (an unauthorized key exactly once per
socket: libzmq does not retry it; the others on every retry), the refused side logs why, and
the authorized gateways and SDK clients keep working. A primary/backup pair links over CURVE.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import queue
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import zmq

from roomcast import Cluster as SdkCluster
from roomcast import RouterUnavailable, SyncCluster, Timeout, curve
from roomcast.core import wire
from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import (
    REPO,
    Cluster,
    Event,
    Metrics,
    Proc,
    fresh_room,
    gateway_proc,
    http_get,
    router_proc,
    run_all,
    start_cluster,
)

APP = "tests.integration.apps:app"


@dataclass(frozen=True)
class Keys:
    dir: pathlib.Path

    def secret(self, name: str) -> str:
        return str(self.dir / f"{name}.key_secret")

    def public(self, name: str) -> str:
        return str(self.dir / f"{name}.key")

    @property
    def authorized(self) -> str:
        return str(self.dir / "authorized")

    def router_args(self) -> list[str]:
        return [
            "--curve-secret-key", self.secret("router"),
            "--curve-authorized-keys", self.authorized,
        ]  # fmt: skip

    def client_args(self, name: str, server: str = "router") -> list[str]:
        return ["--curve-key", self.secret(name), "--curve-server-key", self.public(server)]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    base = tmp_path_factory.mktemp("curve")
    names = ["router", "gateway", "backend", "worker", "intruder"]
    subprocess.run(
        [sys.executable, "-m", "roomcast.cli", "keygen", str(base), *names],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=30 * T,
    )
    authorized = base / "authorized"
    authorized.mkdir()
    for name in ("gateway", "backend", "worker"):  # public keys only, like a mounted Secret
        (authorized / f"{name}.key").write_bytes((base / f"{name}.key").read_bytes())
    return Keys(base)


@dataclass
class CurveCluster:
    cluster: Cluster
    worker: Proc
    keys: Keys

    @property
    def commands(self) -> str:
        return self.cluster.commands


@pytest.fixture(scope="module")
def curve_cluster(keys: Keys) -> Iterator[CurveCluster]:
    cluster = start_cluster(
        gateways=2, router_args=keys.router_args(), gateway_args=keys.client_args("gateway")
    )
    argv = ["-m", "roomcast.cli", "worker", APP, "--router", cluster.commands]
    worker = Proc("worker", [*argv, *keys.client_args("worker")])
    try:
        worker.wait_ready()
        deadline_poll(
            lambda: router_metrics(cluster).get("roomcast_router_workers") == 1,
            10 * T,
            message="the router to know the CURVE worker",
        )
    except BaseException:
        worker.kill()
        cluster.kill()
        raise
    yield CurveCluster(cluster, worker, keys)
    run_all((worker.stop, worker.check_log, cluster.stop))


@pytest.fixture
def cc(curve_cluster: CurveCluster) -> Iterator[CurveCluster]:
    offsets = curve_cluster.cluster.log_offsets()
    yield curve_cluster
    curve_cluster.cluster.close_clients()
    curve_cluster.cluster.check_healthy(offsets)


@pytest.fixture
def sdk(cc: CurveCluster) -> Iterator[SyncCluster]:
    client = SyncCluster(
        cc.commands,
        curve_key=cc.keys.secret("backend"),
        curve_server_key=cc.keys.public("router"),
    )
    try:
        yield client
    finally:
        client.close()


def router_metrics(cluster: Cluster) -> Metrics:
    status, text = http_get(cluster.router.info["http"] + "/metrics")
    assert status == 200, text[:200]
    return Metrics(text)


def marker_next(sdk: SyncCluster, client: Any) -> None:
    """Nothing published earlier reached ``client``: a marker to its id room comes first."""
    sdk.sockets.broadcast(client.id, "marker", "m")
    assert client.next_event() == Event("marker", "m")


# ---------------------------------------------------------------------- the core test, on CURVE


def test_router_and_clients_log_that_curve_is_on(cc: CurveCluster) -> None:
    assert "CURVE on" in cc.cluster.router.log_text()
    for gateway in cc.cluster.gateways:
        assert "CURVE on" in gateway.proc.log_text()
    assert "CURVE on" in cc.worker.log_text()
    secrets = [cc.keys.secret(n) for n in ("router", "gateway", "worker")]
    for proc in [*cc.cluster.procs, cc.worker]:
        text = proc.log_text()
        for path in secrets:
            secret = pathlib.Path(path).read_text().split("secret-key = ")[1].split('"')[1]
            assert secret not in text, f"{proc.name} logged a secret key"


def test_sdk_join_then_broadcast_reaches_members_on_both_gateways(
    cc: CurveCluster, sdk: SyncCluster
) -> None:
    a, b, outsider = cc.cluster.ws(0), cc.cluster.ws(1), cc.cluster.ws(1)
    room = fresh_room()
    sdk.sockets.join(a.id, room)
    sdk.sockets.join(b.id, room)
    assert sorted(sdk.sockets.members(room)) == sorted([a.id, b.id])
    sdk.sockets.broadcast(room, "greet", {"n": 1, "text": "héllo"})
    assert a.next_event() == Event("greet", {"n": 1, "text": "héllo"})
    assert b.next_event() == Event("greet", {"n": 1, "text": "héllo"})
    marker_next(sdk, outsider)


def test_client_join_and_broadcast_across_gateways(cc: CurveCluster, sdk: SyncCluster) -> None:
    a, b = cc.cluster.ws(0), cc.cluster.ws(1)
    room = fresh_room()
    a.join(room)
    b.join(room)
    a.broadcast(room, {"from": "a"}, event="chat")
    assert b.next_event() == Event("chat", {"from": "a"})
    assert sdk.sockets.count(room) == 2


def test_async_sdk_with_keys(cc: CurveCluster) -> None:
    client = cc.cluster.ws(1)
    room = fresh_room()

    async def run() -> int:
        async with SdkCluster(
            cc.commands,
            curve_key=cc.keys.secret("backend"),
            curve_server_key=cc.keys.public("router"),
        ) as cluster:
            await cluster.sockets.join(client.id, room)
            return await cluster.sockets.broadcast(room, "async", [1])

    assert asyncio.run(run()) >= 1
    assert client.next_event() == Event("async", [1])


def test_gateway_http_api_reaches_the_router(cc: CurveCluster) -> None:
    """The gateway's own SDK client (its HTTP API) uses the gateway's keys."""
    client = cc.cluster.ws(0)
    room = fresh_room()
    for op, body in (
        ("join", {"sockets": client.id, "rooms": room}),
        ("broadcast", {"rooms": room, "event": "api", "data": {"ok": True}}),
    ):
        req = urllib.request.Request(
            cc.cluster.gateways[1].internal + f"/api/{op}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10 * T) as resp:
            assert resp.status == 200, (op, resp.read())
    assert client.next_event() == Event("api", {"ok": True})


@pytest.mark.parametrize("url", ["/rooms/join", "/sync/join"])
def test_worker_links_and_its_clusters(cc: CurveCluster, sdk: SyncCluster, url: str) -> None:
    """The worker's DEALER gets the request; its Cluster (async) or SyncCluster does the join."""
    a, b = cc.cluster.ws(0), cc.cluster.ws(1)
    room = fresh_room()
    reply = a.request("request", method="POST", url=url, data={"room": room})
    assert reply["statusCode"] == 200, reply
    sdk.sockets.join(b.id, room)
    sdk.sockets.broadcast(room, "both", 1)
    assert a.next_event() == Event("both", 1)
    assert b.next_event() == Event("both", 1)


# ------------------------------------------------------------------- refusals: gateways and SDK


def assert_never_ready(proc: Proc, window: float) -> None:
    """No READY line within ``window`` seconds (the gateway waits for the router link)."""
    deadline = time.monotonic() + window
    try:
        while time.monotonic() < deadline:
            assert proc.alive(), f"{proc.name} exited\n{proc.log_tail()}"
            try:  # the harness's stdout queue: wait_ready() would fail the test on timeout
                line = proc._lines.get(timeout=min(0.1, max(deadline - time.monotonic(), 0)))
            except queue.Empty:
                continue
            assert line is None or not line.startswith("READY "), (
                f"{proc.name} became ready: {line}"
            )
    finally:
        proc.stop()  # SIGTERM -> exit 0 even when never linked


REFUSED = "roomcast_router_curve_refused_total"
# Why the router refuses each kind of peer (the metric's reason label).
REASON = {
    "unauthorized key": "unauthorized_key",
    "plain (no CURVE)": "handshake_failed",
    "wrong router key": "handshake_failed",
}
# What the refused side logs (a plain peer has no CURVE socket to watch, so it says nothing).
REFUSED_SIDE_LOG = {
    "unauthorized key": "router {url} refused our CURVE key (ZAP status 400): our public key is "
    "not among its authorized keys",
    "plain (no CURVE)": None,
    "wrong router key": "CURVE handshake with router {url} failed (the connection closed during "
    "the handshake): is our curve server key the router's public key?",
}


def refusals(cc: CurveCluster) -> dict[str, float]:
    metrics = router_metrics(cc.cluster)
    return {reason: metrics.get(REFUSED, reason=reason) for reason in set(REASON.values())}


def assert_refused(cc: CurveCluster, who: str, before: dict[str, float], sockets: int) -> None:
    """The router counted ``sockets`` refusals (exactly for an unauthorized key)."""
    reason = REASON[who]
    deadline_poll(
        lambda: refusals(cc)[reason] >= before[reason] + sockets,
        10 * T,
        message=f"{sockets} {reason} refusals",
    )
    after = refusals(cc)
    if who == "unauthorized key":  # refused once per socket: libzmq does not retry it
        assert after == {**before, reason: before[reason] + sockets}
    else:
        # Another router key: libzmq retries every 100 ms while the peer runs. No CURVE: the
        # router may hang up before the peer reads why, and then it retries too.
        assert after["unauthorized_key"] == before["unauthorized_key"]


@pytest.mark.parametrize("who", list(REASON))
def test_gateway_without_the_right_key_never_becomes_ready(cc: CurveCluster, who: str) -> None:
    keys = cc.keys
    extra = {
        "unauthorized key": keys.client_args("intruder"),
        "plain (no CURVE)": [],
        "wrong router key": keys.client_args("gateway", server="intruder"),
    }[who]
    before = refusals(cc)
    proc = gateway_proc("gateway-refused", cc.cluster.router.info, *extra)
    assert_never_ready(proc, 3 * T)
    # Its DEALER (commands) and its SUB (fanout): two refused handshakes, at least.
    assert_refused(cc, who, before, sockets=2)
    router_log = cc.cluster.router.log_text()
    gateway_log = proc.log_text()
    if who == "unauthorized key":
        # Once per 10 s per reason (an earlier test's line may stand for this one).
        assert "refused a CURVE client from 127.0.0.1: its public key is not in" in router_log
    else:
        assert "refused a CURVE handshake on tcp://" in router_log
    expected = REFUSED_SIDE_LOG[who]
    if expected is None:
        assert "CURVE" not in gateway_log
    else:
        assert expected.format(url=cc.commands) in gateway_log, gateway_log
    # Nobody else noticed: the real gateways still serve, and so does the router.
    for gateway in cc.cluster.gateways:
        assert http_get(gateway.internal + "/readyz")[0] == 200


@pytest.mark.parametrize("who", list(REASON))
def test_sdk_without_the_right_key_gets_router_unavailable(
    cc: CurveCluster, sdk: SyncCluster, who: str, caplog: pytest.LogCaptureFixture
) -> None:
    keys = cc.keys
    kwargs = {
        "unauthorized key": {
            "curve_key": keys.secret("intruder"),
            "curve_server_key": keys.public("router"),
        },
        "plain (no CURVE)": {},
        "wrong router key": {
            "curve_key": keys.secret("backend"),
            "curve_server_key": keys.public("intruder"),
        },
    }[who]
    before = refusals(cc)
    client = SyncCluster(cc.commands, timeout=2 * T, connect_timeout=1 * T, **kwargs)
    started = time.monotonic()
    try:
        with pytest.raises((RouterUnavailable, Timeout)):
            client.sockets.count(fresh_room())
        assert_refused(cc, who, before, sockets=1)  # one DEALER
        expected = REFUSED_SIDE_LOG[who]
        if expected is not None:
            line = expected.format(url=cc.commands)
            deadline_poll(lambda: line in caplog.text, 5 * T, message="the SDK's refusal line")
    finally:
        client.close()
    assert time.monotonic() - started < 5 * T
    # An authorized client of the same router keeps working.
    room = fresh_room()
    member = cc.cluster.ws(0)
    sdk.sockets.join(member.id, room)
    assert sdk.sockets.count(room) == 1


# --------------------------------------------------------------------------- pair, on CURVE


def test_router_pair_links_over_curve(keys: Keys) -> None:
    """Both routers share the router key pair; the backup's DEALER reaches the primary."""
    args = keys.router_args()
    primary = router_proc("--role", "primary", "--peer-bind", "tcp://127.0.0.1:0", *args)
    procs = [primary]
    try:
        primary.wait_ready()
        backup = router_proc("--role", "backup", "--peer-connect", primary.info["peer"], *args)
        procs.append(backup)
        backup.wait_ready()

        def alive(proc: Proc) -> bool:
            status, text = http_get(proc.info["http"] + "/metrics")
            return status == 200 and Metrics(text).get("roomcast_router_peer_alive") == 1

        deadline_poll(lambda: alive(primary) and alive(backup), 10 * T, message="peer link")
        deadline_poll(
            lambda: http_get(primary.info["http"] + "/readyz")[0] == 200,
            10 * T,
            message="primary active",
        )
        for proc in reversed(procs):
            proc.stop()
            proc.check_log()
    finally:
        for proc in procs:
            proc.kill()


def test_router_refuses_bad_key_files(keys: Keys, tmp_path: pathlib.Path) -> None:
    """Clear messages, exit status 1 or 2, before anything is bound."""
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["--curve-secret-key", keys.public("router"), "--curve-authorized-keys", keys.authorized],
         "holds no secret key"),
        (["--curve-secret-key", keys.secret("router"), "--curve-authorized-keys", str(empty)],
         "no public certificates"),
        (["--curve-secret-key", str(tmp_path / "nope"), "--curve-authorized-keys", str(empty)],
         "no such file"),
        (["--curve-secret-key", keys.secret("router")], "go together"),
    ]  # fmt: skip
    for extra, message in cases:
        result = subprocess.run(
            [sys.executable, "-m", "router", "--http-port", "0", *extra],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30 * T,
        )
        assert result.returncode in (1, 2), result
        assert message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr, result.stderr


# ------------------------------------------------------------------------------- key roles


def _fanout_reader(cc: CurveCluster, name: str) -> tuple[zmq.Context[Any], zmq.Socket[bytes]]:
    """A raw SUB on the cluster topic of the fanout, holding ``name``'s key."""
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    curve.client_options(cc.keys.secret(name), cc.keys.public("router")).apply(sub)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(cc.cluster.router.info["fanout"])
    return ctx, sub


@pytest.mark.parametrize("name", ["backend", "worker"])
def test_only_gateway_keys_may_read_the_fanout(cc: CurveCluster, name: str) -> None:
    """The finding: an SDK backend's key could read the whole fanout (every payload, every
    gateway id). Keys have roles by file name; the fanout admits gateway keys only."""
    refused = router_metrics(cc.cluster).get("roomcast_router_curve_refused_total")
    offset = cc.cluster.router.log_size()
    ctx, gateway_sub = _fanout_reader(cc, "gateway")
    other_ctx, other_sub = _fanout_reader(cc, name)
    try:
        # The gateway key hears the router's beats (sent every heartbeat interval)...
        assert gateway_sub.poll(int(10_000 * T)), "the gateway key read nothing"
        # ...and by then the other key's handshake was refused, counted and logged.
        deadline_poll(
            lambda: router_metrics(cc.cluster).get("roomcast_router_curve_refused_total") > refused,
            10 * T,
            message="the refusal counted",
        )
        assert not other_sub.poll(0), f"the {name} key read the fanout"
        log = cc.cluster.router.log_text()[offset:]
        assert f"its key's role ({name}) may not use the fanout" in log
    finally:
        for sock, context in ((gateway_sub, ctx), (other_sub, other_ctx)):
            sock.close()
            context.term()


def test_only_gateway_keys_may_speak_as_a_gateway(cc: CurveCluster) -> None:
    """A backend's key saying Hello with a gateway's routing id is refused, counted, logged."""
    offset = cc.cluster.router.log_size()
    ctx: zmq.Context[Any] = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    curve.client_options(cc.keys.secret("backend"), cc.keys.public("router")).apply(dealer)
    dealer.setsockopt(zmq.ROUTING_ID, b"gw:impostor\x00" + b"2" * 32)
    dealer.connect(cc.commands)

    def refused() -> bool:
        hello = wire.Hello(ref=1, node_id="impostor", role=wire.Role.GATEWAY)
        dealer.send(wire.encode(hello))
        m = router_metrics(cc.cluster)
        return m.get("roomcast_router_claims_refused_total", what="role") > 0

    try:
        deadline_poll(refused, 10 * T, message="the impostor refused")
        assert "role is backend speaking as a gateway" in cc.cluster.router.log_text()[offset:]
        # It never became a gateway of the router.
        m = router_metrics(cc.cluster)
        assert m.get("roomcast_router_gateways") == len(cc.cluster.gateways)
    finally:
        dealer.close()
        ctx.term()


def test_only_worker_keys_are_sent_requests(cc: CurveCluster) -> None:
    """A backend's key saying Hello as a worker is refused: it is never sent a request."""
    before = router_metrics(cc.cluster)
    ctx: zmq.Context[Any] = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    curve.client_options(cc.keys.secret("backend"), cc.keys.public("router")).apply(dealer)
    dealer.connect(cc.commands)

    def refused() -> bool:
        dealer.send(wire.encode(wire.Hello(ref=1, node_id="fake-worker", role=wire.Role.WORKER)))
        m = router_metrics(cc.cluster)
        role = "roomcast_router_claims_refused_total"
        return m.get(role, what="role") > before.get(role, what="role")

    try:
        deadline_poll(refused, 10 * T, message="the fake worker refused")
        assert router_metrics(cc.cluster).get("roomcast_router_workers") == 1  # the real one
        assert not dealer.poll(0)  # no HelloAck, no request
    finally:
        dealer.close()
        ctx.term()
