"""The HTTP server API (architecture §6, issue 6) against a real cluster, with a real HTTP client.

The module's cluster: a router (``--max-rooms-per-socket 8``), two development gateways without
API keys (``open0``, ``open1``: the API is open, and the ``/ws`` clients live there), and a
production gateway ``secured`` (with the origin allowlist production requires) whose keys come
from ``--api-key-file`` and ``ROOMCAST_API_KEYS``, with ``--api-max-body-bytes 4096``. Every
documented operation (the served ``/api/openapi.json`` lists them; a new one without a scenario
here fails :func:`test_every_documented_operation_has_a_scenario`) is called through both kinds
of gateway with ``http.client``, its effect checked on real ``/ws`` clients, and every response
body is validated against the served document's schema for that status. Rejections get their
exact status and ``{"error", "message"}`` body, are counted in
``roomcast_gateway_api_requests_total``, have no effect, and leave bystanders receiving. The
README's ``curl`` line runs as is.

Negative checks use a marker, not a wait: after the call whose effect must not arrive, the same
gateway's API sends a marker to the socket's own id room; by per-publisher order (architecture §5,
guarantee 2) the marker is the next thing the socket may see.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import pathlib
import shutil
import socket
import subprocess
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_openapi

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import (
    DRAIN_TIMEOUT,
    Cluster,
    Event,
    Gateway,
    Metrics,
    Proc,
    WsClient,
    fresh_room,
    gateway_proc,
    http_get,
    router_proc,
    start_cluster,
)

FILE_KEY = "file-key-" + uuid.uuid4().hex
ENV_KEYS = ("env-key-a-" + uuid.uuid4().hex, "env-key-b-" + uuid.uuid4().hex)
COMMENT = "# roomcast server API keys, one a line"  # in the key file: not a key
BODY_LIMIT = 4096  # --api-max-body-bytes of the secured gateway
MAX_ROOMS = 8  # --max-rooms-per-socket of the router
ORIGIN = "https://app.example"  # production gateways refuse to start without an allowlist
METRIC = "roomcast_gateway_api_requests_total"
OPEN0, OPEN1, SECURED = 0, 1, 2  # gateway indexes in ApiCluster.cluster
OMIT = object()  # "no Authorization header" for HttpApi calls

# The README line, verbatim but for PORT and KEY.
README_CURL = (
    "curl -s -X POST http://127.0.0.1:PORT/api/broadcast -H 'Authorization: Bearer KEY' "
    "-H 'Content-Type: application/json' "
    """-d '{"rooms": "lobby", "event": "message", "data": {"text": "hello from curl"}}'"""
)

# ``python -m gateway`` with ROOMCAST_API_KEYS set: the harness starts children without any
# ROOMCAST_* variable, so this launcher sets it (argv[1]) and runs the package like -m does.
_WITH_API_KEYS_ENV = (
    "import os, runpy, sys; "
    "os.environ['ROOMCAST_API_KEYS'] = sys.argv[1]; "
    "sys.argv = ['gateway', *sys.argv[2:]]; "
    "runpy.run_module('gateway', run_name='__main__', alter_sys=True)"
)


# ------------------------------------------------------------------------------ HTTP client


_ERROR_FIELDS = ("socket", "size", "limit")


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)


class HttpApi:
    """``POST /api/<operation>`` on one gateway with http.client (a new connection per call).

    Every answer is checked against the served OpenAPI document: JSON content type, and a body
    valid under the schema documented for that operation and status (errors not documented
    for an operation, like 405 or an unknown operation's 404, against the ``Error`` schema).
    ``sent`` tallies (operation label, status) as the gateway's metric should count them.
    """

    def __init__(self, base: str, doc: dict[str, Any], key: Any = OMIT) -> None:
        url = urllib.parse.urlsplit(base)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.doc = doc
        self.key = key
        self.sent: collections.Counter[tuple[str, str]] = collections.Counter()

    def with_key(self, key: Any) -> HttpApi:
        other = HttpApi(f"http://{self.host}:{self.port}", self.doc, key)
        other.sent = self.sent  # one tally per gateway
        return other

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        *,
        chunked: bool = False,
    ) -> Response:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10 * T)
        try:
            conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            resp = conn.getresponse()
            return Response(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def post(
        self,
        op: str,
        body: Any,
        *,
        key: Any = None,
        auth: str | None = None,
        method: str = "POST",
        chunked: bool = False,
    ) -> tuple[int, Any]:
        """Send ``body`` (JSON-encoded unless bytes) and return ``(status, parsed body)``."""
        key = self.key if key is None else key
        headers = {"Content-Type": "application/json"}
        if auth is not None:
            headers["Authorization"] = auth
        elif key is not OMIT:
            headers["Authorization"] = f"Bearer {key}"
        if body is None or isinstance(body, bytes) or chunked:
            raw = body
        else:
            raw = json.dumps(body).encode()
        resp = self.request(method, f"/api/{op}", raw, headers, chunked=chunked)
        label = op if f"/api/{op}" in self.doc["paths"] else "unknown"
        self.sent[(label, str(resp.status))] += 1
        assert resp.headers.get_content_type() == "application/json", (resp.status, resp.raw)
        parsed = resp.json()
        check_response(self.doc, op, resp.status, parsed)
        if resp.status == 405:
            assert resp.headers.get("Allow") == "POST", resp.headers
        return resp.status, parsed

    def call(self, op: str, body: Any, **kw: Any) -> Any:
        """An operation that must succeed: 200, and the result."""
        status, result = self.post(op, body, **kw)
        assert status == 200, f"{op} {body!r}: {status} {result!r}"
        return result

    def refused(self, op: str, body: Any, status: int, error: str, message: str | None = None,
                **kw: Any) -> dict[str, Any]:  # fmt: skip
        """An operation that must fail with ``status`` and error code ``error``."""
        got, result = self.post(op, body, **kw)
        assert (got, result.get("error")) == (status, error), f"{op} {body!r}: {got} {result!r}"
        # An error's own fields (NoSuchSocket's socket, PayloadTooLarge's size, limit) ride along.
        assert {"error", "message"} <= set(result) <= {"error", "message", *_ERROR_FIELDS}
        assert result["message"], result
        if message is not None:
            assert result["message"] == message, result
        return result  # type: ignore[no-any-return]

    # shorthands for the queries the scenarios check effects with
    def count(self, room: str) -> int:
        return self.call("count", {"room": room})["count"]  # type: ignore[no-any-return]

    def members(self, room: str) -> list[str]:
        return sorted(self.call("members", {"room": room})["members"])

    def rooms(self, socket: str) -> list[str]:
        return self.call("rooms", {"socket": socket})["rooms"]  # type: ignore[no-any-return]

    def join(self, sockets: Any, rooms: Any) -> None:
        assert self.call("join", {"sockets": sockets, "rooms": rooms}) == {}

    def marker(self, *clients: WsClient) -> None:
        """Nothing this API sent earlier reaches ``clients`` before a marker sent now."""
        for client in clients:
            mark = uuid.uuid4().hex
            self.call("broadcast", {"rooms": client.id, "event": "marker", "data": mark})
            got = client.next_event(what="(marker)")
            assert got == Event("marker", mark), f"{client}: expected the marker, got {got}"


def schema_at(doc: dict[str, Any], op: str, status: int) -> dict[str, Any]:
    post = doc["paths"].get(f"/api/{op}", {}).get("post")
    responses = post["responses"] if post else {}
    if str(status) in responses:
        return responses[str(status)]["content"]["application/json"]["schema"]  # type: ignore[no-any-return]
    # Not an operation's documented answer: only these, in the common error format.
    assert status == 405 or (post is None and status in (401, 403, 404)), (op, status)
    return {"$ref": "#/components/schemas/Error"}


def check_response(doc: dict[str, Any], op: str, status: int, body: Any) -> None:
    """``body`` is valid under the document's schema (OpenAPI 3.0 schema objects, jsonschema)."""
    schema = schema_at(doc, op, status)
    OAS30Validator({**schema, "components": doc["components"]}).validate(body)


def metric_counts(metrics: Metrics) -> collections.Counter[tuple[str, str]]:
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for name, labels, value in metrics.samples:
        if name == METRIC:
            counts[(labels["operation"], labels["status"])] += int(value)
    return counts


# ------------------------------------------------------------------------------ the cluster


def secured_gateway_proc(router_info: dict[str, Any], key_file: pathlib.Path) -> Proc:
    return Proc(
        "secured",
        [
            "-c", _WITH_API_KEYS_ENV,
            f"{ENV_KEYS[0]}, {ENV_KEYS[1]} ,",
            "--router", router_info["commands"],
            "--fanout", router_info["fanout"],
            "--host", "127.0.0.1",
            "--port", "0",
            "--internal-port", "0",
            "--env", "production",
            "--allowed-origin", ORIGIN,
            "--api-key-file", str(key_file),
            "--api-max-body-bytes", str(BODY_LIMIT),
            "--drain-timeout", str(DRAIN_TIMEOUT),
        ],
    )  # fmt: skip


def ready_gateway(proc: Proc) -> Gateway:
    info = proc.wait_ready()
    return Gateway(proc, info["public"], info["internal"])


@dataclass
class ApiCluster:
    cluster: Cluster
    doc: dict[str, Any]

    def api(self, via: str) -> HttpApi:
        """A fresh client (own tally) for ``open`` (open0, no key) or ``secured`` (file key)."""
        gw = self.cluster.gateways[SECURED if via == "secured" else OPEN0]
        return HttpApi(gw.internal, self.doc, FILE_KEY if via == "secured" else OMIT)

    def other(self, via: str) -> HttpApi:
        """The API of a different gateway than ``via``'s (another router link)."""
        return self.api("open" if via == "secured" else "secured")

    def ws(self, gateway: int) -> WsClient:
        assert gateway in (OPEN0, OPEN1), "clients live on the development gateways"
        return self.cluster.ws(gateway)


@pytest.fixture(scope="module")
def api_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiCluster]:
    key_file = tmp_path_factory.mktemp("keys") / "api-keys"
    key_file.write_text(f"{COMMENT}\n\n  {FILE_KEY}  \n", "utf-8")
    router = router_proc("--max-rooms-per-socket", str(MAX_ROOMS))
    procs = [router]
    try:
        info = router.wait_ready()
        procs += [gateway_proc("open0", info), gateway_proc("open1", info)]
        procs.append(secured_gateway_proc(info, key_file))
        cluster = Cluster(router, [ready_gateway(p) for p in procs[1:]])
        status, text = http_get(cluster.gateways[SECURED].internal + "/api/openapi.json")
        assert status == 200, (status, text[:300])
    except BaseException:
        for proc in procs:
            proc.kill()
        raise
    yield ApiCluster(cluster, json.loads(text))
    cluster.stop()


