"""The HTTP server API's operations and their OpenAPI 3 document (pure).

One table (:data:`OPERATIONS`) describes every ``POST /api/<operation>``: its request body
schema, its response schema, and how the body maps onto the SDK call. The Tornado shell
(:mod:`gateway.api`) executes them and :func:`openapi_document` publishes the same table, so the
document cannot drift from the implementation.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

__all__ = ["OPERATIONS", "Operation", "field_problem", "openapi_document"]

_ROOM: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "description": "room name: 1-256 UTF-8 bytes, no control characters",
}
_ROOMS: dict[str, Any] = {
    "oneOf": [_ROOM, {"type": "array", "items": _ROOM, "minItems": 1}],
    "description": "a room or a list of rooms",
}
_SOCKET: dict[str, Any] = {"type": "string", "minLength": 1, "description": "a socket id"}
_SOCKETS: dict[str, Any] = {
    "oneOf": [_SOCKET, {"type": "array", "items": _SOCKET}],
    "description": "a socket id or a list of socket ids",
}
_EVENT: dict[str, Any] = {"type": "string", "minLength": 1, "default": "message"}
_DATA: dict[str, Any] = {"description": "any JSON value, delivered as is"}
_MODEL: dict[str, Any] = {"type": "string", "minLength": 1, "description": "model identity"}
_ID: dict[str, Any] = {
    "oneOf": [{"type": "string"}, {"type": "integer"}],
    "description": "record id",
}
_EMPTY: dict[str, Any] = {"type": "object", "additionalProperties": False}


def _obj(required: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:  # OpenAPI 3.0 (JSON Schema draft 4): "required" must not be an empty list
        schema["required"] = required
    return schema


@dataclasses.dataclass(frozen=True, slots=True)
class Operation:
    name: str
    summary: str
    body: dict[str, Any]
    result: dict[str, Any]


_COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
# Publish receipts: asked for with these fields of broadcast and blast, answered in the result.
_RECEIPT_FIELDS: dict[str, dict[str, Any]] = {
    "receipt": {
        "type": "boolean",
        "default": False,
        "description": "answer with exact socket counts (sockets, omitted)",
    },
    "confirm": {
        "type": "boolean",
        "default": False,
        "description": "answer once every gateway confirmed it queued the message (or at "
        "confirm_timeout): adds confirmed and complete; implies receipt",
    },
    "confirm_timeout": {
        "type": "number",
        "exclusiveMinimum": True,
        "minimum": 0,
        "maximum": 60,
        "default": 5,
        "description": "seconds to wait for the confirmations",
    },
}
_PUBLISHED: dict[str, Any] = _obj(
    ["gateways"],
    gateways={**_COUNT, "description": "gateways the router handed the message to"},
    sockets={**_COUNT, "description": "sockets addressed, each once (with receipt)"},
    omitted={**_COUNT, "description": "members left out by omit (with receipt)"},
    confirmed={**_COUNT, "description": "sockets the gateways queued it for (with confirm)"},
    complete={
        "type": "boolean",
        "description": "every gateway confirmed within confirm_timeout (with confirm)",
    },
)
_META: dict[str, Any] = {"description": "the user's presence metadata (any JSON value), or null"}

OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation(
            "broadcast",
            "Send an event once to every member of any of the rooms (except omit).",
            _obj(
                ["rooms"], rooms=_ROOMS, event=_EVENT, data=_DATA, omit=_SOCKETS, **_RECEIPT_FIELDS
            ),
            _PUBLISHED,
        ),
        Operation(
            "blast",
            "Send an event to every connected socket in the cluster (except omit).",
            _obj([], event=_EVENT, data=_DATA, omit=_SOCKETS, **_RECEIPT_FIELDS),
            _PUBLISHED,
        ),
        Operation(
            "join",
            "Sockets join rooms; answers once the router applied it.",
            _obj(["sockets", "rooms"], sockets=_SOCKETS, rooms=_ROOMS),
            _EMPTY,
        ),
        Operation(
            "leave",
            "Sockets leave rooms; answers once the router applied it.",
            _obj(["sockets", "rooms"], sockets=_SOCKETS, rooms=_ROOMS),
            _EMPTY,
        ),
        Operation(
            "leave_all",
            "Every member of the room leaves every room but its own id room.",
            _obj(["room"], room=_ROOM),
            _EMPTY,
        ),
        Operation(
            "add_room_members_to_rooms",
            "Every current member of source (a room or socket id) joins each of rooms.",
            _obj(["source", "rooms"], source=_ROOM, rooms=_ROOMS),
            _EMPTY,
        ),
        Operation(
            "remove_room_members_from_rooms",
            "Every current member of source leaves each of rooms.",
            _obj(["source", "rooms"], source=_ROOM, rooms=_ROOMS),
            _EMPTY,
        ),
        Operation(
            "count",
            "How many sockets are in the room, cluster-wide.",
            _obj(["room"], room=_ROOM),
            _obj(["count"], count={"type": "integer", "minimum": 0}),
        ),
        Operation(
            "members",
            "The socket ids in the room, cluster-wide.",
            _obj(["room"], room=_ROOM),
            _obj(["members"], members={"type": "array", "items": _SOCKET}),
        ),
        Operation(
            "rooms",
            "The rooms a socket is in (its own id room included).",
            _obj(["socket"], socket=_SOCKET),
            _obj(["rooms"], rooms={"type": "array", "items": _ROOM}),
        ),
        Operation(
            "presence",
            "The users in the room, cluster-wide, with their connection counts and metadata.",
            _obj(["room"], room=_ROOM),
            _obj(
                ["presence"],
                presence={
                    "type": "object",
                    "description": "user -> {connections, meta}",
                    "additionalProperties": _obj(
                        ["connections", "meta"],
                        connections={"type": "integer", "minimum": 1},
                        meta=_META,
                    ),
                },
            ),
        ),
        Operation(
            "presence_stats",
            "Exact connections and unique users in the room (anonymous sockets are connections).",
            _obj(["room"], room=_ROOM),
            _obj(["connections", "users"], connections=_COUNT, users=_COUNT),
        ),
        Operation(
            "set_presence",
            "Give a socket a presence identity and metadata (user null clears it).",
            _obj(
                ["socket", "user"],
                socket=_SOCKET,
                user={
                    "type": "string",
                    "minLength": 1,
                    "nullable": True,
                    "description": "the user id; null clears the socket's identity",
                },
                meta={"description": "small JSON metadata shown with the user (default null)"},
            ),
            _EMPTY,
        ),
        Operation(
            "track_presence",
            "Push presence join/leave events to the room's members (enabled false: stop).",
            _obj(["room"], room=_ROOM, enabled={"type": "boolean", "default": True}),
            _EMPTY,
        ),
        Operation(
            "publish",
            "Resourceful PubSub: send data (no envelope) to the subscribers of records.",
            _obj(
                ["model", "ids", "data"],
                model=_MODEL,
                ids={"oneOf": [_ID, {"type": "array", "items": _ID}]},
                data=_DATA,
                omit=_SOCKET,
            ),
            _EMPTY,
        ),
        Operation(
            "publish_create",
            "Notify watchers of a new record ('created') and subscribe them to it.",
            _obj(["model", "record"], model=_MODEL, record={"type": "object"}, omit=_SOCKET),
            _EMPTY,
        ),
        Operation(
            "publish_update",
            "Notify a record's subscribers of changes ('updated').",
            _obj(
                ["model", "id", "changes"],
                model=_MODEL,
                id=_ID,
                changes={"type": "object"},
                previous={"type": "object"},
                omit=_SOCKET,
            ),
            _EMPTY,
        ),
        Operation(
            "publish_destroy",
            "Notify a record's subscribers it is gone ('destroyed'), then empty its room.",
            _obj(["model", "id"], model=_MODEL, id=_ID, previous={"type": "object"}, omit=_SOCKET),
            _EMPTY,
        ),
        Operation(
            "publish_add",
            "Notify a record's subscribers of an association add ('addedTo').",
            _obj(
                ["model", "id", "attribute", "added_id"],
                model=_MODEL,
                id=_ID,
                attribute={"type": "string", "minLength": 1},
                added_id=_ID,
                omit=_SOCKET,
            ),
            _EMPTY,
        ),
        Operation(
            "publish_remove",
            "Notify a record's subscribers of an association removal ('removedFrom').",
            _obj(
                ["model", "id", "attribute", "removed_id"],
                model=_MODEL,
                id=_ID,
                attribute={"type": "string", "minLength": 1},
                removed_id=_ID,
                omit=_SOCKET,
            ),
            _EMPTY,
        ),
    )
}

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
_ERRORS = {
    "400": "bad request (malformed JSON, wrong fields, invalid room name)",
    "401": "missing or wrong API key",
    "403": "the API is disabled (no API keys configured in production)",
    "404": "unknown operation, or no such socket",
    "413": "body over the size limit",
    "429": "too many rooms for a socket",
    "503": "router unavailable",
    "504": "router did not answer in time",
}


def openapi_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.0 document of the server API."""
    error_ref = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    }
    paths: dict[str, Any] = {}
    for op in OPERATIONS.values():
        responses: dict[str, Any] = {
            "200": {
                "description": "done",
                "content": {"application/json": {"schema": op.result}},
            }
        }
        for code, text in _ERRORS.items():
            responses[code] = {"description": text, **error_ref}
        paths[f"/api/{op.name}"] = {
            "post": {
                "operationId": op.name,
                "summary": op.summary,
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": op.body}},
                },
                "responses": responses,
            }
        }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "roomcast server API",
            "version": version,
            "description": "Room operations and publishing for app backends, on every "
            "gateway's internal port. Same guarantees as the Python SDK: a membership "
            "call answers only once the router applied it.",
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def field_problem(name: str, fields: list[str]) -> str | None:
    """What is wrong with the top-level ``fields`` of a body for operation ``name``, said so
    that the caller can fix it: the unknown fields, each with the field it most likely meant
    (the one missing required field when exactly one is unknown and one missing, else the
    closest name), the missing required fields, then every field the operation takes.
    None when the fields are right."""
    op = OPERATIONS[name]
    props = list(op.body.get("properties", {}))
    needed = list(op.body.get("required", []))
    missing = [f for f in needed if f not in fields]
    unknown = sorted(f for f in fields if f not in props)
    if not unknown and not missing:
        return None
    parts = []
    if unknown:
        named = []
        for field in unknown[:5]:
            if len(unknown) == 1 and len(missing) == 1:
                guess: str | None = missing[0]
            else:
                close = difflib.get_close_matches(field, props, n=1, cutoff=0.6)
                guess = close[0] if close else None
            named.append(field[:40] + (f" (did you mean {guess}?)" if guess else ""))
        parts.append("unknown fields: " + ", ".join(named))
    if missing:
        parts.append("missing fields: " + ", ".join(missing))
    takes = ", ".join(f + (" (required)" if f in needed else "") for f in props)
    return "; ".join(parts) + f"; {name} takes {takes or 'no fields'}"
