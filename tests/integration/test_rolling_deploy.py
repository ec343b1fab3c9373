"""A rolling deploy under steady traffic, with real processes and real clients.

What Kubernetes does on every rollout, node drain or scale-down, done here by hand: each gateway
in turn gets SIGTERM (it drains and exits 0) and a replacement starts on the same ports (where
the Service sends clients next); then the router pair is restarted one router at a time; and an
action worker is replaced under request load.

Clients on both gateways use their libraries' own reconnection with its default settings: the
npm sails.io.js 1.2.1 (``io.sails.reconnection = true``, as a Sails app sets it) and
socket.io-client 4 (every option at its default: long-polling, then the upgrade, asserted),
plus a plain ``/ws`` client that reconnects the way the README's snippet does. On every
connect each re-joins its room as an app's connect handler would and catches up from the
room's history, so every message an SDK publisher broadcast while the client was away is
recovered. Measured and printed: each client's time from the drain to its
re-join, its reconnect attempts, and the messages it missed live and recovered.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import Proc, WsClient, fresh_room
from tests.integration.routerpair import (
    APP,
    HEARTBEAT,
    Pair,
    Publisher,
    metrics_at,
    ready_status,
)
from tests.integration.test_sails_support import SDK_VERSION, NodeDriver, node_driver

HISTORY = ("--history-rooms", "deploy-*", "--history-size", "5000")
# socket.io-client's defaults (2.x under sails.io.js and 4.x alike): the n-th attempt waits
# min(1 s * 2^(n-1), 5 s), randomized by +-50%.
SIO_DELAY_S, SIO_DELAY_MAX_S, SIO_JITTER = 1.0, 5.0, 0.5
# The README's /ws snippet retries every second.
WS_RETRY_S = 1.0
REJOIN_SLACK_S = 2.0  # the bound: the client's own reconnect delay plus 2 s


def sio_delay_bound(attempts: int) -> float:
    """The longest a socket.io client waits in total before its ``attempts``-th attempt."""
    return sum(min(SIO_DELAY_S * 2**k, SIO_DELAY_MAX_S) * (1 + SIO_JITTER) for k in range(attempts))


# --- a plain /ws client that reconnects and recovers by itself ---------------------------------


class ResilientWs(threading.Thread):
    """The README's ``/ws`` client: on every close it reconnects (every WS_RETRY_S), re-joins
    its room with ``since`` = the last history position it saw, and so receives what it missed
    in the reply. Records each tick's sequence number, and the time of each (re)join."""

    def __init__(self, url: str, room: str, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.url, self.room = url, room
        self.live: list[int] = []
        self.recovered: list[int] = []
        self.joins: list[float] = []  # time.time() of each completed join
        self.closes: list[tuple[float, int | None]] = []
        self.attempts_per_join: list[int] = []
        self.problem: str | None = None
        self.position: dict[str, Any] | None = None
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        attempts = 0
        while not self._halt.is_set():
            try:
                with connect(self.url, open_timeout=5 * T, close_timeout=2 * T, proxy=None) as conn:
                    self._session(conn, attempts)
                return  # halted
            except ConnectionClosed as exc:
                self.closes.append((time.time(), exc.rcvd.code if exc.rcvd else None))
                attempts = 1  # the first reconnect goes out at once, later ones every second
            except (OSError, InvalidHandshake, TimeoutError):
                attempts += 1
                self._halt.wait(WS_RETRY_S)
            except Exception as exc:  # recorded: the test judges
                self.problem = repr(exc)
                return

    def _session(self, conn: ClientConnection, attempts: int) -> None:
        welcome = json.loads(conn.recv(timeout=10 * T))
        assert welcome["op"] == "welcome", welcome
        join: dict[str, Any] = {"op": "join", "ref": 1, "room": self.room, "recover": True}
        if self.position is not None:
            join["since"] = self.position
        conn.send(json.dumps(join))
        while not self._halt.is_set():
            try:
                frame = json.loads(conn.recv(timeout=0.1))
            except TimeoutError:
                continue
            if frame.get("op") == "reply" and frame.get("ref") == 1:
                assert frame["statusCode"] == 200, frame
                body = frame["body"]
                self.joins.append(time.time())
                self.attempts_per_join.append(attempts)
                self.recovered += [m["data"]["s"] for m in body.get("messages", [])]
                if self.position is None or body.get("recovered"):
                    self.position = {"epoch": body["epoch"], "offset": body["offset"]}
            elif frame.get("op") == "event" and frame.get("event") == "tick":
                self.live.append(frame["data"]["s"])
                history = frame.get("history", {}).get(self.room)
                if history:
                    self.position = history

    def finish(self) -> None:
        self._halt.set()
        self.join(10 * T)
        assert not self.is_alive(), f"{self.name}: stuck"
        assert self.problem is None, f"{self.name}: {self.problem}"


# --- the node clients ---------------------------------------------------------------------------


class NodeClient:
    """One sails.io.js or socket.io-client 4 client in the node driver, reconnecting by itself."""

    def __init__(self, js: NodeDriver, kind: str, url: str, room: str) -> None:
        self.js, self.kind = js, kind
        rejoin = {"url": "/rooms/join", "data": {"room": room}, "room": room}
        if kind == "sails":
            self.name, _ = js.sails(url, listen=["tick"], reconnect=True, rejoin=rejoin)
        else:
            query = {"__sails_io_sdk_version": SDK_VERSION}
            # Every option at the library's default but the query: long-polling first, then
            # the upgrade to WebSocket, and its own reconnection.
            self.name, _ = js.sio(
                4, url, query=query, listen=["tick"], reconnect=True, rejoin=rejoin, transports=None
            )
        self.joins: list[float] = []
        self.disconnects: list[tuple[float, str]] = []
        self.attempts: list[tuple[float, int]] = []
        self.live: list[int] = []
        self.recovered: list[int] = []
        self.upgrades: list[str] = []  # socket.io-client 4: from long-polling, per connection

    def collect(self) -> None:
        """Take everything the driver has buffered for this client."""
        mine = [m for m in self.js.lines if m.get("client") == self.name]
        self.js.lines[:] = [m for m in self.js.lines if m.get("client") != self.name]
        for m in mine:
            at = m.get("at", 0) / 1000
            kind = m["type"]
            if kind == "event" and m["event"] == "tick":
                self.live.append(m["args"][0]["s"])
            elif kind == "rejoined":
                assert m["status"] == 200, m
                self.joins.append(at)
            elif kind == "recovered":
                body = m["body"]
                assert body["recovered"] is True, body
                self.recovered += [msg["data"]["s"] for msg in body["messages"]]
            elif kind == "disconnect":
                self.disconnects.append((at, m["reason"]))
            elif kind == "reconnect_attempt":
                self.attempts.append((at, m["attempt"]))
            elif kind == "upgrade":
                self.upgrades.append(m["transport"])


# --- the test -----------------------------------------------------------------------------------


@pytest.fixture
def deploy() -> Iterator[tuple[Pair, NodeDriver]]:
    with Pair(gateways=2, worker=True, router_args=HISTORY) as pair, node_driver() as js:
        yield pair, js
        js.close_all()


def _active(pair: Pair) -> Proc:
    return pair.primary if ready_status(pair.primary) == 200 else pair.backup


def paired(router: Proc) -> bool:
    """The restarted router heard its peer: now the other one may stop (docs/kubernetes.md)."""
    return metrics_at(router.info["http"]).get("roomcast_router_paired") == 1


def roll_router(pair: Pair, role: str) -> None:
    """Restart the serving router of the pair as a rollout does: SIGTERM (it hands over, exit
    0), the peer serves and the gateways follow it, then the replacement starts on the same
    addresses and pairs, standing by."""
    leaving, peer = (
        (pair.primary, pair.backup) if role == "primary" else (pair.backup, pair.primary)
    )
    leaving.stop()
    leaving.check_log()
    deadline_poll(lambda: ready_status(peer) == 200, 20 * T, message=f"the {role}'s peer serves")
    deadline_poll(pair.gateways_ready, 20 * T, message=f"gateways off the {role}")
    back = pair.restart(role)
    deadline_poll(lambda: paired(back), 20 * T, message=f"the {role} back and paired")
    assert ready_status(back) == 503  # standing by: the peer keeps serving


def _counter(router: Proc, name: str, **labels: str) -> float:
    return metrics_at(router.info["http"]).get(name, **labels)


@pytest.mark.timeout(300)
def test_rolling_deploy_strands_no_client(deploy: tuple[Pair, NodeDriver]) -> None:
    pair, js = deploy
    room = fresh_room("deploy-")
    node: list[tuple[int, NodeClient]] = []
    plain: list[tuple[int, ResilientWs]] = []
    for g in range(2):
        url = pair.gateways[g].public
        node += [(g, NodeClient(js, "sails", url, room)), (g, NodeClient(js, "sio4", url, room))]
        plain.append((g, ResilientWs(pair.gateways[g].ws_url, room, f"ws-gw{g}")))

    def joined(client: NodeClient | ResilientWs, count: int) -> bool:
        if isinstance(client, NodeClient):
            client.collect()
        return len(client.joins) >= count

    def wait_joined(count: int, gateway: int | None, what: str) -> None:
        def check() -> bool:
            js.pull_for(0.05)
            return all(joined(c, count if gateway in (None, g) else 1) for g, c in [*node, *plain])

        try:
            deadline_poll(check, 30 * T, message=what)
        except AssertionError:
            seen = {c.name: len(c.joins) for _, c in [*node, *plain]}
            seen |= {w.name: w.problem for _, w in plain if w.problem}
            raise AssertionError(f"{what}: joins {seen}; driver buffer {js.lines[-8:]}") from None

    wait_joined(1, None, "every client joined")
    publisher = Publisher(pair.commands, room)
    started = time.time()
    figures: dict[str, Any] = {}
    marks: dict[str, int] = {}  # the publisher's sequence number as each phase began
    try:
        deadline_poll(lambda: len(publisher.outcome) > 50, 10 * T, message="traffic flowing")
        # --- each gateway in turn: drain, replacement on the same ports -------------------
        drained_at: dict[int, float] = {}
        for g in range(2):
            marks[f"gateway{g}"] = len(publisher.sent_at)
            sigterm = time.time()
            pair.replace_gateway(g)
            drained_at[g] = sigterm
            wait_joined(2, g, f"every client of gateway {g} re-joined by itself")
            js.pull_for(0.5)  # a moment of traffic after the re-join
        active = _active(pair)
        expired = _counter(active, "roomcast_router_gateway_expired_total")
        goodbyes = _counter(active, "roomcast_router_goodbyes_total", role="gateway")
        # --- the router pair, one at a time -----------------------------------------------
        for role in ("primary", "backup"):
            marks[role] = len(publisher.sent_at)
            roll_router(pair, role)
        js.pull_for(1.0)
    finally:
        publisher.finish()
    for _, client in plain:
        client.finish()
    js.pull_for(1.0)  # the last ticks in flight
    for _, c in node:
        c.collect()

    # Closes: the drain's 1001 / transport close, never a deliberate kick.
    for _, c in node:
        reasons = {reason for _, reason in c.disconnects}
        assert reasons == {"transport close"}, (c.name, c.disconnects)
        if c.kind == "sio4":  # each of its connections began on long-polling and upgraded
            assert c.upgrades == ["websocket"] * len(c.joins), (c.name, c.upgrades)
    for _, w in plain:
        assert [code for _, code in w.closes] == [1001], (w.name, w.closes)

    # Time to re-join after the drain, within the client's own reconnect delay plus 2 s.
    rejoin: dict[str, Any] = {}
    for g, c in node:
        took = c.joins[1] - drained_at[g]
        attempts = len(c.attempts)
        bound = sio_delay_bound(attempts) + REJOIN_SLACK_S
        rejoin[c.name] = {"seconds": round(took, 3), "attempts": attempts}
        assert len(c.joins) == 2, (c.name, c.joins)
        assert took <= bound, (
            f"{c.name}: re-joined {took:.2f}s after the drain (bound {bound:.2f}s)"
        )
    for g, w in plain:
        took = w.joins[1] - drained_at[g]
        bound = w.attempts_per_join[1] * WS_RETRY_S + REJOIN_SLACK_S
        rejoin[w.name] = {"seconds": round(took, 3), "attempts": w.attempts_per_join[1]}
        assert len(w.joins) == 2, (w.name, w.joins)
        assert took <= bound, (
            f"{w.name}: re-joined {took:.2f}s after the drain (bound {bound:.2f}s)"
        )

    # Every message the SDK published (and the router accepted) reached every client, live or
    # recovered from history after its re-join; none twice live.
    ok = sorted(seq for seq, out in publisher.outcome.items() if out.startswith("ok"))
    failed = {seq: out for seq, out in publisher.outcome.items() if not out.startswith("ok")}
    delivery: dict[str, Any] = {}
    for name, live, recovered in [
        *[(c.name, c.live, c.recovered) for _, c in node],
        *[(w.name, w.live, w.recovered) for _, w in plain],
    ]:
        missing = sorted(set(ok) - set(live) - set(recovered))
        delivery[name] = {
            "live": len(live),
            "missed_live": len(set(ok) - set(live)),
            "recovered": len(set(recovered) - set(live)),
            "missing": len(missing),
        }
        assert len(live) == len(set(live)), f"{name}: a message delivered twice live"
        if missing:
            delivery[name]["first_missing"] = {s: publisher.outcome[s] for s in missing[:5]}
    figures = {
        "published_ok": len(ok),
        "publish_failed": len(failed),
        "seconds": round(time.time() - started, 1),
        "rejoin_after_drain": rejoin,
        "phases": marks,
        "gateway_lost": [
            pair.gateway_metrics(i).get("roomcast_gateway_lost_total") for i in range(2)
        ],
        "delivery": delivery,
    }
    print("\nrolling deploy: " + json.dumps(figures, sort_keys=True))
    lost = {name: d for name, d in delivery.items() if d["missing"]}
    assert not lost, f"published messages that never arrived: {lost}"
    # The drains were goodbyes, not expiries.
    assert goodbyes == 2, goodbyes
    assert expired == 0, expired
    final = _counter(pair.primary, "roomcast_router_gateway_expired_total")
    assert final == 0, "a gateway expired on the restarted primary"


@pytest.mark.timeout(180)
def test_a_worker_replaced_under_request_load_fails_no_request() -> None:
    """A second worker starts, the first gets SIGTERM: it says goodbye, the router routes it
    nothing new, it answers what it holds and exits 0. No request fails meanwhile."""
    with Pair(gateways=1, worker=True) as pair:
        stop = threading.Event()
        statuses: list[int] = []
        problems: list[str] = []

        def load() -> None:
            client = WsClient(pair.gateways[0].ws_url, name="requester")
            try:
                for i in range(100_000):  # bounded; stops on the event
                    if stop.is_set():
                        return
                    reply = client.request("request", method="POST", url="/echo", data={"i": i})
                    statuses.append(reply["statusCode"])
            except Exception as exc:  # recorded: the test judges
                problems.append(repr(exc))
            finally:
                client.close()

        thread = threading.Thread(target=load, name="request load", daemon=True)
        try:
            thread.start()
            deadline_poll(lambda: len(statuses) > 50, 10 * T, message="requests flowing")
            argv = ["-m", "roomcast.cli", "worker", APP, "--router", pair.commands]
            second = pair._add(Proc("worker2", [*argv, "--heartbeat-interval", str(HEARTBEAT)]))
            second.wait_ready()
            for router in (pair.primary, pair.backup):
                deadline_poll(
                    lambda r=router: pair.router_metrics(r).get("roomcast_router_workers") == 2,
                    10 * T,
                    message=f"{router.name} to know both workers",
                )
            before = len(statuses)
            assert pair.worker is not None
            pair.worker.stop()  # SIGTERM: goodbye, finish, exit 0
            pair.worker.check_log()
            assert "leaving: 2 of 2 routers acknowledged" in pair.worker.log_text()
            deadline_poll(lambda: len(statuses) > before + 100, 10 * T, message="requests after")
            stop.set()
            thread.join(10 * T)
            assert not problems, problems
            assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
            metrics = pair.router_metrics(pair.primary)
            assert metrics.get("roomcast_router_goodbyes_total", role="worker") == 1
            assert metrics.get("roomcast_router_worker_expired_total") == 0
            assert metrics.get("roomcast_router_workers") == 1
            print(f"\nworker replaced under load: {len(statuses)} requests, all 200")
        finally:
            stop.set()
