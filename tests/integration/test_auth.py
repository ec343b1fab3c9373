"""Who may connect, join and publish, and the abuse limits, on production gateways (issue 6).

One router (``--max-rooms-per-socket 5``) and three production gateways serve the module:

* ``main``: HS256 secrets from a file (current and previous), RS256 and ES256 public key files,
  ``--token-audience``/``--token-issuer``, ``--allowed-origin https://app.example``,
  ``--client-join 'public:*'``, ``--max-frame-bytes 65536``. Tokens are required.
* ``full``: ``--max-connections 3`` with only an origin allowlist (so anonymous clients).
* ``limited``: ``--max-frames-per-second 5 --frame-burst 5 --abuse-strikes 20``, the HS256
  secret and ``--allow-anonymous yes``.

Every rejection asserts its exact HTTP status or close code (architecture §4: 1008 auth and origin,
1009 too big, 4003 abuse; 403 and 503 before the upgrade), the metric that counts it, and that
another connection on the same gateway still receives a broadcast afterwards. Tokens are real
JWTs signed here. The production guard runs its own short-lived gateways.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import (
    REPO,
    Event,
    Gateway,
    Metrics,
    Proc,
    WsClient,
    fresh_room,
    gateway_proc,
    http_get,
    router_proc,
    run_all,
)

SECRET = "current-hs256-secret-for-the-auth-tests-0123456789"
OLD_SECRET = "previous-hs256-secret-still-accepted-0123456789ab"
AUD = "roomcast-test"
ISS = "https://auth.example"
ORIGIN = "https://app.example"
LEEWAY = 10
MAX_FRAME = 65536
MAX_ROOMS = 5

REJECTED = "roomcast_gateway_rejected_total"
DISCONNECTS = "roomcast_gateway_disconnects_total"
CLIENT_ERRORS = "roomcast_gateway_client_errors_total"


def _pem(key: Any) -> str:
    return str(
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_OTHER = ec.generate_private_key(ec.SECP256R1())
SIGNERS: dict[str, Any] = {"HS256": SECRET, "RS256": RSA_KEY, "ES256": EC_KEY}
DROP = object()


def token(sub: Any = "ada", alg: str = "HS256", key: Any = None, **over: Any) -> str:
    """A JWT the ``main`` gateway accepts, unless ``over`` changes claims or ``key`` differs."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "exp": now + 600, "aud": AUD, "iss": ISS, "iat": now}
    for name, value in over.items():
        if value is DROP:
            claims.pop(name, None)
        else:
            claims[name] = value
    if claims["sub"] is DROP:
        del claims["sub"]
    return jwt.encode(claims, SIGNERS[alg] if key is None else key, algorithm=alg)


ADA_CLAIMS: dict[str, Any] = {"rooms": ["user:{user}"], "publish": ["public:*"]}
BOB_CLAIMS: dict[str, Any] = {"rooms": ["user:{user}"]}  # may not publish anywhere


# ------------------------------------------------------------------------------ the cluster


@dataclass
class AuthCluster:
    router: Proc
    gateways: dict[str, Gateway]
    sdk: Any
    clients: list[WsClient] = field(default_factory=list)

    @property
    def procs(self) -> list[Proc]:
        return [self.router, *(g.proc for g in self.gateways.values())]

    def url(self, gateway: str, path: str = "/ws", **query: str) -> str:
        base = self.gateways[gateway].public.replace("http://", "ws://", 1) + path
        return f"{base}?{urllib.parse.urlencode(query)}" if query else base

    def sio_url(self, gateway: str, eio: int = 4, **query: str) -> str:
        return self.url(gateway, "/socket.io/", EIO=str(eio), transport="websocket", **query)

    def ws(self, gateway: str = "main", tok: str | None = None, **kw: Any) -> WsClient:
        client = WsClient(self.url(gateway, **({"token": tok} if tok else {})), **kw)
        self.clients.append(client)
        return client

    def metrics(self, gateway: str) -> Metrics:
        status, text = http_get(self.gateways[gateway].internal + "/metrics")
        assert status == 200, f"{gateway} /metrics: {status}"
        return Metrics(text)

    def count(self, gateway: str, name: str, **labels: str) -> float:
        return self.metrics(gateway).get(name, **labels)

    def broadcast(self, room: str | list[str], event: str, data: Any) -> None:
        self.sdk.sockets.broadcast(room, event, data)

    def check_healthy(self, offsets: list[int] | None = None) -> None:
        for proc, since in zip(self.procs, offsets or [0] * len(self.procs), strict=True):
            if not proc.alive():
                pytest.fail(f"{proc.name} died (exit {proc.popen.poll()})\n{proc.log_tail()}")
            proc.check_log(since)


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthCluster]:
    from roomcast import SyncCluster

    tmp = tmp_path_factory.mktemp("auth")
    secret_file = tmp / "token-secret"
    secret_file.write_text(f"# current first, then the previous one\n{SECRET}\n{OLD_SECRET}\n")
    rsa_file, ec_file = tmp / "rsa.pem", tmp / "ec.pem"
    rsa_file.write_text(_pem(RSA_KEY))
    ec_file.write_text(_pem(EC_KEY))
    production = ("--env", "production", "--allowed-origin", ORIGIN, "--client-join", "public:*")
    flags = {
        "main": (
            *production,
            "--token-secret-file", str(secret_file),
            "--token-public-key-file", str(rsa_file),
            "--token-public-key-file", str(ec_file),
            "--token-audience", AUD,
            "--token-issuer", ISS,
            "--token-leeway", str(LEEWAY),
            "--max-frame-bytes", str(MAX_FRAME),
        ),
        "full": (*production, "--max-connections", "3"),
        "limited": (
            *production,
            "--token-secret-file", str(secret_file),
            "--allow-anonymous", "yes",
            "--max-frames-per-second", "5",
            "--frame-burst", "5",
            "--abuse-strikes", "20",
        ),
    }  # fmt: skip
    router = router_proc("--max-rooms-per-socket", str(MAX_ROOMS))
    started = [router]
    try:
        info = router.wait_ready()
        procs = {name: gateway_proc(name, info, *args) for name, args in flags.items()}
        started += procs.values()
        gateways = {}
        for name, proc in procs.items():
            ready = proc.wait_ready()
            gateways[name] = Gateway(proc, ready["public"], ready["internal"])
    except BaseException:
        for proc in started:
            proc.kill()
        raise
    sdk = SyncCluster(info["commands"])
    ac = AuthCluster(router, gateways, sdk)
    yield ac
    sdk.close()
    procs = [*(g.proc for g in gateways.values()), router]
    run_all(check for proc in procs for check in (proc.stop, proc.check_log))