@pytest.fixture
def ac(api_cluster: ApiCluster) -> Iterator[ApiCluster]:
    """Per test: its clients are closed afterwards; no process died or logged an ERROR."""
    api_cluster.cluster.check_healthy()
    offsets = api_cluster.cluster.log_offsets()
    yield api_cluster
    api_cluster.cluster.close_clients()
    api_cluster.cluster.check_healthy(offsets)


# ------------------------------------------------------------------------------ the document


def test_openapi_document_is_served_valid_and_the_same_on_every_gateway(ac: ApiCluster) -> None:
    validate_openapi(ac.doc)
    for gw in ac.cluster.gateways:
        resp = HttpApi(gw.internal, ac.doc).request("GET", "/api/openapi.json")
        assert resp.status == 200
        assert resp.headers.get_content_type() == "application/json"
        assert resp.json() == ac.doc
    assert ac.doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_every_documented_operation_has_a_scenario(ac: ApiCluster) -> None:
    documented = set()
    for path, item in ac.doc["paths"].items():
        assert path.startswith("/api/") and set(item) == {"post"}, (path, item)
        documented.add(path.removeprefix("/api/"))
    assert documented == set(SCENARIOS), (
        f"without a scenario: {sorted(documented - set(SCENARIOS))}; "
        f"not documented: {sorted(set(SCENARIOS) - documented)}"
    )


# ------------------------------------------------------------------------------ scenarios
# One per documented operation, each run through the secured gateway (with a key) and through
# an open development gateway (without one), with its clients on both development gateways.


def scenario_broadcast(ac: ApiCluster, api: HttpApi, via: str) -> None:
    a, b, outsider = ac.ws(OPEN0), ac.ws(OPEN1), ac.ws(OPEN0)
    room, room2 = fresh_room("http"), fresh_room("http")
    api.join([a.id, b.id], room)
    data = {"n": 1, "text": "héllo", "list": [1, None, True]}
    result = api.call("broadcast", {"rooms": room, "event": "greet", "data": data})
    assert result == {"gateways": 2}
    assert a.next_event() == Event("greet", data)
    assert b.next_event() == Event("greet", data)
    # Defaults: event "message", data null.
    assert api.call("broadcast", {"rooms": [room]}) == {"gateways": 2}
    assert a.next_event() == Event("message", None)
    assert b.next_event() == Event("message", None)
    # Several rooms: each member once; omit (a list or one id) skips those sockets.
    api.join(a.id, room2)
    body = {"rooms": [room, room2], "event": "multi", "data": 2, "omit": [b.id]}
    assert api.call("broadcast", body) == {"gateways": 2}  # omit is applied by the gateways
    assert a.next_event() == Event("multi", 2)
    assert api.call("broadcast", {"rooms": room, "data": 3, "omit": a.id}) == {"gateways": 2}
    assert b.next_event() == Event("message", 3)
    api.marker(a, b, outsider)
    # Receipts (issue 8): exact sockets, each once across rooms (a is in both), omit counted;
    # with confirm, also the sockets the gateways queued it for.
    body = {"rooms": [room, room2], "data": 4, "receipt": True}
    assert api.call("broadcast", body) == {"gateways": 2, "sockets": 2, "omitted": 0}
    body = {"rooms": [room, room2], "data": 5, "omit": [a.id, outsider.id], "receipt": True}
    assert api.call("broadcast", body) == {"gateways": 2, "sockets": 1, "omitted": 1}
    body = {"rooms": [room, room2], "data": 6, "confirm": True, "confirm_timeout": 10 * T}
    assert api.call("broadcast", body) == {
        "gateways": 2, "sockets": 2, "omitted": 0, "confirmed": 2, "complete": True
    }  # fmt: skip
    assert [a.next_event(), a.next_event()] == [Event("message", 4), Event("message", 6)]
    assert [b.next_event() for _ in range(3)] == [Event("message", n) for n in (4, 5, 6)]
    # receipt false is the plain answer; bad receipt fields are refused, and send nothing.
    assert api.call("broadcast", {"rooms": room, "data": 7, "receipt": False}) == {"gateways": 2}
    assert [a.next_event(), b.next_event()] == [Event("message", 7)] * 2
    for bad in ({"receipt": "yes"}, {"confirm": 1}, {"confirm": True, "confirm_timeout": 0},
                {"confirm_timeout": 61}, {"confirm_timeout": "5"}):  # fmt: skip
        api.refused("broadcast", {"rooms": room, "data": "no", **bad}, 400, "bad_request")
    api.marker(a, b, outsider)


