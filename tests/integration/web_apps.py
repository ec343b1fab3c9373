"""A FastAPI app and a Flask app as their teams would have written them, served as actions.

Each has its own routing, validation and session-cookie auth; the one roomcast line in each is
the helper call that joins the requesting socket to a room (``roomcast.asgi.join`` /
``join_sync``), the way a Sails action calls ``sails.sockets.join(req, room)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import flask
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

import roomcast.asgi

# --- FastAPI: a server-side session store, checked by the app's own middleware --------------

SESSIONS = {"s-alice": "alice", "s-bob": "bob"}

api = FastAPI()


@api.middleware("http")
async def session_auth(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
    user = SESSIONS.get(request.cookies.get("session", ""))
    if user is None:
        return JSONResponse({"detail": "not signed in"}, status_code=401)
    request.state.user = user
    return await call_next(request)


class Item(BaseModel):
    name: str
    price: float


@api.get("/api/items/{item_id}")
async def get_item(item_id: int, request: Request, q: str | None = None) -> dict[str, Any]:
    return {"id": item_id, "q": q, "user": request.state.user}


@api.post("/api/items", status_code=201)
async def create_item(item: Item, request: Request) -> dict[str, Any]:
    return {"created": item.model_dump(), "user": request.state.user}


@api.post("/api/rooms/{room}/join")
async def join_room(room: str, request: Request) -> dict[str, Any]:
    await roomcast.asgi.join(request, room)
    return {"joined": room, "user": request.state.user}


# --- Flask: its own signed-cookie session --------------------------------------------------

web = flask.Flask(__name__)
web.secret_key = "flask-test-secret-0123456789abcdef"


@web.before_request
def require_login() -> Any:
    if "user" not in flask.session:
        return flask.jsonify(error="not signed in"), 401
    return None


@web.get("/flask/items/<int:item_id>")
def flask_item(item_id: int) -> Any:
    return flask.jsonify(id=item_id, user=flask.session["user"])


@web.post("/flask/items")
def flask_create() -> Any:
    body = flask.request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        return flask.jsonify(error="name is required"), 400
    return flask.jsonify(created=body["name"], user=flask.session["user"]), 201


@web.post("/flask/rooms/<room>/join")
def flask_join(room: str) -> Any:
    roomcast.asgi.join_sync(flask.request, room)
    return flask.jsonify(joined=room, user=flask.session["user"])


def flask_session_cookie(user: str) -> str:
    """The cookie Flask itself would have set at login."""
    serializer = web.session_interface.get_signing_serializer(web)  # type: ignore[attr-defined]
    assert serializer is not None
    return f"session={serializer.dumps({'user': user})}"