@pytest.fixture
def ac(module_cluster: AuthCluster) -> Iterator[AuthCluster]:
    module_cluster.check_healthy()
    offsets = [p.log_size() for p in module_cluster.procs]
    yield module_cluster
    while module_cluster.clients:
        module_cluster.clients.pop().close()
    module_cluster.check_healthy(offsets)


class Bystander:
    """A connected client in its own room: ``check()`` proves it still receives broadcasts."""

    def __init__(self, ac: AuthCluster, gateway: str, tok: str | None) -> None:
        self.ac = ac
        self.client = ac.ws(gateway, tok, name=f"bystander-{gateway}")
        self.room = fresh_room("public:bystander")
        self.client.join(self.room)

    def check(self) -> None:
        mark = uuid.uuid4().hex
        self.ac.broadcast(self.room, "still-here", mark)
        assert self.client.next_event(what="(bystander)") == Event("still-here", mark)


@pytest.fixture
def bystander(ac: AuthCluster) -> Bystander:
    return Bystander(ac, "main", token("carol"))


# ------------------------------------------------------------------------------ raw clients


@contextlib.contextmanager
def raw(
    url: str, *, origin: str | None = None, headers: dict[str, str] | None = None
) -> Iterator[ClientConnection]:
    with connect(
        url,
        origin=Origin(origin) if origin is not None else None,
        additional_headers=headers,
        compression=None,
        proxy=None,
        open_timeout=10 * T,
        close_timeout=5 * T,
        ping_interval=None,
    ) as conn:
        yield conn


@dataclass
class Closed:
    code: int | None
    reason: str
    frames: list[str]  # what arrived before the close


def wait_closed(conn: ClientConnection, timeout: float | None = None) -> Closed:
    timeout = 10 * T if timeout is None else timeout
    deadline = time.monotonic() + timeout
    frames: list[str] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"still open after {timeout:.1f}s; received {frames!r}")
        try:
            frame = conn.recv(timeout=remaining)
        except TimeoutError:
            continue
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            return Closed(rcvd.code if rcvd else None, rcvd.reason if rcvd else "", frames)
        frames.append(frame if isinstance(frame, str) else frame.decode("utf-8", "replace"))


def refused_upgrade(url: str, **kw: Any) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as info, raw(url, **kw):
        pass
    return info.value


def recv_json(conn: ClientConnection, timeout: float | None = None) -> dict[str, Any]:
    frame = json.loads(conn.recv(timeout=10 * T if timeout is None else timeout))
    assert isinstance(frame, dict), frame
    return frame


def reply_to(conn: ClientConnection, ref: int) -> dict[str, Any]:
    """Read until the reply to ``ref`` (pushes and other replies in between are skipped)."""
    deadline = time.monotonic() + 10 * T
    while True:
        frame = recv_json(conn, max(deadline - time.monotonic(), 0))
        if frame.get("op") == "reply" and frame.get("ref") == ref:
            return frame


def assert_error(reply: dict[str, Any], status: int, code: str) -> None:
    assert reply.get("statusCode") == status, reply
    body = reply.get("body")
    assert isinstance(body, dict) and body.get("error") == code, reply
    assert isinstance(body.get("message"), str) and body["message"], reply


# -------------------------------------------------------------------------- Socket.IO (raw)


def sio_recv(conn: ClientConnection, timeout: float | None = None) -> str:
    """The next Engine.IO packet that is not a server ping (answered with a pong)."""
    deadline = time.monotonic() + (10 * T if timeout is None else timeout)
    while True:
        packet = conn.recv(timeout=max(deadline - time.monotonic(), 0))
        assert isinstance(packet, str), packet
        if packet == "2":
            conn.send("3")
            continue
        return packet


def sio_open(conn: ClientConnection) -> dict[str, Any]:
    packet = sio_recv(conn)
    assert packet.startswith("0"), f"expected the Engine.IO open packet, got {packet!r}"
    opened = json.loads(packet[1:])
    assert isinstance(opened, dict) and opened.get("sid"), opened
    return opened


def sio_connected(conn: ClientConnection) -> str:
    """Wait for ``40{"sid": ...}`` (EIO4) and return the socket id."""
    packet = sio_recv(conn)
    assert packet.startswith("40{"), f"expected a namespace connect, got {packet!r}"
    sid = json.loads(packet[2:]).get("sid")
    assert isinstance(sid, str) and sid, packet
    return sid


def sio_event(conn: ClientConnection) -> list[Any]:
    packet = sio_recv(conn)
    assert packet.startswith("42"), f"expected an event, got {packet!r}"
    args = json.loads(packet[2:])
    assert isinstance(args, list)
    return args


def assert_sio_refused(conn: ClientConnection, reason: str, *, opened: bool = True) -> None:
    """``44{"message": reason}`` then close 1008 (after the open packet when ``opened``)."""
    closed = wait_closed(conn)
    frames = closed.frames
    if opened:
        assert frames and frames[0].startswith("0{"), frames
        frames = frames[1:]
    assert frames == ["44" + json.dumps({"message": reason}, separators=(",", ":"))], frames
    assert (closed.code, closed.reason) == (1008, reason), closed