def scenario_blast(ac: ApiCluster, api: HttpApi, via: str) -> None:
    a, b, omitted = ac.ws(OPEN0), ac.ws(OPEN1), ac.ws(OPEN1)
    router = Metrics(http_get(ac.cluster.router.info["http"] + "/metrics")[1])
    live = router.get("roomcast_router_gateways")
    assert live == len(ac.cluster.gateways)
    body: dict[str, Any] = {"event": "news", "data": {"items": [1, "two"]}, "omit": omitted.id}
    assert api.call("blast", body) == {"gateways": live}
    assert a.next_event() == Event("news", {"items": [1, "two"]})
    assert b.next_event() == Event("news", {"items": [1, "two"]})
    assert api.call("blast", {}) == {"gateways": live}  # every field optional
    for client in (a, b, omitted):
        assert client.next_event() == Event("message", None)
    api.marker(a, b, omitted)
    # Receipts count every socket of the cluster: once the router has only these three (the
    # clients of earlier tests are closed, but their close may still be on its way).
    deadline_poll(
        lambda: router_gauge(ac, "roomcast_router_sockets") == 3,
        10 * T,
        message="the router to know exactly this test's 3 sockets",
    )
    body = {"data": 1, "omit": [omitted.id, "nobody"], "receipt": True}
    assert api.call("blast", body) == {"gateways": live, "sockets": 2, "omitted": 1}
    body = {"data": 2, "confirm": True, "confirm_timeout": 10 * T}
    assert api.call("blast", body) == {
        "gateways": live, "sockets": 3, "omitted": 0, "confirmed": 3, "complete": True
    }  # fmt: skip
    assert [a.next_event(), a.next_event()] == [Event("message", 1), Event("message", 2)]
    assert [b.next_event(), b.next_event()] == [Event("message", 1), Event("message", 2)]
    assert omitted.next_event() == Event("message", 2)
    api.refused("blast", {"data": "no", "confirm": True, "confirm_timeout": -1}, 400, "bad_request")
    api.marker(a, b, omitted)


def router_gauge(ac: ApiCluster, name: str) -> float:
    return Metrics(http_get(ac.cluster.router.info["http"] + "/metrics")[1]).get(name)


def scenario_join(ac: ApiCluster, api: HttpApi, via: str) -> None:
    clients = [ac.ws(OPEN0), ac.ws(OPEN1)]
    other = ac.other(via)
    # The 200 comes once the router applied the join: a broadcast right after it, through this
    # gateway or through another one (a different router link), reaches the socket.
    for i in range(12):
        client, room = clients[i % 2], fresh_room("join")
        api.join(client.id, room)
        sender = api if i % 4 < 2 else other
        assert sender.call("broadcast", {"rooms": room, "data": i}) == {"gateways": 1}
        assert client.next_event(what=f"(broadcast {i} right after join)") == Event("message", i)
    # Lists of sockets and rooms, across gateways; joining twice changes nothing.
    a, b = clients
    r1, r2 = fresh_room("join"), fresh_room("join")
    api.join([a.id, b.id], [r1, r2])
    api.join([a.id], [r1])
    assert api.members(r1) == api.members(r2) == sorted([a.id, b.id])
    assert other.count(r1) == 2
    # An empty socket list is a no-op.
    api.join([], r1)
    assert api.count(r1) == 2


def scenario_leave(ac: ApiCluster, api: HttpApi, via: str) -> None:
    a, b = ac.ws(OPEN0), ac.ws(OPEN1)
    room, kept = fresh_room("leave"), fresh_room("leave")
    api.join([a.id, b.id], [room, kept])
    assert api.call("leave", {"sockets": a.id, "rooms": [room]}) == {}
    assert api.members(room) == [b.id]
    assert api.rooms(a.id) == sorted([a.id, kept])
    api.call("broadcast", {"rooms": room, "data": "after leave"})
    assert b.next_event() == Event("message", "after leave")
    api.marker(a)
    # Leaving a room one is not in, or twice, is fine.
    assert api.call("leave", {"sockets": [a.id, b.id], "rooms": [room, kept]}) == {}
    assert api.count(room) == api.count(kept) == 0


def scenario_leave_all(ac: ApiCluster, api: HttpApi, via: str) -> None:
    a, b, d = ac.ws(OPEN0), ac.ws(OPEN1), ac.ws(OPEN1)
    r1, r2, r3, r4 = (fresh_room("la") for _ in range(4))
    api.join(a.id, [r1, r2, r3])
    api.join(b.id, [r1, r4])
    api.join(d.id, r2)
    assert api.call("leave_all", {"room": r1}) == {}
    assert api.rooms(a.id) == [a.id]
    assert api.rooms(b.id) == [b.id]
    assert api.rooms(d.id) == sorted([d.id, r2])  # not a member of r1: untouched
    assert [api.count(r) for r in (r1, r2, r3, r4)] == [0, 1, 0, 0]
    api.call("broadcast", {"rooms": [r1, r2, r3, r4], "data": "x"})
    assert d.next_event() == Event("message", "x")
    api.marker(a, b)


def scenario_add_room_members_to_rooms(ac: ApiCluster, api: HttpApi, via: str) -> None:
    a, b, d = ac.ws(OPEN0), ac.ws(OPEN1), ac.ws(OPEN0)
    src, d1, d2 = fresh_room("src"), fresh_room("dst"), fresh_room("dst")
    api.join([a.id, b.id], src)
    assert api.call("add_room_members_to_rooms", {"source": src, "rooms": [d1, d2]}) == {}
    assert api.members(d1) == api.members(d2) == sorted([a.id, b.id])
    api.call("broadcast", {"rooms": d2, "data": "copied"})  # right after the 200
    assert a.next_event() == Event("message", "copied")
    assert b.next_event() == Event("message", "copied")
    # A socket id is a room too (its own), and a single room name is fine.
    assert api.call("add_room_members_to_rooms", {"source": d.id, "rooms": d1}) == {}
    assert api.members(d1) == sorted([a.id, b.id, d.id])
    assert api.count(src) == 2
    api.marker(d)


