"""``roomcast bench fanout --smoke``: the CI regression guard, run as the real command.

It starts a router, two gateways and the plain-Tornado baseline as processes, and load agents
with lean WebSocket clients; it exits non-zero if any delivery is lost or roomcast's burst
msgs/s falls under ``--min-ratio`` (2.0) times the baseline's, after one retry. This test checks
the exit status and the shape of the JSON it prints: nothing lost, the ratio present. It asserts
no absolute time or rate: the machine is shared and its speed is not ours to test.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from tests.conftest import TIMEOUT_FACTOR, TIMEOUT_UNIT

REPO = pathlib.Path(__file__).resolve().parents[2]
_BAD = re.compile(r"Traceback \(most recent call last\)|\bERROR\b")


def _bench(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``roomcast bench ARGS`` as a user runs it, with our own flags only: ROOMCAST_* variables
    would reach the bench (and its servers) as flags."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    return subprocess.run(
        [sys.executable, "-m", "roomcast.cli", "bench", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(int(400 * TIMEOUT_FACTOR))
def test_fanout_smoke_loses_nothing_and_reports_the_ratio(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "smoke.json"
    proc = _bench(["fanout", "--smoke", "--out", str(out)], 360 * TIMEOUT_UNIT)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"
    assert not _BAD.search(proc.stderr), proc.stderr[-4000:]
    assert proc.stdout == ""  # the document went to --out

    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["scenario"] == "fanout"
    assert doc["smoke"]["passed"] is True
    assert doc["smoke"]["attempts"] in (1, 2)
    results = doc["results"]
    for kind in ("roomcast", "baseline"):
        burst = results[kind]["burst"]
        assert burst["expected"] == 200 * 500
        assert burst["lost"] == 0, f"{kind} lost deliveries: {burst}"
        assert burst["received"] == burst["expected"]
        assert burst["order_violations"] == 0
        assert burst["latency"]["samples"] > 0
        assert set(burst["processes"]) >= ({"router"} if kind == "roomcast" else {"baseline"})
    ratio = results["ratio"]["burst"]["delivered_msgs_per_s"]
    assert isinstance(ratio, (int, float)) and ratio > 0
    assert ratio >= doc["smoke"]["min_ratio"]  # what the exit status already says
    exits = results["exit_codes"]
    assert all(code == 0 for codes in exits.values() for code in codes.values()), exits
    # Servers log at WARNING in the bench; an ERROR or a traceback in any child is a bug.
    notable = [line for lines in doc["log_warnings"].values() for line in lines]
    assert not [line for line in notable if _BAD.search(line)], notable


@pytest.mark.timeout(int(120 * TIMEOUT_FACTOR))
def test_bench_router_runs_and_loses_nothing(tmp_path: pathlib.Path) -> None:
    """``roomcast bench router`` at a small size: every publish answered and delivered to every
    stand-in gateway, the figures present, the router's log clean. No rate is asserted."""
    out = tmp_path / "router.json"
    flags = ["--targets", "1,3", "--publishes", "2000", "--rate", "500", "--duration", "1"]
    proc = _bench(["router", *flags, "--quiet", "--out", str(out)], 100 * TIMEOUT_UNIT)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"
    doc = json.loads(out.read_text(encoding="utf-8"))
    runs = doc["results"]["runs"]
    assert [run["targets"] for run in runs] == [1, 3]
    for run in runs:
        for phase, count in (("burst", 2000), ("steady", 500)):
            figures = run[phase]
            assert figures["publishes"] == count and figures["replies"] == count, figures
            assert figures["lost_deliveries"] == 0, figures
            assert figures["publishes_per_s"] > 0 and figures["router_cpu_us_per_publish"] > 0
    assert doc["results"]["exit_codes"] == {"router": 0}
    assert not doc["log_warnings"], doc["log_warnings"]


@pytest.mark.timeout(int(400 * TIMEOUT_FACTOR))
def test_chat_smoke_delivers_exactly_each_rooms_messages(tmp_path: pathlib.Path) -> None:
    """``roomcast bench chat --smoke``: 200 sockets in rooms of 10 over two gateways, client and
    SDK publishes (a 2,000-publish burst and 1 s at 1,000/s each) against roomcast and the
    plain-Tornado room map. Every client checked its sequence numbers against the plan: nothing
    lost, duplicated, misrouted or out of order, and every figure is in the JSON."""
    out = tmp_path / "chat.json"
    proc = _bench(["chat", "--smoke", "--out", str(out)], 360 * TIMEOUT_UNIT)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"
    assert not _BAD.search(proc.stderr), proc.stderr[-4000:]
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["scenario"] == "chat" and doc["smoke"]["passed"] is True
    results = doc["results"]
    assert (results["sockets"], results["room_size"], results["rooms"]) == (200, 10, 20)
    names = {"client-burst", "client-rate", "sdk-burst", "sdk-rate"}
    for kind, servers in (
        ("roomcast", {"router", "gateway-0", "gateway-1"}),
        ("baseline", {"baseline"}),
    ):
        phases = results[kind]["phases"]
        assert set(phases) == names
        for name, phase in phases.items():
            per_publish = 9 if name.startswith("client") else 10
            assert phase["expected"] == phase["published"] * per_publish, (kind, name)
            assert phase["received"] == phase["expected"] and phase["lost"] == 0, (kind, name)
            verified = phase["verified"]
            assert verified["received"] == phase["received"], (kind, name, verified)
            for wrong in ("lost", "duplicated", "misrouted", "order_violations"):
                assert verified[wrong] == 0, (kind, name, verified)
            assert phase["error_frames"] == 0 and phase["clients_closed"] == 0
            assert phase["delivered_msgs_per_s"] > 0 and phase["latency"]["samples"] > 0
            assert phase["cpu_us_per_delivery"] > 0 and phase["server_cpu_us_per_publish"] > 0
            assert set(phase["cpu_us_per_publish"]) == servers
            if kind == "roomcast":
                assert phase["router_cpu_us_per_publish"] > 0
                assert set(phase["gateway_cpu_us_per_message"]) == {"gateway-0", "gateway-1"}
        assert phases["client-burst"]["published"] == phases["sdk-burst"]["published"] == 2000
    for name in names:
        ratio = results["ratio"][name]
        assert all(isinstance(ratio[k], (int, float)) and ratio[k] > 0 for k in ratio), ratio
    assert results["ratio"]["client-burst"]["delivered_msgs_per_s"] >= doc["smoke"]["min_ratio"]
    exits = results["exit_codes"]
    assert all(code == 0 for codes in exits.values() for code in codes.values()), exits
    notable = [line for lines in doc["log_warnings"].values() for line in lines]
    assert not [line for line in notable if _BAD.search(line)], notable