# ============================================================================ accepted tokens


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: token(**ADA_CLAIMS), id="hs256"),
        pytest.param(lambda: token(key=OLD_SECRET, **ADA_CLAIMS), id="hs256-previous-secret"),
        pytest.param(lambda: token(alg="RS256", **ADA_CLAIMS), id="rs256"),
        pytest.param(lambda: token(alg="ES256", **ADA_CLAIMS), id="es256"),
        pytest.param(
            lambda: token(exp=int(time.time()) - LEEWAY // 2, **ADA_CLAIMS),
            id="expired-within-leeway",
        ),
        pytest.param(lambda: token(aud=["other", AUD], **ADA_CLAIMS), id="aud-list"),
    ],
)
def test_valid_token_in_query_is_welcomed_with_its_identity(
    ac: AuthCluster, bystander: Bystander, make: Callable[[], str]
) -> None:
    ada = ac.ws("main", make())
    ada.join("user:ada")  # rooms: ["user:{user}"] with sub=ada
    assert_error(ada.request("join", room="user:bob"), 403, "forbidden")
    ada.join(fresh_room("public:q"))  # the gateway's --client-join
    mark = uuid.uuid4().hex
    ac.broadcast("user:ada", "dm", mark)
    assert ada.next_event() == Event("dm", mark)
    ada.leave("user:ada")
    bystander.check()


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_valid_token_in_authorization_header(
    ac: AuthCluster, bystander: Bystander, scheme: str
) -> None:
    with raw(ac.url("main"), headers={"Authorization": f"{scheme} {token(**ADA_CLAIMS)}"}) as conn:
        welcome = recv_json(conn)
        assert welcome.get("op") == "welcome" and welcome.get("socket"), welcome
        conn.send(json.dumps({"op": "join", "ref": 1, "room": "user:ada"}))
        assert reply_to(conn, 1)["statusCode"] == 200
        conn.send(json.dumps({"op": "join", "ref": 2, "room": "user:bob"}))
        assert_error(reply_to(conn, 2), 403, "forbidden")
    bystander.check()


def test_identity_rooms_and_publish_claims(ac: AuthCluster, bystander: Bystander) -> None:
    before = ac.count("main", CLIENT_ERRORS, code="forbidden")
    ada = ac.ws("main", token("ada", **ADA_CLAIMS), name="ada")
    bob = ac.ws("main", token("bob", **BOB_CLAIMS), name="bob")
    room = fresh_room("public:chat")
    ada.join(room)
    bob.join(room)
    bob.join("user:bob")
    assert_error(ada.request("join", room="user:bob"), 403, "forbidden")
    assert_error(bob.request("join", room="user:ada"), 403, "forbidden")
    assert_error(ada.request("leave", room="user:bob"), 403, "forbidden")
    # ada may publish to public:* (her claim); bob has no publish claim and the gateway none.
    ada.broadcast(room, "hello from ada")
    assert bob.next_event() == Event("message", "hello from ada")
    assert_error(bob.request("broadcast", rooms=room, data="x"), 403, "forbidden")
    assert_error(ada.request("broadcast", rooms="user:bob", data="x"), 403, "forbidden")
    # One forbidden room refuses the whole broadcast: nothing reaches the allowed one either.
    assert_error(ada.request("broadcast", rooms=[room, "private:x"], data="x"), 403, "forbidden")
    assert_error(ada.request("join", rooms=[fresh_room("public:a"), "x"]), 403, "forbidden")
    bob.expect_no_event()
    assert ac.count("main", CLIENT_ERRORS, code="forbidden") - before == 7
    # Both connections are intact after their refusals.
    mark = uuid.uuid4().hex
    ac.broadcast(room, "after", mark)
    assert ada.next_event() == Event("after", mark)
    assert bob.next_event() == Event("after", mark)
    bystander.check()


@pytest.mark.parametrize(
    ("op", "fields"),
    [
        ("join", {"room": "private:x"}),
        ("join", {"room": "public"}),  # the pattern is public:*
        ("join", {"room": "Public:x"}),
        ("leave", {"room": "private:x"}),
        ("broadcast", {"rooms": "private:x", "data": 1}),
        ("broadcast", {"rooms": "public:x", "data": 1}),  # bob: no publish claim
    ],
)
def test_ops_outside_the_patterns_get_403_forbidden(
    ac: AuthCluster, bystander: Bystander, op: str, fields: dict[str, Any]
) -> None:
    bob = ac.ws("main", token("bob", **BOB_CLAIMS))
    assert_error(bob.request(op, **fields), 403, "forbidden")
    bob.join("user:bob")  # still connected and served
    bystander.check()


# ============================================================================== bad tokens


