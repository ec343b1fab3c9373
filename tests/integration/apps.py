"""Action apps the integration tests serve with real ``roomcast worker`` processes."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from roomcast import App, Response
from roomcast.requests import Request

app = App()


@app.action("GET", "/echo")
@app.action("POST", "/echo")
@app.action("PUT", "/echo")
@app.action("PATCH", "/echo")
@app.action("DELETE", "/echo")
async def echo(req: Request) -> dict[str, Any]:
    return {
        "method": req.method,
        "url": req.url,
        "data": req.data,
        "params": req.params,
        "socket": req.socket,
        "is_socket": req.is_socket,
        "headers": req.headers,
        "user": req.user,
        "claims": req.claims,
        "worker": os.getpid(),
    }


@app.action("GET", "/user/:id")
async def user(req: Request) -> dict[str, Any]:
    return {"id": req.params["id"], "params": req.params}


@app.action("POST", "/status/:code")
def status(req: Request) -> Response:
    """A sync handler answering the status it is asked for, with a custom header and a cookie."""
    return Response(
        int(req.params["code"]),
        {"asked": req.params["code"]},
        {"x-roomcast-test": "1", "set-cookie": "a=b"},
    )


@app.action("POST", "/boom")
async def boom(req: Request) -> None:
    raise RuntimeError("secret internals: do not leak")


@app.action("POST", "/slow")
async def slow(req: Request) -> dict[str, Any]:
    await asyncio.sleep(float(req.data.get("seconds", 0)) if isinstance(req.data, dict) else 0)
    return {"slept": True}


@app.action("POST", "/sync-slow")
def sync_slow(req: Request) -> dict[str, Any]:
    time.sleep(float(req.data.get("seconds", 0)) if isinstance(req.data, dict) else 0)
    return {"slept": True}


@app.action("POST", "/rooms/join")
async def join(req: Request) -> dict[str, Any]:
    """Join the requesting socket (Sails: sails.sockets.join(req, room))."""
    await req.cluster.sockets.join(req, req.data["room"])
    return {"joined": req.data["room"]}


@app.action("POST", "/rooms/shout")
async def shout(req: Request) -> dict[str, Any]:
    """Broadcast to a room, omitting the requester (Sails: broadcast(room, ev, data, req))."""
    await req.cluster.sockets.broadcast(req.data["room"], "shout", req.data.get("data"), omit=req)
    return {"ok": True}


@app.action("POST", "/sync/join")
def sync_join(req: Request) -> dict[str, Any]:
    """The same from a sync handler, through the worker's SyncCluster."""
    req.cluster.sockets.join(req, req.data["room"])
    return {"joined": req.data["room"]}


hooks = App()
"""An app with Sails' beforeConnect/afterDisconnect hooks (refuses ?deny=1)."""


@hooks.on_connect
async def before_connect(req: Request) -> Any:
    query = req.data.get("query", {}) if isinstance(req.data, dict) else {}
    if query.get("deny") == "1":
        return 403, {"error": "denied"}
    return True


@hooks.on_disconnect
async def after_disconnect(req: Request) -> None:
    rooms = req.data.get("rooms", []) if isinstance(req.data, dict) else []
    for room in rooms:
        await req.cluster.sockets.broadcast(room, "gone", {"socket": req.socket})


@app.action("POST", "/params/:id")
def params(req: Request) -> dict[str, Any]:
    """Sails' req.param() and req.allParams(): path, then body, then query."""
    return {
        "id": req.param("id"),
        "name": req.param("name"),
        "page": req.param("page"),
        "missing": req.param("missing", "default"),
        "all": req.all_params(),
    }
