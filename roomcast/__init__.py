"""roomcast: a realtime pub/sub cluster with the Sails.js sockets API (the public SDK).

``from roomcast import Cluster`` (asyncio), ``SyncCluster`` (blocking), ``App`` (actions),
``Model`` (Resourceful PubSub), ``Request``/``Response`` and the typed errors under
``RoomcastError``. Exports resolve lazily through module ``__getattr__``: importing
``roomcast`` or the pure ``roomcast.core`` modules loads no zmq or asyncio (a purity test checks
it), only touching ``roomcast.Cluster`` does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roomcast.app import App
    from roomcast.cluster import Cluster
    from roomcast.core.errors import (
        ActionFailed,
        BadRequest,
        Conflict,
        Forbidden,
        InternalError,
        InvalidRoom,
        NoSuchSocket,
        NotFound,
        NoWorker,
        PayloadTooLarge,
        RateLimited,
        RoomcastError,
        RouterPassive,
        RouterUnavailable,
        StateError,
        Timeout,
        TooManyRooms,
        WireError,
    )
    from roomcast.model import Model
    from roomcast.requests import Request, Response
    from roomcast.sockets import Receipt
    from roomcast.sync import SyncCluster

    __version__: str

__all__ = [
    "ActionFailed",
    "App",
    "BadRequest",
    "Cluster",
    "Conflict",
    "Forbidden",
    "InternalError",
    "InvalidRoom",
    "Model",
    "NoSuchSocket",
    "NoWorker",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Receipt",
    "Request",
    "Response",
    "RoomcastError",
    "RouterPassive",
    "RouterUnavailable",
    "StateError",
    "SyncCluster",
    "Timeout",
    "TooManyRooms",
    "WireError",
    "__version__",
]

_ERROR_NAMES = (
    "ActionFailed",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "InternalError",
    "InvalidRoom",
    "NoSuchSocket",
    "NotFound",
    "NoWorker",
    "PayloadTooLarge",
    "RateLimited",
    "RoomcastError",
    "RouterPassive",
    "RouterUnavailable",
    "StateError",
    "Timeout",
    "TooManyRooms",
    "WireError",
)
_SOURCES: dict[str, str] = {
    "App": "roomcast.app",
    "Model": "roomcast.model",
    "Cluster": "roomcast.cluster",
    "Receipt": "roomcast.sockets",
    "SyncCluster": "roomcast.sync",
    "Request": "roomcast.requests",
    "Response": "roomcast.requests",
    **dict.fromkeys(_ERROR_NAMES, "roomcast.core.errors"),
}


# Defined only at run time: type checkers then see exactly the names imported above, so a
# typo such as ``roomcast.Clustr`` is an error instead of an ``object``.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        if name == "__version__":
            # importlib.metadata is slow to import; only pay for it when asked.
            from importlib.metadata import PackageNotFoundError, version

            try:
                value: object = version("roomcast")
            except PackageNotFoundError:  # running from a source tree that was never installed
                value = "0+unknown"
        else:
            source = _SOURCES.get(name)
            if source is None:
                raise AttributeError(f"module 'roomcast' has no attribute {name!r}")
            value = getattr(importlib.import_module(source), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
