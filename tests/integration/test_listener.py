"""The gateway's listeners under slow and descriptor-hungry clients (gateway/listener.py).

Real router and gateway processes; the attackers are raw TCP sockets. Each test reproduces a
finding: half-open HTTP connections (headers trickled) were held for an hour and did not count
toward --max-connections; the internal API had no body timeout; out of file descriptors,
accept() spun (100% CPU, a traceback per turn) and /healthz timed out. The tests print the
bystander's p99 and the gateway's RSS before/after (``-s``).
"""

from __future__ import annotations

import os
import socket
import sys
import time
import urllib.parse
from collections.abc import Iterator

import pytest
from websockets.exceptions import InvalidStatus

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import (
    DRAIN_TIMEOUT,
    Gateway,
    Metrics,
    Proc,
    WsClient,
    gateway_proc,
    http_get,
    router_proc,
    run_all,
)
from tests.integration.load import Bystander, p99_ms, rss_bytes

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def router() -> Iterator[Proc]:
    proc = router_proc()
    proc.wait_ready()
    yield proc
    run_all([proc.stop, proc.check_log])


def start_gateway(router: Proc, name: str, *extra: str) -> Gateway:
    proc = gateway_proc(name, router.info, *extra)
    info = proc.wait_ready()
    return Gateway(proc, info["public"], info["internal"])


