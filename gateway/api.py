"""The HTTP server API on each gateway's internal port: ``POST /api/<operation>``.

For backends not written in Python: each operation of :mod:`gateway.api_spec` maps a JSON body
onto the same SDK call a Python backend makes (through a :class:`roomcast.Cluster` owned by this
gateway), so the guarantees are the SDK's: a membership call answers only once the router
applied it. ``Authorization: Bearer <key>`` is checked in constant time against the configured
keys; in production, no keys means the API answers 403. Errors are
``{"error": code, "message": text}`` with 400/401/403/404/405/413/429/503/504.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import tornado.web
from tornado.http1connection import HTTP1Connection

from gateway.api_spec import OPERATIONS, field_problem, openapi_document
from gateway.metrics import GatewayMetrics
from roomcast.cluster import Cluster, Receipt
from roomcast.core.errors import (
    BadRequest,
    Forbidden,
    InternalError,
    NotFound,
    PayloadTooLarge,
    RoomcastError,
)

__all__ = ["Api", "ApiHandler", "OpenApiHandler"]

log = logging.getLogger("roomcast.gateway.api")

_NO_TORNADO_CAP = 1 << 62  # bytes; ApiHandler enforces Api.max_body_bytes itself
# An oversize body up to this many times the limit is read (and dropped) before the 413.
_DRAIN_FACTOR = 4
_Run = Callable[[Cluster, dict[str, Any]], Awaitable[dict[str, Any]]]


class Unauthorized(RoomcastError):
    status, code = 401, "unauthorized"


def _model(cluster: Cluster, body: dict[str, Any]) -> Any:
    try:
        return cluster.model(body["model"])
    except (ValueError, TypeError, AttributeError):
        raise BadRequest("model must be a non-empty string") from None


def _id(value: Any, name: str) -> Any:
    # Record ids end up in room names: a JSON true or 1.5 would make "True" or "1.5" rooms.
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise BadRequest(f"{name} must be a string or an integer")


def _ids(value: Any) -> Any:
    if isinstance(value, list):
        return [_id(v, "ids") for v in value]
    return _id(value, "ids")


def _attribute(body: dict[str, Any]) -> str:
    value = body["attribute"]
    if not isinstance(value, str) or not value:
        raise BadRequest("attribute must be a non-empty string")
    return value


def _object(body: dict[str, Any], name: str, *, required: bool = False) -> Any:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, dict):
        raise BadRequest(f"{name} must be an object")
    return value


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be a boolean")
    return value


def _receipt_args(b: dict[str, Any]) -> dict[str, Any]:
    """The SDK's receipt arguments from a broadcast/blast body ({} when none is asked for)."""
    receipt, confirm = _flag(b, "receipt", False), _flag(b, "confirm", False)
    timeout = b.get("confirm_timeout", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 60:
        raise BadRequest("confirm_timeout must be a number of seconds within (0, 60]")
    if not (receipt or confirm):
        return {}
    return {"receipt": True, "confirm": confirm, "confirm_timeout": float(timeout)}


def _published(result: int | Receipt) -> dict[str, Any]:
    if isinstance(result, int):
        return {"gateways": result}
    out: dict[str, Any] = {
        "gateways": result.gateways,
        "sockets": result.sockets,
        "omitted": result.omitted,
    }
    if result.confirmed is not None:
        out |= {"confirmed": result.confirmed, "complete": bool(result.complete)}
    return out


def _event(b: dict[str, Any]) -> str:
    """The body's named event: a string, never data (the SDK's Sails-style shapes, where a
    non-string second argument is the data, have no place in a JSON body with named fields)."""
    event = b.get("event", "message")
    if not isinstance(event, str):
        raise BadRequest("event must be a string")
    return event


async def _broadcast(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    event, more = _event(b), _receipt_args(b)
    result = await c.sockets.broadcast(b["rooms"], event, b.get("data"), omit=b.get("omit"), **more)
    return _published(result)


async def _blast(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    event, more = _event(b), _receipt_args(b)
    result = await c.sockets.blast(event, b.get("data"), omit=b.get("omit"), **more)
    return _published(result)


async def _join(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    await c.sockets.join(b["sockets"], b["rooms"])
    return {}


async def _leave(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    await c.sockets.leave(b["sockets"], b["rooms"])
    return {}


async def _leave_all(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    await c.sockets.leave_all(b["room"])
    return {}


async def _add_members(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    await c.sockets.add_room_members_to_rooms(b["source"], b["rooms"])
    return {}


async def _remove_members(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    await c.sockets.remove_room_members_from_rooms(b["source"], b["rooms"])
    return {}


async def _count(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    return {"count": await c.sockets.count(b["room"])}


async def _members(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    return {"members": await c.sockets.members(b["room"])}


async def _rooms(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    return {"rooms": await c.sockets.rooms(b["socket"])}


async def _presence(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    return {"presence": await c.sockets.presence(b["room"])}


async def _presence_stats(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    stats = await c.sockets.presence_stats(b["room"])
    return {"connections": stats["connections"], "users": stats["users"]}


async def _set_presence(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    socket, user = b["socket"], b["user"]
    if not isinstance(socket, str) or not socket:
        raise BadRequest("socket must be a non-empty string")
    await c.sockets.set_presence(socket, user, b.get("meta"))
    return {}


async def _track_presence(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    await c.sockets.track_presence(b["room"], _flag(b, "enabled", True))
    return {}


async def _publish(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    await _model(c, b).publish(_ids(b["ids"]), b["data"], b.get("omit"))
    return {}


async def _publish_create(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    model = _model(c, b)
    record = _object(b, "record", required=True)
    if model.primary_key not in record:
        raise BadRequest(f"record needs its primary key {model.primary_key!r}")
    await model.publish_create(record, b.get("omit"))
    return {}


async def _publish_update(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    changes = _object(b, "changes", required=True)
    previous = _object(b, "previous")
    record_id = _id(b["id"], "id")
    await _model(c, b).publish_update(record_id, changes, b.get("omit"), previous=previous)
    return {}


async def _publish_destroy(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    previous = _object(b, "previous")
    await _model(c, b).publish_destroy(_id(b["id"], "id"), b.get("omit"), previous=previous)
    return {}


async def _publish_add(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    record_id, attribute = _id(b["id"], "id"), _attribute(b)
    added = _id(b["added_id"], "added_id")
    await _model(c, b).publish_add(record_id, attribute, added, b.get("omit"))
    return {}


async def _publish_remove(c: Cluster, b: dict[str, Any]) -> dict[str, Any]:
    record_id, attribute = _id(b["id"], "id"), _attribute(b)
    removed = _id(b["removed_id"], "removed_id")
    await _model(c, b).publish_remove(record_id, attribute, removed, b.get("omit"))
    return {}


_RUN: dict[str, _Run] = {
    "broadcast": _broadcast,
    "blast": _blast,
    "join": _join,
    "leave": _leave,
    "leave_all": _leave_all,
    "add_room_members_to_rooms": _add_members,
    "remove_room_members_from_rooms": _remove_members,
    "count": _count,
    "members": _members,
    "rooms": _rooms,
    "presence": _presence,
    "presence_stats": _presence_stats,
    "set_presence": _set_presence,
    "track_presence": _track_presence,
    "publish": _publish,
    "publish_create": _publish_create,
    "publish_update": _publish_update,
    "publish_destroy": _publish_destroy,
    "publish_add": _publish_add,
    "publish_remove": _publish_remove,
}
assert _RUN.keys() == OPERATIONS.keys(), "every documented operation has an implementation"


class Api:
    """What the handlers share: the gateway's SDK client, the keys, the limits, the metrics."""

    def __init__(
        self,
        router: str,
        keys: tuple[str, ...],
        *,
        development: bool,
        max_body_bytes: int,
        metrics: GatewayMetrics,
        version: str,
        curve_key: str = "",
        curve_server_key: str = "",
    ) -> None:
        # No local publish bound: the router's --max-publish-bytes answers 413 for every path.
        self.cluster = Cluster(
            router, curve_key=curve_key, curve_server_key=curve_server_key, max_publish_bytes=0
        )
        self._keys = tuple(k.encode() for k in keys if k)
        self.development = development
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.document = json.dumps(openapi_document(version)).encode()

    def authorize(self, header: str | None) -> None:
        if not self._keys:
            if self.development:
                return
            raise Forbidden("the server api is disabled: no api keys are configured")
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing bearer api key")
        given = token.strip().encode()
        # Compare with every key, always: the time taken says nothing about which one matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(given, key)
        if not matched:
            raise Unauthorized("wrong api key")

    async def run(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        problem = field_problem(name, list(body))
        if problem:
            raise BadRequest(problem)
        return await _RUN[name](self.cluster, body)

    async def close(self) -> None:
        await self.cluster.close()


@tornado.web.stream_request_body
class ApiHandler(tornado.web.RequestHandler):
    """``POST /api/<operation>``.

    The body is streamed in, so that one over ``max_body_bytes`` gets a 413 in our error format
    whatever its size or framing, without being buffered (Tornado's own cap would answer a bare
    400). Up to ``_DRAIN_FACTOR`` times the limit it is read and dropped, and the 413 comes at
    its end, as a client that sends the whole body before reading expects; past that the 413 is
    sent at once and Tornado closes the connection without reading the rest.
    """

    def initialize(self, api: Api) -> None:
        self.api = api
        self._chunks: list[bytes] = []
        self._received = 0
        self._oversize = 0  # the size of a body over the limit (declared or seen so far)

    def prepare(self) -> None:
        if self.request.method != "POST":
            return
        connection = self.request.connection
        if isinstance(connection, HTTP1Connection):
            # Our limits, not Tornado's: the body reaches data_received in pieces of at most
            # Tornado's chunk size, and is dropped or refused there.
            connection.set_max_body_size(_NO_TORNADO_CAP)
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.api.max_body_bytes:
            self._oversize = int(declared)
            if self._oversize > _DRAIN_FACTOR * self.api.max_body_bytes:
                self._refuse_now()

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        self._received += len(chunk)
        if self._received <= self.api.max_body_bytes:
            self._chunks.append(chunk)
            return
        self._chunks.clear()
        self._oversize = max(self._oversize, self._received)
        if self._received > _DRAIN_FACTOR * self.api.max_body_bytes:
            self._refuse_now()

    async def post(self, name: str) -> None:
        if self._finished:
            return
        try:
            self._check(name)
            if self._oversize:
                raise PayloadTooLarge(size=self._oversize, limit=self.api.max_body_bytes)
            body = self._body()
            result = await self.api.run(name, body)
        except RoomcastError as err:
            self._answer(err.status, err.as_body())
            return
        except Exception:
            log.exception("api %s failed", self._label())
            self._answer(500, InternalError("internal error").as_body())
            return
        self._answer(200, result)

    def get(self, name: str) -> None:
        self.set_header("Allow", "POST")
        body = {"error": "method_not_allowed", "message": "use POST with a JSON body"}
        self._answer(405, body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Tornado's own refusals (a method other than GET or POST) in our error format too.
        if status_code == 405:
            self.set_header("Allow", "POST")
            body = {"error": "method_not_allowed", "message": "use POST with a JSON body"}
        else:
            body = {"error": "http_error", "message": self._reason.lower()}
        self._answer(status_code, body)

    def _check(self, name: str) -> None:
        self.api.authorize(self.request.headers.get("Authorization"))
        if name not in OPERATIONS:
            raise NotFound(f"unknown operation {name[:64]!r}")

    def _refuse_now(self) -> None:
        # Before the body's end; a missing key or an unknown operation still answer first.
        try:
            self._check(self.path_args[0])
            raise PayloadTooLarge(size=self._oversize, limit=self.api.max_body_bytes)
        except RoomcastError as err:
            self._answer(err.status, err.as_body())

    def _body(self) -> dict[str, Any]:
        raw = b"".join(self._chunks)
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, RecursionError):
            raise BadRequest("body is not valid json") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a json object")
        return body

    def _label(self) -> str:
        name = self.request.path.rpartition("/")[2]
        return name if name in OPERATIONS else "unknown"

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        self.api.metrics.api_requests.labels(self._label(), str(status)).inc()
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body, separators=(",", ":")))


class OpenApiHandler(tornado.web.RequestHandler):
    def initialize(self, api: Api) -> None:
        self.api = api

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(self.api.document)