def scenario_remove_room_members_from_rooms(ac: ApiCluster, api: HttpApi, via: str) -> None:
    a, b, c = ac.ws(OPEN0), ac.ws(OPEN1), ac.ws(OPEN1)
    src, dst, dst2 = fresh_room("src"), fresh_room("dst"), fresh_room("dst")
    api.join([a.id, b.id], [src, dst, dst2])
    api.join(c.id, dst)
    body = {"source": src, "rooms": [dst, dst2]}
    assert api.call("remove_room_members_from_rooms", body) == {}
    assert api.members(dst) == [c.id]
    assert api.count(dst2) == 0
    assert api.members(src) == sorted([a.id, b.id])  # the source itself is untouched
    api.call("broadcast", {"rooms": [dst, dst2], "data": "rest"})
    assert c.next_event() == Event("message", "rest")
    api.marker(a, b)


def scenario_count(ac: ApiCluster, api: HttpApi, via: str) -> None:
    a, b, c = ac.ws(OPEN0), ac.ws(OPEN1), ac.ws(OPEN1)
    room = fresh_room("count")
    assert api.call("count", {"room": room}) == {"count": 0}
    api.join([a.id, b.id, c.id], room)
    assert api.call("count", {"room": room}) == {"count": 3}
    assert ac.other(via).call("count", {"room": room}) == {"count": 3}
    assert api.call("count", {"room": a.id}) == {"count": 1}  # its own id room
    c.close()  # a disconnect leaves every room, cluster-wide
    deadline_poll(lambda: api.count(room) == 2, 5 * T, message="count after a disconnect")


def scenario_members(ac: ApiCluster, api: HttpApi, via: str) -> None:
    a, b, c = ac.ws(OPEN0), ac.ws(OPEN1), ac.ws(OPEN0)
    room = fresh_room("members")
    assert api.call("members", {"room": room}) == {"members": []}
    api.join([a.id, b.id], room)
    result = api.call("members", {"room": room})
    assert sorted(result["members"]) == sorted([a.id, b.id])
    assert len(result["members"]) == 2
    assert api.call("members", {"room": c.id}) == {"members": [c.id]}
    assert ac.other(via).members(room) == sorted([a.id, b.id])


def scenario_rooms(ac: ApiCluster, api: HttpApi, via: str) -> None:
    a, b = ac.ws(OPEN0), ac.ws(OPEN1)
    r1, r2 = fresh_room("rooms"), fresh_room("rooms")
    assert api.call("rooms", {"socket": b.id}) == {"rooms": [b.id]}
    api.join(b.id, [r1, r2])
    assert sorted(api.call("rooms", {"socket": b.id})["rooms"]) == sorted([b.id, r1, r2])
    assert sorted(ac.other(via).rooms(b.id)) == sorted([b.id, r1, r2])
    assert api.call("rooms", {"socket": a.id}) == {"rooms": [a.id]}


# Presence (issue 8): identities set through the API (these gateways take no tokens).


def presence_event(room: str, joined: Iterable[tuple[str, Any]] = (),
                   left: Iterable[str] = ()) -> Event:  # fmt: skip
    """The router's coalesced presence event (router/presence.py), users sorted."""
    return Event(
        "presence",
        {
            "room": room,
            "joined": [{"user": u, "meta": m} for u, m in sorted(joined)],
            "left": sorted(left),
        },
    )


def scenario_presence(ac: ApiCluster, api: HttpApi, via: str) -> None:
    tab1, tab2, bob, anon = ac.ws(OPEN0), ac.ws(OPEN1), ac.ws(OPEN1), ac.ws(OPEN0)
    room, empty = fresh_room("pres"), fresh_room("pres")
    assert api.call("presence", {"room": empty}) == {"presence": {}}
    api.join([tab1.id, tab2.id, bob.id, anon.id], room)
    assert api.call("presence", {"room": room}) == {"presence": {}}  # nobody identified yet
    api.call("set_presence", {"socket": tab1.id, "user": "ada", "meta": {"tab": 1}})
    api.call("set_presence", {"socket": tab2.id, "user": "ada", "meta": {"tab": 1}})
    api.call("set_presence", {"socket": bob.id, "user": "bob"})
    expected: dict[str, dict[str, Any]] = {
        "ada": {"connections": 2, "meta": {"tab": 1}},  # two tabs, two gateways: one user
        "bob": {"connections": 1, "meta": None},
    }
    assert api.call("presence", {"room": room}) == {"presence": expected}
    assert ac.other(via).call("presence", {"room": room}) == {"presence": expected}
    # A socket's own id room has its presence too.
    assert api.call("presence", {"room": bob.id}) == {"presence": {"bob": expected["bob"]}}
    tab2.close()  # a disconnect leaves the room cluster-wide: ada is still there, once
    expected["ada"]["connections"] = 1
    deadline_poll(
        lambda: api.call("presence", {"room": room}) == {"presence": expected},
        10 * T,
        message="presence after a tab closed",
    )
    api.refused("presence", {"room": ""}, 400, "invalid_room")
    api.refused(
        "presence", {}, 400, "bad_request", "missing fields: room; presence takes room (required)"
    )


def scenario_presence_stats(ac: ApiCluster, api: HttpApi, via: str) -> None:
    ada1, ada2, bob, anon = ac.ws(OPEN0), ac.ws(OPEN1), ac.ws(OPEN0), ac.ws(OPEN1)
    room = fresh_room("stats")
    assert api.call("presence_stats", {"room": room}) == {"connections": 0, "users": 0}
    api.join([ada1.id, ada2.id, bob.id, anon.id], room)
    assert api.call("presence_stats", {"room": room}) == {"connections": 4, "users": 0}
    for sock, user in ((ada1, "ada"), (ada2, "ada"), (bob, "bob")):
        api.call("set_presence", {"socket": sock.id, "user": user})
    stats = {"connections": 4, "users": 2}  # the anonymous socket is a connection, no user
    assert api.call("presence_stats", {"room": room}) == stats
    assert ac.other(via).call("presence_stats", {"room": room}) == stats
    api.call("leave", {"sockets": bob.id, "rooms": room})
    assert api.call("presence_stats", {"room": room}) == {"connections": 3, "users": 1}
    api.refused("presence_stats", {"room": "x" * 300}, 400, "invalid_room")


