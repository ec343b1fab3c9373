"""roomcast dev's pure helpers: restart argv with the real ports, and an app's hooks."""

from __future__ import annotations

import pytest

from roomcast.dev import _fixed_ports, _port_of
from roomcast.devworker import hooks_of

ROUTER = ["py", "-m", "router", "--commands", "tcp://127.0.0.1:0", "--fanout",
          "tcp://127.0.0.1:0", "--http-port", "0", "--drain-timeout", "10"]  # fmt: skip
GATEWAY = ["py", "-m", "gateway", "--router", "tcp://127.0.0.1:5", "--port", "0",
           "--internal-port", "0", "--env", "development"]  # fmt: skip


def test_a_restarted_router_gets_the_ports_it_had() -> None:
    info = {
        "commands": "tcp://127.0.0.1:4001",
        "fanout": "tcp://127.0.0.1:4002",
        "http": "http://127.0.0.1:4003",
    }
    assert _fixed_ports(ROUTER, info) == [
        "py", "-m", "router", "--commands", "tcp://127.0.0.1:4001", "--fanout",
        "tcp://127.0.0.1:4002", "--http-port", "4003", "--drain-timeout", "10",
    ]  # fmt: skip


def test_a_restarted_gateway_gets_the_ports_it_had_and_keeps_the_rest() -> None:
    info = {"public": "http://127.0.0.1:8123", "internal": "http://127.0.0.1:9123/"}
    fixed = _fixed_ports(GATEWAY, info)
    assert fixed[fixed.index("--port") + 1] == "8123"
    assert fixed[fixed.index("--internal-port") + 1] == "9123"
    assert fixed[fixed.index("--router") + 1] == "tcp://127.0.0.1:5"


def test_an_incomplete_ready_line_changes_nothing() -> None:
    assert _fixed_ports(GATEWAY, {}) == GATEWAY
    assert _fixed_ports(GATEWAY, {"public": 5, "internal": "http://h:x"}) == GATEWAY


@pytest.mark.parametrize(
    ("url", "port"),
    [("http://127.0.0.1:80", "80"), ("http://h:81/", "81"), ("nope", None), (None, None)],
)
def test_port_of(url: object, port: str | None) -> None:
    assert _port_of(url) == port


def test_hooks_of_an_app() -> None:
    assert hooks_of("roomcast.demo:app") == {"connect": False, "disconnect": True}
    assert hooks_of("tests.integration.apps:hooks") == {"connect": True, "disconnect": True}
    assert hooks_of("tests.integration.apps:app") == {"connect": False, "disconnect": False}
