"""Virtual requests between askers and action workers: forwarding, answers, and giving up.

Owns the shell side of router.workers' pure WorkerPool: sending a request to the worker the
pool picks (past one that vanished without expiring yet), relaying the worker's reply to the
asker under the asker's ref, and answering for a worker that went away (503) or ran late (504)
so that no asker waits for a reply that cannot come. Counts each outcome by status class and
each request by the route pattern it matched. A reply from any peer but the worker the request
went to is dropped and counted (``foreign_replies_total``).
"""

from __future__ import annotations

import dataclasses
import logging

import zmq

from roomcast.core import wire
from roomcast.core.errors import BadRequest, NotFound, NoWorker, RoomcastError, Timeout
from router.links import Links, error_reply
from router.metrics import UNMATCHED, RouterMetrics
from router.workers import Miss, Origin, WorkerPool

__all__ = ["Requests"]

log = logging.getLogger("roomcast.router")


class Requests:
    def __init__(
        self, workers: WorkerPool, links: Links, metrics: RouterMetrics, *, timeout_s: float
    ) -> None:
        self._workers = workers
        self._links = links
        self._metrics = metrics
        self._timeout_s = timeout_s  # then the asker gets 504
        self._known = 0  # workers at the last expiry (or Hello): who went missing since

    def hello(self, identity: bytes, msg: wire.Hello, now: float) -> None:
        # Workers repeat Hello as their heartbeat (with their routes and busy state); only a new
        # one is news.
        routes = msg.routes if msg.routes_known else None
        if self._workers.add(identity, now, routes, busy=msg.busy):
            self._known = len(self._workers)
            log.info(
                "worker %s hello (%s routes, %d workers)",
                msg.node_id,
                "any" if routes is None else len(routes),
                len(self._workers),
            )

    def goodbye(self, identity: bytes, node_id: str) -> bool:
        """A worker stops: route it nothing new; its requests in flight still get its answers
        (or 504 at their deadline). Whether it was known."""
        if not self._workers.leave(identity):
            return False
        self._known = len(self._workers)
        log.info(
            "worker %s left (%d workers, %d requests in flight)",
            node_id,
            len(self._workers),
            self._workers.in_flight,
        )
        return True

    def forward(self, identity: bytes, gateway: str | None, msg: wire.Request, now: float) -> None:
        if not msg.ref:
            raise BadRequest("a request needs a ref")
        workers = self._workers
        path = msg.url.split("?", 1)[0]
        # A worker that vanished without expiring yet makes the send fail (ROUTER_MANDATORY):
        # forget it and try the next one.
        for _ in range(len(workers) + 1):
            picked = workers.forward(
                identity, gateway, msg.ref, now, self._timeout_s, msg.method, path
            )
            if picked is Miss.NOT_FOUND:
                self._metrics.count_request(UNMATCHED)
                raise NotFound(f"no action for {msg.method[:16]} {path[:200]}")
            if picked is Miss.NO_WORKER:
                break
            try:
                body = wire.encode(dataclasses.replace(msg, ref=picked.ref))
                self._links.to_worker(picked.worker, body)
            except zmq.ZMQError:
                workers.cancel(picked.ref)
                self._orphaned(workers.remove(picked.worker))
                continue
            self._metrics.requests_forwarded.inc()
            self._metrics.count_request(picked.route)
            return
        raise NoWorker("no action worker serving this route is connected")

    def answer(self, identity: bytes, reply: wire.Reply) -> None:
        origin, foreign = self._workers.answer(reply.ref, identity)
        if foreign:
            self._metrics.foreign_replies.inc()
            log.warning("dropped a reply from a peer the request was not sent to")
            return
        if origin is None:
            return  # answered after its deadline: the asker already got 504
        self._metrics.requests_answered.labels(_status_class(reply.status)).inc()
        self._links.reply(
            origin.identity, origin.gateway, dataclasses.replace(reply, ref=origin.ref)
        )

    def expire(self, now: float) -> None:
        """Forget silent workers, answering their requests, and answer the late ones (504)."""
        workers = self._workers
        orphans, late = workers.expire(now)
        if orphans or len(workers) < self._known:
            log.warning(
                "%d action workers expired after missed heartbeats (%d requests orphaned)",
                self._known - len(workers),
                len(orphans),
            )
            self._metrics.worker_expired.inc(max(0, self._known - len(workers)))
        self._known = len(workers)
        self._orphaned(orphans)
        for origin in late:
            self._metrics.requests_answered.labels("timeout").inc()
            err = Timeout("the action did not answer in time")
            self._links.reply(origin.identity, origin.gateway, error_reply(origin.ref, err))

    def drain(self, err: RoomcastError) -> None:
        """Answer every request in flight with ``err`` (the router stops serving)."""
        for origin in self._workers.drain():
            self._links.reply(origin.identity, origin.gateway, error_reply(origin.ref, err))

    def _orphaned(self, orphans: list[Origin]) -> None:
        """Requests whose worker went away: answer now rather than at the deadline."""
        for origin in orphans:
            self._metrics.requests_answered.labels("5xx").inc()
            err = NoWorker("the action worker went away before answering")
            self._links.reply(origin.identity, origin.gateway, error_reply(origin.ref, err))


def _status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "invalid"
