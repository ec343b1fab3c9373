"""Route-aware workers (issue 15): each request goes only to workers that serve its route.

Real processes: a router, one gateway, and three ``roomcast worker`` processes serving two
different Apps (``chat`` v1, ``shop``) and a newer version of one (``chat_v2``, a rolling
deploy). Every route answers 200 from a worker that serves it, many times over (never a 404
from a worker that does not); a route nobody ever served is 404; killing the only worker of a
route makes that route 503 and changes nothing else. The router's ``/metrics`` count requests by
route pattern and workers per route.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import TIMEOUT_UNIT as T
from tests.conftest import deadline_poll
from tests.integration.harness import WsClient
from tests.integration.test_actions import Env

CHAT = "tests.integration.apps_routes:chat"
CHAT_V2 = "tests.integration.apps_routes:chat_v2"
SHOP = "tests.integration.apps_routes:shop"
# Short worker expiry: the kill below is noticed through ROUTER_MANDATORY or the expiry.
ROUTER_ARGS = ("--worker-timeout", "2")


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env(gateways=1, router_args=ROUTER_ARGS)
    try:
        e.add_worker(CHAT, "--heartbeat-interval", "0.5")
        e.add_worker(SHOP, "--heartbeat-interval", "0.5")
        e.add_worker(CHAT_V2, "--heartbeat-interval", "0.5")
        e.wait_workers(3)
        e.mark()
        yield e
    except BaseException:
        e.kill()
        raise
    e.check()
    e.stop()


def ask(client: WsClient, method: str, url: str) -> dict[str, Any]:
    return client.request("request", method=method, url=url, data={}, headers={})


def test_every_route_answers_from_a_worker_that_serves_it(env: Env) -> None:
    client = env.ws(0)
    chat_v1, shop, chat_v2 = (w.popen.pid for w in env.workers)
    answered: dict[str, Counter[int]] = {}
    routes = [
        ("GET", "/chat/members", {chat_v1, chat_v2}),
        ("POST", "/chat/say/lobby", {chat_v1, chat_v2}),
        ("GET", "/chat/history/lobby", {chat_v2}),  # only in the newer version
        ("GET", "/shop/items", {shop}),
        ("GET", "/shop/items/7", {shop}),
    ]
    for _ in range(6):
        for method, url, servers in routes:
            reply = ask(client, method, url)
            assert reply["statusCode"] == 200, (method, url, reply)
            pid = reply["body"]["pid"]
            assert pid in servers, (method, url, reply["body"])
            answered.setdefault(url, Counter())[pid] += 1
    # Round-robin among the versions side by side: both chat workers answer chat's routes.
    assert set(answered["/chat/members"]) == {chat_v1, chat_v2}, answered
    assert ask(client, "GET", "/shop/items/7")["body"]["params"] == {"id": "7"}

    nobody = ask(client, "GET", "/nobody/serves/this")
    assert nobody["statusCode"] == 404 and nobody["body"]["error"] == "not_found", nobody
    wrong_method = ask(client, "DELETE", "/shop/items")
    assert wrong_method["statusCode"] == 404, wrong_method

    metrics = env.router_metrics()
    total = "roomcast_router_requests_total"
    assert metrics.get(total, route="GET /chat/members") == 6
    assert metrics.get(total, route="GET /chat/history/:room") == 6
    assert metrics.get(total, route="GET /shop/items/:id") == 7
    assert metrics.get(total, route="unmatched") == 2
    deadline_poll(
        lambda: (
            env.router_metrics().get("roomcast_router_route_workers", route="GET /chat/members")
            == 2
            and env.router_metrics().get("roomcast_router_route_workers", route="GET /shop/items")
            == 1
        ),
        5 * T,
        message="workers per route on /metrics",
    )


def test_killing_the_only_worker_of_a_route_gives_503_for_it_alone(env: Env) -> None:
    client = env.ws(0)
    shop = env.workers[1]
    assert ask(client, "GET", "/shop/items")["statusCode"] == 200
    shop.kill()

    def shop_unavailable() -> bool:
        reply = ask(client, "GET", "/shop/items")
        assert reply["statusCode"] in (200, 503), reply  # never a 404 from a chat worker
        return reply["statusCode"] == 503

    deadline_poll(shop_unavailable, 10 * T, message="the shop route to answer 503")
    reply = ask(client, "GET", "/shop/items/3")
    assert reply["statusCode"] == 503 and reply["body"]["error"] == "no_worker", reply
    for _ in range(4):  # nothing else changes
        for method, url in (("GET", "/chat/members"), ("GET", "/chat/history/x")):
            assert ask(client, method, url)["statusCode"] == 200
    assert ask(client, "GET", "/nobody/serves/this")["statusCode"] == 404
    env.workers.remove(shop)  # killed on purpose: not stopped (exit 0) at teardown


def test_a_rolling_deploy_keeps_answering_when_the_old_version_goes(env: Env) -> None:
    client = env.ws(0)
    chat_v1, _shop, chat_v2 = env.workers
    chat_v1.kill()  # the old version goes (a crash: the harshest way)
    env.workers.remove(chat_v1)

    def only_v2_answers() -> bool:
        replies = [ask(client, "GET", "/chat/members") for _ in range(4)]
        for reply in replies:
            # While the router notices, a request sent to the dead worker may be answered 503
            # (it went away); never 404.
            assert reply["statusCode"] in (200, 503), reply
        return all(r["statusCode"] == 200 and r["body"]["version"] == 2 for r in replies)

    deadline_poll(only_v2_answers, 10 * T, message="chat's routes served by v2 alone")
    assert ask(client, "POST", "/chat/say/x")["body"]["pid"] == chat_v2.popen.pid
