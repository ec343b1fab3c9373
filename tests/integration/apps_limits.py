"""An action app for the limits tests: responses of a chosen size.

Served by ``roomcast worker tests.integration.apps_limits:limits``.
"""

from __future__ import annotations

from typing import Any

from roomcast import App
from roomcast.requests import Request

__all__ = ["limits"]

limits = App()


@limits.action("GET", "/blob/:kib")
async def blob(req: Request) -> Any:
    """A body of about ``kib`` KiB."""
    return {"blob": "x" * (int(req.params["kib"]) * 1024)}
