"""Blocking Resourceful PubSub: :class:`SyncModel`, what ``SyncCluster.model(identity)`` returns.

Owns the blocking flavour of each :class:`~roomcast.model.Model` method. Room names come from a
``Model`` kept for them alone, so they need no cluster; every other call builds the async model
on the :class:`~roomcast.sync.SyncCluster`'s I/O thread (``SyncCluster.run``) and waits for it.
It starts no thread and opens no connection of its own: order, timeouts and errors are those
of the ``SyncCluster`` (:mod:`roomcast.sync`, which re-exports this class).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from roomcast.model import Model
from roomcast.requests import SocketLike, SocketsLike

if TYPE_CHECKING:
    from roomcast.cluster import Cluster
    from roomcast.sync import SyncCluster

__all__ = ["SyncModel"]


class SyncModel:
    """Blocking Resourceful PubSub: the methods of :class:`roomcast.model.Model`."""

    def __init__(self, cluster: SyncCluster, identity: str, *, primary_key: str = "id") -> None:
        self._cluster = cluster
        self._names = Model(_NO_SOCKETS, identity, primary_key=primary_key)
        self.identity = self._names.identity
        self.primary_key = primary_key

    def get_room_name(self, id: Any) -> str:
        return self._names.get_room_name(id)

    @property
    def class_room(self) -> str:
        return self._names.class_room

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        identity, pk = self.identity, self.primary_key

        async def call(cluster: Cluster) -> None:
            await getattr(cluster.model(identity, primary_key=pk), method)(*args, **kwargs)

        self._cluster.run(call)

    def subscribe(self, req: SocketsLike, ids: Any) -> None:
        self._call("subscribe", req, ids)

    def unsubscribe(self, req: SocketsLike, ids: Any) -> None:
        self._call("unsubscribe", req, ids)

    def watch(self, req: SocketsLike) -> None:
        self._call("watch", req)

    def unwatch(self, req: SocketsLike) -> None:
        self._call("unwatch", req)

    def publish(
        self, ids: Any, data: Any, req: SocketLike | None = None, *, receipt: bool = False
    ) -> Any:
        identity, pk = self.identity, self.primary_key

        async def call(cluster: Cluster) -> Any:
            model = cluster.model(identity, primary_key=pk)
            return await model.publish(ids, data, req, receipt=receipt)

        return self._cluster.run(call)

    def publish_create(self, record: dict[str, Any], req: SocketLike | None = None) -> None:
        self._call("publish_create", record, req)

    def publish_update(
        self,
        id: Any,
        changes: dict[str, Any],
        req: SocketLike | None = None,
        *,
        previous: dict[str, Any] | None = None,
    ) -> None:
        self._call("publish_update", id, changes, req, previous=previous)

    def publish_destroy(
        self, id: Any, req: SocketLike | None = None, *, previous: dict[str, Any] | None = None
    ) -> None:
        self._call("publish_destroy", id, req, previous=previous)

    def publish_add(
        self, id: Any, attribute: str, added_id: Any, req: SocketLike | None = None
    ) -> None:
        self._call("publish_add", id, attribute, added_id, req)

    def publish_remove(
        self, id: Any, attribute: str, removed_id: Any, req: SocketLike | None = None
    ) -> None:
        self._call("publish_remove", id, attribute, removed_id, req)


class _NoSockets:
    """Stands in for ``cluster.sockets`` where a Model is used only for its room names."""


_NO_SOCKETS: Any = _NoSockets()