def scenario_set_presence(ac: ApiCluster, api: HttpApi, via: str) -> None:
    sock, other = ac.ws(OPEN1), ac.ws(OPEN0)
    room = fresh_room("setp")
    api.join([sock.id, other.id], room)

    def presence() -> Any:
        return api.call("presence", {"room": room})["presence"]

    meta = {"name": "Ada Lovelace", "émoji": "✓", "tabs": [1, 2]}
    assert api.call("set_presence", {"socket": sock.id, "user": "ada", "meta": meta}) == {}
    assert presence() == {"ada": {"connections": 1, "meta": meta}}
    # A new identity replaces the old one (ada is gone), metadata defaults to null.
    assert api.call("set_presence", {"socket": sock.id, "user": "bob"}) == {}
    assert presence() == {"bob": {"connections": 1, "meta": None}}
    assert ac.other(via).call("set_presence", {"socket": other.id, "user": "bob"}) == {}
    assert presence() == {"bob": {"connections": 2, "meta": None}}
    # null clears it: the socket stays in the room, anonymous.
    assert api.call("set_presence", {"socket": sock.id, "user": None}) == {}
    assert presence() == {"bob": {"connections": 1, "meta": None}}
    assert api.call("presence_stats", {"room": room}) == {"connections": 2, "users": 1}
    api.refused("set_presence", {"socket": "no-such-socket", "user": "ada"}, 404,
                "no_such_socket")  # fmt: skip
    for bad in ({"socket": sock.id, "user": ""}, {"socket": sock.id, "user": 5},
                {"socket": "", "user": "ada"}, {"socket": [sock.id], "user": "ada"}):  # fmt: skip
        api.refused("set_presence", bad, 400, "bad_request")
    api.refused(
        "set_presence",
        {"socket": sock.id},
        400,
        "bad_request",
        "missing fields: user; set_presence takes socket (required), user (required), meta",
    )
    assert presence() == {"bob": {"connections": 1, "meta": None}}


def scenario_track_presence(ac: ApiCluster, api: HttpApi, via: str) -> None:
    """This router tracks no room by pattern: only rooms flagged through the API push events.
    "Nothing pushed" is checked with a sentinel: a transition in another tracked room, whose
    event comes after any earlier one (one router stream, events in transition order)."""
    watcher, ada, bob = ac.ws(OPEN0), ac.ws(OPEN1), ac.ws(OPEN0)
    room, sentinel = fresh_room("track"), fresh_room("sentinel")
    api.call("set_presence", {"socket": ada.id, "user": "ada", "meta": {"v": 1}})
    api.call("set_presence", {"socket": bob.id, "user": "bob"})
    assert api.call("track_presence", {"room": sentinel}) == {}
    api.join(watcher.id, [room, sentinel])

    def no_presence_event_before_sentinel() -> None:
        probe = ac.ws(OPEN1)
        user = "sentinel-" + uuid.uuid4().hex[:8]
        api.call("set_presence", {"socket": probe.id, "user": user})
        api.join(probe.id, sentinel)
        assert watcher.next_event() == presence_event(sentinel, joined=[(user, None)])
        api.call("leave", {"sockets": probe.id, "rooms": sentinel})
        assert watcher.next_event() == presence_event(sentinel, left=[user])

    api.join(ada.id, room)  # not tracked: no event
    no_presence_event_before_sentinel()
    assert api.call("track_presence", {"room": room, "enabled": True}) == {}
    api.join(bob.id, room)
    joined_bob = presence_event(room, joined=[("bob", None)])  # to every member, bob too
    assert [watcher.next_event(), ada.next_event(), bob.next_event()] == [joined_bob] * 3
    api.call("leave", {"sockets": ada.id, "rooms": room})
    assert watcher.next_event() == presence_event(room, left=["ada"])
    assert bob.next_event() == presence_event(room, left=["ada"])
    api.join(ada.id, room)
    joined_ada = presence_event(room, joined=[("ada", {"v": 1})])  # with its metadata
    assert [watcher.next_event(), bob.next_event(), ada.next_event()] == [joined_ada] * 3
    # enabled false stops the events.
    assert ac.other(via).call("track_presence", {"room": room, "enabled": False}) == {}
    api.call("leave", {"sockets": [ada.id, bob.id], "rooms": room})
    no_presence_event_before_sentinel()
    api.refused("track_presence", {"room": room, "enabled": "no"}, 400, "bad_request")
    api.refused("track_presence", {"room": ""}, 400, "invalid_room")
    api.marker(watcher, ada, bob)


# Resourceful PubSub: room names and payloads are Sails v1's, written out here literally.


def model_identity() -> str:
    return "m" + uuid.uuid4().hex[:10]


def record_room(model: str, record_id: Any) -> str:
    return f"sails_model_{model}_{record_id}:{model}"


def scenario_publish(ac: ApiCluster, api: HttpApi, via: str) -> None:
    m = model_identity()
    sub1, sub2, both, other = ac.ws(OPEN0), ac.ws(OPEN1), ac.ws(OPEN1), ac.ws(OPEN0)
    api.join(sub1.id, record_room(m, 1))
    api.join(sub2.id, [record_room(m, 2), record_room(m, "x")])
    api.join(both.id, [record_room(m, 1), record_room(m, 2)])
    assert api.call("publish", {"model": m, "ids": [1, 2], "data": {"hello": "world"}}) == {}
    for client in (sub1, sub2, both):  # no envelope; once per socket
        assert client.next_event() == Event(m, {"hello": "world"})
    # One id, a string id, an identity in capitals (Sails lower-cases it), omit.
    assert api.call("publish", {"model": m.upper(), "ids": "x", "data": [1]}) == {}
    assert sub2.next_event() == Event(m, [1])
    assert api.call("publish", {"model": m, "ids": 1, "data": "hi", "omit": sub1.id}) == {}
    assert both.next_event() == Event(m, "hi")
    assert api.call("publish", {"model": m, "ids": [], "data": "nobody"}) == {}
    api.marker(sub1, sub2, both, other)


def scenario_publish_create(ac: ApiCluster, api: HttpApi, via: str) -> None:
    m = model_identity()
    watcher, omitted, other = ac.ws(OPEN0), ac.ws(OPEN1), ac.ws(OPEN1)
    api.join([watcher.id, omitted.id], f"sails_model_create_{m}")
    record = {"id": 7, "name": "Ann", "tags": ["a"]}
    body = {"model": m, "record": record, "omit": omitted.id}
    assert api.call("publish_create", body) == {}
    assert watcher.next_event() == Event(m, {"verb": "created", "data": record, "id": 7})
    # The watchers are subscribed to the new record by the time of the 200.
    assert record_room(m, 7) in api.rooms(watcher.id)
    assert api.call("publish_update", {"model": m, "id": 7, "changes": {"name": "Bo"}}) == {}
    updated = Event(m, {"verb": "updated", "data": {"name": "Bo"}, "id": 7})
    assert watcher.next_event() == updated
    assert omitted.next_event() == updated  # omitted from the notification, still a watcher
    api.marker(watcher, omitted, other)
    # A string primary key works the same.
    assert api.call("publish_create", {"model": m, "record": {"id": "k", "n": 1}}) == {}
    created = Event(m, {"verb": "created", "data": {"id": "k", "n": 1}, "id": "k"})
    assert watcher.next_event() == created
    assert omitted.next_event() == created
    # The record must carry its primary key.
    api.refused("publish_create", {"model": m, "record": {"name": "x"}}, 400, "bad_request",
                "record needs its primary key 'id'")  # fmt: skip


