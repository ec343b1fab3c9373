"""The demo chat's action worker (``roomcast worker roomcast.demo:app``), written the Sails way.

Chat rooms are records of the ``chatroom`` model: joining subscribes the socket to the record
(Resourceful PubSub), messages are ``publish``ed to its subscribers, and every membership change
publishes an ``updated`` notification with the exact, cluster-wide member count. Joining also
puts the socket in the plain room of the same name, where the page shows ``message`` events
``{"from", "text"}`` from any backend (the README's Python and curl examples).
"""

from __future__ import annotations

from typing import Any

from roomcast.app import App
from roomcast.core.errors import BadRequest
from roomcast.core.rooms import validate_room
from roomcast.requests import Request

__all__ = ["app"]

app = App()

MAX_TEXT = 2000


def _field(req: Request, name: str, limit: int = 64) -> str:
    data = req.data if isinstance(req.data, dict) else {}
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{name} is required")
    return value.strip()[:limit]


async def _announce_count(req: Request, room: str) -> int:
    rooms = req.cluster.model("chatroom")
    count: int = await req.cluster.sockets.count(rooms.get_room_name(room))
    await rooms.publish_update(room, {"members": count})
    return count


@app.action("POST", "/chat/join")
async def join(req: Request) -> dict[str, Any]:
    room = validate_room(_field(req, "room"))
    await req.cluster.model("chatroom").subscribe(req, room)
    # Also the plain room of that name, so a backend can `broadcast("lobby", "message", ...)`.
    await req.cluster.sockets.join(req, room)
    return {"room": room, "members": await _announce_count(req, room), "socket": req.socket}


@app.action("POST", "/chat/leave")
async def leave(req: Request) -> dict[str, Any]:
    room = validate_room(_field(req, "room"))
    await req.cluster.model("chatroom").unsubscribe(req, room)
    await req.cluster.sockets.leave(req, room)
    return {"room": room, "members": await _announce_count(req, room)}


@app.action("POST", "/chat/say")
async def say(req: Request) -> dict[str, Any]:
    room = validate_room(_field(req, "room"))
    message = {"from": _field(req, "name"), "text": _field(req, "text", MAX_TEXT)}
    # Everyone subscribed gets it, the sender included: every tab renders from the stream.
    await req.cluster.model("chatroom").publish(room, message)
    return {"ok": True}


@app.action("GET", "/chat/rooms/:room")
async def room_info(req: Request) -> dict[str, Any]:
    room = validate_room(req.params["room"])
    name = req.cluster.model("chatroom").get_room_name(room)
    return {"room": room, "members": await req.cluster.sockets.count(name)}


@app.on_disconnect
async def gone(req: Request) -> None:
    data = req.data if isinstance(req.data, dict) else {}
    prefix, suffix = "sails_model_chatroom_", ":chatroom"
    for name in data.get("rooms", []):
        if isinstance(name, str) and name.startswith(prefix) and name.endswith(suffix):
            await _announce_count(req, name[len(prefix) : -len(suffix)])
