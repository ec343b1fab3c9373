"""A real Prometheus server scrapes a real cluster (issue 4, architecture §8).

Debian's ``prometheus`` (installed by ``scripts/bootstrap test``, its system service never
started) runs as a child of the test on a free loopback port, with a temporary data directory and
a one-second scrape interval, scraping the router and every gateway. The test then asserts through
Prometheus' own HTTP query API -- not by reading ``/metrics`` itself -- that connections,
deliveries and rooms are exactly what it did to the cluster.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import urllib.parse
from typing import Any

import pytest

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import (
    Cluster,
    Metrics,
    WsClient,
    fresh_room,
    http_get,
    start_cluster,
)

PROMETHEUS = "/usr/bin/prometheus"
SCRAPE_INTERVAL_S = 1
# A change made at time t is in Prometheus after the next scrape: at most one interval, plus
# the query's lookback. Polls allow many intervals (scaled) before failing.
CONVERGE = 15 * T


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _host_port(url: str) -> str:
    """``http://127.0.0.1:1234`` -> ``127.0.0.1:1234`` (a Prometheus target)."""
    parsed = urllib.parse.urlsplit(url)
    assert parsed.hostname == "127.0.0.1" and parsed.port, url
    return f"{parsed.hostname}:{parsed.port}"


class Prometheus:
    """A Prometheus server for one test: its own config, data directory, port and log."""

    def __init__(self, workdir: pathlib.Path, jobs: dict[str, list[str]]) -> None:
        binary = shutil.which("prometheus") or PROMETHEUS
        if not os.access(binary, os.X_OK):
            pytest.fail(
                "prometheus is not installed: run `source scripts/bootstrap && bootstrap test` "
                "(Debian package `prometheus`, its service is not started)"
            )
        self.targets = sum(len(t) for t in jobs.values())
        config = {
            "global": {
                "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                "scrape_timeout": f"{SCRAPE_INTERVAL_S}s",
                "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
            },
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]}
                for job, targets in jobs.items()
            ],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(json.dumps(config, indent=2))  # YAML is a superset of JSON
        self.data = workdir / "data"
        self.data.mkdir()
        self.log_path = workdir / "prometheus.log"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()/kill()
        self.popen = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text("utf-8", "replace").splitlines()
        return "--- prometheus log (tail) ---\n" + "\n".join(text[-lines:])

    def _alive(self) -> None:
        rc = self.popen.poll()
        if rc is not None:
            pytest.fail(f"prometheus exited with {rc}\n{self.log_tail()}")

    def _get(self, path: str) -> tuple[int, str]:
        try:
            return http_get(self.url + path, timeout=2 * T)
        except OSError:  # not listening yet
            return 0, ""

    def wait_ready(self) -> None:
        def ready() -> bool:
            self._alive()
            return self._get("/-/ready")[0] == 200

        deadline_poll(ready, 30 * T, 0.05, message="prometheus /-/ready")

    def wait_targets_up(self) -> list[dict[str, Any]]:
        """Every configured target scraped successfully at least once; returns them."""

        def all_up() -> list[dict[str, Any]] | None:
            self._alive()
            status, body = self._get("/api/v1/targets?state=active")
            if status != 200:
                return None
            active = json.loads(body)["data"]["activeTargets"]
            if len(active) == self.targets and all(t["health"] == "up" for t in active):
                return list(active)
            return None

        return deadline_poll(all_up, CONVERGE, 0.1, message="every scrape target up")

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query through the HTTP API: ``[(labels, value), ...]``."""
        self._alive()
        status, body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert status == 200, f"query {expr!r}: HTTP {status} {body[:300]}"
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        data = answer["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        assert data["resultType"] == "vector", data
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` (None while it has no series)."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr!r} has {len(result)} series: {result!r}"
        return result[0][1] if result else None

    def expect(self, expr: str, want: float) -> None:
        """Poll until ``expr`` evaluates to exactly ``want`` (the next scrapes catch up)."""
        last: list[float | None] = [None]

        def equal() -> bool:
            last[0] = self.value(expr)
            return last[0] is not None and math.isclose(last[0], want)

        try:
            deadline_poll(equal, CONVERGE, 0.2, message=f"{expr} == {want}")
        except AssertionError:
            pytest.fail(f"Prometheus: {expr} is {last[0]}, expected {want}")

    def stop(self) -> None:
        """SIGTERM and wait: Prometheus shuts down cleanly with exit 0."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                rc = self.popen.wait(15 * T)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"prometheus still running 15 s after SIGTERM\n{self.log_tail()}")
        else:
            rc = self.popen.returncode
            self._log.close()
            pytest.fail(f"prometheus had already exited with {rc}\n{self.log_tail()}")
        self._log.close()
        assert rc == 0, f"prometheus exited with {rc} after SIGTERM\n{self.log_tail()}"

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10 * T)
        self._log.close()


def _router_metrics(c: Cluster) -> Metrics:
    status, text = http_get(c.router.info["http"] + "/metrics")
    assert status == 200, f"router /metrics: {status} {text[:200]}"
    return Metrics(text)


def _events(client: WsClient, n: int) -> list[Any]:
    return [client.next_event(what=f"(event {i + 1} of {n})").data for i in range(n)]