def scenario_publish_update(ac: ApiCluster, api: HttpApi, via: str) -> None:
    m = model_identity()
    sub, requester = ac.ws(OPEN1), ac.ws(OPEN0)
    api.join([sub.id, requester.id], record_room(m, 7))
    body = {"model": m, "id": 7, "changes": {"name": "Bo"}, "omit": requester.id}
    assert api.call("publish_update", body) == {}
    assert sub.next_event() == Event(m, {"verb": "updated", "data": {"name": "Bo"}, "id": 7})
    body = {"model": m, "id": "7", "changes": {"age": 3}, "previous": {"name": "Bo", "age": 2}}
    assert api.call("publish_update", body) == {}
    expected = {"verb": "updated", "data": {"age": 3}, "id": "7",
                "previous": {"name": "Bo", "age": 2}}  # fmt: skip
    assert sub.next_event() == Event(m, expected)
    assert requester.next_event() == Event(m, expected)
    api.marker(sub, requester)


def scenario_publish_destroy(ac: ApiCluster, api: HttpApi, via: str) -> None:
    m = model_identity()
    a, b = ac.ws(OPEN0), ac.ws(OPEN1)
    api.join([a.id, b.id], [record_room(m, 7), record_room(m, 8)])
    body = {"model": m, "id": 7, "previous": {"id": 7, "name": "Bo"}}
    assert api.call("publish_destroy", body) == {}
    expected = {"verb": "destroyed", "id": 7, "previous": {"id": 7, "name": "Bo"}}
    assert a.next_event() == Event(m, expected)
    assert b.next_event() == Event(m, expected)
    # The record's room is empty once the 200 came: no more messages for a gone record.
    assert api.count(record_room(m, 7)) == 0
    assert api.count(record_room(m, 8)) == 2
    assert api.call("publish_destroy", {"model": m, "id": 8, "omit": b.id}) == {}
    assert a.next_event() == Event(m, {"verb": "destroyed", "id": 8})
    api.call("publish", {"model": m, "ids": [7, 8], "data": "too late"})
    api.marker(a, b)


def scenario_publish_add(ac: ApiCluster, api: HttpApi, via: str) -> None:
    m = model_identity()
    a, b = ac.ws(OPEN0), ac.ws(OPEN1)
    api.join([a.id, b.id], record_room(m, 7))
    body = {"model": m, "id": 7, "attribute": "pets", "added_id": 3}
    assert api.call("publish_add", body) == {}
    expected = {"id": 7, "verb": "addedTo", "attribute": "pets", "addedId": 3}
    assert a.next_event() == Event(m, expected)
    assert b.next_event() == Event(m, expected)
    body = {"model": m, "id": 7, "attribute": "pets", "added_id": "c4", "omit": a.id}
    assert api.call("publish_add", body) == {}
    expected = {"id": 7, "verb": "addedTo", "attribute": "pets", "addedId": "c4"}
    assert b.next_event() == Event(m, expected)
    api.marker(a, b)


def scenario_publish_remove(ac: ApiCluster, api: HttpApi, via: str) -> None:
    m = model_identity()
    a, b = ac.ws(OPEN0), ac.ws(OPEN1)
    api.join([a.id, b.id], record_room(m, "u1"))
    body = {"model": m, "id": "u1", "attribute": "friends", "removed_id": 9}
    assert api.call("publish_remove", body) == {}
    expected = {"id": "u1", "verb": "removedFrom", "attribute": "friends", "removedId": 9}
    assert a.next_event() == Event(m, expected)
    assert b.next_event() == Event(m, expected)
    body = {"model": m, "id": "u1", "attribute": "friends", "removed_id": 10, "omit": b.id}
    assert api.call("publish_remove", body) == {}
    expected = {"id": "u1", "verb": "removedFrom", "attribute": "friends", "removedId": 10}
    assert a.next_event() == Event(m, expected)
    api.marker(a, b)


Scenario = Callable[[ApiCluster, HttpApi, str], None]
SCENARIOS: dict[str, Scenario] = {
    name.removeprefix("scenario_"): fn
    for name, fn in list(globals().items())
    if name.startswith("scenario_") and callable(fn)
}


@pytest.mark.parametrize("via", ["secured", "open"])
@pytest.mark.parametrize("operation", sorted(SCENARIOS))
def test_operation(ac: ApiCluster, operation: str, via: str) -> None:
    api = ac.api(via)
    before = metric_counts(ac.cluster.metrics(SECURED if via == "secured" else OPEN0))
    SCENARIOS[operation](ac, api, via)
    after = metric_counts(ac.cluster.metrics(SECURED if via == "secured" else OPEN0))
    assert (api.sent[(operation, "200")]) > 0
    assert after - before == api.sent, "roomcast_gateway_api_requests_total counts every call"


# ------------------------------------------------------------------------------ curl


def test_readme_curl_line_reaches_a_socket_in_lobby(ac: ApiCluster, tmp_path: pathlib.Path) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl is required for this test (it runs the README's line)"
    internal = urllib.parse.urlsplit(ac.cluster.gateways[SECURED].internal)
    assert internal.hostname == "127.0.0.1"
    lobby, elsewhere = ac.ws(OPEN1), ac.ws(OPEN0)
    ac.api("secured").join(lobby.id, "lobby")
    line = README_CURL.replace("PORT", str(internal.port)).replace("KEY", FILE_KEY)
    # No proxy variables (curl would send 127.0.0.1 through one) and no ~/.curlrc.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    done = subprocess.run(
        ["sh", "-c", line], capture_output=True, timeout=10 * T, env=env, check=False
    )
    assert done.returncode == 0, done
    assert json.loads(done.stdout) == {"gateways": 1}, done
    assert lobby.next_event() == Event("message", {"text": "hello from curl"})
    ac.api("secured").marker(elsewhere)
    ac.api("secured").call("leave", {"sockets": lobby.id, "rooms": "lobby"})


# ------------------------------------------------------------------------------ keys


def test_every_configured_key_is_accepted_and_nothing_else(ac: ApiCluster) -> None:
    """Keys from --api-key-file (comments and blank lines skipped, spaces trimmed) and from
    ROOMCAST_API_KEYS (comma-separated, trimmed); the scheme is case-insensitive."""
    client = ac.ws(OPEN0)
    room = fresh_room("keys")
    api = ac.api("secured")
    api.join(client.id, room)
    for n, auth in enumerate(
        [f"Bearer {FILE_KEY}", f"Bearer {ENV_KEYS[0]}", f"Bearer {ENV_KEYS[1]}",
         f"bearer {FILE_KEY}", f"BEARER  {ENV_KEYS[0]} "]
    ):  # fmt: skip
        assert api.call("broadcast", {"rooms": room, "data": n}, auth=auth) == {"gateways": 1}
        assert client.next_event() == Event("message", n)
    for auth in [f"Bearer {ENV_KEYS[0]},{ENV_KEYS[1]}", f"Bearer {COMMENT}",
                 f"Token {FILE_KEY}", FILE_KEY, "Bearer"]:  # fmt: skip
        api.refused("broadcast", {"rooms": room, "data": "no"}, 401, "unauthorized", auth=auth)
    api.marker(client)


