"""Two services and a newer version of one, for the route-aware worker tests.

``chat`` (v1) and ``shop`` are different Apps; ``chat_v2`` is chat's next version in a rolling
deploy: the same routes plus one. Every action says which app, version and process answered.
"""

from __future__ import annotations

import os
from typing import Any

from roomcast import App
from roomcast.requests import Request


def _who(app: str, version: int, req: Request) -> dict[str, Any]:
    return {"app": app, "version": version, "pid": os.getpid(), "params": req.params}


def _chat(version: int) -> App:
    chat = App()

    @chat.action("GET", "/chat/members")
    async def members(req: Request) -> dict[str, Any]:
        return _who("chat", version, req)

    @chat.action("POST", "/chat/say/:room")
    async def say(req: Request) -> dict[str, Any]:
        return _who("chat", version, req)

    return chat


chat = _chat(1)
chat_v2 = _chat(2)


@chat_v2.action("GET", "/chat/history/:room")
async def history(req: Request) -> dict[str, Any]:
    return _who("chat", 2, req)


shop = App()


@shop.action("GET", "/shop/items")
@shop.action("GET", "/shop/items/:id")
def items(req: Request) -> dict[str, Any]:
    return _who("shop", 1, req)