@pytest.mark.timeout(120)
def test_real_prometheus_sees_connections_deliveries_and_rooms(tmp_path: pathlib.Path) -> None:
    c = start_cluster(gateways=2)
    prom: Prometheus | None = None
    try:
        gw_targets = [_host_port(g.internal) for g in c.gateways]
        prom = Prometheus(
            tmp_path,
            {
                "roomcast-router": [_host_port(c.router.info["http"])],
                "roomcast-gateway": gw_targets,
            },
        )
        prom.wait_ready()
        targets = prom.wait_targets_up()
        assert {t["labels"]["instance"] for t in targets} == {
            _host_port(c.router.info["http"]),
            *gw_targets,
        }
        prom.expect('count(up{job=~"roomcast-.*"} == 1)', 3)
        # Before any client: nothing connected, no room (own-id rooms come with sockets).
        prom.expect("sum(roomcast_gateway_connections)", 0)
        prom.expect("roomcast_router_rooms", 0)
        prom.expect("roomcast_router_gateways", 2)

        # --- what the test does --------------------------------------------------------------
        room_a, room_b = fresh_room("prom-a"), fresh_room("prom-b")
        gw0 = [c.ws(0) for _ in range(3)]  # a0, a1 in A; b0 in B
        gw1 = [c.ws(1) for _ in range(3)]  # a2 in A; b1 in B; the sender in no room
        a_members = [gw0[0], gw0[1], gw1[0]]
        b_members = [gw0[2], gw1[1]]
        sender = gw1[2]
        for client in a_members:
            client.join(room_a)
        for client in b_members:
            client.join(room_b)
        # Both rooms have members on both gateways: every publish is one delivery per gateway.
        broadcasts_a, broadcasts_b = 5, 3
        for i in range(broadcasts_a):
            sender.broadcast(room_a, {"n": i})
        for i in range(broadcasts_b):
            sender.broadcast(room_b, {"n": i})
        sender.broadcast([room_a, room_b], {"n": "both"})  # once per socket, not once per room
        for client in a_members:
            assert _events(client, broadcasts_a + 1) == [
                *({"n": i} for i in range(broadcasts_a)),
                {"n": "both"},
            ]
        for client in b_members:
            assert _events(client, broadcasts_b + 1) == [
                *({"n": i} for i in range(broadcasts_b)),
                {"n": "both"},
            ]
        sender.expect_no_event()
        connections = 6
        publishes = broadcasts_a + broadcasts_b + 1
        deliveries = 2 * publishes
        frames = 3 * broadcasts_a + 2 * broadcasts_b + 5
        rooms = connections + 2  # every socket's own-id room, plus A and B
        memberships = connections + len(a_members) + len(b_members)

        # --- what Prometheus saw -------------------------------------------------------------
        prom.expect("sum(roomcast_gateway_connections)", connections)
        for gw in gw_targets:
            prom.expect(f'roomcast_gateway_connections{{instance="{gw}"}}', 3)
        prom.expect("sum(roomcast_gateway_connections_opened_total)", connections)
        prom.expect("roomcast_router_sockets", connections)
        prom.expect("roomcast_router_rooms", rooms)
        prom.expect("roomcast_router_memberships", memberships)
        prom.expect("roomcast_router_publishes_total", publishes)
        prom.expect("roomcast_router_deliveries_total", deliveries)
        prom.expect("sum(roomcast_gateway_deliveries_total)", deliveries)
        prom.expect("sum(roomcast_gateway_messages_out_total)", frames)
        prom.expect("sum(roomcast_gateway_lost_total)", 0)
        prom.expect("roomcast_router_fanout_dropped_total", 0)
        prom.expect("sum(roomcast_gateway_dropped_total) or vector(0)", 0)

        # --- changes are seen too: a leave, two client closes, a delivery to one gateway ------
        gw0[2].leave(room_b)
        gw0[0].close()
        gw0[1].close()
        # Room A now lives on gateway 1 only; wait until the router knows before publishing.
        deadline_poll(
            lambda: _router_metrics(c).get("roomcast_router_sockets") == connections - 2,
            10 * T,
            message="router sees the two closed sockets",
        )
        sender.broadcast(room_a, {"n": "last"})
        assert gw1[0].next_event().data == {"n": "last"}
        prom.expect("sum(roomcast_gateway_connections)", connections - 2)
        prom.expect(f'roomcast_gateway_connections{{instance="{gw_targets[0]}"}}', 1)
        prom.expect('sum(roomcast_gateway_disconnects_total{reason="client"})', 2)
        prom.expect("roomcast_router_sockets", connections - 2)
        # Own-id rooms of the closed sockets are gone; A (gw1[0]) and B (gw1[1]) still live.
        prom.expect("roomcast_router_rooms", connections - 2 + 2)
        prom.expect("roomcast_router_memberships", (connections - 2) + 1 + 1)
        prom.expect("roomcast_router_publishes_total", publishes + 1)
        prom.expect("roomcast_router_deliveries_total", deliveries + 1)  # gateway 1 only
        prom.expect(f'roomcast_gateway_deliveries_total{{instance="{gw_targets[0]}"}}', publishes)
        prom.expect("sum(roomcast_gateway_messages_out_total)", frames + 1)

        prom.stop()
        prom = None
        c.stop()
    finally:
        if prom is not None:
            prom.kill()
        c.kill()