def test_open_development_gateway_ignores_authorization(ac: ApiCluster) -> None:
    """Without keys in development the API is open: any or no Authorization header."""
    api = ac.api("open")
    room = fresh_room()
    for auth in (None, "Bearer whatever", "Basic dXNlcjpwYXNz"):
        assert api.call("count", {"room": room}, auth=auth) == {"count": 0}


# ------------------------------------------------------------------------------ rejections


def test_rejections_have_exact_statuses_no_effect_and_are_counted(ac: ApiCluster) -> None:
    bystander, bystander2, victim = ac.ws(OPEN0), ac.ws(OPEN1), ac.ws(OPEN1)
    room = fresh_room("rej")
    api = ac.api("secured")
    api.join([bystander.id, bystander2.id, victim.id], room)
    before = metric_counts(ac.cluster.metrics(SECURED))
    api.sent.clear()  # from here on, the tally is what the metric must add up to
    hit = {"rooms": room, "event": "leak", "data": "must not arrive"}

    # 401: missing key, wrong key, wrong scheme; checked before anything else.
    anon, wrong = api.with_key(OMIT), api.with_key("not-" + FILE_KEY)
    anon.refused("broadcast", hit, 401, "unauthorized", "missing bearer api key")
    api.refused("broadcast", hit, 401, "unauthorized", "missing bearer api key",
                auth="Basic " + FILE_KEY)  # fmt: skip
    api.refused("broadcast", hit, 401, "unauthorized", "missing bearer api key", auth="Bearer ")
    wrong.refused("broadcast", hit, 401, "unauthorized", "wrong api key")
    api.with_key(FILE_KEY[:-1]).refused("broadcast", hit, 401, "unauthorized", "wrong api key")
    api.with_key(FILE_KEY + "x").refused("broadcast", hit, 401, "unauthorized", "wrong api key")
    api.with_key(FILE_KEY.upper()).refused("broadcast", hit, 401, "unauthorized")
    wrong.refused("leave_all", {"room": room}, 401, "unauthorized")
    anon.refused("no_such_operation", {}, 401, "unauthorized")  # operations are not revealed
    wrong.refused("join", {"sockets": victim.id, "rooms": "x"}, 401, "unauthorized")

    # 404: unknown operation, unknown socket.
    api.refused("no_such_operation", hit, 404, "not_found", "unknown operation 'no_such_operation'")
    api.refused("Broadcast", hit, 404, "not_found")
    api.refused("join", {"sockets": "no-such-socket", "rooms": room}, 404, "no_such_socket",
                "no such socket: no-such-socket")  # fmt: skip
    # All or nothing: one unknown socket in the list, and the known one joins nothing.
    other_room = fresh_room("rej")
    api.refused("join", {"sockets": [victim.id, "ghost"], "rooms": other_room}, 404,
                "no_such_socket")  # fmt: skip
    assert api.count(other_room) == 0
    api.refused("rooms", {"socket": "no-such-socket"}, 404, "no_such_socket")

    # 400: the body.
    for raw in (b'{"rooms": "x",', b"{rooms: 1}", b"\xff\xfe{}", b'{"a": NaN'):
        api.refused("broadcast", raw, 400, "bad_request", "body is not valid json")
    for raw in (b'["' + room.encode() + b'"]', b'"x"', b"null", b"3", b"true"):
        api.refused("broadcast", raw, 400, "bad_request", "body must be a json object")
    takes = "; broadcast takes rooms (required), event, data, omit, receipt, confirm, "
    takes += "confirm_timeout"
    api.refused("broadcast", {**hit, "bogus": 1, "extra": 2}, 400, "bad_request",
                "unknown fields: bogus, extra" + takes)  # fmt: skip
    api.refused("broadcast", {"event": "leak", "data": 1}, 400, "bad_request",
                "missing fields: rooms" + takes)  # fmt: skip
    api.refused("join", {}, 400, "bad_request",
                "missing fields: sockets, rooms; "
                "join takes sockets (required), rooms (required)")  # fmt: skip
    api.refused("broadcast", b"", 400, "bad_request", "missing fields: rooms" + takes)
    api.refused("publish", {"model": "m", "ids": 1}, 400, "bad_request",
                "missing fields: data; publish takes model (required), ids (required), "
                "data (required), omit")  # fmt: skip
    # The field meant, not only the one refused (a Sails habit: `data` for `changes`).
    api.refused("publish_update", {"model": "m", "id": 1, "data": {}}, 400, "bad_request",
                "unknown fields: data (did you mean changes?); missing fields: changes; "
                "publish_update takes model (required), id (required), changes (required), "
                "previous, omit")  # fmt: skip
    api.refused("broadcast", {"rooms": [], "data": 1}, 400, "bad_request")
    api.refused("broadcast", {"rooms": room, "event": 5}, 400, "bad_request")
    api.refused("join", {"sockets": 5, "rooms": room}, 400, "bad_request")
    for bad_id in (True, 1.5, {"a": 1}, None):
        api.refused("publish_update", {"model": "m", "id": bad_id, "changes": {}}, 400,
                    "bad_request")  # fmt: skip
    api.refused("publish_add", {"model": "m", "id": 1, "attribute": "", "added_id": 2}, 400,
                "bad_request")  # fmt: skip
    api.refused("publish", {"model": "", "ids": 1, "data": 1}, 400, "bad_request")
    # 400 invalid_room: control characters, empty, too long (over 256 UTF-8 bytes), not a string.
    for bad in ("bad\x00room", "line\nbreak", "", "é" * 129):
        api.refused("broadcast", {**hit, "rooms": bad}, 400, "invalid_room")
        api.refused("join", {"sockets": victim.id, "rooms": [room, bad]}, 400, "invalid_room")
    api.refused("broadcast", {**hit, "rooms": [room, 5]}, 400, "invalid_room")
    api.refused("broadcast", {**hit, "rooms": 5}, 400, "bad_request")  # neither name nor list
    api.refused("count", {"room": "a\x7fb"}, 400, "invalid_room")
    api.refused("leave_all", {"room": ""}, 400, "invalid_room")
    assert api.rooms(victim.id) == sorted([victim.id, room])  # no partial join

    # 405: other methods, in the same error format (GET needs no key to be told).
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        api.refused("broadcast", None, 405, "method_not_allowed", method=method)
    anon.refused("broadcast", None, 405, "method_not_allowed", method="GET")

    # 413: over --api-max-body-bytes, whatever the size or framing; the key and the operation
    # are checked first. (Bodies over 4 times the limit: test_huge_body_is_refused_at_once.)
    def sized(n: int, event: str = "leak") -> bytes:
        body = json.dumps({**hit, "event": event, "data": ""}).encode()
        out = json.dumps({**hit, "event": event, "data": "x" * (n - len(body))}).encode()
        assert len(out) == n
        return out

    for size in (BODY_LIMIT + 1, 5 * BODY_LIMIT):
        api.refused("broadcast", sized(size), 413, "payload_too_large",
                    f"payload of {size} bytes exceeds the limit of {BODY_LIMIT} bytes")  # fmt: skip
    over = sized(BODY_LIMIT + 1)
    api.refused("broadcast", iter([over[:100], over[100:]]), 413, "payload_too_large",
                chunked=True)  # fmt: skip
    api.refused("broadcast", iter([b"x" * 1000] * 10), 413, "payload_too_large",
                "payload of 10000 bytes exceeds the limit of 4096 bytes", chunked=True)  # fmt: skip
    anon.refused("broadcast", sized(2 * BODY_LIMIT), 401, "unauthorized")
    api.refused("no_such_operation", sized(2 * BODY_LIMIT), 404, "not_found")

    # 429: past the router's --max-rooms-per-socket, all or nothing.
    rooms = [fresh_room("many") for _ in range(MAX_ROOMS)]
    api.refused("join", {"sockets": victim.id, "rooms": rooms}, 429, "too_many_rooms")
    assert api.rooms(victim.id) == sorted([victim.id, room])

    # Nothing leaked to the room, and everyone there still receives: a body of exactly the
    # limit is accepted.
    at_limit = sized(BODY_LIMIT, "big")
    assert api.call("broadcast", at_limit) == {"gateways": 2}
    for client in (bystander, bystander2, victim):
        assert client.next_event() == Event("big", json.loads(at_limit)["data"]), client
    api.marker(bystander, bystander2, victim)

    after = metric_counts(ac.cluster.metrics(SECURED))
    assert after - before == api.sent, "every answer is counted, by operation and status"
    expected = {
        ("broadcast", "401"): 8, ("leave_all", "401"): 1, ("join", "401"): 1,
        ("unknown", "401"): 1, ("unknown", "404"): 3, ("join", "404"): 2, ("rooms", "404"): 1,
        ("broadcast", "405"): 5, ("broadcast", "413"): 4, ("join", "429"): 1,
    }  # fmt: skip
    for key, n in expected.items():
        assert after[key] - before[key] == n, (key, after[key] - before[key])