def _hs256_keyed_with_public_pem() -> str:
    """Algorithm confusion: HS256 with the gateway's RSA public key as the HMAC secret."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps({"sub": "ada", "exp": now + 600, "aud": AUD, "iss": ISS}).encode())
    mac = hmac.new(_pem(RSA_KEY).encode(), f"{header}.{payload}".encode(), hashlib.sha256)
    return f"{header}.{payload}.{b64(mac.digest())}"


BAD_TOKENS: list[Any] = [
    pytest.param(lambda: token(exp=int(time.time()) - 120), "token expired", id="expired"),
    pytest.param(
        lambda: token(alg="ES256", exp=int(time.time()) - 120), "token expired", id="expired-es"
    ),
    pytest.param(
        lambda: token(nbf=int(time.time()) + 120), "token not valid yet", id="not-yet-valid"
    ),
    pytest.param(
        lambda: token(key="another-secret-entirely-0123456789abcdefgh"),
        "invalid token signature",
        id="wrong-secret",
    ),
    pytest.param(
        lambda: token(alg="RS256", key=RSA_OTHER), "invalid token signature", id="wrong-rsa-key"
    ),
    pytest.param(
        lambda: token(alg="ES256", key=EC_OTHER), "invalid token signature", id="wrong-ec-key"
    ),
    pytest.param(
        lambda: token(aud="someone-else"), "token audience not accepted", id="wrong-audience"
    ),
    pytest.param(lambda: token(aud=DROP), "token lacks the aud claim", id="missing-audience"),
    pytest.param(
        lambda: token(iss="https://evil.example"), "token issuer not accepted", id="wrong-issuer"
    ),
    pytest.param(lambda: token(exp=DROP), "token lacks the exp claim", id="missing-exp"),
    pytest.param(lambda: token(sub=DROP), "token lacks the sub claim", id="missing-sub"),
    pytest.param(lambda: token(sub=7), "token sub must be a non-empty string", id="int-sub"),
    pytest.param(
        lambda: token(sub="u" * 257), "token sub is longer than 256 bytes", id="sub-too-long"
    ),
    pytest.param(
        lambda: token(rooms=7),
        "token claim rooms must be a list of room patterns",
        id="bad-rooms-claim",
    ),
    pytest.param(
        lambda: jwt.encode({"sub": "ada", "exp": int(time.time()) + 600}, "", algorithm="none"),
        "token algorithm not accepted",
        id="alg-none",
    ),
    pytest.param(
        _hs256_keyed_with_public_pem, "invalid token signature", id="hs256-with-public-key"
    ),
    pytest.param(lambda: "not-a-jwt", "malformed token", id="malformed"),
]


@pytest.mark.parametrize(("make", "reason"), BAD_TOKENS)
@pytest.mark.parametrize("via", ["query", "header"])
def test_bad_token_is_closed_1008_with_its_reason(
    ac: AuthCluster, bystander: Bystander, make: Callable[[], str], reason: str, via: str
) -> None:
    rejected = ac.count("main", REJECTED, reason="token")
    cut = ac.count("main", DISCONNECTS, reason="token")
    tok = make()
    if via == "query":
        ctx = raw(ac.url("main", token=tok))
    else:
        ctx = raw(ac.url("main"), headers={"Authorization": f"Bearer {tok}"})
    with ctx as conn:
        closed = wait_closed(conn)
    assert (closed.code, closed.reason, closed.frames) == (1008, reason, []), closed
    assert ac.count("main", REJECTED, reason="token") == rejected + 1
    assert ac.count("main", DISCONNECTS, reason="token") == cut + 1
    bystander.check()


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        pytest.param({}, None, id="nothing"),
        pytest.param({"token": ""}, None, id="empty-query-token"),
        pytest.param({}, {"Authorization": "Bearer "}, id="empty-bearer"),
        pytest.param({}, {"Authorization": f"Basic {token()}"}, id="not-bearer"),
        pytest.param({"access_token": token()}, None, id="other-query-name"),
    ],
)
def test_no_token_is_closed_1008_when_anonymous_is_not_allowed(
    ac: AuthCluster, bystander: Bystander, query: dict[str, str], headers: dict[str, str] | None
) -> None:
    rejected = ac.count("main", REJECTED, reason="token")
    with raw(ac.url("main", **query), headers=headers) as conn:
        closed = wait_closed(conn)
    assert (closed.code, closed.reason, closed.frames) == (1008, "a token is required", [])
    assert ac.count("main", REJECTED, reason="token") == rejected + 1
    bystander.check()


def test_refused_token_never_reaches_the_cluster(ac: AuthCluster, bystander: Bystander) -> None:
    # A refused connection is not a socket: it holds no room and counts in no room.
    room = fresh_room("public:ghost")
    with raw(ac.url("main", token=token(exp=int(time.time()) - 120))) as conn:
        with contextlib.suppress(ConnectionClosed):  # the close may come first
            conn.send(json.dumps({"op": "join", "ref": 1, "room": room}))
        closed = wait_closed(conn)
    assert closed.code == 1008 and closed.frames == [], closed
    assert ac.sdk.sockets.count(room) == 0
    bystander.check()


# ================================================================================= origins


@pytest.mark.parametrize(
    ("origin", "headers"),
    [
        pytest.param("https://evil.example", None, id="other-site"),
        pytest.param("http://app.example", None, id="other-scheme"),
        pytest.param("https://app.example:8443", None, id="other-port"),
        pytest.param("https://sub.app.example", None, id="subdomain"),
        pytest.param("https://app.example.evil", None, id="suffix"),
        pytest.param("null", None, id="null-origin"),
        pytest.param("https://evil.example", {"Sec-Fetch-Site": "cross-site"}, id="cross-site"),
        pytest.param("https://evil.example", {"Sec-Fetch-Site": "same-site"}, id="same-site"),
    ],
)
@pytest.mark.parametrize("path", ["ws", "sio"])
def test_disallowed_origin_gets_403_at_the_upgrade(
    ac: AuthCluster,
    bystander: Bystander,
    origin: str,
    headers: dict[str, str] | None,
    path: str,
) -> None:
    rejected = ac.count("main", REJECTED, reason="origin")
    tok = token(**ADA_CLAIMS)  # a valid token does not override the origin check
    url = ac.url("main", token=tok) if path == "ws" else ac.sio_url("main", token=tok)
    refusal = refused_upgrade(url, origin=origin, headers=headers)
    assert refusal.response.status_code == 403
    assert ac.count("main", REJECTED, reason="origin") == rejected + 1
    bystander.check()


@pytest.mark.parametrize(
    ("origin", "headers"),
    [
        pytest.param(ORIGIN, None, id="allowlisted"),
        pytest.param(ORIGIN, {"Sec-Fetch-Site": "cross-site"}, id="allowlisted-cross-site"),
        pytest.param(None, None, id="no-origin-header"),
    ],
)
def test_allowed_origin_or_none_is_accepted(
    ac: AuthCluster, bystander: Bystander, origin: str | None, headers: dict[str, str] | None
) -> None:
    rejected = ac.count("main", REJECTED, reason="origin")
    with raw(ac.url("main", token=token(**ADA_CLAIMS)), origin=origin, headers=headers) as conn:
        assert recv_json(conn).get("op") == "welcome"
        conn.send(json.dumps({"op": "join", "ref": 1, "room": "user:ada"}))
        assert reply_to(conn, 1)["statusCode"] == 200
    assert ac.count("main", REJECTED, reason="origin") == rejected
    bystander.check()


def test_origin_is_checked_before_the_token(ac: AuthCluster, bystander: Bystander) -> None:
    # A bad token from a bad origin is refused at the upgrade (403), not upgraded and closed.
    tokens = ac.count("main", REJECTED, reason="token")
    refusal = refused_upgrade(ac.url("main", token="not-a-jwt"), origin="https://evil.example")
    assert refusal.response.status_code == 403
    assert ac.count("main", REJECTED, reason="token") == tokens
    bystander.check()


@pytest.mark.parametrize(
    ("own", "headers"),
    [
        pytest.param(True, None, id="origin-equals-host"),
        pytest.param(False, {"Sec-Fetch-Site": "same-origin"}, id="sec-fetch-site-same-origin"),
        pytest.param(False, {"Sec-Fetch-Site": "none"}, id="sec-fetch-site-none"),
    ],
)
def test_the_allowlist_is_exactly_the_list(
    ac: AuthCluster, bystander: Bystander, own: bool, headers: dict[str, str] | None
) -> None:
    # Tornado passes an Origin equal to the Host header (a hostile name resolving to the
    # gateway: DNS rebinding) and Sec-Fetch-Site: same-origin without asking the allowlist.
    # With a list configured, only the list gets in.
    origin = ac.gateways["main"].public if own else "https://evil.example"
    rejected = ac.count("main", REJECTED, reason="origin")
    refusal = refused_upgrade(ac.url("main", token=token()), origin=origin, headers=headers)
    assert refusal.response.status_code == 403
    assert ac.count("main", REJECTED, reason="origin") == rejected + 1
    bystander.check()


# =============================================================================== Socket.IO


def test_sio_eio4_token_in_connect_auth_is_accepted(ac: AuthCluster, bystander: Bystander) -> None:
    with raw(ac.sio_url("main")) as conn:
        sio_open(conn)
        conn.send("40" + json.dumps({"token": token(**ADA_CLAIMS)}))
        sid = sio_connected(conn)
        mark = uuid.uuid4().hex
        ac.broadcast(sid, "hello", mark)
        assert sio_event(conn) == ["hello", mark]
    bystander.check()


@pytest.mark.parametrize("via", ["query", "header"])
def test_sio_eio4_token_in_the_handshake_is_accepted(
    ac: AuthCluster, bystander: Bystander, via: str
) -> None:
    tok = token(alg="RS256", **ADA_CLAIMS)
    if via == "query":
        ctx = raw(ac.sio_url("main", token=tok))
    else:
        ctx = raw(ac.sio_url("main"), headers={"Authorization": f"Bearer {tok}"})
    with ctx as conn:
        sio_open(conn)
        conn.send("40")
        sid = sio_connected(conn)
        mark = uuid.uuid4().hex
        ac.broadcast(sid, "hello", mark)
        assert sio_event(conn) == ["hello", mark]
    bystander.check()


def test_sio_eio3_token_in_the_handshake_is_accepted(ac: AuthCluster, bystander: Bystander) -> None:
    with raw(ac.sio_url("main", eio=3, token=token(alg="ES256"))) as conn:
        opened = sio_open(conn)
        assert opened["maxPayload"] == MAX_FRAME
        assert sio_recv(conn) == "40"  # EIO3: the server connects "/" by itself
        mark = uuid.uuid4().hex
        ac.broadcast(opened["sid"], "hello", mark)
        assert sio_event(conn) == ["hello", mark]
    bystander.check()


@pytest.mark.parametrize(
    ("connect_packet", "reason"),
    [
        pytest.param(
            lambda: "40" + json.dumps({"token": token(exp=int(time.time()) - 120)}),
            "token expired",
            id="expired",
        ),
        pytest.param(
            lambda: "40" + json.dumps({"token": token(key=RSA_OTHER, alg="RS256")}),
            "invalid token signature",
            id="wrong-key",
        ),
        pytest.param(
            lambda: "40" + json.dumps({"token": token(aud="x")}),
            "token audience not accepted",
            id="wrong-audience",
        ),
        pytest.param(
            lambda: "40" + json.dumps({"token": "garbage"}), "malformed token", id="malformed"
        ),
        pytest.param(lambda: "40", "a token is required", id="no-auth"),
        pytest.param(lambda: '40{"token":""}', "a token is required", id="empty-token"),
        pytest.param(lambda: '40{"token":42}', "a token is required", id="non-string-token"),
        pytest.param(lambda: '40{"jwt":"x"}', "a token is required", id="other-key"),
    ],
)
def test_sio_eio4_bad_connect_auth_gets_44_then_1008(
    ac: AuthCluster, bystander: Bystander, connect_packet: Callable[[], str], reason: str
) -> None:
    rejected = ac.count("main", REJECTED, reason="token")
    with raw(ac.sio_url("main")) as conn:
        sio_open(conn)
        conn.send(connect_packet())
        assert_sio_refused(conn, reason, opened=False)
    assert ac.count("main", REJECTED, reason="token") == rejected + 1
    bystander.check()


@pytest.mark.parametrize("eio", [3, 4])
def test_sio_bad_handshake_token_gets_44_then_1008(
    ac: AuthCluster, bystander: Bystander, eio: int
) -> None:
    rejected = ac.count("main", REJECTED, reason="token")
    with raw(ac.sio_url("main", eio=eio, token=token(iss="https://evil.example"))) as conn:
        assert_sio_refused(conn, "token issuer not accepted")
    assert ac.count("main", REJECTED, reason="token") == rejected + 1
    bystander.check()


def test_sio_eio3_without_token_gets_44_then_1008(ac: AuthCluster, bystander: Bystander) -> None:
    # EIO3 has no CONNECT auth payload: the handshake must carry the token.
    rejected = ac.count("main", REJECTED, reason="token")
    with raw(ac.sio_url("main", eio=3)) as conn:
        assert_sio_refused(conn, "a token is required")
    assert ac.count("main", REJECTED, reason="token") == rejected + 1
    bystander.check()


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        pytest.param({"token": "EXPIRED"}, "token expired", id="expired"),
        pytest.param({"token": "garbage"}, "malformed token", id="malformed"),
        pytest.param({"token": "GOOD"}, None, id="valid"),
        pytest.param(None, None, id="no-token-is-anonymous"),
        pytest.param({}, None, id="empty-auth-is-anonymous"),
    ],
)
def test_sio_eio4_connect_token_is_verified_where_anonymous_is_allowed(
    ac: AuthCluster, auth: dict[str, str] | None, reason: str | None
) -> None:
    # A token, however it is carried, is verified: where anonymous clients are welcome, a bad
    # one is still refused (as it is in the query or a header), never downgraded to anonymous.
    bystander = Bystander(ac, "limited", None)
    tokens = {"EXPIRED": token(exp=int(time.time()) - 120), "GOOD": token()}
    if auth is not None:
        auth = {k: tokens.get(v, v) for k, v in auth.items()}
    rejected = ac.count("limited", REJECTED, reason="token")
    with raw(ac.sio_url("limited")) as conn:
        sio_open(conn)
        conn.send("40" + (json.dumps(auth) if auth is not None else ""))
        if reason is None:
            sid = sio_connected(conn)
            mark = uuid.uuid4().hex
            ac.broadcast(sid, "hello", mark)
            assert sio_event(conn) == ["hello", mark]
        else:
            assert_sio_refused(conn, reason, opened=False)
    assert ac.count("limited", REJECTED, reason="token") == rejected + (reason is not None)
    bystander.check()


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        pytest.param({"token": "EXPIRED"}, "token expired", id="bad-token-refused"),
        pytest.param({"token": "GOOD"}, None, id="good-token"),
        pytest.param({}, None, id="no-token-is-anonymous"),
    ],
)
def test_ws_token_is_verified_where_anonymous_is_allowed(
    ac: AuthCluster, query: dict[str, str], reason: str | None
) -> None:
    bystander = Bystander(ac, "limited", None)
    tokens = {"EXPIRED": token(exp=int(time.time()) - 120), "GOOD": token("ada", **ADA_CLAIMS)}
    query = {k: tokens[v] for k, v in query.items()}
    with raw(ac.url("limited", **query)) as conn:
        if reason is None:
            assert recv_json(conn).get("op") == "welcome"
        else:
            closed = wait_closed(conn)
            assert (closed.code, closed.reason) == (1008, reason), closed
    bystander.check()


# ========================================================================= max connections


def test_max_connections_refuses_with_503_json_before_the_upgrade(ac: AuthCluster) -> None:
    rejected = ac.count("full", REJECTED, reason="max_connections")
    room = fresh_room("public:full")
    existing = [ac.ws("full", name=f"full{i}") for i in range(3)]
    for client in existing:
        client.join(room)
    for url in (ac.url("full"), ac.sio_url("full")):
        refusal = refused_upgrade(url, origin=ORIGIN)
        response = refusal.response
        assert response.status_code == 503
        assert response.headers.get("Content-Type", "").startswith("application/json")
        body = json.loads(response.body)
        assert body["error"] == "max_connections" and isinstance(body["message"], str), body
    assert ac.count("full", REJECTED, reason="max_connections") == rejected + 2
    # The three connections are unaffected.
    mark = uuid.uuid4().hex
    ac.broadcast(room, "full-house", mark)
    for client in existing:
        assert client.next_event() == Event("full-house", mark)
    # A slot freed is a slot for the next client (detach runs when the close completes: poll).
    existing.pop().close()

    def newcomer() -> WsClient | None:
        try:
            return ac.ws("full")
        except InvalidStatus as exc:
            assert exc.response.status_code == 503
            return None

    late = deadline_poll(newcomer, 10 * T, interval=0.05, message="a free slot")
    assert late is not None
    late.join(room)
    mark = uuid.uuid4().hex
    ac.broadcast(room, "again", mark)
    for client in [*existing, late]:
        assert client.next_event() == Event("again", mark)


# =============================================================================== rate limit


def _flood_until_closed(client: WsClient, frame: str | bytes, limit: int = 2000) -> int | None:
    """Send ``frame`` in batches until the gateway closes; return the close code."""
    sent = 0
    try:
        while sent < limit:
            for _ in range(25):
                client.send_raw(frame)
                sent += 1
            # Read what came back so far (replies are buffered by the client).
            while client._pump(0.02):
                pass
    except ConnectionClosed:
        return client.wait_closed()  # reads what is still buffered, then the close
    pytest.fail(f"{client.name}: not closed after {sent} frames over the limit")


def test_rate_limit_429_then_close_4003_while_others_are_served(ac: AuthCluster) -> None:
    errors = ac.count("limited", CLIENT_ERRORS, code="rate_limited")
    abuse = ac.count("limited", DISCONNECTS, reason="abuse")
    bystander = Bystander(ac, "limited", token("carol"))
    offender = ac.ws("limited", token("mallory"), name="offender")
    room = fresh_room("public:flood")
    # Burst: five frames are served at once, the following ones answered 429 rate_limited.
    started = time.monotonic()
    refs = [offender.send_op("join", room=room) for _ in range(15)]
    replies = [offender.wait_reply(ref) for ref in refs]
    elapsed = time.monotonic() - started
    statuses = [r["statusCode"] for r in replies]
    assert statuses[:5] == [200] * 5, statuses
    # At 5 frames/s the bucket regains one frame per 200 ms: allow for what it could have.
    assert statuses[5:].count(200) <= int(elapsed * 5), (statuses, elapsed)
    for reply in replies[5:]:
        if reply["statusCode"] != 200:
            assert_error(reply, 429, "rate_limited")
    assert ac.count("limited", CLIENT_ERRORS, code="rate_limited") - errors == statuses.count(429)
    bystander.check()  # served during the offender's burst
    # Continued flooding (abuse strikes: 20 refused frames in a row) closes with 4003.
    frame = json.dumps({"op": "join", "ref": 0, "room": room})
    assert _flood_until_closed(offender, frame) == 4003
    assert ac.count("limited", DISCONNECTS, reason="abuse") == abuse + 1
    bystander.check()
    assert bystander.client.request("join", room=fresh_room("public:b"))["statusCode"] == 200


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(b"\x00binary", id="binary"),
        pytest.param("{not json", id="malformed"),
        pytest.param('{"op": "frobnicate", "ref": 1}', id="unknown-op"),
    ],
)
def test_every_kind_of_frame_counts_toward_the_rate_limit(
    ac: AuthCluster, frame: str | bytes
) -> None:
    abuse = ac.count("limited", DISCONNECTS, reason="abuse")
    bystander = Bystander(ac, "limited", None)
    offender = ac.ws("limited", name="offender")  # anonymous: --allow-anonymous yes
    assert _flood_until_closed(offender, frame) == 4003
    assert ac.count("limited", DISCONNECTS, reason="abuse") == abuse + 1
    # Served frames got their 400; refused ones are still answered, with 429.
    answers = [*offender.errors, *offender.replies.values()]
    assert answers, "no answer at all before the close"
    for answer in answers:
        if answer["statusCode"] == 429:
            assert_error(answer, 429, "rate_limited")
        else:
            assert_error(answer, 400, "bad_request")
    assert any(a["statusCode"] == 429 for a in answers), answers
    bystander.check()


def test_sio_event_flood_gets_429_acks_then_disconnect_and_4003(ac: AuthCluster) -> None:
    abuse = ac.count("limited", DISCONNECTS, reason="abuse")
    bystander = Bystander(ac, "limited", None)
    with raw(ac.sio_url("limited")) as conn:
        sio_open(conn)
        conn.send("40")  # anonymous is allowed on this gateway
        sio_connected(conn)
        started = time.monotonic()
        for ack in range(1, 16):
            conn.send(f"42{ack}" + json.dumps(["get", {"url": "/x"}]))
        acks: dict[int, int] = {}
        bodies: dict[int, Any] = {}
        while len(acks) < 15:
            packet = sio_recv(conn)
            assert packet.startswith("43"), packet
            digits = len(packet) - len(packet[2:].lstrip("0123456789"))
            ack_id = int(packet[2:digits])
            jwr = json.loads(packet[digits:])[0]
            acks[ack_id], bodies[ack_id] = jwr["statusCode"], jwr["body"]
        elapsed = time.monotonic() - started
        statuses = [acks[i] for i in range(1, 16)]
        # Every packet spends from the burst of 5: the CONNECT took one, so four events are
        # served (400: no __sails_io_sdk_version), and the rest refused with 429.
        assert statuses[:4] == [400] * 4, statuses
        assert statuses[4:].count(400) <= int(elapsed * 5), (statuses, elapsed)
        assert set(statuses[4:]) <= {400, 429}, statuses
        for ack_id in range(5, 16):
            if acks[ack_id] == 429:
                assert bodies[ack_id]["error"] == "rate_limited", bodies[ack_id]
        bystander.check()
        closed = _sio_flood_until_closed(conn, "42" + json.dumps(["get", {"url": "/x"}]))
    assert closed.code == 4003, closed
    assert closed.frames[-1] == "41", closed.frames[-5:]  # the disconnect packet comes first
    assert ac.count("limited", DISCONNECTS, reason="abuse") == abuse + 1
    bystander.check()


def test_sio_ping_flood_is_rate_limited_too(ac: AuthCluster) -> None:
    abuse = ac.count("limited", DISCONNECTS, reason="abuse")
    bystander = Bystander(ac, "limited", None)
    with raw(ac.sio_url("limited", eio=3)) as conn:
        sio_open(conn)
        assert sio_recv(conn) == "40"
        closed = _sio_flood_until_closed(conn, "2probe")
    assert closed.code == 4003, closed
    assert closed.frames[-1] == "41", closed.frames[-5:]
    assert ac.count("limited", DISCONNECTS, reason="abuse") == abuse + 1
    bystander.check()


def _sio_flood_until_closed(conn: ClientConnection, packet: str, limit: int = 2000) -> Closed:
    frames: list[str] = []
    sent = 0
    try:
        while sent < limit:
            for _ in range(25):
                conn.send(packet)
                sent += 1
            with contextlib.suppress(TimeoutError):
                while True:
                    frame = conn.recv(timeout=0.02)
                    frames.append(frame if isinstance(frame, str) else repr(frame))
    except ConnectionClosed:
        closed = wait_closed(conn)
        closed.frames[:0] = frames
        return closed
    pytest.fail(f"not closed after {sent} packets over the limit")


# ======================================================================= sizes and rooms


def test_frame_over_max_frame_bytes_is_closed_1009(ac: AuthCluster, bystander: Bystander) -> None:
    cut = ac.count("main", DISCONNECTS, reason="frame_too_big")
    room = fresh_room("public:big")

    def frame(size: int) -> str:
        head = json.dumps({"op": "join", "ref": 1, "room": room})
        return head + " " * (size - len(head))

    offender = ac.ws("main", token(**ADA_CLAIMS))
    offender.send_raw(frame(MAX_FRAME))  # exactly the limit: served
    assert offender.wait_reply(1)["statusCode"] == 200
    with contextlib.suppress(ConnectionClosed):  # the gateway may close before the write ends
        offender.send_raw(frame(MAX_FRAME + 1))
    assert offender.wait_closed() == 1009
    deadline_poll(
        lambda: ac.count("main", DISCONNECTS, reason="frame_too_big") == cut + 1,
        10 * T,
        message="frame_too_big counted",
    )
    deadline_poll(lambda: ac.sdk.sockets.count(room) == 0, 10 * T, message="offender gone")
    bystander.check()


def test_too_many_rooms_is_429_and_the_socket_stays(ac: AuthCluster, bystander: Bystander) -> None:
    errors = ac.count("main", CLIENT_ERRORS, code="too_many_rooms")
    ada = ac.ws("main", token(**ADA_CLAIMS))
    rooms = [fresh_room(f"public:r{i}") for i in range(MAX_ROOMS)]
    for room in rooms:
        ada.join(room)
    assert_error(ada.request("join", room=fresh_room("public:r")), 429, "too_many_rooms")
    assert_error(ada.request("join", room="user:ada"), 429, "too_many_rooms")
    assert ac.count("main", CLIENT_ERRORS, code="too_many_rooms") == errors + 2
    # Rejoining a room it is in is no new room; leaving one makes space for another.
    ada.join(rooms[0])
    ada.leave(rooms[0])
    ada.join("user:ada")
    mark = uuid.uuid4().hex
    ac.broadcast(["user:ada", rooms[1]], "once", mark)
    assert ada.next_event() == Event("once", mark)
    ada.expect_no_event()
    bystander.check()


# ================================================================= anonymous when allowed


def test_anonymous_allowed_by_flag_next_to_tokens(ac: AuthCluster) -> None:
    anon = ac.ws("limited", name="anon")
    anon.join(fresh_room("public:anon"))
    # {user} patterns never match an anonymous connection, even the literal room name.
    ada_token = token("ada", **ADA_CLAIMS)
    ada = ac.ws("limited", ada_token, name="ada")
    ada.join("user:ada")
    assert_error(anon.request("join", room="user:ada"), 403, "forbidden")
    assert_error(anon.request("join", room="user:{user}"), 403, "forbidden")
    # A token is still verified when given (this gateway has no audience configured).
    with raw(ac.url("limited", token=token(key="wrong-secret-0123456789abcdefghijk"))) as conn:
        closed = wait_closed(conn)
    assert (closed.code, closed.reason) == (1008, "invalid token signature"), closed
    mark = uuid.uuid4().hex
    ac.broadcast("user:ada", "dm", mark)
    assert ada.next_event() == Event("dm", mark)


# ======================================================================== production guard


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    env.update(extra)
    return env


def _gateway_argv(ac: AuthCluster, *extra: str) -> list[str]:
    info = ac.router.info
    return [
        sys.executable, "-m", "gateway",
        "--router", info["commands"], "--fanout", info["fanout"],
        "--host", "127.0.0.1", "--port", "0", "--internal-port", "0",
        "--drain-timeout", "2",
        *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param((), id="default-env-is-production"),
        pytest.param(("--env", "production"), id="explicit"),
        pytest.param(("--env", "production", "--allow-anonymous", "no"), id="anonymous-no"),
        pytest.param(("--env", "production", "--client-join", "*"), id="patterns-are-not-auth"),
    ],
)
def test_production_without_origins_or_tokens_exits_2_saying_why(
    ac: AuthCluster, bystander: Bystander, extra: tuple[str, ...]
) -> None:
    done = subprocess.run(
        _gateway_argv(ac, *extra),
        cwd=REPO,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=30 * T,
        check=False,
    )
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "READY" not in done.stdout
    stderr = done.stderr
    assert "refusing to start in production" in stderr, stderr
    for flag in ("--allowed-origin", "--token-secret-file", "--token-public-key-file"):
        assert flag in stderr, stderr
    assert "--env development" in stderr, stderr
    bystander.check()  # the cluster it would have joined is untouched


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(lambda tmp: ("--allowed-origin", ORIGIN), id="origins"),
        pytest.param(lambda tmp: ("--token-secret-file", str(tmp / "secret")), id="secret-file"),
        pytest.param(lambda tmp: ("--token-public-key-file", str(tmp / "k.pem")), id="public-key"),
    ],
)
def test_production_starts_with_origins_or_tokens(
    ac: AuthCluster, tmp_path: pathlib.Path, extra: Callable[[pathlib.Path], tuple[str, ...]]
) -> None:
    (tmp_path / "secret").write_text(SECRET + "\n")
    (tmp_path / "k.pem").write_text(_pem(EC_KEY))
    proc = gateway_proc("guarded", ac.router.info, "--env", "production", *extra(tmp_path))
    try:
        ready = proc.wait_ready()
        status, _ = http_get(ready["internal"] + "/readyz")
        assert status == 200
    finally:
        proc.stop()
    proc.check_log()


def test_production_starts_with_the_secret_from_the_environment(
    ac: AuthCluster, bystander: Bystander, tmp_path: pathlib.Path
) -> None:
    log_path = tmp_path / "gateway.log"
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            _gateway_argv(ac, "--env", "production", "--client-join", "public:*"),
            cwd=REPO,
            env=_clean_env(ROOMCAST_TOKEN_SECRET=OLD_SECRET),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    lines: queue.Queue[bytes | None] = queue.Queue()

    def pump() -> None:
        assert popen.stdout is not None
        for line in popen.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, name="env gateway stdout", daemon=True)
    reader.start()
    try:
        try:
            line = lines.get(timeout=15 * T)
        except queue.Empty:
            line = None
        assert line is not None and line.startswith(b"READY "), (line, log_path.read_text())
        public = json.loads(line[len(b"READY ") :])["public"].replace("http://", "ws://", 1)
        with raw(f"{public}/ws?token={token(key=OLD_SECRET)}") as conn:
            assert recv_json(conn).get("op") == "welcome"
        with raw(f"{public}/ws") as conn:  # token keys configured: anonymous refused
            assert wait_closed(conn).code == 1008
    finally:
        popen.send_signal(signal.SIGTERM)
        try:
            rc = popen.wait(15 * T)
        except subprocess.TimeoutExpired:
            popen.kill()
            rc = popen.wait(5 * T)
        reader.join(5 * T)
        if popen.stdout is not None:
            popen.stdout.close()
    text = log_path.read_text("utf-8", "replace")
    assert rc == 0, text
    assert "ERROR" not in text and "Traceback" not in text, text
    bystander.check()
