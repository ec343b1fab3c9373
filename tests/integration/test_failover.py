"""Router failover (issue 7; docs/protocol.md "Failover"): a primary/backup pair, real processes.

* ``kill -9`` of the primary: the backup takes over (the first gateway's Hello or SDK command is
  the client vote, once the primary has been silent for ``--peer-timeout``), both gateways
  fail over and resync, ``/readyz`` is 200 again, count/members through the SDK (given both
  routers) are exact on the backup, SDK broadcasts reach every client, and virtual requests are
  answered by the worker (registered with both routers) through the backup. Measured: the time
  from the kill to the first delivery through the backup, and the messages lost, by sequence
  number at the clients. Then the primary restarts on its ports: it hears the backup active,
  stays passive, and nothing moves.
* ``roomcast bench failover`` reproduces the figure on demand: a short run, its JSON checked.
* Fencing: only the router-router link breaks (a TCP proxy on it is cut). The backup hears no
  primary, yet without a client's vote it does not serve. A client that asks the backup alone
  does make it active (Binary Star's documented weakness); when the link heals the primary
  wins and the backup steps down within a peer interval.

Figures are printed (``pytest -s``) and written to ``$ROOMCAST_FAULT_FIGURES`` like the other
fault tests' (default ``<tmp>/roomcast-failover-figures.json``).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from roomcast import SyncCluster
from tests.conftest import TIMEOUT_FACTOR, deadline_poll
from tests.conftest import TIMEOUT_UNIT as T
from tests.integration.harness import (
    REPO,
    Event,
    fresh_room,
)
from tests.integration.routerpair import (
    CLIENTS_PER_GATEWAY,
    HEARTBEAT,
    PEER_TIMEOUT,
    PUBLISH_INTERVAL,
    Pair,
    Publisher,
    Recorder,
    ready_status,
)


def _figures(name: str, figures: dict[str, Any]) -> None:
    print(f"\n{name}: " + json.dumps(figures, sort_keys=True))
    path = pathlib.Path(
        os.environ.get("ROOMCAST_FAULT_FIGURES")
        or pathlib.Path(tempfile.gettempdir()) / "roomcast-failover-figures.json"
    )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data[name] = figures
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


@pytest.fixture
def pair() -> Iterator[Pair]:
    with Pair(gateways=2, worker=True) as p:
        yield p


def _bounded_never(check: Any, window: float, what: str) -> None:
    """``check()`` stays false for the whole ``window`` (a bounded negative check)."""
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        assert not check(), what
        time.sleep(0.05)


# --- tests -----------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_kill9_primary_fails_over_to_the_backup_and_the_primary_comes_back_passive(
    pair: Pair,
) -> None:
    room, side = fresh_room("failover"), fresh_room("side")
    clients = [pair.ws(g) for g in range(2) for _ in range(CLIENTS_PER_GATEWAY)]
    for client in clients:
        client.join(room)
    clients[0].join(side)
    clients[-1].join(side)
    ids = sorted(c.id for c in clients)
    with SyncCluster(pair.commands) as sdk:
        assert sdk.sockets.count(room) == len(clients)

    recorders = [Recorder(c) for c in clients]
    publisher = Publisher(pair.commands, room)
    deadline_poll(
        lambda: all(r.got for r in recorders), 10 * T, message="ticks through the primary"
    )
    switches = pair.switches()

    killed_at = time.monotonic()
    pair.primary.kill()  # SIGKILL

    def first_after_kill() -> float | None:
        first_seq = next((s for s, t in enumerate(publisher.sent_at) if t >= killed_at), None)
        if first_seq is None:
            return None
        times = [t for r in recorders for t, e in list(r.got) if e.data["s"] >= first_seq]
        return min(times) if times else None

    first = deadline_poll(first_after_kill, 20 * T, message="a delivery through the backup")
    deadline_poll(pair.gateways_ready, 20 * T, interval=0.05, message="gateways ready again")
    resynced = time.monotonic()
    assert ready_status(pair.backup) == 200
    # A second of traffic through the backup, then stop and account.
    more = len(publisher.sent_at) + int(1 / PUBLISH_INTERVAL)
    deadline_poll(lambda: len(publisher.sent_at) >= more, 10 * T, message="more ticks")
    publisher.finish()
    last = len(publisher.sent_at) - 1
    deadline_poll(
        lambda: all(any(e.data["s"] == last for _, e in list(r.got)) for r in recorders),
        10 * T,
        message="the last tick at every client",
    )
    got = [[e.data["s"] for _, e in r.finish() if e.event == "tick"] for r in recorders]

    accepted = {s for s, o in publisher.outcome.items() if o.startswith("ok")}
    refused = {s: o for s, o in publisher.outcome.items() if not o.startswith("ok")}
    for seqs in got:
        assert seqs == sorted(set(seqs)), "per-publisher order, once per socket"
    # Everything published once every gateway was back reached every client.
    after = {s for s in accepted if publisher.sent_at[s] >= resynced}
    assert after and all(after <= set(seqs) for seqs in got)
    lost = [len(accepted - set(seqs)) for seqs in got]
    zero_gateways = sorted(s for s in accepted if publisher.outcome[s] == "ok:0")

    # Memberships are exact on the backup: count/members through the SDK given both routers.
    with SyncCluster(pair.commands) as sdk:
        deadline_poll(lambda: sdk.sockets.count(room) == len(clients), 10 * T)
        assert sorted(sdk.sockets.members(room)) == ids
        assert sorted(sdk.sockets.members(side)) == sorted([clients[0].id, clients[-1].id])
        assert sdk.sockets.broadcast(room, "after", {"ok": True}) == 2
    for client in clients:
        assert client.next_event(what="after failover") == Event("after", {"ok": True})
    # Virtual requests: the worker, registered with both routers, answers through the backup.
    reply = clients[1].request("request", method="POST", url="/echo", data={"x": 1})
    assert reply["statusCode"] == 200, reply
    assert reply["body"]["socket"] == clients[1].id and reply["body"]["data"] == {"x": 1}
    backup_metrics = pair.router_metrics(pair.backup)
    assert backup_metrics.get("roomcast_router_takeovers_total") == 1
    assert backup_metrics.get("roomcast_router_gateways") == 2

    figures = {
        "peer_timeout_s": PEER_TIMEOUT,
        "failover_to_first_delivery_s": round(first - killed_at, 3),
        "failover_to_gateways_ready_s": round(resynced - killed_at, 3),
        "published": len(publisher.sent_at),
        "publish_errors": {o: list(refused.values()).count(o) for o in set(refused.values())},
        "accepted_with_no_gateway": len(zero_gateways),
        "lost_per_client_max": max(lost),
        "lost_per_client": lost,
        "clients": len(clients),
    }
    _figures("router_failover_kill9", figures)
    # The backup held client commands until both gateways had resynced: nothing it accepted
    # went to no gateway. Whatever a client missed died with the primary (published before
    # the kill, its Deliver still in the dead process's queues).
    assert zero_gateways == []
    for seqs in got:
        assert all(publisher.sent_at[s] < killed_at for s in accepted - set(seqs))

    # The primary comes back on its addresses: it hears the backup active and stays passive.
    pair.restart_primary()
    deadline_poll(
        lambda: pair.router_metrics(pair.primary).get("roomcast_router_peer_alive") == 1,
        10 * T,
        message="the restarted primary to hear the backup",
    )
    _bounded_never(
        lambda: ready_status(pair.primary) == 200 or ready_status(pair.backup) != 200,
        4 * PEER_TIMEOUT,
        "the restarted primary served, or the backup stopped serving",
    )
    primary_metrics = pair.router_metrics(pair.primary)
    assert primary_metrics.get("roomcast_router_serving") == 0
    assert primary_metrics.get("roomcast_router_gateways") == 0
    assert pair.gateways_ready()
    moved = pair.switches()
    # Each gateway turned to the backup once or a few times during the failover (a refusal
    # while the backup still waited out the peer timeout), and not once since.
    assert moved > switches
    _bounded_never(
        lambda: pair.switches() != moved, 1.0, "a gateway moved after the primary came back"
    )
    # A fresh SDK client tries the (passive) primary first and is sent on to the backup.
    with SyncCluster(pair.commands) as sdk:
        assert sdk.sockets.count(room) == len(clients)
        assert sdk.sockets.broadcast(side, "side", 7) == 2
    assert clients[0].next_event() == Event("side", 7)
    assert clients[-1].next_event() == Event("side", 7)


@pytest.mark.timeout(180)
def test_a_broken_router_link_alone_does_not_fail_over_and_fencing_ends_a_split() -> None:
    pair = Pair(gateways=1, worker=False, link_proxy=True)
    try:
        room = fresh_room("fence")
        client = pair.ws(0)
        client.join(room)
        assert pair.proxy is not None
        pair.proxy.cut()
        deadline_poll(
            lambda: pair.router_metrics(pair.backup).get("roomcast_router_peer_alive") == 0,
            10 * T,
            message="the backup to miss its primary",
        )
        # The backup hears no primary, but the gateway and the SDK still reach the primary:
        # no client votes for the backup, so it does not serve.
        with SyncCluster(pair.commands) as sdk:
            for i in range(5):
                assert sdk.sockets.broadcast(room, "during", i) == 1
                assert client.next_event() == Event("during", i)
        _bounded_never(
            lambda: ready_status(pair.backup) == 200,
            3 * PEER_TIMEOUT,
            "backup served without a vote",
        )
        assert ready_status(pair.primary) == 200 and pair.gateways_ready()

        # A client that reaches only the backup votes for it: with the link down that makes a
        # second active router (Binary Star's documented weakness)...
        with SyncCluster(pair.backup.info["commands"]) as lonely:
            assert lonely.sockets.count(room) == 0  # the backup knows no gateway
        assert ready_status(pair.backup) == 200
        # ...which fencing ends as soon as the routers hear each other again: the primary wins.
        healed_at = time.monotonic()
        pair.proxy.heal()
        deadline_poll(
            lambda: ready_status(pair.backup) == 503, 10 * T, message="backup to step down"
        )
        stepped_down = time.monotonic() - healed_at
        assert pair.router_metrics(pair.backup).get("roomcast_router_stepdowns_total") == 1
        assert ready_status(pair.primary) == 200 and pair.gateways_ready()
        with SyncCluster(pair.commands) as sdk:
            assert sdk.sockets.count(room) == 1
            assert sdk.sockets.broadcast(room, "after", 1) == 1
        assert client.next_event() == Event("after", 1)
        _figures("router_link_heal_to_stepdown", {"seconds": round(stepped_down, 3)})
    except BaseException:
        pair.kill()
        raise
    pair.stop()


@pytest.mark.timeout(int(240 * TIMEOUT_FACTOR))
def test_bench_failover_reproduces_the_figure(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "failover.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    argv = [
        sys.executable, "-m", "roomcast.cli", "bench", "failover", "--clients", "20",
        "--rate", "100", "--before", "1", "--after", "3", "--peer-timeout", str(PEER_TIMEOUT),
        "--heartbeat-interval", str(HEARTBEAT), "--quiet", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        argv,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180 * T,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["scenario"] == "failover"
    [run] = doc["results"]["runs"]
    assert run["first_delivery_s"] is not None and run["gateways_ready_s"] is not None
    assert run["backup_serving_s"] is not None
    assert run["accepted_with_no_gateway"] == 0
    assert run["duplicates"] == 0 and run["order_violations"] == 0
    assert run["restarted_primary_passive"] is True
    assert run["exit_codes"]["primary"] == -9
    assert all(code == 0 for name, code in run["exit_codes"].items() if name != "primary")
    _figures(
        "bench_failover", {k: run[k] for k in ("first_delivery_s", "gateways_ready_s", "lost")}
    )