def raw_http(api: HttpApi, data: bytes) -> bytes:
    """Send ``data`` as is (as far as the gateway takes it) and read until it closes."""
    received = b""
    with socket.create_connection((api.host, api.port), timeout=10 * T) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway answered and closed before taking it all
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # after its answer: what it sent is in `received`
    return received


@pytest.mark.parametrize("framing", ["declared", "chunked"])
def test_huge_body_is_refused_at_once(ac: ApiCluster, framing: str) -> None:
    """Over 4 times the limit, the 413 comes without the rest of the body being awaited or
    buffered (a 1 GiB Content-Length, or chunks that never end), then the gateway closes; the
    answer is all that comes back (Tornado adds no bare 400 of its own)."""
    api = ac.api("secured")
    before = metric_counts(ac.cluster.metrics(SECURED))
    head = (
        "POST /api/broadcast HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {FILE_KEY}\r\nContent-Type: application/json\r\n"
    )
    if framing == "declared":
        data = f"{head}Content-Length: {1 << 30}\r\n\r\n".encode() + b'{"rooms": "x", "data": "'
    else:
        chunk = b"x" * 1000
        data = f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + b"".join(
            b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(100)
        )
    received = raw_http(api, data)
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large", received[:300]
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in headers.lower(), received[:300]
    length = int(headers.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    assert len(body) == length, received[:300]
    result = json.loads(body)
    check_response(ac.doc, "broadcast", 413, result)
    assert result["error"] == "payload_too_large"
    if framing == "declared":
        assert result["message"] == (
            f"payload of {1 << 30} bytes exceeds the limit of {BODY_LIMIT} bytes"
        )
    after = metric_counts(ac.cluster.metrics(SECURED))
    assert after - before == {("broadcast", "413"): 1}


def test_production_gateway_without_keys_answers_403() -> None:
    """A dedicated cluster (a stopped gateway lingers in its router for a while)."""
    cluster = start_cluster(gateways=1)
    locked = ready_gateway(
        gateway_proc(
            "locked", cluster.router.info, "--env", "production", "--allowed-origin", ORIGIN
        )
    )
    cluster.gateways.append(locked)
    try:
        doc = json.loads(http_get(locked.internal + "/api/openapi.json")[1])
        validate_openapi(doc)
        bystander = cluster.ws(0)
        room = fresh_room("locked")
        open_api = HttpApi(cluster.gateways[0].internal, doc)
        open_api.join(bystander.id, room)
        api = HttpApi(locked.internal, doc)
        message = "the server api is disabled: no api keys are configured"
        hit = {"rooms": room, "data": "must not arrive"}
        api.refused("broadcast", hit, 403, "forbidden", message)
        api.with_key("any-key").refused("broadcast", hit, 403, "forbidden", message)
        api.refused("join", {"sockets": bystander.id, "rooms": "x"}, 403, "forbidden")
        api.refused("no_such_operation", {}, 403, "forbidden")
        counts = metric_counts(Metrics(http_get(locked.internal + "/metrics")[1]))
        assert counts == api.sent == {("broadcast", "403"): 2, ("join", "403"): 1,
                                      ("unknown", "403"): 1}  # fmt: skip
        assert open_api.rooms(bystander.id) == sorted([bystander.id, room])
        open_api.marker(bystander)
    finally:
        cluster.stop()


def test_router_down_answers_503() -> None:
    # Short heartbeats, so the gateway soon says (readyz) the router is gone.
    cluster = start_cluster(
        gateways=1,
        router_args=("--heartbeat-interval", "0.2"),
        gateway_args=("--heartbeat-interval", "0.2", "--router-timeout", "1"),
    )
    try:
        gw = cluster.gateways[0]
        doc = json.loads(http_get(gw.internal + "/api/openapi.json")[1])
        api = HttpApi(gw.internal, doc)
        client = cluster.ws(0)
        room = fresh_room("down")
        api.join(client.id, room)
        assert api.call("broadcast", {"rooms": room, "data": 1}) == {"gateways": 1}
        assert client.next_event() == Event("message", 1)
        cluster.router.stop()
        deadline_poll(
            lambda: http_get(gw.internal + "/readyz")[0] == 503,
            10 * T,
            message="the gateway to notice the router is gone",
        )
        api.refused("broadcast", {"rooms": room, "data": 2}, 503, "router_unavailable")
        api.refused("join", {"sockets": client.id, "rooms": room}, 503, "router_unavailable")
        # Still a 4xx for what the gateway can tell by itself.
        api.refused("count", {"room": ""}, 400, "invalid_room")
        counts = metric_counts(cluster.metrics(0))
        for key in (("broadcast", "503"), ("join", "503"), ("count", "400")):
            assert counts[key] == api.sent[key] == 1, key
        assert gw.proc.alive()
    finally:
        cluster.stop()