def address(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 80


def metrics(gw: Gateway) -> Metrics:
    status, text = http_get(gw.internal + "/metrics", timeout=5 * T)
    assert status == 200
    return Metrics(text)


def half_open(url: str, n: int, head: bytes) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        sock = socket.create_connection(address(url), timeout=5 * T)
        if head:
            sock.sendall(head)
        socks.append(sock)
    return socks


def closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(0.01)
    try:
        return sock.recv(4096) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_half_open_connections_count_toward_the_bound_and_time_out(router: Proc) -> None:
    gw = start_gateway(
        router, "slow-gw", "--max-connections", "200", "--header-timeout", "1"
    )  # fmt: skip
    bystander = Bystander(gw.ws_url)
    socks: list[socket.socket] = []
    try:
        bystander.start()
        deadline_poll(lambda: bystander.mark() >= 20, 10 * T, message="the bystander warm")
        quiet, mark = p99_ms(bystander.latencies), bystander.mark()
        before = rss_bytes(gw.proc.popen.pid)
        refused = metrics(gw).get("roomcast_gateway_rejected_total", reason="max_connections")
        # A slowloris: 199 connections that never finish their headers (+ the bystander).
        socks = half_open(gw.public, 199, b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        deadline_poll(
            lambda: metrics(gw).get("roomcast_gateway_pending_connections") == 199,
            10 * T,
            message="199 half-open connections counted",
        )
        after = rss_bytes(gw.proc.popen.pid)
        # The gateway is full: the next client is refused at once with 503.
        with pytest.raises(InvalidStatus) as refusal:
            WsClient(gw.ws_url)
        assert refusal.value.response.status_code == 503
        assert b"max_connections" in refusal.value.response.body
        got = metrics(gw).get("roomcast_gateway_rejected_total", reason="max_connections")
        assert got == refused + 1
        # Headers due within --header-timeout: the gateway closes every one of them.
        deadline_poll(
            lambda: all(closed_by_peer(s) for s in socks), 10 * T, message="slowloris closed"
        )
        during = bystander.latencies[mark:]
        print(
            f"\nslowloris: 199 half-open connections; gateway RSS {before / MIB:.1f} -> "
            f"{after / MIB:.1f} MiB; bystander p99 {quiet:.1f} ms quiet, "
            f"{p99_ms(during):.1f} ms during ({len(during)} round trips)"
        )
        deadline_poll(
            lambda: metrics(gw).get("roomcast_gateway_pending_connections") == 0,
            5 * T,
            message="nothing pending",
        )
        WsClient(gw.ws_url).close()  # room again
    finally:
        for sock in socks:
            sock.close()
        bystander.finish()
        run_all([gw.proc.stop, gw.proc.check_log])


def test_the_internal_api_has_a_body_timeout(router: Proc) -> None:
    gw = start_gateway(router, "body-gw", "--body-timeout", "1")
    try:
        [sock] = half_open(
            gw.internal,
            1,
            b"POST /api/broadcast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"rooms":',
        )
        deadline_poll(lambda: closed_by_peer(sock), 10 * T, message="the trickled body closed")
        sock.close()
        assert http_get(gw.internal + "/healthz")[0] == 200
    finally:
        run_all([gw.proc.stop, gw.proc.check_log])


def test_out_of_file_descriptors_backs_off_and_health_keeps_answering(router: Proc) -> None:
    limit = 256
    code = (
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit})); "
        "sys.argv[0] = 'gateway'; runpy.run_module('gateway', run_name='__main__')"
    )
    proc = Proc(
        "fd-gw",
        ["-c", code, "--router", router.info["commands"], "--fanout", router.info["fanout"],
         "--host", "127.0.0.1", "--port", "0", "--internal-port", "0", "--env", "development",
         "--drain-timeout", str(DRAIN_TIMEOUT)],
    )  # fmt: skip
    assert proc.argv[0] == sys.executable
    info = proc.wait_ready()
    gw = Gateway(proc, info["public"], info["internal"])
    pid = proc.popen.pid
    socks: list[socket.socket] = []
    # A bystander connected before the descriptors run out; it starts its round trips once the
    # CPU has been measured (its own traffic would count).
    bystander = Bystander(gw.ws_url)
    try:
        # The public port alone can never exhaust the descriptors: its cap is lowered.
        assert "lowered to" in proc.log_text()
        socks = half_open(gw.public, 2 * limit, b"")
        assert http_get(gw.internal + "/healthz", timeout=5 * T)[0] == 200
        m = metrics(gw)
        assert m.get("roomcast_gateway_accept_errors_total") == 0
        assert m.get("roomcast_gateway_rejected_total", reason="max_connections") > 0
        for sock in socks:
            sock.close()
        # The internal port has no cap: flood it past the limit, so accept() fails (EMFILE).
        rss_before = rss_bytes(pid)
        socks = half_open(gw.internal, 2 * limit, b"")
        cpu_before, started = cpu_seconds(pid), time.monotonic()
        deadline_poll(
            lambda: b"pausing accepts" in proc.log_path.read_bytes(),
            10 * T,
            message="accept() running out of descriptors",
        )
        # A second of EMFILE: the accept loop sleeps instead of spinning.
        deadline_poll(lambda: time.monotonic() - started > 1.0, 5 * T)
        busy = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - started)
        bystander.start()
        deadline_poll(lambda: bystander.mark() >= 50, 10 * T, message="the bystander served")
        rss_after, during = rss_bytes(pid), bystander.latencies
        bystander.finish()
        for sock in socks:
            sock.close()
        socks = []
        status = deadline_poll(
            lambda: http_get(gw.internal + "/healthz", timeout=2 * T)[0] == 200,
            10 * T,
            message="/healthz answering again",
        )
        assert status
        m = metrics(gw)
        print(
            f"\nEMFILE: gateway CPU {100 * busy:.0f}% while out of descriptors; "
            f"{m.get('roomcast_gateway_accept_errors_total'):.0f} paused accepts; RSS "
            f"{rss_before / MIB:.1f} -> {rss_after / MIB:.1f} MiB; bystander p99 "
            f"{p99_ms(during):.1f} ms while out of descriptors ({len(during)} round trips)"
        )
        assert during, "the connected bystander was not served while out of descriptors"
        assert m.get("roomcast_gateway_accept_errors_total", reason="emfile") >= 1
        assert busy < 0.5, busy
    finally:
        bystander.stopping.set()
        bystander.client.close()
        for sock in socks:
            sock.close()
        proc.stop()
        # Its WARNING lines are the pauses; no ERROR, no traceback.
        proc.check_log()
