"""More action apps for the integration tests (``tests.integration.apps`` holds the common ones).

``extra``: handlers whose results the worker must turn into clean answers — a body that is not
JSON, a status the wire cannot carry, a bool where a status might be read — plus a sync handler
with path parameters. Served by ``roomcast worker tests.integration.apps_extra:extra``.
"""

from __future__ import annotations

import os
from typing import Any

from roomcast import App
from roomcast.requests import Request

__all__ = ["extra"]

extra = App()


@extra.action("GET", "/not-json")
async def not_json(req: Request) -> Any:
    """A body json cannot encode (a set): the handler's bug, so a 500, never a 400."""
    return {"members": {"a", "b"}}


@extra.action("GET", "/nan")
def nan(req: Request) -> Any:
    """NaN is not JSON either (the SDK encodes with allow_nan=False)."""
    return {"value": float("nan")}


@extra.action("GET", "/status-of/:code")
async def status_of(req: Request) -> Any:
    """``(status, body)`` with whatever status the path asks for (valid or not)."""
    return int(req.params["code"]), {"code": req.params["code"]}


@extra.action("GET", "/bool-first")
async def bool_first(req: Request) -> Any:
    """A tuple that starts with a bool is a body (a JSON array), not ``(status, body)``."""
    return True, "yes"


@extra.action("GET", "/nothing")
def nothing(req: Request) -> None:
    return None


@extra.action("GET", "/sync/user/:id")
def sync_user(req: Request) -> dict[str, Any]:
    """A sync handler sees path parameters and the query the same way an async one does."""
    return {"params": req.params, "worker": os.getpid(), "sync": True}


@extra.action("*", "/any")
async def any_method(req: Request) -> dict[str, Any]:
    return {"method": req.method}
